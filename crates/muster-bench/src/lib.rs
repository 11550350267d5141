//! `muster bench`: the benchmark harness.
//!
//! It starts real hubs (this same binary, `muster hub`, SQLite in WAL with
//! `synchronous=FULL` on a fresh data directory) and drives them through
//! their real interfaces: tasks submitted over the HTTP API, simulated
//! agents on WebSockets over the loopback that run a no-op, so what is
//! measured is the hub's own cost. Beside them it measures the write
//! ceiling of the same disk and runs peer queues on the same workload. It
//! prints a table and writes JSON; `docs/benchmarks.md` explains each figure.

mod ceiling;
mod host;
mod hub;
mod peers;
mod report;
pub mod results;
mod scenarios;
mod sim;

use anyhow::Context;
use clap::{Args, ValueEnum};
use results::Results;
use scenarios::Backend;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    Throughput,
    Latency,
    Agents,
    Recovery,
    Ceiling,
    Peers,
    /// Muster on PostgreSQL (`--database`) with 1, 2 and 3 hubs, beside
    /// graphile-worker at each of its concurrencies on the same server.
    Hubs,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Run only these scenarios (repeat the flag); all of them when not given.
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// A small, fast run that shows the harness works; its figures mean nothing.
    #[arg(long)]
    pub smoke: bool,
    /// Where the results go as JSON [default: target/bench/results.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where hubs and peers keep their data [default: target/bench/run]; emptied first.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Tasks each throughput run submits [default: 50000; smoke 200].
    #[arg(long)]
    pub tasks: Option<u64>,
    /// Simulated agents in the throughput and latency runs [default: 16; smoke 4].
    #[arg(long)]
    pub agents: Option<u32>,
    /// Slots of each simulated agent [default: 16; smoke 4].
    #[arg(long)]
    pub slots: Option<u32>,
    /// Deepest queue, for throughput at depth and recovery [default: 1000000; smoke 1000].
    #[arg(long)]
    pub queued: Option<u64>,
    /// Idle agents to connect [default: 100000, or as many as the open-file limit allows; smoke 50].
    #[arg(long)]
    pub idle_agents: Option<usize>,
    /// Pace the latency runs from this peak (tasks/s) instead of measuring
    /// it: two builds, or two machines, compared at the same rates.
    #[arg(long, value_parser = positive_rate)]
    pub peak: Option<f64>,
    /// A PostgreSQL server for the `hubs` scenario, as a URL naming a
    /// database to connect to (`postgres://postgres@127.0.0.1:5432/postgres`):
    /// each run makes a fresh database there and drops it. Given alone, only
    /// `hubs` runs.
    #[arg(long)]
    pub database: Option<String>,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(r),
        Ok(_) => Err(format!("{s} is not a rate: a peak is at least 1 task a second")),
        Err(e) => Err(format!("{s} is not a number: {e}")),
    }
}

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub tasks: u64,
    pub agents: u32,
    pub slots: u32,
    /// Task submissions in flight at once in the throughput runs.
    pub submitters: usize,
    /// The queue depths throughput is measured at.
    pub depths: Vec<u64>,
    pub heartbeat: Duration,
    pub latency_duration: Duration,
    pub idle_agents: usize,
    pub idle_heartbeat: Duration,
    pub idle_window: Duration,
    pub queued_recovery: u64,
    pub running: u64,
    pub ceiling_tasks: u64,
    pub ceiling_batch: u32,
    pub peer_tasks: u64,
}

impl Plan {
    pub fn new(args: &BenchArgs) -> Plan {
        let mut plan = if args.smoke {
            Plan {
                smoke: true,
                tasks: 200,
                agents: 4,
                slots: 4,
                submitters: 8,
                depths: vec![0, 1000],
                heartbeat: Duration::from_secs(1),
                latency_duration: Duration::from_secs(1),
                idle_agents: 50,
                idle_heartbeat: Duration::from_millis(200),
                idle_window: Duration::from_secs(1),
                queued_recovery: 1000,
                running: 20,
                ceiling_tasks: 2000,
                ceiling_batch: 100,
                peer_tasks: 200,
            }
        } else {
            Plan {
                smoke: false,
                tasks: 50_000,
                agents: 16,
                slots: 16,
                submitters: 64,
                depths: vec![0, 100_000, 1_000_000],
                heartbeat: Duration::from_secs(10),
                latency_duration: Duration::from_secs(20),
                idle_agents: 100_000,
                idle_heartbeat: Duration::from_secs(10),
                idle_window: Duration::from_secs(30),
                queued_recovery: 1_000_000,
                running: 1000,
                ceiling_tasks: 200_000,
                ceiling_batch: 1000,
                peer_tasks: 50_000,
            }
        };
        if let Some(n) = args.tasks {
            plan.tasks = n.max(1);
            plan.peer_tasks = n.max(1);
        }
        if let Some(n) = args.agents {
            plan.agents = n.max(1);
        }
        if let Some(n) = args.slots {
            plan.slots = n.clamp(1, 1024);
        }
        if let Some(q) = args.queued {
            plan.queued_recovery = q;
            plan.depths = if q == 0 { vec![0] } else { vec![0, q] };
        }
        if let Some(k) = args.idle_agents {
            plan.idle_agents = k.max(1);
        }
        plan
    }

