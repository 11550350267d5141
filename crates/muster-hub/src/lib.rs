//! The Muster hub: the HTTP API, the agent WebSocket endpoint, and the
//! background loop that dispatches tasks and reclaims expired leases.
//!
//! The hub holds its store as `Arc<dyn Store>` and never touches SQL; it
//! holds live agent sockets in memory and nothing else that matters: every
//! fact that must survive a crash is in the store before it is acknowledged.

mod alerts;
pub mod api;
mod auth;
mod backup;
mod budget;
mod cache;
mod compact;
mod config;
mod decisions;
mod diagnose;
mod edge;
mod error;
mod extract;
mod hubs;
mod loops;
mod messages;
mod metrics;
mod openapi;
pub mod pipeline;
mod pipelines;
mod quota;
mod runtime;
mod schedules;
mod shadow;
mod socket;
mod tls;
mod ui;
mod views;
mod window;
mod workers;

pub use auth::{hash_token, mint_token, parse_token};
pub use config::{HubConfig, SloConfig};
pub use edge::{EdgeLimits, connections_for_file_limit, raise_file_limit};
pub use runtime::Runtime;
pub use schedules::next_firing;
pub use tls::TlsFiles;

use anyhow::Context;
use muster_core::{AgentName, Millis, RunnerName, TaskId};
use muster_proto::ws::HubMsg;
use muster_store::{NewToken, Scope, Store};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// The setting that holds an operator's pause of all dispatch.
pub(crate) const DISPATCH_PAUSED: &str = "dispatch.paused";

/// Runner names every hub accepts in a task, whether or not an agent offering
/// them has connected yet.
pub const BUILTIN_RUNNERS: [&str; 3] = ["claude", "codex", "shell"];

/// How long shutdown waits for the background workers' passes under way.
const WORKER_DEADLINE: Duration = Duration::from_secs(10);

pub use muster_core::time::Clock;

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Millis(d.as_millis() as i64)
    }
}

/// Sets the process's log filter (`debug`, `info,muster_hub=debug`, …).
pub(crate) type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// A message for one connected agent's socket.
#[derive(Debug)]
pub(crate) enum Outbound {
    Msg(Box<HubMsg>),
    /// Close the socket with this reason.
    Close(String),
}

/// One connected agent socket.
pub(crate) struct Session {
    pub id: u64,
    /// The futures crate's channel rather than tokio's: it allocates per
    /// message, where tokio's allocates room for 32 up front, and every
    /// idle agent has one.
    pub tx: futures_channel::mpsc::UnboundedSender<Outbound>,
    /// Channels whose posts it wants as they happen.
    pub channels: Vec<String>,
}

/// A cheap-to-clone handle on the running hub.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub config: HubConfig,
    pub clock: Arc<dyn Clock>,
    /// Connected sockets by agent. Short critical sections only, no `.await` inside.
    pub sessions: Mutex<HashMap<AgentName, Session>>,
    /// Turns of the dispatch rotation: each claim pass starts with the next agent.
    pub rotation: std::sync::atomic::AtomicUsize,
    /// Runner names an agent has announced, plus the built-in and configured ones.
    pub known_runners: Mutex<BTreeSet<RunnerName>>,
    /// Wakes the dispatch loop: work or capacity may have appeared.
    pub wake: Notify,
    /// Bumped whenever task output is stored, for log followers.
    pub output: watch::Sender<u64>,
    pub stopping: watch::Sender<bool>,
    pub draining: AtomicBool,
    /// An operator paused all dispatch (persisted as the `dispatch.paused` setting).
    pub dispatch_paused: AtomicBool,
    pub started_at: Millis,
    pub sockets_open: AtomicU64,
    pub sockets_closed: Notify,
    pub metrics: metrics::Metrics,
    pub window: window::Window,
    /// Changes the process's log level; set by the binary that owns logging.
    pub log_level: std::sync::OnceLock<SetLogLevel>,
    /// One backup at a time. Held across the backup's `.await`, hence tokio's mutex.
    pub backing_up: tokio::sync::Mutex<()>,
    /// One compaction at a time.
    pub compacting: tokio::sync::Mutex<()>,
    /// The runtime settings in force; loops and sockets watch it.
    pub runtime: watch::Sender<runtime::Runtime>,
    /// The key task tokens are signed with (`task-token.key`).
    pub task_key: Vec<u8>,
    /// When a lock acquire was last refused as a deadlock, and the cycle.
    pub last_deadlock: std::sync::Mutex<Option<(Millis, String)>>,
    /// One change of runtime settings at a time.
    pub changing_config: tokio::sync::Mutex<()>,
    /// Messages for agents on other hubs, left in order (`Hub::relay_later`).
    pub relaying: std::sync::Mutex<hubs::RelayQueue>,
    /// API tokens as last read, so a request costs no store read; cleared on revocation.
    pub tokens: cache::Cache<muster_core::TokenId, muster_store::TokenRecord>,
    /// The shadow policies, read at every task creation; cleared when one is set.
    pub shadow_policies: cache::Cache<(), Vec<muster_proto::api::ShadowPolicy>>,
    /// Open connections and their limits.
    pub edge: Arc<edge::Edge>,
    /// The background workers, with what each has done.
    pub workers: workers::Workers,
    /// Whom the store claims for at the end of each batch (see `publish_roster`).
    pub roster: watch::Sender<Option<muster_store::Roster>>,
    /// What the store claimed at the end of a batch, for `deliver_handouts`.
    pub handouts: Arc<muster_store::Handouts>,
    /// Rate limits, and the log of refused authentication.
    pub quotas: quota::Quotas,
    /// The latest probe write readiness made, and when: one at a time, at
    /// most one a second, however often `/readyz` is asked. Held across the
    /// probe's `.await`, hence tokio's mutex.
    pub probe: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
    /// This hub among the others on its database.
    pub me: muster_store::HubInfo,
    /// The duties it leads.
    pub duties: hubs::Duties,
    /// HTTPS and WSS, when the hub has a certificate.
    pub tls: Option<tls::Tls>,
}

