//! What only the SQLite backend promises: acknowledged changes survive a
//! reopen, the writer runs in WAL mode, concurrent writes share commits
//! without losing one, a failed change leaves the rest of its batch alone,
//! and migrations run once.

use crate::{db_path, fresh_sqlite};
use futures_util::future::join_all;
use muster_core::backoff::Retry;
use muster_core::task::{Cancel, Finished};
use muster_core::{
    AgentName, Epoch, Millis, Outcome, Priority, RunOutcome, RunnerName, Task, TaskId, TaskSpec, TaskState, TokenId,
};
use muster_store::Maintenance;
use muster_store::sqlite::{SqliteStore, schema};
use muster_store::{
    AgentRecord, Announce, AttemptRecord, Event, EventFilter, FinishResult, Limits, NewAgent, NewToken, OutputChunk,
    OutputFilter, OutputRecord, RunDetails, Scope, Store, StoreError, Stream, TaskFilter, TokenRecord,
};
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const T0: i64 = 1_700_000_000_000;
const LEASE: Duration = Duration::from_secs(30);
const BACKOFF: Duration = Duration::from_secs(5);

fn at(secs: i64) -> Millis {
    Millis(T0 + secs * 1_000)
}

fn task_id(n: u128) -> TaskId {
    TaskId::from_parts(T0, n)
}

fn spec(prompt: &str) -> TaskSpec {
    TaskSpec {
        prompt: prompt.to_owned(),
        runner: RunnerName::parse("shell").unwrap(),
        capabilities: Vec::new(),
        priority: Priority::Normal,
        timeout: Duration::from_secs(60),
        max_attempts: 3,
        idempotency_key: None,
        metadata: None,
        workspace: None,
        fallback: Vec::new(),
        budget: muster_core::task::Budget::default(),
        shadow_of: None,
        requires_approval: false,
        depends_on: Vec::new(),
        on_dependency_failure: muster_core::task::DependencyPolicy::Fail,
        checks: Vec::new(),
    }
}

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&db_path(dir), Limits::default()).expect("open the SQLite store")
}

fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open a plain connection");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

async fn online(s: &dyn Store, name: &str, slots: u32) -> AgentName {
    let agent = AgentName::parse(name).unwrap();
    let token = NewToken {
        id: TokenId::from_random(u64::from(name.len() as u32) << 8 | u64::from(name.as_bytes()[0])),
        name: format!("{name} token"),
        scope: Scope::Agent,
        agent: Some(agent.clone()),
        hash: "00".repeat(32),
    };
    s.register_agent(NewAgent { name: agent.clone(), capabilities: Vec::new() }, token, at(0)).await.unwrap();
    let hello = Announce {
        capabilities: Vec::new(),
        runners: vec![RunnerName::parse("shell").unwrap()],
        slots,
        version: "1.0.0".to_owned(),
        doctor: None,
        holds: None,
    };
    s.agent_connected(&agent, hello, at(0)).await.unwrap();
    agent
}

/// Claims exactly `id` for `agent` and starts it.
async fn start(s: &dyn Store, agent: &AgentName, id: &TaskId, now: Millis) -> Epoch {
    let claimed = s.claim_tasks(agent, now, Duration::from_secs(10)).await.unwrap();
    assert_eq!(claimed.iter().map(|t| &t.id).collect::<Vec<_>>(), [id]);
    let epoch = claimed[0].epoch;
    s.start_task(agent, id, epoch, now, LEASE).await.unwrap();
    epoch
}

/// Everything a reader can see.
#[derive(Debug, PartialEq)]
struct Everything {
    tokens: Vec<TokenRecord>,
    agents: Vec<AgentRecord>,
    tasks: Vec<Task>,
    attempts: Vec<Vec<AttemptRecord>>,
    output: Vec<Vec<OutputRecord>>,
    events: Vec<Event>,
    counts: Vec<(TaskState, u64)>,
    next_due: Option<Millis>,
    last_event: i64,
}

