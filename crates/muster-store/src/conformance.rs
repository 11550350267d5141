//! The conformance suite: the story every `Store` backend must tell the same way.
//!
//! Each case is a `pub async fn` that takes a fresh, empty store opened with
//! `Limits::default()` and panics, naming what broke, when the backend strays
//! from the story. Time is injected: every case passes explicit `Millis`, so
//! leases, backoff and reclaim are driven step by step and nothing sleeps.
//! Cases use only the `Store` trait, so a new backend runs them unchanged:
//!
//! ```text
//! async fn fresh() -> (Arc<dyn Store>, TempDir) { /* an empty store and what must outlive it */ }
//! muster_store::conformance_tests!(fresh);
//! ```
//!
//! The macro expands to one `#[tokio::test]` per case, so the crate using it
//! needs `tokio` with its `macros` and `rt` features. `fresh` returns the
//! store and a guard (a temporary directory, a scratch database) kept alive
//! until the case ends. `CASES` lists the same cases for runners that drive
//! them some other way; both come from the one list in `cases!` below, so a
//! case added there runs everywhere.

use crate::{
    AgentFlags, AgentRecord, Announce, AppendOutput, AttemptRecord, CostGroup, CostRow, Event, EventFilter,
    FinishResult, Followup, Limits, MAX_STEPS, NewAgent, NewEvent, NewStep, NewToken, OutputChunk, OutputFilter,
    OutputRecord, Result, RunDetails, RunReport, Scope, StepKind, Store, StoreError, Stream, TaskFilter, TokenRecord,
    Tokens, WorkspaceRecord,
};
use muster_core::backoff::Retry;
use muster_core::task::{Cancel, Finished, MAX_PROMPT_BYTES, Reclaimed};
use muster_core::{
    AgentName, AgentState, AgentStatus, Capability, Epoch, Invalid, Live, MicroUsd, Millis, Outcome, Priority, Refused,
    RunOutcome, RunnerName, Task, TaskId, TaskSpec, TaskState, TokenId,
};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// One case: give it a fresh store; it panics if the store strays.
pub type Case = fn(Arc<dyn Store>) -> CaseFuture;

/// Defines `CASES` and `conformance_tests!` from one list of case names.
/// `$d` is a literal `$`, so the inner macro can have metavariables of its own.
macro_rules! cases {
    ($d:tt $($name:ident),* $(,)?) => {
        /// Every case, by name.
        pub const CASES: &[(&str, Case)] = &[$((stringify!($name), |store| Box::pin($name(store)))),*];

        /// Expands to one `#[tokio::test]` per conformance case. The argument
        /// is called with no arguments and must return a future of
        /// `(Arc<dyn Store>, guard)`: a fresh, empty store opened with
        /// `Limits::default()`, and whatever must outlive it.
        #[macro_export]
        macro_rules! conformance_tests {
            ($d fresh:expr) => {
                $(
                    #[tokio::test]
                    async fn $name() {
                        let (store, _guard) = ($d fresh)().await;
                        $d crate::conformance::$name(::std::sync::Arc::clone(&store)).await;
                        $d crate::Store::close(&*store).await;
                    }
                )*
            };
        }
    };
}

cases!($
    fresh_store_is_empty,
    a_probe_write_commits_and_changes_nothing_else,
    tokens_are_created_listed_and_revoked,
    touch_token_records_use_at_most_once_a_minute,
    register_agent_refuses_a_taken_name,
    replace_agent_token_revokes_the_old_token,
    removing_an_agent_revokes_its_token_and_keeps_its_history,
    agent_sessions_ignore_a_stale_disconnect,
    agent_flags_pause_and_drain,
    heartbeat_renews_running_leases_and_reports_stale_runs,
    heartbeat_from_the_holder_starts_an_assignment_whose_accept_was_lost,
    heartbeat_carries_pending_cancels_and_spares_unacknowledged_outcomes,
    create_task_stores_the_validated_spec,
    idempotency_key_returns_the_same_task,
    invalid_spec_is_refused_naming_the_field,
    claim_honours_priority_then_age,
    claim_routes_by_capability,
    claim_matches_the_runner,
    claim_fills_only_free_slots,
    claim_skips_agents_that_take_no_work,
    claim_waits_for_ready_at,
    a_dispatcher_claims_in_the_batch_that_made_the_work_claimable,
    start_with_a_stale_epoch_is_refused,
    release_returns_an_assignment_to_the_queue,
    finish_success_ends_the_task,
    follow_ups_are_budgeted_per_task_tree,
    finish_failure_with_attempts_left_schedules_a_retry,
    finish_failure_without_attempts_dead_letters_then_retry_revives,
    retry_of_a_task_that_has_not_failed_is_refused,
    operators_skip_reset_and_move_tasks_with_who_on_the_timeline,
    a_task_pending_approval_waits_for_a_person_who_is_named_on_the_timeline,
    dependencies_unblock_on_success_and_a_failure_fails_or_skips_down_the_chain,
    locks_are_shared_or_exclusive_and_go_with_the_run,
    a_wait_that_closes_a_cycle_is_refused_as_a_deadlock,
    an_operators_decision_holds_a_queued_task_until_a_person_answers,
    a_run_that_asks_and_stops_gives_its_slot_and_attempt_back_until_the_answer,
    an_unanswered_decision_takes_its_default_or_fails_the_task,
    a_conflict_pauses_the_lower_priority_run_and_ends_with_either_task,
    duplicate_finish_is_answered_and_changes_nothing,
    finish_with_a_stale_epoch_is_refused,
    cancel_queued_is_immediate,
    cancel_assigned_notifies_the_holder,
    cancel_running_is_requested_then_finished,
    reclaim_requeues_an_expired_running_task,
    reclaim_requeues_an_unaccepted_assignment_without_using_an_attempt,
    reclaim_fails_or_cancels_when_nothing_is_left,
    reclaim_honours_its_limit,
    hub_started_disconnects_agents_and_extends_leases,
    a_reconnecting_agent_gives_back_at_once_what_it_does_not_hold,
    concurrent_claims_reports_and_reclaims_keep_every_invariant,
    append_output_stops_at_the_cap,
    steps_are_kept_in_order_up_to_the_limit_with_the_latest_live,
    append_steps_and_set_live_with_a_stale_epoch_are_refused,
    finish_keeps_the_agents_report_of_the_run,
    an_attempt_missing_output_its_agent_sent_says_its_output_is_incomplete,
    costs_are_summed_by_task_agent_runner_and_day,
    breakers_open_on_failures_let_one_probe_through_after_the_cooldown_and_close_on_its_success,
    a_lost_probe_is_replaced_and_an_operator_can_reset_a_breaker,
    a_disabled_runner_gets_no_work_and_tasks_with_fallbacks_use_them,
    tasks_fall_back_while_their_runner_waits_for_a_probe_and_a_lost_agent_does_not_open_its_runner,
    a_provider_limit_requeues_without_an_attempt_and_pauses_the_runner_until_the_reset,
    append_output_with_a_stale_epoch_is_refused,
    mark_output_truncated_flags_only_the_holders_attempt,
    read_output_filters_by_attempt_and_after,
    events_filter_by_task_agent_and_after,
    record_event_appends_what_it_is_given,
    subscribe_advances_after_a_write,
    list_tasks_pages_newest_first_and_filters,
    list_tasks_filters_by_priority_runner_capability_and_text,
    events_filter_by_kind_and_read_backwards,
    count_tasks_counts_every_state,
    count_tasks_by_priority_splits_each_state,
    outcomes_since_counts_recent_attempts_by_outcome,
    write_stats_count_committed_batches,
    alerts_are_saved_acknowledged_and_on_the_timeline,
    settings_are_stored_by_key_with_an_event,
    quiet_running_tasks_are_counted,
    slo_counts_judge_queue_waits_and_run_times,
    check_finds_nothing_wrong_with_a_store_used_normally,
    next_due_is_the_earliest_backoff_or_lease,
    compaction_prunes_finished_tasks_past_their_age,
    compaction_prunes_output_but_keeps_the_task,
    compaction_prunes_old_events_but_never_the_newest,
    compaction_without_retention_prunes_nothing,
    db_stats_count_rows_and_remember_the_last_compaction,
    writes_after_close_are_refused,
);

// -- the injected clock and fixed settings -------------------------------------

/// The instant every case starts from.
pub const T0: Millis = Millis(1_700_000_000_000);
const ACCEPT: Duration = Duration::from_secs(10);
const LEASE: Duration = Duration::from_secs(30);
const BACKOFF: Duration = Duration::from_secs(5);
const RELEASE: Duration = Duration::from_secs(1);
/// Bounds a wait for the store's own notification; never used to let time pass.
const WATCH_BOUND: Duration = Duration::from_secs(10);

/// `secs` seconds after `T0`.
fn at(secs: i64) -> Millis {
    Millis(T0.0 + secs * 1_000)
}

fn just_before(m: Millis) -> Millis {
    Millis(m.0 - 1)
}

// -- building inputs -------------------------------------------------------------

fn name(s: &str) -> AgentName {
    AgentName::parse(s).expect("test agent names are valid")
}

fn runners(list: &[&str]) -> Vec<RunnerName> {
    list.iter().map(|r| RunnerName::parse(r).expect("test runner names are valid")).collect()
}

fn caps(list: &[&str]) -> Vec<Capability> {
    list.iter().map(|c| Capability::parse(c).expect("test capabilities are valid")).collect()
}

fn task_id(n: u128) -> TaskId {
    TaskId::from_parts(T0.0, n)
}

fn token_id(n: u64) -> TokenId {
    TokenId::from_random(n)
}

fn new_token(n: u64, scope: Scope, agent: Option<&AgentName>) -> NewToken {
    NewToken { id: token_id(n), name: format!("token-{n}"), scope, agent: agent.cloned(), hash: format!("{n:064x}") }
}

/// A stable number for an agent's token id (FNV-1a of its name).
fn number_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A normal-priority `shell` task with three attempts and no capabilities.
fn spec(prompt: &str) -> TaskSpec {
    TaskSpec::new(prompt, runners(&["shell"]).remove(0), Duration::from_secs(60), 3)
}

fn with_priority(mut s: TaskSpec, p: Priority) -> TaskSpec {
    s.priority = p;
    s
}

fn with_caps(mut s: TaskSpec, list: &[&str]) -> TaskSpec {
    s.capabilities = caps(list);
    s
}

fn with_attempts(mut s: TaskSpec, n: u32) -> TaskSpec {
    s.max_attempts = n;
    s
}

fn failed(reason: &str) -> RunOutcome {
    RunOutcome::Failed { exit_code: Some(1), reason: reason.to_owned() }
}

const SUCCEEDED: RunOutcome = RunOutcome::Succeeded { exit_code: 0 };

fn stdout(data: &[u8]) -> OutputChunk {
    OutputChunk { stream: Stream::Stdout, data: data.to_vec() }
}

// -- checking results ------------------------------------------------------------

fn ok<T>(what: &str, r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
}

fn refusal<T: Debug>(what: &str, r: Result<T>) -> Refused {
    match r {
        Err(StoreError::Refused(refused)) => refused,
        other => panic!("{what}: expected StoreError::Refused, got {other:?}"),
    }
}

fn invalid<T: Debug>(what: &str, r: Result<T>) -> Invalid {
    match r {
        Err(StoreError::Invalid(invalid)) => invalid,
        other => panic!("{what}: expected StoreError::Invalid, got {other:?}"),
    }
}

/// Checks the error is `NotFound` and returns what was not found.
fn not_found<T: Debug>(what: &str, r: Result<T>) -> &'static str {
    match r {
        Err(StoreError::NotFound { what, .. }) => what,
        other => panic!("{what}: expected StoreError::NotFound, got {other:?}"),
    }
}

fn assert_stale(what: &str, refused: Refused, current: Epoch, got: Epoch) {
    assert_eq!(refused, Refused::StaleEpoch { current, got }, "{what}: wrong refusal");
}

fn assert_wrong_state(what: &str, refused: Refused, expected: TaskState) {
    match refused {
        Refused::WrongState { state, .. } if state == expected => {}
        other => panic!("{what}: expected WrongState {{ state: {expected:?} }}, got {other:?}"),
    }
}

// -- driving the store -----------------------------------------------------------

async fn register(s: &dyn Store, agent: &str, registered: &[&str], now: Millis) -> AgentName {
    let n = name(agent);
    let new = NewAgent { name: n.clone(), capabilities: caps(registered) };
    ok("register_agent", s.register_agent(new, new_token(number_of(agent), Scope::Agent, Some(&n)), now).await);
    n
}

async fn connect(s: &dyn Store, agent: &AgentName, with: &[&str], announced: &[&str], slots: u32, now: Millis) -> u64 {
    let hello = Announce {
        capabilities: caps(announced),
        runners: runners(with),
        slots,
        version: "1.0.0".to_owned(),
        doctor: None,
        holds: None,
    };
    ok("agent_connected", s.agent_connected(agent, hello, now).await).1
}

/// An agent registered and connected with the `shell` runner and no capabilities.
async fn online(s: &dyn Store, agent: &str, slots: u32, now: Millis) -> AgentName {
    let n = register(s, agent, &[], now).await;
    connect(s, &n, &["shell"], &[], slots, now).await;
    n
}

async fn submit(s: &dyn Store, n: u128, spec: TaskSpec, now: Millis) -> TaskId {
    let created = ok("create_task", s.create_task(task_id(n), spec, now).await);
    assert!(created.created, "create_task of new task {n} said it already existed");
    created.task.id
}

async fn claim(s: &dyn Store, agent: &AgentName, now: Millis) -> Vec<TaskId> {
    let claimed = ok("claim_tasks", s.claim_tasks(agent, now, ACCEPT).await);
    for task in &claimed {
        assert_eq!(task.state, TaskState::Assigned, "claim_tasks returned a task that is not assigned");
        let lease = task.lease.as_ref().expect("a claimed task holds a lease");
        assert_eq!((&lease.agent, lease.expires_at), (agent, now.plus(ACCEPT)), "lease of claimed {}", task.id);
    }
    claimed.into_iter().map(|t| t.id).collect()
}

/// Claims exactly `id` for `agent` and returns the lease's epoch.
async fn assign(s: &dyn Store, agent: &AgentName, id: &TaskId, now: Millis) -> Epoch {
    let claimed = ok("claim_tasks", s.claim_tasks(agent, now, ACCEPT).await);
    let ids: Vec<&TaskId> = claimed.iter().map(|t| &t.id).collect();
    assert_eq!(ids, [id], "{agent} expected to claim exactly {id}");
    claimed[0].epoch
}

/// Claims and starts exactly `id` on `agent`; the lease lasts `LEASE` from `now`.
async fn start(s: &dyn Store, agent: &AgentName, id: &TaskId, now: Millis) -> Epoch {
    let epoch = assign(s, agent, id, now).await;
    let task = ok("start_task", s.start_task(agent, id, epoch, now, LEASE).await);
    assert_eq!(task.state, TaskState::Running, "start_task of {id}");
    epoch
}

async fn finish(
    s: &dyn Store,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    outcome: &RunOutcome,
    now: Millis,
) -> (Task, FinishResult) {
    ok("finish_task", s.finish_task(agent, id, epoch, outcome, RunDetails::default(), now, Retry::fixed(BACKOFF)).await)
}

async fn get(s: &dyn Store, id: &TaskId) -> Task {
    ok("task", s.task(id).await).unwrap_or_else(|| panic!("task {id} is missing"))
}

async fn get_agent(s: &dyn Store, agent: &AgentName) -> AgentRecord {
    ok("agent", s.agent(agent).await).unwrap_or_else(|| panic!("agent {agent} is missing"))
}

async fn attempts(s: &dyn Store, id: &TaskId) -> Vec<AttemptRecord> {
    ok("attempts", s.attempts(id).await)
}

/// Every event matching `filter` after `filter.after`, following pages.
async fn all_events(s: &dyn Store, mut filter: EventFilter) -> Vec<Event> {
    filter.limit = 1_000;
    let mut out: Vec<Event> = Vec::new();
    loop {
        let page = ok("events", s.events(&filter).await);
        let Some(last) = page.last() else { return out };
        filter.after = last.seq;
        out.extend(page);
    }
}

async fn events_after(s: &dyn Store, after: i64) -> Vec<Event> {
    all_events(s, EventFilter { after, ..EventFilter::default() }).await
}

async fn last_seq(s: &dyn Store) -> i64 {
    events_after(s, 0).await.last().map_or(0, |e| e.seq)
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Checks the events appended since `mark` are exactly `expected`, in order.
async fn assert_events(s: &dyn Store, mark: i64, expected: &[&str], what: &str) -> Vec<Event> {
    let events = events_after(s, mark).await;
    assert_eq!(kinds(&events), expected, "{what}: wrong events appended");
    events
}

async fn all_tasks(s: &dyn Store, mut filter: TaskFilter) -> Vec<Task> {
    filter.limit = 1_000;
    let mut out = Vec::new();
    loop {
        let page = ok("list_tasks", s.list_tasks(&filter).await);
        out.extend(page.items);
        match page.next {
            Some(next) => filter.before = Some(next),
            None => return out,
        }
    }
}

async fn output(s: &dyn Store, id: &TaskId, attempt: Option<u32>, after: i64) -> Vec<OutputRecord> {
    let filter = OutputFilter { attempt, after, limit: 10_000 };
    ok("read_output", s.read_output(id, &filter).await)
}

fn count(counts: &[(TaskState, u64)], state: TaskState) -> u64 {
    let found: Vec<u64> = counts.iter().filter(|(s, _)| *s == state).map(|(_, n)| *n).collect();
    assert!(found.len() <= 1, "count_tasks lists {state:?} more than once: {counts:?}");
    found.first().copied().unwrap_or(0)
}

/// Everything a reader can see, to prove a refused change wrote nothing.
#[derive(Debug, PartialEq)]
struct Snapshot {
    tokens: Vec<TokenRecord>,
    agents: Vec<AgentRecord>,
    tasks: Vec<Task>,
    attempts: Vec<Vec<AttemptRecord>>,
    /// (seq, attempt, bytes) of each output chunk; the bytes themselves can be megabytes.
    output: Vec<Vec<(i64, u32, usize)>>,
    events: Vec<Event>,
}

async fn snapshot(s: &dyn Store) -> Snapshot {
    let tasks = all_tasks(s, TaskFilter::default()).await;
    let mut attempt_lists = Vec::new();
    let mut outputs = Vec::new();
    for task in &tasks {
        attempt_lists.push(attempts(s, &task.id).await);
        let chunks = output(s, &task.id, None, 0).await;
        outputs.push(chunks.iter().map(|o| (o.seq, o.attempt, o.data.len())).collect());
    }
    Snapshot {
        tokens: ok("list_tokens", s.list_tokens().await),
        agents: ok("list_agents", s.list_agents().await),
        tasks,
        attempts: attempt_lists,
        output: outputs,
        events: events_after(s, 0).await,
    }
}

async fn assert_unchanged(s: &dyn Store, before: &Snapshot, what: &str) {
    let after = snapshot(s).await;
    assert!(
        after == *before,
        "{what} must write nothing, but the store changed\nbefore: {before:#?}\nafter: {after:#?}"
    );
}

// -- lifecycle ---------------------------------------------------------------------

pub async fn fresh_store_is_empty(store: Arc<dyn Store>) {
    let s = &*store;
    ok("ping", s.ping().await);
    assert_eq!(ok("list_tokens", s.list_tokens().await), []);
    assert_eq!(ok("list_agents", s.list_agents().await), []);
    let page = ok("list_tasks", s.list_tasks(&TaskFilter { limit: 10, ..TaskFilter::default() }).await);
    assert!(page.items.is_empty() && page.next.is_none(), "a fresh store lists tasks: {page:?}");
    let counts = ok("count_tasks", s.count_tasks().await);
    for state in TaskState::ALL {
        assert_eq!(count(&counts, state), 0, "a fresh store counts {state:?} tasks");
    }
    assert_eq!(events_after(s, 0).await, []);
    assert_eq!(ok("next_due", s.next_due().await), None);
    assert_eq!(ok("task", s.task(&task_id(1)).await), None);
    assert_eq!(ok("agent", s.agent(&name("nobody")).await), None);
    assert_eq!(ok("token", s.token(&token_id(1)).await), None);
}

pub async fn a_probe_write_commits_and_changes_nothing_else(store: Arc<dyn Store>) {
    let s = &*store;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let before = snapshot(s).await;
    ok("probe_write", s.probe_write(at(1)).await);
    ok("probe_write", s.probe_write(at(2)).await);
    assert_unchanged(s, &before, "a probe write").await;
    assert_eq!(get(s, &task).await.state, TaskState::Queued);
    assert!(s.write_stats().failing.is_none(), "no commit has failed");
}

pub async fn writes_after_close_are_refused(store: Arc<dyn Store>) {
    let s = &*store;
    submit(s, 1, spec("before close"), at(0)).await;
    s.close().await;
    match s.create_task(task_id(2), spec("after close"), at(1)).await {
        Err(StoreError::Closed) => {}
        other => panic!("create_task after close: expected StoreError::Closed, got {other:?}"),
    }
    // Closing twice is harmless.
    s.close().await;
}

// -- tokens ------------------------------------------------------------------------

pub async fn tokens_are_created_listed_and_revoked(store: Arc<dyn Store>) {
    let s = &*store;
    let first = ok("create_token", s.create_token(new_token(1, Scope::Admin, None), at(0)).await);
    assert_eq!(
        first,
        TokenRecord {
            id: token_id(1),
            name: "token-1".to_owned(),
            scope: Scope::Admin,
            agent: None,
            hash: format!("{:064x}", 1),
            created_at: at(0),
            revoked_at: None,
            last_used_at: None,
        }
    );
    let second = ok("create_token", s.create_token(new_token(2, Scope::Admin, None), at(1)).await);
    assert_eq!(ok("token", s.token(&token_id(1)).await), Some(first.clone()));
    assert_eq!(ok("token", s.token(&token_id(3)).await), None);
    let mut listed = ok("list_tokens", s.list_tokens().await);
    listed.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    assert_eq!(listed, [first.clone(), second.clone()]);

    let mark = last_seq(s).await;
    let revoked = ok("revoke_token", s.revoke_token(&token_id(1), at(5)).await);
    assert_eq!(revoked, TokenRecord { revoked_at: Some(at(5)), ..first.clone() });
    assert_eq!(ok("token", s.token(&token_id(1)).await), Some(revoked.clone()));
    assert_events(s, mark, &["token.revoked"], "revoke_token").await;

    // Revoking again is idempotent: the first revocation stands and nothing is written.
    let before = snapshot(s).await;
    let again = ok("revoke_token again", s.revoke_token(&token_id(1), at(9)).await);
    assert_eq!(again, revoked, "a second revoke must return the first revocation");
    assert_unchanged(s, &before, "a second revoke_token").await;
    assert_eq!(ok("token", s.token(&token_id(2)).await), Some(second), "revoking one token touched another");

    assert_eq!(not_found("revoke_token of an unknown token", s.revoke_token(&token_id(3), at(9)).await), "token");
    assert_eq!(kinds(&events_after(s, 0).await), ["token.created", "token.created", "token.revoked"]);
}

pub async fn touch_token_records_use_at_most_once_a_minute(store: Arc<dyn Store>) {
    let s = &*store;
    ok("create_token", s.create_token(new_token(1, Scope::Admin, None), at(0)).await);
    let last_used = || async { ok("token", s.token(&token_id(1)).await).expect("token exists").last_used_at };
    ok("touch_token", s.touch_token(&token_id(1), at(10)).await);
    assert_eq!(last_used().await, Some(at(10)));
    ok("touch_token", s.touch_token(&token_id(1), at(40)).await);
    assert_eq!(last_used().await, Some(at(10)), "a touch within a minute must not be recorded");
    ok("touch_token", s.touch_token(&token_id(1), at(80)).await);
    assert_eq!(last_used().await, Some(at(80)), "a touch more than a minute later must be recorded");
}

// -- agents ------------------------------------------------------------------------

pub async fn register_agent_refuses_a_taken_name(store: Arc<dyn Store>) {
    let s = &*store;
    let a = name("build-01.eu");
    let new = NewAgent { name: a.clone(), capabilities: caps(&["lang:rust", "gpu", "gpu"]) };
    let record = ok("register_agent", s.register_agent(new, new_token(10, Scope::Agent, Some(&a)), at(0)).await);
    assert_eq!(
        record,
        AgentRecord {
            name: a.clone(),
            token_id: token_id(10),
            registered_capabilities: caps(&["gpu", "lang:rust"]),
            announced_capabilities: Vec::new(),
            runners: Vec::new(),
            version: None,
            status: AgentStatus::default(),
            session: 0,
            last_seen_at: None,
            created_at: at(0),
            doctor: None,
        },
        "register_agent must store sorted, deduplicated capabilities and start offline"
    );
    assert_eq!(record.status.state(), AgentState::Offline);
    assert_eq!(ok("agent", s.agent(&a).await), Some(record.clone()));
    assert_eq!(ok("list_agents", s.list_agents().await), std::slice::from_ref(&record));
    let token = ok("token", s.token(&token_id(10)).await).expect("register_agent stores the agent's token");
    assert_eq!((token.scope, token.agent), (Scope::Agent, Some(a.clone())));
    assert_events(s, 0, &["token.created", "agent.registered"], "register_agent").await;

    let before = snapshot(s).await;
    let again = NewAgent { name: a.clone(), capabilities: Vec::new() };
    match s.register_agent(again, new_token(11, Scope::Agent, Some(&a)), at(1)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("register_agent with a taken name: expected Conflict, got {other:?}"),
    }
    assert_unchanged(s, &before, "register_agent with a taken name (its token included)").await;
}

pub async fn replace_agent_token_revokes_the_old_token(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &["gpu"], at(0)).await;
    let old = get_agent(s, &a).await;

    let mark = last_seq(s).await;
    let replaced =
        ok("replace_agent_token", s.replace_agent_token(&a, new_token(20, Scope::Agent, Some(&a)), at(5)).await);
    assert_eq!(replaced, AgentRecord { token_id: token_id(20), ..old.clone() }, "only the token changes");
    assert_eq!(get_agent(s, &a).await, replaced);
    let revoked = ok("token", s.token(&old.token_id).await).expect("the old token is kept, revoked");
    assert_eq!(revoked.revoked_at, Some(at(5)), "the old token must be revoked");
    let fresh = ok("token", s.token(&token_id(20)).await).expect("the new token is stored");
    assert_eq!((fresh.revoked_at, fresh.created_at, fresh.agent), (None, at(5), Some(a.clone())));
    assert_events(s, mark, &["token.revoked", "token.created"], "replace_agent_token").await;

    let before = snapshot(s).await;
    let ghost = name("ghost");
    let r = s.replace_agent_token(&ghost, new_token(21, Scope::Agent, Some(&ghost)), at(6)).await;
    assert_eq!(not_found("replace_agent_token of an unknown agent", r), "agent");
    assert_unchanged(s, &before, "replace_agent_token of an unknown agent").await;
}

