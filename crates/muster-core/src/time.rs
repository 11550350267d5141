//! Wall-clock instants as milliseconds since the Unix epoch.
//!
//! The core never reads a clock: callers pass `now` in, which is what lets
//! tests drive leases and backoff without sleeping.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub i64);

impl Millis {
    pub fn plus(self, d: Duration) -> Millis {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Millis(self.0.saturating_add(ms))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// Where "now" comes from: the system clock in production, one a test moves
/// by hand. The core never reads one; those that hold one pass its readings.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Millis;
}
