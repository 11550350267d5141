//! Runners that read their coding agent's event stream: steps recorded as
//! they come, the latest live on the task, tokens and cost kept per attempt,
//! and the agent's own verdict, or a broken stream, deciding the outcome.
//!
//! The runner here replays a stream from its prompt, so these tests need no
//! agent installed; `agents.rs` runs the real Claude Code and Codex CLIs.

use crate::harness::{Agent, AgentOpts, Hub, path_str};
use serde_json::{Value, json};

/// A runner that prints its prompt file as the agent's stream, line by
/// line, stopping at `WAIT <path>` until that path exists, then exits with
/// the code a final `EXIT <n>` line gives (0 without one). `NOEOL <text>`
/// prints text with no newline; `HUGE <n>` a JSON line padded by n bytes;
/// after `FIRST_TIME_ONLY <path>`, `WAIT` lines are skipped when the path
/// already existed (a retry goes straight through), and `FIRST <line>` is
/// printed only the first time, `AGAIN <line>` only after.
const REPLAY: &str = r#"code=0
while IFS= read -r l || [ -n "$l" ]; do
  case "$l" in
    "WAIT "*) [ -n "$skip" ] || { f=${l#WAIT }; while [ ! -e "$f" ]; do sleep 0.02; done; } ;;
    "EXIT "*) code=${l#EXIT } ;;
    "NOEOL "*) printf '%s' "${l#NOEOL }" ;;
    "FIRST "*) [ -n "$skip" ] || printf '%s\n' "${l#FIRST }" ;;
    "AGAIN "*) [ -z "$skip" ] || printf '%s\n' "${l#AGAIN }" ;;
    "FIRST_TIME_ONLY "*) f=${l#FIRST_TIME_ONLY }; if [ -e "$f" ]; then skip=1; else touch "$f"; fi ;;
    "HUGE "*) printf '{"type":"assistant","pad":"'; head -c "${l#HUGE }" /dev/zero | tr '\0' x; printf '"}\n' ;;
    *) printf '%s\n' "$l" ;;
  esac
done < "$0"
exit "$code""#;

/// The agent file of an agent whose `replay` runner reads its stream as `format`.
fn replay_toml(format: &str, extra: &str) -> String {
    format!(
        "[runners.replay]\nargv = [\"bash\", \"-c\", {script}, \"{{prompt_file}}\"]\nprompt = \"file\"\nformat = \"{format}\"\n{extra}",
        script = toml_string(REPLAY),
    )
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string is a TOML basic string")
}

async fn replay_agent(hub: &Hub, dir: &std::path::Path, format: &str) -> Agent {
    replay_agent_with(hub, dir, format, "").await
}

/// A replaying agent whose runner profile has `extra` TOML lines.
async fn replay_agent_with(hub: &Hub, dir: &std::path::Path, format: &str, extra: &str) -> Agent {
    let opts = AgentOpts { runners: &[], ..AgentOpts::default() };
    hub.agent_with_config("coder", dir, &replay_toml(format, extra), opts).await
}

fn lines(values: &[Value]) -> String {
    values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n")
}

