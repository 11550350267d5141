//! The embedded SQLite backend.
//!
//! Writes go through one writer thread that owns the only read-write
//! connection. It takes every change waiting in its queue (up to
//! `Limits::max_batch`), applies them in one `BEGIN IMMEDIATE` transaction,
//! commits once, and only then answers each caller: group commit. With WAL
//! and `synchronous=FULL` the commit is an fsync, so an answered change
//! survives `kill -9` and a power cut, and a burst of N changes costs one
//! fsync instead of N. A change that fails does not disturb the rest of its
//! batch: one that failed before writing anything needs no undoing, and when
//! one failed half-way the batch is rolled back and applied again with each
//! change in a savepoint of its own (see `apply_batch`).
//!
//! Reads use a small pool of read-only connections on blocking threads; WAL
//! lets them run beside the writer and see every committed change.

pub mod backup;
pub mod ceiling;
pub mod schema;
mod upkeep;
mod vfs;

use crate::engine::{Hooks, InBatch};
use crate::ops;
use crate::sql;
use crate::{Limits, Result, StoreError};
use async_trait::async_trait;
use muster_core::breaker::Policy;
use muster_core::{AgentName, Millis, Task};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::NoSpace(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// One change for the writer. It may be applied more than once: a batch
/// that has to be redone applies every change in it again, and only the last
/// application's result counts.
trait Change: Send {
    /// Applies the change in the open transaction (`None`: there is none,
    /// the change fails); whether it stands.
    fn apply(&mut self, conn: Option<&Connection>) -> bool;
    /// Answers the caller once the commit's fate is known.
    fn answer(self: Box<Self>, commit: Result<()>);
    /// Why its last application failed, if it did.
    fn failure(&self) -> Option<StoreError>;
}

type Job = Box<dyn Change>;

/// A caller's change and, once applied, its result.
struct Pending<F, R> {
    change: F,
    result: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

impl<F, R> Change for Pending<F, R>
where
    F: FnMut(&sql::Connection<'_>) -> Result<R> + Send,
    R: Send,
{
    fn apply(&mut self, conn: Option<&Connection>) -> bool {
        let result = match conn {
            Some(conn) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.change)(&sql::Connection::Sqlite(conn))))
                    .unwrap_or_else(|_| {
                        tracing::error!("a store change panicked; it is rolled back");
                        Err(StoreError::Database("the change failed unexpectedly and was rolled back".into()))
                    })
            }
            None => Err(StoreError::Database("could not begin a transaction".into())),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<()>) {
        let result = self.result.unwrap_or_else(|| Err(StoreError::Database("the change was never applied".into())));
        let _ = self.reply.send(commit.and(result));
    }

    fn failure(&self) -> Option<StoreError> {
        self.result.as_ref().and_then(|r| r.as_ref().err().cloned())
    }
}

type Maintenance = Box<dyn FnOnce(&Connection) + Send>;

/// What the writer thread is asked to do.
enum Work {
    /// One change in the next batch.
    Change(Job),
    /// Maintenance that cannot run inside a transaction (`VACUUM`, a
    /// checkpoint): runs on its own, between batches.
    Alone(Maintenance),
}

/// Read-only connections, and so reads at once: a read waits for a
/// connection rather than opening one, which would compile each of its
/// statements afresh.
const READ_POOL: usize = 8;

#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    limits: Limits,
    /// `None` once closed. Held only to clone the sender: no `.await` inside.
    jobs: Mutex<Option<mpsc::Sender<Work>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Dropping the sender stops the checkpointer thread.
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    /// Idle read-only connections.
    readers: Mutex<Vec<Connection>>,
    /// One permit per connection in the pool.
    reading: tokio::sync::Semaphore,
    last_event: watch::Receiver<i64>,
    stats: Arc<WriterStats>,
    hooks: Arc<Hooks>,
}

/// Shared with the writer thread.
struct WriterStats {
    commit: muster_metrics::Histogram,
    batch: muster_metrics::Histogram,
    failed: muster_metrics::Counter,
    /// Batches applied a second time, with savepoints, after a change failed half-way.
    redone: muster_metrics::Counter,
    /// Why the latest commit failed; `None` once one succeeds.
    failing: Mutex<Option<String>>,
}

