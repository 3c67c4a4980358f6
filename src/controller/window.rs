//! What the pods answered during the current step, from their cumulative counters.
//!
//! Each scrape adds, per pod and version, the increase since that pod's previous scrape to the
//! step's totals. A pod whose counters went down restarted, so its counters count from zero; a
//! pod first seen after the step began counts from zero; a pod that vanished keeps what it had
//! added. Totals therefore never go down, and the step's p99 comes from the histogram
//! increase over exactly the step (not from a lifetime average).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::exposition::Sample;

/// Counter family of the project's HTTP mode: `{version, status}`.
pub const REQUESTS_TOTAL: &str = "wasmedge_http_requests_total";
/// Histogram family of the project's HTTP mode (seconds): `{version, le}`.
pub const DURATION_BUCKET: &str = "wasmedge_http_request_duration_seconds_bucket";
pub const DURATION_COUNT: &str = "wasmedge_http_request_duration_seconds_count";

/// One cumulative bucket: observations `<= le` seconds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Bucket {
    pub le: f64,
    pub count: u64,
}

/// A cumulative histogram: finite buckets ascending by `le`, and `count` (the `+Inf` bucket).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
pub struct Histogram {
    #[serde(default)]
    pub buckets: Vec<Bucket>,
    #[serde(default)]
    pub count: u64,
}

impl Histogram {
    /// Observations `<= le`, read from the largest bucket not above `le` (an under-estimate
    /// when layouts differ, which keeps sums of histograms cumulative).
    fn cumulative_at(&self, le: f64) -> u64 {
        if le == f64::INFINITY {
            return self.count;
        }
        self.buckets
            .iter()
            .take_while(|b| b.le <= le)
            .last()
            .map_or(0, |b| b.count)
    }

    fn add(&mut self, other: &Histogram) {
        let mut bounds: Vec<f64> = self
            .buckets
            .iter()
            .chain(&other.buckets)
            .map(|b| b.le)
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        self.buckets = bounds
            .into_iter()
            .map(|le| Bucket {
                le,
                count: self.cumulative_at(le) + other.cumulative_at(le),
            })
            .collect();
        self.count += other.count;
    }

    /// The `q` quantile in seconds, interpolated linearly inside its bucket as PromQL's
    /// `histogram_quantile` does: the first bucket starts at 0, and a rank in the `+Inf` bucket
    /// gives the largest finite bound. `None` without observations or finite buckets.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || self.buckets.is_empty() {
            return None;
        }
        let rank = q * self.count as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for bucket in &self.buckets {
            // Counts of a malformed histogram may fall; hold them at the running maximum.
            let count = bucket.count.max(below).min(self.count);
            if count as f64 >= rank && count > below {
                if lower == 0.0 && bucket.le <= 0.0 {
                    return Some(bucket.le);
                }
                let share = (rank - below as f64) / (count - below) as f64;
                return Some(lower + (bucket.le - lower) * share.clamp(0.0, 1.0));
            }
            lower = bucket.le;
            below = count;
        }
        Some(lower)
    }
}

/// What one version of one pod has answered.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Requests answered with status < 500.
    #[serde(default)]
    pub ok: u64,
    /// Requests answered with status >= 500.
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub latency: Histogram,
}

impl Counters {
    pub fn requests(&self) -> u64 {
        self.ok + self.failed
    }

    pub fn success_rate(&self) -> Option<f64> {
        (self.requests() > 0).then(|| self.ok as f64 / self.requests() as f64)
    }

    pub fn p99_ms(&self) -> Option<f64> {
        self.latency.quantile(0.99).map(|seconds| seconds * 1000.0)
    }

