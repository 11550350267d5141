//! The real Claude Code and Codex CLIs, run by a real agent, fully offline
//! against the scripted model servers in `models.rs`. `.ci/run` installs
//! the pinned CLIs into `target/agent-clis`; a machine without Node.js
//! skips these tests, says so and counts them (`harness::skip`); with `CI`
//! set they fail instead.

use crate::harness::{Hub, path_str};
use crate::models::{Api, CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, INPUT_TOKENS, OUTPUT_TOKENS, Reply, ScriptedModel};
use crate::workspaces::{git, repository};
use serde_json::{Value, json};
use std::path::PathBuf;

/// The directory holding the installed `claude` and `codex`, or `None` on a
/// machine without Node.js (said loudly, counted, and a failure under `CI`).
/// With Node.js the CLIs must be there: `.ci/run` installs them.
pub fn clis(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("MUSTER_AGENT_CLIS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/agent-clis/node_modules/.bin"),
    };
    if dir.join("claude").exists() && dir.join("codex").exists() {
        return Some(dir);
    }
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !node {
        crate::harness::skip(
            test,
            crate::harness::Missing::Dependency(
                "Node.js is not installed, so the real Claude Code and Codex CLIs cannot run",
            ),
        );
        return None;
    }
    panic!(
        "the agent CLIs are not installed in {}: run .ci/run, or `npm install --prefix target/agent-clis \
         @anthropic-ai/claude-code@2.1.330 @openai/codex@0.169.0`",
        dir.display()
    );
}

fn with_path(bin: &std::path::Path) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", path_str(bin))
}

/// One of the real coding-agent CLIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cli {
    Claude,
    Codex,
}

impl Cli {
    pub fn runner(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
        }
    }

    pub fn api(self) -> Api {
        match self {
            Cli::Claude => Api::Anthropic,
            Cli::Codex => Api::OpenAi,
        }
    }
}

/// How a fleet's CLIs and agent meet failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// As shipped.
    Default,
    /// The CLIs' own retries few and their timeouts short, and the agent's
    /// quiet (2 s) and wedged (10 s) limits near, so that an error path ends
    /// within a test's time.
    Short,
}

