//! What the hub counts, and `GET /metrics` in the Prometheus text format.
//!
//! Counters and histograms are recorded as things happen; gauges (tasks by
//! state, agents by state) are read from the store at scrape time, so they
//! are right after a restart too. Labels take only bounded values: states,
//! priorities, outcomes, route templates, status codes.

use crate::Hub;
use muster_metrics::{Counter, DURATION_BUCKETS, Exposition, Family, Histogram, LATENCY_BUCKETS, Labels};
use std::sync::atomic::Ordering;

pub struct Metrics {
    /// How each attempt ended: succeeded, failed, timeout, cancelled.
    pub outcomes: Family<Counter>,
    /// From a task becoming due (created, or its backoff over) to its run starting.
    pub dispatch_latency: Histogram,
    /// From a run starting to its outcome, by outcome.
    pub run_duration: Family<Histogram>,
    /// Leases that expired, by what became of the task: requeued, failed, cancelled.
    pub lease_expirations: Family<Counter>,
    /// Reports refused for a stale epoch, by report: accept, output, finished, heartbeat, reject.
    pub stale_reports: Family<Counter>,
    pub http_requests: Family<Counter>,
    pub http_duration: Family<Histogram>,
    /// Tokens coding agents reported, by runner and kind (input, output, cache_read, cache_write).
    pub tokens: Family<Counter>,
    /// What coding agents reported spending, by runner, in millionths of a dollar.
    pub cost_micro_usd: Family<Counter>,
    /// Requests whose token or session was refused, by reason.
    pub auth_failures: Family<Counter>,
    /// Requests refused with 429, by limit: `api` (a token's requests) or `followups` (an agent's follow-up tasks).
    pub rate_limited: Family<Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            outcomes: Family::new(&["outcome"], Counter::default),
            dispatch_latency: Histogram::new(LATENCY_BUCKETS),
            run_duration: Family::new(&["outcome"], || Histogram::new(DURATION_BUCKETS)),
            lease_expirations: Family::new(&["result"], Counter::default),
            stale_reports: Family::new(&["report"], Counter::default),
            http_requests: Family::new(&["route", "method", "status"], Counter::default),
            http_duration: Family::new(&["route"], || Histogram::new(LATENCY_BUCKETS)),
            tokens: Family::new(&["runner", "kind"], Counter::default),
            cost_micro_usd: Family::new(&["runner"], Counter::default),
            auth_failures: Family::new(&["reason"], Counter::default),
            rate_limited: Family::new(&["limit"], Counter::default),
        }
    }
}