/// Prepared statements kept per connection: more than the store has, so
/// none is compiled twice (rusqlite keeps 16 unless told).
const STATEMENT_CACHE: usize = 512;

/// Opens a connection to the store's database through the store's VFS
/// (see `vfs`), which every connection to it uses.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection> {
    vfs::register().map_err(StoreError::Database)?;
    Connection::open_with_flags_and_vfs(path, flags, vfs::NAME)
        .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Plans do not depend on the values bound. Without this, a statement
    // with a range on an indexed column (`ready_at <= ?`) is compiled again
    // each time the bound value changes, which the dispatch query's is on
    // every pass. The queries that need a particular index name it.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies
    /// migrations and starts the writer thread.
    pub fn open(path: &Path, limits: Limits) -> Result<SqliteStore> {
        let mut conn = connect(path, OpenFlags::default())?;
        configure(&conn)?;
        // A new database gives freed pages back a step at a time (see
        // `compact`); this can only be chosen before the first table exists.
        let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if tables == 0 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!("{} cannot use WAL (journal_mode is {mode})", path.display())));
        }
        // FULL: the WAL is fsynced at every commit, so a committed change
        // survives a power cut, not only a crash of this process.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // A batch redone with savepoints (see `Isolation`), and each claim of
        // the dispatch loop's pass, runs in one, and SQLite keeps the first
        // image of every page a savepoint touches so it can roll back to it.
        // In memory that is a copy; in a temporary file (the default) it was
        // a write to the kernel per page per change.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // The writer copies the log back into the database itself only when
        // it is this long; until then the checkpointer thread does it beside
        // the writer (see `checkpoint_loop`).
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        schema::migrate(&mut conn)?;
        let last: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
        let (event_tx, event_rx) = watch::channel(last);
        let (tx, rx) = mpsc::channel::<Work>(8192);
        let max_batch = limits.max_batch.max(1);
        let stats = Arc::new(WriterStats {
            commit: muster_metrics::Histogram::new(muster_metrics::LATENCY_BUCKETS),
            batch: muster_metrics::Histogram::new(muster_metrics::SIZE_BUCKETS),
            failed: muster_metrics::Counter::default(),
            redone: muster_metrics::Counter::default(),
            failing: Mutex::new(None),
        });
        let writer_stats = stats.clone();
        let hooks = Arc::new(Hooks::default());
        let writer_hooks = hooks.clone();
        let writer = std::thread::Builder::new()
            .name("muster-store-writer".into())
            .spawn(move || writer_loop(conn, rx, max_batch, event_tx, &writer_stats, &writer_hooks))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        let (stop_checkpoints, stop) = std::sync::mpsc::channel();
        let log = path.to_owned();
        let checkpointer = std::thread::Builder::new()
            .name("muster-store-checkpoint".into())
            .spawn(move || checkpoint_loop(&log, &stop))
            .map_err(|e| StoreError::Database(format!("cannot start the checkpointer thread: {e}")))?;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                limits,
                jobs: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                checkpointer: Mutex::new(Some((stop_checkpoints, checkpointer))),
                readers: Mutex::new(Vec::new()),
                reading: tokio::sync::Semaphore::new(READ_POOL),
                last_event: event_rx,
                stats,
                hooks,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Runs `f` as one change in the next batch; resolves after the commit.
    /// `f` may run more than once (see `Change`): it must take what it needs
    /// by reference or by clone, and leave nothing behind but its writes.
    async fn write_change<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&sql::Connection<'_>) -> Result<R> + Send + 'static,
    {
        let sender = self.shared.jobs.lock().expect("jobs lock poisoned").clone().ok_or(StoreError::Closed)?;
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(Pending { change: f, result: None, reply });
        sender.send(Work::Change(job)).await.map_err(|_| StoreError::Closed)?;
        let answer =
            rx.await.map_err(|_| StoreError::Database("the store stopped before the change was committed".into()))?;
        answer.map_err(|e| match e {
            StoreError::NoSpace(why) => {
                let dir = self.shared.path.parent().map_or_else(|| ".".into(), |d| d.display().to_string());
                StoreError::NoSpace(format!(
                    "no space left on the disk holding {dir} ({why}); nothing was written: free space there and try again"
                ))
            }
            other => other,
        })
    }

    /// Runs `f` on the writer's connection between batches, outside any
    /// transaction; other changes wait until it returns.
    async fn alone<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let sender = self.shared.jobs.lock().expect("jobs lock poisoned").clone().ok_or(StoreError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let work = Work::Alone(Box::new(move |conn| {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(StoreError::Database("maintenance failed unexpectedly".into())));
            let _ = tx.send(result);
        }));
        sender.send(work).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read-only connection on a blocking thread.
    async fn read_raw<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let _permit = self.shared.reading.acquire().await.map_err(|_| StoreError::Closed)?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = shared.readers.lock().expect("readers lock poisoned").pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn =
                        connect(&shared.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
                    configure(&conn)?;
                    conn
                }
            };
            let result = f(&conn);
            let mut readers = shared.readers.lock().expect("readers lock poisoned");
            if readers.len() < READ_POOL {
                readers.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }
}