async fn everything(s: &dyn Store) -> Everything {
    let tasks = s.list_tasks(&TaskFilter { limit: 1_000, ..TaskFilter::default() }).await.unwrap();
    assert!(tasks.next.is_none(), "more tasks than one page");
    let mut attempts = Vec::new();
    let mut output = Vec::new();
    for task in &tasks.items {
        attempts.push(s.attempts(&task.id).await.unwrap());
        output.push(s.read_output(&task.id, &OutputFilter { limit: 10_000, ..OutputFilter::default() }).await.unwrap());
    }
    let events = s.events(&EventFilter { limit: 10_000, ..EventFilter::default() }).await.unwrap();
    Everything {
        tokens: s.list_tokens().await.unwrap(),
        agents: s.list_agents().await.unwrap(),
        tasks: tasks.items,
        attempts,
        output,
        last_event: events.last().map_or(0, |e| e.seq),
        events,
        counts: s.count_tasks().await.unwrap(),
        next_due: s.next_due().await.unwrap(),
    }
}

/// Leaves tasks in every state, with output, attempts and events.
async fn tell_a_story(s: &dyn Store) {
    let admin = NewToken {
        id: TokenId::from_random(1),
        name: "admin".to_owned(),
        scope: Scope::Admin,
        agent: None,
        hash: "11".repeat(32),
    };
    s.create_token(admin, at(0)).await.unwrap();
    s.touch_token(&TokenId::from_random(1), at(1)).await.unwrap();
    let a = online(s, "a", 4).await;

    let done = s.create_task(task_id(1), spec("done"), at(1)).await.unwrap().task.id;
    let e = start(s, &a, &done, at(1)).await;
    let chunks = vec![
        OutputChunk { stream: Stream::Stdout, data: b"out".to_vec() },
        OutputChunk { stream: Stream::Stderr, data: vec![0, 159, 146, 150] },
    ];
    s.append_output(&a, &done, e, chunks, at(2)).await.unwrap();
    let (_, r) = s
        .finish_task(
            &a,
            &done,
            e,
            &RunOutcome::Succeeded { exit_code: 0 },
            RunDetails::default(),
            at(3),
            Retry::fixed(BACKOFF),
        )
        .await
        .unwrap();
    assert_eq!(r, FinishResult::Applied(Finished::Succeeded));

    let flaky = s.create_task(task_id(2), spec("flaky"), at(4)).await.unwrap().task.id;
    let e = start(s, &a, &flaky, at(4)).await;
    let boom = RunOutcome::Failed { exit_code: Some(3), reason: "boom".to_owned() };
    s.finish_task(&a, &flaky, e, &boom, RunDetails::default(), at(5), Retry::fixed(BACKOFF)).await.unwrap();

    let running = s.create_task(task_id(3), spec("running"), at(6)).await.unwrap().task.id;
    start(s, &a, &running, at(6)).await;

    let keyed = TaskSpec { idempotency_key: Some("key-1".to_owned()), ..spec("keyed") };
    let cancelled = s.create_task(task_id(4), keyed, at(7)).await.unwrap().task.id;
    let (_, how) = s.cancel_task(&cancelled, at(8)).await.unwrap();
    assert_eq!(how, Cancel::Done { notify: None });
}

#[tokio::test]
async fn acknowledged_changes_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    tell_a_story(&store).await;
    let before = everything(&store).await;
    store.close().await;
    drop(store);

    let store = open(&dir);
    assert_eq!(everything(&store).await, before, "a reopened database lost or changed an acknowledged change");
    assert_eq!(*store.subscribe().borrow(), before.last_event, "the event watch must resume at the latest event");
    // The idempotency key still answers after the reopen.
    let again = TaskSpec { idempotency_key: Some("key-1".to_owned()), ..spec("keyed") };
    let created = store.create_task(task_id(9), again, at(9)).await.unwrap();
    assert_eq!((created.created, created.task.id), (false, task_id(4)));
    store.close().await;
}

