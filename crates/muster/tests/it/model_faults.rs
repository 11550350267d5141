//! The real Claude Code and Codex CLIs meeting a model API that fails the
//! way the providers do: credentials refused, rate limited, overloaded, a
//! stream cut in the middle, a stream that stalls, a request never answered.
//! What the CLIs print then is what Muster reads, so these tests pin its
//! readers to the CLIs' real words: a change in them fails here.
//!
//! The fleets run with `Patience::Short` (the CLIs' own retries few, their
//! timeouts and the agent's wedged limit near) so that each path ends in
//! seconds, not the minutes of the shipped settings. A fleet sees at most
//! four failures in a row, below the circuit breakers' five.

use crate::agents::{Cli, Fleet, Patience, clis};
use crate::models::{Fault, Reply, ScriptedModel};
use serde_json::{Value, json};

/// The fleet runs a task once, with the model failing by `fault` (or not);
/// the task once it has ended, and its steps.
async fn run(fleet: &Fleet, cli: Cli, model: &ScriptedModel, fault: Option<Fault>) -> (Value, Vec<Value>) {
    model.fail(fault);
    let hub = &fleet.hub;
    let prompt = format!("say hello ({fault:?})");
    let id = hub.add_task(json!({ "prompt": prompt, "runner": cli.runner(), "repo": "web", "max_attempts": 1 })).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    let steps = hub.get(&format!("/tasks/{id}/steps")).await["steps"].as_array().cloned().unwrap_or_default();
    (task, steps)
}

