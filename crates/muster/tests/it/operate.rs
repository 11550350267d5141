//! Operating a hub: metrics that Prometheus accepts, readiness while
//! draining, the health level, the version.

use crate::harness::{Hub, HubOpts, PATIENCE, path_str};
use serde_json::json;
use std::process::Stdio;

/// Runs `promtool check metrics` on `text`; returns its exit code and what it printed.
async fn promtool(text: &str) -> (i32, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cmd = tokio::process::Command::new("promtool");
    cmd.args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut group = muster_agent::process::ProcessGroup::spawn(&mut cmd)
        .expect("promtool runs (Debian package `prometheus`; .ci/run installs it)");
    let mut stdin = group.child_mut().stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).await.expect("metrics written");
    drop(stdin);
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = group.child_mut().stdout.take().expect("stdout");
    let mut stderr = group.child_mut().stderr.take().expect("stderr");
    let (a, b) = tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
    a.expect("stdout");
    b.expect("stderr");
    let status = tokio::time::timeout(PATIENCE, group.wait()).await.expect("promtool exits").expect("status");
    (status.code().unwrap_or(-1), out + &err)
}

async fn scrape(hub: &Hub) -> String {
    let resp = reqwest::get(format!("{}/metrics", hub.url)).await.expect("the hub answers");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().expect("a text header");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    resp.text().await.expect("a body")
}