#[tokio::test]
async fn acknowledged_changes_survive_dropping_the_store_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    tell_a_story(&store).await;
    let before = everything(&store).await;
    // No close: the writer may still be shutting down while the next store opens.
    drop(store);

    let store = open(&dir);
    assert_eq!(everything(&store).await, before, "dropping the store lost an acknowledged change");
    store.close().await;
}

#[tokio::test]
async fn every_write_answered_before_close_survives() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    // Some answered for certain before the close; the rest race it.
    let mut acknowledged = BTreeSet::new();
    for n in 1000..1020u128 {
        assert!(store.create_task(task_id(n), spec("before close"), at(0)).await.unwrap().created);
        acknowledged.insert(task_id(n));
    }
    let mut writes = Vec::new();
    for n in 0..200u128 {
        let store = store.clone();
        writes.push(tokio::spawn(async move { (n, store.create_task(task_id(n), spec("racing close"), at(0)).await) }));
    }
    store.close().await;
    for write in writes {
        match write.await.unwrap() {
            (n, Ok(created)) => {
                assert!(created.created);
                acknowledged.insert(task_id(n));
            }
            (_, Err(StoreError::Closed)) => {}
            (n, Err(e)) => panic!("write {n} racing close failed with {e:?}, not Closed"),
        }
    }
    drop(store);

    let store = open(&dir);
    let listed = store.list_tasks(&TaskFilter { limit: 1_000, ..TaskFilter::default() }).await.unwrap();
    let present: BTreeSet<TaskId> = listed.items.into_iter().map(|t| t.id).collect();
    assert!(acknowledged.len() >= 20, "the writes answered before the close are counted");
    assert_eq!(present, acknowledged, "exactly the acknowledged writes must be on disk");
    store.close().await;
}

#[tokio::test]
async fn the_database_is_in_wal_mode() {
    let (store, dir) = fresh_sqlite().await;
    store.create_task(task_id(1), spec("work"), at(0)).await.unwrap();
    // journal_mode=WAL is a property of the database file, so a separate
    // connection sees what the writer set. (`synchronous` is per connection:
    // the writer's FULL cannot be read from outside it.)
    let conn = raw(&db_path(&dir));
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert!(dir.path().join("muster.db-wal").exists(), "a WAL database writes beside a -wal file");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_are_all_committed() {
    let (store, _dir) = fresh_sqlite().await;
    let mut writes = Vec::new();
    for n in 0..500u128 {
        let store = store.clone();
        writes.push(tokio::spawn(async move { store.create_task(task_id(n), spec("burst"), at(0)).await }));
    }
    for write in writes {
        let created = write.await.unwrap().expect("a concurrent create_task failed");
        assert!(created.created);
    }
    let listed = store.list_tasks(&TaskFilter { limit: 1_000, ..TaskFilter::default() }).await.unwrap();
    let ids: BTreeSet<TaskId> = listed.items.into_iter().map(|t| t.id).collect();
    assert_eq!(ids, (0..500).map(task_id).collect::<BTreeSet<_>>());
    let queued = store.count_tasks().await.unwrap().into_iter().find(|(s, _)| *s == TaskState::Queued);
    assert_eq!(queued, Some((TaskState::Queued, 500)));
    let events = store.events(&EventFilter { limit: 10_000, ..EventFilter::default() }).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "task.created").count(), 500);
    assert_eq!(*store.subscribe().borrow(), events.last().unwrap().seq);
    store.close().await;
}

