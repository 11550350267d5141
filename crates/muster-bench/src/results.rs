//! What a bench run found, as written to JSON and printed as a table.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputRow {
    /// Tasks already queued when the run started.
    pub queued: u64,
    pub tasks: u64,
    pub agents: u32,
    pub slots: u32,
    pub submitted_per_sec: f64,
    /// Tasks that finished (acknowledged durable) per second while submissions went on.
    pub finished_per_sec: f64,
    pub seconds: f64,
    /// Share of the machine's CPU time its host took back meanwhile, in percent.
    #[serde(default)]
    pub steal_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRow {
    pub label: String,
    /// Tasks submitted per second, open loop.
    pub rate: f64,
    pub tasks: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Where the time went, each part measured alone: how late the harness
    /// sent the request, how long the API took to acknowledge it, and how
    /// long after that acknowledgement the assignment arrived.
    #[serde(default)]
    pub parts: Option<LatencyParts>,
    /// Share of the machine's CPU time its host took back meanwhile, in percent.
    #[serde(default)]
    pub steal_pct: Option<f64>,
    /// How long the hub's commits took meanwhile, from its own histogram.
    #[serde(default)]
    pub commits: Option<CommitTail>,
}

/// The slow end of the hub's commits (each a write of the log and its
/// fsync): what of a latency tail the disk put there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitTail {
    pub commits: u64,
    pub over_5ms: u64,
    pub over_50ms: u64,
    pub over_500ms: u64,
    /// The upper bound of the histogram bucket the slowest commit fell in.
    pub slowest_at_most_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyParts {
    pub send_lag: Spread,
    pub submit: Spread,
    pub after_ack: Spread,
}

/// Quantiles of one part of the latency, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spread {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentsRow {
    /// Idle agents connected.
    pub agents: usize,
    /// Idle agents asked for.
    pub requested: usize,
    /// The open-file limit the processes ran under.
    pub open_file_limit: u64,
    pub heartbeat_s: f64,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    pub per_agent_kib: f64,
    /// The hub's memory with 100,000 such agents, from the measured cost of each.
    pub projected_100k_mib: f64,
    /// CPU the hub spent, in cores, while the agents only heartbeated.
    pub cpu_cores: f64,
    pub heartbeats_per_sec: f64,
    pub cpu_us_per_heartbeat: f64,
    pub projected_100k_cpu_cores: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryRow {
    pub queued: u64,
    pub running: u64,
    /// From the restart to the hub listening.
    pub listening_s: f64,
    /// From the restart to the first assignment arriving at an agent.
    pub first_dispatch_s: f64,
    pub tasks_before: u64,
    pub tasks_after: u64,
    /// Runs the restarted hub told their agents to drop.
    pub runs_dropped: u64,
    pub lost: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CeilingRow {
    pub tasks: u64,
    /// Task lives written per transaction.
    pub batch: u64,
    pub lives_per_sec: f64,
    pub seconds: f64,
    /// Share of the machine's CPU time its host took back meanwhile, in percent.
    #[serde(default)]
    pub steal_pct: Option<f64>,
}

/// How long the disk took to make a small append durable, measured on the
/// work directory before the scenarios ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskProbe {
    /// Bytes appended before each fsync, in KiB.
    pub write_kib: u64,
    pub fsyncs: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRow {
    pub name: String,
    pub version: String,
    pub backend: String,
    pub tasks: u64,
    pub concurrency: u64,
    pub jobs_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Why the peer did not run, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Muster on PostgreSQL with `hubs` hubs as equals on one database: its
/// throughput, and its latency at half of that throughput.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HubsRow {
    pub hubs: usize,
    pub throughput: ThroughputRow,
    pub latency: LatencyRow,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub wanted: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub smoke: bool,
    pub machine: String,
    #[serde(default)]
    pub disk: Option<DiskProbe>,
    pub throughput: Vec<ThroughputRow>,
    pub latency: Vec<LatencyRow>,
    pub agents: Option<AgentsRow>,
    pub recovery: Option<RecoveryRow>,
    pub ceiling: Option<CeilingRow>,
    pub peers: Vec<PeerRow>,
    /// The `hubs` scenario: Muster on PostgreSQL with 1, 2 and 3 hubs.
    #[serde(default)]
    pub hubs: Vec<HubsRow>,
    /// graphile-worker on the same PostgreSQL at each concurrency tried.
    #[serde(default)]
    pub graphile_sweep: Vec<PeerRow>,
    pub targets: Vec<Target>,
}
