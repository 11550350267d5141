//! Resolves the hub's settings: command-line flags over `MUSTER_*`
//! environment variables (clap reads both) over `muster.toml` over defaults.

use anyhow::{Context, bail};
use clap::Args;
use muster_core::{Backoff, RunnerName};
use muster_hub::HubConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    /// Address to listen on [default: 127.0.0.1:4000].
    #[arg(long, env = "MUSTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Settings file [default: ./muster.toml if it exists].
    #[arg(long, env = "MUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The database: postgres://USER@HOST/DB (several hubs may share it) or sqlite:PATH [default: <data-dir>/muster.db].
    #[arg(long, env = "MUSTER_DATABASE")]
    pub database: Option<String>,
    /// This hub's name among the hubs on its database [default: HOST:PORT].
    #[arg(long, env = "MUSTER_HUB_NAME")]
    pub hub_name: Option<String>,
    /// The URL clients and agents use for this hub, as the other hubs list it [default: http://LISTEN].
    #[arg(long, env = "MUSTER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Serve HTTPS and WSS with this certificate chain (PEM); reloaded on SIGHUP.
    #[arg(long, env = "MUSTER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "MUSTER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require agents and clients to present a certificate this authority (PEM) issued: mutual TLS.
    #[arg(long, env = "MUSTER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS, on purpose (tokens then cross the network in the clear).
    #[arg(long, env = "MUSTER_INSECURE_LISTEN")]
    pub insecure_listen: bool,
    /// How often agents send heartbeats [default: 10s].
    #[arg(long, env = "MUSTER_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<String>,
    /// How long a running task's lease lasts without a heartbeat [default: 3 heartbeats].
    #[arg(long, env = "MUSTER_LEASE_TTL")]
    pub lease_ttl: Option<String>,
    /// How long an agent has to accept an assignment [default: 60s].
    #[arg(long, env = "MUSTER_ACCEPT_TIMEOUT")]
    pub accept_timeout: Option<String>,
    /// After a restart, how long agents have to re-attach to their runs [default: lease TTL + 30s].
    #[arg(long, env = "MUSTER_RESTART_GRACE")]
    pub restart_grace: Option<String>,
    /// First retry delay; doubles each attempt [default: 2s].
    #[arg(long, env = "MUSTER_RETRY_BACKOFF_BASE")]
    pub retry_backoff_base: Option<String>,
    /// Longest retry delay [default: 5m].
    #[arg(long, env = "MUSTER_RETRY_BACKOFF_MAX")]
    pub retry_backoff_max: Option<String>,
    /// Runner for tasks that name none [default: claude].
    #[arg(long, env = "MUSTER_DEFAULT_RUNNER")]
    pub default_runner: Option<String>,
    /// Timeout for tasks that name none [default: 30m].
    #[arg(long, env = "MUSTER_DEFAULT_TIMEOUT")]
    pub default_timeout: Option<String>,
    /// Attempts for tasks that name none [default: 3].
    #[arg(long, env = "MUSTER_DEFAULT_MAX_ATTEMPTS")]
    pub default_max_attempts: Option<u32>,
    /// Output kept per attempt, in bytes [default: 4194304].
    #[arg(long, env = "MUSTER_MAX_OUTPUT_BYTES")]
    pub max_output_bytes: Option<u64>,
    /// On SIGTERM, how long to answer 503 on /readyz before stopping [default: 0s].
    #[arg(long, env = "MUSTER_DRAIN_DELAY")]
    pub drain_delay: Option<String>,
    /// How often to back up; 0 turns scheduled backups off [default: 24h].
    #[arg(long, env = "MUSTER_BACKUP_INTERVAL")]
    pub backup_interval: Option<String>,
    /// Backups kept [default: 7].
    #[arg(long, env = "MUSTER_BACKUP_KEEP")]
    pub backup_keep: Option<usize>,
    /// Finished tasks older than this are deleted; off keeps them [default: 90d].
    #[arg(long, env = "MUSTER_RETENTION_TASKS")]
    pub retention_tasks: Option<String>,
    /// Output of finished tasks older than this is deleted; off keeps it [default: 30d].
    #[arg(long, env = "MUSTER_RETENTION_OUTPUT")]
    pub retention_output: Option<String>,
    /// Timeline events older than this are deleted; off keeps them [default: 30d].
    #[arg(long, env = "MUSTER_RETENTION_EVENTS")]
    pub retention_events: Option<String>,
    /// How often retention is applied and the database compacted; off turns it off [default: 24h].
    #[arg(long, env = "MUSTER_COMPACT_INTERVAL")]
    pub compact_interval: Option<String>,
    /// Where backups go [default: <data-dir>/backups].
    #[arg(long, env = "MUSTER_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// How often alert rules are evaluated [default: 30s].
    #[arg(long, env = "MUSTER_ALERT_INTERVAL")]
    pub alert_interval: Option<String>,
    /// Resolution of the one-hour metrics window [default: 10s].
    #[arg(long, env = "MUSTER_WINDOW_INTERVAL")]
    pub window_interval: Option<String>,
    /// Console log format: json (stdout) or text (stderr) [default: json for `hub`, text for `up`].
    #[arg(long, env = "MUSTER_LOG_FORMAT", value_parser = ["json", "text"])]
    pub log_format: Option<String>,
    /// Size at which `<data-dir>/logs/muster.log` rotates, in bytes [default: 10485760].
    #[arg(long, env = "MUSTER_LOG_MAX_BYTES")]
    pub log_max_bytes: Option<u64>,
    /// Rotated log files kept, compressed [default: 5].
    #[arg(long, env = "MUSTER_LOG_KEEP")]
    pub log_keep: Option<usize>,
    /// Connections held at once, all clients together [default: from the open-file limit].
    #[arg(long, env = "MUSTER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connections without a valid token held at once from one address [default: 256].
    #[arg(long, env = "MUSTER_MAX_ANONYMOUS_PER_ADDRESS")]
    pub max_anonymous_per_address: Option<usize>,
    /// How long a client may take to send a request's headers; also how long an idle connection is kept [default: 10s].
    #[arg(long, env = "MUSTER_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// How long a request body may go without sending anything [default: 30s].
    #[arg(long, env = "MUSTER_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// API requests a second each token may make; 0 is no limit [default: 1000].
    #[arg(long, env = "MUSTER_API_RATE")]
    pub api_rate: Option<usize>,
    /// API requests a token may make at once before the rate applies [default: 5000].
    #[arg(long, env = "MUSTER_API_BURST")]
    pub api_burst: Option<usize>,
}