impl Hub {
    /// Opens the hub's state on `store`: marks agents offline from any
    /// previous run, gives leases a grace period to be re-attached, and
    /// creates the first admin token if there is none.
    pub async fn new(store: Arc<dyn Store>, config: HubConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Hub> {
        let now = clock.now();
        let tls = config.tls.as_ref().map(tls::Tls::load).transpose()?;
        let me = hubs::identity(&config);
        store.hub_started(&me, now, config.restart_grace).await.context("cannot start on the store")?;
        // Duty work is refused until this hub takes the duty (see `Hub::lead`).
        store.hold_duties(Some(Vec::new()));
        // Lock waits belonged to requests that died with the last hub; runs that still want a lock ask again.
        store.clear_lock_waits().await.context("cannot clear lock waits")?;
        let mut known: BTreeSet<RunnerName> = BUILTIN_RUNNERS
            .iter()
            .chain(config.extra_runners.iter().map(|s| s.as_str()).collect::<Vec<_>>().iter())
            .filter_map(|r| RunnerName::parse(r).ok())
            .collect();
        for agent in store.list_agents().await.context("cannot list agents")? {
            known.extend(agent.runners);
        }
        let paused = store
            .settings(DISPATCH_PAUSED)
            .await
            .context("cannot read settings")?
            .iter()
            .any(|(k, v)| k == DISPATCH_PAUSED && v == "true");
        if paused {
            tracing::warn!("dispatch is paused (muster resume starts it again)");
        }
        let stored = store.settings("config.").await.context("cannot read settings")?;
        let (runtime, _) = watch::channel(runtime::overlay(&config.live, &stored, |r| config.fits(r)));
        store.set_breaker_policy(runtime.borrow().breaker_policy());
        let task_key = if config.database.is_postgres() {
            shared_task_token_key(store.as_ref(), &config.data_dir, clock.now()).await?
        } else {
            task_token_key(&config.data_dir)?
        };
        let (output, _) = watch::channel(0);
        let (stopping, _) = watch::channel(false);
        let max_connections =
            config.edge.max_connections.unwrap_or_else(|| edge::connections_for_file_limit(edge::file_limit()));
        let edge = edge::Edge::new(config.edge.clone(), max_connections);
        Ok(Hub {
            shared: Arc::new(Shared {
                store,
                config,
                clock,
                sessions: Mutex::new(HashMap::new()),
                rotation: std::sync::atomic::AtomicUsize::new(0),
                known_runners: Mutex::new(known),
                wake: Notify::new(),
                output,
                stopping,
                workers: workers::Workers::default(),
                roster: watch::channel(None).0,
                handouts: Arc::default(),
                draining: AtomicBool::new(false),
                dispatch_paused: AtomicBool::new(paused),
                started_at: now,
                sockets_open: AtomicU64::new(0),
                sockets_closed: Notify::new(),
                metrics: metrics::Metrics::default(),
                window: window::Window::default(),
                backing_up: tokio::sync::Mutex::new(()),
                compacting: tokio::sync::Mutex::new(()),
                runtime,
                changing_config: tokio::sync::Mutex::new(()),
                relaying: std::sync::Mutex::new(hubs::RelayQueue::default()),
                log_level: std::sync::OnceLock::new(),
                task_key,
                last_deadlock: std::sync::Mutex::new(None),
                tokens: cache::Cache::new(),
                shadow_policies: cache::Cache::new(),
                edge,
                quotas: quota::Quotas::default(),
                probe: tokio::sync::Mutex::new(None),
                me,
                duties: hubs::Duties::default(),
                tls,
            }),
        })
    }

    /// Lets `PUT /api/v1/admin/log-level` change the level with `set`.
    pub fn set_log_control(&self, set: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) {
        let _ = self.shared.log_level.set(Box::new(set));
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// Creates an admin token when the store has no live one (first start, or
    /// every admin token was revoked), writes it to `<data-dir>/admin.token`
    /// (mode 0600) and returns it so it can be shown once. Returns `None` when
    /// a live admin token exists.
    pub async fn ensure_admin_token(&self, data_dir: &Path) -> anyhow::Result<Option<String>> {
        let tokens = self.shared.store.list_tokens().await?;
        if tokens.iter().any(|t| t.scope == Scope::Admin && t.revoked_at.is_none()) {
            return Ok(None);
        }
        let minted = mint_token()?;
        let path = data_dir.join("admin.token");
        write_secret_file(&path, &minted.token)
            .with_context(|| format!("cannot write the admin token to {}", path.display()))?;
        self.shared
            .store
            .create_token(
                NewToken {
                    id: minted.id.clone(),
                    name: "admin".into(),
                    scope: Scope::Admin,
                    agent: None,
                    hash: hash_token(&minted.token),
                },
                self.shared.clock.now(),
            )
            .await?;
        Ok(Some(minted.token))
    }

    /// Serves until `shutdown` resolves, then stops taking work, closes agent
    /// sockets with a close frame, lets the batch in flight commit, and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (dispatch, handout) = loops::DispatchWorker::new(&self);
        workers::spawn(&self, dispatch);
        workers::spawn(&self, hubs::BeatWorker);
        workers::spawn(&self, handout);
        workers::spawn(&self, alerts::AlertWorker::default());
        // PostgreSQL is backed up by its own tools, not by copying a file;
        // other hubs may share it, and their commits wake this hub's dispatch.
        if self.shared.store.maintenance().backend() == "postgres" {
            workers::spawn(&self, hubs::ChangesWorker::new(&self));
        } else {
            workers::spawn(&self, backup::worker());
        }
        workers::spawn(&self, compact::worker());
        workers::spawn(&self, window::WindowWorker::default());
        let app = api::router(self.clone());
        let hub = self.clone();
        let stop = async move {
            shutdown.await;
            hub.shared.draining.store(true, Ordering::SeqCst);
            hub.publish_roster();
            let delay = hub.shared.config.drain_delay;
            tracing::info!(delay_ms = delay.as_millis() as u64, "draining: /readyz answers 503, no new work is taken");
            let event = muster_store::NewEvent {
                kind: "hub.draining",
                detail: Some(format!("stopping in {} ms", delay.as_millis())),
                ..Default::default()
            };
            if let Err(e) = hub.shared.store.record_event(event, hub.now()).await {
                tracing::error!(error = %e, "cannot record draining");
            }
            // Load balancers and supervisors see /readyz fail before the listener closes.
            tokio::time::sleep(delay).await;
            tracing::info!("shutting down: closing agent sockets");
            hub.shared.stopping.send_replace(true);
        };
        edge::serve(self.clone(), listener, app, stop).await.context("the HTTP server failed")?;
        // Upgraded sockets outlive the HTTP server: wait for them to close.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.shared.sockets_open.load(Ordering::SeqCst) > 0 {
            let notified = self.shared.sockets_closed.notified();
            if self.shared.sockets_open.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!("agent sockets still open after 10 s; closing anyway");
                break;
            }
        }
        // A pass under way finishes (a backup, a compaction step); one that
        // would outlast the deadline is cut, and the next start picks up.
        self.shared.workers.stop(WORKER_DEADLINE).await;
        // The other hubs take its duties at once rather than after their lease.
        if let Err(e) = self.shared.store.hub_stopped(&self.shared.me.id, self.now()).await {
            tracing::warn!(error = %e, "cannot record this hub's stop; its duties move when their leases run out");
        }
        self.shared.store.close().await;
        tracing::info!("hub stopped");
        Ok(())
    }

    /// Reads the TLS certificate and key again (on SIGHUP); connections
    /// already open keep theirs. `false` when the hub serves plain HTTP.
    pub async fn reload_tls(&self) -> anyhow::Result<bool> {
        let Some(tls) = &self.shared.tls else { return Ok(false) };
        let reloaded = tls.reload();
        let event = muster_store::NewEvent {
            kind: if reloaded.is_ok() { "tls.reloaded" } else { "tls.reload_failed" },
            detail: Some(match &reloaded {
                Ok(()) => "new connections get the new certificate".to_owned(),
                Err(e) => format!("{e:#}; the old certificate stays"),
            }),
            ..Default::default()
        };
        if let Err(e) = self.shared.store.record_event(event, self.now()).await {
            tracing::warn!(error = %e, "cannot record the certificate reload");
        }
        reloaded.map(|()| true)
    }

    pub(crate) fn now(&self) -> Millis {
        self.shared.clock.now()
    }

    pub(crate) fn wake_dispatcher(&self) {
        self.shared.wake.notify_one();
    }

    /// Wakes the dispatch loop for a task a store change just wrote, unless
    /// the claim pass that ran in the same batch served it already: a task
    /// due now was claimed there if any agent had room (and otherwise waits
    /// for a slot, which is refilled in the batch that frees it), and so was
    /// the slot a finished task freed. A task queued for later than the
    /// change that wrote it (its `updated_at`, which the pass's own clock
    /// reading is no earlier than), such as a retry in backoff, needs the
    /// loop to wait for it. A pass that failed wakes the loop itself
    /// (`Handout::Missed`).
    pub(crate) fn wake_for(&self, task: &muster_core::Task) {
        if task.state == muster_core::TaskState::Queued && task.ready_at > task.updated_at {
            self.wake_dispatcher();
        }
    }

    /// Sends `msg` to `agent` after every handout already committed, so an
    /// agent never hears of a change to a task before it heard of the task.
    /// True when this hub holds the agent's socket; otherwise the message is
    /// left for the hub that does (see `Hub::tell` to learn whether one does).
    pub(crate) fn send_to(&self, agent: &AgentName, msg: HubMsg) -> bool {
        self.deliver_handouts();
        match self.push_local(agent, Box::new(msg)) {
            Ok(()) => true,
            Err(msg) => {
                self.relay_later(hubs::Relayed::Send { agent: agent.to_string(), msg: *msg });
                false
            }
        }
    }

    /// Sends `msg` to `agent` as it is; false when it is not connected here.
    pub(crate) fn push_to(&self, agent: &AgentName, msg: HubMsg) -> bool {
        self.push_local(agent, Box::new(msg)).is_ok()
    }

    /// Sends `msg` through this hub's socket to `agent`, or gives it back.
    pub(crate) fn push_local(&self, agent: &AgentName, msg: Box<HubMsg>) -> Result<(), Box<HubMsg>> {
        let sessions = self.shared.sessions.lock().expect("sessions lock poisoned");
        match sessions.get(agent) {
            Some(s) => s.tx.unbounded_send(Outbound::Msg(msg)).map_err(|e| match e.into_inner() {
                Outbound::Msg(msg) => msg,
                Outbound::Close(_) => unreachable!("a message was sent"),
            }),
            None => Err(msg),
        }
    }

    /// Closes `agent`'s socket, here or on the hub that holds it.
    pub(crate) fn close_agent(&self, agent: &AgentName, reason: &str) {
        if !self.close_local(agent, reason) {
            self.relay_later(hubs::Relayed::Close { agent: agent.to_string(), reason: reason.to_owned() });
        }
    }

    /// Closes `agent`'s socket if this hub holds it.
    pub(crate) fn close_local(&self, agent: &AgentName, reason: &str) -> bool {
        let sessions = self.shared.sessions.lock().expect("sessions lock poisoned");
        sessions.get(agent).is_some_and(|s| s.tx.unbounded_send(Outbound::Close(reason.to_owned())).is_ok())
    }

    /// The agents connected here that follow channel `name`.
    pub(crate) fn followers(&self, name: &str) -> Vec<AgentName> {
        let sessions = self.shared.sessions.lock().expect("sessions lock poisoned");
        sessions.iter().filter(|(_, s)| s.channels.iter().any(|c| c == name)).map(|(a, _)| a.clone()).collect()
    }

    pub(crate) fn drop_run(&self, agent: &AgentName, task: &TaskId, epoch: muster_core::Epoch, reason: &str) {
        self.send_to(agent, HubMsg::Drop { task: task.to_string(), epoch: epoch.0, reason: reason.to_owned() });
    }
}

