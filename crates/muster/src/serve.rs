//! The long-running commands: `hub`, `agent run` and `up`.

use crate::settings::{HubArgs, hub_config};
use anyhow::{Context, bail};
use clap::Args;
use muster_agent::{AgentConfig, AgentFile, RunnerProfile};
use muster_cli::{CliError, ConnArgs, exit};
use muster_core::AgentName;
use muster_hub::{Hub, HubConfig, SystemClock};
use muster_store::Limits;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// Reads the TLS certificate and key again on every SIGHUP: connections
/// already open keep theirs, new ones get the new certificate.
fn reload_tls_on_sighup(hub: &Hub) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install a SIGHUP handler; restart the hub to load a new certificate");
        return;
    };
    let hub = hub.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match hub.reload_tls().await {
                Ok(true) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
                Ok(false) => tracing::info!("SIGHUP: the hub serves plain HTTP; nothing to reload"),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: cannot reload the TLS certificate; the old one stays")
                }
            }
        }
    });
}

/// Holds an exclusive lock on the data directory so two hubs never share it.
struct DirLock(#[allow(dead_code)] std::fs::File);

fn lock_data_dir(dir: &Path) -> anyhow::Result<DirLock> {
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::io::AsRawFd;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let path = dir.join("hub.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another muster hub is already using {}", dir.display());
    }
    Ok(DirLock(file))
}

struct Opened {
    hub: Hub,
    listener: TcpListener,
    _lock: DirLock,
}

/// Starts logging to the console and to `<data-dir>/logs/`.
fn start_logging(
    args: &HubArgs,
    data_dir: &Path,
    default_console: crate::logging::Console,
) -> anyhow::Result<crate::logging::LevelControl> {
    use crate::logging::{Console, DEFAULT_KEEP, DEFAULT_MAX_BYTES, Logs};
    let console = match args.log_format.as_deref() {
        Some("json") => Console::Json,
        Some("text") => Console::Text,
        _ => default_console,
    };
    let file =
        (data_dir.join("logs"), args.log_max_bytes.unwrap_or(DEFAULT_MAX_BYTES), args.log_keep.unwrap_or(DEFAULT_KEEP));
    crate::logging::init(Logs { console, file: Some(file), default_level: "info" })
        .with_context(|| format!("cannot open the log directory {}", data_dir.join("logs").display()))
}

/// Connections the kernel queues for the hub before it accepts them
/// (capped by `net.core.somaxconn`, 4096 by default). The usual 128
/// overflows when a fleet reconnects at once after a restart, or a burst of
/// clients each opens a connection, and every connection dropped that way
/// waits a whole second for its handshake to be sent again.
const ACCEPT_BACKLOG: u32 = 4096;

fn listen_on(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restarted hub takes its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

async fn open_hub(config: HubConfig, args: &HubArgs, console: crate::logging::Console) -> anyhow::Result<Opened> {
    let lock = lock_data_dir(&config.data_dir)?;
    let levels = start_logging(args, &config.data_dir, console)?;
    for dir in [&config.data_dir, &config.backup_dir] {
        match crate::private::tighten(dir) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                dir = %dir.display(),
                tightened = n,
                "other users could read files here; they are now the hub's owner's alone (files 0600, directories 0700)"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot make {} private: {e}", dir.display()),
        }
    }
    // Each connection and agent socket is a file descriptor; the soft limit is often 1,024.
    muster_hub::raise_file_limit();
    let limits = Limits { max_output_bytes_per_attempt: config.max_output_bytes_per_attempt, ..Limits::default() };
    let location = config.database.clone();
    let store = tokio::task::spawn_blocking(move || {
        location.open(limits).with_context(|| format!("cannot open the database {location}"))
    })
    .await??;
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    // Bind before showing a new admin token: a start that fails must not use
    // up its only display. And before the hub introduces itself to the
    // others on its database, by the address it really has (port 0 picks one).
    let listener = listen_on(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let mut config = config;
    config.listen = listener.local_addr().with_context(|| format!("cannot read the address bound for {listen}"))?;
    let hub = Hub::new(store, config, Arc::new(SystemClock)).await?;
    hub.set_log_control(move |level| levels.set(level));
    if let Some(token) = hub.ensure_admin_token(&data_dir).await? {
        let saved = data_dir.join("admin.token");
        // Shown to a person at a terminal only: piped or under a supervisor,
        // stderr ends up in log files, where a token must never go.
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            say!("{token}");
            say!(
                "muster: created the admin token above; it is shown only once and saved to {} (mode 0600)",
                saved.display()
            );
        } else {
            say!(
                "muster: created an admin token and saved it to {} (mode 0600); it is not shown because stderr is not a terminal",
                saved.display()
            );
        }
    }
    Ok(Opened { hub, listener, _lock: lock })
}