fn value(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("not a number: {line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_from_a_hub_that_has_run_tasks_pass_promtool() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 2, &[]).await;
    let ok = hub.add_task(json!({ "prompt": "echo ok", "runner": "shell", "priority": "high" })).await;
    let bad = hub.add_task(json!({ "prompt": "exit 4", "runner": "shell", "max_attempts": 1 })).await;
    let queued = hub.add_task(json!({ "prompt": "echo never", "runner": "shell", "capabilities": ["gpu"] })).await;
    hub.wait_state(&ok, &["succeeded"]).await;
    hub.wait_state(&bad, &["failed"]).await;
    let (status, _) = hub.request(reqwest::Method::GET, "/tasks?state=nonsense", None).await;
    assert_eq!(status, 400);

    let text = scrape(&hub).await;
    let (code, report) = promtool(&text).await;
    assert_eq!(code, 0, "promtool check metrics failed:\n{report}\n{text}");
    assert_eq!(report.trim(), "", "promtool found problems:\n{report}");

    assert_eq!(value(&text, r#"muster_task_outcomes_total{outcome="succeeded"}"#), 1.0);
    assert_eq!(value(&text, r#"muster_task_outcomes_total{outcome="failed"}"#), 1.0);
    assert_eq!(value(&text, r#"muster_tasks{state="succeeded",priority="high"}"#), 1.0);
    assert_eq!(value(&text, r#"muster_tasks{state="queued",priority="normal"}"#), 1.0);
    assert_eq!(value(&text, r#"muster_agents{state="idle"}"#), 1.0);
    assert_eq!(value(&text, "muster_agent_sockets"), 1.0);
    assert_eq!(value(&text, "muster_dispatch_latency_seconds_count"), 2.0);
    assert_eq!(value(&text, r#"muster_run_duration_seconds_count{outcome="succeeded"}"#), 1.0);
    assert!(value(&text, "muster_db_commit_duration_seconds_count") > 0.0);
    assert!(value(&text, r#"muster_http_requests_total{route="/api/v1/tasks",method="POST",status="201"}"#) >= 3.0);
    // Labels carry route templates, never ids.
    assert!(value(&text, r#"muster_http_requests_total{route="/api/v1/tasks/{id}",method="GET",status="200"}"#) >= 1.0);
    for id in [&ok, &bad, &queued] {
        assert!(!text.contains(id.as_str()), "a task id leaked into the metrics");
    }
    assert!(!text.contains(&hub.token), "a token leaked into the metrics");
    assert!(value(&text, r#"muster_http_requests_total{route="/api/v1/tasks",method="GET",status="400"}"#) >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_answers_503_while_the_hub_drains() {
    let mut hub = Hub::start_with(HubOpts { extra: &["--drain-delay", "30s"], ..HubOpts::default() }).await;
    // Whatever room this machine's disk has left (the disk check has a test of its own).
    let (status, body) =
        hub.request(reqwest::Method::PUT, "/config/alerts", Some(json!({ "disk_low": { "threshold": 0.0 } }))).await;
    assert_eq!(status, 200, "{body}");
    let ready = reqwest::get(format!("{}/readyz?verbose", hub.url)).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "[+] database ok\n[+] commits ok\n[+] disk ok\n[+] draining ok\nready\n");

    let mark = hub.last_event().await;
    let pid = hub.process.as_ref().unwrap().pgid();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    hub.wait_until("the hub to start draining", || async {
        let events = hub.get(&format!("/events?after={mark}")).await;
        events["events"].as_array().unwrap().iter().any(|e| e["kind"] == "hub.draining").then_some(())
    })
    .await;
    let draining = reqwest::get(format!("{}/readyz?verbose", hub.url)).await.unwrap();
    assert_eq!(draining.status(), 503);
    assert_eq!(
        draining.text().await.unwrap(),
        "[+] database ok\n[+] commits ok\n[+] disk ok\n[-] draining failed: the hub is shutting down\nnot ready\n"
    );
    let plain = reqwest::get(format!("{}/readyz", hub.url)).await.unwrap();
    assert_eq!((plain.status().as_u16(), plain.text().await.unwrap()), (503, "not ready\n".to_owned()));
    // Live, though not ready; and it takes no new tasks.
    assert_eq!(reqwest::get(format!("{}/livez", hub.url)).await.unwrap().status(), 200);
    let (status, body) = hub.post("/tasks", json!({ "prompt": "echo late", "runner": "shell" })).await;
    assert_eq!(status, 503, "{body}");
    hub.kill9().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_health_level_and_why() {
    let hub = Hub::start().await;
    let (code, out, _) = hub.cli(&["status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("health     HEALTHY (runs ended in the last 1h)"), "{out}");
    assert!(out.contains("- no runs finished in the window"), "{out}");
    // Every background worker, with its state.
    let workers = out.lines().find(|l| l.starts_with("workers ")).unwrap_or_else(|| panic!("a workers line: {out}"));
    for name in ["dispatch", "handout", "alerts", "backups", "compaction", "window"] {
        assert!(workers.contains(&format!("{name} ")), "{name} in {workers:?}");
    }
    let dispatch = hub
        .wait_until("the dispatch worker to make a pass", || async {
            let listed = hub.get("/admin/workers").await;
            listed
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["name"] == "dispatch" && w["passes"].as_u64() > Some(0))
                .cloned()
        })
        .await;
    assert!(dispatch["last_error"].is_null() && dispatch["last_pass_at"].is_string(), "{dispatch}");

    let _agent = hub.agent("w", 2, &[]).await;
    let scratch = tempfile::tempdir().unwrap();
    let flag = path_str(&scratch.path().join("x"));
    let mut ids = vec![hub.shell_task("echo fine").await];
    for _ in 0..3 {
        ids.push(
            hub.add_task(json!({ "prompt": format!("touch '{flag}'; exit 1"), "runner": "shell", "max_attempts": 1 }))
                .await,
        );
    }
    for id in &ids {
        hub.wait_state(id, &["succeeded", "failed"]).await;
    }
    let (code, out, _) = hub.cli(&["status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("health     UNHEALTHY"), "{out}");
    assert!(out.contains("- 1 of 4 runs succeeded (25%)"), "{out}");
    assert!(out.contains("- success rate below 70%"), "{out}");
    assert!(out.contains("- 3 failed runs (more than 2)"), "{out}");
    let (_, out, _) = hub.cli(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["health"]["level"], "UNHEALTHY");
    assert_eq!((status["health"]["succeeded"].as_u64(), status["health"]["failed"].as_u64()), (Some(1), Some(3)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_version_is_public() {
    let hub = Hub::start().await;
    let v: serde_json::Value = reqwest::get(format!("{}/api/v1/version", hub.url)).await.unwrap().json().await.unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["api"], "v1");
    assert_eq!(v["agent_protocol"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_window_accounts_for_every_run() {
    let hub = Hub::start_with(HubOpts { extra: &["--window-interval", "100ms"], ..HubOpts::default() }).await;
    let _agent = hub.agent("w", 2, &[]).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let prompt = if i % 3 == 0 { "exit 1" } else { "echo ok" };
        ids.push(hub.add_task(json!({ "prompt": prompt, "runner": "shell", "max_attempts": 1 })).await);
    }
    for id in &ids {
        hub.wait_state(id, &["succeeded", "failed"]).await;
    }
    let window = hub
        .wait_until("the window to count all six runs", || async {
            let w = hub.get("/metrics").await;
            let points = w["points"].as_array().cloned().unwrap_or_default();
            let sum = |k: &str| points.iter().map(|p| p[k].as_u64().unwrap_or(0)).sum::<u64>();
            (sum("succeeded") == 4 && sum("failed") == 2).then_some(w)
        })
        .await;
    let points = window["points"].as_array().unwrap();
    assert!(points.len() <= 360);
    assert_eq!(window["interval_secs"], 0.1);
    assert!(points.iter().any(|p| p["latency_p50"].as_f64().is_some()), "queue waits were recorded");
    assert!(points.iter().any(|p| p["utilization"].as_f64().is_some()));
    assert!(points.iter().any(|p| p["failure_rate"].as_f64().is_some_and(|r| r > 0.0)));
    assert!(["rising", "falling", "flat"].contains(&window["queue_trend"].as_str().unwrap()));

    let (code, out, _) = hub.cli(&["metrics"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("failures     2 of 6 runs (33%)"), "{out}");
    assert!(out.starts_with("window       last "), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slos_report_the_budget_left_from_the_runs_recorded() {
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("muster.toml");
    std::fs::write(
        &config,
        "[[slo]]\nname = \"fast-runs\"\nkind = \"run\"\nthreshold = \"1s\"\ntarget = 0.5\n\n\
         [[slo]]\nname = \"quick-dispatch\"\nkind = \"dispatch\"\nthreshold = \"60s\"\ntarget = 0.9\nwindow = \"1d\"\n",
    )
    .unwrap();
    let config: &'static str = Box::leak(path_str(&config).into_boxed_str());
    let extra: &'static [&'static str] = Box::leak(vec!["--config", config].into_boxed_slice());
    let hub = Hub::start_with(HubOpts { extra, ..HubOpts::default() }).await;
    let _agent = hub.agent("w", 4, &[]).await;
    let mut ids = Vec::new();
    for script in ["echo quick", "echo quick", "sleep 1.5", "sleep 1.5"] {
        ids.push(hub.shell_task(script).await);
    }
    // Good is what each run took, as recorded, against the 1 s threshold:
    // the sleeps are never good; a quick run is unless the machine stalled.
    let mut good = 0;
    for id in &ids {
        let task = hub.wait_state(id, &["succeeded"]).await;
        let a = &task["attempts_detail"][0];
        let ms =
            |v: &serde_json::Value| muster_proto::parse_timestamp(v.as_str().expect("a time")).expect("RFC 3339").0;
        let took = ms(&a["finished_at"]) - ms(&a["started_at"]);
        if task["prompt"] == "sleep 1.5" {
            assert!(took >= 1500, "{took} ms");
        }
        good += u64::from(took <= 1000);
    }
    let slos = hub.get("/slo").await;
    let slos = slos.as_array().unwrap();
    let runs = slos.iter().find(|s| s["name"] == "fast-runs").unwrap();
    assert!(good <= 2);
    assert_eq!((runs["good"].as_u64(), runs["total"].as_u64()), (Some(good), Some(4)));
    assert_eq!(runs["sli"], good as f64 / 4.0);
    // Half of the runs may miss (target 0.5): two slow ones spend the whole budget.
    assert_eq!(runs["budget_remaining"], 1.0 - (1.0 - good as f64 / 4.0) / 0.5);
    assert_eq!(runs["status"], "exhausted");
    let dispatch = slos.iter().find(|s| s["name"] == "quick-dispatch").unwrap();
    assert_eq!((dispatch["good"].as_u64(), dispatch["total"].as_u64()), (Some(4), Some(4)));
    assert_eq!(dispatch["budget_remaining"], 1.0);
    assert_eq!(dispatch["status"], "ok");
    assert_eq!(dispatch["window_secs"], 86400);

    let (code, out, _) = hub.cli(&["slo"]).await;
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("fast-runs (run within 1s)")).unwrap_or_else(|| panic!("{out}"));
    let sli = format!("{:.3}%", good as f64 / 4.0 * 100.0);
    assert!(line.contains(&format!("{good}/4")) && line.contains(&sli) && line.ends_with("exhausted"), "{line}");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    /// A tmpfs of `size` (`16m`), or why the kernel refused one.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs", &path_str(&path)])
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(path, dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// On main a full disk failed every write with 500 `database or disk is
/// full` while `/readyz` said ready. Now readiness names the disk, a write
/// refused for space answers 507 naming the data directory, and both
/// recover once there is room again.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_full_disk_readiness_fails_and_writes_answer_507_until_there_is_room() {
    let disk = match Tmpfs::mount("24m") {
        Ok(disk) => disk,
        Err(why) => {
            let test = "operate::on_a_full_disk_readiness_fails_and_writes_answer_507_until_there_is_room";
            crate::harness::skip(test, crate::harness::Missing::Kernel(&format!("cannot mount a tmpfs here ({why})")));
            return;
        }
    };
    let dir = tempfile::Builder::new().tempdir_in(&disk.0).expect("a data directory on the tmpfs");
    let hub = Hub::start_in(dir, HubOpts::default()).await;
    let ready = reqwest::get(format!("{}/readyz", hub.url)).await.unwrap();
    assert_eq!(ready.status(), 200, "an empty disk is ready");

    // Fill the disk to the last block.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
    let ready = reqwest::get(format!("{}/readyz?verbose", hub.url)).await.unwrap();
    assert_eq!(ready.status(), 503);
    let text = ready.text().await.unwrap();
    assert!(text.contains("[-] disk failed: 0.0% of the disk holding") && text.ends_with("not ready\n"), "{text}");

    let big = "x".repeat(900_000);
    let (status, body) = hub.post("/tasks", json!({ "prompt": big, "runner": "shell" })).await;
    assert_eq!(status, 507, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("no space left on the disk holding") && detail.contains(&path_str(hub.dir.path())),
        "{detail}"
    );

    std::fs::remove_file(&filler).unwrap();
    let ready = reqwest::get(format!("{}/readyz?verbose", hub.url)).await.unwrap();
    let text = ready.text().await.unwrap();
    assert_eq!(text, "[+] database ok\n[+] commits ok\n[+] disk ok\n[+] draining ok\nready\n");
    let id = hub.add_task(json!({ "prompt": "echo room again", "runner": "shell" })).await;
    assert_eq!(hub.task(&id).await["state"], "queued");
}

/// On main there was no way to remove an agent, and one registered but never
/// started made `diagnose` fail for ever.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_is_removed_with_its_token_and_one_never_started_is_only_a_note() {
    let hub = Hub::start().await;
    let (status, body) = hub.post("/admin/backups", json!({})).await;
    assert_eq!(status, 201, "{body}");
    hub.add_agent("ghost", &[]).await;
    let (code, out, err) = hub.cli(&["diagnose"]).await;
    assert_eq!(code, 0, "a never-started agent is not a problem: {out}{err}");
    assert!(out.contains("notes:") && out.contains("agent ghost was registered"), "{out}");
    assert!(out.contains("muster agent remove ghost"), "{out}");

    let mut agent = hub.agent("w", 1, &[]).await;
    let id = hub.shell_task("sleep 300").await;
    hub.wait_state(&id, &["running"]).await;
    let (code, _, err) = hub.cli(&["agent", "remove", "w"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(&id) && err.contains("--force"), "{err}");

    let (code, out, err) = hub.cli(&["agent", "remove", "w", "--force"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("{id}\tqueued again"), "the task it held is listed");
    assert!(err.contains("agent w removed"), "{err}");
    // Cut off: its token is refused, and it stops rather than retry for ever.
    let process = agent.process.as_mut().expect("the agent runs");
    let status = tokio::time::timeout(PATIENCE, process.wait()).await.expect("the agent exits").expect("a status");
    assert_eq!(status.code(), Some(5), "{status:?}");
    let task = hub.wait_state(&id, &["queued"]).await;
    assert_eq!(task["reason"], "its agent was removed during the run");
    assert_eq!(task["attempts_detail"][0]["agent"], "w", "its history keeps its name");
    let (_, list, _) = hub.cli(&["agent", "list"]).await;
    assert!(!list.lines().any(|l| l.starts_with("w ")), "{list}");
    let tokens = hub.get("/tokens").await;
    let token = tokens.as_array().unwrap().iter().find(|t| t["agent"] == "w").expect("its token is kept");
    assert!(token["revoked_at"].is_string(), "{token}");
    let events = hub.events("agent=w").await;
    assert!(events.iter().any(|e| e["kind"] == "agent.removed"), "{events:?}");

    let (code, _, err) = hub.cli(&["agent", "remove", "ghost"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = hub.cli(&["agent", "remove", "ghost"]).await;
    assert_eq!(code, 3, "{err}");
    let (_, out, _) = hub.cli(&["diagnose"]).await;
    assert!(!out.contains("agent ghost was registered"), "{out}");
}