    pub fn add(&mut self, other: &Counters) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.latency.add(&other.latency);
    }

    /// What was added since `earlier`: the difference, or everything when any counter went
    /// down or a bucket disappeared (the process restarted and counts from zero).
    pub fn increase_since(&self, earlier: &Counters) -> Counters {
        let same_layout = earlier
            .latency
            .buckets
            .iter()
            .all(|e| self.latency.buckets.iter().any(|b| b.le == e.le));
        let restarted = !same_layout
            || self.ok < earlier.ok
            || self.failed < earlier.failed
            || self.latency.count < earlier.latency.count
            || self
                .latency
                .buckets
                .iter()
                .any(|b| b.count < earlier.latency.cumulative_at(b.le));
        if restarted {
            return self.clone();
        }
        Counters {
            ok: self.ok - earlier.ok,
            failed: self.failed - earlier.failed,
            latency: Histogram {
                buckets: self
                    .latency
                    .buckets
                    .iter()
                    .map(|b| Bucket {
                        le: b.le,
                        count: b.count - earlier.latency.cumulative_at(b.le),
                    })
                    .collect(),
                count: self.latency.count - earlier.latency.count,
            },
        }
    }
}

/// The project's metric families in one pod's samples, by `version` label. Samples without a
/// version or with a value that is no count are ignored.
pub fn counters_by_version(samples: &[Sample]) -> BTreeMap<String, Counters> {
    let mut by_version: BTreeMap<String, Counters> = BTreeMap::new();
    let mut inf_seen: BTreeMap<String, bool> = BTreeMap::new();
    for sample in samples {
        let Some(version) = sample.label("version") else {
            continue;
        };
        let Some(value) = as_count(sample.value) else {
            continue;
        };
        match sample.name.as_str() {
            REQUESTS_TOTAL => {
                let counters = by_version.entry(version.to_string()).or_default();
                // A status that is no number is no success either.
                match sample
                    .label("status")
                    .and_then(|s| s.trim().parse::<u16>().ok())
                {
                    Some(status) if status < 500 => counters.ok += value,
                    _ => counters.failed += value,
                }
            }
            DURATION_BUCKET => {
                let Some(le) = sample
                    .label("le")
                    .and_then(|le| super::exposition::parse_value(le.trim()))
                else {
                    continue;
                };
                let latency = &mut by_version.entry(version.to_string()).or_default().latency;
                if le == f64::INFINITY {
                    latency.count = value;
                    inf_seen.insert(version.to_string(), true);
                } else if le.is_finite() {
                    latency.buckets.push(Bucket { le, count: value });
                }
            }
            DURATION_COUNT => {
                let latency = &mut by_version.entry(version.to_string()).or_default().latency;
                if !inf_seen.get(version).copied().unwrap_or(false) {
                    latency.count = value;
                }
            }
            _ => {}
        }
    }
    for counters in by_version.values_mut() {
        let buckets = &mut counters.latency.buckets;
        buckets.sort_by(|a, b| a.le.total_cmp(&b.le));
        buckets.dedup_by(|later, earlier| later.le == earlier.le);
        // Without a `+Inf` or `_count` sample the largest bucket is the best total there is.
        let largest = buckets.last().map_or(0, |b| b.count);
        counters.latency.count = counters.latency.count.max(largest);
    }
    by_version
}

fn as_count(value: f64) -> Option<u64> {
    (value.is_finite() && value >= 0.0 && value < u64::MAX as f64).then(|| value.round() as u64)
}

/// One pod's version during the current step: its counters at the latest scrape, and what it
/// added since the step began.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodWindow {
    pub pod: String,
    pub version: String,
    pub last_scraped: Counters,
    pub since_step_start: Counters,
}

/// One pod's scrape: its name and its counters by version.
pub type PodScrape = (String, BTreeMap<String, Counters>);

/// The window at the start of a step: what the pods have now is the baseline, nothing counted.
pub fn start_window(scrapes: &[PodScrape]) -> Vec<PodWindow> {
    let mut window = Vec::new();
    for (pod, versions) in scrapes {
        for (version, counters) in versions {
            window.push(PodWindow {
                pod: pod.clone(),
                version: version.clone(),
                last_scraped: counters.clone(),
                since_step_start: Counters::default(),
            });
        }
    }
    window
}

