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

mod agents;
mod claims;
mod concurrency;
mod conflicts;
mod decisions;
mod events;
mod health;
mod hubs;
mod leases;
mod locks;
mod messages;
mod output;
mod pipelines;
mod reports;
mod schedules;
mod tasks;
mod tokens;
mod upkeep;

pub use agents::*;
pub use claims::*;
pub use concurrency::*;
pub use conflicts::*;
pub use decisions::*;
pub use events::*;
pub use health::*;
pub use hubs::*;
pub use leases::*;
pub use locks::*;
pub use messages::*;
pub use output::*;
pub use pipelines::*;
pub use reports::*;
pub use schedules::*;
pub use tasks::*;
pub use tokens::*;
pub use upkeep::*;

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
    create_tasks_creates_the_whole_batch_or_none_naming_the_refused_place,
    next_ready_is_when_the_earliest_queued_task_is_or_was_due,
    invalid_spec_is_refused_naming_the_field,
    claim_honours_priority_then_age,
    claim_routes_by_capability,
    claim_matches_the_runner,
    claim_fills_only_free_slots,
    claim_skips_agents_that_take_no_work,
    claim_waits_for_ready_at,
    claim_for_agents_serves_each_agent_in_turn_and_one_failure_fails_alone,
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
    a_wait_given_up_leaves_the_graph_and_a_start_forgets_every_wait,
    release_all_locks_forces_every_lock_with_one_event_each,
    an_operators_decision_holds_a_queued_task_until_a_person_answers,
    a_run_that_asks_and_stops_gives_its_slot_and_attempt_back_until_the_answer,
    an_unanswered_decision_takes_its_default_or_fails_the_task,
    a_pipeline_queues_its_first_stage_and_fills_in_earlier_results_as_each_stage_becomes_ready,
    a_pipeline_is_created_whole_or_not_at_all,
    schedules_are_added_found_paused_resumed_and_deleted_with_who_on_the_timeline,
    a_schedule_fires_once_for_each_due_time,
    channels_are_created_once_and_count_their_messages,
    messages_are_kept_by_mailbox_and_thread_and_read_in_order,
    mail_is_marked_delivered_or_read_once_and_only_in_its_own_mailbox,
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
    next_lease_expiry_is_the_earliest_lease_held_expired_or_not,
    hub_started_disconnects_agents_and_extends_leases,
    hubs_are_listed_with_their_agents_and_a_restart_replaces_its_earlier_run,
    a_hub_whose_beats_stop_is_reaped_its_agents_disconnected_and_its_duties_freed,
    a_duty_is_led_by_one_hub_and_changes_hands_only_when_its_lease_runs_out,
    a_fenced_store_acts_for_a_duty_only_while_the_database_still_names_it,
    a_reconnecting_agent_gives_back_at_once_what_it_does_not_hold,
    concurrent_claims_reports_and_reclaims_keep_every_invariant,
    append_output_stops_at_the_cap,
    steps_are_kept_in_order_up_to_the_limit_with_the_latest_live,
    append_steps_and_set_live_with_a_stale_epoch_are_refused,
    finish_keeps_the_agents_report_of_the_run,
    an_attempt_missing_output_its_agent_sent_says_its_output_is_incomplete,
    costs_are_summed_by_task_agent_runner_and_day,
    a_check_that_passed_before_and_fails_now_is_a_regression,
    shadow_pairs_are_finished_pairs_most_recently_finished_first,
    breakers_open_on_failures_let_one_probe_through_after_the_cooldown_and_close_on_its_success,
    a_lost_probe_is_replaced_and_an_operator_can_reset_a_breaker,
    a_disabled_runner_gets_no_work_and_tasks_with_fallbacks_use_them,
    tasks_fall_back_while_their_runner_waits_for_a_probe_and_a_lost_agent_does_not_open_its_runner,
    a_provider_limit_requeues_without_an_attempt_and_pauses_the_runner_until_the_reset,
    limit_runner_rests_a_runner_until_its_time_and_leaves_an_operators_disable_alone,
    a_shorter_limit_leaves_the_longer_limit_and_who_set_it,
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
    a_shared_setting_is_decided_by_the_first_to_store_it,
    dashboard_sessions_last_until_they_end,
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
/// The hub the cases start, when one must be started.
fn the_hub() -> crate::HubInfo {
    crate::HubInfo {
        id: "h_conformance".to_owned(),
        name: "conformance".to_owned(),
        url: "http://127.0.0.1:4000".to_owned(),
        version: "1.0.0".to_owned(),
        ttl: Duration::from_secs(10),
        exclusive: true,
    }
}

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
    assert!(s.maintenance().write_stats().failing.is_none(), "no commit has failed");
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