/// `muster restore FILE`: offline, with the data directory locked so no hub
/// can be running on it.
pub fn restore(conn: &ConnArgs, file: &Path) -> anyhow::Result<()> {
    let dir = conn.data_dir.clone().unwrap_or_else(|| PathBuf::from(muster_cli::DEFAULT_DATA_DIR));
    crate::private::private_umask();
    let _lock = lock_data_dir(&dir).map_err(|e| anyhow::anyhow!("{e:#}; stop the hub before restoring"))?;
    let stamp = muster_proto::timestamp(muster_hub::Clock::now(&SystemClock)).replace(['-', ':', '.'], "");
    let db = dir.join("muster.db");
    let restored = muster_store::sqlite::backup::restore(file, &db, &stamp)
        .map_err(|e| anyhow::anyhow!("restore refused: {e}"))?;
    println!("{}", db.display());
    say!(
        "restored {} ({} bytes, {} tasks, integrity ok) into {}",
        file.display(),
        restored.from.bytes,
        restored.from.tasks,
        db.display()
    );
    match restored.previous {
        Some(kept) => say!("the database it replaced is kept as {}", kept.display()),
        None => say!("there was no database to replace"),
    }
    say!("start the hub to use it; agents re-attach to their runs as after any restart");
    Ok(())
}