/// `muster.toml`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(default)]
    hub: FileHub,
    #[serde(default)]
    health: FileHealth,
    /// `[[slo]]` tables; when present they replace the default objectives.
    #[serde(default)]
    slo: Vec<FileSlo>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSlo {
    name: String,
    /// `dispatch` or `run`.
    kind: String,
    threshold: String,
    target: f64,
    #[serde(default)]
    window: Option<String>,
}

fn slos(file: &[FileSlo]) -> anyhow::Result<Vec<muster_hub::SloConfig>> {
    if file.is_empty() {
        return Ok(muster_hub::SloConfig::defaults());
    }
    let mut out: Vec<muster_hub::SloConfig> = Vec::new();
    for s in file {
        if s.name.trim().is_empty() || out.iter().any(|o| o.name == s.name) {
            bail!("slo.name {:?} must be given and unique", s.name);
        }
        let kind = muster_store::SloKind::parse(&s.kind)
            .ok_or_else(|| anyhow::anyhow!("slo {:?}: kind {:?} must be dispatch or run", s.name, s.kind))?;
        if !(s.target > 0.0 && s.target < 1.0) {
            bail!("slo {:?}: target must be between 0 and 1 (for example 0.995), got {}", s.name, s.target);
        }
        out.push(muster_hub::SloConfig {
            name: s.name.clone(),
            kind,
            threshold: duration("slo.threshold", Some(&s.threshold), Duration::ZERO)?,
            target: s.target,
            window: duration("slo.window", s.window.as_ref(), Duration::from_secs(30 * 86400))?,
        });
    }
    Ok(out)
}