pub async fn removing_an_agent_revokes_its_token_and_keeps_its_history(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let done = submit(s, 1, spec("done"), at(0)).await;
    let e = start(s, &a, &done, at(0)).await;
    finish(s, &a, &done, e, &SUCCEEDED, at(1)).await;
    let running = submit(s, 2, spec("running"), at(2)).await;
    start(s, &a, &running, at(2)).await;
    let token = get_agent(s, &a).await.token_id;

    let before = snapshot(s).await;
    let refused = s.remove_agent(&a, false, "admin", at(3)).await;
    match refused {
        Err(StoreError::Conflict(why)) => {
            assert!(why.contains(running.as_str()) && why.contains("--force"), "{why}")
        }
        other => panic!("removing an agent with a run must be refused: {other:?}"),
    }
    assert_unchanged(s, &before, "a refused removal").await;

    let mark = last_seq(s).await;
    let taken = ok("remove_agent", s.remove_agent(&a, true, "admin", at(4)).await);
    let taken: Vec<(TaskId, TaskState)> = taken.into_iter().map(|t| (t.id, t.state)).collect();
    assert_eq!(taken, [(running.clone(), TaskState::Queued)]);
    assert_events(s, mark, &["task.reclaimed", "token.revoked", "agent.removed"], "a forced removal").await;
    assert!(ok("agent", s.agent(&a).await).is_none(), "the agent is gone");
    assert!(ok("list_agents", s.list_agents().await).is_empty());
    let revoked = ok("token", s.token(&token).await).expect("the token is kept, revoked");
    assert_eq!(revoked.revoked_at, Some(at(4)));
    let back = get(s, &running).await;
    assert_eq!((back.state, back.reason.as_deref()), (TaskState::Queued, Some("its agent was removed during the run")));
    // Its history stays, under its name.
    assert_eq!(attempts(s, &done).await[0].agent, a);
    let missing = s.remove_agent(&a, false, "admin", at(5)).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
    // The name can be registered again, with a token of its own.
    let again = NewAgent { name: a.clone(), capabilities: Vec::new() };
    ok("register_agent", s.register_agent(again, new_token(99, Scope::Agent, Some(&a)), at(6)).await);
}

pub async fn agent_sessions_ignore_a_stale_disconnect(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &["gpu"], at(0)).await;
    let hello = Announce {
        capabilities: caps(&["lang:rust"]),
        runners: runners(&["shell", "claude"]),
        slots: 2,
        version: "1.2.3".to_owned(),
        doctor: Some(r#"{"runners":[]}"#.to_owned()),
        holds: None,
    };
    let mark = last_seq(s).await;
    let (record, first) = ok("agent_connected", s.agent_connected(&a, hello, at(1)).await);
    assert_eq!(first, 1, "the first connect opens session 1");
    assert_eq!(record.session, 1);
    assert_eq!(record.status, AgentStatus { connected: true, slots: 2, ..AgentStatus::default() });
    assert_eq!(record.status.state(), AgentState::Idle);
    assert_eq!(record.runners, runners(&["shell", "claude"]));
    assert_eq!(record.announced_capabilities, caps(&["lang:rust"]));
    assert_eq!(record.capabilities(), caps(&["gpu", "lang:rust"]));
    assert_eq!(record.version.as_deref(), Some("1.2.3"));
    assert_eq!(record.last_seen_at, Some(at(1)));
    assert_eq!(record.doctor.as_deref(), Some(r#"{"runners":[]}"#), "the doctor report is kept as given");
    assert_eq!(get_agent(s, &a).await, record);

    let second = connect(s, &a, &["shell"], &[], 2, at(2)).await;
    assert_eq!(second, 2, "a reconnect opens a new session");
    assert_events(s, mark, &["agent.connected", "agent.connected"], "two connects").await;

    // The first socket's late goodbye must not take the second one down.
    let before = snapshot(s).await;
    ok("agent_disconnected", s.agent_disconnected(&a, first, "old socket closed", at(3)).await);
    assert!(get_agent(s, &a).await.status.connected, "a disconnect naming an old session disconnected the agent");
    assert_unchanged(s, &before, "a disconnect naming an old session").await;

    let mark = last_seq(s).await;
    ok("agent_disconnected", s.agent_disconnected(&a, second, "socket closed", at(4)).await);
    let record = get_agent(s, &a).await;
    assert!(!record.status.connected, "a disconnect naming the current session must disconnect the agent");
    assert_eq!(record.status.state(), AgentState::Offline);
    let events = assert_events(s, mark, &["agent.disconnected"], "agent_disconnected").await;
    assert_eq!(events[0].agent.as_ref(), Some(&a));

    assert_eq!(connect(s, &a, &["shell"], &[], 2, at(5)).await, 3, "sessions keep counting");
    let hello = Announce { slots: 1, ..Announce::default() };
    assert_eq!(
        not_found("agent_connected of an unknown agent", s.agent_connected(&name("ghost"), hello, at(6)).await),
        "agent"
    );
}

pub async fn agent_flags_pause_and_drain(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let mark = last_seq(s).await;
    let paused = AgentFlags { paused: Some(true), draining: None };
    let record = ok("set_agent_flags", s.set_agent_flags(&a, paused, at(1)).await);
    assert!(record.status.paused);
    assert_eq!(record.status.state(), AgentState::Paused);
    let events = assert_events(s, mark, &["agent.state"], "pausing").await;
    assert_eq!(events[0].state.as_deref(), Some("paused"));

    let mark = last_seq(s).await;
    let flags = AgentFlags { paused: Some(false), draining: Some(true) };
    let record = ok("set_agent_flags", s.set_agent_flags(&a, flags, at(2)).await);
    assert_eq!((record.status.paused, record.status.draining), (false, true));
    assert_eq!(record.status.state(), AgentState::Draining);
    let events = assert_events(s, mark, &["agent.state"], "pause lifted, drain set").await;
    assert_eq!(events[0].state.as_deref(), Some("draining"));
    assert_eq!(get_agent(s, &a).await, record);

    let flags = AgentFlags { paused: None, draining: Some(false) };
    assert_eq!(ok("set_agent_flags", s.set_agent_flags(&a, flags, at(3)).await).status.state(), AgentState::Idle);
    let flags = AgentFlags { paused: Some(true), draining: None };
    assert_eq!(
        not_found("set_agent_flags of an unknown agent", s.set_agent_flags(&name("ghost"), flags, at(4)).await),
        "agent"
    );
}

pub async fn heartbeat_carries_pending_cancels_and_spares_unacknowledged_outcomes(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let cancelled = submit(s, 1, spec("to cancel"), at(0)).await;
    let ce = start(s, &a, &cancelled, at(0)).await;
    ok("cancel_task", s.cancel_task(&cancelled, at(1)).await);
    let done = submit(s, 2, spec("done"), at(0)).await;
    let de = start(s, &a, &done, at(0)).await;
    finish(s, &a, &done, de, &SUCCEEDED, at(2)).await;

    // The agent still lists the finished run: its report has not been acknowledged.
    let before = snapshot(s).await;
    let hb = ok("heartbeat", s.heartbeat(&a, &[(cancelled.clone(), ce), (done.clone(), de)], at(3), LEASE).await);
    assert_eq!(hb.cancel, vec![(cancelled.clone(), ce)], "a pending cancel is repeated with every heartbeat");
    assert_eq!(hb.stale, vec![], "an outcome awaiting its acknowledgement is not a stale run");
    assert_eq!(hb.renewed, 1);
    let after = snapshot(s).await;
    assert_eq!(after.events, before.events, "a heartbeat appends no events");
    assert_eq!(ok("task", s.task(&done).await).expect("the task").state, TaskState::Succeeded);
}

pub async fn heartbeat_renews_running_leases_and_reports_stale_runs(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let running = submit(s, 1, spec("running on a"), at(0)).await;
    let e = start(s, &a, &running, at(0)).await;
    let elsewhere = submit(s, 3, spec("running on b"), at(1)).await;
    let b_epoch = start(s, &b, &elsewhere, at(1)).await;
    let ghost = task_id(99);

    let reported =
        [(running.clone(), e), (ghost.clone(), Epoch(1)), (running.clone(), Epoch(7)), (elsewhere.clone(), b_epoch)];
    let hb = ok("heartbeat", s.heartbeat(&a, &reported, at(20), LEASE).await);
    assert_eq!(hb.renewed, 1, "only the running task held under its epoch is renewed: {hb:?}");
    assert_eq!(
        hb.stale,
        [(ghost, Epoch(1)), (running.clone(), Epoch(7)), (elsewhere.clone(), b_epoch)],
        "unknown tasks, stale epochs and other agents' runs are stale"
    );
    let lease = |t: Task| t.lease.expect("still leased").expires_at;
    assert_eq!(lease(get(s, &running).await), at(50), "the running lease is renewed to now + ttl");
    assert_eq!(lease(get(s, &elsewhere).await), at(31), "another agent's lease is untouched");
    assert_eq!(get_agent(s, &a).await.last_seen_at, Some(at(20)), "a heartbeat records when the agent was seen");

    // A heartbeat never shortens a lease.
    let hb = ok("heartbeat", s.heartbeat(&a, &[(running.clone(), e)], at(21), Duration::from_secs(1)).await);
    assert_eq!(hb.renewed, 1);
    assert_eq!(lease(get(s, &running).await), at(50), "a short ttl must not shorten the lease");

    assert_eq!(
        not_found("heartbeat of an unknown agent", s.heartbeat(&name("ghost"), &[], at(22), LEASE).await),
        "agent"
    );
}

pub async fn heartbeat_from_the_holder_starts_an_assignment_whose_accept_was_lost(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("accepted, but the accept was lost"), at(0)).await;
    let e = assign(s, &a, &task, at(1)).await;

    // Another agent naming the assignment is stale and changes nothing.
    let before = snapshot(s).await;
    let hb = ok("heartbeat", s.heartbeat(&b, &[(task.clone(), e)], at(2), LEASE).await);
    assert_eq!((hb.renewed, hb.stale), (0, vec![(task.clone(), e)]));
    let after = snapshot(s).await;
    assert_eq!(
        (&after.tasks, &after.events),
        (&before.tasks, &before.events),
        "a stranger's heartbeat changed the task"
    );

    // The holder reports running it: the run is real, so it counts as started now.
    let mark = last_seq(s).await;
    let hb = ok("heartbeat", s.heartbeat(&a, &[(task.clone(), e)], at(3), LEASE).await);
    assert_eq!((hb.renewed, hb.stale), (1, Vec::new()), "the holder's assignment must be renewed, not stale");
    let started = get(s, &task).await;
    assert_eq!((started.state, started.attempts, started.epoch), (TaskState::Running, 1, e));
    assert_eq!(started.lease.as_ref().map(|l| l.expires_at), Some(at(3).plus(LEASE)));
    assert_eq!(started.started_at, Some(at(3)));
    assert_events(s, mark, &["task.started"], "a heartbeat that starts an assignment").await;
    let tried = attempts(s, &task).await;
    assert_eq!(tried.iter().map(|t| (t.number, t.epoch, t.started_at)).collect::<Vec<_>>(), [(1, e, at(3))]);
    let (_, result) = finish(s, &a, &task, e, &SUCCEEDED, at(4)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Succeeded), "the run started by heartbeat finishes as usual");
}

// -- creating tasks ----------------------------------------------------------------

