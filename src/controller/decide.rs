//! The one place where a rollout step is judged: hold, go to the next step, promote or roll
//! back. Pure: the reconciler gathers the inputs and carries out the answer.

use super::crd::EdgeCanarySpec;

/// Slack for comparing rates and milliseconds, so that a value exactly at a threshold (0.99,
/// 50 ms, 0.8 × 0.99) is judged as written, not by the last bit of a float product.
const EPSILON: f64 = 1e-9;

/// Where the rollout is within the current step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepState {
    /// Index into `spec.steps`.
    pub step: usize,
    /// Seconds since the step's observation began (0 before its first scrape).
    pub elapsed_seconds: u64,
    /// The canary Deployment has all the pods this step gives it, available.
    pub canary_ready: bool,
}

/// The canary's requests during the current step.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryStats {
    pub requests: u64,
    pub successes: u64,
    /// From the latency histogram; `None` when it had no observations.
    pub p99_ms: Option<f64>,
}

/// What the metrics gave this time.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// The scrape failed (no ready endpoint, a pod did not answer, …): nothing can be judged.
    Unavailable(String),
    /// The canary version's totals; `None` when no pod reported that version.
    Canary(Option<CanaryStats>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum HoldReason {
    MetricsUnavailable(String),
    NoCanaryData,
    Observing {
        remaining_seconds: u64,
    },
    WaitingForCanaryPods,
    TooFewSamples {
        have: u64,
        need: u64,
    },
    NoLatencyData,
    SuccessRateBelowThreshold {
        rate: f64,
        threshold: f64,
    },
    LatencyAboveThreshold {
        p99_ms: f64,
        threshold_ms: f64,
    },
    /// Healthy at the last step before 100 % with `autoPromote: false`: phase Paused.
    AwaitingManualPromotion,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Hold(HoldReason),
    NextStep,
    Promote,
    RollBack(String),
}

impl Decision {
    /// Label value for the controller's own metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Hold(_) => "hold",
            Decision::NextStep => "next_step",
            Decision::Promote => "promote",
            Decision::RollBack(_) => "rollback",
        }
    }
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldReason::MetricsUnavailable(why) => write!(f, "metrics unavailable: {why}"),
            HoldReason::NoCanaryData => write!(f, "no canary requests observed yet"),
            HoldReason::Observing { remaining_seconds } => {
                write!(f, "observing, {remaining_seconds} s left in this step")
            }
            HoldReason::WaitingForCanaryPods => {
                write!(f, "waiting for the canary pods to become available")
            }
            HoldReason::TooFewSamples { have, need } => {
                write!(f, "too few canary samples: {have} of {need}")
            }
            HoldReason::NoLatencyData => write!(f, "no canary latency observations"),
            HoldReason::SuccessRateBelowThreshold { rate, threshold } => {
                write!(f, "canary success rate {rate:.4} below {threshold}")
            }
            HoldReason::LatencyAboveThreshold {
                p99_ms,
                threshold_ms,
            } => {
                write!(f, "canary p99 {p99_ms:.1} ms above {threshold_ms} ms")
            }
            HoldReason::AwaitingManualPromotion => {
                write!(
                    f,
                    "healthy; autoPromote is off: set spec.promote to true to go to 100 %"
                )
            }
        }
    }
}

