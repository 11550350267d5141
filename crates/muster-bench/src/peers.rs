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
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
const REDIS: &str = "redis://127.0.0.1:6379/15";
const PEER_PATIENCE: Duration = Duration::from_secs(3600);

pub async fn run(dir: &Path, plan: &Plan) -> Vec<PeerRow> {
    let install = match std::env::var_os("MUSTER_BENCH_PEERS") {
        Some(shared) => std::path::PathBuf::from(shared),
        None => dir.join("install"),
    };
    if let Err(e) = ensure_installed(&install).await {
        return ["graphile-worker", "celery"].iter().map(|n| failed(n, plan, &format!("{e:#}"))).collect();
    }
    let mut rows = Vec::new();
    rows.push(match graphile(&install, plan).await {
        Ok(row) => row,
        Err(e) => failed("graphile-worker", plan, &format!("{e:#}")),
    });
    rows.push(match celery(&install, plan).await {
        Ok(row) => row,
        Err(e) => failed("celery", plan, &format!("{e:#}")),
    });
    rows
}

fn failed(name: &str, plan: &Plan, why: &str) -> PeerRow {
    eprintln!("muster bench: {name} did not run: {why}");
    PeerRow {
        name: name.into(),
        version: String::new(),
        backend: String::new(),
        tasks: plan.peer_tasks,
        concurrency: plan.concurrency(),
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

async fn graphile(install: &Path, plan: &Plan) -> anyhow::Result<PeerRow> {
    let db = format!("muster_bench_{}", std::process::id());
    psql(&format!("DROP DATABASE IF EXISTS {db}")).await?;
    psql(&format!("CREATE DATABASE {db}")).await?;
    let script = crate::scripts_dir().join("peers/graphile-worker/run.cjs");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .args([format!("{POSTGRES}/{db}"), plan.peer_tasks.to_string(), plan.concurrency().to_string()])
        .arg(plan.submitters.to_string())
        .env("NODE_PATH", install.join("node/node_modules"))
        .stdin(Stdio::null());
    let result = output(&mut cmd).await;
    let _ = psql(&format!("DROP DATABASE IF EXISTS {db}")).await;
    let (code, out, err) = result?;
    parse_row("graphile-worker", code, &out, &err)
}

async fn psql(sql: &str) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null());
    let (code, _, err) = output(&mut cmd).await.context("cannot run psql")?;
    if code != 0 {
        bail!("psql {sql:?}: {}", err.trim());
    }
    Ok(())
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