pub async fn create_task_stores_the_validated_spec(store: Arc<dyn Store>) {
    let s = &*store;
    let mut asked = with_caps(with_priority(spec("build it"), Priority::High), &["lang:rust", "gpu", "gpu"]);
    asked.timeout = Duration::from_secs(90);
    asked.max_attempts = 5;
    asked.metadata = Some(r#"{"ticket":42}"#.to_owned());
    let expected = Task::new(task_id(1), asked.clone().validate().expect("the spec is valid"), at(3));
    assert_eq!(expected.spec.capabilities, caps(&["gpu", "lang:rust"]));

    let created = ok("create_task", s.create_task(task_id(1), asked, at(3)).await);
    assert!(created.created);
    assert_eq!(created.task, expected, "create_task must store the validated spec as a new queued task");
    assert_eq!(get(s, &task_id(1)).await, expected);
    let events = assert_events(s, 0, &["task.created"], "create_task").await;
    assert_eq!(events[0].task.as_ref(), Some(&task_id(1)));
    assert_eq!(events[0].agent, None);
    assert_eq!(events[0].state.as_deref(), Some("queued"));
    assert_eq!(events[0].at, at(3));
    assert_eq!(ok("task", s.task(&task_id(2)).await), None);
}

pub async fn idempotency_key_returns_the_same_task(store: Arc<dyn Store>) {
    let s = &*store;
    let keyed = |prompt: &str| TaskSpec { idempotency_key: Some("deploy-42".to_owned()), ..spec(prompt) };
    let first = ok("create_task", s.create_task(task_id(1), keyed("deploy"), at(0)).await);
    assert!(first.created);

    let before = snapshot(s).await;
    let again = ok("create_task with a used key", s.create_task(task_id(2), keyed("deploy, again"), at(5)).await);
    assert!(!again.created, "a used idempotency key must return created = false");
    assert_eq!(again.task, first.task, "a used idempotency key must return the original task, unchanged");
    assert_unchanged(s, &before, "create_task with a used idempotency key").await;
    assert_eq!(ok("task", s.task(&task_id(2)).await), None);

    // The key still answers after the task has moved on.
    ok("cancel_task", s.cancel_task(&task_id(1), at(6)).await);
    let later = ok("create_task with a used key", s.create_task(task_id(3), keyed("deploy"), at(7)).await);
    assert!(!later.created);
    assert_eq!((later.task.id, later.task.state), (task_id(1), TaskState::Cancelled));

    let other = TaskSpec { idempotency_key: Some("deploy-43".to_owned()), ..spec("deploy") };
    assert!(ok("create_task with a new key", s.create_task(task_id(4), other, at(8)).await).created);
    assert_eq!(count(&ok("count_tasks", s.count_tasks().await), TaskState::Queued), 1);
}

pub async fn invalid_spec_is_refused_naming_the_field(store: Arc<dyn Store>) {
    let s = &*store;
    let names: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let too_many: Vec<&str> = names.iter().map(String::as_str).collect();
    let cases: [(&str, TaskSpec, &str); 6] = [
        ("an empty prompt", spec(""), "prompt"),
        ("a prompt over 1 MiB", spec(&"x".repeat(MAX_PROMPT_BYTES + 1)), "prompt"),
        ("a zero timeout", TaskSpec { timeout: Duration::ZERO, ..spec("p") }, "timeout"),
        ("zero attempts", with_attempts(spec("p"), 0), "max_attempts"),
        ("an empty idempotency key", TaskSpec { idempotency_key: Some(String::new()), ..spec("p") }, "idempotency_key"),
        ("too many capabilities", with_caps(spec("p"), &too_many), "capabilities"),
    ];
    for (i, (what, bad, field)) in cases.into_iter().enumerate() {
        let id = task_id(i as u128);
        let before = snapshot(s).await;
        let err = invalid(&format!("create_task with {what}"), s.create_task(id.clone(), bad, at(0)).await);
        assert_eq!(err.field, field, "create_task with {what} must name the field");
        assert_unchanged(s, &before, &format!("create_task with {what}")).await;
        assert_eq!(ok("task", s.task(&id).await), None);
    }
    // The limit itself is allowed.
    submit(s, 100, spec(&"x".repeat(MAX_PROMPT_BYTES)), at(1)).await;
}

// -- claiming ----------------------------------------------------------------------

pub async fn claim_honours_priority_then_age(store: Arc<dyn Store>) {
    let s = &*store;
    let low = submit(s, 1, with_priority(spec("low"), Priority::Low), at(1)).await;
    let normal_old = submit(s, 2, spec("normal, older"), at(2)).await;
    let urgent = submit(s, 3, with_priority(spec("urgent"), Priority::Urgent), at(3)).await;
    let normal_new = submit(s, 4, spec("normal, newer"), at(4)).await;
    let high = submit(s, 5, with_priority(spec("high"), Priority::High), at(5)).await;

    let a = online(s, "a", 2, at(6)).await;
    assert_eq!(claim(s, &a, at(10)).await, [urgent, high], "two slots take the two most urgent tasks");
    let b = online(s, "b", 3, at(6)).await;
    assert_eq!(claim(s, &b, at(10)).await, [normal_old, normal_new, low], "equal priority goes oldest first");
}

pub async fn claim_routes_by_capability(store: Arc<dyn Store>) {
    let s = &*store;
    let gpu = submit(s, 1, with_caps(spec("needs gpu"), &["gpu"]), at(1)).await;
    let rust = submit(s, 2, with_caps(spec("needs rust"), &["lang:rust"]), at(2)).await;
    let both = submit(s, 3, with_caps(spec("needs both"), &["gpu", "lang:rust"]), at(3)).await;

    let plain = online(s, "plain", 5, at(4)).await;
    let before = snapshot(s).await;
    assert_eq!(claim(s, &plain, at(5)).await, [], "an agent lacking every capability gets nothing");
    assert_unchanged(s, &before, "a claim that matches nothing").await;

    let registered = register(s, "gpu-box", &["gpu"], at(4)).await;
    connect(s, &registered, &["shell"], &[], 5, at(4)).await;
    assert_eq!(claim(s, &registered, at(5)).await, [gpu], "registered capabilities route; every one is needed");

    let announcer = register(s, "rusty", &[], at(4)).await;
    connect(s, &announcer, &["shell"], &["lang:rust"], 5, at(4)).await;
    assert_eq!(claim(s, &announcer, at(5)).await, [rust], "announced capabilities route too");

    let mixed = register(s, "mixed", &["gpu"], at(4)).await;
    connect(s, &mixed, &["shell"], &["lang:rust"], 5, at(4)).await;
    assert_eq!(claim(s, &mixed, at(5)).await, [both], "registered and announced capabilities combine");
}

pub async fn claim_matches_the_runner(store: Arc<dyn Store>) {
    let s = &*store;
    let task = submit(s, 1, TaskSpec { runner: runners(&["claude"]).remove(0), ..spec("for claude") }, at(0)).await;
    let shell = online(s, "shell-only", 2, at(0)).await;
    assert_eq!(claim(s, &shell, at(1)).await, [], "an agent without the task's runner gets nothing");
    let none = register(s, "no-runners", &[], at(0)).await;
    connect(s, &none, &[], &[], 2, at(0)).await;
    assert_eq!(claim(s, &none, at(1)).await, [], "an agent with no runners gets nothing");
    let claude = register(s, "claude-box", &[], at(0)).await;
    connect(s, &claude, &["shell", "claude"], &[], 2, at(0)).await;
    assert_eq!(claim(s, &claude, at(1)).await, [task]);
}

pub async fn claim_fills_only_free_slots(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let mut ids = Vec::new();
    for n in 1..=4 {
        ids.push(submit(s, n, spec("work"), at(n as i64)).await);
    }
    assert_eq!(claim(s, &a, at(10)).await, ids[..2]);
    let status = get_agent(s, &a).await.status;
    assert_eq!((status.used_slots, status.free_slots()), (2, 0), "assigned tasks use slots");
    assert_eq!(claim(s, &a, at(11)).await, [], "a full agent gets nothing");

    let e = ok("start_task", s.start_task(&a, &ids[0], Epoch(1), at(12), LEASE).await).epoch;
    assert_eq!(claim(s, &a, at(12)).await, [], "running tasks use slots");
    finish(s, &a, &ids[0], e, &SUCCEEDED, at(13)).await;
    assert_eq!(claim(s, &a, at(14)).await, ids[2..3], "a finished task frees its slot");

    // Slots minus leased tasks: two are held, so four slots leave two free.
    connect(s, &a, &["shell"], &[], 4, at(15)).await;
    assert_eq!(get_agent(s, &a).await.status.used_slots, 2);
    assert_eq!(claim(s, &a, at(16)).await, ids[3..], "only queued tasks are left to fill free slots");
}

pub async fn claim_skips_agents_that_take_no_work(store: Arc<dyn Store>) {
    let s = &*store;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let offline = register(s, "offline", &[], at(0)).await;
    assert_eq!(claim(s, &offline, at(1)).await, [], "a registered agent that never connected gets nothing");

    let gone = online(s, "gone", 2, at(0)).await;
    ok("agent_disconnected", s.agent_disconnected(&gone, 1, "bye", at(1)).await);
    assert_eq!(claim(s, &gone, at(2)).await, [], "a disconnected agent gets nothing");

    let paused = online(s, "paused", 2, at(0)).await;
    ok("pause", s.set_agent_flags(&paused, AgentFlags { paused: Some(true), draining: None }, at(1)).await);
    assert_eq!(claim(s, &paused, at(2)).await, [], "a paused agent gets nothing");

    let draining = online(s, "draining", 2, at(0)).await;
    ok("drain", s.set_agent_flags(&draining, AgentFlags { paused: None, draining: Some(true) }, at(1)).await);
    assert_eq!(claim(s, &draining, at(2)).await, [], "a draining agent gets nothing");

    assert_eq!(get(s, &task).await.state, TaskState::Queued);
    ok("unpause", s.set_agent_flags(&paused, AgentFlags { paused: Some(false), draining: None }, at(3)).await);
    assert_eq!(claim(s, &paused, at(4)).await, [task], "an unpaused agent takes work again");
    assert_eq!(
        not_found("claim_tasks for an unknown agent", s.claim_tasks(&name("ghost"), at(5), ACCEPT).await),
        "agent"
    );
}

pub async fn claim_waits_for_ready_at(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("flaky"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    let (_, result) = finish(s, &a, &task, e, &failed("flaky"), at(1)).await;
    let ready_at = at(1).plus(BACKOFF);
    assert_eq!(result, FinishResult::Applied(Finished::RetryScheduled { ready_at }));

    let before = snapshot(s).await;
    assert_eq!(claim(s, &a, just_before(ready_at)).await, [], "a task in backoff must not be claimed");
    assert_unchanged(s, &before, "a claim before ready_at").await;
    let claimed = ok("claim_tasks", s.claim_tasks(&a, ready_at, ACCEPT).await);
    assert_eq!(claimed.len(), 1, "a task is claimable once ready_at has come");
    assert_eq!((&claimed[0].id, claimed[0].epoch), (&task, Epoch(2)), "every hand-out raises the epoch");
}

/// A dispatcher that records what it was handed; it claims for `agents`
/// once the first queued task is due, unless paused, as a hub does.
struct Recorder {
    agents: Vec<AgentName>,
    now: std::sync::Mutex<Millis>,
    paused: std::sync::atomic::AtomicBool,
    handed: std::sync::Mutex<Vec<(AgentName, Vec<TaskId>)>>,
    missed: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    fn take(&self) -> Vec<(AgentName, Vec<TaskId>)> {
        std::mem::take(&mut *self.handed.lock().expect("recorder lock"))
    }

    fn set_now(&self, now: Millis) {
        *self.now.lock().expect("recorder lock") = now;
    }
}

impl crate::Dispatcher for Recorder {
    fn plan(&self, ready: Millis) -> Option<crate::ClaimPlan> {
        let now = *self.now.lock().expect("recorder lock");
        if ready > now || self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        Some(crate::ClaimPlan { agents: self.agents.clone(), now, accept_within: ACCEPT })
    }

    fn claimed(&self, claims: Vec<(AgentName, Vec<Task>)>) {
        for (agent, tasks) in claims {
            for task in &tasks {
                assert_eq!(task.state, TaskState::Assigned, "the dispatcher was handed {} unassigned", task.id);
            }
            self.handed.lock().expect("recorder lock").push((agent, tasks.into_iter().map(|t| t.id).collect()));
        }
    }

    fn missed(&self) {
        self.missed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

pub async fn a_dispatcher_claims_in_the_batch_that_made_the_work_claimable(s: Arc<dyn Store>) {
    let a = online(&*s, "agent-a", 2, T0).await;
    let rec = Arc::new(Recorder {
        agents: vec![name("agent-ghost"), a.clone()],
        now: std::sync::Mutex::new(T0),
        paused: std::sync::atomic::AtomicBool::new(false),
        handed: std::sync::Mutex::new(Vec::new()),
        missed: std::sync::atomic::AtomicUsize::new(0),
    });
    s.set_dispatcher(rec.clone());

    // Handed over before the creation returns: the claim rode in its batch.
    // An agent the store does not know is skipped; the others are served.
    let t1 = submit(&*s, 1, spec("one"), T0).await;
    assert_eq!(rec.take(), [(a.clone(), vec![t1.clone()])], "the creation of {t1} was not claimed with it");
    // The skipped agent's claim failed: the dispatcher hears that it missed.
    assert!(rec.missed.load(std::sync::atomic::Ordering::SeqCst) > 0, "a failed claim went unreported");
    let held = get(&*s, &t1).await;
    assert_eq!(held.state, TaskState::Assigned, "{t1} after its creation's claim");
    assert_eq!(held.lease.as_ref().map(|l| (&l.agent, l.expires_at)), Some((&a, T0.plus(ACCEPT))), "lease of {t1}");

    // Nothing goes out while the dispatcher says no.
    rec.paused.store(true, std::sync::atomic::Ordering::SeqCst);
    let t2 = submit(&*s, 2, spec("two"), at(1)).await;
    assert!(rec.take().is_empty(), "a paused dispatcher was handed work");
    assert_eq!(get(&*s, &t2).await.state, TaskState::Queued, "{t2} while paused");

    // Any later change claims what waits, oldest first, into free slots only.
    rec.paused.store(false, std::sync::atomic::Ordering::SeqCst);
    rec.set_now(at(2));
    let t3 = submit(&*s, 3, spec("three"), at(2)).await;
    assert_eq!(rec.take(), [(a.clone(), vec![t2.clone()])], "one slot was free and {t2} is the oldest");
    assert_eq!(get(&*s, &t3).await.state, TaskState::Queued, "{t3} with every slot taken");

    // A slot freed by a finish is filled in the finish's own batch.
    let epoch = ok("start_task", s.start_task(&a, &t1, held.epoch, at(3), LEASE).await).epoch;
    assert!(rec.take().is_empty(), "a start frees no slot, yet work was handed out");
    rec.set_now(at(4));
    finish(&*s, &a, &t1, epoch, &RunOutcome::Succeeded { exit_code: 0 }, at(4)).await;
    assert_eq!(rec.take(), [(a.clone(), vec![t3.clone()])], "the slot {t1} freed was not filled with {t3}");

    // A retry in backoff waits for its time, as the dispatcher's plan says;
    // then any change hands it out.
    let epoch = get(&*s, &t2).await.epoch;
    ok("start_task", s.start_task(&a, &t2, epoch, at(5), LEASE).await);
    rec.set_now(at(6));
    finish(&*s, &a, &t2, epoch, &failed("flaky"), at(6)).await;
    assert!(rec.take().is_empty(), "a task in backoff was handed out at once");
    assert_eq!(get(&*s, &t2).await.state, TaskState::Queued, "{t2} in backoff");
    let ready_at = at(6).plus(BACKOFF);
    rec.set_now(ready_at);
    submit(&*s, 4, spec("four"), ready_at).await;
    assert_eq!(rec.take(), [(a.clone(), vec![t2.clone()])], "{t2} once its backoff ended");
}

// -- starting and releasing ----------------------------------------------------------

pub async fn start_with_a_stale_epoch_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = assign(s, &a, &task, at(1)).await;
    assert_eq!(e, Epoch(1), "the first hand-out is epoch 1");

    let before = snapshot(s).await;
    let r = refusal("start_task with a newer epoch", s.start_task(&a, &task, Epoch(2), at(2), LEASE).await);
    assert_stale("start_task with a newer epoch", r, e, Epoch(2));
    let r = refusal("start_task by another agent", s.start_task(&b, &task, e, at(2), LEASE).await);
    assert_stale("start_task by another agent", r, e, e);
    assert_unchanged(s, &before, "a refused start_task").await;

    let mark = last_seq(s).await;
    let started = ok("start_task", s.start_task(&a, &task, e, at(3), LEASE).await);
    assert_eq!((started.state, started.attempts, started.started_at), (TaskState::Running, 1, Some(at(3))));
    assert_eq!(started.lease.as_ref().map(|l| l.expires_at), Some(at(3).plus(LEASE)));
    assert_eq!(get(s, &task).await, started);
    assert_events(s, mark, &["task.started"], "start_task").await;
    assert_eq!(
        attempts(s, &task).await,
        [AttemptRecord {
            checks: Vec::new(),
            number: 1,
            epoch: e,
            agent: a.clone(),
            started_at: at(3),
            finished_at: None,
            outcome: None,
            exit_code: None,
            reason: None,
            output_bytes: 0,
            output_truncated: false,
            output_incomplete: false,
            output_pruned: false,
            report: None,
            steps: 0,
            latest_step: None,
            live: None,
            live_detail: None,
            workspace: None,
            runner: Some("shell".into()),
            summary: None,
        }]
    );

    let r = refusal("start_task of a running task", s.start_task(&a, &task, e, at(4), LEASE).await);
    assert_wrong_state("start_task of a running task", r, TaskState::Running);
    assert_eq!(
        not_found("start_task of an unknown task", s.start_task(&a, &task_id(9), e, at(4), LEASE).await),
        "task"
    );
}

pub async fn release_returns_an_assignment_to_the_queue(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = assign(s, &a, &task, at(1)).await;

    let before = snapshot(s).await;
    let r =
        refusal("release_task with a stale epoch", s.release_task(&a, &task, Epoch(5), "busy", at(2), RELEASE).await);
    assert_stale("release_task with a stale epoch", r, e, Epoch(5));
    assert_unchanged(s, &before, "a refused release_task").await;

    let mark = last_seq(s).await;
    let released = ok("release_task", s.release_task(&a, &task, e, "busy", at(2), RELEASE).await);
    assert_eq!((released.state, released.attempts, released.ready_at), (TaskState::Queued, 0, at(3)));
    assert_eq!(released.lease, None);
    assert_eq!(released.reason.as_deref(), Some("released: busy"));
    assert_eq!(get(s, &task).await, released);
    assert_eq!(attempts(s, &task).await, [], "a released assignment used no attempt");
    assert_events(s, mark, &["task.released"], "release_task").await;

    let e2 = start(s, &a, &task, at(3)).await;
    assert_eq!(e2, Epoch(2));
    let r = refusal("release_task of a running task", s.release_task(&a, &task, e2, "busy", at(4), RELEASE).await);
    assert_wrong_state("release_task of a running task", r, TaskState::Running);
}

// -- finishing -----------------------------------------------------------------------

pub async fn finish_success_ends_the_task(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let mark = last_seq(s).await;
    let (done, result) = finish(s, &a, &task, e, &SUCCEEDED, at(2)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Succeeded));
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!((done.exit_code, done.reason.as_deref()), (Some(0), None));
    assert_eq!((done.finished_at, done.lease.as_ref()), (Some(at(2)), None));
    assert_eq!(get(s, &task).await, done);
    let events = assert_events(s, mark, &["task.succeeded"], "a successful finish").await;
    assert_eq!(events[0].state.as_deref(), Some("succeeded"));
    assert_eq!(events[0].agent.as_ref(), Some(&a));
    let attempt = &attempts(s, &task).await[0];
    assert_eq!(
        (attempt.finished_at, attempt.outcome.map(Outcome::as_str), attempt.exit_code),
        (Some(at(2)), Some("succeeded"), Some(0))
    );
    assert_eq!(get_agent(s, &a).await.status.used_slots, 0, "a finished task frees its slot");
}

/// Follow-ups count against the tree of the task no run created: a
/// grandchild's follow-up is the root's too, a second root has its own
/// budget, and a refusal writes nothing but its event.
pub async fn follow_ups_are_budgeted_per_task_tree(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 4, at(0)).await;
    let root = submit(s, 1, spec("root"), at(0)).await;
    let e = start(s, &a, &root, at(0)).await;
    let made = |f: Followup| match f {
        Followup::Created(c) => c.task.id,
        Followup::OverBudget { root, held } => panic!("refused: {root} holds {held}"),
    };
    let child = made(ok("create_followup", s.create_followup(&root, e, task_id(2), spec("child"), 3, at(1)).await));
    let ce = start(s, &a, &child, at(1)).await;
    made(ok("create_followup", s.create_followup(&child, ce, task_id(3), spec("grandchild"), 3, at(2)).await));
    made(ok("create_followup", s.create_followup(&root, e, task_id(4), spec("second child"), 3, at(2)).await));

    let before = snapshot(s).await;
    let mark = last_seq(s).await;
    match ok("create_followup", s.create_followup(&child, ce, task_id(5), spec("one too many"), 3, at(3)).await) {
        Followup::OverBudget { root: r, held } => assert_eq!((r, held), (root.clone(), 3)),
        Followup::Created(c) => panic!("the fourth follow-up of a tree of 3 was created: {}", c.task.id),
    }
    let events = assert_events(s, mark, &["task.followup_refused"], "a follow-up over the tree's budget").await;
    assert_eq!(events[0].task.as_ref(), Some(&child), "the refusal is on the asking task's timeline");
    assert!(events[0].detail.as_deref().is_some_and(|d| d.contains(root.as_str())), "{:?}", events[0].detail);
    assert!(ok("task", s.task(&task_id(5)).await).is_none(), "nothing was created");
    assert_eq!(snapshot(s).await.tasks, before.tasks, "a refusal changes no task");

    // Another tree has a budget of its own; a larger budget makes room in this one.
    let b = online(s, "b", 8, at(4)).await;
    assert_eq!(claim(s, &b, at(4)).await.len(), 2, "the grandchild and the second child");
    let other = submit(s, 10, spec("other root"), at(4)).await;
    let oe = start(s, &a, &other, at(4)).await;
    made(ok("create_followup", s.create_followup(&other, oe, task_id(11), spec("its child"), 3, at(5)).await));
    made(ok("create_followup", s.create_followup(&child, ce, task_id(6), spec("room again"), 4, at(5)).await));
}

pub async fn finish_failure_with_attempts_left_schedules_a_retry(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, with_attempts(spec("flaky"), 3), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let mark = last_seq(s).await;
    let boom = RunOutcome::Failed { exit_code: Some(2), reason: "boom".to_owned() };
    let (queued, result) = finish(s, &a, &task, e, &boom, at(1)).await;
    let ready_at = at(1).plus(BACKOFF);
    assert_eq!(result, FinishResult::Applied(Finished::RetryScheduled { ready_at }));
    assert!(ready_at > at(1), "a retry must wait for its backoff");
    assert_eq!((queued.state, queued.attempts, queued.ready_at), (TaskState::Queued, 1, ready_at));
    assert_eq!((queued.exit_code, queued.reason.as_deref()), (Some(2), Some("boom")));
    assert_eq!((queued.lease.as_ref(), queued.finished_at), (None, None));
    assert_eq!(get(s, &task).await, queued);
    let events = assert_events(s, mark, &["task.retry_scheduled"], "a failure with attempts left").await;
    assert_eq!(events[0].state.as_deref(), Some("queued"));
    let attempt = &attempts(s, &task).await[0];
    assert_eq!(
        (attempt.outcome.map(Outcome::as_str), attempt.exit_code, attempt.reason.as_deref()),
        (Some("failed"), Some(2), Some("boom"))
    );

    // A timeout is a failure too.
    let e2 = start(s, &a, &task, ready_at).await;
    let (_, result) = finish(s, &a, &task, e2, &RunOutcome::TimedOut, at(20)).await;
    let ready_at = at(20).plus(BACKOFF);
    assert_eq!(result, FinishResult::Applied(Finished::RetryScheduled { ready_at }));
    let tried = attempts(s, &task).await;
    assert_eq!(
        tried.iter().map(|t| (t.number, t.epoch, t.outcome.map(Outcome::as_str))).collect::<Vec<_>>(),
        [(1, e, Some("failed")), (2, e2, Some("timeout"))]
    );
}

pub async fn finish_failure_without_attempts_dead_letters_then_retry_revives(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, with_attempts(spec("doomed"), 1), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let mark = last_seq(s).await;
    let (dead, result) = finish(s, &a, &task, e, &failed("broken"), at(1)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Failed));
    assert_eq!((dead.state, dead.attempts, dead.finished_at), (TaskState::Failed, 1, Some(at(1))));
    assert_eq!(get(s, &task).await, dead);
    assert_events(s, mark, &["task.failed"], "a failure with no attempts left").await;
    assert_eq!(claim(s, &a, at(100)).await, [], "a dead-lettered task is never claimed");

    let mark = last_seq(s).await;
    let revived = ok("retry_task", s.retry_task(&task, at(200)).await);
    assert_eq!((revived.state, revived.attempts, revived.ready_at), (TaskState::Queued, 0, at(200)));
    assert_eq!((revived.finished_at, revived.exit_code), (None, None));
    assert_eq!(revived.reason.as_deref(), Some("retried"));
    assert_eq!(get(s, &task).await, revived);
    assert_events(s, mark, &["task.retried"], "retry_task").await;

    assert_eq!(revived.runs, 1, "a retry keeps the count of runs");
    let e2 = start(s, &a, &task, at(201)).await;
    assert_eq!(e2, Epoch(2));
    let numbers: Vec<u32> = attempts(s, &task).await.iter().map(|t| t.number).collect();
    assert_eq!(numbers, [1, 2], "attempts are numbered over the task's whole life");
    let again = get(s, &task).await;
    assert_eq!((again.attempts, again.runs), (1, 2), "one of the new budget; the second run, as numbered");
}

pub async fn retry_of_a_task_that_has_not_failed_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let succeeded = submit(s, 1, spec("ok"), at(0)).await;
    let e = start(s, &a, &succeeded, at(0)).await;
    finish(s, &a, &succeeded, e, &SUCCEEDED, at(1)).await;
    let running = submit(s, 2, spec("running"), at(1)).await;
    start(s, &a, &running, at(1)).await;
    let cancelled = submit(s, 3, spec("cancelled"), at(2)).await;
    ok("cancel_task", s.cancel_task(&cancelled, at(2)).await);
    let queued = submit(s, 4, spec("queued"), at(3)).await;

    let before = snapshot(s).await;
    for (id, state) in [
        (&queued, TaskState::Queued),
        (&running, TaskState::Running),
        (&succeeded, TaskState::Succeeded),
        (&cancelled, TaskState::Cancelled),
    ] {
        let what = format!("retry_task of a {} task", state.as_str());
        assert_wrong_state(&what, refusal(&what, s.retry_task(id, at(4)).await), state);
    }
    assert_unchanged(s, &before, "a refused retry_task").await;
    assert_eq!(not_found("retry_task of an unknown task", s.retry_task(&task_id(9), at(4)).await), "task");
}

pub async fn duplicate_finish_is_answered_and_changes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let done = submit(s, 1, spec("ok"), at(0)).await;
    let e = start(s, &a, &done, at(0)).await;
    finish(s, &a, &done, e, &SUCCEEDED, at(1)).await;

    let before = snapshot(s).await;
    let (task, result) = finish(s, &a, &done, e, &SUCCEEDED, at(2)).await;
    assert_eq!(result, FinishResult::Duplicate, "a resent outcome must be answered as a duplicate");
    assert_eq!(task, get(s, &done).await);
    assert_unchanged(s, &before, "a duplicate finish").await;

    // A resent failure stays a duplicate after the task moved on to another agent.
    let flaky = submit(s, 2, spec("flaky"), at(2)).await;
    let e1 = start(s, &a, &flaky, at(2)).await;
    let boom = failed("boom");
    finish(s, &a, &flaky, e1, &boom, at(3)).await;
    let b = online(s, "b", 1, at(3)).await;
    let e2 = start(s, &b, &flaky, at(3).plus(BACKOFF)).await;
    assert_eq!(e2, Epoch(2));

    let before = snapshot(s).await;
    let (_, result) = finish(s, &a, &flaky, e1, &boom, at(20)).await;
    assert_eq!(result, FinishResult::Duplicate, "a resent failure for an old epoch must be a duplicate");
    assert_unchanged(s, &before, "a duplicate finish of an old epoch").await;

    // A different outcome for an epoch already settled is not a duplicate.
    refusal(
        "finish_task with a conflicting outcome",
        s.finish_task(&a, &flaky, e1, &SUCCEEDED, RunDetails::default(), at(21), Retry::fixed(BACKOFF)).await,
    );
    refusal(
        "finish_task by another agent",
        s.finish_task(&b, &done, e, &SUCCEEDED, RunDetails::default(), at(21), Retry::fixed(BACKOFF)).await,
    );
    assert_unchanged(s, &before, "a conflicting finish").await;
}

pub async fn finish_with_a_stale_epoch_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let before = snapshot(s).await;
    for (what, agent, epoch) in [
        ("finish_task with a newer epoch", &a, Epoch(2)),
        ("finish_task with an older epoch", &a, Epoch(0)),
        ("finish_task by another agent", &b, e),
    ] {
        let r = refusal(
            what,
            s.finish_task(agent, &task, epoch, &SUCCEEDED, RunDetails::default(), at(1), Retry::fixed(BACKOFF)).await,
        );
        assert_stale(what, r, e, epoch);
    }
    assert_unchanged(s, &before, "a finish with a stale epoch").await;

    let assigned = submit(s, 2, spec("not started"), at(1)).await;
    let e2 = assign(s, &a, &assigned, at(1)).await;
    let r = refusal(
        "finish_task of an assigned task by a non-holder",
        s.finish_task(&b, &assigned, e2, &SUCCEEDED, RunDetails::default(), at(2), Retry::fixed(BACKOFF)).await,
    );
    assert_stale("finish_task of an assigned task by a non-holder", r, e2, e2);
    // The holder finishing a task still recorded as assigned: its accept was
    // lost, and the run counts once: started, then finished.
    let mark = last_seq(s).await;
    let (done, result) = ok(
        "finish_task",
        s.finish_task(&a, &assigned, e2, &SUCCEEDED, RunDetails::default(), at(2), Retry::fixed(BACKOFF)).await,
    );
    assert_eq!(result, FinishResult::Applied(Finished::Succeeded));
    assert_eq!((done.state, done.attempts), (TaskState::Succeeded, 1));
    assert_events(s, mark, &["task.started", "task.succeeded"], "a finish adopting a lost accept").await;
    assert_eq!(attempts(s, &assigned).await.len(), 1);
    assert_eq!(
        not_found(
            "finish_task of an unknown task",
            s.finish_task(&a, &task_id(9), e, &SUCCEEDED, RunDetails::default(), at(2), Retry::fixed(BACKOFF)).await
        ),
        "task"
    );
}

// -- cancelling ----------------------------------------------------------------------