/// Finished tasks, outputs or events removed per change while compacting.
const PRUNE_BATCH: usize = 500;
/// Pages given back per step of a compaction (8 MiB with 4 KiB pages).
const VACUUM_PAGES: u64 = 2048;

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The database file and its write-ahead log, in bytes.
fn file_bytes(db: &Path) -> u64 {
    [db.to_owned(), wal_path(db)].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

/// Log pages (4 KiB each) past which the writer checkpoints at the end of a
/// commit, as SQLite does by default at 1,000.
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;
/// How often the checkpointer thread copies the log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// Copies committed pages from the write-ahead log back into the database,
/// on its own connection, beside the writer. SQLite by default does this at
/// the end of the commit that takes the log past 1,000 pages, inside that
/// commit: the change waited for a copy of 4 MiB and an fsync of the
/// database, and so did every change batched after it, which put up to
/// 200 ms into the dispatch latency's tail. A passive checkpoint never waits
/// for the writer or for readers; what it cannot copy yet it copies next
/// time. The log only starts over from its beginning once all of it is
/// copied when a write begins, which a writer that never pauses rarely
/// allows, so the writer still checkpoints itself when the log reaches
/// `WRITER_CHECKPOINT_PAGES`: by then nearly all of it is copied already.
fn checkpoint_loop(path: &Path, stop: &std::sync::mpsc::Receiver<()>) {
    let conn =
        match connect(path, OpenFlags::default()).and_then(|c| configure(&c).map(|()| c).map_err(StoreError::from)) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the checkpointer's connection; the writer checkpoints alone");
                return;
            }
        };
    let mut failing = false;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "a background checkpoint failed; retrying");
            }
            Err(_) => {}
        }
    }
}

/// How the changes of a batch are kept apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isolation {
    /// No savepoints. A change that fails before writing anything needs no
    /// undoing (each SQLite statement is atomic on its own); one that fails
    /// after writing cannot be undone alone, so the batch is rolled back and
    /// applied again with `Savepoints`. Savepoints are not free: SQLite keeps
    /// the first image of every page a savepoint touches, and with one per
    /// change that copying cost the write ceiling a quarter of its rate.
    Trusting,
    /// Each change in a savepoint of its own, rolled back alone if it fails.
    Savepoints,
}

/// What applying a batch came to.
#[derive(Default)]
struct Applied {
    /// Some change stands.
    changed: bool,
    /// The transaction is gone (SQLite rolls it back by itself on errors
    /// such as a full disk): nothing in the batch may be reported committed.
    aborted: bool,
    /// The error of the change that aborted it, when one did.
    abort_cause: Option<StoreError>,
    /// A change failed after writing, with no savepoint to undo it alone.
    redo: bool,
    /// The dispatcher planned a claim pass that failed.
    missed: bool,
    /// The dispatcher's claims, handed out once the batch is committed.
    claims: Vec<(AgentName, Vec<Task>)>,
}

