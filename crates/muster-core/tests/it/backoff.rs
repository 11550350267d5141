//! `Backoff`: the ceiling grows and caps, and every delay lies within it.

use muster_core::Backoff;
use proptest::prelude::*;
use std::time::Duration;

/// Up to seven days (the longest task timeout), with nanosecond precision.
const WEEK_NANOS: u64 = 7 * 24 * 3600 * 1_000_000_000;

/// Durations spread evenly over orders of magnitude, from nanoseconds to
/// a week, so small bases that need many doublings are as likely as large ones.
fn any_duration() -> impl Strategy<Value = Duration> {
    let bits = 64 - WEEK_NANOS.leading_zeros();
    (0..=bits).prop_flat_map(|b| (0u64..=(1u64 << b).min(WEEK_NANOS)).prop_map(Duration::from_nanos))
}

fn any_backoff() -> impl Strategy<Value = Backoff> {
    (any_duration(), any_duration()).prop_map(|(base, max)| Backoff { base, max })
}

fn any_attempt() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..=40, 1 => any::<u32>()]
}

/// The documented jitter range `[0, 1)`, plus its edges.
fn any_jitter() -> impl Strategy<Value = f64> {
    prop_oneof![8 => 0.0f64..1.0, 1 => Just(0.0), 1 => Just(1.0 - f64::EPSILON)]
}

proptest! {
    #[test]
    fn delay_lies_between_half_the_ceiling_and_the_ceiling(
        backoff in any_backoff(),
        attempt in any_attempt(),
        jitter in any_jitter(),
    ) {
        let ceiling = backoff.ceiling(attempt);
        let delay = backoff.delay(attempt, jitter);
        prop_assert!(delay >= ceiling / 2, "{backoff:?} attempt {attempt} jitter {jitter}: {delay:?} < {ceiling:?}/2");
        prop_assert!(delay <= ceiling, "{backoff:?} attempt {attempt} jitter {jitter}: {delay:?} > {ceiling:?}");
    }

    #[test]
    fn delay_clamps_out_of_range_jitter_into_the_same_bounds(
        backoff in any_backoff(),
        attempt in any_attempt(),
        jitter in prop_oneof![-1e6f64..1e6, Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
    ) {
        let ceiling = backoff.ceiling(attempt);
        let delay = backoff.delay(attempt, jitter);
        prop_assert!(delay >= ceiling / 2 && delay <= ceiling, "{backoff:?} attempt {attempt} jitter {jitter}: {delay:?}");
    }

    #[test]
    fn ceiling_never_shrinks_with_attempts_and_never_exceeds_max(
        backoff in any_backoff(),
        attempt in any_attempt(),
    ) {
        let here = backoff.ceiling(attempt);
        let next = backoff.ceiling(attempt.saturating_add(1));
        prop_assert!(here <= backoff.max, "{backoff:?} attempt {attempt}: {here:?}");
        prop_assert!(here <= next, "{backoff:?}: ceiling({attempt}) = {here:?} > ceiling(+1) = {next:?}");
        prop_assert_eq!(backoff.ceiling(1), backoff.base.min(backoff.max));
    }

    #[test]
    fn ceiling_doubles_each_attempt_until_it_caps(backoff in any_backoff(), attempt in 1u32..=30) {
        let here = backoff.ceiling(attempt);
        let next = backoff.ceiling(attempt + 1);
        prop_assert_eq!(next, here.saturating_mul(2).min(backoff.max), "{:?} attempt {}", backoff, attempt);
    }
}

/// `delay` clamps its jitter so that out-of-range values stay within the
/// bounds, but `f64::clamp` passes NaN through and `Duration::mul_f64`
/// panics on NaN: a broken random source would crash the caller.
#[test]
fn nan_jitter_gives_a_delay_within_bounds_instead_of_panicking() {
    let backoff = Backoff::default();
    let ceiling = backoff.ceiling(3);
    let delay = backoff.delay(3, f64::NAN);
    assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
}