/// `muster migrate --from DIR --to postgres://…`: offline, with the data
/// directory locked so no hub can be running on it.
pub async fn migrate(from: &Path, to: &str) -> anyhow::Result<()> {
    let (dir, db) = if from.is_dir() {
        (from.to_owned(), from.join("muster.db"))
    } else {
        (from.parent().map_or_else(|| PathBuf::from("."), Path::to_owned), from.to_owned())
    };
    let target = muster_store::Location::parse(Some(to), &dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let muster_store::Location::Postgres(url) = target.clone() else {
        bail!("--to must be a PostgreSQL URL (postgres://USER@HOST/DB), not {target}");
    };
    crate::private::private_umask();
    let _lock = lock_data_dir(&dir).map_err(|e| anyhow::anyhow!("{e:#}; stop the hub before migrating"))?;
    let now = muster_hub::Clock::now(&SystemClock);
    let source = db.clone();
    let report = tokio::task::spawn_blocking(move || muster_store::migrate::sqlite_to_postgres(&source, &url, now))
        .await?
        .map_err(|e| anyhow::anyhow!("migration refused: {e}"))?;
    let rows: u64 = report.tables.iter().map(|(_, n)| n).sum();
    say!("copied {rows} rows from {} into {target}, in one transaction:", db.display());
    for (table, n) in report.tables.iter().filter(|(_, n)| *n > 0) {
        say!("  {table:<20} {n}");
    }
    say!("counts: every table has as many rows in PostgreSQL as in SQLite");
    if report.check.findings.is_empty() {
        say!("check: ok, every invariant holds on the copy");
    } else {
        for (kind, detail) in &report.check.findings {
            say!("check: {kind}: {detail}");
        }
        bail!("the copy has {} findings; the SQLite database is unchanged", report.check.findings.len());
    }
    say!("start hubs with --database {target}; {} is left as it was", db.display());
    Ok(())
}

pub async fn hub(conn: &ConnArgs, args: HubArgs) -> anyhow::Result<()> {
    let config = hub_config(&args, conn.data_dir.as_deref())?;
    crate::private::private_umask();
    let data_dir = config.data_dir.clone();
    let database = config.database.clone();
    let tls = config.tls.is_some();
    let opened = open_hub(config, &args, crate::logging::Console::Json).await?;
    let addr = opened.listener.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    say!("muster hub listening on {scheme}://{addr} (data in {}, database {database})", data_dir.display());
    reload_tls_on_sighup(&opened.hub);
    opened.hub.serve(opened.listener, shutdown_signal()).await
}

#[derive(Debug, Clone, Args)]
pub struct AgentRunArgs {
    /// Tasks run at once [default: 1].
    #[arg(long, env = "MUSTER_SLOTS")]
    pub slots: Option<u32>,
    /// Agent settings file (TOML).
    #[arg(long = "config", env = "MUSTER_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// A capability this agent offers (repeatable).
    #[arg(long = "cap")]
    pub caps: Vec<String>,
    /// Enable a built-in runner: claude, codex or shell (repeatable).
    #[arg(long = "runner")]
    pub runners: Vec<String>,
    /// Directory runs start in [default: the current directory].
    #[arg(long, env = "MUSTER_WORKDIR")]
    pub workdir: Option<PathBuf>,
    /// How long a shutdown waits for runs before stopping them.
    #[arg(long, default_value = "30s")]
    pub drain_timeout: String,
}

fn agent_config(
    hub_url: String,
    token: String,
    args: &AgentRunArgs,
    default_slots: u32,
) -> anyhow::Result<AgentConfig> {
    let file = match &args.config {
        Some(path) => AgentFile::load(path)?,
        None => AgentFile::default(),
    };
    let mut runners: BTreeMap<String, RunnerProfile> = BTreeMap::new();
    // claude and codex are offered whenever they are installed; shell only when asked for.
    for name in ["claude", "codex"] {
        if muster_agent::config::on_path(name) {
            runners.insert(name.into(), RunnerProfile::builtin(name).expect("a built-in runner"));
        }
    }
    for name in file.enable.iter().chain(&args.runners) {
        let profile = RunnerProfile::builtin(name).with_context(|| {
            format!("no built-in runner named {name:?}; built-in runners are claude, codex and shell")
        })?;
        if !muster_agent::config::on_path(&profile.argv[0]) {
            tracing::warn!(runner = %name, program = %profile.argv[0], "runner enabled but its program is not on PATH");
        }
        runners.insert(name.clone(), profile);
    }
    runners.extend(file.runners.clone());
    let mut capabilities = file.capabilities.clone();
    capabilities.extend(args.caps.iter().cloned());
    // Absolute, so git (run in other directories) and runs agree on every path.
    let absolute = |p: &std::path::Path| {
        std::path::absolute(p).with_context(|| format!("cannot make {} an absolute path", p.display()))
    };
    let workdir = match args.workdir.clone().or(file.workdir.clone()) {
        Some(w) => absolute(&w)?,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let repos_root = file.repos_root.as_deref().map(absolute).transpose()?;
    let mut repos = BTreeMap::new();
    for (name, path) in &file.repos {
        repos.insert(name.clone(), absolute(path)?);
    }
    let kill_grace = match &file.kill_grace {
        Some(g) => muster_proto::parse_duration("kill_grace", g).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Duration::from_secs(10),
    };
    let config = AgentConfig {
        hub: hub_url,
        token,
        slots: args.slots.or(file.slots).unwrap_or(default_slots),
        capabilities,
        runners,
        workdir,
        kill_grace,
        max_output_bytes: 4 << 20,
        drain_timeout: muster_proto::parse_duration("drain_timeout", &args.drain_timeout)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        reconnect_min: Duration::from_millis(250),
        reconnect_max: Duration::from_secs(30),
        repos,
        repos_root,
        liveness: muster_agent::Liveness::default().with(file.quiet_after.as_deref(), file.wedged_after.as_deref())?,
        channels: file.channels.clone(),
        ca: None,
    };
    config.validate()?;
    Ok(config)
}

pub async fn agent(conn: &ConnArgs, args: AgentRunArgs) -> anyhow::Result<()> {
    let file_hub = match &args.config {
        Some(path) => AgentFile::load(path)?.hub,
        None => None,
    };
    let hub_url = conn.url.clone().or(file_hub).unwrap_or_else(|| muster_cli::DEFAULT_URL.to_owned());
    // A URL it can never connect to is a mistake to say now, not a reason to retry for ever.
    muster_agent::check_hub_urls(&hub_url).map_err(|e| CliError::new(exit::USAGE, format!("{e:#}")))?;
    let Some(token) = conn.token.clone().filter(|t| !t.trim().is_empty()) else {
        bail!("`agent run` needs the agent's token: --token or MUSTER_TOKEN (from `muster agent add NAME`)");
    };
    let mut config = agent_config(hub_url, token.trim().to_owned(), &args, 1)?;
    config.ca = conn.ca.clone();
    tracing::info!(
        hub = %config.hub,
        slots = config.slots,
        runners = %config.runners.keys().cloned().collect::<Vec<_>>().join(","),
        "agent starting"
    );
    muster_agent::run(config, shutdown_signal()).await.map_err(|e| {
        // A distinct code, so a supervisor can be told not to restart into the same refusal.
        if muster_agent::is_refusal(&e) { anyhow::Error::new(CliError::new(exit::AUTH, format!("{e:#}"))) } else { e }
    })
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Agent settings file (TOML), as given to `agent run`.
    #[arg(long = "config", env = "MUSTER_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Also check this built-in runner: claude, codex or shell (repeatable).
    #[arg(long = "runner")]
    pub runners: Vec<String>,
    /// The directory runs start in [default: the current directory].
    #[arg(long, env = "MUSTER_WORKDIR")]
    pub workdir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// `muster doctor`: the checks an agent makes at every connect, here and now.
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => Some(AgentFile::load(path)?),
        None => None,
    };
    let mut runners = args.runners;
    // Asked about nothing in particular on a machine where `agent run` would
    // offer no runner: check the coding agents it looks for, so the missing
    // programs are named (and how to install them) rather than nothing.
    let builtin = ["claude", "codex"];
    if runners.is_empty()
        && file.as_ref().is_none_or(|f| f.enable.is_empty() && f.runners.is_empty())
        && !builtin.iter().any(|r| muster_agent::config::on_path(r))
    {
        runners = builtin.iter().map(|r| r.to_string()).collect();
    }
    let run_args = AgentRunArgs {
        slots: None,
        config: args.config,
        caps: Vec::new(),
        runners,
        workdir: args.workdir,
        drain_timeout: "30s".into(),
    };
    let config = agent_config(muster_cli::DEFAULT_URL.to_owned(), String::new(), &run_args, 1)?;
    let report = muster_agent::doctor::examine(&config).await;
    let (text, ok) = muster_agent::doctor::render(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{text}");
    }
    match (ok, report.runners.iter().any(|r| r.ok)) {
        (true, _) => Ok(()),
        (false, true) => bail!("some runners cannot run here; an agent does not offer them to the hub"),
        (false, false) => bail!(
            "no runner can run here: install one of the programs above, or enable the shell runner with --runner shell"
        ),
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Tasks the local agent runs at once [default: 4].
    #[arg(long)]
    pub slots: Option<u32>,
}

const LOCAL_AGENT: &str = "local";

/// The local agent's token: reused from `<data-dir>/local-agent.token`, or
/// issued anew (registering the agent on first use).
async fn local_agent_token(hub: &Hub, data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("local-agent.token");
    let name = AgentName::parse(LOCAL_AGENT).expect("a valid agent name");
    if let Ok(saved) = std::fs::read_to_string(&path) {
        let saved = saved.trim().to_owned();
        if let Some(id) = muster_hub::parse_token(&saved)
            && let Some(record) = hub.store().token(&id).await?
            && record.revoked_at.is_none()
            && record.hash == muster_hub::hash_token(&saved)
        {
            return Ok(saved);
        }
    }
    let token = match hub.store().agent(&name).await? {
        Some(_) => hub.reissue_agent_token(&name).await?.0,
        None => hub.register_agent(&name, Vec::new()).await?,
    };
    muster_hub::write_secret_file(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

pub async fn up(conn: &ConnArgs, args: UpArgs) -> anyhow::Result<()> {
    let mut hub_args = args.hub.clone();
    // A local first try runs shell tasks unless told otherwise.
    if hub_args.default_runner.is_none() && !muster_agent::config::on_path("claude") {
        hub_args.default_runner = Some("shell".into());
    }
    let config = hub_config(&hub_args, conn.data_dir.as_deref())?;
    // The hub's files are private; the local agent's runs keep the operator's umask.
    muster_agent::process::set_child_umask(crate::private::private_umask());
    let data_dir = config.data_dir.clone();
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let opened = open_hub(config, &args.hub, crate::logging::Console::Text).await?;
    let addr = opened.listener.local_addr()?;
    let url = format!("{scheme}://{addr}");
    let token = local_agent_token(&opened.hub, &data_dir).await?;
    let agent_args = AgentRunArgs {
        slots: args.slots,
        config: None,
        caps: Vec::new(),
        runners: vec!["shell".into()],
        workdir: None,
        drain_timeout: "10s".into(),
    };
    let mut agent_config = agent_config(url.clone(), token, &agent_args, 4)?;
    // The local agent trusts what the operator's CLI trusts (`--ca`).
    agent_config.ca = conn.ca.clone();
    let runners = agent_config.runners.keys().cloned().collect::<Vec<_>>().join(", ");

    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_hub, hub_stopped) = tokio::sync::oneshot::channel::<()>();
    let hub_task = tokio::spawn(opened.hub.clone().serve(opened.listener, async move {
        let _ = hub_stopped.await;
    }));
    let agent_task = tokio::spawn(muster_agent::run(agent_config, async move {
        let _ = agent_stopped.await;
    }));
    say!("muster is up: hub {url} (data in {}), agent \"{LOCAL_AGENT}\" with runners {runners}", data_dir.display());
    say!("dashboard: open {url}/ and sign in with the admin token ({})", data_dir.join("admin.token").display());
    say!("try, from another terminal:  muster task add --runner shell 'echo hello'   then   muster task list");
    say!("stop with Ctrl-C");
    shutdown_signal().await;
    // The agent drains first so its last reports reach the hub.
    let _ = stop_agent.send(());
    match agent_task.await {
        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "local agent stopped with an error"),
        Err(e) => tracing::error!(error = %e, "local agent panicked"),
        Ok(Ok(())) => {}
    }
    let _ = stop_hub.send(());
    hub_task.await.context("the hub panicked")??;
    let _lock = opened._lock;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More clients than the usual backlog of 128 connect before the hub
    /// accepts any: every handshake completes at once. With a short queue
    /// the kernel drops the handshakes past it, and they never complete
    /// while nothing accepts.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_accept_queue_rather_than_being_dropped() {
        let listener = listen_on("127.0.0.1:0".parse().unwrap()).expect("a listener on the loopback");
        let addr = listener.local_addr().unwrap();
        let connects: Vec<_> = (0..600)
            .map(|_| tokio::spawn(tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))))
            .collect();
        let mut connected = 0;
        for c in connects {
            if matches!(c.await, Ok(Ok(Ok(_)))) {
                connected += 1;
            }
        }
        assert_eq!(connected, 600, "handshakes were dropped: the accept queue is shorter than a burst");
        drop(listener);
    }
}
