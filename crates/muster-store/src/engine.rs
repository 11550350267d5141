//! The `Store` of both backends, once: each operation is a function of
//! `ops` run by the backend's [`Engine`] as a change (in a transaction that
//! commits before the answer) or as a read.

use crate::ops;
use crate::sql::Connection;
use crate::{Acquire, DecisionRecord, LockMode, LockRecord, LockWait, NewDecision, NewPipeline, PipelineRecord};
use crate::{
    AgentFlags, AgentRecord, Announce, AppendOutput, AttemptRecord, CostGroup, CostRow, Created, DisabledRunner, Event,
    EventFilter, FinishResult, Heartbeat, Limits, NewAgent, NewEvent, NewStep, NewToken, OutputChunk, OutputFilter,
    OutputRecord, Page, Result, RunDetails, StepRecord, Store, TaskFilter, TaskOp, TokenRecord,
};
use crate::{ChannelRecord, MessageRecord, Recipient};
use crate::{ConflictRecord, NewConflict, RegressionRecord};
use crate::{Duty, Fence, HubInfo, HubRecord};
use crate::{Firing, NewSchedule, ScheduleRecord};
use async_trait::async_trait;
use muster_core::backoff::Retry;
use muster_core::breaker::{Breaker, Policy, Scope as BreakerScope};
use muster_core::task::{Cancel, Reclaimed};
use muster_core::{
    AgentName, Epoch, Millis, Outcome, RunOutcome, RunnerName, Task, TaskId, TaskSpec, TaskState, TokenId,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the hub sets on a store and the backend's threads read; opaque
/// outside the crate.
#[derive(Default)]
pub struct Hooks {
    /// When circuit breakers open, as the hub last set it.
    pub(crate) breaker_policy: Mutex<Policy>,
    /// Whom to claim for at the end of a batch, and where claims go.
    pub(crate) claims: Mutex<Option<Arc<InBatch>>>,
    /// The hub on this store, once started: agents that connect are its.
    pub(crate) hub: Mutex<Option<String>>,
    /// The duties the hub holds (see `Store::hold_duties`).
    pub(crate) fences: Mutex<Option<Vec<crate::Fence>>>,
}

/// The in-batch dispatch the hub asked for, with the turn of its rotation.
pub(crate) struct InBatch {
    pub(crate) claims: crate::BatchClaims,
    /// Each pass starts with the next agent, so none is always served first.
    pub(crate) turn: std::sync::atomic::AtomicUsize,
}

impl InBatch {
    /// The agents to claim for now, in this pass's order, and the accept
    /// deadline; `None` when nothing may be handed out (no roster, or the
    /// first queued task not due yet).
    pub(crate) fn plan(&self, ready: Millis) -> Option<(Vec<AgentName>, Millis, Duration)> {
        let now = self.claims.clock.now();
        if ready > now {
            return None;
        }
        let roster = self.claims.roster.borrow().clone()?;
        let mut agents = roster.agents;
        if agents.is_empty() {
            return None;
        }
        let start = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % agents.len();
        agents.rotate_left(start);
        Some((agents, now, roster.accept_within))
    }
}

impl Hooks {
    pub(crate) fn policy(&self) -> Policy {
        *self.breaker_policy.lock().expect("breaker policy lock poisoned")
    }

    pub(crate) fn in_batch(&self) -> Option<Arc<InBatch>> {
        self.claims.lock().expect("claims lock poisoned").clone()
    }
}

impl Hooks {
    pub(crate) fn set_policy(&self, policy: Policy) {
        *self.breaker_policy.lock().expect("breaker policy lock poisoned") = policy;
    }

    pub(crate) fn hub(&self) -> Option<String> {
        self.hub.lock().expect("hub lock poisoned").clone()
    }

    /// The fence for acting as `duty`: `None` when duties are not fenced;
    /// refused when they are and this hub does not hold it.
    pub(crate) fn fence(&self, duty: crate::Duty) -> Result<Option<crate::Fence>> {
        let fences = self.fences.lock().expect("fences lock poisoned");
        let Some(held) = fences.as_ref() else { return Ok(None) };
        match held.iter().find(|f| f.duty == duty) {
            Some(f) => Ok(Some(f.clone())),
            None => Err(crate::StoreError::Conflict(format!(
                "this hub does not lead {}; the hub that leads it acts",
                duty.as_str()
            ))),
        }
    }

    pub(crate) fn hand_out(&self, claims: crate::BatchClaims) {
        let in_batch = InBatch { claims, turn: std::sync::atomic::AtomicUsize::new(0) };
        *self.claims.lock().expect("claims lock poisoned") = Some(Arc::new(in_batch));
    }
}

/// What a backend provides: somewhere to run changes and reads, and the
/// few things that are its own.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Runs `f` as one change; resolves once it is committed. `f` may run
    /// more than once (a batch redone, a transaction retried after a
    /// conflict): it must take what it needs by reference or by clone, and
    /// leave nothing behind but its writes.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&Connection<'_>) -> Result<R> + Send + 'static;

    /// `write`, for a small change that must not wait behind the others: a
    /// hub's beat and its duty leases, which the other hubs judge it alive
    /// by. Where changes queue (PostgreSQL), it has a session of its own.
    async fn write_apart<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&Connection<'_>) -> Result<R> + Send + 'static,
    {
        self.write(f).await
    }

    /// Runs `f` on a connection that sees every committed change.
    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection<'_>) -> Result<R> + Send + 'static;

    fn limits(&self) -> Limits;
    /// What the hub set on the store: breaker policy, roster, duties.
    fn hooks(&self) -> &Hooks;
    /// See [`Store::subscribe`].
    fn last_event(&self) -> watch::Receiver<i64>;
    /// See [`Store::close`].
    async fn shut_down(&self);
    fn upkeep(&self) -> &dyn crate::Maintenance;
}