    /// Tasks in flight at once: every slot of every agent.
    pub fn concurrency(&self) -> u64 {
        u64::from(self.agents) * u64::from(self.slots)
    }
}

/// One step of a run.
#[derive(Debug, PartialEq)]
enum Step {
    /// Throughput at these queue depths, each with its place in `Plan::depths`.
    Throughput(Vec<(usize, u64)>),
    Latency,
    Agents,
    Recovery,
    Ceiling,
    Peers,
    Hubs,
}

/// The order the scenarios asked for run in. Latency runs straight after
/// the empty-queue throughput that gives its peak, before the deep queues:
/// those write gigabytes the machine goes on digesting for minutes after
/// (benchmarks.md, finding 23), which would otherwise land in the latency
/// runs. The table lists throughput by depth all the same.
fn steps(wanted: &[Scenario], depths: &[u64]) -> Vec<Step> {
    let both = wanted.contains(&Scenario::Throughput) && wanted.contains(&Scenario::Latency);
    // Each depth with its place in `depths`, those that `keep` takes.
    let at = |keep: fn(u64) -> bool| depths.iter().copied().enumerate().filter(|(_, d)| keep(*d)).collect();
    let mut out = Vec::new();
    for scenario in wanted {
        match scenario {
            Scenario::Throughput if both => out.push(Step::Throughput(at(|d| d == 0))),
            Scenario::Throughput => out.push(Step::Throughput(at(|_| true))),
            Scenario::Latency => {
                out.push(Step::Latency);
                if both {
                    out.push(Step::Throughput(at(|d| d != 0)));
                }
            }
            Scenario::Agents => out.push(Step::Agents),
            Scenario::Recovery => out.push(Step::Recovery),
            Scenario::Ceiling => out.push(Step::Ceiling),
            Scenario::Peers => out.push(Step::Peers),
            Scenario::Hubs => out.push(Step::Hubs),
        }
    }
    out
}