/// How many tasks `count_tasks` reported in `state`.
pub(crate) fn tasks_in(counts: &[(muster_core::TaskState, u64)], state: muster_core::TaskState) -> u64 {
    counts.iter().find(|(s, _)| *s == state).map_or(0, |c| c.1)
}

/// Writes a secret readable by its owner only.
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is synced: after a power
    // cut the store could otherwise hold a token whose file is gone.
    if let Some(dir) = path.parent() {
        std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })?.sync_all()?;
    }
    Ok(())
}

/// The setting every hub on one PostgreSQL database reads the task-token key
/// from, so a run's token works on whichever hub its agent reaches.
const SHARED_TASK_KEY: &str = "secret.task_token_key";

/// The task-token key the hubs on a shared database use: the first hub to
/// start stores one (the `task-token.key` of its data directory, if it has
/// one, so that tokens of runs under way stay good), and every other hub
/// reads it.
async fn shared_task_token_key(
    store: &dyn muster_store::Store,
    data_dir: &Path,
    now: Millis,
) -> anyhow::Result<Vec<u8>> {
    let from_file = std::fs::read_to_string(data_dir.join("task-token.key"))
        .ok()
        .and_then(|hex| auth::unhex(&hex))
        .filter(|k| k.len() == 32);
    let offered = match from_file {
        Some(key) => key,
        None => {
            let mut fresh = vec![0u8; 32];
            getrandom::fill(&mut fresh).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
            fresh
        }
    };
    let stored = store
        .setting_or_insert(SHARED_TASK_KEY, auth::hex(&offered), now)
        .await
        .context("cannot read the shared task-token key")?;
    auth::unhex(&stored)
        .filter(|k| k.len() == 32)
        .ok_or_else(|| anyhow::anyhow!("the stored task-token key ({SHARED_TASK_KEY}) is not 64 hex digits"))
}