/// Judges the current step. Order matters: an unavailable scrape never rolls back; a canary
/// failing badly rolls back as soon as there are enough samples, even mid-step; everything
/// else waits for the step's end and then needs enough samples and healthy numbers.
pub fn decide(spec: &EdgeCanarySpec, state: &StepState, observed: &Observed) -> Decision {
    let canary = match observed {
        Observed::Unavailable(why) => {
            return Decision::Hold(HoldReason::MetricsUnavailable(why.clone()))
        }
        Observed::Canary(None) => return Decision::Hold(HoldReason::NoCanaryData),
        Observed::Canary(Some(stats)) if stats.requests == 0 => {
            return Decision::Hold(HoldReason::NoCanaryData)
        }
        Observed::Canary(Some(stats)) => stats,
    };
    let rate = canary.successes.min(canary.requests) as f64 / canary.requests as f64;
    let rollback_rate = 0.8 * spec.success_rate_threshold;
    let enough_to_roll_back = canary.requests >= spec.min_samples_to_rollback;

    if enough_to_roll_back && rate < rollback_rate - EPSILON {
        return Decision::RollBack(format!(
            "canary success rate {rate:.4} over {} requests is below 0.8 × {} = {rollback_rate:.4}",
            canary.requests, spec.success_rate_threshold
        ));
    }
    if state.elapsed_seconds < spec.step_seconds {
        return Decision::Hold(HoldReason::Observing {
            remaining_seconds: spec.step_seconds - state.elapsed_seconds,
        });
    }
    let p99_too_high = canary
        .p99_ms
        .map(|p99| p99 > spec.latency_p99_threshold_ms + EPSILON);
    if enough_to_roll_back && p99_too_high == Some(true) {
        return Decision::RollBack(format!(
            "canary p99 {:.1} ms over the whole step ({} requests) is above {} ms",
            canary.p99_ms.unwrap_or_default(),
            canary.requests,
            spec.latency_p99_threshold_ms
        ));
    }
    if !state.canary_ready {
        return Decision::Hold(HoldReason::WaitingForCanaryPods);
    }
    if canary.requests < spec.min_samples_to_promote {
        return Decision::Hold(HoldReason::TooFewSamples {
            have: canary.requests,
            need: spec.min_samples_to_promote,
        });
    }
    let Some(p99_ms) = canary.p99_ms else {
        return Decision::Hold(HoldReason::NoLatencyData);
    };
    if rate < spec.success_rate_threshold - EPSILON {
        return Decision::Hold(HoldReason::SuccessRateBelowThreshold {
            rate,
            threshold: spec.success_rate_threshold,
        });
    }
    if p99_too_high == Some(true) {
        return Decision::Hold(HoldReason::LatencyAboveThreshold {
            p99_ms,
            threshold_ms: spec.latency_p99_threshold_ms,
        });
    }
    let next_weight = spec.steps.get(state.step + 1).copied().unwrap_or(100);
    if next_weight < 100 {
        return Decision::NextStep;
    }
    if spec.auto_promote || spec.promote {
        Decision::Promote
    } else {
        Decision::Hold(HoldReason::AwaitingManualPromotion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EdgeCanarySpec {
        EdgeCanarySpec {
            step_seconds: 60,
            ..EdgeCanarySpec::with_defaults("fn", "fn-v1", "fn-v2", 10)
        }
    }

    fn at(step: usize, elapsed_seconds: u64) -> StepState {
        StepState {
            step,
            elapsed_seconds,
            canary_ready: true,
        }
    }

    fn canary(requests: u64, successes: u64, p99_ms: f64) -> Observed {
        Observed::Canary(Some(CanaryStats {
            requests,
            successes,
            p99_ms: Some(p99_ms),
        }))
    }

    fn is_rollback(d: &Decision) -> bool {
        matches!(d, Decision::RollBack(_))
    }

    #[test]
    fn decision_table() {
        let manual = EdgeCanarySpec {
            auto_promote: false,
            ..spec()
        };
        let manual_go = EdgeCanarySpec {
            auto_promote: false,
            promote: true,
            ..spec()
        };
        let hold = |r: HoldReason| Decision::Hold(r);
        #[rustfmt::skip]
        let table: Vec<(&str, EdgeCanarySpec, StepState, Observed, Decision)> = vec![
            // healthy step ended: next step, or promote from the last step before 100
            ("healthy, step 10 % ended", spec(), at(0, 60), canary(1000, 1000, 20.0), Decision::NextStep),
            ("healthy, step 30 % ended", spec(), at(1, 61), canary(1000, 995, 20.0), Decision::NextStep),
            ("healthy, last step ended", spec(), at(2, 60), canary(1000, 999, 20.0), Decision::Promote),
            ("autoPromote off: paused", manual.clone(), at(2, 60), canary(1000, 999, 20.0), hold(HoldReason::AwaitingManualPromotion)),
            ("autoPromote off, earlier step", manual, at(0, 60), canary(1000, 999, 20.0), Decision::NextStep),
            ("autoPromote off, promote set", manual_go, at(2, 60), canary(1000, 999, 20.0), Decision::Promote),
            // holding
            ("healthy, step not over", spec(), at(0, 59), canary(1000, 1000, 20.0), hold(HoldReason::Observing { remaining_seconds: 1 })),
            ("canary pods not available", spec(), StepState { canary_ready: false, ..at(0, 60) }, canary(1000, 1000, 20.0), hold(HoldReason::WaitingForCanaryPods)),
            ("between 0.8×threshold and threshold", spec(), at(0, 60), canary(1000, 900, 20.0), hold(HoldReason::SuccessRateBelowThreshold { rate: 0.9, threshold: 0.99 })),
            ("p99 high but too few to roll back", spec(), at(0, 60), canary(49, 49, 80.0), hold(HoldReason::TooFewSamples { have: 49, need: 100 })),
            // missing data and too few samples: never promote, never roll back
            ("scrape failed", spec(), at(2, 600), Observed::Unavailable("pod 10.0.0.7: connection refused".into()), hold(HoldReason::MetricsUnavailable("pod 10.0.0.7: connection refused".into()))),
            ("no canary series", spec(), at(2, 600), Observed::Canary(None), hold(HoldReason::NoCanaryData)),
            ("canary series at zero", spec(), at(2, 600), canary(0, 0, 0.0), hold(HoldReason::NoCanaryData)),
            ("no latency observations", spec(), at(2, 600), Observed::Canary(Some(CanaryStats { requests: 500, successes: 500, p99_ms: None })), hold(HoldReason::NoLatencyData)),
            ("seed main(): 40 canary requests", spec(), at(0, 60), canary(40, 39, 20.0), hold(HoldReason::TooFewSamples { have: 40, need: 100 })),
            ("99 samples, all fine", spec(), at(2, 60), canary(99, 99, 20.0), hold(HoldReason::TooFewSamples { have: 99, need: 100 })),
            ("49 samples, all failing", spec(), at(0, 10), canary(49, 0, 20.0), hold(HoldReason::Observing { remaining_seconds: 50 })),
            // edges: exactly at each threshold
            ("exactly 100 samples", spec(), at(0, 60), canary(100, 100, 20.0), Decision::NextStep),
            ("success exactly 0.99", spec(), at(0, 60), canary(1000, 990, 20.0), Decision::NextStep),
            ("success just under 0.99", spec(), at(0, 60), canary(1000, 989, 20.0), hold(HoldReason::SuccessRateBelowThreshold { rate: 0.989, threshold: 0.99 })),
            ("p99 exactly 50 ms", spec(), at(0, 60), canary(1000, 1000, 50.0), Decision::NextStep),
            ("exactly 0.8×0.99 = 0.792", spec(), at(0, 10), canary(1000, 792, 20.0), hold(HoldReason::Observing { remaining_seconds: 50 })),
            ("exactly 60 s elapsed", spec(), at(0, 60), canary(100, 100, 50.0), Decision::NextStep),
        ];
        for (name, spec, state, observed, expected) in table {
            assert_eq!(decide(&spec, &state, &observed), expected, "case: {name}");
        }
    }

    #[test]
    fn rollback_table() {
        #[rustfmt::skip]
        let table: Vec<(&str, StepState, Observed)> = vec![
            ("success under 0.8×threshold mid-step", at(0, 5), canary(100, 50, 20.0)),
            ("just under 0.792", at(0, 5), canary(1000, 791, 20.0)),
            ("exactly 50 samples, failing", at(1, 0), canary(50, 0, 20.0)),
            ("p99 above threshold for the whole step", at(0, 60), canary(1000, 1000, 50.1)),
            ("p99 above, exactly 50 samples at step end", at(0, 60), canary(50, 50, 120.0)),
            ("failing even when paused before 100", at(2, 600), canary(200, 100, 20.0)),
            ("failing with canary pods still starting", StepState { canary_ready: false, ..at(0, 1) }, canary(60, 0, 20.0)),
        ];
        for (name, state, observed) in table {
            let decision = decide(&spec(), &state, &observed);
            assert!(is_rollback(&decision), "case {name}: {decision:?}");
        }
        // The same failing canary with autoPromote off rolls back too.
        let manual = EdgeCanarySpec {
            auto_promote: false,
            ..spec()
        };
        assert!(is_rollback(&decide(
            &manual,
            &at(2, 600),
            &canary(200, 100, 20.0)
        )));
    }

    #[test]
    fn p99_above_threshold_mid_step_only_holds() {
        let decision = decide(&spec(), &at(0, 30), &canary(1000, 1000, 400.0));
        assert_eq!(
            decision,
            Decision::Hold(HoldReason::Observing {
                remaining_seconds: 30
            })
        );
    }

    #[test]
    fn unreachable_metrics_never_roll_back_whatever_the_step() {
        for step in 0..3 {
            for elapsed in [0, 59, 60, 10_000] {
                let d = decide(
                    &spec(),
                    &at(step, elapsed),
                    &Observed::Unavailable("timeout".into()),
                );
                assert_eq!(d.kind(), "hold");
            }
        }
    }
}