/// The `retry` steps: each one's name and summary.
fn retries(steps: &[Value]) -> Vec<(String, String)> {
    steps
        .iter()
        .filter(|s| s["kind"] == "retry")
        .map(|s| {
            (s["name"].as_str().unwrap_or_default().to_owned(), s["summary"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// The failure's reason, checked to start with `start` and to hold `words`.
fn failed_with(task: &Value, start: &str, words: &str) {
    assert_eq!(task["state"], "failed", "{task}");
    let reason = task["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with(start) && reason.contains(words), "wanted {start:?} … {words:?}: {reason}");
    assert_eq!(task["attempts_detail"][0]["outcome"], "failed", "{task}");
}

/// The `task.live` details of a task, in order.
async fn live(fleet: &Fleet, id: &str) -> Vec<String> {
    let events = fleet.hub.events(&format!("task={id}")).await;
    events.iter().filter(|e| e["kind"] == "task.live").filter_map(|e| e["detail"].as_str().map(str::to_owned)).collect()
}

fn id(task: &Value) -> String {
    task["id"].as_str().expect("a task id").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_meets_a_refused_key_an_overloaded_model_a_cut_stream_and_no_answer_and_says_why_each_run_failed() {
    let test = "model_faults::claude_code_meets_a_refused_key_an_overloaded_model_a_cut_stream_and_no_answer_and_says_why_each_run_failed";
    let Some(bin) = clis(test) else { return };
    let model = ScriptedModel::start(Cli::Claude.api(), vec![Reply::Text("Hello.")]).await;
    let fleet = Fleet::start(Cli::Claude, &bin, &model, Patience::Short).await;
    let retried = |what: &str, failed: &str| {
        vec![
            (what.to_owned(), format!("the model API failed ({failed}); try 1 of 2 in ")),
            (what.to_owned(), format!("the model API failed ({failed}); try 2 of 2 in ")),
        ]
    };
    // Claude Code's retries, its delay cut off (it has jitter).
    let retried_as = |steps: &[Value]| -> Vec<(String, String)> {
        retries(steps)
            .into_iter()
            .map(|(what, s)| (what, s[..s.rfind(" in ").map_or(s.len(), |i| i + 4)].to_owned()))
            .collect()
    };

    // The key refused: Claude Code tries twice more, then gives up in its own words.
    let (task, steps) = run(&fleet, Cli::Claude, &model, Some(Fault::Refused)).await;
    failed_with(&task, "exit code 1; the agent reported an error: ", "Invalid API key");
    assert_eq!(retried_as(&steps), retried("401", "401 authentication_failed"), "{steps:?}");
    assert_eq!(model.faulted(Fault::Refused), 3, "a request and its two retries");
    let (code, explained, err) = fleet.hub.cli(&["task", "explain", &id(&task)]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        explained.contains("  - retry: the model API failed (401 authentication_failed); try 1 of 2 in "),
        "{explained}"
    );

    let (task, steps) = run(&fleet, Cli::Claude, &model, Some(Fault::Overloaded)).await;
    failed_with(&task, "exit code 1; the agent reported an error: ", "529 Overloaded");
    assert_eq!(retried_as(&steps), retried("529", "529 overloaded"), "{steps:?}");

    // A stream cut in the middle: Claude Code says so, and Muster with it.
    let (task, _) = run(&fleet, Cli::Claude, &model, Some(Fault::Cut)).await;
    failed_with(&task, "exit code 1; the agent reported an error: ", "Connection lost mid-response");

    // No answer at all: Claude Code's own timeout (API_TIMEOUT_MS) ends each
    // try. The run turned quiet while it waited, and was never wedged.
    let (task, steps) = run(&fleet, Cli::Claude, &model, Some(Fault::Silent)).await;
    failed_with(&task, "exit code 1; the agent reported an error: ", "Request timed out");
    assert_eq!(retried_as(&steps), retried("unknown", "unknown"), "{steps:?}");
    let live = live(&fleet, &id(&task)).await;
    assert!(live.iter().any(|d| d.starts_with("quiet: no output for ")), "{live:?}");

    // The model answers again: so does the fleet.
    let (task, steps) = run(&fleet, Cli::Claude, &model, None).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert!(retries(&steps).is_empty(), "{steps:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_stalled_mid_stream_turns_quiet_then_wedged_and_rate_limited_gives_back_its_attempt() {
    let test =
        "model_faults::claude_code_stalled_mid_stream_turns_quiet_then_wedged_and_rate_limited_gives_back_its_attempt";
    let Some(bin) = clis(test) else { return };
    let model = ScriptedModel::start(Cli::Claude.api(), vec![Reply::Text("Hello.")]).await;
    let fleet = Fleet::start(Cli::Claude, &bin, &model, Patience::Short).await;

    // Claude Code waits on a stalled stream for ever; Muster does not.
    let (task, _) = run(&fleet, Cli::Claude, &model, Some(Fault::Stall)).await;
    failed_with(&task, "wedged: no output for ", "");
    let live = live(&fleet, &id(&task)).await;
    assert!(live.first().is_some_and(|d| d.starts_with("quiet: no output for ")), "quiet before wedged: {live:?}");
    assert_eq!(model.faulted(Fault::Stall), 1, "the stalled request was the only one");

    rate_limited(&fleet, Cli::Claude, &model, "API Error: Request rejected (429)").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_meets_a_refused_key_an_overloaded_model_a_cut_stream_and_a_stalled_one_and_says_why_each_run_failed() {
    let test = "model_faults::codex_meets_a_refused_key_an_overloaded_model_a_cut_stream_and_a_stalled_one_and_says_why_each_run_failed";
    let Some(bin) = clis(test) else { return };
    let model = ScriptedModel::start(Cli::Codex.api(), vec![Reply::Text("Hello.")]).await;
    let fleet = Fleet::start(Cli::Codex, &bin, &model, Patience::Short).await;
    let cases = [
        // A request and its one retry; an overloaded model's 503 is also
        // retried once more at the HTTP layer each time.
        (Fault::Refused, 2, "401", "unexpected status 401 Unauthorized: Incorrect API key provided"),
        (Fault::Overloaded, 4, "503", "unexpected status 503 Service Unavailable: The server is overloaded"),
        (Fault::Cut, 2, "stream disconnected before completion", "stream closed before response.completed"),
        // Codex's own idle timeout (stream_idle_timeout_ms) ends a stalled stream.
        (Fault::Stall, 2, "stream disconnected before completion", "idle timeout waiting for SSE"),
    ];
    for (fault, requests, what, words) in cases {
        let (task, steps) = run(&fleet, Cli::Codex, &model, Some(fault)).await;
        failed_with(&task, "exit code 1; the agent reported turn_failed: ", words);
        let retried = retries(&steps);
        assert_eq!(retried.len(), 1, "{fault:?}: {steps:?}");
        assert_eq!(retried[0].0, what, "{fault:?}: {steps:?}");
        assert!(retried[0].1.contains(words) && retried[0].1.ends_with("; try 1 of 1"), "{fault:?}: {retried:?}");
        // The failure is one error step, not one per line that repeats it.
        let errors =
            steps.iter().filter(|s| s["kind"] == "error" && s["summary"].as_str().unwrap_or("").contains(words));
        assert_eq!(errors.count(), 1, "{fault:?}: {steps:?}");
        assert_eq!(model.faulted(fault), requests, "{fault:?}: the requests Codex made");
    }
    let (task, steps) = run(&fleet, Cli::Codex, &model, None).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert!(retries(&steps).is_empty(), "{steps:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_never_answered_turns_quiet_then_wedged_and_rate_limited_gives_back_its_attempt() {
    let test = "model_faults::codex_never_answered_turns_quiet_then_wedged_and_rate_limited_gives_back_its_attempt";
    let Some(bin) = clis(test) else { return };
    let model = ScriptedModel::start(Cli::Codex.api(), vec![Reply::Text("Hello.")]).await;
    let fleet = Fleet::start(Cli::Codex, &bin, &model, Patience::Short).await;

    // Codex waits for a response's head for ever; Muster does not.
    let (task, _) = run(&fleet, Cli::Codex, &model, Some(Fault::Silent)).await;
    failed_with(&task, "wedged: no output for ", "");
    let live = live(&fleet, &id(&task)).await;
    assert!(live.first().is_some_and(|d| d.starts_with("quiet: no output for ")), "quiet before wedged: {live:?}");
    assert_eq!(model.faulted(Fault::Silent), 1, "the unanswered request was the only one");

    rate_limited(&fleet, Cli::Codex, &model, "exceeded retry limit, last status: 429 Too Many Requests").await;
}

/// A rate-limited run goes back to the queue without spending its one
/// attempt, and its runner rests. Neither CLI says when the limit resets, so
/// the hub's default wait applies; the task is cancelled rather than waited for.
async fn rate_limited(fleet: &Fleet, cli: Cli, model: &ScriptedModel, said: &str) {
    let hub = &fleet.hub;
    model.fail(Some(Fault::RateLimited { reset_s: 2 }));
    let id =
        hub.add_task(json!({ "prompt": "say hello", "runner": cli.runner(), "repo": "web", "max_attempts": 1 })).await;
    let limited = hub
        .wait_until("the limit", || async {
            hub.events(&format!("task={id}")).await.into_iter().find(|e| e["kind"] == "task.limited")
        })
        .await;
    assert!(limited["detail"].as_str().is_some_and(|d| d.starts_with(said)), "{limited}");
    let task = hub.task(&id).await;
    assert_eq!(
        (&task["state"], &task["attempts"]),
        (&json!("queued"), &json!(0)),
        "the attempt was given back: {task}"
    );
    assert_eq!(task["attempts_detail"][0]["outcome"], "limited", "{task}");
    let steps = hub.get(&format!("/tasks/{id}/steps")).await["steps"].as_array().cloned().unwrap_or_default();
    assert!(retries(&steps).iter().all(|(what, _)| what == "429") && !retries(&steps).is_empty(), "{steps:?}");
    let (_, list, _) = hub.cli(&["runner", "list"]).await;
    let line = list.lines().find(|l| l.starts_with(cli.runner())).unwrap_or_default();
    assert!(line.contains("limited") && line.contains("until"), "{list}");
    let (code, _, err) = hub.cli(&["task", "cancel", &id]).await;
    assert_eq!(code, 0, "{err}");
}
