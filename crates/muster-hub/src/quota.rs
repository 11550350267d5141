//! Rate limits: each token's API requests, each agent's follow-up tasks;
//! and refused authentication, counted and logged at most once a second.
//!
//! The limiters are `governor`'s keyed GCRA limiters, rebuilt when an
//! operator changes a rate at runtime (`muster config set limits.…`).

use crate::Hub;
use crate::auth::Caller;
use crate::error::ApiError;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Events a period, the burst, and the period.
type Rate = (usize, usize, Duration);

/// A keyed limiter for one rate, made again when the rate changes.
struct Limiter {
    /// The rate it was built for, and the limiter.
    built: Mutex<Option<(Rate, Arc<DefaultKeyedRateLimiter<String>>)>>,
}

impl Limiter {
    fn new() -> Limiter {
        Limiter { built: Mutex::new(None) }
    }

    /// Takes one event for `key`; how long to wait when there is none left.
    /// A rate of 0 is no limit.
    fn check(&self, key: String, rate: usize, burst: usize, period: Duration) -> Result<(), Duration> {
        let Some(rate) = NonZeroU32::new(rate.min(u32::MAX as usize) as u32) else { return Ok(()) };
        let burst = NonZeroU32::new(burst.max(1).min(u32::MAX as usize) as u32).expect("at least 1");
        let limiter = {
            // Short: a comparison, or building the limiter.
            let mut built = self.built.lock().expect("limiter lock poisoned");
            let wanted = (rate.get() as usize, burst.get() as usize, period);
            match built.as_ref() {
                Some((at, limiter)) if *at == wanted => limiter.clone(),
                _ => {
                    let quota = Quota::with_period(period / rate.get())
                        .unwrap_or_else(|| Quota::per_second(rate))
                        .allow_burst(burst);
                    let limiter = Arc::new(governor::RateLimiter::keyed(quota));
                    *built = Some((wanted, limiter.clone()));
                    limiter
                }
            }
        };
        limiter.check_key(&key).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()))
        })
    }

    /// Forgets keys whose allowance is whole again, so the map holds only
    /// callers seen lately.
    fn forget_idle(&self) {
        if let Some((_, limiter)) = self.built.lock().expect("limiter lock poisoned").as_ref() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

pub(crate) struct Quotas {
    api: Limiter,
    followups: Limiter,
    /// Refused authentication is logged at most once a second; the rest are counted into the next line.
    auth_log: DefaultDirectRateLimiter,
    auth_unlogged: AtomicU64,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            api: Limiter::new(),
            followups: Limiter::new(),
            auth_log: governor::RateLimiter::direct(Quota::per_second(NonZeroU32::new(1).expect("nonzero"))),
            auth_unlogged: AtomicU64::new(0),
        }
    }
}

impl Hub {
    /// Takes one request from `caller`'s allowance (`limits.api_rate`
    /// requests a second, in bursts of up to `limits.api_burst`).
    pub(crate) fn take_request(&self, caller: &Caller) -> Result<(), ApiError> {
        let (rate, burst) = {
            let live = self.shared.runtime.borrow();
            (live.api_rate, live.api_burst)
        };
        let key = match caller {
            Caller::Admin(token) => format!("token:{}", token.id),
            Caller::Agent(name) => format!("agent:{name}"),
            Caller::Task { task, .. } => format!("task:{task}"),
        };
        self.shared.quotas.api.check(key, rate, burst, Duration::from_secs(1)).map_err(|wait| {
            self.metrics().rate_limited.with(&["api"]).inc();
            ApiError::TooManyRequests {
                detail: format!(
                    "this token has made more than {rate} {} a second (bursts up to {burst}, limits.api_rate \
                     and limits.api_burst); try again in {} s",
                    if rate == 1 { "request" } else { "requests" },
                    crate::error::retry_after_secs(wait)
                ),
                retry_after: wait,
            }
        })
    }

    /// Takes one follow-up task from `agent`'s allowance (`limits.followups_per_minute`).
    pub(crate) fn take_followup(&self, agent: &muster_core::AgentName) -> Result<(), ApiError> {
        let rate = self.shared.runtime.borrow().followups_per_minute;
        self.shared.quotas.followups.check(format!("agent:{agent}"), rate, rate, Duration::from_secs(60)).map_err(
            |wait| {
                self.metrics().rate_limited.with(&["followups"]).inc();
                ApiError::TooManyRequests {
                    detail: format!(
                        "runs on agent {agent} have created more than {rate} follow-up tasks a minute \
                         (limits.followups_per_minute); try again in {} s",
                        crate::error::retry_after_secs(wait)
                    ),
                    retry_after: wait,
                }
            },
        )
    }

    /// Counts a refused token or session, and logs it (with the client's
    /// address and the reason, never what was presented) at most once a second.
    pub(crate) fn auth_failed(&self, why: crate::auth::Refusal, detail: &str) {
        self.metrics().auth_failures.with(&[why.as_str()]).inc();
        // A missing token is how a browser's first request looks; not worth a line.
        if why == crate::auth::Refusal::Missing {
            return;
        }
        let q = &self.shared.quotas;
        if q.auth_log.check().is_ok() {
            let client = crate::edge::Conn::current_addr().map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
            let also = q.auth_unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(client = %client, reason = why.as_str(), detail, also_refused = also, "authentication refused");
        } else {
            q.auth_unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops what the limiters remember of callers that have gone quiet.
    pub(crate) fn forget_idle_callers(&self) {
        self.shared.quotas.api.forget_idle();
        self.shared.quotas.followups.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_while_others_go_on() {
        let l = Limiter::new();
        for _ in 0..3 {
            assert!(l.check("a".into(), 1, 3, Duration::from_secs(60)).is_ok());
        }
        let wait = l.check("a".into(), 1, 3, Duration::from_secs(60)).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(l.check("b".into(), 1, 3, Duration::from_secs(60)).is_ok(), "another key has its own allowance");
        assert!(l.check("a".into(), 0, 3, Duration::from_secs(60)).is_ok(), "a rate of 0 is no limit");
        // A new rate starts every key afresh.
        assert!(l.check("a".into(), 2, 3, Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(crate::error::retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(crate::error::retry_after_secs(Duration::ZERO), 1);
        assert_eq!(crate::error::retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(crate::error::retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
