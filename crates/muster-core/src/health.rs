//! The hub's health level, judged from the outcomes of recent runs.

/// When the fleet counts as healthy or degraded; anything worse is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Healthy needs at least this share of runs to succeed...
    pub healthy_success_rate: f64,
    /// ...and at most this many failed runs in the window.
    pub healthy_max_failures: u64,
    /// Degraded needs at least this share to succeed...
    pub degraded_success_rate: f64,
    /// ...and at most this many failed runs.
    pub degraded_max_failures: u64,
}

impl Default for Thresholds {
    /// Healthy: at least 90% succeed and fewer than 3 fail. Degraded: 70 to
    /// 90%, or 3 to 5 failures. Unhealthy: worse.
    fn default() -> Thresholds {
        Thresholds {
            healthy_success_rate: 0.9,
            healthy_max_failures: 2,
            degraded_success_rate: 0.7,
            degraded_max_failures: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Healthy => "HEALTHY",
            Level::Degraded => "DEGRADED",
            Level::Unhealthy => "UNHEALTHY",
        }
    }
}

/// The level for `succeeded` and `failed` runs in the window, with the
/// reasons behind it (empty when healthy for want of runs).
pub fn assess(succeeded: u64, failed: u64, t: &Thresholds) -> (Level, Vec<String>) {
    let finished = succeeded + failed;
    if finished == 0 {
        return (Level::Healthy, vec!["no runs finished in the window".to_owned()]);
    }
    let rate = succeeded as f64 / finished as f64;
    let pct = |r: f64| format!("{:.0}%", r * 100.0);
    let by_rate = if rate >= t.healthy_success_rate {
        Level::Healthy
    } else if rate >= t.degraded_success_rate {
        Level::Degraded
    } else {
        Level::Unhealthy
    };
    let by_failures = if failed <= t.healthy_max_failures {
        Level::Healthy
    } else if failed <= t.degraded_max_failures {
        Level::Degraded
    } else {
        Level::Unhealthy
    };
    let mut reasons = vec![format!("{} of {finished} runs succeeded ({})", succeeded, pct(rate))];
    match by_rate {
        Level::Healthy => {}
        Level::Degraded => reasons.push(format!("success rate below {}", pct(t.healthy_success_rate))),
        Level::Unhealthy => reasons.push(format!("success rate below {}", pct(t.degraded_success_rate))),
    }
    match by_failures {
        Level::Healthy => {}
        Level::Degraded => reasons.push(format!("{failed} failed runs (more than {})", t.healthy_max_failures)),
        Level::Unhealthy => reasons.push(format!("{failed} failed runs (more than {})", t.degraded_max_failures)),
    }
    (by_rate.max(by_failures), reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_default_thresholds() {
        let t = Thresholds::default();
        let cases = [
            ((0, 0), Level::Healthy),
            ((100, 2), Level::Healthy),
            ((100, 3), Level::Degraded),
            ((9, 1), Level::Healthy),
            ((8, 2), Level::Degraded),
            ((100, 5), Level::Degraded),
            ((100, 6), Level::Unhealthy),
            ((7, 3), Level::Degraded),
            ((6, 4), Level::Unhealthy),
            ((0, 1), Level::Unhealthy),
        ];
        for ((ok, bad), want) in cases {
            let (level, reasons) = assess(ok, bad, &t);
            assert_eq!(level, want, "{ok} ok, {bad} failed: {reasons:?}");
            assert!(!reasons.is_empty());
        }
        let (_, reasons) = assess(8, 2, &t);
        assert_eq!(reasons, ["8 of 10 runs succeeded (80%)", "success rate below 90%"]);
    }
}