#[async_trait]
impl<E: Engine> Store for E {
    async fn hub_started(&self, hub: &HubInfo, now: Millis, grace: Duration) -> Result<()> {
        *self.hooks().hub.lock().expect("hub lock poisoned") = Some(hub.id.clone());
        let hub = hub.clone();
        self.write(move |c| ops::hub_started(c, &hub, now, grace)).await
    }

    async fn hub_beat(&self, id: &str, now: Millis) -> Result<bool> {
        let id = id.to_owned();
        self.write_apart(move |c| ops::hub_beat(c, &id, now)).await
    }

    async fn hub_stopped(&self, id: &str, now: Millis) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| ops::hub_stopped(c, &id, now)).await
    }

    async fn hubs(&self, now: Millis) -> Result<Vec<HubRecord>> {
        self.read(move |c| ops::hubs(c, now)).await
    }

    async fn reap_hubs(&self, now: Millis) -> Result<Vec<HubRecord>> {
        let fence = self.hooks().fence(Duty::Reaper)?;
        self.write(move |c| {
            ops::check_fence(c, fence.as_ref(), now)?;
            ops::reap_hubs(c, now)
        })
        .await
    }

    async fn relay(&self, to: crate::RelayTo, body: String, now: Millis) -> Result<usize> {
        let Some(from) = self.hooks().hub() else { return Ok(0) };
        self.write(move |c| ops::relay(c, &from, &to, &body, now)).await
    }

    async fn take_relays(&self) -> Result<Vec<String>> {
        let Some(hub) = self.hooks().hub() else { return Ok(Vec::new()) };
        self.write(move |c| ops::take_relays(c, &hub)).await
    }

    async fn take_duty(&self, duty: Duty, hub: &str, ttl: Duration, now: Millis) -> Result<Option<Fence>> {
        let hub = hub.to_owned();
        self.write_apart(move |c| ops::take_duty(c, duty, &hub, ttl, now)).await
    }

    async fn duties(&self) -> Result<Vec<Fence>> {
        self.read(ops::duties).await
    }

    fn hold_duties(&self, held: Option<Vec<Fence>>) {
        *self.hooks().fences.lock().expect("fences lock poisoned") = held;
    }

    async fn close(&self) {
        self.shut_down().await
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn probe_write(&self, now: Millis) -> Result<()> {
        self.write(move |c| {
            c.prepare_cached("UPDATE probe SET at = ? WHERE id = 1")?.execute([now.0])?;
            Ok(())
        })
        .await
    }

    async fn check(&self, repair: bool, now: Millis) -> Result<crate::CheckReport> {
        if repair {
            self.write(move |c| ops::check(c, true, now)).await
        } else {
            self.read(move |c| ops::check(c, false, now)).await
        }
    }

    fn maintenance(&self) -> &dyn crate::Maintenance {
        self.upkeep()
    }

    async fn create_token(&self, token: NewToken, now: Millis) -> Result<TokenRecord> {
        self.write(move |c| ops::create_token(c, &token, now)).await
    }

    async fn start_session(&self, key: String, token: TokenId, expires: Millis, now: Millis) -> Result<()> {
        self.write(move |c| ops::start_session(c, &key, &token, expires, now)).await
    }

    async fn session(&self, key: String, now: Millis) -> Result<Option<(TokenId, Millis)>> {
        self.read(move |c| ops::session(c, &key, now)).await
    }

    async fn renew_session(&self, key: String, expires: Millis) -> Result<()> {
        self.write(move |c| ops::renew_session(c, &key, expires)).await
    }

    async fn end_session(&self, key: String) -> Result<()> {
        self.write(move |c| ops::end_session(c, &key)).await
    }

    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>> {
        let id = id.clone();
        self.read(move |c| ops::token(c, &id)).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(ops::list_tokens).await
    }

    async fn revoke_token(&self, id: &TokenId, now: Millis) -> Result<TokenRecord> {
        let id = id.clone();
        self.write(move |c| ops::revoke_token(c, &id, now)).await
    }

    async fn touch_token(&self, id: &TokenId, now: Millis) -> Result<()> {
        let id = id.clone();
        self.write(move |c| ops::touch_token(c, &id, now)).await
    }

    async fn register_agent(&self, agent: NewAgent, token: NewToken, now: Millis) -> Result<AgentRecord> {
        self.write(move |c| ops::register_agent(c, &agent, &token, now)).await
    }

    async fn replace_agent_token(&self, name: &AgentName, token: NewToken, now: Millis) -> Result<AgentRecord> {
        let name = name.clone();
        self.write(move |c| ops::replace_agent_token(c, &name, &token, now)).await
    }

    async fn remove_agent(&self, name: &AgentName, force: bool, by: &str, now: Millis) -> Result<Vec<Task>> {
        let (name, by) = (name.clone(), by.to_owned());
        self.write(move |c| ops::remove_agent(c, &name, force, &by, now)).await
    }

    async fn agent(&self, name: &AgentName) -> Result<Option<AgentRecord>> {
        let name = name.clone();
        self.read(move |c| ops::agent(c, &name)).await
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        self.read(ops::list_agents).await
    }

    async fn agent_connected(&self, name: &AgentName, hello: Announce, now: Millis) -> Result<(AgentRecord, u64)> {
        let (name, hub) = (name.clone(), self.hooks().hub());
        self.write(move |c| ops::agent_connected(c, &name, &hello, hub.as_deref(), now)).await
    }

    async fn agent_disconnected(&self, name: &AgentName, session: u64, reason: &str, now: Millis) -> Result<()> {
        let (name, reason) = (name.clone(), reason.to_owned());
        self.write(move |c| ops::agent_disconnected(c, &name, session, &reason, now)).await
    }

    async fn set_agent_flags(&self, name: &AgentName, flags: AgentFlags, now: Millis) -> Result<AgentRecord> {
        let name = name.clone();
        self.write(move |c| ops::set_agent_flags(c, &name, flags, now)).await
    }

    async fn heartbeat(
        &self,
        name: &AgentName,
        runs: &[(TaskId, Epoch)],
        now: Millis,
        ttl: Duration,
    ) -> Result<Heartbeat> {
        let (name, runs) = (name.clone(), runs.to_vec());
        self.write(move |c| ops::heartbeat(c, &name, &runs, now, ttl)).await
    }

    async fn create_task(&self, id: TaskId, spec: TaskSpec, now: Millis) -> Result<Created> {
        self.write(move |c| ops::create_task(c, id.clone(), spec.clone(), now)).await
    }

    async fn create_tasks(&self, tasks: Vec<(TaskId, TaskSpec)>, now: Millis) -> Result<Vec<Created>> {
        self.write(move |c| ops::create_tasks(c, tasks.clone(), now)).await
    }

    async fn task(&self, id: &TaskId) -> Result<Option<Task>> {
        let id = id.clone();
        self.read(move |c| ops::find_task(c, &id)).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Page<Task>> {
        let filter = filter.clone();
        self.read(move |c| ops::list_tasks(c, &filter)).await
    }

    async fn count_tasks(&self) -> Result<Vec<(TaskState, u64)>> {
        self.read(ops::count_tasks).await
    }

    async fn count_tasks_by_priority(&self) -> Result<Vec<(TaskState, muster_core::Priority, u64)>> {
        self.read(ops::count_tasks_by_priority).await
    }

    async fn outcomes_since(&self, since: Millis) -> Result<Vec<(Outcome, u64)>> {
        self.read(move |c| ops::outcomes_since(c, since)).await
    }

    async fn cancel_task(&self, id: &TaskId, now: Millis) -> Result<(Task, Cancel)> {
        let id = id.clone();
        self.write(move |c| ops::cancel_task(c, &id, now)).await
    }

    async fn retry_task(&self, id: &TaskId, now: Millis) -> Result<Task> {
        let id = id.clone();
        self.write(move |c| ops::retry_task(c, &id, now)).await
    }

    async fn operate_task(&self, id: &TaskId, op: TaskOp, by: &str, now: Millis) -> Result<Task> {
        let (id, by) = (id.clone(), by.to_owned());
        self.write(move |c| ops::operate_task(c, &id, &op, &by, now)).await
    }

    async fn claim_tasks(&self, agent: &AgentName, now: Millis, accept_within: Duration) -> Result<Vec<Task>> {
        let agent = agent.clone();
        let policy = self.hooks().policy();
        self.write(move |c| ops::claim_tasks(c, &agent, now, accept_within, policy)).await
    }

    async fn claim_for_agents(
        &self,
        agents: &[AgentName],
        now: Millis,
        accept_within: Duration,
    ) -> Result<Vec<Result<Vec<Task>>>> {
        let agents = agents.to_vec();
        let policy = self.hooks().policy();
        self.write(move |c| ops::claim_for_agents(c, &agents, now, accept_within, policy, true)).await
    }

    async fn start_task(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        now: Millis,
        ttl: Duration,
    ) -> Result<Task> {
        let (agent, id) = (agent.clone(), id.clone());
        self.write(move |c| ops::start_task(c, &agent, &id, epoch, now, ttl)).await
    }

    async fn release_task(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        reason: &str,
        now: Millis,
        retry_after: Duration,
    ) -> Result<Task> {
        let (agent, id, reason) = (agent.clone(), id.clone(), reason.to_owned());
        self.write(move |c| ops::release_task(c, &agent, &id, epoch, &reason, now, retry_after)).await
    }

    async fn finish_task(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        outcome: &RunOutcome,
        details: RunDetails,
        now: Millis,
        retry: Retry,
    ) -> Result<(Task, FinishResult)> {
        let (agent, id, outcome) = (agent.clone(), id.clone(), outcome.clone());
        let policy = self.hooks().policy();
        self.write(move |c| ops::finish_task(c, &agent, &id, epoch, &outcome, &details, now, retry, policy)).await
    }

    async fn reclaim_expired(&self, now: Millis, limit: usize) -> Result<Vec<(Task, Reclaimed)>> {
        let (policy, fence) = (self.hooks().policy(), self.hooks().fence(Duty::Reaper)?);
        self.write(move |c| {
            ops::check_fence(c, fence.as_ref(), now)?;
            ops::reclaim_expired(c, now, limit, policy)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<Millis>> {
        self.read(ops::next_due).await
    }

    async fn next_lease_expiry(&self) -> Result<Option<Millis>> {
        self.read(ops::next_lease_expiry).await
    }

    async fn next_ready(&self) -> Result<Option<Millis>> {
        self.read(ops::next_ready).await
    }

    async fn append_output(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        chunks: Vec<OutputChunk>,
        now: Millis,
    ) -> Result<AppendOutput> {
        let (agent, id) = (agent.clone(), id.clone());
        let cap = self.limits().max_output_bytes_per_attempt;
        self.write(move |c| ops::append_output(c, &agent, &id, epoch, &chunks, now, cap)).await
    }

    async fn mark_output_truncated(&self, agent: &AgentName, id: &TaskId, epoch: Epoch, now: Millis) -> Result<()> {
        let (agent, id) = (agent.clone(), id.clone());
        self.write(move |c| ops::mark_output_truncated(c, &agent, &id, epoch, now)).await
    }

    async fn read_output(&self, id: &TaskId, filter: &OutputFilter) -> Result<Vec<OutputRecord>> {
        let (id, filter) = (id.clone(), filter.clone());
        self.read(move |c| ops::read_output(c, &id, &filter)).await
    }

    async fn attempts(&self, id: &TaskId) -> Result<Vec<AttemptRecord>> {
        let id = id.clone();
        self.read(move |c| ops::attempts(c, &id)).await
    }

    async fn disable_runner(&self, name: &RunnerName, reason: &str, by: &str, now: Millis) -> Result<()> {
        let (name, reason, by) = (name.clone(), reason.to_owned(), by.to_owned());
        self.write(move |c| ops::disable_runner(c, &name, &reason, &by, now)).await
    }

    async fn limit_task(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        reason: &str,
        until: Millis,
        details: RunDetails,
        now: Millis,
    ) -> Result<(Task, FinishResult)> {
        let (agent, id, reason) = (agent.clone(), id.clone(), reason.to_owned());
        self.write(move |c| ops::limit_task(c, &agent, &id, epoch, &reason, until, &details, now)).await
    }

    async fn limit_runner(&self, name: &RunnerName, reason: &str, by: &str, until: Millis, now: Millis) -> Result<()> {
        let (name, reason, by) = (name.clone(), reason.to_owned(), by.to_owned());
        self.write(move |c| ops::limit_runner(c, &name, &reason, &by, until, now)).await
    }

    async fn enable_runner(&self, name: &RunnerName, by: &str, now: Millis) -> Result<()> {
        let (name, by) = (name.clone(), by.to_owned());
        self.write(move |c| ops::enable_runner(c, &name, &by, now)).await
    }

    async fn disabled_runners(&self) -> Result<Vec<DisabledRunner>> {
        self.read(ops::disabled_runners).await
    }

    async fn acquire_lock(
        &self,
        name: &str,
        task: &TaskId,
        epoch: Epoch,
        mode: LockMode,
        try_only: bool,
        now: Millis,
    ) -> Result<Acquire> {
        let (name, task) = (name.to_owned(), task.clone());
        self.write(move |c| ops::acquire_lock(c, &name, &task, epoch, mode, try_only, now)).await
    }

    async fn release_lock(&self, name: &str, task: Option<&TaskId>, by: &str, now: Millis) -> Result<u64> {
        let (name, task, by) = (name.to_owned(), task.cloned(), by.to_owned());
        self.write(move |c| ops::release_lock(c, &name, task.as_ref(), &by, now)).await
    }

    async fn clear_lock_waits(&self) -> Result<u64> {
        self.write(|c| Ok(c.execute("DELETE FROM lock_waits", [])? as u64)).await
    }

    async fn stop_waiting(&self, name: &str, task: &TaskId) -> Result<()> {
        let (name, task) = (name.to_owned(), task.clone());
        self.write(move |c| ops::stop_waiting(c, &name, &task)).await
    }

    async fn release_all_locks(&self, by: &str, now: Millis) -> Result<u64> {
        let by = by.to_owned();
        self.write(move |c| ops::release_all_locks(c, &by, now)).await
    }

    async fn locks(&self) -> Result<Vec<LockRecord>> {
        self.read(ops::locks).await
    }

    async fn lock_waits(&self) -> Result<Vec<LockWait>> {
        self.read(ops::lock_waits).await
    }

    async fn open_decision(&self, new: NewDecision, now: Millis) -> Result<(DecisionRecord, Task)> {
        self.write(move |c| ops::open_decision(c, new.clone(), now)).await
    }

    async fn answer_decision(
        &self,
        id: i64,
        option: &str,
        note: Option<String>,
        by: &str,
        now: Millis,
    ) -> Result<(DecisionRecord, Task)> {
        let (option, by) = (option.to_owned(), by.to_owned());
        self.write(move |c| ops::answer_decision(c, id, &option, note.clone(), &by, now)).await
    }

    async fn expire_decisions(&self, now: Millis, limit: usize) -> Result<Vec<(DecisionRecord, Task)>> {
        let fence = self.hooks().fence(Duty::Deadlines)?;
        self.write(move |c| {
            ops::check_fence(c, fence.as_ref(), now)?;
            ops::expire_decisions(c, now, limit)
        })
        .await
    }

    async fn decision(&self, id: i64) -> Result<Option<DecisionRecord>> {
        self.read(move |c| ops::decision(c, id)).await
    }

    async fn decisions(&self, open_only: bool, task: Option<&TaskId>, limit: usize) -> Result<Vec<DecisionRecord>> {
        let task = task.cloned();
        self.read(move |c| ops::decisions(c, open_only, task.as_ref(), limit)).await
    }

    async fn next_decision_deadline(&self) -> Result<Option<Millis>> {
        self.read(ops::next_decision_deadline).await
    }

    async fn create_pipeline(&self, p: NewPipeline, now: Millis) -> Result<PipelineRecord> {
        self.write(move |c| ops::create_pipeline(c, p.clone(), now)).await
    }

    async fn pipeline(&self, id: i64) -> Result<Option<PipelineRecord>> {
        self.read(move |c| ops::pipeline(c, id)).await
    }

    async fn pipelines(&self, limit: usize) -> Result<Vec<PipelineRecord>> {
        self.read(move |c| ops::pipelines(c, limit)).await
    }

    async fn report_files(
        &self,
        agent: &AgentName,
        task: &TaskId,
        epoch: Epoch,
        files: Vec<String>,
        now: Millis,
    ) -> Result<Vec<NewConflict>> {
        let (agent, task) = (agent.clone(), task.clone());
        self.write(move |c| ops::report_files(c, &agent, &task, epoch, &files, now)).await
    }

    async fn conflicts(&self, open_only: bool, limit: usize) -> Result<Vec<ConflictRecord>> {
        self.read(move |c| ops::conflicts(c, open_only, limit)).await
    }

    async fn regressions(&self, limit: usize) -> Result<Vec<RegressionRecord>> {
        self.read(move |c| ops::regressions(c, limit)).await
    }

    async fn add_schedule(&self, new: NewSchedule, now: Millis) -> Result<ScheduleRecord> {
        self.write(move |c| ops::add_schedule(c, new.clone(), now)).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.read(ops::schedules).await
    }

    async fn schedule(&self, key: &str) -> Result<Option<ScheduleRecord>> {
        let key = key.to_owned();
        self.read(move |c| ops::schedule(c, &key)).await
    }

    async fn set_schedule_paused(
        &self,
        key: &str,
        paused: bool,
        next_at: Option<Millis>,
        by: &str,
        now: Millis,
    ) -> Result<ScheduleRecord> {
        let (key, by) = (key.to_owned(), by.to_owned());
        self.write(move |c| ops::set_schedule_paused(c, &key, paused, next_at, &by, now)).await
    }

    async fn delete_schedule(&self, key: &str, by: &str, now: Millis) -> Result<ScheduleRecord> {
        let (key, by) = (key.to_owned(), by.to_owned());
        self.write(move |c| ops::delete_schedule(c, &key, &by, now)).await
    }

    async fn due_schedules(&self, now: Millis) -> Result<Vec<ScheduleRecord>> {
        self.read(move |c| ops::due_schedules(c, now)).await
    }

    async fn next_schedule_at(&self) -> Result<Option<Millis>> {
        self.read(ops::next_schedule_at).await
    }

    async fn fire_schedule(&self, f: Firing, now: Millis) -> Result<Option<Option<Task>>> {
        let fence = self.hooks().fence(Duty::Schedules)?;
        self.write(move |c| {
            ops::check_fence(c, fence.as_ref(), now)?;
            ops::fire_schedule(c, f.clone(), now)
        })
        .await
    }

    async fn create_channel(&self, name: &str, description: &str, by: &str, now: Millis) -> Result<ChannelRecord> {
        let (name, description, by) = (name.to_owned(), description.to_owned(), by.to_owned());
        self.write(move |c| ops::create_channel(c, &name, &description, &by, now)).await
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>> {
        self.read(ops::channels).await
    }

    async fn send_message(
        &self,
        to: &Recipient,
        sender: &str,
        body: &str,
        reply_to: Option<i64>,
        now: Millis,
    ) -> Result<MessageRecord> {
        let (to, sender, body) = (to.clone(), sender.to_owned(), body.to_owned());
        self.write(move |c| ops::send_message(c, &to, &sender, &body, reply_to, now)).await
    }

    async fn messages(
        &self,
        to: &Recipient,
        thread: Option<i64>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        let to = to.clone();
        self.read(move |c| ops::messages(c, &to, thread, after, limit)).await
    }

    async fn undelivered(&self, agent: &AgentName) -> Result<Vec<MessageRecord>> {
        let agent = agent.clone();
        self.read(move |c| ops::undelivered(c, &agent)).await
    }

    async fn mark_delivered(&self, agent: &AgentName, ids: Vec<i64>, now: Millis) -> Result<u64> {
        let agent = agent.clone();
        self.write(move |c| ops::mark_delivered(c, &agent, &ids, now)).await
    }

    async fn mark_read(&self, task: &TaskId, ids: Vec<i64>, now: Millis) -> Result<()> {
        let task = task.clone();
        self.write(move |c| ops::mark_read(c, &task, &ids, now)).await
    }

    async fn create_followup(
        &self,
        parent: &TaskId,
        epoch: Epoch,
        id: TaskId,
        spec: TaskSpec,
        per_tree: u64,
        now: Millis,
    ) -> Result<crate::Followup> {
        let parent = parent.clone();
        self.write(move |c| ops::create_followup(c, &parent, epoch, id.clone(), spec.clone(), per_tree, now)).await
    }

    fn set_breaker_policy(&self, policy: Policy) {
        self.hooks().set_policy(policy)
    }

    fn claim_in_batches(&self, claims: crate::BatchClaims) {
        self.hooks().hand_out(claims)
    }

    async fn breakers(&self) -> Result<Vec<Breaker>> {
        self.read(ops::breakers).await
    }

    async fn reset_breaker(&self, scope: BreakerScope, name: &str, by: &str, now: Millis) -> Result<Breaker> {
        let (name, by) = (name.to_owned(), by.to_owned());
        self.write(move |c| ops::reset_breaker(c, scope, &name, &by, now)).await
    }

    async fn attempt_diff(&self, id: &TaskId, number: u32) -> Result<Option<(String, bool)>> {
        let id = id.clone();
        self.read(move |c| ops::attempt_diff(c, &id, number)).await
    }

    async fn append_steps(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        steps: Vec<NewStep>,
        now: Millis,
    ) -> Result<()> {
        let (agent, id) = (agent.clone(), id.clone());
        self.write(move |c| ops::append_steps(c, &agent, &id, epoch, steps.clone(), now)).await
    }

    async fn set_live(
        &self,
        agent: &AgentName,
        id: &TaskId,
        epoch: Epoch,
        status: muster_core::Live,
        detail: Option<&str>,
        now: Millis,
    ) -> Result<()> {
        let (agent, id, detail) = (agent.clone(), id.clone(), detail.map(str::to_owned));
        self.write(move |c| ops::set_live(c, &agent, &id, epoch, status, detail.as_deref(), now)).await
    }

    async fn shadow_pairs(&self, limit: usize) -> Result<Vec<(TaskId, TaskId)>> {
        self.read(move |c| ops::shadow_pairs(c, limit)).await
    }

    async fn costs(&self, by: CostGroup, since: Millis) -> Result<(Vec<CostRow>, CostRow)> {
        self.read(move |c| ops::costs(c, by, since)).await
    }

    async fn steps(&self, id: &TaskId, attempt: Option<u32>) -> Result<Vec<StepRecord>> {
        let id = id.clone();
        self.read(move |c| ops::steps(c, &id, attempt)).await
    }

    async fn alerts(&self) -> Result<Vec<crate::AlertRecord>> {
        self.read(ops::alerts).await
    }

    async fn save_alert(&self, alert: crate::AlertRecord, event: Option<&'static str>, now: Millis) -> Result<()> {
        let fence = self.hooks().fence(Duty::Alerts)?;
        self.write(move |c| {
            ops::check_fence(c, fence.as_ref(), now)?;
            ops::save_alert(c, &alert, event, now)
        })
        .await
    }

    async fn acknowledge_alert(
        &self,
        rule: muster_core::alert::Rule,
        by: &str,
        now: Millis,
    ) -> Result<crate::AlertRecord> {
        let by = by.to_owned();
        self.write(move |c| ops::acknowledge_alert(c, rule, &by, now)).await
    }

    async fn settings(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let prefix = prefix.to_owned();
        self.read(move |c| ops::settings(c, &prefix)).await
    }

    async fn setting_or_insert(&self, key: &str, value: String, now: Millis) -> Result<String> {
        let key = key.to_owned();
        self.write(move |c| ops::setting_or_insert(c, &key, &value, now)).await
    }

    async fn put_settings(&self, pairs: Vec<(String, Option<String>)>, by: &str, now: Millis) -> Result<()> {
        let by = by.to_owned();
        self.write(move |c| ops::put_settings(c, &pairs, &by, now)).await
    }

    async fn slo_counts(&self, kind: crate::SloKind, since: Millis, threshold: Duration) -> Result<(u64, u64)> {
        let threshold = threshold.as_millis() as i64;
        self.read(move |c| ops::slo_counts(c, kind, since, threshold)).await
    }

    async fn count_quiet_running(&self, quiet_since: Millis) -> Result<u64> {
        self.read(move |c| ops::count_quiet_running(c, quiet_since)).await
    }

    async fn record_event(&self, event: NewEvent, now: Millis) -> Result<()> {
        self.write(move |c| ops::insert_event(c, now, &event)).await
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let filter = filter.clone();
        self.read(move |c| ops::events(c, &filter)).await
    }

    fn subscribe(&self) -> watch::Receiver<i64> {
        self.last_event()
    }
}
