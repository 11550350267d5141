//! Pipelines: stages run in order, later prompts see earlier results, and a
//! bad file is refused whole with every problem on its line.

use crate::harness::Hub;

#[tokio::test(flavor = "multi_thread")]
async fn a_three_stage_pipeline_runs_in_order_and_its_middle_stage_asks_a_person() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 2, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_muster");
    let file = dir.path().join("release.yaml");
    std::fs::write(
        &file,
        format!(
            r#"name: release
vars:
  version: "1.0"
stages:
  - name: spec
    runner: shell
    prompt: echo "spec for {{{{vars.version}}}}"
  - name: implement
    runner: shell
    prompt: |
      echo "building from: {{{{stages.spec.result}}}}"
      answer=$({bin} ctl ask "Ship {{{{vars.version}}}} with the new parser?" --option yes --option no) || exit $?
      echo "implemented ($answer)"
  - name: review
    runner: shell
    prompt: |
      echo "reviewing {{{{stages.implement.task}}}}: {{{{stages.implement.result}}}}"
"#
        ),
    )
    .unwrap();
    let path = crate::harness::path_str(&file);
    let (code, out, err) = hub.cli(&["pipeline", "run", &path, "--var", "version=2.0", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stages = p["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["spec", "implement", "review"]);
    assert_eq!(stages[1]["state"], "blocked", "{p}");
    let task = |i: usize| stages[i]["task"].as_str().unwrap().to_owned();

    let decision = hub
        .wait_until("the middle stage to ask", || async {
            let open = hub.get(&format!("/decisions?task={}", task(1))).await;
            open.as_array().and_then(|a| a.first().cloned())
        })
        .await;
    assert_eq!(decision["question"], "Ship 2.0 with the new parser?", "--var wins over the file's vars");
    let id = p["id"].to_string();
    let (_, shown, _) = hub.cli(&["pipeline", "show", &id]).await;
    assert!(shown.contains("running") && shown.contains("implement"), "{shown}");
    let (code, _, err) = hub.cli(&["decide", &decision["id"].to_string(), "yes"]).await;
    assert_eq!(code, 0, "{err}");

    let review = hub.wait_state(&task(2), &["succeeded", "failed"]).await;
    assert_eq!(review["state"], "succeeded", "{review}");
    let out = hub.output(&task(2)).await;
    // A shell stage's result is the end of its output.
    assert_eq!(out.trim(), format!("reviewing {}: building from: spec for 2.0\nimplemented (yes)", task(1)));
    let implement = hub.output(&task(1)).await;
    assert!(implement.contains("building from: spec for 2.0"), "{implement}");
    // In order: each stage started after the one before it finished.
    let spec = hub.task(&task(0)).await;
    let implement = hub.task(&task(1)).await;
    assert!(spec["finished_at"].as_str() <= implement["started_at"].as_str());
    assert!(implement["finished_at"].as_str() <= review["started_at"].as_str());
    let (code, shown, _) = hub.cli(&["pipeline", "show", &id]).await;
    assert_eq!(code, 0);
    assert!(shown.starts_with(&format!("pipeline {id}  release  succeeded")), "{shown}");
    let (_, listed, _) = hub.cli(&["pipeline", "list"]).await;
    assert!(listed.contains("release") && listed.contains("3/3"), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_pipeline_file_is_refused_whole_with_every_problem_on_its_line() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "name: bad\nstages:\n  - name: build\n    runner: shell\n    prompt: make\n  - name: test\n    runner: nowhere\n    prompt: \"{{stages.deploy.result}}\"\n    retries: 3\n",
    )
    .unwrap();
    let path = crate::harness::path_str(&file);
    let (code, _, err) = hub.cli(&["pipeline", "run", &path]).await;
    assert_eq!(code, 2, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(&path)).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(err.contains(&format!("{path}:7: stage test: unknown runner \"nowhere\"")), "{err}");
    assert!(err.contains(&format!("{path}:9: unknown key \"retries\"")), "{err}");
    assert!(err.contains("names a stage it does not need"), "{err}");
    let tasks = hub.get("/tasks").await;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(0), "nothing was created: {tasks}");
    let (code, _, err) = hub.cli(&["pipeline", "show", "42"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = hub.cli(&["pipeline", "run", &path, "--var", "novalue"]).await;
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_are_added_listed_paused_resumed_and_deleted_and_bad_ones_refused() {
    let hub = Hub::start().await;
    let (code, out, err) = hub
        .cli(&[
            "schedule",
            "add",
            "nightly",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Paris",
            "--missed",
            "run-once",
            "--runner",
            "shell",
            "--priority",
            "low",
            "echo nightly",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("nightly  `30 2 * * *` Europe/Paris  next "), "{out}");
    let (_, listed, _) = hub.cli(&["schedule", "list"]).await;
    assert!(listed.contains("nightly") && listed.contains("run-once") && listed.contains("shell"), "{listed}");
    let (_, shown, _) = hub.cli(&["schedule", "show", "nightly", "--json"]).await;
    let s: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (&s["task"]["prompt"], &s["task"]["priority"]),
        (&serde_json::json!("echo nightly"), &serde_json::json!("low"))
    );
    let next = s["next_at"].as_str().unwrap().to_owned();
    assert!(next.ends_with("T01:30:00.000Z") || next.ends_with("T00:30:00.000Z"), "02:30 in Paris: {next}");

    let (code, out, _) = hub.cli(&["schedule", "pause", "nightly"]).await;
    assert_eq!((code, out.trim()), (0, "nightly  `30 2 * * *` Europe/Paris  next paused"));
    let (code, _, err) = hub.cli(&["schedule", "pause", "nightly"]).await;
    assert_eq!(code, 4, "{err}");
    let (code, out, _) = hub.cli(&["schedule", "resume", "nightly"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("next {next}")), "{out}");

    for (args, field) in [
        (vec!["--cron", "61 * * * *"], "cron"),
        (vec!["--cron", "0 * * * *", "--tz", "Mars/Olympus"], "Mars/Olympus"),
        (vec!["--cron", "0 * * * *", "--runner", "nowhere"], "unknown runner"),
    ] {
        let mut all = vec!["schedule", "add", "bad"];
        all.extend(args);
        all.push("echo x");
        let (code, _, err) = hub.cli(&all).await;
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(field), "{field}: {err}");
    }
    let (code, _, err) = hub.cli(&["schedule", "add", "nightly", "--cron", "@hourly", "--runner", "shell", "x"]).await;
    assert_eq!(code, 4, "the name is taken: {err}");
    let (code, out, _) = hub.cli(&["schedule", "delete", "nightly"]).await;
    assert_eq!((code, out.trim()), (0, "deleted nightly"));
    let (code, _, _) = hub.cli(&["schedule", "show", "nightly"]).await;
    assert_eq!(code, 3);
    let kinds: Vec<String> = hub.events("").await.iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    for k in ["schedule.added", "schedule.paused", "schedule.resumed", "schedule.deleted"] {
        assert!(kinds.iter().any(|x| x == k), "{k}: {kinds:?}");
    }
}