pub async fn cancel_queued_is_immediate(store: Arc<dyn Store>) {
    let s = &*store;
    let task = submit(s, 1, spec("never mind"), at(0)).await;
    let mark = last_seq(s).await;
    let (cancelled, outcome) = ok("cancel_task", s.cancel_task(&task, at(1)).await);
    assert_eq!(outcome, Cancel::Done { notify: None });
    assert_eq!((cancelled.state, cancelled.finished_at), (TaskState::Cancelled, Some(at(1))));
    assert_eq!(get(s, &task).await, cancelled);
    assert_events(s, mark, &["task.cancelled"], "cancelling a queued task").await;

    let a = online(s, "a", 1, at(2)).await;
    assert_eq!(claim(s, &a, at(3)).await, [], "a cancelled task is never claimed");
    let before = snapshot(s).await;
    let r = refusal("cancel_task of a cancelled task", s.cancel_task(&task, at(4)).await);
    assert_wrong_state("cancel_task of a cancelled task", r, TaskState::Cancelled);
    assert_unchanged(s, &before, "a refused cancel").await;
    assert_eq!(not_found("cancel_task of an unknown task", s.cancel_task(&task_id(9), at(4)).await), "task");
}

pub async fn cancel_assigned_notifies_the_holder(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = assign(s, &a, &task, at(1)).await;

    let mark = last_seq(s).await;
    let (cancelled, outcome) = ok("cancel_task", s.cancel_task(&task, at(2)).await);
    assert_eq!(outcome, Cancel::Done { notify: Some((a.clone(), e)) });
    assert_eq!((cancelled.state, cancelled.lease.as_ref()), (TaskState::Cancelled, None));
    assert_events(s, mark, &["task.cancelled"], "cancelling an assigned task").await;
    assert_eq!(get_agent(s, &a).await.status.used_slots, 0, "a cancelled assignment frees its slot");

    let before = snapshot(s).await;
    let r = refusal("start_task of a cancelled assignment", s.start_task(&a, &task, e, at(3), LEASE).await);
    assert_stale("start_task of a cancelled assignment", r, e, e);
    assert_unchanged(s, &before, "a start after cancel").await;
}

pub async fn cancel_running_is_requested_then_finished(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let task = submit(s, 1, spec("long"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let mark = last_seq(s).await;
    let (running, outcome) = ok("cancel_task", s.cancel_task(&task, at(1)).await);
    assert_eq!(outcome, Cancel::Requested { agent: a.clone(), epoch: e });
    assert_eq!((running.state, running.cancel_requested), (TaskState::Running, true));
    assert!(running.lease.is_some(), "a running task keeps its lease until the agent reports back");
    assert_eq!(get(s, &task).await, running);
    assert_events(s, mark, &["task.cancel_requested"], "cancelling a running task").await;
    let hb = ok("heartbeat", s.heartbeat(&a, &[(task.clone(), e)], at(2), LEASE).await);
    assert_eq!(hb.renewed, 1, "a run being cancelled is still renewed");

    let mark = last_seq(s).await;
    let (cancelled, result) = finish(s, &a, &task, e, &RunOutcome::Cancelled, at(3)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Cancelled));
    assert_eq!((cancelled.state, cancelled.finished_at), (TaskState::Cancelled, Some(at(3))));
    assert_events(s, mark, &["task.cancelled"], "finishing a cancelled run").await;
    assert_eq!(attempts(s, &task).await[0].outcome.map(Outcome::as_str), Some("cancelled"));

    // With a cancel pending, a failure is not retried.
    let other = submit(s, 2, spec("also long"), at(4)).await;
    let e2 = start(s, &a, &other, at(4)).await;
    ok("cancel_task", s.cancel_task(&other, at(5)).await);
    let (ended, result) = finish(s, &a, &other, e2, &failed("killed"), at(6)).await;
    assert_eq!(result, FinishResult::Applied(Finished::Cancelled));
    assert_eq!(ended.state, TaskState::Cancelled);
}

// -- reclaiming ----------------------------------------------------------------------

pub async fn reclaim_requeues_an_expired_running_task(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    let expires = at(0).plus(LEASE);

    let before = snapshot(s).await;
    assert!(
        ok("reclaim_expired", s.reclaim_expired(just_before(expires), 10).await).is_empty(),
        "a live lease was reclaimed"
    );
    assert_unchanged(s, &before, "reclaim before any lease expired").await;

    let mark = last_seq(s).await;
    let reclaimed = ok("reclaim_expired", s.reclaim_expired(expires, 10).await);
    assert_eq!(reclaimed.len(), 1);
    let (requeued, how) = &reclaimed[0];
    assert_eq!(*how, Reclaimed::Requeued);
    assert_eq!(
        (&requeued.id, requeued.state, requeued.attempts),
        (&task, TaskState::Queued, 1),
        "an expired run uses its attempt"
    );
    assert_eq!((requeued.lease.as_ref(), requeued.ready_at), (None, expires));
    assert_eq!(requeued.reason.as_deref(), Some("lease_expired"));
    assert_eq!(get(s, &task).await, *requeued);
    assert_events(s, mark, &["task.reclaimed"], "reclaiming an expired run").await;
    let attempt = &attempts(s, &task).await[0];
    assert_eq!((attempt.outcome.map(Outcome::as_str), attempt.finished_at), (Some("lease_expired"), Some(expires)));

    // The superseded holder's late report is refused.
    let before = snapshot(s).await;
    refusal(
        "finish_task after the lease expired",
        s.finish_task(&a, &task, e, &SUCCEEDED, RunDetails::default(), at(31), Retry::fixed(BACKOFF)).await,
    );
    assert_unchanged(s, &before, "a finish after reclaim").await;
}

pub async fn reclaim_requeues_an_unaccepted_assignment_without_using_an_attempt(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, with_attempts(spec("work"), 1), at(0)).await;
    let e = assign(s, &a, &task, at(0)).await;
    let deadline = at(0).plus(ACCEPT);
    assert!(ok("reclaim_expired", s.reclaim_expired(just_before(deadline), 10).await).is_empty());

    let mark = last_seq(s).await;
    let reclaimed = ok("reclaim_expired", s.reclaim_expired(deadline, 10).await);
    assert_eq!(reclaimed.iter().map(|(t, how)| (&t.id, *how)).collect::<Vec<_>>(), [(&task, Reclaimed::Requeued)]);
    let requeued = get(s, &task).await;
    assert_eq!(
        (requeued.state, requeued.attempts, requeued.lease.as_ref()),
        (TaskState::Queued, 0, None),
        "an unaccepted assignment uses no attempt"
    );
    assert_eq!(attempts(s, &task).await, []);
    assert_events(s, mark, &["task.reclaimed"], "reclaiming an unaccepted assignment").await;

    let before = snapshot(s).await;
    let r = refusal("start_task after the assignment expired", s.start_task(&a, &task, e, at(11), LEASE).await);
    assert_stale("start_task after the assignment expired", r, e, e);
    assert_unchanged(s, &before, "a start after reclaim").await;
    assert_eq!(start(s, &a, &task, at(12)).await, Epoch(2), "the only attempt is still there to use");
}

pub async fn reclaim_fails_or_cancels_when_nothing_is_left(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let last = submit(s, 1, with_attempts(spec("last chance"), 1), at(0)).await;
    start(s, &a, &last, at(0)).await;
    let doomed = submit(s, 2, spec("cancel pending"), at(0)).await;
    start(s, &a, &doomed, at(0)).await;
    ok("cancel_task", s.cancel_task(&doomed, at(1)).await);

    let mark = last_seq(s).await;
    let mut reclaimed: Vec<(TaskId, TaskState, Reclaimed)> = ok("reclaim_expired", s.reclaim_expired(at(30), 10).await)
        .into_iter()
        .map(|(t, how)| (t.id, t.state, how))
        .collect();
    reclaimed.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        reclaimed,
        [
            (last.clone(), TaskState::Failed, Reclaimed::Failed),
            (doomed.clone(), TaskState::Cancelled, Reclaimed::Cancelled)
        ]
    );
    let mut appended: Vec<(String, Option<TaskId>)> =
        events_after(s, mark).await.into_iter().map(|e| (e.kind, e.task)).collect();
    appended.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        appended,
        [("task.failed".to_owned(), Some(last.clone())), ("task.cancelled".to_owned(), Some(doomed.clone()))]
    );
    assert_eq!(get(s, &last).await.finished_at, Some(at(30)));
}

pub async fn reclaim_honours_its_limit(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = submit(s, n, spec("work"), at(n as i64)).await;
        start(s, &a, &id, at(n as i64)).await;
        ids.push(id);
    }
    let first = ok("reclaim_expired", s.reclaim_expired(at(40), 2).await);
    assert_eq!(first.len(), 2, "reclaim_expired must take at most `limit` tasks");
    let second = ok("reclaim_expired", s.reclaim_expired(at(40), 2).await);
    assert_eq!(second.len(), 1);
    assert!(ok("reclaim_expired", s.reclaim_expired(at(40), 2).await).is_empty());
    let mut all: Vec<TaskId> = first.into_iter().chain(second).map(|(t, _)| t.id).collect();
    all.sort();
    assert_eq!(all, ids);
}

pub async fn hub_started_disconnects_agents_and_extends_leases(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let running = submit(s, 1, spec("running"), at(0)).await;
    let e = start(s, &a, &running, at(0)).await;
    let assigned = submit(s, 2, spec("assigned"), at(0)).await;
    assign(s, &a, &assigned, at(0)).await;
    let long = submit(s, 3, spec("long lease"), at(0)).await;
    let long_epoch = start(s, &b, &long, at(0)).await;
    ok("heartbeat", s.heartbeat(&b, &[(long.clone(), long_epoch)], at(1), Duration::from_secs(1_000)).await);

    let mark = last_seq(s).await;
    let grace = Duration::from_secs(60);
    ok("hub_started", s.hub_started(at(5), grace).await);
    for agent in [&a, &b] {
        let record = get_agent(s, agent).await;
        assert!(!record.status.connected, "hub_started must mark {agent} disconnected");
        assert_eq!(record.session, 1, "hub_started must not change sessions");
    }
    let until = at(5).plus(grace);
    let lease = |t: Task| t.lease.expect("still leased").expires_at;
    assert_eq!(lease(get(s, &running).await), until, "a running lease is extended by the grace");
    assert_eq!(lease(get(s, &assigned).await), until, "an assignment is extended by the grace");
    assert_eq!(lease(get(s, &long).await), at(1_001), "a lease longer than the grace is not shortened");
    let mut appended: Vec<(String, Option<AgentName>)> =
        events_after(s, mark).await.into_iter().map(|e| (e.kind, e.agent)).collect();
    appended.sort();
    assert_eq!(
        appended,
        [
            ("agent.disconnected".to_owned(), Some(a.clone())),
            ("agent.disconnected".to_owned(), Some(b.clone())),
            ("hub.started".to_owned(), None)
        ]
    );

    assert!(
        ok("reclaim_expired", s.reclaim_expired(just_before(until), 10).await).is_empty(),
        "leases within the grace were reclaimed"
    );
    // The agent comes back within the grace and carries on.
    assert_eq!(connect(s, &a, &["shell"], &[], 3, at(10)).await, 2);
    // Renewed past the end of the grace, so only the unrenewed assignment expires there.
    let hb = ok("heartbeat", s.heartbeat(&a, &[(running.clone(), e)], at(11), Duration::from_secs(120)).await);
    assert_eq!((hb.renewed, hb.stale), (1, Vec::new()));
    let mut reclaimed: Vec<TaskId> =
        ok("reclaim_expired", s.reclaim_expired(until, 10).await).into_iter().map(|(t, _)| t.id).collect();
    reclaimed.sort();
    assert_eq!(reclaimed, [assigned], "only the assignment nobody renewed expires at the end of the grace");
}

// -- output --------------------------------------------------------------------------

/// On main an assignment committed just before a hub crash, and never
/// delivered, held one of its agent's slots until `restart_grace` after the
/// last restart. Now the agent's `hello` says what it holds, and the rest is
/// taken back in the same transaction that records the connection.
pub async fn a_reconnecting_agent_gives_back_at_once_what_it_does_not_hold(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let running = submit(s, 1, TaskSpec { max_attempts: 2, ..spec("running") }, at(0)).await;
    let e1 = start(s, &a, &running, at(0)).await;
    let lost = submit(s, 2, spec("assigned, never delivered"), at(1)).await;
    let e2 = assign(s, &a, &lost, at(1)).await;
    ok("hub_started", s.hub_started(at(2), Duration::from_secs(600)).await);

    let hello = |holds: Vec<(TaskId, Epoch)>| Announce {
        runners: runners(&["shell"]),
        slots: 2,
        version: "1.0.0".to_owned(),
        holds: Some(holds),
        ..Announce::default()
    };
    let mark = last_seq(s).await;
    let (record, _) = ok("agent_connected", s.agent_connected(&a, hello(vec![(running.clone(), e1)]), at(3)).await);
    assert_events(s, mark, &["agent.connected", "task.reclaimed"], "a reconnect without the assignment").await;
    let back = get(s, &lost).await;
    assert_eq!((back.state, back.lease.as_ref(), back.ready_at, back.attempts), (TaskState::Queued, None, at(3), 0));
    assert_eq!(back.reason.as_deref(), Some("its agent connected again without it"));
    assert_eq!(get(s, &running).await.state, TaskState::Running, "what it holds goes on");
    assert_eq!(record.status.used_slots, 1, "the slot is free again");
    let again = assign(s, &a, &lost, at(4)).await;
    assert!(again > e2, "handed out again under a new epoch ({again} after {e2})");
    let refused = s.start_task(&a, &lost, e2, at(4), LEASE).await;
    assert!(matches!(refused, Err(StoreError::Refused(Refused::StaleEpoch { .. }))), "{refused:?}");

    // A run that died with its agent ends its attempt and retries.
    let mark = last_seq(s).await;
    ok("agent_connected", s.agent_connected(&a, hello(vec![(lost.clone(), again)]), at(5)).await);
    assert_events(s, mark, &["agent.connected", "task.reclaimed"], "a reconnect without the run").await;
    let retried = get(s, &running).await;
    assert_eq!((retried.state, retried.attempts), (TaskState::Queued, 1));
    assert_eq!(retried.reason.as_deref(), Some("its agent connected again without this run"));
    assert_eq!(attempts(s, &running).await[0].outcome.map(Outcome::as_str), Some("lease_expired"));
    assert_eq!(get(s, &lost).await.state, TaskState::Assigned, "the new assignment it holds stays");
    // Without a list (an older agent, a store client), nothing is taken back.
    ok("agent_connected", s.agent_connected(&a, Announce { holds: None, ..hello(Vec::new()) }, at(6)).await);
    assert_eq!(get(s, &lost).await.state, TaskState::Assigned);
}