/// Holding the write lock from another connection parks the writer at its
/// `BEGIN`, so changes queued meanwhile are committed in at most two batches;
/// each failing change sits between two good ones, so it shares a batch
/// with at least one of them.
#[tokio::test]
async fn a_failing_change_does_not_undo_the_rest_of_its_batch() {
    let (store, dir) = fresh_sqlite().await;
    let queued = store.create_task(task_id(0), spec("queued"), at(0)).await.unwrap().task;
    let blocker = raw(&db_path(&dir));
    // A stray capability row makes creating task 9 fail after its task row
    // is written, so its savepoint has something to undo.
    blocker.execute("INSERT INTO task_caps (task_id, cap) VALUES (?, 'gpu')", [task_id(9).as_str()]).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let first = task_id(0);
    let gpu = TaskSpec { capabilities: vec![muster_core::Capability::parse("gpu").unwrap()], ..spec("fails") };
    let (s1, refused, s2, partial, s3, ()) = tokio::join!(
        biased;
        store.create_task(task_id(1), spec("one"), at(1)),
        store.retry_task(&first, at(1)),
        store.create_task(task_id(2), spec("two"), at(1)),
        store.create_task(task_id(9), gpu, at(1)),
        store.create_task(task_id(3), spec("three"), at(1)),
        async { blocker.execute_batch("COMMIT").unwrap() },
    );

    for (n, result) in [(1, s1), (2, s2), (3, s3)] {
        assert!(result.expect("a good change in the batch failed").created, "task {n}");
    }
    assert!(matches!(refused, Err(StoreError::Refused(_))), "retry of a queued task: {refused:?}");
    assert!(matches!(partial, Err(StoreError::Database(_))), "create over a stray capability row: {partial:?}");
    for n in 1..=3 {
        assert!(store.task(&task_id(n)).await.unwrap().is_some(), "task {n} was rolled back with a failing change");
    }
    assert_eq!(store.task(&task_id(9)).await.unwrap(), None, "the failed change's own writes must be undone");
    assert_eq!(store.task(&task_id(0)).await.unwrap(), Some(queued), "a refused retry changed its task");
    let events = store.events(&EventFilter { limit: 100, ..EventFilter::default() }).await.unwrap();
    let created: Vec<Option<TaskId>> =
        events.iter().filter(|e| e.kind == "task.created").map(|e| e.task.clone()).collect();
    assert_eq!(created, [0, 1, 2, 3].map(|n| Some(task_id(n))), "events of failed changes must be undone too");
    assert!(events.iter().all(|e| e.kind != "task.retried"));
    assert_eq!(
        store.maintenance().write_stats().redone_batches,
        1,
        "only the batch with the half-written change is redone"
    );
    store.close().await;
}

/// A change refused before it writes anything needs no undoing: its batch
/// is committed as it was applied, without savepoints, and not redone.
#[tokio::test]
async fn a_change_refused_before_writing_does_not_redo_its_batch() {
    let (store, dir) = fresh_sqlite().await;
    let queued = store.create_task(task_id(0), spec("queued"), at(0)).await.unwrap().task;
    let blocker = raw(&db_path(&dir));
    let first = task_id(0);
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (s1, refused, s2, ()) = tokio::join!(
        biased;
        store.create_task(task_id(1), spec("one"), at(1)),
        store.retry_task(&first, at(1)),
        store.create_task(task_id(2), spec("two"), at(1)),
        async { blocker.execute_batch("COMMIT").unwrap() },
    );
    assert!(s1.unwrap().created && s2.unwrap().created);
    assert!(matches!(refused, Err(StoreError::Refused(_))), "retry of a queued task: {refused:?}");
    assert_eq!(store.task(&task_id(0)).await.unwrap(), Some(queued));
    let stats = store.maintenance().write_stats();
    assert_eq!(stats.redone_batches, 0, "{stats:?}");
    assert_eq!(stats.failed_batches, 0, "{stats:?}");
    store.close().await;
}

