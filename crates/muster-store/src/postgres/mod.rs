//! The PostgreSQL backend: the same operations as SQLite's (`ops`), for
//! any number of hubs on one database.
//!
//! A few threads each own one session (`sql::pg::PgConn`) and run the
//! store's changes and reads handed to them. Every change is one short
//! `SERIALIZABLE` transaction: the rules in `ops` read and then write, as
//! they do under SQLite's single writer, and serializable isolation makes
//! that as safe with several hubs writing at once. A transaction that
//! collides with another (SQLSTATE 40001 or 40P01) is rolled back and run
//! again from the start, a few times, with a jittered pause; nothing is
//! answered before `COMMIT` returns, with `synchronous_commit = on`.
//! Reads run in `REPEATABLE READ READ ONLY` transactions, which see one
//! snapshot and never block or abort a writer.

pub mod schema;
mod scratch;

pub use scratch::{DEFAULT_ADMIN_URL, ScratchDb};

use crate::Engine as _;
use crate::engine::{Hooks, InBatch};
use crate::sql::{Connection, pg::PgConn};
use crate::{Limits, Result, StoreError, ops};
use async_trait::async_trait;
use muster_core::Millis;
use muster_core::breaker::Policy;
use postgres::fallible_iterator::FallibleIterator;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Sessions the store keeps open for reads. One more writes the changes,
/// in batches; one listens for other hubs' commits, and one beats
/// (`Engine::write_apart`).
pub const SESSIONS: usize = 5;
/// Changes committed together at most, as the SQLite writer does.
const BATCH: usize = 256;
/// The channel every commit is announced on, so that every hub's watchers
/// (dispatch, live events) hear of other hubs' changes at once.
const CHANNEL: &str = "muster_changes";
/// How often the listener reads the latest event anyway: the fallback when
/// notifications do not arrive (a pooler in transaction mode drops LISTEN).
const POLL: Duration = Duration::from_secs(1);
/// How long a change that keeps colliding with other hubs' is run again
/// before its caller is told (`StoreError::Contended`).
const RETRY_FOR: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce(&PgConn) + Send>;

type Apply = Box<dyn FnMut(&Connection<'_>) -> Result<()> + Send>;

/// One change for the writer: `apply` makes it (again, when its batch is
/// redone) and keeps its result; `answer` hands the result or the error
/// over once the batch has committed or failed.
struct Change {
    apply: Apply,
    answer: Box<dyn FnOnce(Result<()>) + Send>,
}

#[derive(Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// The URL with any password removed, for messages.
    shown: String,
    limits: Limits,
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    /// The beat's own session: its jobs never wait behind the others.
    apart: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    /// The writer's queue.
    changes: Mutex<Option<std::sync::mpsc::Sender<Change>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    last_event: watch::Sender<i64>,
    hooks: Arc<Hooks>,
    stats: Stats,
    /// Held (shared) by a change between its commit and its answer, and
    /// (exclusive) by a claim pass between its commit and its handout, so
    /// an agent hears of a claim before any change committed after it.
    handout_gate: RwLock<()>,
    /// Set when the store closes: the listener stops.
    closed: std::sync::atomic::AtomicBool,
    listener: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// One transaction that writes at a time per hub (the writer's batches,
    /// claim passes, compaction), as with SQLite's writer: the changes of
    /// one hub never collide with each other, only with other hubs'.
    writing: Mutex<()>,
    /// One claim pass at a time per hub; `again` asks the running one to
    /// pass once more, for changes that committed while it ran.
    claiming: Mutex<()>,
    again: std::sync::atomic::AtomicBool,
}

struct Stats {
    commit: muster_metrics::Histogram,
    batch: muster_metrics::Histogram,
    failed: muster_metrics::Counter,
    retried: muster_metrics::Counter,
    failing: Mutex<Option<String>>,
}

/// `postgres://user:secret@host/db?password=secret` without the secrets.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut shown = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match base[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &base[..scheme + 3], &base[at..]),
            None => base.to_owned(),
        },
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

