//! The hub's background workers: dispatch, alerts, backups, compaction and
//! the metrics window. Each is a [`Worker`]: a name, a wait for its next
//! pass and the pass itself. [`spawn`] runs one, keeping what it did where
//! `muster status` and `GET /api/v1/admin/workers` read it (its state, its
//! passes, its last error), and [`Workers::stop`] waits for them at shutdown
//! no longer than a deadline.

use crate::Hub;
use futures_util::FutureExt;
use muster_core::Millis;
use muster_proto::api::WorkerView;
use muster_proto::timestamp;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A background loop of the hub.
pub(crate) trait Worker: Send + 'static {
    /// A short name: `dispatch`, `backups`.
    fn name(&self) -> &'static str;
    /// What it does, in a few words.
    fn purpose(&self) -> &'static str;
    /// Waits until the next pass is due: a tick, a wake-up, a setting that
    /// changed. A worker that is off waits for ever; shutdown ends the wait.
    fn next(&mut self, hub: &Hub) -> impl Future<Output = ()> + Send;
    /// One pass. `Ok(true)` asks for another at once (there is more to do).
    fn step(&mut self, hub: &Hub) -> impl Future<Output = Result<bool, String>> + Send;
}

/// Where a worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Working,
    Stopped,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Working => "working",
            Phase::Stopped => "stopped",
        }
    }
}

/// What a worker did, as it goes.
#[derive(Debug)]
struct Record {
    name: &'static str,
    purpose: &'static str,
    phase: Phase,
    passes: u64,
    failures: u64,
    last_pass_at: Option<Millis>,
    /// The last failure, kept until a pass succeeds.
    last_error: Option<(Millis, String)>,
    /// Passes that failed in a row, and when the first of them did.
    failing: Option<(Millis, u64)>,
}

type Shared = Arc<Mutex<Record>>;

/// Every worker the hub started.
#[derive(Default)]
pub(crate) struct Workers {
    running: Mutex<Vec<(Shared, Option<JoinHandle<()>>)>>,
    /// Passes recorded by all workers together, for whoever waits on one.
    recorded: tokio::sync::watch::Sender<u64>,
}

impl Workers {
    /// Counts every pass once its record is kept.
    #[cfg(test)]
    fn recorded(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recorded.subscribe()
    }

    /// Each worker as the API shows it, in the order they started.
    pub(crate) fn views(&self) -> Vec<WorkerView> {
        let running = self.running.lock().expect("workers lock poisoned");
        running
            .iter()
            .map(|(record, _)| {
                let r = record.lock().expect("worker lock poisoned");
                WorkerView {
                    name: r.name.to_owned(),
                    purpose: r.purpose.to_owned(),
                    state: r.phase.as_str().to_owned(),
                    passes: r.passes,
                    failures: r.failures,
                    last_pass_at: r.last_pass_at.map(timestamp),
                    last_error: r.last_error.as_ref().map(|(_, e)| e.clone()),
                    last_error_at: r.last_error.as_ref().map(|(at, _)| timestamp(*at)),
                    failing_since: r.failing.map(|(since, _)| timestamp(since)),
                    failing_passes: r.failing.map_or(0, |(_, n)| n),
                }
            })
            .collect()
    }

    /// Waits for every worker to stop, at most `deadline` in all; one still
    /// running then is aborted and named in the log.
    pub(crate) async fn stop(&self, deadline: Duration) {
        let handles: Vec<(Shared, JoinHandle<()>)> = {
            let mut running = self.running.lock().expect("workers lock poisoned");
            running.iter_mut().filter_map(|(r, h)| h.take().map(|h| (r.clone(), h))).collect()
        };
        let until = tokio::time::Instant::now() + deadline;
        for (record, mut handle) in handles {
            if tokio::time::timeout_at(until, &mut handle).await.is_err() {
                handle.abort();
                let mut r = record.lock().expect("worker lock poisoned");
                r.phase = Phase::Stopped;
                tracing::warn!(
                    worker = r.name,
                    deadline_ms = deadline.as_millis() as u64,
                    "worker aborted at shutdown"
                );
            }
        }
    }
}

/// What a panic said, when it said it in words.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("?")
}

