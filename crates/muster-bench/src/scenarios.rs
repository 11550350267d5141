//! The scenarios that run a real hub: throughput, latency, agents, recovery.

use crate::host;
use crate::hub::HubProc;
use crate::sim::{Api, Fleet, Mode, Seen};
use crate::{Plan, results::*};
use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Flags every bench hub runs with: nothing scheduled in the background
/// (backups, compaction) competes with what is measured, and the one
/// admin token that submits every task has no request rate.
fn hub_flags(heartbeat: Duration) -> Vec<String> {
    let hb = format!("{}ms", heartbeat.as_millis());
    let lease = format!("{}ms", (heartbeat * 3).as_millis());
    [
        "--heartbeat-interval",
        &hb,
        "--lease-ttl",
        &lease,
        "--backup-interval",
        "0",
        "--compact-interval",
        "off",
        "--default-max-attempts",
        "1",
        "--api-rate",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const PATIENCE: Duration = Duration::from_secs(1800);

/// Where the hubs under test keep their data.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// One hub on the SQLite file of its data directory.
    Sqlite,
    /// `hubs` hubs as equals on one fresh database, made for the run on the
    /// PostgreSQL server `server` names and dropped after it.
    Postgres { server: String, hubs: usize },
}

/// The hubs under test, with simulated agents spread over them, each
/// agent on one hub; tasks are submitted to each hub in turn.
struct Cluster {
    hubs: Vec<HubProc>,
    apis: Vec<Api>,
    fleet: Fleet,
    /// Dropped (and with it the database) once the hubs have stopped.
    db: Option<muster_store::postgres::ScratchDb>,
}

impl Cluster {
    /// Hubs on `backend` with `agents` simulated agents of `slots` slots, all connected.
    async fn start(dir: &Path, plan: &Plan, mode: Mode, backend: &Backend) -> anyhow::Result<Cluster> {
        let mut flags = hub_flags(plan.heartbeat);
        let (count, db) = match backend {
            Backend::Sqlite => (1, None),
            Backend::Postgres { server, hubs } => {
                let server = server.clone();
                let db = tokio::task::spawn_blocking(move || muster_store::postgres::ScratchDb::create_on(&server))
                    .await
                    .context("the database thread panicked")?
                    .context("cannot make the run's database")?;
                flags.extend(["--database".to_owned(), db.url().to_owned()]);
                ((*hubs).max(1), Some(db))
            }
        };
        let mut hubs: Vec<HubProc> = Vec::with_capacity(count);
        for k in 0..count {
            let token = hubs.first().map(|h| h.token.clone());
            let here = if count == 1 { dir.to_owned() } else { dir.join(format!("hub-{k}")) };
            hubs.push(HubProc::start_as(&here, "127.0.0.1:0", &flags, token.as_deref()).await?);
        }
        let apis: Vec<Api> = hubs.iter().map(|h| Api::new(h.addr, &h.token)).collect();
        let agents = apis[0].add_agents("worker", plan.agents as usize, 32).await?;
        let mut fleet = Fleet::start(hubs[0].addr, &[], plan.slots, mode);
        for (k, hub) in hubs.iter().enumerate() {
            let mine: Vec<(String, String)> = agents.iter().skip(k).step_by(count).cloned().collect();
            fleet.add(hub.addr, &mine, plan.slots, mode, k * agents.len().div_ceil(count));
        }
        let n = agents.len() as u64;
        fleet.tally.wait("the agents to connect", PATIENCE, |t| t.welcomed.load(Ordering::Relaxed) >= n).await?;
        Ok(Cluster { hubs, apis, fleet, db })
    }

    /// The hub that takes submission `i`.
    fn api(&self, i: u64) -> &Api {
        &self.apis[(i % self.apis.len() as u64) as usize]
    }

    /// Stops the agents, then (with `count`, once nothing moves any more)
    /// reads the task counts, then stops the hubs; what the agents saw.
    async fn stop(self, count: bool) -> anyhow::Result<(Vec<Seen>, Option<BTreeMap<String, u64>>)> {
        let seen = self.fleet.stop().await;
        let counts = if count { Some(self.apis[0].counts().await?) } else { None };
        for mut hub in self.hubs {
            hub.stop().await;
        }
        drop(self.db);
        Ok((seen, counts))
    }
}

/// Submits tasks `0..n` with `parallel` requests in flight; returns when
/// the first and the last were acknowledged.
async fn submit_closed(cluster: &Cluster, n: u64, parallel: usize) -> anyhow::Result<(Instant, Instant)> {
    use futures_util::StreamExt;
    let began = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..n)
        .map(|i| cluster.api(i).submit(i, "normal"))
        .buffer_unordered(parallel)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok((began, Instant::now()))
}