/// Runs the scenarios asked for, prints the table and writes the JSON.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args);
    let mut wanted = args.scenarios.clone();
    if wanted.is_empty() {
        wanted = match args.database {
            Some(_) => vec![Scenario::Hubs],
            None => Scenario::value_variants().iter().copied().filter(|s| *s != Scenario::Hubs).collect(),
        };
    }
    if wanted.contains(&Scenario::Hubs) && args.database.is_none() {
        anyhow::bail!("the hubs scenario runs on PostgreSQL: give --database postgres://USER@HOST:PORT/DB");
    }
    wanted.sort();
    wanted.dedup();
    let work = args.work_dir.clone().unwrap_or_else(|| PathBuf::from("target/bench/run"));
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("cannot empty {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let work = work.canonicalize()?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("target/bench/results.json"));
    let mut results = Results { smoke: plan.smoke, machine: machine(), ..Default::default() };
    let step = |name: &str| eprintln!("muster bench: {name} …");
    step("the disk's fsync");
    let span = if plan.smoke { Duration::from_millis(200) } else { Duration::from_secs(2) };
    results.disk = Some(host::probe_fsync(&work, span)?);
    for next in steps(&wanted, &plan.depths) {
        match next {
            Step::Throughput(depths) => {
                for (i, depth) in depths {
                    step(&format!("throughput with {depth} queued"));
                    let dir = work.join(format!("throughput-{i}"));
                    let row = scenarios::throughput(&dir, &plan, depth, &Backend::Sqlite).await?;
                    results.throughput.push(row);
                }
            }
            Step::Latency => {
                let measured = results.throughput.iter().find(|r| r.queued == 0).map(|row| row.finished_per_sec);
                let peak = match args.peak.or(measured) {
                    Some(peak) => peak,
                    None => {
                        step("throughput, to find the peak the latency runs are paced from");
                        let once = Plan { depths: vec![0], ..plan.clone() };
                        scenarios::throughput(&work.join("peak"), &once, 0, &Backend::Sqlite).await?.finished_per_sec
                    }
                };
                // A given peak is not this run's: its rows are named apart,
                // so no target is judged on them.
                let shares = match args.peak {
                    Some(_) => [(0.5, "half of the given peak"), (0.1, "10% of the given peak")],
                    None => [(0.5, "half of peak"), (0.1, "10% of peak")],
                };
                for (share, label) in shares {
                    step(&format!("latency at {label}"));
                    let dir = work.join(format!("latency-{}", (share * 100.0) as u32));
                    let rate = (peak * share).max(1.0);
                    results.latency.push(scenarios::latency(&dir, &plan, rate, label, &Backend::Sqlite).await?);
                }
            }
            Step::Agents => {
                step("idle agents");
                results.agents = Some(scenarios::agents(&work.join("agents"), &plan).await?);
            }
            Step::Recovery => {
                step("recovery after SIGKILL");
                results.recovery = Some(scenarios::recovery(&work.join("recovery"), &plan).await?);
            }
            Step::Ceiling => {
                step("the write ceiling");
                results.ceiling = Some(ceiling::run(&work.join("ceiling"), &plan).await?);
            }
            Step::Peers => {
                step("peer queues");
                results.peers = peers::run(&work.join("peers"), &plan).await;
            }
            Step::Hubs => {
                let server = args.database.clone().expect("checked above");
                for hubs in 1..=3 {
                    let backend = Backend::Postgres { server: server.clone(), hubs };
                    step(&format!("throughput on PostgreSQL with {hubs} hub(s)"));
                    let dir = work.join(format!("hubs-{hubs}"));
                    let throughput = scenarios::throughput(&dir.join("throughput"), &plan, 0, &backend).await?;
                    let rate = (throughput.finished_per_sec * 0.5).max(1.0);
                    step(&format!("latency on PostgreSQL with {hubs} hub(s) at half of its peak"));
                    let label = format!("half of peak, {hubs} hub(s) on PostgreSQL");
                    let latency = scenarios::latency(&dir.join("latency"), &plan, rate, &label, &backend).await?;
                    results.hubs.push(results::HubsRow { hubs, throughput, latency });
                }
                step("graphile-worker on the same PostgreSQL, at each concurrency");
                results.graphile_sweep = peers::graphile_sweep(&work.join("graphile"), &plan, &server).await;
            }
        }
    }
    results.targets = report::targets(&results);
    println!("{}", report::table(&results, &plan));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("results written to {}", out.display());
    Ok(())
}

/// A line naming the machine the figures come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {mem:.0} GiB")
}

/// Raises this process's open-file limit as far as the hard limit allows
/// (children, the hub among them, inherit it); returns the limit in force.
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        // Root may raise the hard limit too, up to what the kernel allows.
        let want = libc::rlimit { rlim_cur: 1_048_576, rlim_max: 1_048_576 };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return want.rlim_cur;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Agents the hub counts as connected.
async fn connected_agents(api: &sim::Api) -> anyhow::Result<u64> {
    let status = api.call(reqwest::Method::GET, "/status", None).await?;
    Ok(status["connected_agents"].as_u64().unwrap_or(0))
}

/// Where the repository's bench scripts live.
fn scripts_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.join("../../bench")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_runs_between_the_empty_queue_and_the_deep_ones() {
        let every = Scenario::value_variants().to_vec();
        let depths = [0, 100_000, 1_000_000];
        assert_eq!(
            steps(&every, &depths),
            [
                Step::Throughput(vec![(0, 0)]),
                Step::Latency,
                Step::Throughput(vec![(1, 100_000), (2, 1_000_000)]),
                Step::Agents,
                Step::Recovery,
                Step::Ceiling,
                Step::Peers,
                Step::Hubs,
            ]
        );
        // Throughput alone keeps every depth in one step; latency alone
        // measures its own peak.
        assert_eq!(
            steps(&[Scenario::Throughput], &depths),
            [Step::Throughput(vec![(0, 0), (1, 100_000), (2, 1_000_000)])]
        );
        assert_eq!(steps(&[Scenario::Latency, Scenario::Ceiling], &depths), [Step::Latency, Step::Ceiling]);
        // No empty queue asked for: latency finds its peak itself, first.
        assert_eq!(
            steps(&[Scenario::Throughput, Scenario::Latency], &[5000]),
            [Step::Throughput(vec![]), Step::Latency, Step::Throughput(vec![(0, 5000)])]
        );
    }
}
