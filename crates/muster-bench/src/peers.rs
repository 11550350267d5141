//! `peers`: the same no-op workload on other queues, installed from their
//! registries at bench time (`bench/peers/install`) and run on this machine:
//! graphile-worker on the local PostgreSQL, Celery on the local Redis.

use crate::Plan;
use crate::results::PeerRow;
use anyhow::{Context, anyhow, bail};
use muster_agent::process::ProcessGroup;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The local services the peers use, as this machine has them.
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS: &str = "redis://127.0.0.1:6379/15";
const PEER_PATIENCE: Duration = Duration::from_secs(3600);

/// Where the peers are installed: shared by `.ci/run`, or under `dir`.
fn install_dir(dir: &Path) -> std::path::PathBuf {
    match std::env::var_os("MUSTER_BENCH_PEERS") {
        Some(shared) => std::path::PathBuf::from(shared),
        None => dir.join("install"),
    }
}

pub async fn run(dir: &Path, plan: &Plan) -> Vec<PeerRow> {
    let install = install_dir(dir);
    let c = plan.concurrency();
    if let Err(e) = ensure_installed(&install).await {
        return ["graphile-worker", "celery"].iter().map(|n| failed(n, plan, c, &format!("{e:#}"))).collect();
    }
    let mut rows = Vec::new();
    rows.push(match graphile(&install, plan, POSTGRES, c).await {
        Ok(row) => row,
        Err(e) => failed("graphile-worker", plan, c, &format!("{e:#}")),
    });
    rows.push(match celery(&install, plan).await {
        Ok(row) => row,
        Err(e) => failed("celery", plan, c, &format!("{e:#}")),
    });
    rows
}

/// graphile-worker on the PostgreSQL server `server` names, at each of
/// several concurrencies (and at Muster's): a comparison is fair only with
/// its best.
pub async fn graphile_sweep(dir: &Path, plan: &Plan, server: &str) -> Vec<PeerRow> {
    let install = install_dir(dir);
    let mut levels: Vec<u64> = if plan.smoke { vec![4, 16] } else { vec![16, 64, 256] };
    levels.push(plan.concurrency());
    levels.sort_unstable();
    levels.dedup();
    if let Err(e) = ensure_installed(&install).await {
        return levels.iter().map(|c| failed("graphile-worker", plan, *c, &format!("{e:#}"))).collect();
    }
    let mut rows = Vec::new();
    for c in levels {
        rows.push(match graphile(&install, plan, server, c).await {
            Ok(row) => row,
            Err(e) => failed("graphile-worker", plan, c, &format!("{e:#}")),
        });
    }
    rows
}

fn failed(name: &str, plan: &Plan, concurrency: u64, why: &str) -> PeerRow {
    eprintln!("muster bench: {name} did not run: {why}");
    PeerRow {
        name: name.into(),
        version: String::new(),
        backend: String::new(),
        tasks: plan.peer_tasks,
        concurrency,
        jobs_per_sec: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
        error: Some(why.to_owned()),
    }
}

/// Installs the peers into `dir` unless they are there already (`.ci/run`
/// installs them once, in `MUSTER_BENCH_PEERS`).
async fn ensure_installed(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node/node_modules/graphile-worker").exists() && dir.join("python/celery").exists() {
        return Ok(());
    }
    let script = crate::scripts_dir().join("peers/install");
    let mut cmd = tokio::process::Command::new(&script);
    cmd.arg(dir).stdin(Stdio::null());
    let (code, _, err) = output(&mut cmd).await.with_context(|| format!("cannot run {}", script.display()))?;
    if code != 0 {
        bail!("installing the peers failed: {}", err.trim());
    }
    Ok(())
}

/// Runs `cmd` to its end; its exit code, standard output and error.
async fn output(cmd: &mut tokio::process::Command) -> anyhow::Result<(i32, String, String)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut group = ProcessGroup::spawn(cmd)?;
    let child = group.child_mut();
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let read = async {
        use tokio::io::AsyncReadExt;
        let (mut o, mut e) = (String::new(), String::new());
        if let Some(out) = out.as_mut() {
            out.read_to_string(&mut o).await?;
        }
        if let Some(err) = err.as_mut() {
            err.read_to_string(&mut e).await?;
        }
        anyhow::Ok((o, e))
    };
    let (o, e) = tokio::time::timeout(PEER_PATIENCE, read).await.map_err(|_| anyhow!("timed out"))??;
    let status = group.wait().await?;
    Ok((status.code().unwrap_or(-1), o, e))
}

/// The peer's one JSON line of results.
fn parse_row(name: &str, code: i32, out: &str, err: &str) -> anyhow::Result<PeerRow> {
    if code != 0 {
        bail!("{name} exited with {code}: {}", err.trim());
    }
    let line = out.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| anyhow!("{name} printed no results"))?;
    serde_json::from_str(line).with_context(|| format!("{name} printed {line:?}"))
}

/// graphile-worker at `concurrency` on a fresh database of the server
/// `server` names, dropped after.
async fn graphile(install: &Path, plan: &Plan, server: &str, concurrency: u64) -> anyhow::Result<PeerRow> {
    let server = server.to_owned();
    let db = tokio::task::spawn_blocking(move || muster_store::postgres::ScratchDb::create_on(&server))
        .await
        .context("the database thread panicked")?
        .context("cannot make graphile-worker's database")?;
    let script = crate::scripts_dir().join("peers/graphile-worker/run.cjs");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .args([db.url().to_owned(), plan.peer_tasks.to_string(), concurrency.to_string()])
        .arg(plan.submitters.to_string())
        .env("NODE_PATH", install.join("node/node_modules"))
        .stdin(Stdio::null());
    let (code, out, err) = output(&mut cmd).await?;
    // Dropped on a thread of its own: the driver blocks.
    tokio::task::spawn_blocking(move || drop(db)).await.context("the database thread panicked")?;
    parse_row("graphile-worker", code, &out, &err)
}

async fn celery(install: &Path, plan: &Plan) -> anyhow::Result<PeerRow> {
    let script = crate::scripts_dir().join("peers/celery/run.py");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(&script)
        .args([REDIS.to_owned(), plan.peer_tasks.to_string(), plan.concurrency().to_string()])
        .arg(plan.submitters.min(16).to_string())
        .env("PYTHONPATH", install.join("python"))
        .stdin(Stdio::null());
    let (code, out, err) = output(&mut cmd).await?;
    parse_row("celery", code, &out, &err)
}
