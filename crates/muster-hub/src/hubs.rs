//! This hub among the others on the same database: it beats, counts gone
//! the hubs that stopped beating, and leads the duties one hub at a time
//! does (reaping leases, schedules, deadlines, alerts, upkeep), each under
//! a lease the store fences (see `Store::hold_duties`).

use crate::Hub;
use muster_core::AgentName;
use muster_proto::ws::HubMsg;
use muster_store::{Duty, Fence, HubInfo, RelayTo, StoreError};
use std::collections::HashMap;
use std::time::Duration;

/// How often a hub says it is alive and renews its duties.
pub const BEAT: Duration = Duration::from_secs(2);
/// Silence after which the other hubs count a hub gone.
pub const HUB_TTL: Duration = Duration::from_secs(10);
/// How long a duty's lease lasts: another hub takes a duty over at most
/// this long after its leader died or stalled.
pub const DUTY_TTL: Duration = Duration::from_secs(15);

/// Who this hub is, made once per start.
pub(crate) fn identity(config: &crate::HubConfig) -> HubInfo {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the system's random source");
    let id = format!("h_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let host = hostname();
    HubInfo {
        id,
        name: config.hub_name.clone().unwrap_or_else(|| format!("{host}:{}", config.listen.port())),
        url: config.public_url.clone().unwrap_or_else(|| {
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", config.listen)
        }),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ttl: HUB_TTL,
        exclusive: !config.database.is_postgres(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The duties this hub leads, as it last took them.
#[derive(Default)]
pub(crate) struct Duties(std::sync::Mutex<HashMap<Duty, Fence>>);

impl Duties {
    pub(crate) fn held(&self) -> Vec<Fence> {
        let mut held: Vec<Fence> = self.0.lock().expect("duties lock poisoned").values().cloned().collect();
        held.sort_by_key(|f| f.duty.as_str());
        held
    }
}

impl Hub {
    pub(crate) fn me(&self) -> &HubInfo {
        &self.shared.me
    }

    /// Whether this hub leads `duty` now, taking or renewing its lease
    /// first when less than half of it is left. The store then refuses the
    /// duty's work from any hub but its leader, in the transaction that
    /// would do it.
    pub(crate) async fn lead(&self, duty: Duty) -> Result<bool, StoreError> {
        let now = self.now();
        let current = self.shared.duties.0.lock().expect("duties lock poisoned").get(&duty).cloned();
        if current.is_some_and(|f| f.expires_at > now.plus(DUTY_TTL / 2)) {
            return Ok(true);
        }
        let taken = self.shared.store.take_duty(duty, &self.me().id, DUTY_TTL, now).await;
        let leads = {
            let mut duties = self.shared.duties.0.lock().expect("duties lock poisoned");
            match &taken {
                Ok(Some(fence)) => {
                    if duties.insert(duty, fence.clone()).is_none_or(|old| old.epoch != fence.epoch) {
                        tracing::info!(duty = duty.as_str(), epoch = fence.epoch, "this hub leads a duty");
                    }
                }
                Ok(None) | Err(_) => {
                    if duties.remove(&duty).is_some() {
                        tracing::warn!(duty = duty.as_str(), "this hub no longer leads a duty");
                    }
                }
            }
            duties.contains_key(&duty)
        };
        self.shared.store.hold_duties(Some(self.shared.duties.held()));
        taken.map(|_| leads)
    }

    /// The hubs on the database, this one first, then by name.
    pub(crate) async fn hub_views(&self) -> Result<Vec<muster_proto::api::HubView>, StoreError> {
        let now = self.now();
        let duties = self.shared.store.duties().await?;
        let mut views: Vec<muster_proto::api::HubView> = self
            .shared
            .store
            .hubs(now)
            .await?
            .into_iter()
            .map(|h| muster_proto::api::HubView {
                alive: h.alive(now),
                this: h.id == self.me().id,
                leads: duties
                    .iter()
                    .filter(|f| f.hub == h.id && f.expires_at > now)
                    .map(|f| f.duty.as_str().to_owned())
                    .collect(),
                agents: h.agents.iter().map(|a| a.to_string()).collect(),
                started_at: muster_proto::timestamp(h.started_at),
                last_beat_at: muster_proto::timestamp(h.seen_at),
                stopped_at: h.stopped_at.map(muster_proto::timestamp),
                id: h.id,
                name: h.name,
                url: h.url,
                version: h.version,
            })
            .collect();
        views.sort_by(|a, b| b.this.cmp(&a.this).then(b.alive.cmp(&a.alive)).then(a.name.cmp(&b.name)));
        Ok(views)
    }

    /// One beat: this hub is alive; the duties are taken or renewed; the
    /// reaper's leader counts gone the hubs that went silent.
    pub(crate) async fn beat_once(&self) -> Result<(), String> {
        let now = self.now();
        let store = &self.shared.store;
        let was_gone = store.hub_beat(&self.me().id, now).await.map_err(|e| format!("beat: {e}"))?;
        if was_gone {
            // The others counted this hub gone (it was paused, or cut off)
            // and disconnected its agents: they must connect again to be its.
            tracing::warn!("this hub had been counted gone by the others; its agents reconnect");
            let names: Vec<_> = self.shared.sessions.lock().expect("sessions lock poisoned").keys().cloned().collect();
            for agent in names {
                self.close_local(&agent, "this hub had been counted gone; connect again");
            }
        }
        let mut failed = Vec::new();
        for duty in Duty::ALL {
            if let Err(e) = self.lead(duty).await {
                failed.push(format!("{}: {e}", duty.as_str()));
            }
        }
        if self.lead(Duty::Reaper).await.unwrap_or(false) {
            match store.reap_hubs(now).await {
                Ok(lost) => {
                    for hub in lost {
                        tracing::warn!(hub = %hub.name, id = %hub.id, "a hub stopped beating; its agents are disconnected");
                    }
                }
                Err(e) => failed.push(format!("reap: {e}")),
            }
        }
        if failed.is_empty() { Ok(()) } else { Err(failed.join("; ")) }
    }
}

/// Beats every `BEAT`.
pub(crate) struct BeatWorker;

impl crate::workers::Worker for BeatWorker {
    fn name(&self) -> &'static str {
        "hubs"
    }

    fn purpose(&self) -> &'static str {
        "says this hub is alive every 2 s, renews the duties it leads, and counts silent hubs gone"
    }

    async fn next(&mut self, _hub: &Hub) {
        tokio::time::sleep(BEAT).await;
    }

    async fn step(&mut self, hub: &Hub) -> Result<bool, String> {
        hub.beat_once().await.map(|()| false)
    }
}

/// How stale a kept token or shadow policy may be when other hubs share the
/// database: a token revoked on one hub is refused by every hub within this.
/// Settings, pause and messages left by other hubs are taken up as often.
pub const CACHE_STALENESS: Duration = Duration::from_secs(1);

/// What one hub leaves for another to do for the agents it holds (see
/// `Store::relay`): a message for one agent, for the followers of a channel,
/// or closing an agent's socket.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Relayed {
    Send { agent: String, msg: HubMsg },
    Channel { name: String, msg: HubMsg },
    Close { agent: String, reason: String },
}

/// What `relay_later` has yet to leave, and whether a task is leaving it.
#[derive(Default)]
pub(crate) struct RelayQueue {
    waiting: std::collections::VecDeque<Relayed>,
    draining: bool,
}

impl Hub {
    /// Leaves `what` for the other hubs when the database is shared; a no-op
    /// on SQLite, where this hub holds every agent. Returns how many hubs it
    /// was left for.
    pub(crate) async fn relay(&self, what: Relayed) -> usize {
        let to = match &what {
            Relayed::Send { agent, .. } | Relayed::Close { agent, .. } => match AgentName::parse(agent) {
                Ok(agent) => RelayTo::Agent(agent),
                Err(_) => return 0,
            },
            Relayed::Channel { .. } => RelayTo::Hubs,
        };
        self.relay_to(to, what).await
    }

    /// Leaves `what` for the hubs `to` names; how many it was left for.
    pub(crate) async fn relay_to(&self, to: RelayTo, what: Relayed) -> usize {
        if self.me().exclusive {
            return 0;
        }
        let body = match serde_json::to_string(&what) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "cannot write a message for another hub");
                return 0;
            }
        };
        match self.shared.store.relay(to, body, self.now()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot leave a message for another hub");
                0
            }
        }
    }

    /// The id of the other hub that holds `agent`'s socket, if one does.
    pub(crate) async fn holder(&self, agent: &AgentName) -> Option<String> {
        if self.me().exclusive {
            return None;
        }
        let hubs = self.shared.store.hubs(self.now()).await.ok()?;
        hubs.into_iter().find(|h| h.id != self.me().id && h.agents.contains(agent)).map(|h| h.id)
    }

    /// `relay` from code that cannot wait for it: left in the order given,
    /// by one task at a time, so an agent hears of them in that order.
    pub(crate) fn relay_later(&self, what: Relayed) {
        if self.me().exclusive {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let start = {
            let mut q = self.shared.relaying.lock().expect("relay queue lock poisoned");
            q.waiting.push_back(what);
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            let hub = self.clone();
            rt.spawn(async move {
                loop {
                    let next = {
                        let mut q = hub.shared.relaying.lock().expect("relay queue lock poisoned");
                        match q.waiting.pop_front() {
                            Some(next) => next,
                            None => {
                                q.draining = false;
                                return;
                            }
                        }
                    };
                    hub.relay(next).await;
                }
            });
        }
    }

    /// Sends `msg` to `agent` wherever it is connected: through this hub's
    /// socket or the hub that holds it. False when no hub holds it.
    pub(crate) async fn tell(&self, agent: &AgentName, msg: HubMsg) -> bool {
        self.deliver_handouts();
        match self.push_local(agent, Box::new(msg)) {
            Ok(()) => true,
            Err(msg) => self.relay(Relayed::Send { agent: agent.to_string(), msg: *msg }).await > 0,
        }
    }

    /// Passes on what the other hubs left for this one, to its own agents
    /// only: what is left for an agent that moved on meanwhile is dropped
    /// (a run it concerns is set right by the agent's next heartbeat).
    async fn take_relays(&self) -> Result<(), StoreError> {
        for body in self.shared.store.take_relays().await? {
            match serde_json::from_str::<Relayed>(&body) {
                Ok(Relayed::Send { agent, msg }) => {
                    self.deliver_handouts();
                    let here = AgentName::parse(&agent).is_ok_and(|a| self.push_local(&a, Box::new(msg)).is_ok());
                    if !here {
                        tracing::debug!(agent, "a message relayed for an agent no longer here");
                    }
                }
                Ok(Relayed::Channel { name, msg }) => {
                    for agent in self.followers(&name) {
                        let _ = self.push_local(&agent, Box::new(msg.clone()));
                    }
                }
                Ok(Relayed::Close { agent, reason }) => {
                    if let Ok(agent) = AgentName::parse(&agent) {
                        self.close_local(&agent, &reason);
                    }
                }
                Err(e) => tracing::error!(error = %e, "a message left by another hub cannot be read"),
            }
        }
        Ok(())
    }

    /// Puts in force the settings and dispatch pause as stored, when another
    /// hub changed them.
    async fn follow_settings(&self) -> Result<(), StoreError> {
        let store = &self.shared.store;
        // Read and put in force with no change of this hub's in between.
        let _one = self.shared.changing_config.lock().await;
        let paused = store.settings(crate::DISPATCH_PAUSED).await?.iter().any(|(_, v)| v == "true");
        if self.shared.dispatch_paused.swap(paused, std::sync::atomic::Ordering::SeqCst) != paused {
            tracing::warn!(paused, "dispatch {} on another hub", if paused { "paused" } else { "resumed" });
            self.publish_roster();
            self.wake_dispatcher();
        }
        let stored = store.settings(crate::runtime::PREFIX).await?;
        let config = self.config();
        let next = crate::runtime::overlay_and_tell(&config.live, &stored, |r| config.fits(r), false);
        let before = self.runtime();
        if next != before {
            tracing::info!("runtime settings changed on another hub");
            self.apply_runtime(&before, next).await?;
        }
        Ok(())
    }
}

