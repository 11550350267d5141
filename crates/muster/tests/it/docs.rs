//! The `jq` queries the docs give for reading logs, events and the OpenAPI
//! document, run against what a real hub writes and serves: each must run cleanly and find the lines it is
//! meant to find. (That every quoted `muster` command parses is checked by
//! the binary's own unit tests, which can reach its argument parser.)

use crate::harness::{Hub, agent_socket};
use futures_util::SinkExt;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;

/// One `jq` invocation from the docs.
#[derive(Debug)]
struct Query {
    place: String,
    /// `jq`'s options and its filter, as written.
    args: Vec<String>,
    /// What it reads.
    input: Input,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    /// The hub's log file.
    Log,
    /// `muster events --json`.
    Events,
    /// `/api/v1/openapi.json`.
    OpenApi,
}

fn queries() -> Vec<Query> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    let mut files = vec![root.join("README.md")];
    files.extend(std::fs::read_dir(root.join("docs")).expect("docs/").map(|e| e.expect("an entry").path()));
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|x| x == "md")) {
        let text = std::fs::read_to_string(&path).expect("a readable doc");
        let name = path.file_name().expect("a name").to_string_lossy().into_owned();
        let mut in_shell = false;
        for (n, line) in text.lines().enumerate() {
            if let Some(info) = line.trim_start().strip_prefix("```") {
                in_shell = !in_shell && matches!(info.trim(), "sh" | "bash");
                continue;
            }
            if !in_shell {
                continue;
            }
            let Some(at) = line.find("jq ").filter(|&i| i == 0 || line[..i].ends_with(' ')) else { continue };
            let words = shlex::split(&line[at..]).unwrap_or_else(|| panic!("{name}:{}: unbalanced quotes", n + 1));
            // Options, then the filter; file names and pipes after it are the reader's.
            let filter_at = words.iter().skip(1).position(|w| !w.starts_with('-')).expect("a filter") + 1;
            found.push(Query {
                place: format!("{name}:{}", n + 1),
                args: words[1..=filter_at].to_vec(),
                input: if line[..at].contains("muster events --json") {
                    Input::Events
                } else if line[..at].contains("/api/v1/openapi.json") {
                    Input::OpenApi
                } else {
                    Input::Log
                },
            });
        }
    }
    found
}

/// Replaces the docs' example ids in a filter with ones this run produced.
fn with_real_ids(filter: &str, task: &str, request: &str) -> String {
    let mut out = String::new();
    for (i, part) in filter.split('"').enumerate() {
        if i > 0 {
            out.push('"');
        }
        let example_request = part.len() == 16 && part.bytes().all(|b| b.is_ascii_hexdigit());
        out.push_str(match part {
            p if i % 2 == 1 && p.starts_with("t_") => task,
            _ if i % 2 == 1 && example_request => request,
            p => p,
        });
    }
    out
}

async fn jq(args: &[String], input: &str) -> (i32, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cmd = tokio::process::Command::new("jq");
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut group =
        muster_agent::process::ProcessGroup::spawn(&mut cmd).expect("jq runs (Debian package jq; .ci/run installs it)");
    let mut stdin = group.child_mut().stdin.take().expect("stdin");
    let mut stdout = group.child_mut().stdout.take().expect("stdout");
    let mut stderr = group.child_mut().stderr.take().expect("stderr");
    let (mut out, mut err) = (String::new(), String::new());
    let feed = async {
        stdin.write_all(input.as_bytes()).await.expect("input written");
        drop(stdin);
    };
    let (_, a, b) = tokio::join!(feed, stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
    a.expect("stdout");
    b.expect("stderr");
    let status = group.wait().await.expect("jq exits");
    (status.code().unwrap_or(-1), out, err)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_jq_query_in_the_docs_finds_its_lines_in_real_output() {
    let queries = queries();
    assert!(queries.len() >= 5, "the docs' jq queries were not found: {queries:?}");

    // A hub that has done what the queries look for: a task run, one
    // cancelled through the API, a stale report refused, a compaction.
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let done = hub.shell_task("echo hi").await;
    hub.wait_state(&done, &["succeeded"]).await;
    let held = hub.add_task(json!({ "prompt": "echo never", "runner": "shell", "capabilities": ["gpu"] })).await;
    let (code, _, err) = hub.cli(&["task", "cancel", &held]).await;
    assert_eq!(code, 0, "{err}");
    let token = hub.add_agent("ghost", &[]).await;
    let mut ghost = agent_socket(&hub, &token).await;
    let report = json!({
        "type": "finished", "task": done, "epoch": 1, "outcome": "succeeded",
        "exit_code": 0, "reason": null, "output_truncated": false,
    });
    ghost.send(tokio_tungstenite::tungstenite::Message::text(report.to_string())).await.expect("sent");
    hub.wait_until("the stale report to be refused", || async {
        hub.events(&format!("task={done}")).await.into_iter().find(|e| e["kind"] == "task.stale_report")
    })
    .await;
    let (code, _, err) = hub.cli(&["compact"]).await;
    assert_eq!(code, 0, "{err}");

    let log = std::fs::read_to_string(hub.dir.path().join("logs").join("muster.log")).expect("the hub's log file");
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).expect("a JSON log line")).collect();
    let request = lines
        .iter()
        .find(|l| l["task_id"] == held.as_str() && l["span"]["request_id"].is_string())
        .unwrap_or_else(|| panic!("no request line about {held} in\n{log}"))["span"]["request_id"]
        .as_str()
        .expect("a request id")
        .to_owned();
    let (code, events, err) = hub.cli(&["events", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let openapi = reqwest::get(format!("{}/api/v1/openapi.json", hub.url))
        .await
        .expect("the OpenAPI document")
        .text()
        .await
        .expect("its text");
    assert!(queries.iter().any(|q| q.input == Input::OpenApi), "the docs read the OpenAPI document");

    for q in &queries {
        let mut args = q.args.clone();
        let filter = args.last_mut().expect("a filter");
        *filter = with_real_ids(filter, &done, &request);
        let input = match q.input {
            Input::Log => &log,
            Input::Events => &events,
            Input::OpenApi => &openapi,
        };
        let (code, out, err) = jq(&args, input).await;
        assert_eq!(code, 0, "{}: jq {args:?} failed: {err}", q.place);
        assert!(!out.trim().is_empty(), "{}: jq {args:?} found nothing in real output", q.place);
        // Found means real values: not `null`, and not an empty string or object.
        for line in out.lines() {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned()));
            let empty = match &value {
                Value::Null => true,
                Value::String(s) => s.trim().is_empty(),
                Value::Object(o) => o.values().all(Value::is_null),
                _ => false,
            };
            assert!(!empty, "{}: jq {args:?} printed {line:?}, not a real value", q.place);
        }
    }
}