pub async fn append_output_stops_at_the_cap(store: Arc<dyn Store>) {
    let s = &*store;
    let cap = Limits::default().max_output_bytes_per_attempt;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("chatty"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let first = vec![stdout(b"hello\n"), OutputChunk { stream: Stream::Stderr, data: b"warn\n".to_vec() }];
    let appended = ok("append_output", s.append_output(&a, &task, e, first, at(1)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: 11, truncated: false });

    let big = (cap as usize) / 4 * 3;
    let appended = ok("append_output", s.append_output(&a, &task, e, vec![stdout(&vec![b'x'; big])], at(2)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: 11 + big as u64, truncated: false });
    // This chunk crosses the cap: what fits is kept, the rest dropped.
    let appended = ok("append_output", s.append_output(&a, &task, e, vec![stdout(&vec![b'y'; big])], at(3)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: cap, truncated: true }, "output past the cap is truncated");
    let appended = ok("append_output", s.append_output(&a, &task, e, vec![stdout(b"more")], at(4)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: cap, truncated: true }, "nothing is kept once truncated");

    let stored = output(s, &task, None, 0).await;
    assert_eq!(
        stored.iter().map(|o| o.data.len() as u64).sum::<u64>(),
        cap,
        "read_output must return exactly the capped bytes"
    );
    assert!(stored.iter().all(|o| !o.data.starts_with(b"more")), "output after truncation was kept");
    let attempt = &attempts(s, &task).await[0];
    assert_eq!((attempt.output_bytes, attempt.output_truncated), (cap, true));

    // The cap is per attempt: the next one starts empty.
    finish(s, &a, &task, e, &failed("too chatty"), at(5)).await;
    let e2 = start(s, &a, &task, at(5).plus(BACKOFF)).await;
    let appended = ok("append_output", s.append_output(&a, &task, e2, vec![stdout(b"again")], at(11)).await);
    assert_eq!(appended, AppendOutput { stored_bytes: 5, truncated: false });
}

fn tool_use(name: &str, summary: &str) -> NewStep {
    NewStep {
        kind: StepKind::ToolUse,
        name: Some(name.into()),
        summary: summary.into(),
        is_error: false,
        duration_ms: None,
    }
}

async fn steps(s: &dyn Store, id: &TaskId, attempt: Option<u32>) -> Vec<(u32, u64, NewStep)> {
    ok("steps", s.steps(id, attempt).await).into_iter().map(|r| (r.attempt, r.seq, r.step)).collect()
}

pub async fn steps_are_kept_in_order_up_to_the_limit_with_the_latest_live(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("agentic"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let session = NewStep {
        kind: StepKind::Session,
        name: Some("model-x".into()),
        summary: "sess-1".into(),
        is_error: false,
        duration_ms: None,
    };
    let result = NewStep {
        kind: StepKind::ToolResult,
        name: Some("Bash".into()),
        summary: "no such file".into(),
        is_error: true,
        duration_ms: Some(40),
    };
    let mark = last_seq(s).await;
    ok("append_steps", s.append_steps(&a, &task, e, vec![session.clone(), tool_use("Bash", "ls")], at(1)).await);
    ok("append_steps", s.append_steps(&a, &task, e, vec![result.clone()], at(2)).await);
    ok("append_steps", s.append_steps(&a, &task, e, Vec::new(), at(2)).await);
    let events = assert_events(s, mark, &["task.step", "task.step"], "append_steps").await;
    assert_eq!(events[0].detail.as_deref(), Some("tool_use: Bash: ls"), "an event names the batch's latest step");
    assert_eq!(events[1].detail.as_deref(), Some("tool_result: Bash: no such file"));
    assert_eq!(
        steps(s, &task, None).await,
        [(1, 1, session), (1, 2, tool_use("Bash", "ls")), (1, 3, result)],
        "steps come back in order, numbered within the attempt"
    );
    let attempt = &attempts(s, &task).await[0];
    assert_eq!((attempt.steps, attempt.latest_step.as_deref()), (3, Some("tool_result: Bash: no such file")));

    // Past the limit steps are counted, not kept; the latest still shows.
    let flood: Vec<NewStep> = (0..MAX_STEPS).map(|i| tool_use("Read", &format!("file {i}"))).collect();
    ok("append_steps", s.append_steps(&a, &task, e, flood, at(3)).await);
    let attempt = &attempts(s, &task).await[0];
    assert_eq!(attempt.steps, MAX_STEPS + 3);
    assert_eq!(attempt.latest_step.as_deref(), Some(format!("tool_use: Read: file {}", MAX_STEPS - 1).as_str()));
    let kept = steps(s, &task, Some(1)).await;
    assert_eq!(kept.len() as u64, MAX_STEPS, "no more than MAX_STEPS steps are stored");
    assert_eq!(kept.last().map(|k| k.1), Some(MAX_STEPS));

    // A long summary is clipped, not refused.
    finish(s, &a, &task, e, &failed("again"), at(4)).await;
    let e2 = start(s, &a, &task, at(4).plus(BACKOFF)).await;
    let long = tool_use("Write", &"z".repeat(crate::MAX_STEP_SUMMARY * 3));
    ok("append_steps", s.append_steps(&a, &task, e2, vec![long], at(10)).await);
    let second = steps(s, &task, Some(2)).await;
    assert_eq!(second.len(), 1, "each attempt has its own steps");
    assert_eq!((second[0].0, second[0].1), (2, 1), "numbering starts again for the next attempt");
    assert!(second[0].2.summary.chars().count() <= crate::MAX_STEP_SUMMARY + 1, "a summary is clipped");
}

pub async fn append_steps_and_set_live_with_a_stale_epoch_are_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("agentic"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    let before = snapshot(s).await;
    let r = refusal(
        "append_steps by another agent",
        s.append_steps(&b, &task, e, vec![tool_use("Bash", "x")], at(1)).await,
    );
    assert_stale("append_steps by another agent", r, e, e);
    let newer = Epoch(e.0 + 1);
    let r = refusal(
        "append_steps with a newer epoch",
        s.append_steps(&a, &task, newer, vec![tool_use("Bash", "x")], at(1)).await,
    );
    assert_stale("append_steps with a newer epoch", r, e, newer);
    assert_unchanged(s, &before, "a refused append_steps").await;
    assert!(steps(s, &task, None).await.is_empty());
    let r = refusal("set_live by another agent", s.set_live(&b, &task, e, Live::Quiet, None, at(1)).await);
    assert_stale("set_live by another agent", r, e, e);
    assert_unchanged(s, &before, "a refused set_live").await;

    let mark = last_seq(s).await;
    ok("set_live", s.set_live(&a, &task, e, Live::Quiet, Some("no output for 1m"), at(1)).await);
    let events = assert_events(s, mark, &["task.live"], "set_live").await;
    assert_eq!(events[0].detail.as_deref(), Some("quiet: no output for 1m"));
    let attempt = &attempts(s, &task).await[0];
    assert_eq!((attempt.live.as_deref(), attempt.live_detail.as_deref()), (Some("quiet"), Some("no output for 1m")));
    ok("set_live", s.set_live(&a, &task, e, Live::Working, None, at(2)).await);
    assert_eq!(attempts(s, &task).await[0].live_detail, None, "a new status replaces the old detail");

    finish(s, &a, &task, e, &SUCCEEDED, at(2)).await;
    refusal("append_steps after finish", s.append_steps(&a, &task, e, vec![tool_use("Bash", "late")], at(3)).await);
    refusal("set_live after finish", s.set_live(&a, &task, e, Live::Quiet, None, at(3)).await);
    assert!(steps(s, &task, None).await.is_empty());
}

fn details(report: RunReport) -> RunDetails {
    RunDetails { report: Some(report), ..RunDetails::default() }
}

/// On main a run whose output was lost on its way (the hub died while it
/// was sent) succeeded with no sign of the gap.
pub async fn an_attempt_missing_output_its_agent_sent_says_its_output_is_incomplete(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let whole = submit(s, 1, spec("whole"), at(0)).await;
    let gap = submit(s, 2, spec("gap"), at(0)).await;
    let claimed = claim(s, &a, at(0)).await;
    assert_eq!(claimed, [whole.clone(), gap.clone()]);
    let mut epochs = Vec::new();
    for id in [&whole, &gap] {
        let e = get(s, id).await.epoch;
        ok("start_task", s.start_task(&a, id, e, at(0), LEASE).await);
        epochs.push(e);
    }
    let (e1, e2) = (epochs[0], epochs[1]);
    for (id, e) in [(&whole, e1), (&gap, e2)] {
        for line in [b"one\n".as_slice(), b"two\n"] {
            ok("append_output", s.append_output(&a, id, e, vec![stdout(line)], at(1)).await);
        }
    }
    let sent = |n: u64| RunDetails { output_chunks: Some(n), ..RunDetails::default() };
    ok("finish_task", s.finish_task(&a, &whole, e1, &SUCCEEDED, sent(2), at(2), Retry::fixed(BACKOFF)).await);
    ok("finish_task", s.finish_task(&a, &gap, e2, &SUCCEEDED, sent(3), at(2), Retry::fixed(BACKOFF)).await);
    assert!(!attempts(s, &whole).await[0].output_incomplete, "all it sent is there");
    let lost = &attempts(s, &gap).await[0];
    assert!(lost.output_incomplete && lost.outcome.map(Outcome::as_str) == Some("succeeded"), "{lost:?}");
}

pub async fn finish_keeps_the_agents_report_of_the_run(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("agentic"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    let report = RunReport {
        session_id: Some("sess-1".into()),
        model: Some("model-x".into()),
        turns: Some(3),
        tokens: Tokens { input: 125, output: 27, cache_read: 1_000, cache_write: 5 },
        cost: Some(MicroUsd(1_040)),
        result: Some("wrote NOTES.md".into()),
        tool_uses: 2,
        tool_errors: 1,
    };
    assert_eq!(report.tokens.total(), 1_157);
    let r = ok(
        "finish_task",
        s.finish_task(&a, &task, e, &SUCCEEDED, details(report.clone()), at(1), Retry::fixed(BACKOFF)).await,
    );
    assert!(matches!(r.1, FinishResult::Applied(Finished::Succeeded)));
    assert_eq!(attempts(s, &task).await[0].report, Some(report.clone()), "the report is kept on the attempt");
    // A resend changes nothing, whatever it carries.
    let other = RunReport { turns: Some(99), ..report.clone() };
    let r =
        ok("finish_task", s.finish_task(&a, &task, e, &SUCCEEDED, details(other), at(2), Retry::fixed(BACKOFF)).await);
    assert_eq!(r.1, FinishResult::Duplicate);
    assert_eq!(attempts(s, &task).await[0].report, Some(report));

    // An attempt without a report says so, rather than claiming zero tokens.
    let plain = submit(s, 2, spec("plain"), at(3)).await;
    let e = start(s, &a, &plain, at(3)).await;
    finish(s, &a, &plain, e, &SUCCEEDED, at(4)).await;
    assert_eq!((&attempts(s, &plain).await[0].report, &attempts(s, &plain).await[0].workspace), (&None, &None));

    // A task in a worktree: its spec keeps the workspace, its attempt what changed.
    let workspace = muster_core::Workspace {
        repo: "web".into(),
        base: Some("origin/main".into()),
        auto_commit: true,
        keep: muster_core::Keep::Always,
    };
    let in_repo = submit(s, 3, TaskSpec { workspace: Some(workspace.clone()), ..spec("edit") }, at(5)).await;
    assert_eq!(get(s, &in_repo).await.spec.workspace, Some(workspace), "the workspace is part of the spec");
    let e = start(s, &a, &in_repo, at(5)).await;
    let changed = WorkspaceRecord {
        repo: "/srv/repos/web".into(),
        branch: format!("muster/{in_repo}"),
        base: "1111111111111111111111111111111111111111".into(),
        head: Some("2222222222222222222222222222222222222222".into()),
        commits: vec![("2222222".into(), "muster: edit\twith a tab".into())],
        files: vec![("A".into(), "NOTES.md".into()), ("M".into(), "src/lib.rs".into())],
        stat: " NOTES.md | 1 +\n 1 file changed".into(),
        diff: "diff --git a/NOTES.md b/NOTES.md\n+hello\n".into(),
        diff_truncated: false,
        kept_at: Some("/srv/work/worktrees/x".into()),
        error: None,
        snapshot: Some("refs/muster/x/1".into()),
    };
    let with =
        RunDetails { workspace: Some(changed.clone()), summary: Some("2 files".into()), ..RunDetails::default() };
    ok("finish_task", s.finish_task(&a, &in_repo, e, &SUCCEEDED, with, at(6), Retry::fixed(BACKOFF)).await);
    let listed = WorkspaceRecord { diff: String::new(), ..changed.clone() };
    assert_eq!(attempts(s, &in_repo).await[0].workspace, Some(listed), "attempts leave the diff out");
    assert_eq!(attempts(s, &in_repo).await[0].summary.as_deref(), Some("2 files"), "a summary is kept");
    assert_eq!(
        ok("attempt_diff", s.attempt_diff(&in_repo, 1).await),
        Some((changed.diff.clone(), false)),
        "the diff is read on its own"
    );
    assert_eq!(ok("attempt_diff", s.attempt_diff(&plain, 1).await), None, "no worktree, no diff");
}

pub async fn mark_output_truncated_flags_only_the_holders_attempt(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("chatty"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;

    let before = snapshot(s).await;
    let r = refusal("mark_output_truncated by another agent", s.mark_output_truncated(&b, &task, e, at(1)).await);
    assert_stale("mark_output_truncated by another agent", r, e, e);
    let r = refusal(
        "mark_output_truncated with a newer epoch",
        s.mark_output_truncated(&a, &task, Epoch(e.0 + 1), at(1)).await,
    );
    assert_stale("mark_output_truncated with a newer epoch", r, e, Epoch(e.0 + 1));
    assert_unchanged(s, &before, "a refused mark_output_truncated").await;
    assert!(!attempts(s, &task).await[0].output_truncated);

    ok("append_output", s.append_output(&a, &task, e, vec![stdout(b"kept")], at(1)).await);
    ok("mark_output_truncated", s.mark_output_truncated(&a, &task, e, at(1)).await);
    finish(s, &a, &task, e, &SUCCEEDED, at(2)).await;
    let attempt = &attempts(s, &task).await[0];
    assert!(attempt.output_truncated, "the holder's attempt is marked truncated");
    assert_eq!(attempt.output_bytes, 4, "the mark keeps what the hub stored");
    assert_eq!(output(s, &task, None, 0).await.len(), 1);
}

pub async fn append_output_with_a_stale_epoch_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    ok("append_output", s.append_output(&a, &task, e, vec![stdout(b"kept")], at(1)).await);
    let assigned = submit(s, 2, spec("not started"), at(1)).await;
    let assigned_epoch = assign(s, &a, &assigned, at(1)).await;

    let before = snapshot(s).await;
    let r = refusal(
        "append_output with a newer epoch",
        s.append_output(&a, &task, Epoch(2), vec![stdout(b"x")], at(2)).await,
    );
    assert_stale("append_output with a newer epoch", r, e, Epoch(2));
    let r = refusal("append_output by another agent", s.append_output(&b, &task, e, vec![stdout(b"x")], at(2)).await);
    assert_stale("append_output by another agent", r, e, e);
    refusal(
        "append_output by a non-holder before start",
        s.append_output(&b, &assigned, assigned_epoch, vec![stdout(b"x")], at(2)).await,
    );
    assert_unchanged(s, &before, "a refused append_output").await;

    // Output from the holder of a task still recorded as assigned means its
    // accept was lost: the run is real, so the task starts, keeping its lease deadline.
    let mark = last_seq(s).await;
    let deadline = ok("task", s.task(&assigned).await).expect("the task").lease.expect("a lease").expires_at;
    ok("append_output", s.append_output(&a, &assigned, assigned_epoch, vec![stdout(b"x")], at(2)).await);
    assert_events(s, mark, &["task.started"], "output adopting a lost accept").await;
    let adopted = ok("task", s.task(&assigned).await).expect("the task");
    assert_eq!((adopted.state, adopted.attempts), (TaskState::Running, 1));
    assert_eq!(adopted.lease.expect("a lease").expires_at, deadline);

    finish(s, &a, &task, e, &SUCCEEDED, at(3)).await;
    let before = snapshot(s).await;
    refusal("append_output after finish", s.append_output(&a, &task, e, vec![stdout(b"late")], at(4)).await);
    assert_unchanged(s, &before, "append_output after finish").await;
    let all: Vec<Vec<u8>> = output(s, &task, None, 0).await.into_iter().map(|o| o.data).collect();
    assert_eq!(all, [b"kept".to_vec()]);
    assert_eq!(
        not_found(
            "append_output to an unknown task",
            s.append_output(&a, &task_id(9), e, vec![stdout(b"x")], at(5)).await
        ),
        "task"
    );
}

pub async fn read_output_filters_by_attempt_and_after(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let e1 = start(s, &a, &task, at(0)).await;
    ok("append_output", s.append_output(&a, &task, e1, vec![stdout(b"one")], at(1)).await);
    finish(s, &a, &task, e1, &failed("once"), at(2)).await;
    let e2 = start(s, &a, &task, at(2).plus(BACKOFF)).await;
    let chunks = vec![stdout(b"two-a"), OutputChunk { stream: Stream::Stderr, data: b"two-b".to_vec() }];
    ok("append_output", s.append_output(&a, &task, e2, chunks, at(8)).await);
    ok("append_output", s.append_output(&a, &task, e2, vec![stdout(b"two-c")], at(9)).await);

    let all = output(s, &task, None, 0).await;
    let summary: Vec<(u32, Stream, Millis, &[u8])> =
        all.iter().map(|o| (o.attempt, o.stream, o.at, o.data.as_slice())).collect();
    assert_eq!(
        summary,
        [
            (1, Stream::Stdout, at(1), &b"one"[..]),
            (2, Stream::Stdout, at(8), &b"two-a"[..]),
            (2, Stream::Stderr, at(8), &b"two-b"[..]),
            (2, Stream::Stdout, at(9), &b"two-c"[..]),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "output must come in sequence order");
    assert_eq!(output(s, &task, Some(2), 0).await, all[1..], "filter by attempt");
    assert_eq!(output(s, &task, Some(1), 0).await, all[..1]);
    assert_eq!(output(s, &task, None, all[1].seq).await, all[2..], "filter by after");
    assert_eq!(output(s, &task, Some(2), all[2].seq).await, all[3..], "filter by attempt and after");
    assert_eq!(output(s, &task, Some(3), 0).await, [], "an attempt that never ran has no output");
    let limited = ok("read_output", s.read_output(&task, &OutputFilter { attempt: None, after: 0, limit: 2 }).await);
    assert_eq!(limited, all[..2], "read_output honours its limit");
}

// -- events ----------------------------------------------------------------------------

pub async fn events_filter_by_task_agent_and_after(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let b = online(s, "b", 1, at(0)).await;
    let first = submit(s, 1, spec("first"), at(1)).await;
    let e = assign(s, &a, &first, at(2)).await;
    ok("start_task", s.start_task(&a, &first, e, at(3), LEASE).await);
    finish(s, &a, &first, e, &SUCCEEDED, at(4)).await;
    let second = submit(s, 2, spec("second"), at(5)).await;
    assign(s, &b, &second, at(6)).await;

    let all = events_after(s, 0).await;
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "event sequence numbers must increase");

    let of_first = all_events(s, EventFilter { task: Some(first.clone()), ..EventFilter::default() }).await;
    assert_eq!(kinds(&of_first), ["task.created", "task.assigned", "task.started", "task.succeeded"]);
    assert_eq!(
        of_first.iter().map(|e| e.at).collect::<Vec<_>>(),
        [at(1), at(2), at(3), at(4)],
        "events carry the injected time"
    );
    assert!(of_first.iter().all(|e| e.task.as_ref() == Some(&first)));
    let assigned = &of_first[1];
    assert_eq!(
        (assigned.agent.as_ref(), assigned.epoch, assigned.state.as_deref()),
        (Some(&a), Some(e), Some("assigned"))
    );

    let of_a = all_events(s, EventFilter { agent: Some(a.clone()), ..EventFilter::default() }).await;
    assert!(of_a.iter().all(|ev| ev.agent.as_ref() == Some(&a)), "filter by agent returned another agent's events");
    let a_kinds = kinds(&of_a);
    for kind in ["agent.registered", "agent.connected", "task.assigned", "task.started", "task.succeeded"] {
        assert!(a_kinds.contains(&kind), "agent a's events lack {kind}: {a_kinds:?}");
    }
    assert!(of_a.iter().all(|ev| ev.task.as_ref() != Some(&second)), "agent a's events include b's task");

    let after = all[2].seq;
    assert_eq!(events_after(s, after).await, all[3..], "filter by after");
    let later_first =
        all_events(s, EventFilter { after: of_first[1].seq, task: Some(first.clone()), ..EventFilter::default() })
            .await;
    assert_eq!(later_first, of_first[2..], "filter by task and after");
    let limited = ok("events", s.events(&EventFilter { limit: 2, ..EventFilter::default() }).await);
    assert_eq!(limited, all[..2], "events honours its limit");
}

pub async fn record_event_appends_what_it_is_given(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("work"), at(0)).await;
    let mark = last_seq(s).await;
    let event = NewEvent {
        kind: "operator.note",
        task: Some(task.clone()),
        agent: Some(a.clone()),
        epoch: Some(Epoch(3)),
        state: Some("noted".to_owned()),
        detail: Some("looked at it".to_owned()),
    };
    ok("record_event", s.record_event(event, at(9)).await);
    let appended = events_after(s, mark).await;
    assert_eq!(appended.len(), 1);
    assert_eq!(
        appended[0],
        Event {
            seq: appended[0].seq,
            at: at(9),
            kind: "operator.note".to_owned(),
            task: Some(task),
            agent: Some(a),
            epoch: Some(Epoch(3)),
            state: Some("noted".to_owned()),
            detail: Some("looked at it".to_owned()),
        }
    );
    assert!(appended[0].seq > mark);
}

pub async fn subscribe_advances_after_a_write(store: Arc<dyn Store>) {
    let s = &*store;
    let mut rx = s.subscribe();
    let start = *rx.borrow_and_update();
    submit(s, 1, spec("work"), at(0)).await;
    let target = last_seq(s).await;
    assert!(target > start, "create_task appended no event");
    let seen = tokio::time::timeout(WATCH_BOUND, rx.wait_for(|seq| *seq >= target))
        .await
        .expect("subscribe() never reached the latest event after a write")
        .map(|seq| *seq)
        .expect("the store dropped its event watch");
    assert_eq!(seen, target, "the watch must hold the latest committed event, not one past it");

    ok("cancel_task", s.cancel_task(&task_id(1), at(1)).await);
    let target = last_seq(s).await;
    tokio::time::timeout(WATCH_BOUND, rx.wait_for(|seq| *seq >= target))
        .await
        .expect("subscribe() did not advance after a second write")
        .expect("the store dropped its event watch");
    // A receiver taken later starts from the latest committed event.
    let late = s.subscribe();
    let late_seen = *late.borrow();
    assert!(late_seen <= target, "a new receiver is ahead of the events: {late_seen} > {target}");
}

// -- listing -----------------------------------------------------------------------------

pub async fn list_tasks_pages_newest_first_and_filters(store: Arc<dyn Store>) {
    let s = &*store;
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(submit(s, n, spec("work"), at(n as i64)).await);
    }
    let page = |filter: TaskFilter| async move { ok("list_tasks", s.list_tasks(&filter).await) };
    let ids_of = |tasks: &[Task]| tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();

    let p1 = page(TaskFilter { limit: 2, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&p1.items), [ids[4].clone(), ids[3].clone()], "newest first");
    let p2 = page(TaskFilter { limit: 2, before: p1.next, ..TaskFilter::default() }).await;
    assert!(p1.next.is_some(), "a full page must say where the next begins");
    assert_eq!(ids_of(&p2.items), [ids[2].clone(), ids[1].clone()]);
    let p3 = page(TaskFilter { limit: 2, before: p2.next, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&p3.items), [ids[0].clone()]);
    assert_eq!(p3.next, None, "the last page has no next");
    let exact = page(TaskFilter { limit: 5, ..TaskFilter::default() }).await;
    assert_eq!((exact.items.len(), exact.next), (5, None), "a page holding exactly the rest is the last");

    ok("cancel_task", s.cancel_task(&ids[1], at(6)).await);
    ok("cancel_task", s.cancel_task(&ids[3], at(6)).await);
    let cancelled = page(TaskFilter { state: Some(TaskState::Cancelled), limit: 10, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&cancelled.items), [ids[3].clone(), ids[1].clone()], "filter by state");
    let q1 = page(TaskFilter { state: Some(TaskState::Queued), limit: 2, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&q1.items), [ids[4].clone(), ids[2].clone()]);
    let q2 =
        page(TaskFilter { state: Some(TaskState::Queued), limit: 2, before: q1.next, ..TaskFilter::default() }).await;
    assert_eq!((ids_of(&q2.items), q2.next), (vec![ids[0].clone()], None), "pages of a filtered list");

    let a = online(s, "a", 1, at(7)).await;
    let claimed = claim(s, &a, at(8)).await;
    assert_eq!(claimed, [ids[0].clone()], "the oldest queued task goes first");
    let of_a = page(TaskFilter { agent: Some(a), limit: 10, ..TaskFilter::default() }).await;
    assert_eq!(ids_of(&of_a.items), [ids[0].clone()], "filter by agent");
}

pub async fn list_tasks_filters_by_priority_runner_capability_and_text(store: Arc<dyn Store>) {
    let s = &*store;
    let mut claude = spec("Fix the 100% CPU loop in the PARSER");
    claude.runner = runners(&["claude"]).remove(0);
    let urgent = submit(s, 1, with_priority(claude, Priority::Urgent), at(1)).await;
    let gpu = submit(s, 2, with_caps(spec("train the model_a"), &["gpu", "linux"]), at(2)).await;
    let plain = submit(s, 3, spec("write docs for modelxa"), at(3)).await;
    let ids = |filter: TaskFilter| async move {
        let page = ok("list_tasks", s.list_tasks(&TaskFilter { limit: 10, ..filter }).await);
        page.items.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(TaskFilter { priority: Some(Priority::Urgent), ..TaskFilter::default() }).await,
        vec![urgent.clone()]
    );
    assert_eq!(
        ids(TaskFilter { priority: Some(Priority::Normal), ..TaskFilter::default() }).await,
        vec![plain.clone(), gpu.clone()]
    );
    assert_eq!(
        ids(TaskFilter { runner: Some(runners(&["claude"]).remove(0)), ..TaskFilter::default() }).await,
        vec![urgent.clone()]
    );
    let gpu_cap = caps(&["gpu"]).remove(0);
    assert_eq!(ids(TaskFilter { capability: Some(gpu_cap), ..TaskFilter::default() }).await, vec![gpu.clone()]);
    let text = |t: &str| TaskFilter { text: Some(t.to_owned()), ..TaskFilter::default() };
    assert_eq!(ids(text("parser")).await, vec![urgent.clone()], "text ignores case");
    assert_eq!(ids(text("100%")).await, vec![urgent.clone()], "a % in the text is literal");
    assert_eq!(ids(text("0% C")).await, vec![urgent.clone()]);
    assert!(ids(text("1%0")).await.is_empty(), "a % in the text is not a wildcard");
    assert_eq!(ids(text("model_a")).await, vec![gpu.clone()], "an _ is not a wildcard: modelxa does not match");
    assert_eq!(ids(text("modelxa")).await, vec![plain.clone()]);
    assert_eq!(ids(text(plain.as_str())).await, vec![plain.clone()], "text finds an id");
    let both = TaskFilter {
        priority: Some(Priority::Normal),
        text: Some("docs".into()),
        state: Some(TaskState::Queued),
        ..TaskFilter::default()
    };
    assert_eq!(ids(both).await, vec![plain.clone()], "filters combine");
}

pub async fn events_filter_by_kind_and_read_backwards(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let first = submit(s, 1, spec("first"), at(1)).await;
    let e = assign(s, &a, &first, at(2)).await;
    ok("start_task", s.start_task(&a, &first, e, at(3), LEASE).await);
    finish(s, &a, &first, e, &SUCCEEDED, at(4)).await;
    let all = events_after(s, 0).await;
    let kind = |k: &str| EventFilter { kind: Some(k.to_owned()), ..EventFilter::default() };
    let succeeded = all_events(s, kind("task.succeeded")).await;
    assert_eq!(kinds(&succeeded), ["task.succeeded"]);
    let of_tasks = all_events(s, kind("task")).await;
    assert_eq!(
        kinds(&of_tasks),
        ["task.created", "task.assigned", "task.started", "task.succeeded"],
        "a family by its prefix"
    );
    assert!(all_events(s, kind("tas")).await.is_empty(), "a family is a whole dotted word");
    assert!(all_events(s, kind("TASK")).await.is_empty(), "kinds are matched as written");
    assert!(all_events(s, kind("task.%")).await.is_empty(), "a % in a kind is literal");

    let last = all.last().expect("events were written").seq;
    let back = ok("events", s.events(&EventFilter { before: Some(last), limit: 2, ..EventFilter::default() }).await);
    assert_eq!(back, all[all.len() - 3..all.len() - 1], "the newest two below `before`, oldest first");
    let back_tasks = ok(
        "events",
        s.events(&EventFilter {
            before: Some(last + 1),
            kind: Some("task".into()),
            limit: 3,
            ..EventFilter::default()
        })
        .await,
    );
    assert_eq!(kinds(&back_tasks), ["task.assigned", "task.started", "task.succeeded"]);
}

pub async fn count_tasks_by_priority_splits_each_state(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    submit(s, 1, with_priority(spec("u"), Priority::Urgent), at(0)).await;
    submit(s, 2, with_priority(spec("u"), Priority::Urgent), at(0)).await;
    submit(s, 3, with_priority(spec("l"), Priority::Low), at(0)).await;
    let running = submit(s, 4, spec("n"), at(1)).await;
    // The claim takes urgent work first; make the normal task the running one.
    for id in [task_id(1), task_id(2), task_id(3)] {
        ok("cancel_task", s.cancel_task(&id, at(1)).await);
    }
    start(s, &a, &running, at(2)).await;
    let mut counts = ok("count_tasks_by_priority", s.count_tasks_by_priority().await);
    counts.sort_by_key(|(st, p, _)| (st.as_str(), p.rank()));
    assert_eq!(
        counts,
        [
            (TaskState::Cancelled, Priority::Urgent, 2),
            (TaskState::Cancelled, Priority::Low, 1),
            (TaskState::Running, Priority::Normal, 1)
        ]
    );
}

pub async fn outcomes_since_counts_recent_attempts_by_outcome(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let old = submit(s, 1, spec("old"), at(0)).await;
    let e = start(s, &a, &old, at(0)).await;
    finish(s, &a, &old, e, &SUCCEEDED, at(1)).await;
    let flaky = submit(s, 2, spec("flaky"), at(10)).await;
    let e = start(s, &a, &flaky, at(10)).await;
    finish(s, &a, &flaky, e, &failed("boom"), at(11)).await;
    let e = start(s, &a, &flaky, at(11).plus(BACKOFF)).await;
    finish(s, &a, &flaky, e, &SUCCEEDED, at(20)).await;
    let running = submit(s, 3, spec("running"), at(20)).await;
    start(s, &a, &running, at(21)).await;

    let recent = ok("outcomes_since", s.outcomes_since(at(5)).await);
    assert_eq!(recent, [(Outcome::Failed, 1), (Outcome::Succeeded, 1)], "only attempts ended since then");
    let all = ok("outcomes_since", s.outcomes_since(at(0)).await);
    assert_eq!(all, [(Outcome::Failed, 1), (Outcome::Succeeded, 2)]);
    assert_eq!(ok("outcomes_since", s.outcomes_since(at(100)).await), []);
}

pub async fn write_stats_count_committed_batches(store: Arc<dyn Store>) {
    let s = &*store;
    let before = s.write_stats();
    submit(s, 1, spec("one"), at(0)).await;
    submit(s, 2, spec("two"), at(0)).await;
    let after = s.write_stats();
    assert!(after.batch_size.count > before.batch_size.count, "{before:?} -> {after:?}");
    assert_eq!(after.commit_seconds.count, after.batch_size.count, "one commit per batch");
    assert!(after.batch_size.sum >= before.batch_size.sum + 2.0, "every change is counted in some batch");
    assert_eq!(after.failed_batches, 0);
}

pub async fn alerts_are_saved_acknowledged_and_on_the_timeline(store: Arc<dyn Store>) {
    use muster_core::alert::{AlertState, Rule, Severity};
    let s = &*store;
    assert_eq!(ok("alerts", s.alerts().await), []);
    let r = s.acknowledge_alert(Rule::DiskLow, "admin", at(0)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "state"), "{r:?}");

    let mark = last_seq(s).await;
    let firing = crate::AlertRecord {
        rule: Rule::DiskLow,
        state: AlertState::Firing,
        severity: Severity::Critical,
        detail: Some("1% free".into()),
        since: Some(at(1)),
        acknowledged_by: None,
        acknowledged_at: None,
        updated_at: at(1),
    };
    ok("save_alert", s.save_alert(firing.clone(), Some("alert.firing"), at(1)).await);
    assert_eq!(ok("alerts", s.alerts().await), std::slice::from_ref(&firing));
    let acked = ok("acknowledge_alert", s.acknowledge_alert(Rule::DiskLow, "admin", at(2)).await);
    assert_eq!(
        (acked.state, acked.acknowledged_by.as_deref(), acked.acknowledged_at),
        (AlertState::Acknowledged, Some("admin"), Some(at(2)))
    );
    let again = s.acknowledge_alert(Rule::DiskLow, "admin", at(3)).await;
    assert!(matches!(again, Err(StoreError::Invalid(_))), "acknowledged twice: {again:?}");
    let resolved = crate::AlertRecord { state: AlertState::Resolved, updated_at: at(4), ..acked };
    ok("save_alert", s.save_alert(resolved.clone(), Some("alert.resolved"), at(4)).await);
    ok("save_alert", s.save_alert(resolved.clone(), None, at(5)).await);
    assert_eq!(ok("alerts", s.alerts().await), [resolved]);
    let events = assert_events(s, mark, &["alert.firing", "alert.acknowledged", "alert.resolved"], "alerts").await;
    assert_eq!(events[0].detail.as_deref(), Some("disk_low (critical): 1% free"));
    assert_eq!(events[1].state.as_deref(), Some("acknowledged"));
}