/// `[health]`: when the hub counts as healthy or degraded.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    window: Option<String>,
    healthy_success_rate: Option<f64>,
    healthy_max_failures: Option<u64>,
    degraded_success_rate: Option<f64>,
    degraded_max_failures: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHub {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    hub_name: Option<String>,
    public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    #[serde(default)]
    insecure_listen: bool,
    heartbeat_interval: Option<String>,
    lease_ttl: Option<String>,
    accept_timeout: Option<String>,
    restart_grace: Option<String>,
    retry_backoff_base: Option<String>,
    retry_backoff_max: Option<String>,
    default_runner: Option<String>,
    default_timeout: Option<String>,
    default_max_attempts: Option<u32>,
    #[serde(default)]
    extra_runners: Vec<String>,
    max_output_bytes: Option<u64>,
    drain_delay: Option<String>,
    backup_interval: Option<String>,
    backup_keep: Option<usize>,
    backup_dir: Option<PathBuf>,
    retention_tasks: Option<String>,
    retention_output: Option<String>,
    retention_events: Option<String>,
    compact_interval: Option<String>,
    alert_interval: Option<String>,
    window_interval: Option<String>,
    max_connections: Option<usize>,
    max_anonymous_per_address: Option<usize>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    api_rate: Option<usize>,
    api_burst: Option<usize>,
    followups_per_minute: Option<usize>,
    followups_per_tree: Option<usize>,
}

fn duration(name: &'static str, value: Option<&String>, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(v) => muster_proto::parse_duration(name, v).map_err(|e| anyhow::anyhow!("{e}")),
    }
}

fn load_file(explicit: Option<&Path>) -> anyhow::Result<FileSettings> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => {
            let default = PathBuf::from("muster.toml");
            if !default.exists() {
                return Ok(FileSettings::default());
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid muster.toml", path.display()))
}

fn health_thresholds(f: &FileHealth) -> anyhow::Result<muster_core::health::Thresholds> {
    let d = muster_core::health::Thresholds::default();
    let t = muster_core::health::Thresholds {
        healthy_success_rate: f.healthy_success_rate.unwrap_or(d.healthy_success_rate),
        healthy_max_failures: f.healthy_max_failures.unwrap_or(d.healthy_max_failures),
        degraded_success_rate: f.degraded_success_rate.unwrap_or(d.degraded_success_rate),
        degraded_max_failures: f.degraded_max_failures.unwrap_or(d.degraded_max_failures),
    };
    for (name, rate) in
        [("healthy_success_rate", t.healthy_success_rate), ("degraded_success_rate", t.degraded_success_rate)]
    {
        if !(0.0..=1.0).contains(&rate) {
            bail!("health.{name} must be between 0 and 1, got {rate}");
        }
    }
    if t.degraded_success_rate > t.healthy_success_rate {
        bail!("health.degraded_success_rate must not be above health.healthy_success_rate");
    }
    if t.degraded_max_failures < t.healthy_max_failures {
        bail!("health.degraded_max_failures must not be below health.healthy_max_failures");
    }
    Ok(t)
}

/// Connection limits and timeouts.
fn edge_limits(args: &HubArgs, file: &FileHub) -> anyhow::Result<muster_hub::EdgeLimits> {
    let d = muster_hub::EdgeLimits::default();
    let max_connections = args.max_connections.or(file.max_connections);
    if max_connections.is_some_and(|n| n < 16) {
        bail!("max_connections must be at least 16 (agents, the CLI and /livez each need one)");
    }
    let per_address = args.max_anonymous_per_address.or(file.max_anonymous_per_address);
    if per_address == Some(0) {
        bail!("max_anonymous_per_address must be at least 1");
    }
    let timeout = |name: &'static str, flag: &Option<String>, file: &Option<String>, default: Duration| {
        let d = duration(name, flag.as_ref().or(file.as_ref()), default)?;
        if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
            bail!("{name} must be between 100ms and 1h, got {}", muster_proto::setting_duration(d));
        }
        Ok(d)
    };
    Ok(muster_hub::EdgeLimits {
        max_connections,
        max_anonymous_per_address: per_address.unwrap_or(d.max_anonymous_per_address),
        header_timeout: timeout("header_timeout", &args.header_timeout, &file.header_timeout, d.header_timeout)?,
        body_timeout: timeout("body_timeout", &args.body_timeout, &file.body_timeout, d.body_timeout)?,
    })
}