/// Runs `worker` until the hub stops.
pub(crate) fn spawn<W: Worker>(hub: &Hub, mut worker: W) {
    let record: Shared = Arc::new(Mutex::new(Record {
        name: worker.name(),
        purpose: worker.purpose(),
        phase: Phase::Waiting,
        passes: 0,
        failures: 0,
        last_pass_at: None,
        last_error: None,
        failing: None,
    }));
    let workers = hub.clone();
    let hub = hub.clone();
    let mine = record.clone();
    let handle = tokio::spawn(async move {
        let mut stopping = hub.shared.stopping.subscribe();
        let mut again = false;
        loop {
            if !again {
                tokio::select! {
                    biased;
                    _ = async { drop(stopping.wait_for(|s| *s).await) } => break,
                    _ = worker.next(&hub) => {}
                }
            }
            if *stopping.borrow() {
                break;
            }
            mine.lock().expect("worker lock poisoned").phase = Phase::Working;
            // A pass that panics is a failed pass, not a worker gone quiet.
            let result = std::panic::AssertUnwindSafe(worker.step(&hub))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(format!("the pass panicked: {}", panic_message(&*panic))));
            let now = hub.now();
            let mut r = mine.lock().expect("worker lock poisoned");
            r.phase = Phase::Waiting;
            r.passes += 1;
            r.last_pass_at = Some(now);
            again = match result {
                Ok(more) => {
                    r.last_error = None;
                    r.failing = None;
                    more
                }
                Err(e) => {
                    r.failures += 1;
                    r.failing = Some(r.failing.map_or((now, 1), |(since, n)| (since, n + 1)));
                    // Said once, not once a pass while it keeps failing.
                    if r.last_error.as_ref().is_none_or(|(_, last)| *last != e) {
                        tracing::error!(worker = r.name, error = %e, "worker pass failed; it will try again");
                    }
                    r.last_error = Some((now, e));
                    false
                }
            };
            drop(r);
            hub.shared.workers.recorded.send_modify(|n| *n += 1);
        }
        let mut r = mine.lock().expect("worker lock poisoned");
        r.phase = Phase::Stopped;
        tracing::info!(worker = r.name, "worker stopped");
    });
    workers.shared.workers.running.lock().expect("workers lock poisoned").push((record, Some(handle)));
}

/// A job run every `interval(settings)`, counting from `age` (how long ago
/// it last ran, if known) so a restart does not reset the schedule. With no
/// record of a run, the first comes soon after start rather than a whole
/// interval later: a hub restarted daily would otherwise never run a daily
/// job. A change of the interval applies at once; zero turns the job off.
/// A failed run is tried again after a minute, then after twice as long
/// each time it fails again, never later than the interval itself.
pub(crate) struct Scheduled {
    pub name: &'static str,
    pub purpose: &'static str,
    pub interval: fn(&crate::Runtime) -> Duration,
    pub age: fn(Hub) -> futures_util::future::BoxFuture<'static, Option<Duration>>,
    pub job: fn(Hub) -> futures_util::future::BoxFuture<'static, Result<(), String>>,
    retry_at: Option<tokio::time::Instant>,
    failures: u32,
}

impl Scheduled {
    pub(crate) fn new(
        name: &'static str,
        purpose: &'static str,
        interval: fn(&crate::Runtime) -> Duration,
        age: fn(Hub) -> futures_util::future::BoxFuture<'static, Option<Duration>>,
        job: fn(Hub) -> futures_util::future::BoxFuture<'static, Result<(), String>>,
    ) -> Scheduled {
        Scheduled { name, purpose, interval, age, job, retry_at: None, failures: 0 }
    }
}