pub async fn settings_are_stored_by_key_with_an_event(store: Arc<dyn Store>) {
    let s = &*store;
    let mark = last_seq(s).await;
    let set = |k: &str, v: &str| (k.to_owned(), Some(v.to_owned()));
    let pairs = vec![set("alerts.disk_low.threshold", "0.1"), set("other.key", "x"), set("gone.soon", "y")];
    ok("put_settings", s.put_settings(pairs, "admin", at(1)).await);
    let pairs = vec![set("alerts.disk_low.threshold", "0.2"), ("gone.soon".to_owned(), None)];
    ok("put_settings", s.put_settings(pairs, "admin", at(2)).await);
    assert_eq!(
        ok("settings", s.settings("alerts.").await),
        [("alerts.disk_low.threshold".to_owned(), "0.2".to_owned())]
    );
    assert_eq!(ok("settings", s.settings("").await).len(), 2, "a None value removes its key");
    let events = assert_events(s, mark, &["config.changed", "config.changed"], "put_settings").await;
    assert_eq!(events[1].detail.as_deref(), Some("alerts.disk_low.threshold=0.2, gone.soon reset by admin"));
}

pub async fn quiet_running_tasks_are_counted(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let chatty = submit(s, 1, spec("chatty"), at(0)).await;
    let e = start(s, &a, &chatty, at(0)).await;
    let quiet = submit(s, 2, spec("quiet"), at(0)).await;
    start(s, &a, &quiet, at(0)).await;
    let fresh = submit(s, 3, spec("fresh"), at(0)).await;
    start(s, &a, &fresh, at(50)).await;
    ok("append_output", s.append_output(&a, &chatty, e, vec![stdout(b"still here")], at(45)).await);
    assert_eq!(ok("count_quiet_running", s.count_quiet_running(at(40)).await), 1, "only the quiet one");
    assert_eq!(ok("count_quiet_running", s.count_quiet_running(at(60)).await), 3);
    assert_eq!(ok("count_quiet_running", s.count_quiet_running(at(0)).await), 0, "none started before then");
}

pub async fn check_finds_nothing_wrong_with_a_store_used_normally(store: Arc<dyn Store>) {
    let s = &*store;
    tell_a_short_story(s).await;
    let report = ok("check", s.check(false, at(100)).await);
    assert_eq!(report, crate::CheckReport::default(), "a healthy store has no findings");
    let before = snapshot(s).await;
    let report = ok("check", s.check(true, at(100)).await);
    assert_eq!(report.repaired, Vec::<String>::new());
    assert_unchanged(s, &before, "a repair with nothing to repair").await;
}

/// Tasks in every state, retries, a reclaim and a cancel.
async fn tell_a_short_story(s: &dyn Store) {
    let a = online(s, "a", 3, at(0)).await;
    let running = submit(s, 4, spec("running"), at(0)).await;
    let re = start(s, &a, &running, at(0)).await;
    let done = submit(s, 1, spec("done"), at(0)).await;
    let e = start(s, &a, &done, at(0)).await;
    finish(s, &a, &done, e, &SUCCEEDED, at(1)).await;
    let retried = submit(s, 2, spec("retried"), at(0)).await;
    let e = start(s, &a, &retried, at(1)).await;
    finish(s, &a, &retried, e, &failed("once"), at(2)).await;
    let lost = submit(s, 3, spec("lost"), at(2)).await;
    start(s, &a, &lost, at(2)).await;
    ok("heartbeat", s.heartbeat(&a, &[(running.clone(), re)], at(20), LEASE).await);
    ok("reclaim_expired", s.reclaim_expired(at(2).plus(LEASE), 10).await);
    let cancelled = submit(s, 5, spec("cancelled"), at(40)).await;
    ok("cancel_task", s.cancel_task(&cancelled, at(41)).await);
}

pub async fn slo_counts_judge_queue_waits_and_run_times(store: Arc<dyn Store>) {
    use crate::SloKind;
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    // Waits 1 s, runs 2 s.
    let quick = submit(s, 1, spec("quick"), at(0)).await;
    let e = start(s, &a, &quick, at(1)).await;
    finish(s, &a, &quick, e, &SUCCEEDED, at(3)).await;
    // Waits 10 s, runs 60 s, fails.
    let slow = submit(s, 2, spec("slow"), at(3)).await;
    let e = start(s, &a, &slow, at(13)).await;
    finish(s, &a, &slow, e, &failed("late"), at(73)).await;
    // Cancelled runs do not count against run time.
    let gone = submit(s, 3, with_attempts(spec("gone"), 1), at(73)).await;
    let e = start(s, &a, &gone, at(73)).await;
    ok("cancel_task", s.cancel_task(&gone, at(74)).await);
    finish(s, &a, &gone, e, &RunOutcome::Cancelled, at(80)).await;

    let five = Duration::from_secs(5);
    assert_eq!(ok("slo_counts", s.slo_counts(SloKind::Dispatch, at(0), five).await), (2, 3));
    assert_eq!(ok("slo_counts", s.slo_counts(SloKind::Run, at(0), five).await), (1, 2));
    assert_eq!(ok("slo_counts", s.slo_counts(SloKind::Run, at(0), Duration::from_secs(60)).await), (2, 2));
    assert_eq!(
        ok("slo_counts", s.slo_counts(SloKind::Dispatch, at(10), five).await),
        (1, 2),
        "only attempts since then"
    );
}

pub async fn count_tasks_counts_every_state(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let succeeded = submit(s, 1, spec("ok"), at(0)).await;
    let e = start(s, &a, &succeeded, at(0)).await;
    finish(s, &a, &succeeded, e, &SUCCEEDED, at(1)).await;
    let dead = submit(s, 2, with_attempts(spec("dead"), 1), at(1)).await;
    let e = start(s, &a, &dead, at(1)).await;
    finish(s, &a, &dead, e, &failed("x"), at(2)).await;
    let running = submit(s, 3, spec("running"), at(2)).await;
    start(s, &a, &running, at(2)).await;
    let assigned = submit(s, 4, spec("assigned"), at(3)).await;
    assign(s, &a, &assigned, at(3)).await;
    let cancelled = submit(s, 5, spec("cancelled"), at(4)).await;
    ok("cancel_task", s.cancel_task(&cancelled, at(4)).await);
    submit(s, 6, spec("queued"), at(5)).await;
    submit(s, 7, spec("queued"), at(5)).await;
    submit(s, 9, TaskSpec { requires_approval: true, ..spec("gated") }, at(5)).await;
    submit(s, 10, TaskSpec { depends_on: vec![running.clone()], ..spec("blocked") }, at(5)).await;
    let asked = submit(s, 11, spec("asked"), at(5)).await;
    ok("open_decision", s.open_decision(question(&asked, None, false), at(5)).await);
    let skipped = submit(s, 8, spec("skipped"), at(5)).await;
    ok(
        "operate_task",
        s.operate_task(&skipped, crate::TaskOp::Skip { reason: "not needed".into() }, "ops", at(5)).await,
    );

    let counts = ok("count_tasks", s.count_tasks().await);
    let got: Vec<(TaskState, u64)> = TaskState::ALL.iter().map(|st| (*st, count(&counts, *st))).collect();
    assert_eq!(
        got,
        [
            (TaskState::Blocked, 1),
            (TaskState::PendingApproval, 1),
            (TaskState::NeedsDecision, 1),
            (TaskState::Queued, 2),
            (TaskState::Assigned, 1),
            (TaskState::Running, 1),
            (TaskState::Succeeded, 1),
            (TaskState::Failed, 1),
            (TaskState::Cancelled, 1),
            (TaskState::Skipped, 1),
        ]
    );
}

pub async fn next_due_is_the_earliest_backoff_or_lease(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let running = submit(s, 1, spec("running"), at(0)).await;
    start(s, &a, &running, at(0)).await;
    assert_eq!(ok("next_due", s.next_due().await), Some(at(0).plus(LEASE)), "a lease expiry is due");

    let flaky = submit(s, 2, spec("flaky"), at(1)).await;
    let e = start(s, &a, &flaky, at(1)).await;
    finish(s, &a, &flaky, e, &failed("x"), at(2)).await;
    assert_eq!(ok("next_due", s.next_due().await), Some(at(2).plus(BACKOFF)), "the end of a backoff is due");

    ok("cancel_task", s.cancel_task(&flaky, at(3)).await);
    assert_eq!(ok("next_due", s.next_due().await), Some(at(0).plus(LEASE)), "a finished task is never due");
}

// -- retention and compaction ------------------------------------------------------------

const DAY: Duration = Duration::from_secs(86_400);

fn days(n: i64) -> Millis {
    at(n * 86_400)
}

/// Runs `id` on `agent` to `outcome`, printing `out` first; starts at `start`, ends a second later.
async fn run_to(s: &dyn Store, agent: &AgentName, id: &TaskId, out: &[u8], outcome: &RunOutcome, start: Millis) {
    let e = assign(s, agent, id, start).await;
    ok("start_task", s.start_task(agent, id, e, start, LEASE).await);
    if !out.is_empty() {
        ok("append_output", s.append_output(agent, id, e, vec![stdout(out)], start).await);
    }
    finish(s, agent, id, e, outcome, start.plus(Duration::from_secs(1))).await;
}

async fn compact(s: &dyn Store, retention: crate::Retention, now: Millis) -> crate::CompactReport {
    let mark = last_seq(s).await;
    let report = ok("compact", s.compact(retention, true, now).await);
    let events = events_after(s, mark).await;
    assert_eq!(kinds(&events).last(), Some(&"db.compacted"), "a compaction ends with its event");
    assert_eq!(events.last().and_then(|e| e.detail.clone()), Some(report.summary()), "the event says what it did");
    report
}

pub async fn compaction_prunes_finished_tasks_past_their_age(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, days(0)).await;
    let old_ok = submit(s, 1, spec("old success"), days(0)).await;
    let e = start(s, &a, &old_ok, days(1)).await;
    ok("append_steps", s.append_steps(&a, &old_ok, e, vec![tool_use("Bash", "ls")], days(1)).await);
    ok("append_output", s.append_output(&a, &old_ok, e, vec![stdout(b"hello")], days(1)).await);
    finish(s, &a, &old_ok, e, &SUCCEEDED, days(1).plus(Duration::from_secs(1))).await;
    let old_failed = submit(s, 2, with_attempts(spec("old failure"), 1), days(1)).await;
    run_to(s, &a, &old_failed, b"boom", &failed("broke"), days(2)).await;
    let old_cancelled = submit(s, 3, spec("old cancel"), days(2)).await;
    ok("cancel_task", s.cancel_task(&old_cancelled, days(2)).await);
    let recent = submit(s, 4, spec("recent"), days(9)).await;
    run_to(s, &a, &recent, b"fresh", &SUCCEEDED, days(9)).await;
    let queued = submit(s, 5, with_caps(spec("old but queued"), &["gpu"]), days(0)).await;
    let running = submit(s, 6, spec("old and running"), days(0)).await;
    let e = start(s, &a, &running, days(10)).await;
    ok("heartbeat", s.heartbeat(&a, &[(running.clone(), e)], days(10), LEASE).await);

    let kept_before = (get(s, &recent).await, attempts(s, &recent).await, output(s, &recent, None, 0).await);
    let report = compact(s, crate::Retention { tasks: Some(DAY * 5), ..Default::default() }, days(10)).await;
    assert_eq!(report.tasks_pruned, 3, "three finished tasks are older than five days: {report:?}");
    assert_eq!(report.output_bytes_pruned, 9, "their output went with them: {report:?}");
    assert_eq!((report.outputs_pruned, report.events_pruned), (0, 0), "{report:?}");
    for id in [&old_ok, &old_failed, &old_cancelled] {
        assert_eq!(ok("task", s.task(id).await), None, "{id} is past its retention");
        assert!(attempts(s, id).await.is_empty(), "{id}'s attempts go with it");
        assert!(output(s, id, None, 0).await.is_empty(), "{id}'s output goes with it");
        assert!(steps(s, id, None).await.is_empty(), "{id}'s steps go with it");
    }
    let kept_after = (get(s, &recent).await, attempts(s, &recent).await, output(s, &recent, None, 0).await);
    assert_eq!(kept_after, kept_before, "a task finished within the retention is untouched");
    assert_eq!(get(s, &queued).await.state, TaskState::Queued, "a queued task is never pruned, however old");
    assert_eq!(get(s, &running).await.state, TaskState::Running, "a running task is never pruned");
    let counts = ok("count_tasks", s.count_tasks().await);
    assert_eq!((count(&counts, TaskState::Succeeded), count(&counts, TaskState::Failed)), (1, 0));
    let report = ok("check", s.check(false, days(10)).await);
    assert_eq!(report, crate::CheckReport::default(), "pruning leaves every invariant whole");

    let again = compact(s, crate::Retention { tasks: Some(DAY * 5), ..Default::default() }, days(10)).await;
    assert_eq!(again.tasks_pruned, 0, "a second compaction finds nothing more");
}

pub async fn compaction_prunes_output_but_keeps_the_task(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, days(0)).await;
    let old = submit(s, 1, spec("old"), days(0)).await;
    run_to(s, &a, &old, b"0123456789", &SUCCEEDED, days(1)).await;
    let recent = submit(s, 2, spec("recent"), days(6)).await;
    run_to(s, &a, &recent, b"keep me", &SUCCEEDED, days(6)).await;
    let quiet = submit(s, 3, spec("printed nothing"), days(0)).await;
    run_to(s, &a, &quiet, b"", &SUCCEEDED, days(1)).await;

    let task_before = get(s, &old).await;
    let report = compact(s, crate::Retention { output: Some(DAY * 3), ..Default::default() }, days(7)).await;
    assert_eq!((report.tasks_pruned, report.outputs_pruned, report.output_bytes_pruned), (0, 1, 10), "{report:?}");
    assert_eq!(get(s, &old).await, task_before, "the task itself stays");
    assert!(output(s, &old, None, 0).await.is_empty(), "its output is gone");
    let attempt = &attempts(s, &old).await[0];
    assert!(attempt.output_pruned, "the attempt says its output was pruned");
    assert_eq!(attempt.output_bytes, 10, "and how much there was");
    assert_eq!(output(s, &recent, None, 0).await.len(), 1, "recent output stays");
    assert!(!attempts(s, &recent).await[0].output_pruned);
    assert!(!attempts(s, &quiet).await[0].output_pruned, "an attempt with no output has nothing pruned");

    // Later, the output that was recent expires too, and only it is pruned.
    let later = compact(s, crate::Retention { output: Some(DAY * 3), ..Default::default() }, days(10)).await;
    assert_eq!((later.outputs_pruned, later.output_bytes_pruned), (1, 7), "{later:?}");
    assert!(attempts(s, &recent).await[0].output_pruned);
}

pub async fn compaction_prunes_old_events_but_never_the_newest(store: Arc<dyn Store>) {
    let s = &*store;
    for (i, day) in [0, 1, 2, 8, 9].into_iter().enumerate() {
        let event = NewEvent { kind: "test.note", detail: Some(format!("note {i}")), ..NewEvent::default() };
        ok("record_event", s.record_event(event, days(day)).await);
    }
    let seq_before = *s.subscribe().borrow();
    let report = compact(s, crate::Retention { events: Some(DAY * 5), ..Default::default() }, days(10)).await;
    assert_eq!(report.events_pruned, 3, "three events are older than five days: {report:?}");
    let left = events_after(s, 0).await;
    let details: Vec<&str> = left.iter().filter_map(|e| e.detail.as_deref()).take(2).collect();
    assert_eq!(details, ["note 3", "note 4"], "the newest events stay, in order");
    assert!(*s.subscribe().borrow() > seq_before, "event numbers never go back");
    assert_eq!(ok("check", s.check(false, days(10)).await), crate::CheckReport::default(), "no gap is reported");

    // Everything expired: the newest event still stays, so numbering carries on.
    let report = compact(s, crate::Retention { events: Some(DAY), ..Default::default() }, days(400)).await;
    assert!(report.events_pruned >= 2, "{report:?}");
    let left = events_after(s, 0).await;
    assert_eq!(kinds(&left), ["db.compacted", "db.compacted"], "only the newest events are left");
    let next = NewEvent { kind: "test.note", ..NewEvent::default() };
    ok("record_event", s.record_event(next, days(400)).await);
    let after = events_after(s, 0).await;
    assert!(after.windows(2).all(|w| w[1].seq == w[0].seq + 1), "numbers stay contiguous: {after:?}");
}

pub async fn compaction_without_retention_prunes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    tell_a_short_story(s).await;
    let before = snapshot(s).await;
    let report = compact(s, crate::Retention::default(), days(1000)).await;
    assert_eq!(
        (report.tasks_pruned, report.outputs_pruned, report.events_pruned),
        (0, 0, 0),
        "nothing expires without a retention: {report:?}"
    );
    let mut after = snapshot(s).await;
    let compacted = after.events.pop().expect("the compaction's event");
    assert_eq!(compacted.kind, "db.compacted");
    assert!(after == before, "a compaction with no retention changes nothing but the timeline");
}

pub async fn db_stats_count_rows_and_remember_the_last_compaction(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, days(0)).await;
    let first = submit(s, 1, spec("one"), days(0)).await;
    run_to(s, &a, &first, b"12345", &SUCCEEDED, days(0)).await;
    submit(s, 2, spec("two"), days(0)).await;
    let stats = ok("db_stats", s.db_stats().await);
    assert_eq!((stats.tasks, stats.output_bytes), (2, 5), "{stats:?}");
    assert_eq!(stats.events as usize, events_after(s, 0).await.len());
    assert!(stats.pages > 0 && stats.free_pages <= stats.pages, "{stats:?}");
    assert!((0.0..=1.0).contains(&stats.free_ratio()));
    assert_eq!(stats.last_compaction, None, "never compacted");

    let report = compact(s, crate::Retention { tasks: Some(DAY), ..Default::default() }, days(3)).await;
    let stats = ok("db_stats", s.db_stats().await);
    assert_eq!((stats.tasks, stats.output_bytes), (1, 0), "{stats:?}");
    let last = stats.last_compaction.expect("the compaction is remembered");
    assert_eq!((last.at, last.summary), (days(3), report.summary()));
}

async fn spend(s: &dyn Store, agent: &AgentName, n: u128, runner: &str, cost: Option<u64>, tokens: u64, when: Millis) {
    let id = submit(s, n, TaskSpec { runner: runners(&[runner]).remove(0), ..spec("spend") }, when).await;
    let e = start(s, agent, &id, when).await;
    let report = RunReport {
        tokens: Tokens { input: tokens, output: 1, cache_read: 0, cache_write: 0 },
        cost: cost.map(MicroUsd),
        ..RunReport::default()
    };
    ok("finish_task", s.finish_task(agent, &id, e, &SUCCEEDED, details(report), when, Retry::fixed(BACKOFF)).await);
}

pub async fn costs_are_summed_by_task_agent_runner_and_day(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &[], days(0)).await;
    connect(s, &a, &["claude", "codex", "shell"], &[], 4, days(0)).await;
    let b = register(s, "b", &[], days(0)).await;
    connect(s, &b, &["claude", "codex", "shell"], &[], 4, days(0)).await;
    spend(s, &a, 1, "claude", Some(1_500_000), 100, days(1)).await;
    spend(s, &a, 2, "claude", Some(500_000), 50, days(2)).await;
    spend(s, &b, 3, "codex", None, 70, days(2)).await;
    spend(s, &b, 4, "claude", Some(250_000), 10, days(2).plus(Duration::from_secs(3600))).await;
    // A run without a report spends nothing that is known.
    let plain = submit(s, 5, spec("plain"), days(2)).await;
    let e = start(s, &a, &plain, days(2)).await;
    finish(s, &a, &plain, e, &SUCCEEDED, days(2)).await;

    let by = |rows: Vec<CostRow>| -> Vec<(String, u64, u64, u64, u64)> {
        rows.into_iter().map(|r| (r.key, r.attempts, r.priced, r.tokens.input, r.cost.0)).collect()
    };
    let (rows, total) = ok("costs", s.costs(CostGroup::Runner, days(0)).await);
    assert_eq!((total.attempts, total.priced, total.tokens.input, total.cost.0), (4, 3, 230, 2_250_000));
    let runner = by(rows);
    assert_eq!(
        runner,
        [("claude".into(), 3, 3, 160, 2_250_000), ("codex".into(), 1, 0, 70, 0)],
        "costliest first; an unpriced run counts its tokens"
    );
    let agent = by(ok("costs", s.costs(CostGroup::Agent, days(0)).await).0);
    assert_eq!(agent, [("a".into(), 2, 2, 150, 2_000_000), ("b".into(), 2, 1, 80, 250_000)]);
    let day = by(ok("costs", s.costs(CostGroup::Day, days(0)).await).0);
    let first = "2023-11-15".to_owned();
    let second = "2023-11-16".to_owned();
    assert_eq!(day, [(first, 1, 1, 100, 1_500_000), (second.clone(), 3, 2, 130, 750_000)], "by UTC day");
    let since = by(ok("costs", s.costs(CostGroup::Day, days(2)).await).0);
    assert_eq!(since, [(second, 3, 2, 130, 750_000)], "since leaves out what ended before");
    let tasks = ok("costs", s.costs(CostGroup::Task, days(0)).await).0;
    assert_eq!(tasks.len(), 4, "one row per task that reported: {tasks:?}");
    assert_eq!(tasks[0].key, task_id(1).to_string());
}