/// Resolves the hub's configuration. `data_dir` comes from the global flag.
pub fn hub_config(args: &HubArgs, data_dir: Option<&Path>) -> anyhow::Result<HubConfig> {
    let FileSettings { hub: file, health: file_health, slo: file_slo } = load_file(args.config.as_deref())?;
    let defaults = HubConfig::default();
    // What can also change at runtime is read by the same rules `PUT /api/v1/config` uses.
    let mut live = muster_hub::Runtime::default();
    let set = |live: &mut muster_hub::Runtime, key: &str, value: Option<String>| -> anyhow::Result<()> {
        match value {
            Some(v) => live.set(key, &v).map_err(|e| anyhow::anyhow!("{e}")),
            None => Ok(()),
        }
    };
    let pick = |flag: &Option<String>, file: &Option<String>| flag.clone().or_else(|| file.clone());
    let count = |flag: Option<usize>, file: Option<usize>| flag.or(file).map(|n| n.to_string());
    set(&mut live, "heartbeat_interval", pick(&args.heartbeat_interval, &file.heartbeat_interval))?;
    let lease = pick(&args.lease_ttl, &file.lease_ttl);
    let heartbeat = live.heartbeat_interval;
    set(&mut live, "lease_ttl", Some(lease.unwrap_or_else(|| format!("{}ms", (heartbeat * 3).as_millis()))))?;
    set(&mut live, "accept_timeout", pick(&args.accept_timeout, &file.accept_timeout))?;
    set(&mut live, "default_runner", pick(&args.default_runner, &file.default_runner))?;
    set(&mut live, "retention.tasks", pick(&args.retention_tasks, &file.retention_tasks))?;
    set(&mut live, "retention.output", pick(&args.retention_output, &file.retention_output))?;
    set(&mut live, "retention.events", pick(&args.retention_events, &file.retention_events))?;
    set(&mut live, "compact_interval", pick(&args.compact_interval, &file.compact_interval))?;
    set(&mut live, "backup_interval", pick(&args.backup_interval, &file.backup_interval))?;
    set(&mut live, "backup_keep", count(args.backup_keep, file.backup_keep))?;
    set(&mut live, "limits.api_rate", count(args.api_rate, file.api_rate))?;
    set(&mut live, "limits.api_burst", count(args.api_burst, file.api_burst))?;
    set(&mut live, "limits.followups_per_minute", count(None, file.followups_per_minute))?;
    set(&mut live, "limits.followups_per_tree", count(None, file.followups_per_tree))?;
    live.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let backoff = Backoff {
        base: duration(
            "retry_backoff_base",
            args.retry_backoff_base.as_ref().or(file.retry_backoff_base.as_ref()),
            defaults.backoff.base,
        )?,
        max: duration(
            "retry_backoff_max",
            args.retry_backoff_max.as_ref().or(file.retry_backoff_max.as_ref()),
            defaults.backoff.max,
        )?,
    };
    for r in &file.extra_runners {
        RunnerName::parse(r).map_err(|e| anyhow::anyhow!("extra_runners: {e}"))?;
    }
    let default_max_attempts =
        args.default_max_attempts.or(file.default_max_attempts).unwrap_or(defaults.default_max_attempts);
    if default_max_attempts == 0 || default_max_attempts > muster_core::task::MAX_ATTEMPTS {
        bail!("default_max_attempts must be between 1 and {}", muster_core::task::MAX_ATTEMPTS);
    }
    let health = health_thresholds(&file_health)?;
    let edge = edge_limits(args, &file)?;
    let data_dir: PathBuf = data_dir.map(Path::to_owned).or(file.data_dir).unwrap_or(defaults.data_dir);
    let database = args.database.clone().or(file.database);
    let database = muster_store::Location::parse(database.as_deref(), &data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = HubConfig {
        database,
        hub_name: args.hub_name.clone().or(file.hub_name),
        public_url: args.public_url.clone().or(file.public_url),
        tls: match (args.tls_cert.clone().or(file.tls_cert), args.tls_key.clone().or(file.tls_key)) {
            (Some(cert), Some(key)) => {
                Some(muster_hub::TlsFiles { cert, key, client_ca: args.tls_client_ca.clone().or(file.tls_client_ca) })
            }
            (None, None) => None,
            _ => bail!("tls_cert and tls_key go together: give both, or neither"),
        },
        insecure_listen: args.insecure_listen || file.insecure_listen,
        listen: args.listen.or(file.listen).unwrap_or(defaults.listen),
        backup_dir: args.backup_dir.clone().or(file.backup_dir).unwrap_or_else(|| data_dir.join("backups")),
        slos: slos(&file_slo)?,
        window_interval: duration(
            "window_interval",
            args.window_interval.as_ref().or(file.window_interval.as_ref()),
            defaults.window_interval,
        )?,
        alert_interval: duration(
            "alert_interval",
            args.alert_interval.as_ref().or(file.alert_interval.as_ref()),
            defaults.alert_interval,
        )?,
        data_dir,
        restart_grace: duration(
            "restart_grace",
            args.restart_grace.as_ref().or(file.restart_grace.as_ref()),
            live.lease_ttl + Duration::from_secs(30),
        )?,
        backoff,
        default_timeout: duration(
            "default_timeout",
            args.default_timeout.as_ref().or(file.default_timeout.as_ref()),
            defaults.default_timeout,
        )?,
        default_max_attempts,
        extra_runners: file.extra_runners,
        max_output_bytes_per_attempt: args
            .max_output_bytes
            .or(file.max_output_bytes)
            .unwrap_or(defaults.max_output_bytes_per_attempt),
        drain_delay: duration(
            "drain_delay",
            args.drain_delay.as_ref().or(file.drain_delay.as_ref()),
            defaults.drain_delay,
        )?,
        health_window: duration("health.window", file_health.window.as_ref(), defaults.health_window)?,
        health,
        edge,
        live,
    };
    if config.tls.is_none() && !config.listen.ip().is_loopback() && !config.insecure_listen {
        bail!(
            "refusing to listen on {} without TLS: tokens and task data would cross the network in the clear; \
             give --tls-cert and --tls-key, or --insecure-listen to do it on purpose",
            config.listen
        );
    }
    config.fits(&config.live).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &Path) -> HubArgs {
        HubArgs {
            listen: None,
            config: Some(config.to_owned()),
            database: None,
            hub_name: None,
            public_url: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            insecure_listen: false,
            heartbeat_interval: None,
            lease_ttl: None,
            accept_timeout: None,
            restart_grace: None,
            retry_backoff_base: None,
            retry_backoff_max: None,
            default_runner: None,
            default_timeout: None,
            default_max_attempts: None,
            max_output_bytes: None,
            drain_delay: None,
            backup_interval: None,
            backup_keep: None,
            backup_dir: None,
            retention_tasks: None,
            retention_output: None,
            retention_events: None,
            compact_interval: None,
            alert_interval: None,
            window_interval: None,
            log_format: None,
            log_max_bytes: None,
            log_keep: None,
            max_connections: None,
            max_anonymous_per_address: None,
            header_timeout: None,
            body_timeout: None,
            api_rate: None,
            api_burst: None,
        }
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("muster.toml");
        std::fs::write(
            &file,
            "[hub]\nlisten = \"127.0.0.1:4100\"\nheartbeat_interval = \"2s\"\ndefault_runner = \"codex\"\n\
             default_max_attempts = 5\nextra_runners = [\"aider\"]\n",
        )
        .unwrap();
        let mut a = args(&file);
        let from_file = hub_config(&a, None).unwrap();
        assert_eq!(from_file.listen.to_string(), "127.0.0.1:4100");
        assert_eq!(from_file.live.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(from_file.live.lease_ttl, Duration::from_secs(6), "three heartbeats by default");
        assert_eq!(from_file.live.default_runner.unwrap().as_str(), "codex");
        assert_eq!(from_file.default_max_attempts, 5);
        assert_eq!(from_file.extra_runners, ["aider"]);
        assert_eq!(from_file.live.accept_timeout, Duration::from_secs(60), "unset keys keep their defaults");
        assert_eq!(from_file.live.retention, muster_hub::Runtime::default().retention);
        assert_eq!(from_file.data_dir, PathBuf::from(".muster"));

        a.listen = Some("127.0.0.1:4200".parse().unwrap());
        a.heartbeat_interval = Some("500ms".into());
        a.default_max_attempts = Some(1);
        a.retention_output = Some("off".into());
        a.compact_interval = Some("6h".into());
        let flagged = hub_config(&a, Some(Path::new("/srv/muster"))).unwrap();
        assert_eq!(flagged.listen.to_string(), "127.0.0.1:4200");
        assert_eq!(flagged.live.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(
            (flagged.live.retention.output, flagged.live.compact_interval),
            (None, Duration::from_secs(6 * 3600))
        );
        assert_eq!(flagged.default_max_attempts, 1);
        assert_eq!(flagged.data_dir, PathBuf::from("/srv/muster"));
    }

    #[test]
    fn bad_settings_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("muster.toml");
        let cases = [
            ("[hub]\ncolour = \"red\"\n", "colour"),
            ("[hub]\nheartbeat_interval = \"soon\"\n", "heartbeat_interval"),
            ("[hub]\ndefault_runner = \"Big Runner\"\n", "default_runner"),
            ("[hub]\nheartbeat_interval = \"10s\"\nlease_ttl = \"5s\"\n", "lease_ttl"),
            ("[hub]\ndefault_max_attempts = 0\n", "default_max_attempts"),
            ("[hub]\nretention_tasks = \"a while\"\n", "retention.tasks"),
            ("[hub]\nbackup_keep = 0\n", "backup_keep"),
            ("[hub]\nmax_connections = 3\n", "max_connections must be at least 16"),
            ("[hub]\nmax_anonymous_per_address = 0\n", "max_anonymous_per_address"),
            ("[hub]\nheader_timeout = \"2h\"\n", "header_timeout must be between"),
            ("[hub]\nbody_timeout = \"soon\"\n", "body_timeout"),
            ("[hub]\napi_burst = 0\n", "limits.api_burst"),
            ("[hub]\nfollowups_per_tree = 0\n", "limits.followups_per_tree"),
            ("[hub]\nretention_tasks = \"7d\"\n", "objective runs-within-30m looks back (30d)"),
            ("[health]\nhealthy_success_rate = 1.5\n", "healthy_success_rate"),
            ("[health]\nhealthy_success_rate = 0.5\n", "degraded_success_rate"),
            ("[health]\nwindow = \"often\"\n", "health.window"),
            (
                "[[slo]]\nname = \"x\"\nkind = \"run\"\nthreshold = \"1s\"\ntarget = 1.5\n",
                "target must be between 0 and 1",
            ),
            ("[[slo]]\nname = \"x\"\nkind = \"walk\"\nthreshold = \"1s\"\ntarget = 0.9\n", "kind \"walk\""),
        ];
        for (text, needle) in cases {
            std::fs::write(&file, text).unwrap();
            let err = format!("{:#}", hub_config(&args(&file), None).unwrap_err());
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
        let missing = hub_config(&args(&dir.path().join("nope.toml")), None).unwrap_err();
        assert!(format!("{missing:#}").contains("nope.toml"));
    }
}