impl Worker for Scheduled {
    fn name(&self) -> &'static str {
        self.name
    }

    fn purpose(&self) -> &'static str {
        self.purpose
    }

    async fn next(&mut self, hub: &Hub) {
        let mut settings = hub.shared.runtime.subscribe();
        let soon = Duration::from_secs(600);
        loop {
            // A hub on its way down starts no backup or compaction; shutdown
            // ends the wait.
            if hub.shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let every = (self.interval)(&settings.borrow_and_update());
            let wait = match (every.is_zero(), self.retry_at) {
                (true, _) => None,
                (false, Some(at)) => Some(at.saturating_duration_since(tokio::time::Instant::now())),
                (false, None) => Some(match (self.age)(hub.clone()).await {
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
                } => return,
                changed = settings.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    async fn step(&mut self, hub: &Hub) -> Result<bool, String> {
        let every = (self.interval)(&hub.runtime());
        match (self.job)(hub.clone()).await {
            Ok(()) => {
                (self.retry_at, self.failures) = (None, 0);
                Ok(false)
            }
            Err(e) => {
                let backoff = Duration::from_secs(60).saturating_mul(1 << self.failures.min(16));
                self.failures = self.failures.saturating_add(1);
                self.retry_at = Some(tokio::time::Instant::now() + backoff.min(every));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HubConfig;
    use muster_store::Store;
    use muster_store::sqlite::SqliteStore;
    use std::collections::VecDeque;
    use tokio::sync::Notify;

    /// A worker the test drives: each poke is one pass, which takes the next
    /// of `results`, or never ends when they have run out.
    struct Driven {
        name: &'static str,
        poke: Arc<Notify>,
        results: VecDeque<Result<bool, String>>,
        /// Told when a pass begins.
        started: Arc<Notify>,
    }

    impl Worker for Driven {
        fn name(&self) -> &'static str {
            self.name
        }

        fn purpose(&self) -> &'static str {
            "a test"
        }

        async fn next(&mut self, _: &Hub) {
            self.poke.notified().await;
        }

        async fn step(&mut self, _: &Hub) -> Result<bool, String> {
            self.started.notify_one();
            match self.results.pop_front() {
                Some(Err(e)) if e == "panic" => panic!("boom"),
                Some(result) => result,
                None => std::future::pending().await,
            }
        }
    }

    fn view(hub: &Hub, name: &str) -> WorkerView {
        hub.shared.workers.views().into_iter().find(|w| w.name == name).expect("the worker")
    }

    #[tokio::test]
    async fn a_worker_keeps_its_passes_and_last_error_and_one_that_overruns_is_cut_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("muster.db"), Default::default()).expect("a store"));
        let config = HubConfig { data_dir: dir.path().to_path_buf(), ..HubConfig::default() };
        let hub = Hub::new(store, config, Arc::new(crate::SystemClock)).await.expect("a hub");
        let mut recorded = hub.shared.workers.recorded();
        let poke = Arc::new(Notify::new());
        let results =
            VecDeque::from([Err("the disk is full".to_owned()), Err("panic".to_owned()), Ok(true), Ok(false)]);
        spawn(&hub, Driven { name: "flaky", poke: poke.clone(), results, started: Arc::new(Notify::new()) });
        let (stuck, started) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        spawn(&hub, Driven { name: "stuck", poke: stuck.clone(), results: VecDeque::new(), started: started.clone() });

        let w = view(&hub, "flaky");
        assert_eq!((w.state.as_str(), w.passes, w.failures, w.last_error), ("waiting", 0, 0, None));

        poke.notify_one();
        recorded.wait_for(|n| *n == 1).await.expect("a pass");
        let w = view(&hub, "flaky");
        assert_eq!((w.passes, w.failures), (1, 1), "{w:?}");
        assert_eq!(w.last_error.as_deref(), Some("the disk is full"));
        assert!(w.last_error_at.is_some() && w.last_pass_at.is_some(), "{w:?}");
        assert_eq!((w.failing_passes, w.failing_since.is_some()), (1, true), "{w:?}");
        let since = w.failing_since.clone();

        // A pass that panics fails like any other, and the worker goes on.
        poke.notify_one();
        recorded.wait_for(|n| *n == 2).await.expect("a pass");
        let w = view(&hub, "flaky");
        assert_eq!((w.state.as_str(), w.failures, w.failing_passes), ("waiting", 2, 2), "{w:?}");
        assert_eq!(w.last_error.as_deref(), Some("the pass panicked: boom"));
        assert_eq!(w.failing_since, since, "failing since the first of the two");

        // A pass that asks for more is followed by one without a poke.
        poke.notify_one();
        recorded.wait_for(|n| *n == 4).await.expect("two passes");
        let w = view(&hub, "flaky");
        assert_eq!((w.state.as_str(), w.passes, w.failures), ("waiting", 4, 2), "{w:?}");
        assert_eq!(
            (w.last_error, w.failing_since, w.failing_passes),
            (None, None, 0),
            "a pass that succeeds clears it"
        );

        // A pass that never ends: shutdown waits for it no longer than its deadline.
        stuck.notify_one();
        started.notified().await;
        assert_eq!(view(&hub, "stuck").state, "working");
        hub.shared.stopping.send_replace(true);
        let began = std::time::Instant::now();
        hub.shared.workers.stop(Duration::from_millis(200)).await;
        assert!(began.elapsed() < Duration::from_secs(5), "stop kept its deadline");
        for name in ["flaky", "stuck"] {
            assert_eq!(view(&hub, name).state, "stopped", "{name}");
        }
    }
}
