//! The hub's background loop: reclaim expired leases, then hand queued
//! tasks to agents with free slots, then sleep until woken or until the
//! next backoff or lease is due.

use crate::Hub;
use muster_core::{AgentName, Millis, Task};
use muster_proto::ws::HubMsg;
use muster_store::{ClaimPlan, Dispatcher};
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Most leases reclaimed in one pass; the loop comes back at once for more.
const RECLAIM_BATCH: usize = 500;

pub async fn dispatch_loop(hub: Hub) {
    let mut stopping = hub.shared.stopping.subscribe();
    hub.shared.store.set_dispatcher(std::sync::Arc::new(BatchDispatch(std::sync::Arc::downgrade(&hub.shared))));
    let mut last_error: Option<String> = None;
    loop {
        if *stopping.borrow() {
            break;
        }
        let mut busy = false;
        match hub.reclaim_once().await {
            Ok(n) => busy |= n >= RECLAIM_BATCH,
            Err(e) => note_error(&mut last_error, "reclaim", e),
        }
        if let Err(e) = hub.expire_decisions_once().await {
            note_error(&mut last_error, "decision deadlines", e);
        }
        if let Err(e) = hub.fire_schedules_once().await {
            note_error(&mut last_error, "schedules", e);
        }
        match hub.dispatch_once().await {
            Ok(n) => busy |= n > 0,
            Err(e) => note_error(&mut last_error, "dispatch", e),
        }
        if busy {
            continue;
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
            _ = stopping.changed() => break,
        }
    }
    tracing::info!("dispatch loop stopped");
}

fn note_error(last: &mut Option<String>, step: &str, e: muster_store::StoreError) {
    let message = format!("{step}: {e}");
    if last.as_deref() != Some(&message) {
        tracing::error!(error = %message, "dispatch loop step failed; retrying");
    }
    *last = Some(message);
}

impl Hub {
    /// Reclaims expired leases; returns how many.
    pub(crate) async fn reclaim_once(&self) -> Result<usize, muster_store::StoreError> {
        let now = self.now();
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
    /// [`BatchDispatch`]); this pass serves the rest: tasks whose backoff
    /// ended, slots a reclaim freed, a batch whose claims failed.
    pub(crate) async fn dispatch_once(&self) -> Result<usize, muster_store::StoreError> {
        if self.shared.sessions.lock().expect("sessions lock poisoned").is_empty() {
            return Ok(0);
        }
        // Nothing due: no claims, so a fleet of idle agents costs no writes.
        let Some(ready) = self.shared.store.next_ready().await? else { return Ok(0) };
        let Some(plan) = self.claim_plan(ready) else { return Ok(0) };
        // One change for the whole pass, claiming for each agent in the
        // rotation's order, so whoever is first is served first.
        let results = self.shared.store.claim_for_agents(&plan.agents, plan.now, plan.accept_within).await?;
        let mut assigned = 0;
        let mut failure = None;
        for (agent, result) in plan.agents.iter().zip(results) {
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

    /// The agents a claim pass serves, in its order, or `None` when nothing
    /// may be handed out now. `ready` is when the first queued task is due.
    fn claim_plan(&self, ready: Millis) -> Option<ClaimPlan> {
        let now = self.now();
        if ready > now
            || self.shared.draining.load(Ordering::SeqCst)
            || self.shared.dispatch_paused.load(Ordering::SeqCst)
        {
            return None;
        }
        let mut agents: Vec<AgentName> =
            self.shared.sessions.lock().expect("sessions lock poisoned").keys().cloned().collect();
        if agents.is_empty() {
            return None;
        }
        // Start with a different agent each pass so no agent is always served first.
        agents.sort();
        let start = self.shared.rotation.fetch_add(1, Ordering::Relaxed) % agents.len();
        agents.rotate_left(start);
        let accept_within = self.shared.runtime.borrow().accept_timeout;
        Some(ClaimPlan { agents, now, accept_within })
    }

    /// Sends claimed tasks to `agent`; returns how many.
    fn send_assignments(&self, agent: &AgentName, tasks: &[Task]) -> usize {
        for task in tasks {
            tracing::debug!(task_id = %task.id, agent = %agent, epoch = task.epoch.0, "assigned");
            let mut assign = HubMsg::assign(task);
            if let HubMsg::Assign { task_token, .. } = &mut assign {
                *task_token = Some(crate::auth::task_token(&self.shared.task_key, &task.id, task.epoch));
            }
            if !self.send_to(agent, assign) {
                // The socket went away after the claim; the accept deadline reclaims it.
                tracing::warn!(task_id = %task.id, agent = %agent, "agent left before its assignment was sent");
            }
        }
        tasks.len()
    }
}

/// The store's claim pass at the end of each batch of changes, for this
/// hub's agents. A task created goes out with its creation's commit rather
/// than after a second commit of its own claim, which halves the commits
/// between a submission and its agent. Holds the hub weakly: the store it
/// is set on belongs to the hub.
pub struct BatchDispatch(pub(crate) Weak<crate::Shared>);

impl Dispatcher for BatchDispatch {
    fn plan(&self, ready: Millis) -> Option<ClaimPlan> {
        Hub { shared: self.0.upgrade()? }.claim_plan(ready)
    }

    fn claimed(&self, claims: Vec<(AgentName, Vec<Task>)>) {
        let Some(shared) = self.0.upgrade() else { return };
        let hub = Hub { shared };
        for (agent, tasks) in &claims {
            hub.send_assignments(agent, tasks);
        }
    }

    fn missed(&self) {
        if let Some(shared) = self.0.upgrade() {
            Hub { shared }.wake_dispatcher();
        }
    }
}

/// Runs `job` every `interval(settings)`, counting from `age` (how long ago
/// it last ran, if known) so a restart does not reset the schedule. With no
/// record of a run, the first comes soon after start rather than a whole
/// interval later: a hub restarted daily would otherwise never run a daily
/// job. A change of the interval applies at once; zero turns the job off.
/// A failed run is tried again after a minute, then after twice as long
/// each time it fails again, never later than the interval itself.
pub async fn on_schedule<A, AgeFut, J, JobFut>(hub: Hub, interval: fn(&crate::Runtime) -> Duration, age: A, job: J)
where
    A: Fn(Hub) -> AgeFut,
    AgeFut: std::future::Future<Output = Option<Duration>>,
    J: Fn(Hub) -> JobFut,
    JobFut: std::future::Future<Output = bool>,
{
    let mut stopping = hub.shared.stopping.subscribe();
    let mut settings = hub.shared.runtime.subscribe();
    let soon = Duration::from_secs(600);
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut failures: u32 = 0;
    loop {
        let every = interval(&settings.borrow_and_update());
        let wait = match (every.is_zero(), retry_at) {
            (true, _) => None,
            (false, Some(at)) => Some(at.saturating_duration_since(tokio::time::Instant::now())),
            (false, None) => Some(match age(hub.clone()).await {
                Some(age) => every.saturating_sub(age),
                None => every.min(soon),
            }),
        };
        tokio::select! {
            _ = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            } => {}
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = async { drop(stopping.wait_for(|s| *s).await) } => return,
        }
        if hub.shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if job(hub.clone()).await {
            (retry_at, failures) = (None, 0);
        } else {
            let backoff = Duration::from_secs(60).saturating_mul(1 << failures.min(16));
            failures = failures.saturating_add(1);
            retry_at = Some(tokio::time::Instant::now() + backoff.min(every));
        }
    }
}