/// `throughput`: tasks through their whole life per second, with `queued`
/// tasks already waiting.
pub async fn throughput(dir: &Path, plan: &Plan, queued: u64, backend: &Backend) -> anyhow::Result<ThroughputRow> {
    let cluster = Cluster::start(dir, plan, Mode::Finish, backend).await?;
    let api = &cluster.apis[0];
    if queued > 0 {
        // Held back while they are queued, so the queue really is this deep when the run starts.
        api.call(reqwest::Method::POST, "/admin/pause", None).await?;
        api.seed(queued, 4).await?;
        api.call(reqwest::Method::POST, "/admin/resume", None).await?;
    }
    let cpu = host::cpu_ticks();
    let (began, submitted) = submit_closed(&cluster, plan.tasks, plan.submitters).await?;
    let steal_pct = host::steal_since(cpu);
    let total = plan.tasks + queued;
    // The figure is what finished while submissions went on. With an empty
    // queue every task then ends; a deep one is left as it is.
    if queued == 0 {
        let tally = &cluster.fleet.tally;
        tally.wait("every task to finish", PATIENCE, |t| t.acked.load(Ordering::Relaxed) >= total).await?;
    }
    let (seen, counts) = cluster.stop(true).await?;
    let counts = counts.unwrap_or_default();
    let finished_in_window = seen.iter().flat_map(|s| &s.acked).filter(|at| **at <= submitted).count() as u64;
    let acked = seen.iter().map(|s| s.acked.len() as u64).sum::<u64>();
    let window = submitted.duration_since(began).as_secs_f64();
    let succeeded = counts.get("succeeded").copied().unwrap_or(0);
    let held: u64 = counts.values().sum();
    ensure!(held == total, "{total} tasks were acknowledged, the hub holds {held}: {counts:?}");
    ensure!(succeeded >= acked, "{acked} finished runs were acknowledged, {succeeded} succeeded: {counts:?}");
    Ok(ThroughputRow {
        queued,
        tasks: plan.tasks,
        agents: plan.agents,
        slots: plan.slots,
        submitted_per_sec: plan.tasks as f64 / window,
        finished_per_sec: finished_in_window as f64 / window,
        seconds: window,
        steal_pct,
    })
}