/// The window after a scrape: every scraped pod adds its increase; pods not scraped this time
/// (vanished, or unreachable) keep what they had added.
pub fn advance_window(window: &[PodWindow], scrapes: &[PodScrape]) -> Vec<PodWindow> {
    let mut next = window.to_vec();
    for (pod, versions) in scrapes {
        for (version, current) in versions {
            match next
                .iter_mut()
                .find(|w| &w.pod == pod && &w.version == version)
            {
                Some(entry) => {
                    entry
                        .since_step_start
                        .add(&current.increase_since(&entry.last_scraped));
                    entry.last_scraped = current.clone();
                }
                None => next.push(PodWindow {
                    pod: pod.clone(),
                    version: version.clone(),
                    last_scraped: current.clone(),
                    since_step_start: current.clone(),
                }),
            }
        }
    }
    next
}

/// The step's counters per version, summed over pods.
pub fn totals_by_version(window: &[PodWindow]) -> BTreeMap<String, Counters> {
    let mut totals: BTreeMap<String, Counters> = BTreeMap::new();
    for entry in window {
        totals
            .entry(entry.version.clone())
            .or_default()
            .add(&entry.since_step_start);
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::exposition::parse;

    /// The project's bucket bounds, seconds.
    const BOUNDS: [f64; 14] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];

    /// A histogram of `per_bucket[i]` observations falling into bucket i (the last: `+Inf`).
    fn histogram(per_bucket: &[u64]) -> Histogram {
        let mut cumulative = 0;
        let mut buckets = Vec::new();
        for (i, le) in BOUNDS.iter().enumerate() {
            cumulative += per_bucket.get(i).copied().unwrap_or(0);
            buckets.push(Bucket {
                le: *le,
                count: cumulative,
            });
        }
        let count = cumulative + per_bucket.get(BOUNDS.len()).copied().unwrap_or(0);
        Histogram { buckets, count }
    }

    fn counters(ok: u64, failed: u64, per_bucket: &[u64]) -> Counters {
        Counters {
            ok,
            failed,
            latency: histogram(per_bucket),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn p99_interpolates_inside_the_bucket() {
        // 100 observations: 90 in (0.01, 0.025], 10 in (0.025, 0.05]. Rank 99 is the 9th of
        // the 10 in the 0.05 bucket: 0.025 + 0.025 × 9/10.
        let h = histogram(&[0, 0, 0, 0, 0, 90, 10]);
        assert!(close(h.quantile(0.99).unwrap(), 0.0475));
        // Rank exactly on a bucket's upper bound gives that bound: 99 ≤ 50 ms, 1 above.
        let h = histogram(&[0, 0, 0, 0, 0, 98, 1, 1]);
        assert!(close(h.quantile(0.99).unwrap(), 0.05));
        // In the first bucket the lower bound is 0.
        let h = histogram(&[100]);
        assert!(close(h.quantile(0.99).unwrap(), 0.000495));
        // Beyond the largest finite bucket: that bucket's bound, as PromQL answers.
        let h = histogram(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100]);
        assert_eq!(h.quantile(0.99), Some(10.0));
        assert_eq!(Histogram::default().quantile(0.99), None);
    }

    #[test]
    fn p99_is_not_the_average() {
        // 95 fast requests and 5 slow ones: the mean is ~29 ms (what the seed compares), the
        // p99 lies in the (0.5, 1] s bucket.
        let h = histogram(&[0, 0, 0, 95, 0, 0, 0, 0, 0, 0, 5]);
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 > 0.5 && p99 <= 1.0, "{p99}");
    }

    #[test]
    fn reads_the_metric_contract() {
        let text = r#"# TYPE wasmedge_http_requests counter
wasmedge_http_requests_total{version="v2",status="200"} 90
wasmedge_http_requests_total{version="v2",status="404"} 5
wasmedge_http_requests_total{version="v2",status="500"} 4
wasmedge_http_requests_total{version="v2",status="503"} 1
wasmedge_http_requests_total{status="200"} 1000
wasmedge_http_request_duration_seconds_bucket{version="v2",le="0.025"} 60
wasmedge_http_request_duration_seconds_bucket{version="v2",le="0.005"} 10
wasmedge_http_request_duration_seconds_bucket{version="v2",le="+Inf"} 100
wasmedge_http_request_duration_seconds_sum{version="v2"} 2.5
wasmedge_http_request_duration_seconds_count{version="v2"} 100
other_total{version="v2"} 7
# EOF
"#;
        let by_version = counters_by_version(&parse(text).samples);
        assert_eq!(by_version.len(), 1);
        let v2 = &by_version["v2"];
        assert_eq!((v2.ok, v2.failed), (95, 5));
        assert_eq!(
            v2.latency.buckets,
            vec![
                Bucket {
                    le: 0.005,
                    count: 10
                },
                Bucket {
                    le: 0.025,
                    count: 60
                }
            ]
        );
        assert_eq!(v2.latency.count, 100);
        assert!(close(v2.success_rate().unwrap(), 0.95));
    }

    #[test]
    fn increase_is_the_difference_or_everything_after_a_restart() {
        let before = counters(100, 2, &[0, 0, 0, 50, 52]);
        let after = counters(150, 3, &[0, 0, 0, 80, 73]);
        let increase = after.increase_since(&before);
        assert_eq!((increase.ok, increase.failed), (50, 1));
        assert_eq!(increase.latency, histogram(&[0, 0, 0, 30, 21]));
        // Restarted pod: its counters went down, so they count from zero.
        let restarted = counters(7, 0, &[0, 0, 0, 7]);
        assert_eq!(restarted.increase_since(&before), restarted);
        // A histogram counter falling alone also means a restart.
        let odd = counters(200, 3, &[0, 0, 0, 10]);
        assert_eq!(odd.increase_since(&before), odd);
    }

    #[test]
    fn window_counts_new_pods_from_zero_and_keeps_vanished_ones() {
        let pod = |name: &str, version: &str, c: Counters| -> PodScrape {
            (name.to_string(), BTreeMap::from([(version.to_string(), c)]))
        };
        let start = start_window(&[
            pod("stable-a", "v1", counters(1000, 0, &[0, 0, 0, 1000])),
            pod("canary-a", "v2", counters(10, 0, &[0, 0, 0, 10])),
        ]);
        assert!(totals_by_version(&start)
            .values()
            .all(|c| c.requests() == 0));

        // canary-a answers 40 more, canary-b appears with 30, stable-a answers 100 more.
        let w = advance_window(
            &start,
            &[
                pod("stable-a", "v1", counters(1100, 0, &[0, 0, 0, 1100])),
                pod("canary-a", "v2", counters(49, 1, &[0, 0, 0, 50])),
                pod("canary-b", "v2", counters(30, 0, &[0, 0, 0, 0, 30])),
            ],
        );
        let totals = totals_by_version(&w);
        assert_eq!(totals["v1"].requests(), 100);
        assert_eq!((totals["v2"].ok, totals["v2"].failed), (69, 1));
        assert_eq!(totals["v2"].latency, histogram(&[0, 0, 0, 40, 30]));

        // canary-a vanishes, canary-b restarts (counters down to 5): nothing goes negative.
        let w = advance_window(
            &w,
            &[pod("canary-b", "v2", counters(5, 0, &[0, 0, 0, 0, 5]))],
        );
        let totals = totals_by_version(&w);
        assert_eq!((totals["v2"].ok, totals["v2"].failed), (74, 1));
        assert_eq!(totals["v2"].latency.count, 75);
        assert_eq!(totals["v1"].requests(), 100);
    }

    #[test]
    fn sums_of_different_layouts_stay_cumulative() {
        let mut a = Histogram {
            buckets: vec![Bucket { le: 0.01, count: 5 }, Bucket { le: 0.1, count: 10 }],
            count: 10,
        };
        let b = Histogram {
            buckets: vec![Bucket { le: 0.05, count: 4 }],
            count: 4,
        };
        a.add(&b);
        let counts: Vec<_> = a.buckets.iter().map(|b| (b.le, b.count)).collect();
        assert_eq!(counts, vec![(0.01, 5), (0.05, 9), (0.1, 14)]);
        assert_eq!(a.count, 14);
    }
}
