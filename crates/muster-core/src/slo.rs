//! Service level objectives: how much of the error budget is left and how
//! fast it is burning.
//!
//! An objective says that `target` of events (say 0.995) must be good. The
//! error budget is the rest (0.005). Over the objective's window, the budget
//! used is the share of bad events divided by that budget; the burn rate is
//! the same ratio over the last hour, where 1 means spending the budget
//! exactly as fast as the window allows.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Share of good events, `None` without events.
    pub sli: Option<f64>,
    /// Share of the error budget left, 1 when untouched, below 0 when overspent.
    pub remaining: f64,
}

/// The budget left after `good` of `total` events, for a `target` share.
pub fn budget(good: u64, total: u64, target: f64) -> Budget {
    if total == 0 {
        return Budget { sli: None, remaining: 1.0 };
    }
    let sli = good as f64 / total as f64;
    let allowed = 1.0 - target;
    let remaining =
        if allowed <= 0.0 { if sli >= 1.0 { 1.0 } else { f64::NEG_INFINITY } } else { 1.0 - (1.0 - sli) / allowed };
    Budget { sli: Some(sli), remaining }
}

/// How fast the budget burns: the bad share over the allowed share.
pub fn burn_rate(good: u64, total: u64, target: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let bad = 1.0 - good as f64 / total as f64;
    let allowed = 1.0 - target;
    if allowed <= 0.0 { if bad > 0.0 { f64::INFINITY } else { 0.0 } } else { bad / allowed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_burn_follow_the_bad_share() {
        assert_eq!(budget(0, 0, 0.99), Budget { sli: None, remaining: 1.0 });
        let b = budget(995, 1000, 0.99);
        assert_eq!(b.sli, Some(0.995));
        assert!((b.remaining - 0.5).abs() < 1e-9, "half the 1% budget is spent: {b:?}");
        assert!(budget(980, 1000, 0.99).remaining < 0.0, "overspent");
        assert!((burn_rate(990, 1000, 0.99) - 1.0).abs() < 1e-9);
        assert!((burn_rate(980, 1000, 0.99) - 2.0).abs() < 1e-9);
        assert_eq!(burn_rate(5, 5, 0.99), 0.0);
    }
}