/// Opens one session and makes it keep the store's promises: a commit is
/// on disk before it returns, and a transaction left open by accident does
/// not hold back vacuum for long.
fn connect(url: &str) -> Result<PgConn> {
    let unreachable =
        |e: &dyn std::fmt::Display| StoreError::Database(format!("cannot connect to {}: {e}", redact(url)));
    let mut config: postgres::Config = url.parse().map_err(|e| unreachable(&e))?;
    // A server or network that goes silent (a partition, a failover that
    // moves the address) fails the session within seconds instead of
    // hanging the hub's writes until the kernel gives up.
    config
        .connect_timeout(Duration::from_secs(10))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30));
    let mut client = config.connect(postgres::NoTls).map_err(|e| unreachable(&e))?;
    client.batch_execute(
        "SET synchronous_commit = on; SET idle_in_transaction_session_timeout = '10s'; \
         SET statement_timeout = '60s'; SET application_name = 'muster'",
    )?;
    Ok(PgConn::new(client))
}

/// One session's thread: connects (the first also brings the schema up
/// to date and reads the latest event), says so on `ready`, then runs jobs
/// until the store closes.
fn session(
    k: usize,
    url: &str,
    jobs: &Mutex<std::sync::mpsc::Receiver<Job>>,
    ready: &std::sync::mpsc::Sender<Result<Option<i64>>>,
) {
    let opened = connect(url).and_then(|conn| {
        if k > 0 {
            return Ok((conn, None));
        }
        schema::migrate(&conn)?;
        let last = Connection::Pg(&conn).query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
        Ok((conn, Some(last)))
    });
    let mut conn = match opened {
        Ok((conn, last)) => {
            let _ = ready.send(Ok(last));
            conn
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    loop {
        let job = match jobs.lock().expect("job queue lock poisoned").recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job(&conn);
        // The server restarted or the network dropped the session: the
        // next job gets a new one if it can.
        if conn.is_closed() {
            match connect(url) {
                Ok(fresh) => conn = fresh,
                Err(e) => tracing::warn!(error = %e, "a database session is down; retrying with the next change"),
            }
        }
    }
}

impl PgStore {
    /// Connects to the database at `url`, creates or updates Muster's
    /// tables, and starts the sessions. Call it off the async runtime's
    /// threads (the driver blocks); the hub calls it in `spawn_blocking`.
    pub fn open(url: &str, limits: Limits) -> Result<PgStore> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (apart_tx, apart_rx) = std::sync::mpsc::channel::<Job>();
        let (changes_tx, changes_rx) = std::sync::mpsc::channel::<Change>();
        let apart_rx = Arc::new(Mutex::new(apart_rx));
        let (ready, sessions) = std::sync::mpsc::channel::<Result<Option<i64>>>();
        let mut threads = Vec::new();
        // The first runs the migrations before the others connect for real work.
        for k in 0..=SESSIONS {
            let (url, ready) = (url.to_owned(), ready.clone());
            let (rx, name) = match k {
                SESSIONS => (apart_rx.clone(), "muster-pg-beat".to_owned()),
                _ => (rx.clone(), format!("muster-pg-{k}")),
            };
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || session(k, &url, &rx, &ready))
                .map_err(|e| StoreError::Database(format!("cannot start a database thread: {e}")))?;
            threads.push(thread);
        }
        drop(ready);
        let mut last = 0;
        for _ in 0..=SESSIONS {
            match sessions.recv() {
                Ok(Ok(seq)) => last = last.max(seq.unwrap_or(0)),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(StoreError::Database("a database thread stopped while starting".into())),
            }
        }
        let store = PgStore {
            shared: Arc::new(Shared {
                shown: redact(url),
                limits,
                jobs: Mutex::new(Some(tx)),
                apart: Mutex::new(Some(apart_tx)),
                changes: Mutex::new(Some(changes_tx)),
                threads: Mutex::new(threads),
                last_event: watch::channel(last).0,
                hooks: Arc::new(Hooks::default()),
                stats: Stats {
                    commit: muster_metrics::Histogram::new(muster_metrics::LATENCY_BUCKETS),
                    batch: muster_metrics::Histogram::new(muster_metrics::SIZE_BUCKETS),
                    failed: muster_metrics::Counter::default(),
                    retried: muster_metrics::Counter::default(),
                    failing: Mutex::new(None),
                },
                handout_gate: RwLock::new(()),
                closed: std::sync::atomic::AtomicBool::new(false),
                listener: Mutex::new(None),
                writing: Mutex::new(()),
                claiming: Mutex::new(()),
                again: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        // The writer's session first: a store that cannot write leaves no thread behind.
        let first = match connect(url) {
            Ok(conn) => conn,
            Err(e) => {
                store.shared.closed.store(true, std::sync::atomic::Ordering::SeqCst);
                drop(store.shared.jobs.lock().expect("jobs lock poisoned").take());
                drop(store.shared.apart.lock().expect("jobs lock poisoned").take());
                return Err(e);
            }
        };
        let (writer_url, shared) = (url.to_owned(), store.shared.clone());
        let writer = std::thread::Builder::new()
            .name("muster-pg-write".into())
            .spawn(move || write_changes(first, &writer_url, &changes_rx, &shared))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        store.shared.threads.lock().expect("threads lock poisoned").push(writer);
        let (url, shared) = (url.to_owned(), store.shared.clone());
        let listener = std::thread::Builder::new()
            .name("muster-pg-listen".into())
            .spawn(move || listen(&url, &shared))
            .map_err(|e| StoreError::Database(format!("cannot start the listener thread: {e}")))?;
        *store.shared.listener.lock().expect("listener lock poisoned") = Some(listener);
        Ok(store)
    }

    /// The database's URL, without its password.
    pub fn url(&self) -> &str {
        &self.shared.shown
    }

    fn submit(&self, lane: Lane, job: Job) -> Result<()> {
        let jobs = match lane {
            Lane::Shared => self.shared.jobs.lock(),
            Lane::Apart => self.shared.apart.lock(),
        };
        let jobs = jobs.expect("jobs lock poisoned");
        jobs.as_ref().ok_or(StoreError::Closed)?.send(job).map_err(|_| StoreError::Closed)
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&PgConn, &Shared) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.run_on(Lane::Shared, f).await
    }

    async fn run_on<R: Send + 'static>(
        &self,
        lane: Lane,
        f: impl FnOnce(&PgConn, &Shared) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        self.submit(
            lane,
            Box::new(move |conn| {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn, &shared)))
                    .unwrap_or_else(|_| Err(StoreError::Database("a database call failed unexpectedly".into())));
                let _ = tx.send(result);
            }),
        )?;
        rx.await.map_err(|_| StoreError::Database("the store stopped before answering".into()))?
    }
}

