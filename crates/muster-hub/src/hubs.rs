//! This hub among the others on the same database: it beats, counts gone
//! the hubs that stopped beating, and leads the duties one hub at a time
//! does (reaping leases, schedules, deadlines, alerts, upkeep), each under
//! a lease the store fences (see `Store::hold_duties`).

use crate::Hub;
use muster_store::{Duty, Fence, HubInfo, StoreError};
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
                self.close_agent(&agent, "this hub had been counted gone; connect again");
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
pub const CACHE_STALENESS: Duration = Duration::from_secs(1);

/// Wakes the dispatch loop when another hub committed a change (a task
/// submitted there, a slot freed), which this hub hears of through the
/// store's `subscribe()`: agents connected here take work submitted
/// anywhere at once, not at the next timed pass. It also forgets the
/// tokens and shadow policies kept in memory, at most once per
/// `CACHE_STALENESS` (and at the latest that long after a change), since
/// another hub may have changed them.
pub(crate) struct ChangesWorker {
    changes: tokio::sync::watch::Receiver<i64>,
    cleared: tokio::time::Instant,
    /// A change came since the caches were last cleared.
    pending: bool,
}

impl ChangesWorker {
    pub(crate) fn new(hub: &Hub) -> ChangesWorker {
        ChangesWorker { changes: hub.shared.store.subscribe(), cleared: tokio::time::Instant::now(), pending: false }
    }
}

impl crate::workers::Worker for ChangesWorker {
    fn name(&self) -> &'static str {
        "changes"
    }

    fn purpose(&self) -> &'static str {
        "wakes dispatch when any hub on the database commits a change, and keeps caches at most 1 s stale"
    }

    async fn next(&mut self, _hub: &Hub) {
        let due = self.cleared + CACHE_STALENESS;
        tokio::select! {
            changed = self.changes.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await;
                }
                self.pending = true;
            }
            _ = tokio::time::sleep_until(due), if self.pending => {}
        }
    }

    async fn step(&mut self, hub: &Hub) -> Result<bool, String> {
        hub.wake_dispatcher();
        if self.pending && self.cleared.elapsed() >= CACHE_STALENESS {
            hub.shared.tokens.clear();
            hub.shared.shadow_policies.clear();
            self.cleared = tokio::time::Instant::now();
            self.pending = false;
        }
        Ok(false)
    }
}