const BREAKER: muster_core::breaker::Policy =
    muster_core::breaker::Policy { failures: 2, cooldown: Duration::from_secs(60) };

fn breaker_of(all: &[muster_core::breaker::Breaker], scope: &str, name: &str) -> muster_core::breaker::Breaker {
    all.iter()
        .find(|b| b.scope.as_str() == scope && b.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {scope} breaker {name} in {all:?}"))
}

pub async fn breakers_open_on_failures_let_one_probe_through_after_the_cooldown_and_close_on_its_success(
    store: Arc<dyn Store>,
) {
    use muster_core::breaker::State;
    let s = &*store;
    s.set_breaker_policy(BREAKER);
    let a = online(s, "a", 3, at(0)).await;
    for n in 1..=2 {
        let id = submit(s, n, with_attempts(spec("breaks"), 1), at(0)).await;
        let e = start(s, &a, &id, at(1)).await;
        let mark = last_seq(s).await;
        finish(s, &a, &id, e, &failed("boom"), at(2)).await;
        if n == 2 {
            let events = events_after(s, mark).await;
            let opened: Vec<&Event> = events.iter().filter(|e| e.kind == "breaker.opened").collect();
            assert_eq!(opened.len(), 2, "the agent's and the runner's breakers open: {events:?}");
            assert!(
                opened.iter().any(|e| e.detail.as_deref().is_some_and(|d| d.starts_with("runner shell: 2 failed")))
            );
        }
    }
    let all = ok("breakers", s.breakers().await);
    assert_eq!(
        (breaker_of(&all, "agent", "a").state, breaker_of(&all, "runner", "shell").state),
        (State::Open, State::Open)
    );

    for n in 3..=5 {
        submit(s, n, spec("waits"), at(3)).await;
    }
    let b = online(s, "b", 3, at(3)).await;
    assert!(claim(s, &a, at(10)).await.is_empty(), "an open agent gets nothing");
    assert!(claim(s, &b, at(10)).await.is_empty(), "an open runner is handed to no one");

    // Cooled down: one task goes through as the probe, however many slots are free.
    let mark = last_seq(s).await;
    let probe = claim(s, &b, at(62)).await;
    assert_eq!(probe.len(), 1, "one probe");
    let events = events_after(s, mark).await;
    assert!(events.iter().any(|e| e.kind == "breaker.half_open" && e.task.as_ref() == Some(&probe[0])), "{events:?}");
    assert!(claim(s, &b, at(63)).await.is_empty(), "nothing more while the probe runs");
    let e = ok("task", s.task(&probe[0]).await).expect("the probe").epoch;
    ok("start_task", s.start_task(&b, &probe[0], e, at(63), LEASE).await);
    let mark = last_seq(s).await;
    finish(s, &b, &probe[0], e, &SUCCEEDED, at(64)).await;
    assert!(events_after(s, mark).await.iter().any(|e| e.kind == "breaker.closed"));
    assert_eq!(breaker_of(&ok("breakers", s.breakers().await), "runner", "shell").state, State::Closed);
    assert_eq!(claim(s, &b, at(65)).await.len(), 2, "closed again: the rest go out");
    assert_eq!(breaker_of(&ok("breakers", s.breakers().await), "agent", "a").state, State::Open, "a is still open");
}

pub async fn a_lost_probe_is_replaced_and_an_operator_can_reset_a_breaker(store: Arc<dyn Store>) {
    use muster_core::breaker::{Scope as BreakerScope, State};
    let s = &*store;
    s.set_breaker_policy(BREAKER);
    let a = online(s, "a", 1, at(0)).await;
    for n in 1..=2 {
        let id = submit(s, n, with_attempts(spec("breaks"), 1), at(0)).await;
        let e = start(s, &a, &id, at(1)).await;
        finish(s, &a, &id, e, &failed("boom"), at(2)).await;
    }
    let waiting = submit(s, 3, spec("probe"), at(3)).await;
    submit(s, 4, spec("next"), at(3)).await;
    let probe = claim(s, &a, at(70)).await;
    assert_eq!(probe, std::slice::from_ref(&waiting));
    // The agent turns the probe down: it goes back to the queue, and the next claim sends a probe again.
    let e = ok("task", s.task(&waiting).await).expect("the probe").epoch;
    ok("release_task", s.release_task(&a, &waiting, e, "no slot", at(71), RELEASE).await);
    let all = ok("breakers", s.breakers().await);
    assert_eq!(breaker_of(&all, "agent", "a").state, State::HalfOpen);
    let again = claim(s, &a, at(72)).await;
    assert_eq!(again, std::slice::from_ref(&waiting), "a released probe is replaced (here by the same task)");
    // Cancelled: ended without a verdict, so the next task goes as the probe.
    ok("cancel_task", s.cancel_task(&waiting, at(73)).await);
    let next = claim(s, &a, at(74)).await;
    assert_eq!(next, [task_id(4)], "a probe whose task ended without a verdict is replaced");

    let r = s.reset_breaker(BreakerScope::Runner, "nope", "ops", at(72)).await;
    assert!(matches!(r, Err(StoreError::NotFound { .. })), "{r:?}");
    let mark = last_seq(s).await;
    let reset = ok("reset_breaker", s.reset_breaker(BreakerScope::Agent, "a", "ops", at(72)).await);
    assert_eq!((reset.state, reset.failures), (State::Closed, 0));
    let events = assert_events(s, mark, &["breaker.closed"], "reset_breaker").await;
    assert_eq!(events[0].detail.as_deref(), Some("agent a: reset by ops (it was half_open)"));
    assert_eq!(events[0].agent.as_ref(), Some(&a));
}

pub async fn a_disabled_runner_gets_no_work_and_tasks_with_fallbacks_use_them(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &[], at(0)).await;
    connect(s, &a, &["claude", "codex"], &[], 4, at(0)).await;
    let claude = runners(&["claude"]).remove(0);
    let codex = runners(&["codex"]).remove(0);
    let with_fallback =
        submit(s, 1, TaskSpec { runner: claude.clone(), fallback: vec![codex.clone()], ..spec("either") }, at(0)).await;
    let only_claude = submit(s, 2, TaskSpec { runner: claude.clone(), ..spec("claude only") }, at(0)).await;

    let r = s.disable_runner(&claude, "  ", "ops", at(1)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "reason"), "{r:?}");
    let mark = last_seq(s).await;
    ok("disable_runner", s.disable_runner(&claude, "quota exhausted until 18:00", "ops", at(1)).await);
    let events = assert_events(s, mark, &["runner.disabled"], "disable_runner").await;
    assert_eq!(events[0].detail.as_deref(), Some("claude: quota exhausted until 18:00 (by ops)"));
    let off = ok("disabled_runners", s.disabled_runners().await);
    assert_eq!((off.len(), off[0].reason.as_str(), off[0].by.as_str()), (1, "quota exhausted until 18:00", "ops"));

    let mark = last_seq(s).await;
    assert_eq!(
        claim(s, &a, at(2)).await,
        std::slice::from_ref(&with_fallback),
        "only the task with a fallback goes out"
    );
    let events = assert_events(s, mark, &["task.assigned", "task.fallback"], "a claim on a fallback").await;
    assert_eq!(events[1].detail.as_deref(), Some("claude is disabled: quota exhausted until 18:00; runs on codex"));
    let task = get(s, &with_fallback).await;
    assert_eq!(task.lease.as_ref().and_then(|l| l.runner.clone()), Some(codex.clone()), "the lease says which runner");
    let e = task.epoch;
    ok("start_task", s.start_task(&a, &with_fallback, e, at(3), LEASE).await);
    assert_eq!(attempts(s, &with_fallback).await[0].runner.as_deref(), Some("codex"), "the attempt records it too");
    assert_eq!(get(s, &only_claude).await.state, TaskState::Queued);

    let mark = last_seq(s).await;
    ok("enable_runner", s.enable_runner(&claude, "ops", at(4)).await);
    assert_events(s, mark, &["runner.enabled"], "enable_runner").await;
    assert_eq!(claim(s, &a, at(5)).await, std::slice::from_ref(&only_claude), "back in service");
    assert!(matches!(s.enable_runner(&claude, "ops", at(6)).await, Err(StoreError::NotFound { .. })));
    assert!(ok("disabled_runners", s.disabled_runners().await).is_empty());

    let bad = TaskSpec { runner: claude.clone(), fallback: vec![claude.clone()], ..spec("self") };
    assert_eq!(bad.validate().map_err(|e| e.field), Err("fallback"), "a task cannot fall back on its own runner");
}

pub async fn a_provider_limit_requeues_without_an_attempt_and_pauses_the_runner_until_the_reset(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &[], at(0)).await;
    connect(s, &a, &["claude", "codex"], &[], 4, at(0)).await;
    let claude = runners(&["claude"]).remove(0);
    let limited = submit(s, 1, with_attempts(TaskSpec { runner: claude.clone(), ..spec("limited") }, 1), at(0)).await;
    let e = assign(s, &a, &limited, at(1)).await;
    ok("start_task", s.start_task(&a, &limited, e, at(1), LEASE).await);
    let other = submit(s, 2, TaskSpec { runner: claude.clone(), ..spec("waits for the reset") }, at(1)).await;

    let mark = last_seq(s).await;
    let (task, result) = ok(
        "limit_task",
        s.limit_task(&a, &limited, e, "usage limit reached", at(600), RunDetails::default(), at(2)).await,
    );
    assert_eq!(result, FinishResult::Applied(Finished::RetryScheduled { ready_at: at(600) }));
    assert_eq!((task.state, task.attempts, task.ready_at), (TaskState::Queued, 0, at(600)), "no attempt spent");
    let events = assert_events(s, mark, &["task.limited", "runner.limited"], "limit_task").await;
    assert!(events[1].detail.as_deref().is_some_and(|d| d.starts_with("claude until ")), "{events:?}");
    assert_eq!(attempts(s, &limited).await[0].outcome.map(Outcome::as_str), Some("limited"));
    let (_, again) = ok(
        "limit_task",
        s.limit_task(&a, &limited, e, "usage limit reached", at(600), RunDetails::default(), at(3)).await,
    );
    assert_eq!(again, FinishResult::Duplicate, "a resend is answered, not applied twice");

    assert!(claim(s, &a, at(10)).await.is_empty(), "the runner rests until the reset");
    assert_eq!(claim(s, &a, at(601)).await.len(), 2, "dispatch resumes by itself after the reset: {other}");
    let off = ok("disabled_runners", s.disabled_runners().await);
    assert!(off.iter().all(|d| !d.in_force(at(601))), "{off:?}");

    // An operator's disable replaces an expired limit and holds until someone enables the runner.
    ok("disable_runner", s.disable_runner(&claude, "maintenance", "ops", at(602)).await);
    let off = ok("disabled_runners", s.disabled_runners().await);
    assert_eq!(off[0].until, None);
}

pub async fn tasks_fall_back_while_their_runner_waits_for_a_probe_and_a_lost_agent_does_not_open_its_runner(
    store: Arc<dyn Store>,
) {
    use muster_core::breaker::State;
    let s = &*store;
    s.set_breaker_policy(muster_core::breaker::Policy { failures: 1, cooldown: Duration::from_secs(60) });
    let claude = runners(&["claude"]).remove(0);
    let codex = runners(&["codex"]).remove(0);
    let a = register(s, "a", &[], at(0)).await;
    connect(s, &a, &["claude"], &[], 2, at(0)).await;
    let b = register(s, "b", &[], at(0)).await;
    connect(s, &b, &["codex"], &[], 2, at(0)).await;

    // An agent that goes silent costs its lease, and opens its own breaker only.
    let lost = submit(s, 1, TaskSpec { runner: claude.clone(), ..spec("lost") }, at(0)).await;
    let e = assign(s, &a, &lost, at(0)).await;
    ok("start_task", s.start_task(&a, &lost, e, at(0), LEASE).await);
    ok("reclaim_expired", s.reclaim_expired(at(31), 10).await);
    let all = ok("breakers", s.breakers().await);
    assert_eq!(breaker_of(&all, "agent", "a").state, State::Open);
    assert!(all.iter().all(|b| b.scope.as_str() != "runner" || b.state == State::Closed), "{all:?}");

    // A failed run opens the runner's breaker; after the cooldown, while it
    // waits for a probe, a task with a fallback still goes to it.
    let c = register(s, "c", &[], at(31)).await;
    connect(s, &c, &["claude"], &[], 2, at(31)).await;
    ok("cancel_task", s.cancel_task(&lost, at(31)).await);
    let broken = submit(s, 2, with_attempts(TaskSpec { runner: claude.clone(), ..spec("broken") }, 1), at(31)).await;
    let e = assign(s, &c, &broken, at(31)).await;
    ok("start_task", s.start_task(&c, &broken, e, at(31), LEASE).await);
    finish(s, &c, &broken, e, &failed("boom"), at(32)).await;
    let either =
        submit(s, 3, TaskSpec { runner: claude.clone(), fallback: vec![codex.clone()], ..spec("either") }, at(33))
            .await;
    assert_eq!(claim(s, &b, at(40)).await, std::slice::from_ref(&either), "open: it falls back");
    let second =
        submit(s, 4, TaskSpec { runner: claude.clone(), fallback: vec![codex.clone()], ..spec("second") }, at(41))
            .await;
    assert_eq!(
        claim(s, &b, at(100)).await,
        std::slice::from_ref(&second),
        "cooled, waiting for a probe: it still falls back"
    );
}

pub async fn operators_skip_reset_and_move_tasks_with_who_on_the_timeline(store: Arc<dyn Store>) {
    use crate::TaskOp;
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let first = submit(s, 1, spec("first"), at(0)).await;
    let second = submit(s, 2, spec("second"), at(0)).await;

    let mark = last_seq(s).await;
    let moved =
        ok("operate_task", s.operate_task(&second, TaskOp::Move { priority: Priority::Urgent }, "ops", at(1)).await);
    assert_eq!(moved.spec.priority, Priority::Urgent);
    let events = assert_events(s, mark, &["task.moved"], "a move").await;
    assert_eq!(events[0].detail.as_deref(), Some("normal -> urgent (by ops)"));
    assert_eq!(get(s, &second).await.spec.priority, Priority::Urgent, "the new priority is stored");
    assert_eq!(claim(s, &a, at(2)).await, std::slice::from_ref(&second), "and it goes out first");

    let before = snapshot(s).await;
    let r = s.operate_task(&first, TaskOp::Skip { reason: " ".into() }, "ops", at(3)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "reason"), "{r:?}");
    let r = s.operate_task(&second, TaskOp::Reset, "ops", at(3)).await;
    assert!(matches!(r, Err(StoreError::Refused(_))), "a handed-out task is not reset: {r:?}");
    assert_unchanged(s, &before, "refused operations").await;

    let mark = last_seq(s).await;
    let skipped =
        ok("operate_task", s.operate_task(&first, TaskOp::Skip { reason: "done by hand".into() }, "ops", at(4)).await);
    assert_eq!((skipped.state, skipped.reason.as_deref()), (TaskState::Skipped, Some("skipped: done by hand")));
    let reset = ok("operate_task", s.operate_task(&first, TaskOp::Reset, "lead", at(5)).await);
    assert_eq!((reset.state, reset.attempts), (TaskState::Queued, 0));
    let events = assert_events(s, mark, &["task.skipped", "task.reset"], "skip and reset").await;
    assert_eq!(events[0].detail.as_deref(), Some("done by hand (by ops)"));
    assert_eq!(events[1].detail.as_deref(), Some("attempts cleared (by lead)"));
    let counts = ok("count_tasks", s.count_tasks().await);
    assert_eq!(count(&counts, TaskState::Skipped), 0);
}

pub async fn a_task_pending_approval_waits_for_a_person_who_is_named_on_the_timeline(store: Arc<dyn Store>) {
    use crate::TaskOp;
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let gated = TaskSpec { requires_approval: true, ..spec("deploy to staging") };
    let approved = submit(s, 1, gated.clone(), at(0)).await;
    let rejected = submit(s, 2, gated, at(0)).await;
    assert_eq!(get(s, &approved).await.state, TaskState::PendingApproval);
    assert!(claim(s, &a, at(1)).await.is_empty(), "nothing pending approval is handed out");

    let before = snapshot(s).await;
    let r = s.operate_task(&rejected, TaskOp::Reject { reason: "".into() }, "lead", at(2)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "reason"), "{r:?}");
    assert_unchanged(s, &before, "a reject without a reason").await;

    let mark = last_seq(s).await;
    ok("operate_task", s.operate_task(&approved, TaskOp::Approve, "lead", at(3)).await);
    ok(
        "operate_task",
        s.operate_task(&rejected, TaskOp::Reject { reason: "not this week".into() }, "lead", at(3)).await,
    );
    let events = assert_events(s, mark, &["task.approved", "task.rejected"], "approvals").await;
    assert_eq!(events[0].detail.as_deref(), Some("by lead"));
    assert_eq!(events[1].detail.as_deref(), Some("not this week (by lead)"));
    let r = s.operate_task(&approved, TaskOp::Approve, "lead", at(4)).await;
    assert!(matches!(r, Err(StoreError::Refused(_))), "approving twice is refused: {r:?}");
    let gone = get(s, &rejected).await;
    assert_eq!((gone.state, gone.reason.as_deref()), (TaskState::Cancelled, Some("rejected: not this week")));
    assert_eq!(claim(s, &a, at(5)).await, std::slice::from_ref(&approved), "approved: it goes out");
}

pub async fn dependencies_unblock_on_success_and_a_failure_fails_or_skips_down_the_chain(store: Arc<dyn Store>) {
    use muster_core::task::DependencyPolicy;
    let s = &*store;
    let a = online(s, "a", 4, at(0)).await;
    let first = submit(s, 1, with_attempts(spec("first"), 1), at(0)).await;
    let after = |deps: &[&TaskId], policy: DependencyPolicy, prompt: &str| TaskSpec {
        depends_on: deps.iter().map(|d| (*d).clone()).collect(),
        on_dependency_failure: policy,
        checks: Vec::new(),
        ..spec(prompt)
    };
    let second = submit(s, 2, after(&[&first], DependencyPolicy::Fail, "second"), at(0)).await;
    let third = submit(s, 3, after(&[&second], DependencyPolicy::Skip, "third"), at(0)).await;
    let other = submit(s, 4, spec("other"), at(0)).await;
    let waits_on_other = submit(s, 5, after(&[&other], DependencyPolicy::Fail, "after other"), at(0)).await;
    assert_eq!(get(s, &second).await.state, TaskState::Blocked);
    let r = s.create_task(task_id(6), after(&[&task_id(99)], DependencyPolicy::Fail, "x"), at(0)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "depends_on"), "{r:?}");

    // Only tasks with nothing to wait for go out.
    let mut out = claim(s, &a, at(1)).await;
    out.sort();
    assert_eq!(out, [first.clone(), other.clone()]);

    // `other` succeeds: its dependent is queued.
    let e = ok("task", s.task(&other).await).expect("other").epoch;
    ok("start_task", s.start_task(&a, &other, e, at(2), LEASE).await);
    let mark = last_seq(s).await;
    finish(s, &a, &other, e, &SUCCEEDED, at(3)).await;
    assert_events(s, mark, &["task.succeeded", "task.unblocked"], "a dependency succeeding").await;
    assert_eq!(get(s, &waits_on_other).await.state, TaskState::Queued);

    // `first` fails: `second` fails with it, and `third`, set to skip, is skipped.
    let e = ok("task", s.task(&first).await).expect("first").epoch;
    ok("start_task", s.start_task(&a, &first, e, at(4), LEASE).await);
    finish(s, &a, &first, e, &failed("broke"), at(5)).await;
    let second_now = get(s, &second).await;
    assert_eq!(second_now.state, TaskState::Failed);
    assert_eq!(second_now.reason, Some(format!("dependency {first} did not succeed")));
    let third_now = get(s, &third).await;
    assert_eq!(
        (third_now.state, third_now.reason),
        (TaskState::Skipped, Some(format!("skipped: dependency {second} did not succeed")))
    );

    // A task whose dependencies already ended well starts queued.
    let late = submit(s, 7, after(&[&other], DependencyPolicy::Fail, "late"), at(6)).await;
    assert_eq!(get(s, &late).await.state, TaskState::Queued);
}

pub async fn locks_are_shared_or_exclusive_and_go_with_the_run(store: Arc<dyn Store>) {
    use crate::{Acquire, LockMode};
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let one = submit(s, 1, spec("one"), at(0)).await;
    let e1 = start(s, &a, &one, at(0)).await;
    let two = submit(s, 2, spec("two"), at(0)).await;
    let e2 = start(s, &a, &two, at(0)).await;
    let three = submit(s, 3, spec("three"), at(0)).await;
    let e3 = start(s, &a, &three, at(0)).await;
    let take = |t: &TaskId, e: Epoch, name: &'static str, mode: LockMode, try_only: bool| {
        let t = t.clone();
        async move { ok("acquire_lock", s.acquire_lock(name, &t, e, mode, try_only, at(1)).await) }
    };
    assert_eq!(take(&one, e1, "repo:web", LockMode::Shared, true).await, Acquire::Acquired);
    assert_eq!(take(&two, e2, "repo:web", LockMode::Shared, true).await, Acquire::Acquired, "shared with shared");
    assert_eq!(
        take(&three, e3, "repo:web", LockMode::Exclusive, true).await,
        Acquire::Busy { holders: vec![one.clone(), two.clone()] },
        "exclusive waits for every holder"
    );
    assert!(ok("lock_waits", s.lock_waits().await).is_empty(), "a try does not wait");
    assert_eq!(take(&three, e3, "branch:main", LockMode::Exclusive, false).await, Acquire::Acquired);
    assert!(matches!(take(&one, e1, "branch:main", LockMode::Shared, false).await, Acquire::Busy { .. }));
    let waits = ok("lock_waits", s.lock_waits().await);
    assert_eq!((waits.len(), &waits[0].holders), (1, &vec![three.clone()]), "one waits for three");
    let r = s.acquire_lock("has space", &one, e1, LockMode::Shared, true, at(1)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "name"), "{r:?}");
    let r = s.acquire_lock("x", &one, Epoch(e1.0 + 5), LockMode::Shared, true, at(1)).await;
    assert!(matches!(r, Err(StoreError::Refused(_))), "a stale run takes nothing: {r:?}");

    // The run ends: its locks go, and so does its place in line.
    finish(s, &a, &three, e3, &SUCCEEDED, at(2)).await;
    let held: Vec<String> = ok("locks", s.locks().await).iter().map(|l| format!("{} {}", l.name, l.task)).collect();
    assert_eq!(held, [format!("repo:web {one}"), format!("repo:web {two}")]);
    assert_eq!(take(&one, e1, "branch:main", LockMode::Shared, false).await, Acquire::Acquired, "now free");
    assert!(ok("lock_waits", s.lock_waits().await).is_empty());

    // A run that goes silent loses its lease, and its locks with it.
    ok("reclaim_expired", s.reclaim_expired(at(31), 10).await);
    assert!(ok("locks", s.locks().await).is_empty(), "a crash leaves no lock behind");

    // An operator can force a lock.
    ok("cancel_task", s.cancel_task(&one, at(32)).await);
    ok("cancel_task", s.cancel_task(&two, at(32)).await);
    let four = submit(s, 4, spec("four"), at(32)).await;
    let e4 = start(s, &a, &four, at(32)).await;
    assert_eq!(take(&four, e4, "deploy:staging", LockMode::Exclusive, true).await, Acquire::Acquired);
    assert!(matches!(s.release_lock("nothing", None, "ops", at(33)).await, Err(StoreError::NotFound { .. })));
    let mark = last_seq(s).await;
    assert_eq!(ok("release_lock", s.release_lock("deploy:staging", None, "ops", at(33)).await), 1);
    let events = assert_events(s, mark, &["lock.forced"], "a forced unlock").await;
    assert_eq!(events[0].detail.as_deref(), Some(format!("deploy:staging taken from {four} (by ops)").as_str()));
}

