//! The last hour for people: a point every `window_interval` (10 s), 360 of
//! them, kept in memory (a restart starts a new window).
//!
//! Counts come from the store at each tick; latencies, outcomes and cost are
//! collected as they happen and drained into the point. Each new point is
//! announced on `fresh`, which the dashboard's live socket forwards.

use crate::Hub;
use muster_core::{MicroUsd, TaskState};
use muster_proto::api::{MetricsPoint, MetricsWindow};
use muster_proto::timestamp;
use std::collections::VecDeque;
use std::sync::Mutex;

pub const POINTS: usize = 360;

/// What happened since the last point.
#[derive(Default)]
struct Pending {
    latencies: Vec<f64>,
    succeeded: u64,
    failed: u64,
    cost: MicroUsd,
}

pub struct Window {
    /// Short critical sections only.
    pending: Mutex<Pending>,
    points: Mutex<VecDeque<MetricsPoint>>,
    /// How many points have been taken; bumped after each is stored.
    pub fresh: tokio::sync::watch::Sender<u64>,
}

impl Default for Window {
    fn default() -> Window {
        Window { pending: Mutex::default(), points: Mutex::default(), fresh: tokio::sync::watch::channel(0).0 }
    }
}

impl Window {
    pub fn started(&self, queue_wait_secs: f64) {
        self.pending.lock().expect("window lock poisoned").latencies.push(queue_wait_secs);
    }

    pub fn ended(&self, succeeded: bool, cost: MicroUsd) {
        let mut p = self.pending.lock().expect("window lock poisoned");
        if succeeded {
            p.succeeded += 1;
        } else {
            p.failed += 1;
        }
        p.cost = p.cost.saturating_add(cost);
    }

    /// A run that ended without an outcome worth counting (cancelled) still spent.
    pub fn spent(&self, cost: MicroUsd) {
        let mut p = self.pending.lock().expect("window lock poisoned");
        p.cost = p.cost.saturating_add(cost);
    }

    /// The newest `n` points (fewer if fewer are kept), oldest first.
    pub fn latest(&self, n: usize) -> Vec<MetricsPoint> {
        let points = self.points.lock().expect("window lock poisoned");
        points.iter().skip(points.len().saturating_sub(n)).cloned().collect()
    }
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Least-squares slope of the queue depth over the given points, per minute.
fn trend(points: &[&MetricsPoint], interval_secs: f64) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = points.iter().map(|p| p.queued as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, p) in points.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (p.queued as f64 - mean_y);
        den += dx * dx;
    }
    num / den * 60.0 / interval_secs
}

impl Hub {
    async fn sample(&self) -> Result<(), muster_store::StoreError> {
        let counts = self.shared.store.count_tasks().await?;
        let count = |s: TaskState| crate::tasks_in(&counts, s);
        let agents = self.shared.store.list_agents().await?;
        let online = agents.iter().filter(|a| a.status.connected);
        let (slots, used) = online.fold((0u32, 0u32), |(s, u), a| (s + a.status.slots, u + a.status.used_slots));
        let pending = std::mem::take(&mut *self.shared.window.pending.lock().expect("window lock poisoned"));
        let mut latencies = pending.latencies;
        latencies.sort_by(f64::total_cmp);
        let ended = pending.succeeded + pending.failed;
        let interval = self.config().window_interval.as_secs_f64();
        let point = MetricsPoint {
            at: timestamp(self.now()),
            queued: count(TaskState::Queued),
            running: count(TaskState::Running) + count(TaskState::Assigned),
            throughput: ended as f64 / interval,
            succeeded: pending.succeeded,
            failed: pending.failed,
            failure_rate: (ended > 0).then(|| pending.failed as f64 / ended as f64),
            latency_p50: percentile(&latencies, 0.50),
            latency_p95: percentile(&latencies, 0.95),
            latency_p99: percentile(&latencies, 0.99),
            utilization: (slots > 0).then(|| f64::from(used) / f64::from(slots)),
            cost_usd: pending.cost.usd(),
        };
        {
            let mut points = self.shared.window.points.lock().expect("window lock poisoned");
            if points.len() == POINTS {
                points.pop_front();
            }
            points.push_back(point);
        }
        self.shared.window.fresh.send_modify(|n| *n += 1);
        Ok(())
    }

    pub(crate) fn metrics_window(&self) -> MetricsWindow {
        let interval = self.config().window_interval.as_secs_f64();
        let points: Vec<MetricsPoint> =
            self.shared.window.points.lock().expect("window lock poisoned").iter().cloned().collect();
        let recent = ((300.0 / interval).ceil() as usize).max(2);
        let tail: Vec<&MetricsPoint> = points.iter().rev().take(recent).rev().collect();
        let per_min = trend(&tail, interval);
        let label = if per_min > 0.5 {
            "rising"
        } else if per_min < -0.5 {
            "falling"
        } else {
            "flat"
        };
        MetricsWindow { interval_secs: interval, points, queue_trend_per_min: per_min, queue_trend: label.to_owned() }
    }
}

/// Takes a point of the one-hour window every `window_interval`, and
/// forgets the rate limits of callers gone quiet.
#[derive(Default)]
pub(crate) struct WindowWorker {
    ticker: Option<tokio::time::Interval>,
}

impl crate::workers::Worker for WindowWorker {
    fn name(&self) -> &'static str {
        "window"
    }

    fn purpose(&self) -> &'static str {
        "samples the one-hour metrics window every window_interval"
    }

    async fn next(&mut self, hub: &Hub) {
        let ticker = match &mut self.ticker {
            Some(ticker) => ticker,
            None => {
                let mut ticker = tokio::time::interval(hub.config().window_interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                self.ticker.insert(ticker)
            }
        };
        ticker.tick().await;
    }

    async fn step(&mut self, hub: &Hub) -> Result<bool, String> {
        let sampled = hub.sample().await.map_err(|e| format!("cannot sample the metrics window: {e}"));
        hub.forget_idle_callers();
        sampled.map(|()| false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_trend_is_the_slope_per_minute() {
        let point = |q: u64| MetricsPoint {
            at: String::new(),
            queued: q,
            running: 0,
            throughput: 0.0,
            succeeded: 0,
            failed: 0,
            failure_rate: None,
            latency_p50: None,
            latency_p95: None,
            latency_p99: None,
            utilization: None,
            cost_usd: 0.0,
        };
        let rising = [point(0), point(10), point(20)];
        let refs: Vec<&MetricsPoint> = rising.iter().collect();
        assert_eq!(trend(&refs, 10.0), 60.0, "ten more every 10 s is 60 a minute");
        assert_eq!(trend(&refs[..1], 10.0), 0.0);
    }
}
