//! The dispatch worker: reclaim expired leases, then hand queued tasks to
//! agents with free slots, then sleep until woken or until the next backoff
//! or lease is due.

use crate::Hub;
use muster_core::{AgentName, Task};
use muster_proto::ws::HubMsg;
use muster_store::{BatchClaims, Handout, Roster};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Most leases reclaimed in one pass; the loop comes back at once for more.
const RECLAIM_BATCH: usize = 500;

/// Reclaims expired leases, closes decisions past their deadline, fires due
/// schedules and hands queued tasks to agents; then sleeps until woken or
/// until the next backoff or lease is due. Its first pass runs at once.
pub(crate) struct DispatchWorker {
    started: bool,
}

impl DispatchWorker {
    /// The worker, and the one that sends out what the store claims at the
    /// end of each batch of changes for the roster this hub publishes: a
    /// task created goes out with its creation's commit rather than after a
    /// second commit of its own claim, which halves the commits between a
    /// submission and its agent. Data flows one way each: the roster to the
    /// store, its handouts back.
    pub(crate) fn new(hub: &Hub) -> (DispatchWorker, HandoutWorker) {
        hub.publish_roster();
        hub.shared.store.claim_in_batches(BatchClaims {
            roster: hub.shared.roster.subscribe(),
            clock: hub.shared.clock.clone(),
            handouts: hub.shared.handouts.clone(),
        });
        (DispatchWorker { started: false }, HandoutWorker)
    }
}

/// Sends out what the store claimed at the end of a batch, or wakes the
/// dispatch worker when a claim pass missed. Anything else sent to an agent
/// takes what is queued first (`Hub::send_to`), so order holds either way.
pub(crate) struct HandoutWorker;

impl crate::workers::Worker for HandoutWorker {
    fn name(&self) -> &'static str {
        "handout"
    }

    fn purpose(&self) -> &'static str {
        "sends agents the tasks claimed in the commit that made them claimable"
    }

    async fn next(&mut self, hub: &Hub) {
        hub.shared.handouts.ready().await;
    }

    async fn step(&mut self, hub: &Hub) -> Result<bool, String> {
        hub.deliver_handouts();
        Ok(false)
    }
}

impl crate::workers::Worker for DispatchWorker {
    fn name(&self) -> &'static str {
        "dispatch"
    }

    fn purpose(&self) -> &'static str {
        "reclaims expired leases, expires decisions, fires schedules and hands out queued tasks"
    }

    async fn next(&mut self, hub: &Hub) {
        if !std::mem::replace(&mut self.started, true) {
            return;
        }
        let now = hub.now();
        // Wake at least this often even when nothing is due, to notice leases
        // that expire while no one is watching.
        let tick = (hub.shared.runtime.borrow().heartbeat_interval / 2)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let sleep = match hub.shared.store.next_due().await {
            Ok(Some(due)) if due > now => due.since(now).min(tick),
            _ => tick,
        };
        tokio::select! {
            _ = hub.shared.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }

    async fn step(&mut self, hub: &Hub) -> Result<bool, String> {
        let mut busy = false;
        let mut failed = Vec::new();
        match hub.reclaim_once().await {
            Ok(n) => busy |= n >= RECLAIM_BATCH,
            Err(e) => failed.push(format!("reclaim: {e}")),
        }
        if let Err(e) = hub.expire_decisions_once().await {
            failed.push(format!("decision deadlines: {e}"));
        }
        if let Err(e) = hub.fire_schedules_once().await {
            failed.push(format!("schedules: {e}"));
        }
        match hub.dispatch_once().await {
            Ok(n) => busy |= n > 0,
            Err(e) => failed.push(format!("dispatch: {e}")),
        }
        match failed.is_empty() {
            true => Ok(busy),
            // Work is still flowing: go again at once, and say what failed.
            false if busy => {
                tracing::error!(error = %failed.join("; "), "part of a dispatch pass failed; going on");
                Ok(true)
            }
            false => Err(failed.join("; ")),
        }
    }
}

impl Hub {
    /// Reclaims expired leases; returns how many.
    pub(crate) async fn reclaim_once(&self) -> Result<usize, muster_store::StoreError> {
        let now = self.now();
        if !self.lead(muster_store::Duty::Reaper).await? {
            return Ok(0);
        }
        // Nothing expired: no write, so a busy dispatch loop costs the writer nothing here.
        if self.shared.store.next_lease_expiry().await?.is_none_or(|expiry| expiry > now) {
            return Ok(0);
        }
        let reclaimed = self.shared.store.reclaim_expired(now, RECLAIM_BATCH).await?;
        for (task, outcome) in &reclaimed {
            tracing::info!(task_id = %task.id, ?outcome, "lease expired; task reclaimed");
            self.metrics().lease_expirations.with(&[outcome.as_str()]).inc();
            // If the old holder is still connected it must let the run go.
            if let Some(agent) = &task.agent {
                self.drop_run(agent, &task.id, task.epoch, "lease expired");
            }
        }
        Ok(reclaimed.len())
    }