pub async fn a_wait_that_closes_a_cycle_is_refused_as_a_deadlock(store: Arc<dyn Store>) {
    use crate::{Acquire, LockMode};
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let one = submit(s, 1, spec("one"), at(0)).await;
    let e1 = start(s, &a, &one, at(0)).await;
    let two = submit(s, 2, spec("two"), at(0)).await;
    let e2 = start(s, &a, &two, at(0)).await;
    let x = LockMode::Exclusive;
    assert_eq!(ok("acquire", s.acquire_lock("lock:a", &one, e1, x, false, at(1)).await), Acquire::Acquired);
    assert_eq!(ok("acquire", s.acquire_lock("lock:b", &two, e2, x, false, at(1)).await), Acquire::Acquired);
    assert!(matches!(ok("acquire", s.acquire_lock("lock:b", &one, e1, x, false, at(2)).await), Acquire::Busy { .. }));
    let mark = last_seq(s).await;
    let r = ok("acquire", s.acquire_lock("lock:a", &two, e2, x, false, at(3)).await);
    assert_eq!(
        r,
        Acquire::Deadlock { cycle: vec![(two.clone(), "lock:a".to_owned()), (one.clone(), "lock:b".to_owned())] },
        "the youngest waiter is refused, naming the cycle"
    );
    let events = assert_events(s, mark, &["lock.deadlock"], "a deadlock").await;
    assert!(
        events[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains(&format!("{two} waits for lock:a, {one} waits for lock:b")))
    );
    let waits = ok("lock_waits", s.lock_waits().await);
    assert_eq!(waits.len(), 1, "only the older wait stands: {waits:?}");
    // The refused task gives up; the other goes on.
    finish(s, &a, &two, e2, &failed("deadlock"), at(4)).await;
    assert_eq!(ok("acquire", s.acquire_lock("lock:b", &one, e1, x, false, at(5)).await), Acquire::Acquired);
}

fn question(task: &TaskId, epoch: Option<Epoch>, park: bool) -> crate::NewDecision {
    crate::NewDecision {
        task: task.clone(),
        question: "Ship the migration tonight?".to_owned(),
        options: vec!["ship".to_owned(), "wait".to_owned()],
        default: None,
        timeout: None,
        answerers: Vec::new(),
        raised_by: "admin".to_owned(),
        epoch,
        park,
    }
}

pub async fn an_operators_decision_holds_a_queued_task_until_a_person_answers(store: Arc<dyn Store>) {
    use crate::DecisionState;
    let s = &*store;
    let id = submit(s, 1, spec("migrate"), at(0)).await;
    let mark = last_seq(s).await;
    let (d, task) = ok("open_decision", s.open_decision(question(&id, None, false), at(1)).await);
    assert_eq!((task.state, d.state), (TaskState::NeedsDecision, DecisionState::Open));
    assert_events(s, mark, &["task.needs_decision", "decision.opened"], "opening").await;
    let a = online(s, "a", 1, at(1)).await;
    assert!(
        ok("claim", s.claim_tasks(&a, at(2), ACCEPT).await).is_empty(),
        "a task waiting for a person is not handed out"
    );

    for (bad, field) in [
        (crate::NewDecision { question: " ".into(), ..question(&id, None, false) }, "question"),
        (crate::NewDecision { options: vec!["a".into(), "a".into()], ..question(&id, None, false) }, "options"),
        (crate::NewDecision { options: vec!["only".into()], ..question(&id, None, false) }, "options"),
        (
            crate::NewDecision { default: Some("maybe".into()), timeout: Some(LEASE), ..question(&id, None, false) },
            "default",
        ),
        (crate::NewDecision { default: Some("ship".into()), ..question(&id, None, false) }, "default"),
    ] {
        let r = s.open_decision(bad, at(2)).await;
        assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == field), "{field}: {r:?}");
    }
    let restricted = crate::NewDecision { answerers: vec!["lead".into()], ..question(&id, None, false) };
    let (second, _) = ok("open_decision", s.open_decision(restricted, at(2)).await);

    let r = s.answer_decision(d.id, "maybe", None, "admin", at(3)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "option"), "{r:?}");
    let (answered, task) = ok("answer", s.answer_decision(d.id, "ship", Some("go".into()), "admin", at(3)).await);
    assert_eq!(
        (answered.state, answered.answer.as_deref(), answered.answered_by.as_deref()),
        (DecisionState::Answered, Some("ship"), Some("admin"))
    );
    assert_eq!(task.state, TaskState::NeedsDecision, "another decision is still open");
    assert!(
        matches!(s.answer_decision(d.id, "wait", None, "admin", at(3)).await, Err(StoreError::Conflict(_))),
        "answered once"
    );
    let r = s.answer_decision(second.id, "ship", None, "admin", at(4)).await;
    assert!(matches!(r, Err(StoreError::Conflict(ref m)) if m.contains("only by lead")), "{r:?}");
    let mark = last_seq(s).await;
    let (_, task) = ok("answer", s.answer_decision(second.id, "wait", None, "lead", at(4)).await);
    assert_eq!(task.state, TaskState::Queued, "nothing left open: back in the queue");
    let events = assert_events(s, mark, &["decision.answered", "task.resumed"], "answering").await;
    assert_eq!(events[0].detail.as_deref(), Some(format!("#{}: wait (by lead)", second.id).as_str()));
    let open = ok("decisions", s.decisions(true, None, 100).await);
    assert!(open.is_empty(), "{open:?}");
    assert_eq!(ok("decisions", s.decisions(false, Some(&id), 100).await).len(), 2);

    // A running task is asked from inside its run, not by an operator.
    let e = start(s, &a, &id, at(5)).await;
    assert!(matches!(s.open_decision(question(&id, None, false), at(5)).await, Err(StoreError::Refused(_))));
    // A run that asks and waits: its task stays running; when the run ends the question is withdrawn.
    let (d, task) = ok("open_decision", s.open_decision(question(&id, Some(e), false), at(5)).await);
    assert_eq!(task.state, TaskState::Running);
    let stale = s.open_decision(question(&id, Some(Epoch(e.0 + 1)), false), at(5)).await;
    assert!(matches!(stale, Err(StoreError::Refused(_))), "{stale:?}");
    finish(s, &a, &id, e, &SUCCEEDED, at(6)).await;
    let d = ok("decision", s.decision(d.id).await).expect("the decision");
    assert_eq!(d.state, DecisionState::Withdrawn, "nobody waits for it any more");
}

pub async fn a_run_that_asks_and_stops_gives_its_slot_and_attempt_back_until_the_answer(store: Arc<dyn Store>) {
    use crate::DecisionState;
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let id = submit(s, 1, spec("refactor"), at(0)).await;
    let e = start(s, &a, &id, at(1)).await;
    let (d, _) = ok("open_decision", s.open_decision(question(&id, Some(e), true), at(2)).await);
    let mark = last_seq(s).await;
    let (task, _) = finish(s, &a, &id, e, &SUCCEEDED, at(3)).await;
    assert_eq!((task.state, task.attempts), (TaskState::NeedsDecision, 0), "parked, the attempt given back");
    assert_events(s, mark, &["task.needs_decision"], "parking").await;
    assert_eq!(attempts(s, &id).await[0].outcome.map(Outcome::as_str), Some("parked"));
    assert_eq!(get_agent(s, &a).await.status.free_slots(), 1, "the slot is free while a person thinks");
    let (_, task) = ok("answer", s.answer_decision(d.id, "wait", None, "admin", at(4)).await);
    assert_eq!(task.state, TaskState::Queued);
    let e2 = start(s, &a, &id, at(5)).await;
    assert!(e2 > e);

    // Answered before the run got round to stopping: queued again at once.
    let (d, _) = ok("open_decision", s.open_decision(question(&id, Some(e2), true), at(6)).await);
    ok("answer", s.answer_decision(d.id, "ship", None, "admin", at(7)).await);
    assert_eq!(get(s, &id).await.state, TaskState::Running, "the run is still stopping");
    let (task, _) = finish(s, &a, &id, e2, &SUCCEEDED, at(8)).await;
    assert_eq!(task.state, TaskState::Queued);
    assert_eq!(ok("decision", s.decision(d.id).await).map(|d| d.state), Some(DecisionState::Answered));

    // Cancelled while it waits: the decision is withdrawn.
    let e3 = start(s, &a, &id, at(9)).await;
    let (d, _) = ok("open_decision", s.open_decision(question(&id, Some(e3), true), at(9)).await);
    finish(s, &a, &id, e3, &SUCCEEDED, at(10)).await;
    ok("cancel_task", s.cancel_task(&id, at(11)).await);
    assert_eq!(ok("decision", s.decision(d.id).await).map(|d| d.state), Some(DecisionState::Withdrawn));
}

pub async fn an_unanswered_decision_takes_its_default_or_fails_the_task(store: Arc<dyn Store>) {
    use crate::DecisionState;
    let s = &*store;
    let a = online(s, "a", 2, at(0)).await;
    let defaulted = submit(s, 1, spec("one"), at(0)).await;
    let timeout = Some(Duration::from_secs(60));
    let with_default =
        crate::NewDecision { default: Some("wait".into()), timeout, ..question(&defaulted, None, false) };
    let (d1, _) = ok("open_decision", s.open_decision(with_default, at(0)).await);
    let running = submit(s, 2, spec("two"), at(0)).await;
    let e = start(s, &a, &running, at(0)).await;
    let (d2, _) = ok(
        "open_decision",
        s.open_decision(crate::NewDecision { timeout, ..question(&running, Some(e), false) }, at(1)).await,
    );
    ok("acquire_lock", s.acquire_lock("deploy:staging", &running, e, crate::LockMode::Exclusive, true, at(1)).await);
    assert_eq!(ok("next", s.next_decision_deadline().await), Some(at(60)));
    assert!(ok("expire", s.expire_decisions(at(59), 10).await).is_empty(), "not yet");

    let expired = ok("expire", s.expire_decisions(at(61), 10).await);
    assert_eq!(expired.len(), 2);
    let d = ok("decision", s.decision(d1.id).await).expect("d1");
    assert_eq!((d.state, d.answer.as_deref()), (DecisionState::AutoResolved, Some("wait")));
    assert_eq!(get(s, &defaulted).await.state, TaskState::Queued, "the default applies and the task goes on");
    let d = ok("decision", s.decision(d2.id).await).expect("d2");
    assert_eq!(d.state, DecisionState::TimedOut);
    let task = get(s, &running).await;
    assert_eq!((task.state, task.reason.as_deref()), (TaskState::Failed, Some("decision_timeout")));
    assert!(task.lease.is_none());
    assert!(ok("locks", s.locks().await).is_empty(), "its locks go with it");
    let r = s.finish_task(&a, &running, e, &SUCCEEDED, RunDetails::default(), at(62), Retry::fixed(BACKOFF)).await;
    assert!(matches!(r, Err(StoreError::Refused(_))), "the run's late report is stale: {r:?}");
    assert_eq!(ok("next", s.next_decision_deadline().await), None);
}

pub async fn a_conflict_pauses_the_lower_priority_run_and_ends_with_either_task(store: Arc<dyn Store>) {
    use crate::DecisionState;
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let in_web = |name: &str, priority: muster_core::Priority| TaskSpec {
        workspace: Some(muster_core::Workspace {
            repo: "web".into(),
            base: None,
            auto_commit: false,
            keep: muster_core::Keep::default(),
        }),
        priority,
        ..spec(name)
    };
    let high = submit(s, 1, in_web("high", muster_core::Priority::High), at(0)).await;
    let eh = start(s, &a, &high, at(0)).await;
    let low = submit(s, 2, in_web("low", muster_core::Priority::Normal), at(0)).await;
    let el = start(s, &a, &low, at(0)).await;
    let files = |f: &[&str]| f.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(ok("report", s.report_files(&a, &high, eh, files(&["README.md"]), at(1)).await).is_empty());
    let found = ok("report", s.report_files(&a, &low, el, files(&["README.md", "src/lib.rs"]), at(2)).await);
    assert_eq!(found.len(), 1);
    let c = &found[0];
    assert_eq!((&c.conflict.winner, &c.conflict.loser, &c.conflict.files), (&high, &low, &files(&["README.md"])));
    assert_eq!(c.stop, Some((a.clone(), el)), "the lower-priority run is stopped");
    // A report that changes nothing raises nothing new.
    assert!(ok("report", s.report_files(&a, &high, eh, files(&["README.md"]), at(3)).await).is_empty());

    // The stop reaches it after it finished on its own: it keeps its result.
    let (task, _) = finish(s, &a, &low, el, &SUCCEEDED, at(4)).await;
    assert_eq!(task.state, TaskState::Succeeded);
    let d = ok("decision", s.decision(c.conflict.decision.expect("a decision")).await).expect("the decision");
    assert_eq!(d.state, DecisionState::Withdrawn);
    assert!(ok("conflicts", s.conflicts(true, 10).await).is_empty(), "the conflict ended with the task");

    // Another lower-priority run is stopped and parked; when the winner ends, it goes on.
    let third = submit(s, 3, in_web("third", muster_core::Priority::Low), at(5)).await;
    let e3 = start(s, &a, &third, at(5)).await;
    let found = ok("report", s.report_files(&a, &third, e3, files(&["README.md"]), at(6)).await);
    assert_eq!(found.len(), 1, "the pair met again after the first conflict ended");
    let (task, _) = finish(s, &a, &third, e3, &RunOutcome::Cancelled, at(7)).await;
    assert_eq!((task.state, task.attempts), (TaskState::NeedsDecision, 0));
    finish(s, &a, &high, eh, &SUCCEEDED, at(8)).await;
    assert_eq!(get(s, &third).await.state, TaskState::Queued, "its question is moot once the other ended");
    let all = ok("conflicts", s.conflicts(false, 10).await);
    assert!(all.iter().all(|c| c.resolution.as_deref() == Some("ended")), "{all:?}");
}

/// A small deterministic generator for the concurrent case's choices.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % sides
    }
}

/// Many agents claim, start and finish at once while leases expire and are
/// reclaimed under them, stale reports arrive, and first submissions of
/// the same idempotency key race each other. Afterwards: every task was
/// created once and ended; no attempt was accepted under a stale epoch; no
/// task held two leases (one open attempt at most, none at the end); and
/// every accepted completion is the one its attempt records.
pub async fn concurrent_claims_reports_and_reclaims_keep_every_invariant(store: Arc<dyn Store>) {
    use std::sync::atomic::{AtomicI64, Ordering};
    const AGENTS: usize = 6;
    const TASKS: u128 = 120;
    const KEYS: u128 = 10;
    let s = &*store;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(online(s, &format!("c{i}"), 3, at(0)).await);
    }

    // Plain tasks, and each key submitted four times at once.
    let mut submissions = Vec::new();
    for n in 0..TASKS {
        let st = store.clone();
        submissions.push(tokio::spawn(async move {
            (None, st.create_task(task_id(10_000 + n), with_attempts(spec("work"), 2), at(0)).await)
        }));
    }
    for k in 0..KEYS {
        for r in 0..4 {
            let st = store.clone();
            let mut keyed = with_attempts(spec("keyed"), 2);
            keyed.idempotency_key = Some(format!("key-{k}"));
            submissions.push(tokio::spawn(async move {
                (Some(k), st.create_task(task_id(20_000 + k * 10 + r), keyed, at(0)).await)
            }));
        }
    }
    let mut keyed: std::collections::BTreeMap<u128, Vec<crate::Created>> = std::collections::BTreeMap::new();
    let mut all = std::collections::BTreeSet::new();
    for sub in submissions {
        let (key, created) = sub.await.expect("a submission");
        let created = ok("create_task", created);
        all.insert(created.task.id.clone());
        match key {
            Some(k) => keyed.entry(k).or_default().push(created),
            None => assert!(created.created),
        }
    }
    for (k, answers) in &keyed {
        let ids: std::collections::BTreeSet<&TaskId> = answers.iter().map(|c| &c.task.id).collect();
        assert_eq!(ids.len(), 1, "key-{k} made {ids:?}");
        assert_eq!(answers.iter().filter(|c| c.created).count(), 1, "key-{k}: one submission created it");
    }
    assert_eq!(all.len() as u128, TASKS + KEYS);

    // The race: agents work while the clock jumps and the reaper reclaims.
    let clock = Arc::new(AtomicI64::new(0));
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<(TaskId, Epoch)>::new()));
    let mut actors = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let (st, agent, clock, accepted) = (store.clone(), agent.clone(), clock.clone(), accepted.clone());
        actors.push(tokio::spawn(async move {
            let mut dice = Dice(i as u64 + 1);
            for _ in 0..40 {
                let now = at(clock.load(Ordering::SeqCst));
                for task in st.claim_tasks(&agent, now, ACCEPT).await.expect("claim_tasks") {
                    let (id, epoch) = (task.id.clone(), task.epoch);
                    if dice.roll(5) == 0 {
                        continue; // never accepted: its lease runs out
                    }
                    if st.start_task(&agent, &id, epoch, now, LEASE).await.is_err() {
                        continue; // reclaimed in between
                    }
                    if dice.roll(7) == 0 {
                        continue; // silent while running: reclaimed later
                    }
                    if epoch.0 > 1 {
                        let stale = st
                            .finish_task(
                                &agent,
                                &id,
                                Epoch(epoch.0 - 1),
                                &SUCCEEDED,
                                RunDetails::default(),
                                now,
                                Retry::fixed(BACKOFF),
                            )
                            .await;
                        let applied = matches!(stale, Ok((_, FinishResult::Applied(_))));
                        assert!(!applied, "a report under stale epoch {} of {id} was applied", epoch.0 - 1);
                    }
                    let outcome = if dice.roll(3) == 0 { failed("flaky") } else { SUCCEEDED };
                    match st
                        .finish_task(&agent, &id, epoch, &outcome, RunDetails::default(), now, Retry::fixed(BACKOFF))
                        .await
                    {
                        Ok((_, FinishResult::Applied(_))) => accepted.lock().expect("lock").push((id, epoch)),
                        Ok((_, FinishResult::Duplicate)) => panic!("{id}'s first finish under {epoch} was a duplicate"),
                        Err(StoreError::Refused(Refused::StaleEpoch { .. })) => {} // reclaimed while it ran
                        Err(e) => panic!("finish_task of {id}: {e:?}"),
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    {
        let (st, clock) = (store.clone(), clock.clone());
        actors.push(tokio::spawn(async move {
            let mut dice = Dice(99);
            for _ in 0..80 {
                let jump = dice.roll(20) as i64;
                let now = at(clock.fetch_add(jump, Ordering::SeqCst) + jump);
                st.reclaim_expired(now, 50).await.expect("reclaim_expired");
                tokio::task::yield_now().await;
            }
        }));
    }
    for actor in actors {
        actor.await.expect("an actor");
    }

    // Then everything left runs to its end.
    let mut now = clock.load(Ordering::SeqCst);
    for _ in 0..100 {
        now += 1_000;
        ok("reclaim_expired", s.reclaim_expired(at(now), 1_000).await);
        let mut busy = false;
        for agent in &agents {
            for task in ok("claim_tasks", s.claim_tasks(agent, at(now), ACCEPT).await) {
                busy = true;
                ok("start_task", s.start_task(agent, &task.id, task.epoch, at(now), LEASE).await);
                let (_, r) = finish(s, agent, &task.id, task.epoch, &SUCCEEDED, at(now)).await;
                assert!(matches!(r, FinishResult::Applied(_)));
                accepted.lock().expect("lock").push((task.id, task.epoch));
            }
        }
        let live = all_tasks(s, TaskFilter::default()).await.iter().filter(|t| !t.state.is_terminal()).count();
        if !busy && live == 0 {
            break;
        }
    }

    let tasks = all_tasks(s, TaskFilter::default()).await;
    assert_eq!(tasks.len() as u128, TASKS + KEYS, "nothing lost, nothing doubled");
    let accepted = accepted.lock().expect("lock").clone();
    let mut outcomes: std::collections::BTreeMap<Option<Outcome>, usize> = std::collections::BTreeMap::new();
    for t in &tasks {
        for a in attempts(s, &t.id).await {
            *outcomes.entry(a.outcome).or_default() += 1;
        }
    }
    // The race took every path: runs reclaimed under their agents, failures retried.
    for seen in [Outcome::Succeeded, Outcome::Failed, Outcome::LeaseExpired] {
        assert!(outcomes.get(&Some(seen)).is_some_and(|n| *n > 0), "no attempt ended {seen}: {outcomes:?}");
    }
    for t in &tasks {
        assert!(t.state.is_terminal() && t.lease.is_none(), "{} ended {:?} holding {:?}", t.id, t.state, t.lease);
        let tries = attempts(s, &t.id).await;
        let epochs: std::collections::BTreeSet<Epoch> = tries.iter().map(|a| a.epoch).collect();
        assert_eq!(epochs.len(), tries.len(), "{}: one attempt per lease", t.id);
        assert!(tries.iter().all(|a| a.outcome.is_some()), "{}: an attempt left open", t.id);
        assert!(t.attempts <= t.spec.max_attempts, "{}: {} attempts of {}", t.id, t.attempts, t.spec.max_attempts);
        let won = tries.iter().filter(|a| a.outcome.map(Outcome::as_str) == Some("succeeded")).count();
        assert_eq!(won, usize::from(t.state == TaskState::Succeeded), "{}: {won} successful attempts", t.id);
        for a in &tries {
            let reported = accepted.contains(&(t.id.clone(), a.epoch));
            let by_report = matches!(a.outcome.map(Outcome::as_str), Some("succeeded" | "failed"));
            assert_eq!(reported, by_report, "{} attempt under {}: ended {:?}", t.id, a.epoch, a.outcome);
        }
    }
}
