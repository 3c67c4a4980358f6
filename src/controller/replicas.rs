//! Weight as a replica ratio: the Service spreads requests over all ready pods, so the canary's
//! share of pods is its share of traffic.

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplicaSplit {
    pub stable: i32,
    pub canary: i32,
    /// canary / total × 100: the weight these counts really give.
    pub effective_weight: f64,
}

/// `round(total × weight / 100)` canary pods (halves round up), but at least one canary pod
/// when the weight is above 0 and at least one stable pod below 100 %. With fewer than two
/// pods both cannot hold; the stable pod wins then (the spec validation requires 2).
pub fn split_replicas(total: i32, weight_percent: u32) -> ReplicaSplit {
    let total = total.max(0);
    let weight = weight_percent.min(100) as i64;
    let mut canary = ((total as i64 * weight + 50) / 100) as i32;
    if weight > 0 {
        canary = canary.max(1);
    }
    if weight < 100 {
        canary = canary.min(total - 1);
    }
    let canary = canary.clamp(0, total);
    let effective_weight = if total == 0 {
        0.0
    } else {
        canary as f64 * 100.0 / total as f64
    };
    ReplicaSplit {
        stable: total - canary,
        canary,
        effective_weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: i32, weight: u32) -> (i32, i32) {
        let split = split_replicas(total, weight);
        (split.stable, split.canary)
    }

    #[test]
    fn ten_replicas_give_exact_steps() {
        for (weight, canary) in [(0, 0), (10, 1), (30, 3), (50, 5), (100, 10)] {
            assert_eq!(counts(10, weight), (10 - canary, canary), "weight {weight}");
            assert_eq!(split_replicas(10, weight).effective_weight, weight as f64);
        }
    }

    #[test]
    fn small_totals_round_and_keep_one_of_each() {
        // 4 pods: 10 % → 0.4 rounds to 0 but a canary pod is required → 1 (25 %).
        assert_eq!(counts(4, 10), (3, 1));
        assert_eq!(split_replicas(4, 10).effective_weight, 25.0);
        // 30 % of 4 = 1.2 → 1; 50 % → 2; halves round up: 10 % of 5 = 0.5 → 1.
        assert_eq!(counts(4, 30), (3, 1));
        assert_eq!(counts(4, 50), (2, 2));
        assert_eq!(counts(5, 10), (4, 1));
        // 99 % of 10 = 9.9 would round to 10: one stable pod stays until 100 %.
        assert_eq!(counts(10, 99), (1, 9));
        assert_eq!(counts(2, 90), (1, 1));
        assert_eq!(counts(3, 50), (1, 2));
        assert!((split_replicas(3, 50).effective_weight - 66.666).abs() < 0.01);
    }

    #[test]
    fn degenerate_totals() {
        assert_eq!(counts(1, 50), (1, 0));
        assert_eq!(counts(1, 100), (0, 1));
        assert_eq!(counts(0, 50), (0, 0));
        assert_eq!(counts(-3, 50), (0, 0));
        assert_eq!(counts(10, 250), (0, 10));
    }

    #[test]
    fn invariants_for_all_small_totals() {
        for total in 2..=60 {
            for weight in 0..=100 {
                let s = split_replicas(total, weight);
                assert_eq!(s.stable + s.canary, total);
                assert_eq!(weight > 0, s.canary >= 1, "total {total} weight {weight}");
                assert_eq!(weight < 100, s.stable >= 1, "total {total} weight {weight}");
                // Within one pod of the exact share, unless a minimum pod forces more.
                let exact = total as f64 * weight as f64 / 100.0;
                assert!(
                    (s.canary as f64 - exact).abs() <= 1.0,
                    "total {total} weight {weight}"
                );
            }
        }
    }
}