/// Tells the listening hubs of a change, and only of a change: a
/// transaction that wrote nothing has no transaction id, and notifying for
/// it would wake every hub into passes that write nothing either, back and
/// forth for ever.
const NOTIFY: &str = "SELECT pg_notify('muster_changes', '') WHERE pg_current_xact_id_if_assigned() IS NOT NULL";

/// Which sessions a job runs on.
#[derive(Clone, Copy, PartialEq)]
enum Lane {
    /// The shared sessions (reads, compaction) and the writer.
    Shared,
    /// The beat's own session, beside the changes.
    Apart,
}

/// Runs `f` in one serializable transaction, again from the start while it
/// collides with concurrent ones; `Ok` only once committed.
fn transact<R>(conn: &PgConn, shared: &Shared, f: impl FnMut(&Connection<'_>) -> Result<R>) -> Result<R> {
    let _one = shared.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    transact_beside(conn, shared, Lane::Shared, f)
}

/// `transact` without waiting for this hub's other changes: for the beat's
/// lane, whose changes touch rows the others do not (a collision is retried
/// all the same).
/// Only the writer's commits count in the commit statistics and the
/// failing state `/readyz` reads (`lane`).
fn transact_beside<R>(
    conn: &PgConn,
    shared: &Shared,
    lane: Lane,
    mut f: impl FnMut(&Connection<'_>) -> Result<R>,
) -> Result<R> {
    let c = Connection::Pg(conn);
    let mut tries = 0u32;
    let first = Instant::now();
    loop {
        tries += 1;
        let began = c.execute_batch("BEGIN ISOLATION LEVEL SERIALIZABLE");
        let applied = began.and_then(|()| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&c))).unwrap_or_else(|_| {
                Err(StoreError::Database("the change failed unexpectedly and was rolled back".into()))
            })
        });
        let committing = Instant::now();
        let outcome = match applied {
            Ok(r) => c.execute_batch("COMMIT").map(|()| r),
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                Err(e)
            }
        };
        match outcome {
            Err(StoreError::Contended(_)) if first.elapsed() < RETRY_FOR => {
                let _ = c.execute_batch("ROLLBACK");
                shared.stats.retried.inc();
                // Jittered, growing: colliding changes do not collide again in step.
                let jitter = u64::from(getrandom::u32().unwrap_or(0) % 1000);
                std::thread::sleep(Duration::from_micros((200 << tries.min(6)) + jitter * u64::from(tries.min(20))));
            }
            Err(StoreError::Database(why)) if conn.is_closed() && lane == Lane::Shared => {
                shared.stats.failed.inc();
                *shared.stats.failing.lock().expect("stats lock poisoned") = Some(why.clone());
                return Err(StoreError::Database(why));
            }
            Ok(r) if lane == Lane::Apart => return Ok(r),
            Ok(r) => {
                shared.stats.commit.observe(committing.elapsed().as_secs_f64());
                shared.stats.batch.observe(1.0);
                if shared.stats.failing.lock().expect("stats lock poisoned").take().is_some() {
                    tracing::info!("the database commits again");
                }
                return Ok(r);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The writer: takes the changes queued, up to `BATCH` at a time, and
/// commits them in one transaction, each under a savepoint so that one
/// that fails leaves the others whole. A batch that collides with another
/// hub's changes is rolled back and its changes run again one by one. Each
/// is answered only after its commit.
fn write_changes(first: PgConn, url: &str, queue: &std::sync::mpsc::Receiver<Change>, shared: &Shared) {
    let mut conn = first;
    while let Ok(one) = queue.recv() {
        let mut batch = vec![one];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let outcomes = commit_batch(&conn, shared, &mut batch);
        let committed = outcomes.iter().any(Result::is_ok);
        if committed {
            // A failure here must not stop the writer: the next batch comes all the same.
            let after = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                published(&conn, shared);
                if let Some(d) = shared.hooks.in_batch() {
                    claim_after(&conn, shared, &d, shared.hooks.policy());
                }
            }));
            if after.is_err() {
                tracing::error!("the claim pass after a commit failed unexpectedly; the dispatch loop claims instead");
            }
        }
        // A claim committed before these changes must be handed out first.
        drop(shared.handout_gate.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (change, outcome) in batch.into_iter().zip(outcomes) {
            (change.answer)(outcome);
        }
        if conn.is_closed() {
            match connect(url) {
                Ok(fresh) => conn = fresh,
                Err(e) => {
                    tracing::warn!(error = %e, "the writer's database session is down; retrying with the next change")
                }
            }
        }
    }
}