/// The hub's key for task tokens: made once, kept beside the database in
/// `task-token.key` (mode 0600), never in the store, its backups or the
/// timeline. A hub that loses it makes a new one; runs under way then need
/// their next assignment for a working token.
fn task_token_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("task-token.key");
    if let Ok(hex) = std::fs::read_to_string(&path)
        && let Some(key) = auth::unhex(&hex)
        && key.len() == 32
    {
        return Ok(key);
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    write_secret_file(&path, &auth::hex(&key)).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

pub(crate) fn new_task_id(now: Millis) -> crate::error::ApiResult<TaskId> {
    let mut buf = [0u8; 16];
    getrandom::fill(&mut buf).map_err(|e| crate::error::ApiError::Internal(format!("no randomness available: {e}")))?;
    Ok(TaskId::from_parts(now.0, u128::from_le_bytes(buf)))
}

#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Each module of this crate and the modules it names (`crate::NAME`);
    /// `api/` counts as one module.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
        for dir in [src.clone(), src.join("api")] {
            for entry in std::fs::read_dir(&dir).expect("the sources") {
                let path = entry.expect("an entry").path();
                if path.extension().is_some_and(|e| e == "rs") {
                    let module = if dir.ends_with("api") {
                        "api".to_owned()
                    } else {
                        path.file_stem().expect("a name").to_string_lossy().into_owned()
                    };
                    files.push((module, path));
                }
            }
        }
        let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).filter(|m| m != "lib").collect();
        let named = regex::Regex::new(r"crate::([a-z_]+)\b").expect("a pattern");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, path) in files.into_iter().filter(|(m, _)| m != "lib") {
            let text = std::fs::read_to_string(&path).expect("a source");
            let uses = graph.entry(module.clone()).or_default();
            for m in named.captures_iter(&text).map(|c| c[1].to_owned()) {
                if modules.contains(&m) && m != module {
                    uses.insert(m);
                }
            }
        }
        graph
    }

    /// A cycle through `at`, if its imports lead back to it.
    fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, at: &str) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|m| m == at) {
            let mut found = path[i..].to_vec();
            found.push(at.to_owned());
            return Some(found);
        }
        path.push(at.to_owned());
        for next in graph.get(at).into_iter().flatten() {
            if let Some(found) = cycle(graph, path, next) {
                return Some(found);
            }
        }
        path.pop();
        None
    }

    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let graph = imports();
        assert!(graph.len() > 20 && graph["api"].contains("decisions"), "the graph was read: {graph:?}");
        for module in graph.keys() {
            if let Some(found) = cycle(&graph, &mut Vec::new(), module) {
                panic!("an import cycle: {}", found.join(" -> "));
            }
        }
        // The leaves every other module may use name no module of the hub.
        for leaf in ["error", "views", "workers", "cache", "metrics", "openapi", "pipeline", "budget", "edge"] {
            assert_eq!(graph[leaf], BTreeSet::new(), "{leaf} names {:?}", graph[leaf]);
        }
    }
}