fn label(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Hub {
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The whole exposition, reading gauges from the store.
    pub(crate) async fn render_metrics(&self) -> Result<String, muster_store::StoreError> {
        let store = &self.shared.store;
        let m = &self.shared.metrics;
        let mut e = Exposition::default();
        e.gauge(
            "muster_build_info",
            "The running muster's version; always 1.",
            &[(label(&[("version", env!("CARGO_PKG_VERSION"))]), 1.0)],
        );
        e.gauge(
            "muster_start_time_seconds",
            "When the hub started, in seconds since the Unix epoch.",
            &[(vec![], self.shared.started_at.0 as f64 / 1000.0)],
        );
        e.gauge(
            "muster_draining",
            "1 while the hub is shutting down and takes no new work.",
            &[(vec![], if self.shared.draining.load(Ordering::SeqCst) { 1.0 } else { 0.0 })],
        );

        let counts = store.count_tasks_by_priority().await?;
        let mut tasks = Vec::new();
        for state in muster_core::TaskState::ALL {
            for priority in muster_core::Priority::ALL {
                let n = counts.iter().find(|(s, p, _)| *s == state && *p == priority).map_or(0, |c| c.2);
                tasks.push((label(&[("state", state.as_str()), ("priority", priority.as_str())]), n as f64));
            }
        }
        e.gauge("muster_tasks", "Tasks in the store by state and priority.", &tasks);
        e.counter_family("muster_task_outcomes_total", "Attempts ended, by outcome.", &m.outcomes);
        let breakers = store.breakers().await?;
        let states: Vec<(Labels, f64)> = breakers
            .iter()
            .map(|b| {
                let v = match b.state {
                    muster_core::breaker::State::Closed => 0.0,
                    muster_core::breaker::State::HalfOpen => 1.0,
                    muster_core::breaker::State::Open => 2.0,
                };
                (label(&[("scope", b.scope.as_str()), ("name", &b.name)]), v)
            })
            .collect();
        e.gauge(
            "muster_circuit_state",
            "Circuit breakers that have seen a failure: 0 closed, 1 half-open, 2 open.",
            &states,
        );
        e.counter_family("muster_tokens_total", "Tokens coding agents reported, by runner and kind.", &m.tokens);
        e.counter_family_divided(
            "muster_cost_usd_total",
            "US dollars coding agents reported spending, by runner.",
            &m.cost_micro_usd,
            1e6,
        );
        e.histogram(
            "muster_dispatch_latency_seconds",
            "Time from a task becoming due (created, or its retry backoff over) to its run starting.",
            &[(vec![], m.dispatch_latency.snapshot())],
        );
        e.histogram_family("muster_run_duration_seconds", "Time from a run starting to its outcome.", &m.run_duration);

        let agents = store.list_agents().await?;
        let by_state: Vec<(Labels, f64)> = muster_core::AgentState::ALL
            .iter()
            .map(|s| {
                let n = agents.iter().filter(|a| a.status.state() == *s).count();
                (label(&[("state", s.as_str())]), n as f64)
            })
            .collect();
        e.gauge("muster_agents", "Registered agents by state.", &by_state);
        let slots: u32 = agents.iter().filter(|a| a.status.connected).map(|a| a.status.slots).sum();
        let used: u32 = agents.iter().filter(|a| a.status.connected).map(|a| a.status.used_slots).sum();
        e.gauge("muster_agent_slots", "Task slots of connected agents.", &[(vec![], f64::from(slots))]);
        e.gauge(
            "muster_agent_slots_used",
            "Task slots of connected agents holding a task.",
            &[(vec![], f64::from(used))],
        );
        let sockets = self.shared.sessions.lock().expect("sessions lock poisoned").len();
        e.gauge("muster_agent_sockets", "Agent WebSocket sessions open now.", &[(vec![], sockets as f64)]);
        e.counter_family(
            "muster_lease_expirations_total",
            "Leases that expired and were reclaimed, by what became of the task.",
            &m.lease_expirations,
        );
        e.counter_family(
            "muster_stale_reports_total",
            "Agent reports refused because their lease epoch was stale, by report.",
            &m.stale_reports,
        );
        e.counter_family("muster_http_requests_total", "HTTP requests by route, method and status.", &m.http_requests);
        e.histogram_family(
            "muster_http_request_duration_seconds",
            "HTTP request handling time by route.",
            &m.http_duration,
        );
        e.counter_family(
            "muster_auth_failures_total",
            "Requests refused for a missing, malformed, unknown, revoked or expired token, by reason.",
            &m.auth_failures,
        );
        e.counter_family("muster_rate_limited_total", "Requests refused with 429, by limit.", &m.rate_limited);
        let edge = &self.shared.edge;
        e.gauge(
            "muster_connections_open",
            "HTTP and agent connections open now.",
            &[(vec![], edge.open_gauge.load(Ordering::Relaxed) as f64)],
        );
        e.gauge(
            "muster_connections_max",
            "The most connections the hub holds at once (max_connections).",
            &[(vec![], edge.max_connections() as f64)],
        );
        e.counter_family(
            "muster_connections_shed_total",
            "Anonymous connections closed to make room for a new one, by the cap that was reached.",
            &edge.shed,
        );
        e.counter_family(
            "muster_connections_refused_total",
            "Connections answered 503 and closed because a cap was reached and none could be shed, by cap.",
            &edge.refused,
        );
        e.counter(
            "muster_accept_errors_total",
            "Times the system refused the hub a new connection (out of file descriptors or memory).",
            &[(vec![], edge.accept_errors.get())],
        );

        let firing: Vec<(Labels, f64)> = self
            .alert_views()
            .await?
            .into_iter()
            .map(|a| {
                let active = if a.state == "resolved" { 0.0 } else { 1.0 };
                (vec![("rule", a.rule), ("severity", a.severity)], active)
            })
            .collect();
        e.gauge("muster_alerts_firing", "1 for each alert rule firing or acknowledged, 0 otherwise.", &firing);
        let backup_age: Vec<(Labels, f64)> =
            self.last_backup_age().map(|a| (vec![], a.as_secs_f64())).into_iter().collect();
        e.gauge("muster_last_backup_age_seconds", "Age of the newest backup; absent when there is none.", &backup_age);
        let w = store.maintenance().write_stats();
        e.histogram(
            "muster_db_commit_duration_seconds",
            "Time each database commit (one fsync for a whole batch) took.",
            &[(vec![], w.commit_seconds)],
        );
        e.histogram("muster_db_batch_size", "Changes committed per batch.", &[(vec![], w.batch_size)]);
        e.counter(
            "muster_db_failed_batches_total",
            "Write batches whose commit failed.",
            &[(vec![], w.failed_batches)],
        );
        e.counter(
            "muster_db_redone_batches_total",
            "Write batches applied again with a savepoint per change, after one change failed half-way.",
            &[(vec![], w.redone_batches)],
        );
        e.gauge(
            "muster_events",
            "The latest event's sequence number.",
            &[(vec![], *store.subscribe().borrow() as f64)],
        );
        Ok(e.finish())
    }
}
