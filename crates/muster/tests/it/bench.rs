//! The benchmark harness keeps working: a smoke run of every scenario
//! against real hubs, real sockets and (when installed) the real peer
//! queues. Speed is never judged here; only that each scenario ran,
//! measured something and lost nothing. And the batch endpoint the harness
//! seeds deep queues with creates all of a batch or none of it.

use crate::harness::{Hub, muster_command, path_str, run_to_end};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Where a `muster bench` run keeps its hubs and writes its results.
struct BenchDir {
    _dir: tempfile::TempDir,
    work: PathBuf,
    out: PathBuf,
}

impl BenchDir {
    fn new() -> BenchDir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (work, out) = (dir.path().join("run"), dir.path().join("results.json"));
        BenchDir { _dir: dir, work, out }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_smoke_run_of_every_scenario_measures_something_and_loses_nothing() {
    let run = BenchDir::new();
    let (work_arg, out_arg) = (path_str(&run.work), path_str(&run.out));
    let mut args = vec!["bench", "--smoke", "--work-dir", &work_arg, "--out", &out_arg];
    // The peers come from the registries; .ci/run installs them once and says where.
    let peers = std::env::var("MUSTER_BENCH_PEERS").is_ok();
    if !peers {
        crate::harness::skip(
            "bench::peers",
            crate::harness::Missing::Dependency(
                "MUSTER_BENCH_PEERS is not set: the peer queues (graphile-worker, Celery) are left out of this smoke run",
            ),
        );
        for s in ["throughput", "latency", "agents", "recovery", "ceiling"] {
            args.extend(["--scenario", s]);
        }
    }
    let (code, stdout, stderr) = run_to_end(&mut muster_command(&args), Duration::from_secs(600)).await;
    assert_eq!(code, 0, "muster bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("SMOKE RUN: figures mean nothing"), "{stdout}");
    assert!(stdout.contains("| target | wanted | measured | met |"), "{stdout}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&run.out).expect("the results file")).expect("JSON");
    let disk = &r["disk"];
    assert!(disk["fsyncs"].as_u64().unwrap() > 0 && disk["p50_ms"].as_f64().unwrap() > 0.0, "{disk}");
    assert!(stdout.contains("disk: fsync after a 16 KiB append"), "{stdout}");
    // Each measured scenario says how much CPU time the host took back.
    for row in r["throughput"].as_array().unwrap().iter().chain(r["latency"].as_array().unwrap()) {
        let steal = row["steal_pct"].as_f64().expect("steal while it ran");
        assert!((0.0..=100.0).contains(&steal), "{row}");
    }
    assert!(stdout.contains("host steal (CPU time the host took back): throughput (0 queued "), "{stdout}");
    assert!(stdout.contains("  hub commits meanwhile (log write and fsync): "), "{stdout}");

    let throughput = r["throughput"].as_array().expect("throughput rows");
    assert_eq!(throughput.iter().map(|t| t["queued"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1000]);
    for t in throughput {
        assert!(t["finished_per_sec"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["submitted_per_sec"].as_f64().unwrap() > 0.0, "{t}");
    }
    let latency = r["latency"].as_array().expect("latency rows");
    assert_eq!(latency.len(), 2);
    for l in latency {
        let (p50, p99, max) =
            (l["p50_ms"].as_f64().unwrap(), l["p99_ms"].as_f64().unwrap(), l["max_ms"].as_f64().unwrap());
        assert!(l["tasks"].as_u64().unwrap() >= 1 && p50 > 0.0 && p50 <= p99 && p99 <= max, "{l}");
        // Every task's creation was committed, so the hub counted commits.
        assert!(l["commits"]["commits"].as_u64().unwrap() >= 1, "{l}");
    }
    let agents = &r["agents"];
    assert_eq!(agents["agents"], 50, "{agents}");
    assert!(agents["rss_after_mib"].as_f64().unwrap() > 0.0 && agents["heartbeats_per_sec"].as_f64().unwrap() > 0.0);
    let recovery = &r["recovery"];
    assert_eq!(recovery["lost"], 0, "{recovery}");
    assert_eq!(recovery["tasks_before"], recovery["tasks_after"], "{recovery}");
    assert_eq!(recovery["tasks_before"], 1020, "{recovery}");
    assert!(recovery["first_dispatch_s"].as_f64().unwrap() > 0.0);
    assert!(r["ceiling"]["lives_per_sec"].as_f64().unwrap() > 0.0, "{}", r["ceiling"]);
    if peers {
        let rows = r["peers"].as_array().expect("peer rows");
        let names: Vec<&str> = rows.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["graphile-worker", "celery"]);
        for p in rows {
            assert!(p.get("error").is_none(), "{p}");
            assert!(p["jobs_per_sec"].as_f64().unwrap() > 0.0 && p["p50_ms"].as_f64().unwrap() >= 0.0, "{p}");
        }
        assert!(stdout.contains("| graphile-worker") && stdout.contains("| celery"), "{stdout}");
    }
}

/// `--database` runs the `hubs` scenario: Muster on PostgreSQL with one,
/// two and three hubs, every task accounted for, beside graphile-worker at
/// each concurrency on the same server; without it, `hubs` is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_smoke_run_on_postgres_measures_one_two_and_three_hubs_beside_graphile_worker() {
    let run = BenchDir::new();
    let (work_arg, out_arg) = (path_str(&run.work), path_str(&run.out));
    let base = ["bench", "--smoke", "--work-dir", &work_arg, "--out", &out_arg];
    let refused: Vec<&str> = base.iter().copied().chain(["--scenario", "hubs"]).collect();
    let (code, _, stderr) = run_to_end(&mut muster_command(&refused), Duration::from_secs(60)).await;
    assert_ne!(code, 0, "hubs without a database is refused");
    assert!(stderr.contains("--database postgres://"), "{stderr}");

    let server =
        std::env::var("MUSTER_TEST_POSTGRES").unwrap_or_else(|_| muster_store::postgres::DEFAULT_ADMIN_URL.to_owned());
    let args: Vec<&str> = base.iter().copied().chain(["--database", &server]).collect();
    let (code, stdout, stderr) = run_to_end(&mut muster_command(&args), Duration::from_secs(600)).await;
    assert_eq!(code, 0, "muster bench failed:\n{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&run.out).expect("the results file")).expect("JSON");
    let hubs = r["hubs"].as_array().expect("hubs rows");
    assert_eq!(hubs.iter().map(|h| h["hubs"].as_u64().expect("a count")).collect::<Vec<_>>(), [1, 2, 3]);
    for h in hubs {
        let (t, l) = (&h["throughput"], &h["latency"]);
        assert!(t["finished_per_sec"].as_f64().expect("a rate") > 0.0, "{h}");
        assert_eq!(l["tasks"].as_u64().map(|n| n >= 1), Some(true), "{h}");
        assert!(l["p50_ms"].as_f64().expect("p50") <= l["p99_ms"].as_f64().expect("p99"), "{h}");
    }
    assert!(r["throughput"].as_array().expect("rows").is_empty(), "--database alone runs only hubs");
    assert!(stdout.contains("| Muster | 3 hub(s)"), "{stdout}");
    assert!(stdout.contains("PostgreSQL: three hubs vs one"), "{stdout}");
    if std::env::var("MUSTER_BENCH_PEERS").is_ok() {
        let sweep = r["graphile_sweep"].as_array().expect("graphile rows");
        let levels: Vec<u64> = sweep.iter().map(|p| p["concurrency"].as_u64().expect("a concurrency")).collect();
        assert_eq!(levels, [4, 16], "each concurrency, once: {sweep:?}");
        for p in sweep {
            assert!(p.get("error").is_none() && p["jobs_per_sec"].as_f64().expect("a rate") > 0.0, "{p}");
        }
        assert!(stdout.contains("PostgreSQL: one hub vs graphile-worker at its best"), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_paced_from_a_given_peak_is_named_apart_and_judges_no_target() {
    let run = BenchDir::new();
    let (work_arg, out_arg) = (path_str(&run.work), path_str(&run.out));
    let base = ["bench", "--smoke", "--scenario", "latency", "--work-dir", &work_arg, "--out", &out_arg];
    let with_peak = |peak: &'static str| base.iter().copied().chain(["--peak", peak]).collect::<Vec<_>>();
    let (code, stdout, stderr) = run_to_end(&mut muster_command(&with_peak("0.5")), Duration::from_secs(60)).await;
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("--peak") && stderr.contains("at least 1 task a second"), "{stderr}");
    assert!(!run.out.exists(), "a refused run writes no results");

    let (code, stdout, stderr) = run_to_end(&mut muster_command(&with_peak("400")), Duration::from_secs(300)).await;
    assert_eq!(code, 0, "muster bench failed:\n{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&run.out).expect("the results file")).expect("JSON");
    let rows: Vec<(&str, f64)> = r["latency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["label"].as_str().unwrap(), l["rate"].as_f64().unwrap()))
        .collect();
    assert_eq!(rows, [("half of the given peak", 200.0), ("10% of the given peak", 40.0)]);
    assert!(stdout.contains("latency at half of the given peak (200/s"), "{stdout}");
    // No throughput run measured a peak, and none was asked for.
    assert!(r["throughput"].as_array().unwrap().is_empty(), "{}", r["throughput"]);
    assert!(!stdout.contains("dispatch latency p99"), "a given peak judges no target:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_tasks_is_created_whole_or_not_at_all() {
    let hub = Hub::start().await;
    let task = |prompt: &str| json!({ "prompt": prompt, "runner": "shell" });
    let (status, body) = hub.post("/tasks/batch", json!({ "tasks": [task("one"), task("two"), task("three")] })).await;
    assert_eq!(status, 201, "{body}");
    let created = body["tasks"].as_array().expect("the created tasks");
    assert_eq!(
        created.iter().map(|c| c["task"]["prompt"].as_str().unwrap()).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    assert!(created.iter().all(|c| c["created"] == true && c["task"]["state"] == "queued"));

    // One bad task refuses the batch, naming it; nothing of the batch is kept.
    let before = hub.get("/tasks?limit=1000").await["tasks"].as_array().unwrap().len();
    let bad = json!({ "tasks": [task("fine"), { "prompt": "x", "runner": "nosuch" }] });
    let (status, body) = hub.post("/tasks/batch", bad).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "tasks[1].runner", "{body}");
    let (status, body) =
        hub.post("/tasks/batch", json!({ "tasks": [task("a"), { "prompt": "" , "runner": "shell"}] })).await;
    assert_eq!(status, 400, "an empty prompt: {body}");
    let (status, body) = hub.post("/tasks/batch", json!({ "tasks": [] })).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("tasks")), "{body}");
    let many: Vec<Value> = (0..1001).map(|i| task(&format!("t{i}"))).collect();
    let (status, body) = hub.post("/tasks/batch", json!({ "tasks": many })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("1 to 1000"), "{body}");
    let after = hub.get("/tasks?limit=1000").await["tasks"].as_array().unwrap().len();
    assert_eq!(before, after, "a refused batch leaves no task behind");

    // Idempotency keys hold within a batch and across batches.
    let keyed = json!({ "prompt": "k", "runner": "shell", "idempotency_key": "same" });
    let (status, body) = hub.post("/tasks/batch", json!({ "tasks": [keyed.clone(), keyed.clone()] })).await;
    assert_eq!(status, 201, "{body}");
    let (first, second) = (&body["tasks"][0], &body["tasks"][1]);
    assert_eq!((first["created"].as_bool(), second["created"].as_bool()), (Some(true), Some(false)));
    assert_eq!(first["task"]["id"], second["task"]["id"]);
}