/// Applies every change of `batch` in the transaction `began` opened, then
/// the dispatcher's claim pass. Stops early when the batch must be redone.
fn apply_batch(
    conn: &Connection,
    batch: &mut [Job],
    began: bool,
    isolation: Isolation,
    in_batch: Option<&InBatch>,
    policy: Policy,
) -> Applied {
    let mut applied = Applied { aborted: !began, ..Applied::default() };
    for job in batch.iter_mut() {
        if applied.aborted {
            job.apply(None);
            continue;
        }
        match isolation {
            Isolation::Trusting => {
                let before = conn.total_changes();
                let ok = job.apply(Some(conn));
                if conn.is_autocommit() {
                    applied.aborted = true;
                    applied.abort_cause = job.failure();
                } else if !ok && conn.total_changes() != before {
                    applied.redo = true;
                    return applied;
                }
                applied.changed |= ok;
            }
            Isolation::Savepoints => {
                if run(conn, "SAVEPOINT job").is_err() {
                    applied.aborted = true;
                    job.apply(None);
                    continue;
                }
                let ok = job.apply(Some(conn));
                applied.changed |= ok;
                end_change(conn, ok, &mut applied.aborted);
            }
        }
    }
    if let Some(d) = in_batch.filter(|_| applied.changed && !applied.aborted) {
        claim_in_batch(conn, d, policy, isolation, &mut applied);
    }
    applied
}

/// The dispatcher's claim pass, as the last change of a batch: what the
/// batch's own changes made claimable (a task created, a slot freed) goes
/// out with its commit. A failed pass is undone; the dispatch loop tries
/// again.
fn claim_in_batch(conn: &Connection, d: &InBatch, policy: Policy, isolation: Isolation, applied: &mut Applied) {
    let Some(ready) = ops::next_ready(&sql::Connection::Sqlite(conn)).ok().flatten() else { return };
    let Some((agents, now, accept_within)) = d.plan(ready) else { return };
    let savepoints = isolation == Isolation::Savepoints;
    if savepoints && run(conn, "SAVEPOINT job").is_err() {
        applied.aborted = true;
        return;
    }
    let before = conn.total_changes();
    let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ops::claim_for_agents(&sql::Connection::Sqlite(conn), &agents, now, accept_within, policy, savepoints)
    }));
    // A claim that failed alone leaves the others standing, but what it
    // would have taken is missed all the same.
    let mut one_failed = false;
    let pass_failed = !matches!(pass, Ok(Ok(_)));
    // Half-written without a savepoint: the batch is redone, and the pass
    // with it, which says what failed then.
    let half_written = !savepoints && pass_failed && conn.total_changes() != before;
    match pass {
        Ok(Ok(results)) => {
            for (agent, result) in agents.into_iter().zip(results) {
                match result {
                    Ok(tasks) if !tasks.is_empty() => applied.claims.push((agent, tasks)),
                    Ok(_) => {}
                    Err(e) => {
                        one_failed = true;
                        tracing::error!(agent = %agent, error = %e, "a claim failed; the dispatch loop tries again");
                    }
                }
            }
        }
        _ if half_written => {}
        Ok(Err(e)) => tracing::error!(error = %e, "a claim pass failed; the dispatch loop tries again"),
        Err(_) => tracing::error!("a claim pass panicked; it is rolled back"),
    }
    if savepoints {
        end_change(conn, !pass_failed && !applied.claims.is_empty(), &mut applied.aborted);
    } else if conn.is_autocommit() {
        applied.aborted = true;
    } else if half_written {
        applied.claims.clear();
        applied.redo = true;
    }
    // Not missed yet when redone: the redo passes again.
    applied.missed = (pass_failed && !applied.redo) || one_failed;
}

/// Ends the savepoint a change ran in: undone alone unless it `stands`.
/// Sets `aborted` when the transaction itself is gone.
fn end_change(conn: &Connection, stands: bool, aborted: &mut bool) {
    if !stands && run(conn, "ROLLBACK TO job").is_err() {
        *aborted = true;
    }
    if run(conn, "RELEASE job").is_err() || conn.is_autocommit() {
        *aborted = true;
    }
}