/// Commits `batch` (see `write_changes`); the outcome of each change.
fn commit_batch(conn: &PgConn, shared: &Shared, batch: &mut [Change]) -> Vec<Result<()>> {
    let alone = |conn: &PgConn, change: &mut Change| {
        transact(conn, shared, |c| {
            (change.apply)(c)?;
            // Delivered to every listening hub when the change commits.
            c.execute_batch(NOTIFY)
        })
    };
    if batch.len() == 1 {
        return vec![alone(conn, &mut batch[0])];
    }
    let together = {
        let _one = shared.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = Connection::Pg(conn);
        let committing = Instant::now();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut run = || -> Result<()> {
            c.execute_batch("BEGIN ISOLATION LEVEL SERIALIZABLE")?;
            for change in batch.iter_mut() {
                c.execute_batch("SAVEPOINT change")?;
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (change.apply)(&c)))
                    .unwrap_or_else(|_| Err(StoreError::Database("the change failed unexpectedly".into())));
                match applied {
                    Ok(()) => c.execute_batch("RELEASE SAVEPOINT change")?,
                    // Another hub's change got in the way: the whole batch is redone.
                    Err(e @ StoreError::Contended(_)) => return Err(e),
                    Err(e) => {
                        c.execute_batch("ROLLBACK TO SAVEPOINT change; RELEASE SAVEPOINT change")?;
                        outcomes.push(Err(e));
                        continue;
                    }
                }
                outcomes.push(Ok(()));
            }
            c.execute_batch(NOTIFY)?;
            c.execute_batch("COMMIT")
        };
        match run() {
            Ok(()) => {
                shared.stats.commit.observe(committing.elapsed().as_secs_f64());
                shared.stats.batch.observe(batch.len() as f64);
                Some(outcomes)
            }
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                if !matches!(e, StoreError::Contended(_)) && conn.is_closed() {
                    // Nothing committed and the session is gone: every change is told so.
                    shared.stats.failed.inc();
                    *shared.stats.failing.lock().expect("stats lock poisoned") = Some(e.to_string());
                    return batch.iter().map(|_| Err(StoreError::Database(e.to_string()))).collect();
                }
                None
            }
        }
    };
    match together {
        Some(outcomes) => outcomes,
        None => {
            shared.stats.retried.inc();
            batch.iter_mut().map(|change| alone(conn, change)).collect()
        }
    }
}