#[tokio::test]
async fn migrations_run_once_and_reopening_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut fresh = Connection::open(dir.path().join("other.db")).unwrap();
    assert_eq!(schema::migrate(&mut fresh).unwrap(), schema::CURRENT, "a new database gets every migration");
    assert_eq!(schema::migrate(&mut fresh).unwrap(), 0, "a second run applies nothing");

    let store = open(&dir);
    tell_a_story(&store).await;
    let before = everything(&store).await;
    store.close().await;
    drop(store);
    for _ in 0..3 {
        let store = open(&dir);
        assert_eq!(everything(&store).await, before, "reopening changed the data");
        store.close().await;
    }
    let mut conn = raw(&path);
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, schema::CURRENT as i64);
    assert_eq!(schema::migrate(&mut conn).unwrap(), 0, "a migrated database needs nothing more");
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(&dir).close().await;
    raw(&db_path(&dir)).pragma_update(None, "user_version", schema::CURRENT as i64 + 1).unwrap();
    match SqliteStore::open(&db_path(&dir), Limits::default()) {
        Err(StoreError::Database(message)) => assert!(message.contains("newer"), "{message}"),
        Err(other) => panic!("expected a Database error naming the newer schema, got {other:?}"),
        Ok(_) => panic!("a database from a newer build must not open"),
    }
}

#[tokio::test]
async fn a_backup_is_a_verified_copy_and_restore_refuses_what_is_not_one() {
    use muster_store::sqlite::backup;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for n in 1..=3 {
        store.create_task(task_id(n), spec("kept"), at(0)).await.unwrap();
    }
    let copy = dir.path().join("copy.db");
    let info = store.backup(&copy).await.unwrap();
    assert_eq!(info.tasks, 3);
    assert!(matches!(store.backup(&copy).await, Err(StoreError::Conflict(_))), "a backup never overwrites");
    store.create_task(task_id(4), spec("after the backup"), at(1)).await.unwrap();
    store.close().await;

    let db = dir.path().join("muster.db");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, b"not a database at all").unwrap();
    let newer = dir.path().join("newer.db");
    std::fs::copy(&copy, &newer).unwrap();
    raw(&newer).pragma_update(None, "user_version", 99).unwrap();
    let before = std::fs::read(&db).unwrap();
    for (file, why) in [(&garbage, "not a readable SQLite database"), (&newer, "schema version 99")] {
        let err = backup::restore(file, &db, "x").unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
        assert_eq!(std::fs::read(&db).unwrap(), before, "a refused restore changes nothing");
    }

    let restored = backup::restore(&copy, &db, "stamp").unwrap();
    assert_eq!(restored.from.tasks, 3);
    let kept = restored.previous.unwrap();
    assert!(kept.ends_with("muster.db.before-restore-stamp"));
    let reopened = open(&dir);
    assert!(reopened.task(&task_id(3)).await.unwrap().is_some());
    assert!(reopened.task(&task_id(4)).await.unwrap().is_none(), "the restore is the backup's state");
    reopened.close().await;
    assert_eq!(backup::verify(&kept).unwrap().tasks, 4, "the replaced database is kept whole");

    // Restoring where there is no database yet just puts it there.
    let empty = tempfile::tempdir().unwrap();
    let fresh = backup::restore(&copy, &empty.path().join("muster.db"), "x").unwrap();
    assert!(fresh.previous.is_none());
}