/// Runs one statement that returns no rows, compiled once per connection:
/// the writer runs its transaction statements thousands of times a second.
pub(crate) fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Opens the batch's transaction, logging why when it cannot.
fn begin(conn: &Connection) -> rusqlite::Result<()> {
    let began = run(conn, "BEGIN IMMEDIATE");
    if let Err(e) = &began {
        tracing::error!(error = %e, "cannot begin a write transaction");
    }
    began
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::Receiver<Work>,
    max_batch: usize,
    last_event: watch::Sender<i64>,
    stats: &WriterStats,
    hooks: &Hooks,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    // Maintenance that arrived while a batch was being gathered; it runs once
    // that batch is committed.
    let mut after_batch: Option<Maintenance> = None;
    while let Some(first) = rx.blocking_recv() {
        match first {
            Work::Change(job) => batch.push(job),
            Work::Alone(f) => {
                f(&conn);
                continue;
            }
        }
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Work::Change(job)) => batch.push(job),
                Ok(Work::Alone(f)) => {
                    after_batch = Some(f);
                    break;
                }
                Err(_) => break,
            }
        }
        let in_batch = hooks.in_batch();
        let policy = hooks.policy();
        let mut began = begin(&conn);
        let mut applied =
            apply_batch(&conn, &mut batch, began.is_ok(), Isolation::Trusting, in_batch.as_deref(), policy);
        if applied.redo {
            stats.redone.inc();
            tracing::debug!(
                batch = batch.len(),
                "a change failed half-way; the batch is applied again with savepoints"
            );
            let _ = conn.execute_batch("ROLLBACK");
            began = begin(&conn);
            applied = apply_batch(&conn, &mut batch, began.is_ok(), Isolation::Savepoints, in_batch.as_deref(), policy);
        }
        let committing = std::time::Instant::now();
        let commit = match (began, applied.aborted) {
            (Ok(()), false) => run(&conn, "COMMIT").map_err(StoreError::from),
            (Ok(()), true) => Err(match applied.abort_cause.take() {
                Some(e @ StoreError::NoSpace(_)) => e,
                _ => StoreError::Database("the write transaction was aborted".into()),
            }),
            (Err(e), _) => Err(StoreError::from(e)),
        };
        match &commit {
            Ok(()) => {
                stats.commit.observe(committing.elapsed().as_secs_f64());
                stats.batch.observe(batch.len() as f64);
                if stats.failing.lock().expect("stats lock poisoned").is_some() {
                    *stats.failing.lock().expect("stats lock poisoned") = None;
                    tracing::info!("the database commits again");
                }
            }
            Err(e) => {
                stats.failed.inc();
                *stats.failing.lock().expect("stats lock poisoned") = Some(e.to_string());
            }
        }
        // A change the disk had no room for counts too, though the batch's
        // commit (of the others) went through: readiness probes again.
        if let Some(full) = batch.iter().filter_map(|j| j.failure()).find(|e| matches!(e, StoreError::NoSpace(_))) {
            *stats.failing.lock().expect("stats lock poisoned") = Some(full.to_string());
        }
        if let Err(e) = &commit {
            tracing::error!(error = %e, batch = batch.len(), "write batch failed; every change in it is rolled back");
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Watchers first, so a caller that reads `subscribe()` right after
        // its own write already sees that write's events.
        if commit.is_ok()
            && let Ok(seq) = conn
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")
                .and_then(|mut last| last.query_row([], |r| r.get::<_, i64>(0)))
        {
            last_event.send_if_modified(|cur| {
                let changed = *cur != seq;
                *cur = seq;
                changed
            });
        }
        // The agents first: their work is what the dispatch latency measures.
        if let Some(d) = &in_batch {
            let missed = applied.missed || (commit.is_err() && !applied.claims.is_empty());
            if commit.is_ok() && !applied.claims.is_empty() {
                d.claims.handouts.push(crate::Handout::Claimed(applied.claims));
            }
            if missed {
                d.claims.handouts.push(crate::Handout::Missed);
            }
        }
        for job in batch.drain(..) {
            job.answer(commit.clone());
        }
        if let Some(f) = after_batch.take() {
            f(&conn);
        }
    }
    // All senders dropped: the store is closed. Checkpoint so the WAL does not
    // have to be replayed at the next open.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}

