//! The hub's settings, resolved by the binary from flags, `MUSTER_*`
//! environment variables and `muster.toml`, in that order of precedence.

use crate::runtime::Runtime;
use muster_core::Backoff;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where the store lives: the data directory's `muster.db`, or PostgreSQL.
    pub database: muster_store::Location,
    /// How this hub is named among the hubs on its database [default: host:port].
    pub hub_name: Option<String>,
    /// The URL agents and clients use for this hub, as listed to the others [default: http://LISTEN].
    pub public_url: Option<String>,
    /// Serve HTTPS and WSS from these files.
    pub tls: Option<crate::TlsFiles>,
    /// Listen off the loopback without TLS, on purpose.
    pub insecure_listen: bool,
    /// Settings an operator can change at runtime, as they were at start
    /// (see `runtime.rs`); `Hub::runtime` has the ones in force.
    pub live: Runtime,
    /// After a restart, how long leases are kept for their agents to reconnect
    /// and re-attach. Must outlast an agent's reconnect delay (up to 30 s).
    pub restart_grace: Duration,
    /// Retry delays after a failed attempt.
    pub backoff: Backoff,
    pub default_timeout: Duration,
    pub default_max_attempts: u32,
    /// Runner names accepted in tasks beyond the built-in ones and those agents announce.
    pub extra_runners: Vec<String>,
    pub max_output_bytes_per_attempt: u64,
    /// On SIGTERM, how long the hub stays up answering 503 on /readyz before
    /// it closes its listener and agent sockets.
    pub drain_delay: Duration,
    /// The health level judges runs that ended within this window.
    pub health_window: Duration,
    pub health: muster_core::health::Thresholds,
    /// Where backups go.
    pub backup_dir: PathBuf,
    /// How often alert rules are evaluated.
    pub alert_interval: Duration,
    /// Resolution of the one-hour metrics window (360 points).
    pub window_interval: Duration,
    pub slos: Vec<SloConfig>,
    /// Connection limits and timeouts.
    pub edge: crate::EdgeLimits,
}

/// A service level objective: `target` of `kind` events within `threshold`, over `window`.
#[derive(Debug, Clone)]
pub struct SloConfig {
    pub name: String,
    pub kind: muster_store::SloKind,
    pub threshold: Duration,
    pub target: f64,
    pub window: Duration,
}

impl SloConfig {
    /// 99.5% of tasks start within 5 s of becoming due; 95% of runs end within 30 minutes; over 30 days.
    pub fn defaults() -> Vec<SloConfig> {
        let month = Duration::from_secs(30 * 86400);
        vec![
            SloConfig {
                name: "dispatch-within-5s".into(),
                kind: muster_store::SloKind::Dispatch,
                threshold: Duration::from_secs(5),
                target: 0.995,
                window: month,
            },
            SloConfig {
                name: "runs-within-30m".into(),
                kind: muster_store::SloKind::Run,
                threshold: Duration::from_secs(1800),
                target: 0.95,
                window: month,
            },
        ]
    }
}

impl HubConfig {
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:4000";

    /// Checks runtime settings against each other and against this
    /// configuration: finished tasks must be kept as long as the health
    /// level and every objective look back, or they would judge from less
    /// history than they claim.
    pub fn fits(&self, live: &Runtime) -> Result<(), muster_proto::FieldError> {
        live.validate()?;
        let Some(keep) = live.retention.tasks else { return Ok(()) };
        let mut looks_back = vec![("the health level".to_owned(), self.health_window)];
        looks_back.extend(self.slos.iter().map(|s| (format!("objective {}", s.name), s.window)));
        match looks_back.into_iter().max_by_key(|(_, d)| *d) {
            Some((what, window)) if keep < window => Err(muster_proto::FieldError {
                field: "retention.tasks".into(),
                reason: format!(
                    "{} is shorter than {what} looks back ({}): keep finished tasks at least that long, \
                     or shorten that window in muster.toml",
                    muster_proto::setting_duration(keep),
                    muster_proto::setting_duration(window)
                ),
            }),
            _ => Ok(()),
        }
    }
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        let live = Runtime::default();
        HubConfig {
            listen: HubConfig::DEFAULT_LISTEN.parse().expect("a valid default address"),
            data_dir: PathBuf::from(".muster"),
            database: muster_store::Location::Sqlite(PathBuf::from(".muster/muster.db")),
            hub_name: None,
            public_url: None,
            tls: None,
            insecure_listen: false,
            restart_grace: live.lease_ttl + Duration::from_secs(30),
            backoff: Backoff::default(),
            default_timeout: Duration::from_secs(30 * 60),
            default_max_attempts: 3,
            extra_runners: Vec::new(),
            max_output_bytes_per_attempt: 4 << 20,
            drain_delay: Duration::ZERO,
            health_window: Duration::from_secs(3600),
            health: muster_core::health::Thresholds::default(),
            backup_dir: PathBuf::from(".muster/backups"),
            alert_interval: Duration::from_secs(30),
            window_interval: Duration::from_secs(10),
            slos: SloConfig::defaults(),
            edge: crate::EdgeLimits::default(),
            live,
        }
    }
}