/// `latency`: open-loop submission at `rate` per second for `duration`; the
/// time from each task's intended submission to its assignment's arrival.
pub async fn latency(dir: &Path, plan: &Plan, rate: f64, label: &str, backend: &Backend) -> anyhow::Result<LatencyRow> {
    let cluster = Arc::new(Cluster::start(dir, plan, Mode::Finish, backend).await?);
    let n = (rate * plan.latency_duration.as_secs_f64()).ceil().max(1.0) as u64;
    let cpu = host::cpu_ticks();
    let t0 = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / rate);
    // Paced from a thread of its own: the runtime's timers tick in whole
    // milliseconds, which would add up to one to every submission.
    let runtime = tokio::runtime::Handle::current();
    let pacer = cluster.clone();
    let sends = tokio::task::spawn_blocking(move || {
        let cluster = pacer;
        let mut sends = Vec::with_capacity(n as usize);
        for i in 0..n {
            let intended = t0 + interval.mul_f64(i as f64);
            std::thread::sleep(intended.saturating_duration_since(Instant::now()));
            // Each request on its own: a slow answer delays no later submission.
            let cluster = cluster.clone();
            sends.push(runtime.spawn(async move {
                let sent = Instant::now();
                cluster.api(i).submit(i, "normal").await.map(|()| (sent, Instant::now()))
            }));
        }
        sends
    })
    .await
    .context("the pacer panicked")?;
    let mut stamps = Vec::with_capacity(n as usize);
    for s in sends {
        stamps.push(s.await.context("a submission panicked")??);
    }
    cluster.fleet.tally.wait("every assignment", PATIENCE, |t| t.acked.load(Ordering::Relaxed) >= n).await?;
    let steal_pct = host::steal_since(cpu);
    // The first hub's commits: with several, each commits its own share.
    let commits = commit_tail(&cluster.apis[0].metrics().await?)?;
    let cluster = Arc::into_inner(cluster).context("a submission still holds the hubs")?;
    let (seen, _) = cluster.stop(false).await?;
    let mut whole = Spans::new()?;
    let (mut send_lag, mut submit, mut after_ack) = (Spans::new()?, Spans::new()?, Spans::new()?);
    let mut arrived = 0u64;
    for (i, at) in seen.iter().flat_map(|s| &s.assigned) {
        let intended = t0 + interval.mul_f64(*i as f64);
        let (sent, acked) =
            *stamps.get(*i as usize).with_context(|| format!("an assignment for task {i}, never sent"))?;
        // Against the intended time, so a stall counts for everything it held up.
        whole.record(intended, *at);
        send_lag.record(intended, sent);
        submit.record(sent, acked);
        // An assignment can arrive before the answer to its submission does.
        after_ack.record(acked, *at);
        arrived += 1;
    }
    ensure!(arrived == n, "{n} tasks submitted, {arrived} assignments arrived");
    let whole = whole.spread();
    Ok(LatencyRow {
        label: label.to_owned(),
        rate,
        tasks: n,
        p50_ms: whole.p50_ms,
        p99_ms: whole.p99_ms,
        p999_ms: whole.p999_ms,
        max_ms: whole.max_ms,
        parts: Some(LatencyParts {
            send_lag: send_lag.spread(),
            submit: submit.spread(),
            after_ack: after_ack.spread(),
        }),
        steal_pct,
        commits: Some(commits),
    })
}

/// The slow end of `muster_db_commit_duration_seconds` in a metrics text.
fn commit_tail(metrics: &str) -> anyhow::Result<CommitTail> {
    const BUCKET: &str = "muster_db_commit_duration_seconds_bucket{le=\"";
    // Cumulative counts by upper bound, in the order the text gives them.
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(BUCKET) else { continue };
        let (le, count) = rest.split_once("\"} ").with_context(|| format!("a bucket line without a count: {line}"))?;
        let le =
            if le == "+Inf" { f64::INFINITY } else { le.parse().with_context(|| format!("bucket bound {le:?}"))? };
        buckets.push((le, count.trim().parse().with_context(|| format!("bucket count in {line}"))?));
    }
    let Some(&(_, commits)) = buckets.last() else {
        bail!("the hub's metrics have no muster_db_commit_duration_seconds histogram");
    };
    let within = |limit: f64| buckets.iter().filter(|(le, _)| *le <= limit).map(|(_, n)| *n).max().unwrap_or(0);
    let slowest = buckets.iter().find(|(_, n)| *n == commits).map_or(f64::INFINITY, |(le, _)| *le);
    Ok(CommitTail {
        commits,
        over_5ms: commits - within(0.005),
        over_50ms: commits - within(0.05),
        over_500ms: commits - within(0.5),
        slowest_at_most_ms: slowest * 1000.0,
    })
}

/// Durations from one instant to another, in microseconds; a span that
/// ends before it starts counts as the shortest there is.
struct Spans(Histogram<u64>);

impl Spans {
    fn new() -> anyhow::Result<Spans> {
        Ok(Spans(Histogram::new_with_bounds(1, 3_600_000_000, 3).context("a histogram")?))
    }