/// Hears other hubs' commits (and this one's) on `CHANNEL`, and reads the
/// latest event at least every `POLL` in case notifications do not come:
/// `subscribe()` moves on for changes any hub made. Reconnects when its
/// session drops.
fn listen(url: &str, shared: &Shared) {
    let closed = || shared.closed.load(std::sync::atomic::Ordering::SeqCst);
    while !closed() {
        let conn = match connect(url) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "the change listener cannot connect; trying again");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if let Err(e) = conn.client().batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(error = %e, "LISTEN failed; polling for changes instead");
        }
        let mut heard = false;
        while !closed() && !conn.is_closed() {
            if heard {
                // Watchers wake even when the latest event did not move: a
                // commit on another hub may have taken a lower number.
                if let Some(seq) = latest_event(&conn) {
                    shared.last_event.send_modify(|cur| *cur = (*cur).max(seq));
                }
            } else {
                published(&conn, shared);
            }
            let mut client = conn.client();
            let mut notes = client.notifications();
            // One wake-up for however many commits arrived together.
            heard = matches!(notes.timeout_iter(POLL).next(), Ok(Some(_)));
            if heard {
                while let Ok(Some(_)) = notes.iter().next() {}
            }
        }
    }
}

fn latest_event(conn: &PgConn) -> Option<i64> {
    Connection::Pg(conn).query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get::<_, i64>(0)).ok()
}

/// Tells watchers of the latest event after a commit.
fn published(conn: &PgConn, shared: &Shared) {
    if let Some(seq) = latest_event(conn) {
        shared.last_event.send_if_modified(|cur| {
            let newer = seq > *cur;
            if newer {
                *cur = seq;
            }
            newer
        });
    }
}

/// The hub's claim pass after a change committed: what the change made
/// claimable goes out now rather than at the dispatch loop's next pass.
fn claim_after(conn: &PgConn, shared: &Shared, d: &InBatch, policy: Policy) {
    let Ok(_one) = shared.claiming.try_lock() else {
        shared.again.store(true, std::sync::atomic::Ordering::SeqCst);
        return;
    };
    // Once more for changes that committed during the pass, and no more:
    // the caller waits for its answer, so what comes after is the dispatch
    // loop's.
    for _ in 0..2 {
        shared.again.store(false, std::sync::atomic::Ordering::SeqCst);
        claim_pass(conn, shared, d, policy);
        if !shared.again.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
    }
    d.claims.handouts.push(crate::Handout::Missed);
}

fn claim_pass(conn: &PgConn, shared: &Shared, d: &InBatch, policy: Policy) {
    let c = Connection::Pg(conn);
    let Some(ready) = ops::next_ready(&c).ok().flatten() else { return };
    let Some((agents, now, accept_within)) = d.plan(ready) else { return };
    // Held from before the commit until the handout is queued.
    let _exclusive = shared.handout_gate.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let pass = transact(conn, shared, |c| ops::claim_for_agents(c, &agents, now, accept_within, policy, true));
    let mut claims = Vec::new();
    let mut missed = false;
    match pass {
        Ok(results) => {
            for (agent, result) in agents.into_iter().zip(results) {
                match result {
                    Ok(tasks) if !tasks.is_empty() => claims.push((agent, tasks)),
                    Ok(_) => {}
                    Err(e) => {
                        missed = true;
                        tracing::error!(agent = %agent, error = %e, "a claim failed; the dispatch loop tries again");
                    }
                }
            }
        }
        Err(e) => {
            missed = true;
            tracing::error!(error = %e, "a claim pass failed; the dispatch loop tries again");
        }
    }
    if !claims.is_empty() {
        d.claims.handouts.push(crate::Handout::Claimed(claims));
    }
    if missed {
        d.claims.handouts.push(crate::Handout::Missed);
    }
}