async fn replay(hub: &Hub, stream: &str) -> String {
    hub.add_task(json!({ "prompt": stream, "runner": "replay", "max_attempts": 1 })).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claude_stream_becomes_steps_tokens_and_cost_with_the_latest_step_live() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = replay_agent(&hub, dir.path(), "claude").await;
    let gate = dir.path().join("go");
    let session = "5f0c7c1e-1111-4222-8333-944455556666";
    let head = lines(&[
        json!({"type":"system","subtype":"init","session_id":session,"model":"claude-test-1","tools":["Bash"]}),
        json!({"type":"assistant","session_id":session,"message":{"role":"assistant","content":[
            {"type":"text","text":"Running the tests first."},
            {"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"cargo test --workspace"}}]}}),
    ]);
    let tail = lines(&[
        json!({"type":"user","session_id":session,"message":{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"toolu_1","content":"test result: ok. 12 passed","is_error":false}]}}),
        json!({"type":"assistant","session_id":session,"message":{"role":"assistant","content":[
            {"type":"text","text":"All 12 tests pass."}]}}),
        json!({"type":"result","subtype":"success","is_error":false,"num_turns":2,"session_id":session,
            "result":"All 12 tests pass.","duration_ms":1234,"total_cost_usd":0.0123,
            "usage":{"input_tokens":1500,"output_tokens":230,"cache_read_input_tokens":9000,"cache_creation_input_tokens":400}}),
    ]);
    let stream = format!("{head}\nWAIT {}\n{tail}\n", path_str(&gate));
    let id = replay(&hub, &stream).await;

    // While the tool runs, the task shows it as its latest step.
    hub.wait_until("the tool use to show as the latest step", || async {
        let task = hub.task(&id).await;
        let latest = task["attempts_detail"][0]["latest_step"].as_str().unwrap_or_default().to_owned();
        latest.contains("Bash: cargo test --workspace").then_some(())
    })
    .await;
    let (code, shown, err) = hub.cli(&["task", "show", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("now           tool_use: Bash: cargo test --workspace"), "{shown}");
    let steps = hub.events(&format!("task={id}")).await;
    assert!(
        steps.iter().any(|e| e["kind"] == "task.step" && e["detail"] == "tool_use: Bash: cargo test --workspace"),
        "the timeline names the step: {steps:?}"
    );

    std::fs::write(&gate, "").unwrap();
    let task = hub.wait_state(&id, &["succeeded"]).await;
    let report = &task["attempts_detail"][0]["report"];
    assert_eq!(report["session_id"], session);
    assert_eq!(report["model"], "claude-test-1");
    assert_eq!(report["turns"], 2);
    assert_eq!(
        (
            &report["input_tokens"],
            &report["output_tokens"],
            &report["cache_read_tokens"],
            &report["cache_write_tokens"]
        ),
        (&json!(1500), &json!(230), &json!(9000), &json!(400))
    );
    assert_eq!(report["cost_usd"], 0.0123);
    assert_eq!((&report["tool_uses"], &report["tool_errors"]), (&json!(1), &json!(0)));
    assert_eq!(report["result"], "All 12 tests pass.");

    let page = hub.get(&format!("/tasks/{id}/steps")).await;
    let steps = page["steps"].as_array().expect("steps");
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["session", "text", "tool_use", "tool_result", "text", "result"]);
    let result = &steps[3];
    assert_eq!((&result["name"], &result["summary"]), (&json!("Bash"), &json!("test result: ok. 12 passed")));
    assert!(result["duration_ms"].as_u64().is_some(), "a tool result is timed from its use: {result}");
    assert_eq!(steps.iter().map(|s| s["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);

    let (code, table, err) = hub.cli(&["task", "steps", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("tool_result") && table.contains("test result: ok. 12 passed"), "{table}");
    let (_, shown, _) = hub.cli(&["task", "show", &id]).await;
    assert!(shown.contains("spent         11130 tokens, $0.012300"), "{shown}");
    assert!(shown.contains("tokens 1500 in, 230 out, 9000 cache read, 400 cache write · cost $0.012300"), "{shown}");
    assert!(shown.contains("last step     result: success: All 12 tests pass."), "{shown}");

    let (code, explained, err) = hub.cli(&["task", "explain", &id]).await;
    assert_eq!(code, 0, "{err}");
    for needle in [
        &format!("attempt 1 of {id} (replay runner, agent coder): succeeded at"),
        "why       the run exited 0 and its agent reported success",
        &format!("agent     claude-test-1 · session {session} · 2 turns"),
        "tokens    1500 in, 230 out, 9000 cache read, 400 cache write",
        "cost      $0.012300",
        "tool calls: 1 (0 failed)",
        "1. Bash: cargo test --workspace",
        "the agent's last word (success): All 12 tests pass.",
    ] {
        assert!(explained.contains(needle), "{needle:?} in:\n{explained}");
    }
    let (code, transcript, err) = hub.cli(&["task", "transcript", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("# attempt 1 of {id}:")), "{err}");
    let lines: Vec<Value> = transcript.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 5, "the whole stream, line for line: {transcript}");
    assert_eq!((&lines[0]["type"], &lines[4]["type"]), (&json!("system"), &json!("result")));
    let (code, _, err) = hub.cli(&["task", "explain", &id, "--attempt", "7"]).await;
    assert_eq!(code, 3, "no such attempt: {err}");

    // What it cost, summed, in the API, the CLI and the metrics.
    let (code, costs, err) = hub.cli(&["costs", "--by", "runner"]).await;
    assert_eq!(code, 0, "{err}");
    let row = costs.lines().find(|l| l.starts_with("replay")).unwrap_or_else(|| panic!("{costs}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["replay", "1", "1500", "230", "9000", "400", "0.012300"]);
    let (code, by_day, err) = hub.cli(&["costs", "--since", "1h", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let by_day: Value = serde_json::from_str(&by_day).unwrap();
    assert_eq!((&by_day["by"], &by_day["total"]["cost_usd"]), (&json!("day"), &json!(0.0123)), "{by_day}");
    let (status, bad) = hub.request(reqwest::Method::GET, "/costs?by=planet", None).await;
    assert_eq!((status, &bad["field"]), (400, &json!("by")), "{bad}");
    let metrics = reqwest::get(format!("{}/metrics", hub.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("muster_cost_usd_total{runner=\"replay\"} 0.0123"), "{metrics}");
    assert!(metrics.contains("muster_tokens_total{runner=\"replay\",kind=\"cache_read\"} 9000"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_verdict_or_a_broken_stream_decides_the_outcome_with_a_clear_reason() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = replay_agent(&hub, dir.path(), "claude").await;
    let init = json!({"type":"system","subtype":"init","session_id":"s-1","model":"m"}).to_string();

    // The process exits 0, but the agent says it gave up.
    let gave_up = json!({"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":40,
        "total_cost_usd":0.5,"usage":{"input_tokens":10,"output_tokens":5}});
    let id = replay(&hub, &format!("{init}\n{gave_up}\n")).await;
    let task = hub.wait_state(&id, &["failed"]).await;
    assert_eq!(task["reason"], "the agent reported error_max_turns", "{task}");
    assert_eq!(task["attempts_detail"][0]["report"]["cost_usd"], 0.5, "a failed run's cost is still counted");

    // Garbage, then a line cut off by the process ending.
    let id = replay(&hub, &format!("{init}\nnot json at all\nNOEOL {{\"type\":\"assistant\",\"mess\n")).await;
    let task = hub.wait_state(&id, &["failed"]).await;
    assert_eq!(
        task["reason"], "exit code 0, but the stream was cut off mid-line, before the agent's final report",
        "{task}"
    );
    let page = hub.get(&format!("/tasks/{id}/steps")).await;
    let unreadable: Vec<&Value> =
        page["steps"].as_array().unwrap().iter().filter(|s| s["kind"] == "unreadable").collect();
    assert_eq!(unreadable.len(), 2, "both bad lines are recorded: {page}");
    assert!(unreadable.iter().all(|s| s["is_error"] == true && s["summary"].as_str().unwrap().starts_with("not JSON")));
    assert_eq!(task["attempts_detail"][0]["report"]["session_id"], "s-1", "what could be read is kept");

    // A crash before any report: the exit code, and the agent's last error.
    let error = json!({"type":"assistant","message":{"content":[{"type":"text","text":"starting"}]}});
    let id = replay(&hub, &format!("{init}\n{error}\nEXIT 3\n")).await;
    let task = hub.wait_state(&id, &["failed"]).await;
    assert_eq!((&task["reason"], &task["exit_code"]), (&json!("exit code 3"), &json!(3)), "{task}");

    // A line far past the limit is skipped whole, not buffered, and the run goes on.
    let huge = format!("HUGE {}", 5 << 20);
    let ok = json!({"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"fine"});
    let id = replay(&hub, &format!("{init}\n{huge}\n{ok}\n")).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    let page = hub.get(&format!("/tasks/{id}/steps")).await;
    let skipped = page["steps"].as_array().unwrap().iter().find(|s| s["kind"] == "unreadable").expect("a skipped line");
    assert!(skipped["summary"].as_str().unwrap().contains("over the 4194304-byte limit"), "{skipped}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_codex_stream_is_read_into_the_same_record() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = replay_agent(&hub, dir.path(), "codex").await;
    let stream = lines(&[
        json!({"type":"thread.started","thread_id":"th-9"}),
        json!({"type":"turn.started"}),
        json!({"type":"item.started","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","status":"in_progress"}}),
        json!({"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"README.md\n","exit_code":0,"status":"completed"}}),
        json!({"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"The repository has a README."}}),
        json!({"type":"turn.completed","usage":{"input_tokens":600,"cached_input_tokens":200,"output_tokens":80}}),
    ]);
    let id = replay(&hub, &format!("{stream}\n")).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    let report = &task["attempts_detail"][0]["report"];
    assert_eq!((&report["session_id"], &report["turns"]), (&json!("th-9"), &json!(1)));
    assert_eq!((&report["input_tokens"], &report["output_tokens"]), (&json!(400), &json!(80)), "cached input apart");
    assert_eq!(report["cache_read_tokens"], 200);
    assert_eq!(report["cost_usd"], Value::Null, "Codex reports no cost");
    assert_eq!(report["result"], "The repository has a README.");
    let page = hub.get(&format!("/tasks/{id}/steps")).await;
    let kinds: Vec<&str> = page["steps"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["session", "tool_use", "tool_result", "text", "result"]);
    let (_, shown, _) = hub.cli(&["task", "show", &id]).await;
    assert!(shown.contains("cost not reported"), "{shown}");
    assert!(shown.contains("(some runs reported no cost)"), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_run_turns_quiet_then_wedged_and_is_killed_and_retried() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent =
        replay_agent_with(&hub, dir.path(), "claude", "quiet_after = \"300ms\"\nwedged_after = \"3s\"\n").await;
    let marker = dir.path().join("wedged-once");
    let never = dir.path().join("never");
    let init = json!({"type":"system","subtype":"init","session_id":"s-1","model":"m"}).to_string();
    let done = json!({"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok"}).to_string();
    // The first attempt goes silent for good; the second finishes at once.
    let stream = format!("{init}\nFIRST_TIME_ONLY {}\nWAIT {}\n{done}\n", path_str(&marker), path_str(&never));
    let id = hub.add_task(json!({ "prompt": stream, "runner": "replay", "max_attempts": 2 })).await;

    let quiet = hub
        .wait_until("the run to turn quiet", || async {
            let events = hub.events(&format!("task={id}")).await;
            events
                .into_iter()
                .find(|e| e["kind"] == "task.live" && e["detail"].as_str().is_some_and(|d| d.starts_with("quiet")))
        })
        .await;
    // Quiet after 300 ms, and before the 3 s that make it wedged; seconds as counted then.
    let secs = silent_for(quiet["detail"].as_str().unwrap_or_default(), "quiet: no output for ");
    assert!(secs < 3, "{quiet}");
    let (_, shown, _) = hub.cli(&["task", "show", &id]).await;
    assert!(shown.contains("live          quiet (no output for"), "{shown}");

    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "the retry ran: {task}");
    let first = &task["attempts_detail"][0];
    assert_eq!(first["outcome"], "failed", "{first}");
    // Wedged once silent for 3 s, counted when the agent next looked.
    let wedged = first["reason"].as_str().unwrap_or_default();
    assert!((3..30).contains(&silent_for(wedged, "wedged: no output for ")), "{first}");
    assert_eq!(first["live"], "done");
    assert_eq!(task["attempts_detail"][1]["outcome"], "succeeded");
    let events = hub.events(&format!("task={id}")).await;
    assert!(
        events.iter().any(|e| e["kind"] == "task.retry_scheduled"
            && e["detail"].as_str().is_some_and(|d| d.starts_with(wedged))),
        "the wedged attempt is retried: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_asking_a_person_shows_as_waiting() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = replay_agent_with(&hub, dir.path(), "claude", "quiet_after = \"30s\"\n").await;
    let gate = dir.path().join("answered");
    let ask = json!({"type":"assistant","message":{"content":[{"type":"tool_use","id":"toolu_ask","name":"AskUserQuestion",
        "input":{"questions":[{"question":"Which database?"}]}}]}});
    let answered = json!({"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"toolu_ask","content":"PostgreSQL"}]}});
    let done = json!({"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"ok"});
    let stream = format!("{ask}\nWAIT {}\n{answered}\n{done}\n", path_str(&gate));
    let id = hub.add_task(json!({ "prompt": stream, "runner": "replay", "max_attempts": 1 })).await;
    hub.wait_until("the run to wait for a person", || async {
        let task = hub.task(&id).await;
        (task["attempts_detail"][0]["live"] == "waiting").then_some(())
    })
    .await;
    let (_, shown, _) = hub.cli(&["task", "show", &id]).await;
    assert!(shown.contains("live          waiting (the agent asked a person for input)"), "{shown}");
    std::fs::write(&gate, "").unwrap();
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    let lives: Vec<String> = hub
        .events(&format!("task={id}"))
        .await
        .iter()
        .filter(|e| e["kind"] == "task.live")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(lives[0], "waiting: the agent asked a person for input", "{lives:?}");
    assert!(lives[1..].iter().all(|l| l == "working"), "once answered it works on: {lives:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_leave_the_agent_in_output_steps_reports_or_diffs() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-value-0123456789";
    let opts = AgentOpts {
        runners: &[],
        env: vec![("MY_SERVICE_API_KEY".to_owned(), secret.to_owned())],
        ..AgentOpts::default()
    };
    let toml = replay_toml("claude", "env = [\"MY_SERVICE_API_KEY\"]\n");
    let _agent = hub.agent_with_config("coder", dir.path(), &toml, opts).await;
    let bearer = "Bearer abcdefghijklmnopqrstuvwxyz0123";
    let stream = lines(&[
        json!({"type":"system","subtype":"init","session_id":"s-1","model":"m"}),
        json!({"type":"assistant","message":{"content":[
            {"type":"text","text":format!("the key is {secret}")},
            {"type":"tool_use","id":"t1","name":"Bash","input":{"command":format!("curl -H 'Authorization: {bearer}' x")}}]}}),
        json!({"type":"result","subtype":"success","is_error":false,"num_turns":1,
            "result":format!("done with sk-ant-api03-{}", "Z".repeat(40))}),
    ]);
    // The prompt itself holds the secrets (it is what the runner replays); the
    // hub keeps prompts as given, so look only at what the run sent back.
    let id = replay(&hub, &format!("{stream}\n")).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    let output = hub.output(&id).await;
    let steps = hub.get(&format!("/tasks/{id}/steps")).await.to_string();
    let report = task["attempts_detail"][0]["report"].to_string();
    for (what, text) in [("output", &output), ("steps", &steps), ("report", &report)] {
        assert!(!text.contains(secret), "{what} holds the run's secret: {text}");
        assert!(!text.contains("abcdefghijklmnopqrstuvwxyz0123"), "{what} holds the bearer token: {text}");
        assert!(!text.contains("ZZZZZZZZZZ"), "{what} holds the API key: {text}");
        assert!(text.contains("[REDACTED]"), "{what} says what was redacted: {text}");
    }
    assert!(steps.contains("Authorization: Bearer [REDACTED]"), "{steps}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_limit_requeues_the_task_without_spending_an_attempt_and_dispatch_resumes_after_the_reset() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = replay_agent(&hub, dir.path(), "claude").await;
    let marker = dir.path().join("limited-once");
    let reset = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3;
    let limit = json!({"type":"result","subtype":"success","is_error":true,"num_turns":1,
        "result":format!("Claude AI usage limit reached|{reset}"),"usage":{"input_tokens":12,"output_tokens":0}});
    let ok = json!({"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done"});
    let init = json!({"type":"system","subtype":"init","session_id":"s-1","model":"m"});
    let stream = format!("{init}\nFIRST_TIME_ONLY {}\nFIRST {limit}\nAGAIN {ok}\n", path_str(&marker));
    // One attempt allowed: were the limit to spend it, the task would fail.
    let id = replay(&hub, &stream).await;
    let limited = hub
        .wait_until("the limit to be recorded", || async {
            hub.events(&format!("task={id}")).await.into_iter().find(|e| e["kind"] == "task.limited")
        })
        .await;
    assert!(
        limited["detail"].as_str().unwrap().starts_with(&format!("Claude AI usage limit reached|{reset}")),
        "{limited}"
    );
    let (_, list, _) = hub.cli(&["runner", "list"]).await;
    assert!(list.lines().any(|l| l.starts_with("replay") && l.contains("limited") && l.contains("until")), "{list}");

    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    let attempts = task["attempts_detail"].as_array().unwrap();
    assert_eq!(
        (attempts[0]["outcome"].as_str(), attempts[1]["outcome"].as_str()),
        (Some("limited"), Some("succeeded"))
    );
    assert_eq!(attempts[0]["report"]["input_tokens"], 12, "what the limited run used is still counted");
    assert_eq!(
        (&task["attempts"], &task["max_attempts"]),
        (&json!(1), &json!(1)),
        "the limited attempt was given back"
    );
    let started = chrono_ms(attempts[1]["started_at"].as_str().unwrap());
    assert!(started >= (reset as i64) * 1000, "the next run waited for the reset");
    let kinds: Vec<String> =
        hub.events("").await.iter().map(|e| e["kind"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(kinds.iter().any(|k| k == "runner.limited"), "{kinds:?}");
}

/// The whole seconds in `PREFIX` followed by `Ns`, as the agent words silence.
fn silent_for(text: &str, prefix: &str) -> u64 {
    text.strip_prefix(prefix)
        .and_then(|d| d.split_whitespace().next())
        .and_then(|d| d.strip_suffix('s'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text:?} is not {prefix:?} and a number of seconds"))
}

/// Milliseconds since the epoch of an RFC 3339 timestamp as the hub writes them.
fn chrono_ms(text: &str) -> i64 {
    let t = humantime::parse_rfc3339(text).expect("an RFC 3339 timestamp");
    t.duration_since(std::time::UNIX_EPOCH).expect("after the epoch").as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_passes_its_budget_is_stopped_with_reason_budget() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = replay_agent(&hub, dir.path(), "claude").await;
    let never = dir.path().join("never");
    let init = json!({"type":"system","subtype":"init","session_id":"s-1","model":"claude-sonnet-4-5"}).to_string();
    let turn = |id: &str, input: u64| {
        json!({"type":"assistant","message":{"id":id,"content":[{"type":"text","text":"thinking"}],
            "usage":{"input_tokens":input,"output_tokens":10}}})
        .to_string()
    };

    // A token ceiling: the second turn passes it, and the run, waiting for more, is stopped.
    let stream = format!("{init}\n{}\n{}\nWAIT {}\n", turn("m1", 400), turn("m2", 900), path_str(&never));
    let (code, id, err) =
        hub.cli(&["task", "add", "--runner", "replay", "--max-tokens", "1000", "--max-attempts", "1", &stream]).await;
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    let task = hub.wait_state(&id, &["failed", "succeeded"]).await;
    assert_eq!(task["reason"], "budget: used 1320 tokens; the task allows 1000 a run", "{task}");
    let (_, shown, _) = hub.cli(&["task", "show", &id]).await;
    assert!(shown.contains("budget        1000 tokens per run"), "{shown}");

    // A cost ceiling, estimated from the model's list prices while it runs.
    let stream = format!("{init}\n{}\nWAIT {}\n", turn("m1", 1_000_000), path_str(&never));
    let id =
        hub.add_task(json!({ "prompt": stream, "runner": "replay", "max_cost_usd": 1.0, "max_attempts": 1 })).await;
    let task = hub.wait_state(&id, &["failed", "succeeded"]).await;
    assert_eq!(
        task["reason"], "budget: spent $3.0002 (estimated from its tokens); the task allows $1.0000 a run",
        "{task}"
    );
    let (status, bad) = hub.post("/tasks", json!({ "prompt": "x", "runner": "replay", "max_cost_usd": -2 })).await;
    assert_eq!((status, &bad["field"]), (400, &json!("max_cost_usd")), "{bad}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_past_its_daily_budget_rests_until_an_operator_raises_it() {
    let hub = Hub::start_with(crate::harness::HubOpts { alert_interval: "100ms", ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = replay_agent(&hub, dir.path(), "claude").await;
    let (code, _, err) = hub.cli(&["config", "set", "budget.daily_per_runner=replay=0.01"]).await;
    assert_eq!(code, 0, "{err}");
    let spend = json!({"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok",
        "total_cost_usd":0.008,"usage":{"input_tokens":10,"output_tokens":1}});
    let stream = format!("{spend}\n");
    for _ in 0..2 {
        let id = replay(&hub, &stream).await;
        hub.wait_state(&id, &["succeeded"]).await;
    }
    let rests = |status: &'static str| {
        let hub = &hub;
        async move {
            let runners = hub.get("/runners").await;
            let r = runners.as_array()?.iter().find(|r| r["name"] == "replay")?.clone();
            (r["status"] == status).then_some(r)
        }
    };
    let limited = hub.wait_until("replay to rest for its budget", || rests("limited")).await;
    assert_eq!(limited["disabled_reason"], "daily budget reached: $0.02 of $0.01 spent today on replay", "{limited}");
    assert_eq!(limited["disabled_by"], "budget");
    let alert = hub
        .wait_until("budget_reached to fire", || async {
            let alerts = hub.get("/alerts").await;
            alerts.as_array()?.iter().find(|a| a["rule"] == "budget_reached" && a["state"] == "firing").cloned()
        })
        .await;
    assert!(alert["detail"].as_str().unwrap().contains("replay (daily budget reached"), "{alert}");

    let waiting = replay(&hub, &stream).await;
    let (code, _, err) = hub.cli(&["config", "set", "budget.daily_per_runner=replay=1"]).await;
    assert_eq!(code, 0, "{err}");
    hub.wait_state(&waiting, &["succeeded"]).await;
    assert!(hub.events("").await.iter().any(|e| e["kind"] == "runner.enabled" && e["detail"] == "replay (by budget)"));

    // A fleet ceiling rests every runner.
    let (code, _, err) = hub.cli(&["config", "set", "budget.daily=0.01"]).await;
    assert_eq!(code, 0, "{err}");
    let limited = hub.wait_until("the fleet to rest", || rests("limited")).await;
    assert_eq!(limited["disabled_reason"], "fleet daily budget reached: $0.02 of $0.01 spent today", "{limited}");
    let (code, _, err) = hub.cli(&["config", "set", "budget.daily=five"]).await;
    assert_eq!(code, 2, "a bad amount is refused: {err}");
    let (code, _, err) = hub.cli(&["config", "reset", "budget.daily"]).await;
    assert_eq!(code, 0, "{err}");
    hub.wait_until("the fleet to work again", || rests("available")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generic_runner_gets_a_summary_from_a_pattern_or_a_json_path() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
[runners.lint]
argv = ["bash", "{prompt_file}"]
prompt = "file"
summary_pattern = '(?m)^RESULT: (.*)$'

[runners.report]
argv = ["bash", "{prompt_file}"]
prompt = "file"
summary_json = "/summary/text"
"#;
    let opts = AgentOpts { runners: &[], ..AgentOpts::default() };
    let _agent = hub.agent_with_config("coder", dir.path(), toml, opts).await;

    let id = hub
        .add_task(json!({ "prompt": "echo RESULT: 3 warnings\necho noise\necho RESULT: 2 warnings", "runner": "lint" }))
        .await;
    let task = hub.wait_state(&id, &["succeeded"]).await;
    assert_eq!(task["attempts_detail"][0]["summary"], "2 warnings", "the last match wins: {task}");
    let (_, shown, _) = hub.cli(&["task", "show", &id]).await;
    assert!(shown.contains("attempt 1: summary: 2 warnings"), "{shown}");

    let script =
        r#"echo '{"summary":{"text":"early"}}'; echo '{"summary":{"text":"all 40 checks passed"}}'; echo done"#;
    let id = hub.add_task(json!({ "prompt": script, "runner": "report" })).await;
    let task = hub.wait_state(&id, &["succeeded"]).await;
    assert_eq!(task["attempts_detail"][0]["summary"], "all 40 checks passed", "{task}");
}