    fn record(&mut self, from: Instant, to: Instant) {
        let us = to.saturating_duration_since(from).as_micros().max(1) as u64;
        self.0.saturating_record(us);
    }

    fn spread(&self) -> Spread {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        Spread { p50_ms: ms(0.5), p99_ms: ms(0.99), p999_ms: ms(0.999), max_ms: self.0.max() as f64 / 1000.0 }
    }
}

/// `agents`: idle agents connected and heartbeating; what they cost the hub.
pub async fn agents(dir: &Path, plan: &Plan) -> anyhow::Result<AgentsRow> {
    let limit = crate::raise_open_files();
    // The hub holds one descriptor a connection, plus its database, listener and logs.
    let possible = limit.saturating_sub(256) as usize;
    let k = plan.idle_agents.min(possible);
    let hub = HubProc::start(dir, "127.0.0.1:0", &hub_flags(plan.idle_heartbeat)).await?;
    let api = Api::new(hub.addr, &hub.token);
    let agents = api.add_agents("idle", k, 64).await?;
    let before = hub.rss_bytes()?;
    let fleet = Fleet::start(hub.addr, &agents, 1, Mode::Idle);
    let kk = k as u64;
    fleet.tally.wait("the idle agents to connect", PATIENCE, |t| t.welcomed.load(Ordering::Relaxed) >= kk).await?;
    // Every agent heartbeats once before memory is read, so its session is in its steady state.
    let beats = fleet.tally.heartbeats.load(Ordering::Relaxed);
    fleet
        .tally
        .wait("a heartbeat from every agent", PATIENCE, |t| t.heartbeats.load(Ordering::Relaxed) >= beats + kk)
        .await?;
    let cpu0 = hub.cpu_seconds()?;
    let beats0 = fleet.tally.heartbeats.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(plan.idle_window).await;
    let cpu = hub.cpu_seconds()? - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let beats = fleet.tally.heartbeats.load(Ordering::Relaxed) - beats0;
    let after = hub.rss_bytes()?;
    let connected = crate::connected_agents(&api).await?;
    fleet.stop().await;
    let mut hub = hub;
    hub.stop().await;
    ensure!(connected == kk, "{kk} agents connected, the hub counts {connected}");
    let per = after.saturating_sub(before) as f64 / k.max(1) as f64;
    let heartbeat_s = plan.idle_heartbeat.as_secs_f64();
    Ok(AgentsRow {
        agents: k,
        requested: plan.idle_agents,
        open_file_limit: limit,
        heartbeat_s,
        rss_before_mib: before as f64 / MIB,
        rss_after_mib: after as f64 / MIB,
        per_agent_kib: per / 1024.0,
        projected_100k_mib: (before as f64 + per * 100_000.0) / MIB,
        cpu_cores: cpu / elapsed,
        heartbeats_per_sec: beats as f64 / elapsed,
        cpu_us_per_heartbeat: if beats > 0 { cpu * 1e6 / beats as f64 } else { 0.0 },
        projected_100k_cpu_cores: if beats > 0 { cpu / beats as f64 * 100_000.0 / heartbeat_s } else { 0.0 },
    })
}

const MIB: f64 = 1024.0 * 1024.0;