#[async_trait]
impl crate::Engine for PgStore {
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&Connection<'_>) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let kept = Arc::new(Mutex::new(None::<R>));
        let into = kept.clone();
        let mut f = f;
        let change = Change {
            apply: Box::new(move |c| {
                let r = f(c)?;
                *into.lock().expect("result lock poisoned") = Some(r);
                Ok(())
            }),
            answer: Box::new(move |outcome| {
                let r = outcome.and_then(|()| {
                    kept.lock()
                        .expect("result lock poisoned")
                        .take()
                        .ok_or_else(|| StoreError::Database("a change committed without its result".into()))
                });
                let _ = tx.send(r);
            }),
        };
        {
            let changes = self.shared.changes.lock().expect("changes lock poisoned");
            changes.as_ref().ok_or(StoreError::Closed)?.send(change).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Database("the store stopped before answering".into()))?
    }

    async fn write_apart<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&Connection<'_>) -> Result<R> + Send + 'static,
    {
        let mut f = f;
        self.run_on(Lane::Apart, move |conn, shared| {
            transact_beside(conn, shared, Lane::Apart, |c| {
                let r = f(c)?;
                // A duty taken or a hub back is news to the others' live views.
                c.execute_batch(NOTIFY)?;
                Ok(r)
            })
        })
        .await
    }

    async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection<'_>) -> Result<R> + Send + 'static,
    {
        self.run(move |conn, _| {
            let c = Connection::Pg(conn);
            c.execute_batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&c)))
                .unwrap_or_else(|_| Err(StoreError::Database("a read failed unexpectedly".into())));
            // Ended whatever happened, so the session's next job starts clean.
            let _ = c.execute_batch("ROLLBACK");
            result
        })
        .await
    }

    fn limits(&self) -> Limits {
        self.shared.limits
    }

    fn hooks(&self) -> &Hooks {
        &self.shared.hooks
    }

    fn last_event(&self) -> watch::Receiver<i64> {
        self.shared.last_event.subscribe()
    }

    async fn shut_down(&self) {
        self.shared.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let listener = self.shared.listener.lock().expect("listener lock poisoned").take();
        drop(self.shared.jobs.lock().expect("jobs lock poisoned").take());
        drop(self.shared.apart.lock().expect("jobs lock poisoned").take());
        drop(self.shared.changes.lock().expect("changes lock poisoned").take());
        let threads = std::mem::take(&mut *self.shared.threads.lock().expect("threads lock poisoned"));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads.into_iter().chain(listener) {
                let _ = t.join();
            }
        })
        .await;
    }

    fn upkeep(&self) -> &dyn crate::Maintenance {
        self
    }
}

/// Finished tasks, outputs or events removed per change while compacting.
const PRUNE_BATCH: usize = 500;

#[async_trait]
impl crate::Maintenance for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn backup(&self, _dest: &std::path::Path) -> Result<crate::BackupInfo> {
        Err(StoreError::Conflict(format!(
            "the store is PostgreSQL ({}): back it up with PostgreSQL's tools, pg_dump for a logical copy or \
             pg_basebackup with WAL archiving for point-in-time recovery; `muster backup` copies SQLite databases",
            self.shared.shown
        )))
    }

    async fn compact(&self, retention: crate::Retention, _rewrite: bool, now: Millis) -> Result<crate::CompactReport> {
        let size = |c: &Connection<'_>| c.query_row("SELECT pg_database_size(current_database())", [], |r| r.get(0));
        let mut report =
            crate::CompactReport { bytes_before: self.read(move |c| size(c)).await?, ..Default::default() };
        loop {
            let pruned = crate::Engine::write(self, move |c| ops::prune_batch(c, &retention, now, PRUNE_BATCH)).await?;
            report.tasks_pruned += pruned.tasks;
            report.outputs_pruned += pruned.outputs;
            report.output_bytes_pruned += pruned.output_bytes;
            report.events_pruned += pruned.events;
            if !pruned.more {
                break;
            }
        }
        // Autovacuum reclaims the pruned rows' space for new rows; the
        // database's files do not shrink without VACUUM FULL, which locks.
        report.bytes_after = self.read(move |c| size(c)).await?;
        let done = report.clone();
        crate::Engine::write(self, move |c| ops::record_compaction(c, &done, now)).await?;
        Ok(report)
    }

    async fn db_stats(&self) -> Result<crate::DbStats> {
        self.read(|c| {
            let mut stats = ops::db_stats(c)?;
            let (bytes, block): (u64, u64) = c.query_row(
                "SELECT pg_database_size(current_database()), current_setting('block_size')::bigint",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            // Space freed by pruning is reused by new rows, not given back:
            // the database has no free list to report.
            (stats.bytes, stats.page_size, stats.pages, stats.auto_vacuum) =
                (bytes, block, bytes / block.max(1), "autovacuum");
            Ok(stats)
        })
        .await
    }

    fn write_stats(&self) -> crate::WriteStats {
        let s = &self.shared.stats;
        crate::WriteStats {
            commit_seconds: s.commit.snapshot(),
            batch_size: s.batch.snapshot(),
            failed_batches: s.failed.get(),
            redone_batches: s.retried.get(),
            failing: s.failing.lock().expect("stats lock poisoned").clone(),
        }
    }
}
