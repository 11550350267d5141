//! Retry delays: exponential with "equal jitter".

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { base: Duration::from_secs(2), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The delay before retrying after the `attempt`-th failure (1-based).
    ///
    /// The ceiling doubles each attempt up to `max`; the delay is half the
    /// ceiling plus a random share of the other half, so it never falls
    /// below `ceiling / 2` and retries of many tasks do not fire together.
    /// `jitter` is a random number in `[0, 1)` supplied by the caller.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        // NaN passes through clamp; treat it as no jitter rather than panic.
        let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        half + half.mul_f64(jitter)
    }

    pub fn ceiling(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }
}

/// How long a task whose run failed waits before it is tried again: the
/// policy, and this report's random share of it. The wait depends on how
/// many attempts the task has made, which the store knows when it applies
/// the report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    pub backoff: Backoff,
    /// A random number in `[0, 1)`.
    pub jitter: f64,
}

impl Retry {
    /// The same wait after every attempt.
    pub const fn fixed(delay: Duration) -> Retry {
        Retry { backoff: Backoff { base: delay, max: delay }, jitter: 1.0 }
    }

    /// The wait after the `attempt`-th attempt failed.
    pub fn after(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt, self.jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_stays_within_bounds() {
        let b = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(10) };
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(3), Duration::from_secs(4));
        assert_eq!(b.ceiling(40), Duration::from_secs(10));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(2));
        assert!(b.delay(3, 0.999) < Duration::from_secs(4));
    }

    #[test]
    fn a_fixed_retry_waits_the_same_after_every_attempt() {
        let r = Retry::fixed(Duration::from_secs(5));
        assert_eq!([r.after(1), r.after(4), r.after(40)], [Duration::from_secs(5); 3]);
        let grows =
            Retry { backoff: Backoff { base: Duration::from_secs(2), max: Duration::from_secs(60) }, jitter: 0.0 };
        assert_eq!((grows.after(1), grows.after(3)), (Duration::from_secs(1), Duration::from_secs(4)));
    }
}
