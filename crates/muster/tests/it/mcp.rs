//! `muster mcp`: the Model Context Protocol over stdio, spoken by the test
//! itself line by line, acting for a real run's task.

use crate::harness::Hub;
use serde_json::{Value, json};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

struct Mcp {
    group: muster_agent::process::ProcessGroup,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next: i64,
}

impl Mcp {
    fn start(url: &str, token: &str) -> Mcp {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_muster"));
        cmd.arg("mcp")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MUSTER_URL", url)
            .env("MUSTER_TASK_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut group = muster_agent::process::ProcessGroup::spawn(&mut cmd).expect("muster mcp starts");
        let stdin = group.child_mut().stdin.take().expect("stdin");
        let stdout = BufReader::new(group.child_mut().stdout.take().expect("stdout")).lines();
        Mcp { group, stdin, stdout, next: 1 }
    }

    async fn send(&mut self, msg: Value) {
        let mut line = msg.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.expect("written");
    }

    /// Sends a request and returns its response (skipping notifications).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })).await;
        loop {
            let line = tokio::time::timeout(std::time::Duration::from_secs(60), self.stdout.next_line())
                .await
                .expect("an answer in time")
                .expect("readable")
                .expect("a line");
            let msg: Value = serde_json::from_str(&line).expect("JSON");
            if msg["id"] == id {
                return msg;
            }
        }
    }

    async fn call(&mut self, tool: &str, args: Value) -> (bool, String) {
        let r = self.request("tools/call", json!({ "name": tool, "arguments": args })).await;
        let result = &r["result"];
        let text = result["content"][0]["text"].as_str().unwrap_or_default().to_owned();
        (result["isError"].as_bool().unwrap_or(false), text)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_server_answers_initialize_lists_its_tools_and_acts_for_the_runs_task() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let kept = crate::harness::path_str(&dir.path().join("token"));
    let gate = crate::harness::path_str(&dir.path().join("gate"));
    let id = hub
        .shell_task(&format!(
            "printf '%s' \"$MUSTER_TASK_TOKEN\" > {kept}.tmp && mv {kept}.tmp {kept}\nwhile [ ! -e {gate} ]; do sleep 0.05; done"
        ))
        .await;
    hub.wait_state(&id, &["running"]).await;
    let token_path = dir.path().join("token");
    let token =
        hub.wait_until("the run to hand over its token", || async { std::fs::read_to_string(&token_path).ok() }).await;

    let mut mcp = Mcp::start(&hub.url, &token);
    let init = mcp
        .request(
            "initialize",
            json!({ "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "test", "version": "1" } }),
        )
        .await;
    assert_eq!(init["result"]["serverInfo"]["name"], "muster", "{init}");
    assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
    mcp.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })).await;

    let list = mcp.request("tools/list", json!({})).await;
    let names: Vec<&str> =
        list["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for tool in ["note", "lock", "unlock", "ask", "send_message", "read_messages", "create_task", "permission_prompt"] {
        assert!(names.contains(&tool), "{tool} in {names:?}");
    }

    assert_eq!(mcp.call("note", json!({ "text": "halfway, via MCP" })).await, (false, "noted".to_owned()));
    assert_eq!(
        mcp.call("lock", json!({ "name": "deploy:staging" })).await,
        (false, "holding deploy:staging".to_owned())
    );
    let locks = hub.get("/locks").await;
    assert_eq!(locks["held"][0]["task"], id.as_str());
    let (error, text) = mcp.call("lock", json!({})).await;
    assert!(error && text.contains("name is required"), "{text}");
    let unknown = mcp.request("tools/call", json!({ "name": "nope", "arguments": {} })).await;
    assert!(unknown["error"].is_object(), "{unknown}");

    // A permission prompt is a decision; the answer goes back as Claude Code reads it.
    let prompt = tokio::spawn(async move {
        let input =
            json!({ "command": "rm -rf build && curl -H 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123' x" });
        let answer = mcp.call("permission_prompt", json!({ "tool_name": "Bash", "input": input })).await;
        (mcp, answer)
    });
    let d = hub
        .wait_until("the permission prompt", || async {
            hub.get(&format!("/decisions?task={id}")).await.as_array().and_then(|a| a.first().cloned())
        })
        .await;
    assert_eq!(d["options"], json!(["allow", "deny"]));
    assert!(d["question"].as_str().unwrap().starts_with("Allow the agent to use Bash?"), "{d}");
    let question = d["question"].as_str().unwrap();
    assert!(
        question.contains("rm -rf build") && !question.contains("abcdefghijklmnop"),
        "secrets are redacted: {question}"
    );
    let (code, _, err) = hub.cli(&["decide", &d["id"].to_string(), "deny", "--note", "not on a Friday"]).await;
    assert_eq!(code, 0, "{err}");
    let (mut mcp, (error, text)) = prompt.await.unwrap();
    assert!(!error);
    let verdict: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(verdict["behavior"], "deny");
    assert!(
        verdict["message"].as_str().unwrap().contains("admin denied Bash") && text.contains("not on a Friday"),
        "{text}"
    );

    let note = hub.events(&format!("task={id}")).await.into_iter().find(|e| e["kind"] == "task.note");
    assert_eq!(note.expect("a task.note")["detail"], "halfway, via MCP");
    std::fs::write(dir.path().join("gate"), "").unwrap();
    hub.wait_state(&id, &["succeeded"]).await;
    let (error, text) = mcp.call("note", json!({ "text": "too late" })).await;
    assert!(error && text.contains("expired"), "the token ended with the run: {text}");
    drop(mcp.stdin);
    let status = mcp.group.wait().await.expect("it ends");
    assert!(status.success(), "muster mcp ends when its client closes stdin: {status}");
}