#[async_trait]
impl crate::Engine for SqliteStore {
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&sql::Connection<'_>) -> Result<R> + Send + 'static,
    {
        self.write_change(f).await
    }

    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&sql::Connection<'_>) -> Result<R> + Send + 'static,
    {
        self.read_raw(move |c| f(&sql::Connection::Sqlite(c))).await
    }

    fn limits(&self) -> Limits {
        self.shared.limits
    }

    fn hooks(&self) -> &Hooks {
        &self.shared.hooks
    }

    fn last_event(&self) -> watch::Receiver<i64> {
        self.shared.last_event.clone()
    }

    async fn shut_down(&self) {
        let checkpointer = self.shared.checkpointer.lock().expect("checkpointer lock poisoned").take();
        if let Some((stop, thread)) = checkpointer {
            drop(stop);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let sender = self.shared.jobs.lock().expect("jobs lock poisoned").take();
        drop(sender);
        let writer = self.shared.writer.lock().expect("writer lock poisoned").take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }

    fn upkeep(&self) -> &dyn crate::Maintenance {
        self
    }
}

#[async_trait]
impl crate::Maintenance for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn backup(&self, dest: &Path) -> Result<crate::BackupInfo> {
        let dest = dest.to_owned();
        self.read_raw(move |c| backup::backup(c, &dest)).await
    }

    async fn compact(&self, retention: crate::Retention, rewrite: bool, now: Millis) -> Result<crate::CompactReport> {
        let mut report = crate::CompactReport { bytes_before: file_bytes(&self.shared.path), ..Default::default() };
        loop {
            let pruned = self.write_change(move |c| ops::prune_batch(c, &retention, now, PRUNE_BATCH)).await?;
            report.tasks_pruned += pruned.tasks;
            report.outputs_pruned += pruned.outputs;
            report.output_bytes_pruned += pruned.output_bytes;
            report.events_pruned += pruned.events;
            if !pruned.more {
                break;
            }
        }
        if self.alone(upkeep::gives_space_back).await? {
            // A few megabytes at a time, so waiting changes commit in between.
            while self.alone(|c| upkeep::incremental_vacuum(c, VACUUM_PAGES)).await? > 0 {}
        } else if rewrite {
            let waited = self.alone(upkeep::rewrite_for_incremental_vacuum).await?;
            // Every heartbeat waited too: leases must not expire for it.
            self.write_change(move |c| ops::extend_leases(c, waited)).await?;
            report.rewritten = true;
        } else {
            report.needs_rewrite = true;
        }
        self.alone(upkeep::checkpoint).await?;
        report.bytes_after = file_bytes(&self.shared.path);
        let done = report.clone();
        self.write_change(move |c| ops::record_compaction(c, &done, now)).await?;
        Ok(report)
    }

    async fn db_stats(&self) -> Result<crate::DbStats> {
        let path = self.shared.path.clone();
        let mut stats = self
            .read_raw(|c| {
                let mut stats = ops::db_stats(&sql::Connection::Sqlite(c))?;
                upkeep::pages(c, &mut stats)?;
                Ok(stats)
            })
            .await?;
        stats.bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        stats.wal_bytes = std::fs::metadata(wal_path(&path)).map_or(0, |m| m.len());
        stats.path = Some(path);
        Ok(stats)
    }

    fn write_stats(&self) -> crate::WriteStats {
        let s = &self.shared.stats;
        crate::WriteStats {
            commit_seconds: s.commit.snapshot(),
            batch_size: s.batch.snapshot(),
            failed_batches: s.failed.get(),
            redone_batches: s.redone.get(),
            failing: s.failing.lock().expect("stats lock poisoned").clone(),
        }
    }
}