/// `recovery`: a hub killed with SIGKILL while it holds `queued` queued and
/// `running` running tasks; the time from its restart to its first
/// dispatch, and a count that nothing was lost.
pub async fn recovery(dir: &Path, plan: &Plan) -> anyhow::Result<RecoveryRow> {
    let mut hub = HubProc::start(dir, "127.0.0.1:0", &hub_flags(plan.heartbeat)).await?;
    let api = Api::new(hub.addr, &hub.token);
    let holders_n = plan.running.div_ceil(100).max(1) as usize;
    let per_holder = plan.running.div_ceil(holders_n as u64) as u32;
    let holders = api.add_agents("holder", holders_n, 16).await?;
    let fresh = api.add_agents("fresh", 1, 1).await?;
    let running = per_holder as u64 * holders_n as u64;
    let mut fleet = Fleet::start(hub.addr, &holders, per_holder, Mode::Hold);
    let n = holders.len() as u64;
    fleet.tally.wait("the holders to connect", PATIENCE, |t| t.welcomed.load(Ordering::Relaxed) >= n).await?;
    api.seed(running, 4).await?;
    fleet
        .tally
        .wait("every holder slot to run a task", PATIENCE, |t| t.running.load(Ordering::Relaxed) >= running)
        .await?;
    // Accepted runs are durable once the hub says so: wait until it counts them all.
    loop {
        let counts = api.counts().await?;
        if counts.get("running").copied().unwrap_or(0) >= running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.seed(plan.queued_recovery, 4).await?;
    let before = api.counts().await?;
    let total: u64 = before.values().sum();
    ensure!(total == running + plan.queued_recovery, "before the kill the hub holds {before:?}");
    hub.kill9().await;
    // The fresh agent, with free slots, connects as soon as the hub listens again.
    let fresh_tally_before = fleet.tally.assigned.load(Ordering::Relaxed);
    fleet.add(hub.addr, &fresh, 4, Mode::Finish, holders_n);
    let spawned = hub.restart().await?;
    let listening = spawned.elapsed();
    fleet
        .tally
        .wait("the first dispatch after the restart", PATIENCE, |t| {
            t.assigned.load(Ordering::Relaxed) > fresh_tally_before
        })
        .await?;
    let api = Api::new(hub.addr, &hub.token);
    // Every holder re-attaches its runs before the count is taken.
    let reattached = Instant::now();
    loop {
        let n = crate::connected_agents(&api).await?;
        if n > holders_n as u64 {
            break;
        }
        if reattached.elapsed() > PATIENCE {
            bail!("the agents did not reconnect");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped = fleet.tally.dropped.load(Ordering::Relaxed);
    let seen: Vec<Seen> = fleet.stop().await;
    let first = seen.iter().filter_map(|s| s.first_assign).filter(|at| *at > spawned).min();
    let after = api.counts().await?;
    hub.stop().await;
    let total_after: u64 = after.values().sum();
    let first = first.context("no assignment after the restart")?;
    Ok(RecoveryRow {
        queued: plan.queued_recovery,
        running,
        listening_s: listening.as_secs_f64(),
        first_dispatch_s: first.duration_since(spawned).as_secs_f64(),
        tasks_before: total,
        tasks_after: total_after,
        runs_dropped: dropped,
        lost: total.saturating_sub(total_after) + dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_tail_is_read_from_the_hubs_histogram() {
        let text = "# TYPE muster_db_commit_duration_seconds histogram\n\
            muster_db_commit_duration_seconds_bucket{le=\"0.001\"} 50\n\
            muster_db_commit_duration_seconds_bucket{le=\"0.005\"} 90\n\
            muster_db_commit_duration_seconds_bucket{le=\"0.05\"} 97\n\
            muster_db_commit_duration_seconds_bucket{le=\"0.5\"} 99\n\
            muster_db_commit_duration_seconds_bucket{le=\"1\"} 100\n\
            muster_db_commit_duration_seconds_bucket{le=\"2.5\"} 100\n\
            muster_db_commit_duration_seconds_bucket{le=\"+Inf\"} 100\n\
            muster_db_commit_duration_seconds_sum 3.2\n\
            muster_db_batch_size_bucket{le=\"1\"} 7\n";
        let tail = commit_tail(text).unwrap();
        let want = CommitTail { commits: 100, over_5ms: 10, over_50ms: 3, over_500ms: 1, slowest_at_most_ms: 1000.0 };
        assert_eq!(tail, want);
    }

    #[test]
    fn metrics_without_the_histogram_or_with_a_garbled_bucket_are_an_error() {
        let none = commit_tail("muster_up 1\n").unwrap_err().to_string();
        assert!(none.contains("no muster_db_commit_duration_seconds histogram"), "{none}");
        let garbled = commit_tail("muster_db_commit_duration_seconds_bucket{le=\"x\"} 3\n").unwrap_err().to_string();
        assert!(garbled.contains("bucket bound \"x\""), "{garbled}");
    }
}