    /// Hands due tasks to connected agents; returns how many were assigned.
    /// Most tasks go out with the commit that made them claimable (see
    /// [`DispatchWorker::new`]); this pass serves the rest: tasks whose
    /// backoff ended, slots a reclaim freed, a batch whose claims failed.
    pub(crate) async fn dispatch_once(&self) -> Result<usize, muster_store::StoreError> {
        // The roster as it is now, published too should a change have missed
        // publishing it: each pass, whether or not it has work to hand out.
        self.publish_roster();
        if self.shared.sessions.lock().expect("sessions lock poisoned").is_empty() {
            return Ok(0);
        }
        // Nothing due: no claims, so a fleet of idle agents costs no writes.
        let Some(ready) = self.shared.store.next_ready().await? else { return Ok(0) };
        let now = self.now();
        let Some(roster) = self.roster().filter(|_| ready <= now) else { return Ok(0) };
        // One change for the whole pass, claiming for each agent in the
        // rotation's order, so whoever is first is served first.
        let mut agents = roster.agents;
        let start = self.shared.rotation.fetch_add(1, Ordering::Relaxed) % agents.len();
        agents.rotate_left(start);
        let results = self.shared.store.claim_for_agents(&agents, now, roster.accept_within).await?;
        let mut assigned = 0;
        let mut failure = None;
        for (agent, result) in agents.iter().zip(results) {
            // Other agents' claims committed; their tasks must still go out.
            match result {
                Ok(tasks) => assigned += self.send_assignments(agent, &tasks),
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if assigned == 0 => Err(e),
            Some(e) => {
                tracing::error!(error = %e, "a claim failed; the others went out");
                Ok(assigned)
            }
            None => Ok(assigned),
        }
    }

    /// Whom claims are for now: the connected agents, by name, and how long
    /// each has to accept; `None` when nothing may be handed out (no agent,
    /// dispatch paused, the hub draining).
    pub(crate) fn roster(&self) -> Option<Roster> {
        if self.shared.draining.load(Ordering::SeqCst) || self.shared.dispatch_paused.load(Ordering::SeqCst) {
            return None;
        }
        let mut agents: Vec<AgentName> =
            self.shared.sessions.lock().expect("sessions lock poisoned").keys().cloned().collect();
        if agents.is_empty() {
            return None;
        }
        agents.sort();
        Some(Roster { agents, accept_within: self.shared.runtime.borrow().accept_timeout })
    }

    /// Tells the store the roster, when it changed: called wherever what it
    /// is made of changes (an agent connects or leaves, dispatch is paused
    /// or resumed, the hub drains, the accept timeout changes).
    /// Reading what the roster is made of while holding the channel keeps
    /// two publishers from crossing: the last to publish read last.
    pub(crate) fn publish_roster(&self) {
        self.shared.roster.send_if_modified(|current| {
            let roster = self.roster();
            let changed = *current != roster;
            *current = roster;
            changed
        });
    }

    /// Sends out every handout the store has queued, oldest first.
    pub(crate) fn deliver_handouts(&self) {
        for handout in self.shared.handouts.take() {
            match handout {
                Handout::Claimed(claims) => {
                    for (agent, tasks) in &claims {
                        self.send_assignments(agent, tasks);
                    }
                }
                Handout::Missed => self.wake_dispatcher(),
            }
        }
    }

    /// Sends claimed tasks to `agent`; returns how many.
    fn send_assignments(&self, agent: &AgentName, tasks: &[Task]) -> usize {
        for task in tasks {
            tracing::debug!(task_id = %task.id, agent = %agent, epoch = task.epoch.0, "assigned");
            let mut assign = HubMsg::assign(task);
            if let HubMsg::Assign { task_token, .. } = &mut assign {
                *task_token = Some(crate::auth::task_token(&self.shared.task_key, &task.id, task.epoch));
            }
            if !self.push_to(agent, assign) {
                // The socket went away after the claim; the accept deadline reclaims it.
                tracing::warn!(task_id = %task.id, agent = %agent, "agent left before its assignment was sent");
            }
        }
        tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HubConfig, Outbound, Session};
    use muster_proto::api::{TaskDefaults, TaskSubmit};
    use muster_store::Store;
    use muster_store::sqlite::SqliteStore;
    use std::sync::Arc;

    /// A cancel for a task the store has just handed out reaches its agent
    /// after the assignment, however late the handout worker runs.
    #[tokio::test]
    async fn a_message_to_an_agent_follows_the_handouts_committed_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("muster.db"), Default::default()).expect("a store"));
        let config = HubConfig { data_dir: dir.path().to_path_buf(), ..HubConfig::default() };
        let hub = Hub::new(store, config, Arc::new(crate::SystemClock)).await.expect("a hub");
        let agent = AgentName::parse("w").unwrap();
        let (tx, mut rx) = futures_channel::mpsc::unbounded();
        hub.shared.sessions.lock().unwrap().insert(agent.clone(), Session { id: 1, tx, channels: Vec::new() });

        let defaults = TaskDefaults {
            runner: Some(muster_core::RunnerName::parse("shell").unwrap()),
            timeout: Duration::from_secs(60),
            max_attempts: 1,
        };
        let submit = TaskSubmit { prompt: "echo".into(), runner: Some("shell".into()), ..TaskSubmit::default() };
        let task = Task::new(crate::new_task_id(hub.now()).unwrap(), submit.into_spec(&defaults).unwrap(), hub.now());
        hub.shared.handouts.push(Handout::Claimed(vec![(agent.clone(), vec![task.clone()])]));
        hub.drop_run(&agent, &task.id, task.epoch, "cancelled");

        let kinds: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|m| match m {
                Outbound::Msg(m) if matches!(*m, HubMsg::Assign { .. }) => "assign",
                Outbound::Msg(m) if matches!(*m, HubMsg::Drop { .. }) => "drop",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["assign", "drop"]);
        assert!(hub.shared.handouts.take().is_empty(), "nothing is sent twice");
    }
}