/// Keeps this hub in step with the others on the database. It wakes the
/// dispatch loop when another hub committed a change (a task submitted
/// there, a slot freed), which this hub hears of through the store's
/// `subscribe()`: agents connected here take work submitted anywhere at
/// once, not at the next timed pass. At most once per `CACHE_STALENESS`
/// (and at the latest that long after a change, or when nothing is heard)
/// it forgets the tokens and shadow policies kept in memory, passes on the
/// messages other hubs left for its agents, and puts in force the settings
/// and pause another hub changed.
pub(crate) struct ChangesWorker {
    changes: tokio::sync::watch::Receiver<i64>,
    swept: tokio::time::Instant,
}

impl ChangesWorker {
    pub(crate) fn new(hub: &Hub) -> ChangesWorker {
        ChangesWorker { changes: hub.shared.store.subscribe(), swept: tokio::time::Instant::now() }
    }
}

impl crate::workers::Worker for ChangesWorker {
    fn name(&self) -> &'static str {
        "changes"
    }

    fn purpose(&self) -> &'static str {
        "wakes dispatch when any hub on the database commits a change, passes on messages other hubs left \
         for this hub's agents, and follows settings and caches changed elsewhere within 1 s"
    }

    async fn next(&mut self, _hub: &Hub) {
        let due = self.swept + CACHE_STALENESS;
        tokio::select! {
            changed = self.changes.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(due).await;
                }
            }
            _ = tokio::time::sleep_until(due) => {}
        }
    }

    async fn step(&mut self, hub: &Hub) -> Result<bool, String> {
        hub.wake_dispatcher();
        if self.swept.elapsed() < CACHE_STALENESS {
            return Ok(false);
        }
        self.swept = tokio::time::Instant::now();
        hub.shared.tokens.clear();
        hub.shared.shadow_policies.clear();
        hub.take_relays().await.map_err(|e| format!("relays: {e}"))?;
        hub.follow_settings().await.map_err(|e| format!("settings: {e}"))?;
        Ok(false)
    }
}