/// A hub with one agent that runs a real CLI against `model`, in worktrees
/// of a `web` repository; everything goes when it is dropped.
pub struct Fleet {
    pub hub: Hub,
    pub repo: PathBuf,
    _agent: crate::harness::Agent,
    _home: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Fleet {
    pub async fn start(cli: Cli, bin: &std::path::Path, model: &ScriptedModel, patience: Patience) -> Fleet {
        let hub = Hub::start().await;
        let home = tempfile::tempdir().expect("a home");
        let dir = tempfile::tempdir().expect("a directory");
        let repo = repository(dir.path());
        let short = patience == Patience::Short;
        let mut env = vec![("PATH".to_owned(), with_path(bin)), ("HOME".to_owned(), path_str(home.path()))];
        match cli {
            Cli::Claude => {
                env.push(("ANTHROPIC_BASE_URL".to_owned(), model.url.clone()));
                env.push(("ANTHROPIC_API_KEY".to_owned(), "sk-ant-scripted-0000".to_owned()));
                env.push(("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(), "1".to_owned()));
                if short {
                    env.push(("CLAUDE_CODE_MAX_RETRIES".to_owned(), "2".to_owned()));
                    env.push(("API_TIMEOUT_MS".to_owned(), "3000".to_owned()));
                }
            }
            Cli::Codex => {
                let codex_home = home.path().join("codex");
                std::fs::create_dir_all(&codex_home).expect("CODEX_HOME");
                let retries = if short {
                    "request_max_retries = 1\nstream_max_retries = 1\nstream_idle_timeout_ms = 3000\n"
                } else {
                    ""
                };
                std::fs::write(
                    codex_home.join("config.toml"),
                    format!(
                        "model = \"scripted-model\"\nmodel_provider = \"scripted\"\n\n[model_providers.scripted]\n\
                         name = \"scripted\"\nbase_url = \"{}/v1\"\nwire_api = \"responses\"\n\
                         env_key = \"OPENAI_API_KEY\"\n{retries}",
                        model.url
                    ),
                )
                .expect("the Codex config");
                env.push(("CODEX_HOME".to_owned(), path_str(&codex_home)));
                env.push(("OPENAI_API_KEY".to_owned(), "sk-scripted-0000".to_owned()));
            }
        }
        let liveness = if short { "quiet_after = \"2s\"\nwedged_after = \"10s\"\n" } else { "" };
        let toml =
            format!("repos_root = {:?}\n{liveness}\n[repos]\nweb = {:?}\n", path_str(dir.path()), path_str(&repo));
        let agent = hub
            .agent_with_config(
                "coder",
                dir.path(),
                &toml,
                crate::harness::AgentOpts { runners: &[cli.runner()], env, ..Default::default() },
            )
            .await;
        Fleet { hub, repo, _agent: agent, _home: home, _dir: dir }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_runs_offline_in_a_worktree_and_its_tool_use_diff_tokens_and_cost_are_recorded() {
    let Some(bin) =
        clis("agents::claude_code_runs_offline_in_a_worktree_and_its_tool_use_diff_tokens_and_cost_are_recorded")
    else {
        return;
    };
    let model = ScriptedModel::start(
        Api::Anthropic,
        vec![
            Reply::Shell { command: "printf 'written by claude\\n' > NOTES.md".into(), description: "write notes" },
            Reply::Text("I wrote NOTES.md."),
        ],
    )
    .await;
    let claude = Fleet::start(Cli::Claude, &bin, &model, Patience::Default).await;
    let (hub, repo) = (&claude.hub, &claude.repo);

    let (code, id, err) = hub
        .cli(&["task", "add", "--runner", "claude", "--repo", "web", "--max-attempts", "1", "please write the notes"])
        .await;
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    let output = hub.output(&id).await;
    assert_eq!(task["state"], "succeeded", "{}\n{output}", task["reason"]);

    let requests = model.requests();
    assert!(requests.len() >= 2, "a tool turn and a final turn: {}", requests.len());
    let first = requests[0].to_string();
    assert!(first.contains("please write the notes"), "the prompt reached the model: {first:.300}");

    let steps = hub.get(&format!("/tasks/{id}/steps")).await;
    let steps = steps["steps"].as_array().expect("steps").clone();
    let tool = steps.iter().find(|s| s["kind"] == "tool_use").expect("a tool use");
    assert_eq!(tool["name"], "Bash");
    assert_eq!(tool["summary"], "printf 'written by claude\\n' > NOTES.md");
    let result = steps.iter().find(|s| s["kind"] == "tool_result").expect("a tool result");
    assert_eq!((&result["name"], &result["is_error"]), (&json!("Bash"), &Value::Null), "{result}");
    assert!(steps.iter().any(|s| s["kind"] == "session"), "{steps:?}");
    // The model's words beside its tool call are a step; its thinking is not.
    let texts: Vec<&Value> = steps.iter().filter(|s| s["kind"] == "text").map(|s| &s["summary"]).collect();
    assert_eq!(texts, [&json!("Running it now."), &json!("I wrote NOTES.md.")], "{steps:?}");

    let report = &task["attempts_detail"][0]["report"];
    assert_eq!(report["input_tokens"], 2 * INPUT_TOKENS, "{report}");
    assert_eq!(report["output_tokens"], 2 * OUTPUT_TOKENS, "{report}");
    assert_eq!(report["cache_read_tokens"], 2 * CACHE_READ_TOKENS, "{report}");
    assert_eq!(report["cache_write_tokens"], 2 * CACHE_WRITE_TOKENS, "{report}");
    assert_eq!(report["tool_uses"], 1);
    assert_eq!(report["result"], "I wrote NOTES.md.");
    let cost = report["cost_usd"].as_f64().expect("Claude Code reports a cost");
    let reported = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "result")
        .and_then(|v| v["total_cost_usd"].as_f64())
        .expect("the CLI's own result line");
    assert!(cost > 0.0 && (cost - reported).abs() < 1e-6, "recorded {cost}, the CLI said {reported}");

    // The file the model asked for is on the task's branch, not in the repository's tree.
    let branch = format!("muster/{id}");
    let (code, diff, err) = hub.cli(&["task", "diff", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(diff.contains(&format!("on {branch}")), "{diff}");
    assert!(diff.contains("+++ b/NOTES.md") && diff.contains("+written by claude"), "{diff}");
    assert!(!repo.join("NOTES.md").exists(), "the repository's own tree is untouched");
    let w = &task["attempts_detail"][0]["workspace"];
    assert_eq!((&w["branch"], &w["files"][0]["path"]), (&json!(branch), &json!("NOTES.md")), "{w}");
    assert_eq!(git(repo, &["branch", "--list", &branch]).trim_start_matches("* ").trim(), branch);
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_runs_offline_and_its_messages_and_tokens_are_recorded() {
    let Some(bin) = clis("agents::codex_runs_offline_and_its_messages_and_tokens_are_recorded") else { return };
    let model = ScriptedModel::start(
        Api::OpenAi,
        vec![
            Reply::Shell { command: "printf 'written by codex\\n' > NOTES.md".into(), description: "write notes" },
            Reply::Text("Codex wrote NOTES.md."),
        ],
    )
    .await;
    let codex = Fleet::start(Cli::Codex, &bin, &model, Patience::Default).await;
    let (hub, repo) = (&codex.hub, &codex.repo);
    let id = hub
        .add_task(json!({ "prompt": "please write the notes", "runner": "codex", "max_attempts": 1, "repo": "web",
            "auto_commit": true }))
        .await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    let output = hub.output(&id).await;
    assert_eq!(task["state"], "succeeded", "{}\n{output}", task["reason"]);
    assert!(model.requests().len() >= 2, "a tool turn and a final turn");

    let steps = hub.get(&format!("/tasks/{id}/steps")).await;
    let steps = steps["steps"].as_array().expect("steps").clone();
    let tool = steps.iter().find(|s| s["kind"] == "tool_use").expect("a command");
    assert!(tool["summary"].as_str().unwrap().contains("written by codex"), "{tool}");
    let result = steps.iter().find(|s| s["kind"] == "tool_result").expect("its result");
    assert_ne!(result["is_error"], true, "the command ran: {result}");
    assert!(steps.iter().any(|s| s["kind"] == "text" && s["summary"] == "Codex wrote NOTES.md."), "{steps:?}");

    let report = &task["attempts_detail"][0]["report"];
    assert_eq!(report["input_tokens"], 2 * INPUT_TOKENS, "{report}");
    assert_eq!(report["output_tokens"], 2 * OUTPUT_TOKENS, "{report}");
    // OpenAI counts cached input inside its input; Muster keeps the two apart.
    assert_eq!(report["cache_read_tokens"], 2 * CACHE_READ_TOKENS, "{report}");
    assert_eq!((&report["turns"], &report["result"]), (&json!(1), &json!("Codex wrote NOTES.md.")));
    assert!(report["session_id"].as_str().is_some_and(|s| !s.is_empty()), "{report}");

    // Codex wrote inside its worktree; the change is committed on the task's branch.
    let branch = format!("muster/{id}");
    assert_eq!(git(repo, &["show", &format!("{branch}:NOTES.md")]), "written by codex");
    let w = &task["attempts_detail"][0]["workspace"];
    assert_eq!(w["commits"].as_array().map(Vec::len), Some(1), "{w}");
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_takes_a_muster_lock_through_the_mcp_server_inside_its_run() {
    let Some(bin) = clis("agents::claude_code_takes_a_muster_lock_through_the_mcp_server_inside_its_run") else {
        return;
    };
    let model = ScriptedModel::start(
        Api::Anthropic,
        vec![
            Reply::Tool { name: "mcp__muster__lock", input: json!({ "name": "repo:web/README.md" }) },
            Reply::Tool { name: "mcp__muster__note", input: json!({ "text": "holding the README" }) },
            Reply::Text("Locked the README and said so."),
        ],
    )
    .await;
    let claude = Fleet::start(Cli::Claude, &bin, &model, Patience::Default).await;
    let hub = &claude.hub;
    let id = hub
        .add_task(json!({ "prompt": "lock the README before editing it", "runner": "claude", "repo": "web", "max_attempts": 1 }))
        .await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    let output = hub.output(&id).await;
    assert_eq!(task["state"], "succeeded", "{}\n{output}", task["reason"]);

    // Claude Code started Muster's MCP server, called two of its tools, and
    // passed their results back to the model.
    assert!(output.contains(r#"{"name":"muster","status":"connected""#), "{output:.2000}");
    assert!(output.contains("mcp__muster__ask") && output.contains("mcp__muster__lock"), "its tools are offered");
    let last = model.requests().last().cloned().unwrap_or_default().to_string();
    assert!(last.contains("holding repo:web/README.md"), "the lock tool's answer reached the model: {last:.600}");
    let events = hub.events(&format!("task={id}")).await;
    let detail = |kind: &str| events.iter().find(|e| e["kind"] == kind).map(|e| e["detail"].clone());
    assert_eq!(detail("lock.acquired"), Some(json!("repo:web/README.md (exclusive)")));
    assert_eq!(detail("task.note"), Some(json!("holding the README")));
    assert_eq!(detail("lock.released"), Some(json!("repo:web/README.md (the run ended)")));
    let steps = hub.get(&format!("/tasks/{id}/steps")).await;
    let used: Vec<&str> = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "tool_use")
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(used, ["mcp__muster__lock", "mcp__muster__note"]);
    assert!(!output.contains("mtt_"), "the task token never reaches the output");
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_codes_permission_prompt_becomes_a_decision_and_the_answer_reaches_it() {
    let Some(bin) = clis("agents::claude_codes_permission_prompt_becomes_a_decision_and_the_answer_reaches_it") else {
        return;
    };
    let model = ScriptedModel::start(
        Api::Anthropic,
        vec![
            // WebFetch is not in the runner's allowed tools: Claude Code asks Muster.
            Reply::Tool { name: "WebFetch", input: json!({ "url": "https://example.com/", "prompt": "summarise" }) },
            Reply::Text("I was not allowed to fetch it."),
        ],
    )
    .await;
    let claude = Fleet::start(Cli::Claude, &bin, &model, Patience::Default).await;
    let hub = &claude.hub;
    let id = hub
        .add_task(json!({ "prompt": "read example.com", "runner": "claude", "repo": "web", "max_attempts": 1 }))
        .await;
    let d = hub
        .wait_until("the permission prompt", || async {
            hub.get(&format!("/decisions?task={id}")).await.as_array().and_then(|a| a.first().cloned())
        })
        .await;
    assert!(d["question"].as_str().unwrap().starts_with("Allow the agent to use WebFetch?"), "{d}");
    assert!(d["question"].as_str().unwrap().contains("https://example.com/"), "{d}");
    assert_eq!(hub.task(&id).await["state"], "running", "the run waits for the answer");
    let (code, _, err) = hub.cli(&["decide", &d["id"].to_string(), "deny", "--note", "no network from runs"]).await;
    assert_eq!(code, 0, "{err}");
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", hub.output(&id).await);
    let last = model.requests().last().cloned().unwrap_or_default().to_string();
    assert!(last.contains("no network from runs"), "the denial and its reason reached the model: {last:.800}");
}