#[tokio::test]
async fn check_finds_injected_damage_and_repair_hands_orphans_back_to_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let a = online(&store, "a", 2).await;
    store.create_task(task_id(1), spec("work"), at(0)).await.unwrap();
    let e = start(&store, &a, &task_id(1), at(1)).await;
    store.create_task(task_id(2), spec("work"), at(1)).await.unwrap();
    start(&store, &a, &task_id(2), at(1)).await;
    store.create_task(task_id(3), spec("work"), at(1)).await.unwrap();
    store.cancel_task(&task_id(3), at(1)).await.unwrap();
    assert_eq!(store.check(false, at(2)).await.unwrap().findings, []);

    // Damage from outside: a lease held by an agent nobody registered, a
    // lease left on a finished task, and a gap in the events.
    let conn = raw(&db_path(&dir));
    conn.execute("UPDATE tasks SET lease_agent = 'ghost' WHERE id = ?", [task_id(1).as_str()]).unwrap();
    conn.execute(
        "UPDATE tasks SET lease_agent = 'a', lease_epoch = 1, lease_expires_at = 1 WHERE id = ?",
        [task_id(3).as_str()],
    )
    .unwrap();
    conn.execute("DELETE FROM events WHERE seq = 3", []).unwrap();
    drop(conn);

    let report = store.check(false, at(3)).await.unwrap();
    let kinds: Vec<&str> = report.findings.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["orphan", "lease", "events"], "{:?}", report.findings);
    assert!(report.findings[0].1.contains("held by ghost, which is not a registered agent"));
    assert_eq!(report.repaired, Vec::<String>::new(), "a check alone changes nothing");

    let report = store.check(true, at(3)).await.unwrap();
    assert_eq!(
        report.repaired,
        [
            format!("{}: leftover lease removed", task_id(3)),
            format!("{}: reclaimed (Requeued), now queued", task_id(1))
        ]
    );
    assert_eq!(store.task(&task_id(1)).await.unwrap().unwrap().state, TaskState::Queued);
    let attempt = &store.attempts(&task_id(1)).await.unwrap()[0];
    assert_eq!((attempt.epoch, attempt.outcome.map(Outcome::as_str)), (e, Some("lease_expired")));
    let after = store.check(false, at(4)).await.unwrap();
    let kinds: Vec<&str> = after.findings.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["events"], "only the lost event cannot be repaired");
}

/// Runs `n` tasks, each printing `bytes` of output, to success at `now`, concurrently
/// so that they share commits.
async fn run_many(s: &SqliteStore, agent: &AgentName, n: u128, bytes: usize, now: Millis) {
    let creates = (0..n).map(|i| s.create_task(task_id(1_000 + i), spec("many"), now));
    for created in join_all(creates).await {
        created.unwrap();
    }
    let claimed = s.claim_tasks(agent, now, Duration::from_secs(10)).await.unwrap();
    assert_eq!(claimed.len() as u128, n, "the agent has a slot for each");
    let starts = claimed.iter().map(|t| s.start_task(agent, &t.id, t.epoch, now, LEASE));
    for started in join_all(starts).await {
        started.unwrap();
    }
    // Noise, so compression at rest cannot shrink it and the file really grows.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let chunk: Vec<u8> = (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let outputs = claimed.iter().map(|t| {
        s.append_output(agent, &t.id, t.epoch, vec![OutputChunk { stream: Stream::Stdout, data: chunk.clone() }], now)
    });
    for appended in join_all(outputs).await {
        appended.unwrap();
    }
    let done = RunOutcome::Succeeded { exit_code: 0 };
    let finishes = claimed
        .iter()
        .map(|t| s.finish_task(agent, &t.id, t.epoch, &done, RunDetails::default(), now, Retry::fixed(BACKOFF)));
    for finished in join_all(finishes).await {
        finished.unwrap();
    }
}

#[tokio::test]
async fn compaction_prunes_in_batches_and_gives_the_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let agent = online(&s, "a", 1_500).await;
    run_many(&s, &agent, 1_200, 8 * 1024, at(0)).await;
    let full = s.db_stats().await.unwrap();
    assert_eq!((full.tasks, full.auto_vacuum), (1_200, "incremental"), "{full:?}");

    let retention = muster_store::Retention { tasks: Some(Duration::from_secs(3600)), ..Default::default() };
    let report = s.compact(retention, false, at(7200)).await.unwrap();
    assert_eq!(report.tasks_pruned, 1_200, "more than one batch of tasks is pruned: {report:?}");
    assert_eq!(report.output_bytes_pruned, 1_200 * 8 * 1024);
    assert!(!report.rewritten, "a database created by this build needs no rewrite");
    let after = s.db_stats().await.unwrap();
    assert_eq!(after.tasks, 0);
    assert!(after.free_ratio() < 0.05, "the free pages were given back: {after:?}");
    assert!(
        report.bytes_after * 2 < report.bytes_before,
        "the file shrank from {} to {} bytes",
        report.bytes_before,
        report.bytes_after
    );
    assert!(after.bytes + after.wal_bytes <= report.bytes_after + after.page_size * 8, "{after:?}");
    s.close().await;
    let reopened = open(&dir);
    assert_eq!(reopened.db_stats().await.unwrap().tasks, 0, "the pruning is durable");
    reopened.close().await;
}

