//! The hub under test: a real `muster hub` process on a fresh data
//! directory, and what the kernel says it costs.

use anyhow::{Context, anyhow, bail};
use muster_agent::process::ProcessGroup;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a hub may take to start listening, even on a million tasks.
const START_PATIENCE: Duration = Duration::from_secs(300);

pub struct HubProc {
    group: Option<ProcessGroup>,
    pid: i32,
    pub addr: SocketAddr,
    pub token: String,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl HubProc {
    /// Starts `muster hub` on `dir` with `extra` flags, listening on `listen`.
    pub async fn start(dir: &Path, listen: &str, extra: &[String]) -> anyhow::Result<HubProc> {
        HubProc::start_as(dir, listen, extra, None).await
    }

    /// `start`, for a hub that joins others on a shared database: it uses
    /// the admin token the first of them made (`token`), and writes none.
    pub async fn start_as(dir: &Path, listen: &str, extra: &[String], token: Option<&str>) -> anyhow::Result<HubProc> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (group, addr, _) = spawn(dir, listen, extra).await?;
        let token = match token {
            Some(token) => token.to_owned(),
            None => std::fs::read_to_string(dir.join("admin.token"))
                .with_context(|| format!("the hub wrote no admin token in {}", dir.display()))?,
        };
        Ok(HubProc {
            pid: group.pgid(),
            group: Some(group),
            addr,
            token: token.trim().to_owned(),
            dir: dir.to_owned(),
            args: extra.to_vec(),
        })
    }

    /// Kills the hub with SIGKILL: nothing of its shutdown runs.
    pub async fn kill9(&mut self) {
        if let Some(mut group) = self.group.take() {
            group.signal(libc::SIGKILL);
            let _ = group.wait().await;
        }
    }

    /// Starts the hub again on the same data directory and address; returns
    /// when it is listening, with the instant the process was started.
    pub async fn restart(&mut self) -> anyhow::Result<Instant> {
        let (group, addr, spawned) = spawn(&self.dir, &self.addr.to_string(), &self.args).await?;
        self.pid = group.pgid();
        self.group = Some(group);
        self.addr = addr;
        Ok(spawned)
    }

    /// Stops the hub the way an operator does (SIGTERM).
    pub async fn stop(&mut self) {
        if let Some(mut group) = self.group.take() {
            let _ = group.terminate(Duration::from_secs(30)).await;
        }
    }

    /// Resident memory, from `/proc/PID/status`.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", self.pid))?;
        Ok(kib * 1024)
    }

    /// CPU time the hub has used, user and system, from `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // The command name may hold spaces; fields count from after its ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("unreadable /proc stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
        // SAFETY: sysconf reads a constant of the running system.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok((ticks(11) + ticks(12)) as f64 / per_second)
    }
}

async fn spawn(dir: &Path, listen: &str, extra: &[String]) -> anyhow::Result<(ProcessGroup, SocketAddr, Instant)> {
    let exe = std::env::current_exe().context("cannot find the muster binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    let dir_arg = dir.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", dir.display()))?;
    cmd.args(["--data-dir", dir_arg, "hub", "--listen", listen])
        .args(extra)
        .env("MUSTER_LOG", "warn")
        .env_remove("MUSTER_TOKEN")
        .env_remove("MUSTER_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let spawned = Instant::now();
    let mut group = ProcessGroup::spawn(&mut cmd).context("cannot start the hub")?;
    let stderr = group.child_mut().stderr.take().ok_or_else(|| anyhow!("the hub's stderr is not piped"))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    // Keeps reading so the hub never blocks on a full pipe; warnings are shown.
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening on http://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            } else {
                eprintln!("[hub] {line}");
            }
        }
    });
    let line = match tokio::time::timeout(START_PATIENCE, rx).await {
        Ok(Ok(line)) => line,
        Ok(Err(_)) => bail!("the hub exited before it listened (its output is above)"),
        Err(_) => bail!("the hub did not listen within {} s", START_PATIENCE.as_secs()),
    };
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .ok_or_else(|| anyhow!("no address in {line:?}"))?;
    Ok((group, addr.parse().with_context(|| format!("{addr:?} is not an address"))?, spawned))
}