#[tokio::test]
async fn a_database_from_before_incremental_vacuum_is_rewritten_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let mut conn = raw(&path);
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        schema::migrate(&mut conn).unwrap();
        let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 0, "made the way older builds made it");
    }
    let s = open(&dir);
    assert_eq!(s.db_stats().await.unwrap().auto_vacuum, "none");
    let agent = online(&s, "a", 100).await;
    run_many(&s, &agent, 50, 1024, at(0)).await;
    let running = task_id(1);
    s.create_task(running.clone(), spec("runs through the rewrite"), at(0)).await.unwrap();
    start(&s, &agent, &running, at(0)).await;
    let scheduled = s.compact(muster_store::Retention::default(), false, at(5)).await.unwrap();
    assert!(!scheduled.rewritten && scheduled.needs_rewrite, "only an operator's compaction rewrites: {scheduled:?}");
    assert!(scheduled.summary().contains("muster compact"), "{}", scheduled.summary());
    assert_eq!(s.db_stats().await.unwrap().auto_vacuum, "none");

    let lease_before = s.task(&running).await.unwrap().unwrap().lease.unwrap().expires_at;
    let before = everything(&s).await;
    let first = s.compact(muster_store::Retention::default(), true, at(10)).await.unwrap();
    assert!(first.rewritten, "the first compaction rewrites the file: {first:?}");
    let lease_after = s.task(&running).await.unwrap().unwrap().lease.unwrap().expires_at;
    assert!(lease_after > lease_before, "the wait is added to live leases: {lease_before:?} -> {lease_after:?}");
    assert_eq!(s.db_stats().await.unwrap().auto_vacuum, "incremental");
    let mut after = everything(&s).await;
    after.events.pop();
    after.last_event = before.last_event;
    after.next_due = before.next_due;
    for task in after.tasks.iter_mut().filter(|t| t.id == running) {
        task.lease.as_mut().unwrap().expires_at = lease_before;
    }
    assert_eq!(after, before, "the rewrite keeps every row");
    let second = s.compact(muster_store::Retention::default(), true, at(20)).await.unwrap();
    assert!(!second.rewritten, "later compactions do not rewrite: {second:?}");
    s.close().await;
}

#[tokio::test]
async fn large_output_is_compressed_at_rest_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let a = online(&s, "a", 1).await;
    let task = task_id(1);
    s.create_task(task.clone(), spec("chatty").validate().unwrap(), at(0)).await.unwrap();
    let e = start(&s, &a, &task, at(0)).await;
    let line = "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"compiling\"}]}}\n";
    let big = line.repeat(2_000);
    let small = "tiny\n";
    let chunks = vec![
        OutputChunk { stream: Stream::Stdout, data: big.clone().into_bytes() },
        OutputChunk { stream: Stream::Stderr, data: small.as_bytes().to_vec() },
    ];
    let stored = s.append_output(&a, &task, e, chunks, at(1)).await.unwrap();
    assert_eq!(stored.stored_bytes, (big.len() + small.len()) as u64, "the cap counts bytes as written");
    let back = s.read_output(&task, &OutputFilter { limit: 100, ..OutputFilter::default() }).await.unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!((back[0].data.as_slice(), back[1].data.as_slice()), (big.as_bytes(), small.as_bytes()));
    s.close().await;

    let conn = raw(&db_path(&dir));
    let rows: Vec<(i64, i64)> = conn
        .prepare("SELECT length(data), encoding FROM output ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(rows[1], (small.len() as i64, 0), "a small chunk is kept as it is");
    assert_eq!(rows[0].1, 1, "a big chunk is deflated");
    assert!(rows[0].0 * 20 < big.len() as i64, "repetitive output shrinks: {} of {}", rows[0].0, big.len());
}
