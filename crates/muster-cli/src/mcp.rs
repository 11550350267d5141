//! `muster mcp`: a Model Context Protocol server over stdio, for coding
//! agents inside a run. Its tools do what `muster ctl` does, for the run's
//! own task (with `MUSTER_TASK_TOKEN`), plus `permission_prompt`, the tool
//! Claude Code's `--permission-prompt-tool` calls before it uses a tool:
//! each prompt becomes a decision a person answers with allow or deny.

use crate::client::Client;
use muster_proto::api::{CtlAsk, CtlNote, DecisionView, LockName, LockRequest, MessageSend, MessageView, TaskSubmit};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::sync::Arc;

/// The tools, each with the JSON schema of its arguments.
fn tools() -> Vec<Tool> {
    let schema = |v: Value| -> Arc<JsonObject> { Arc::new(v.as_object().cloned().expect("a schema is a JSON object")) };
    let text = |d: &str| json!({ "type": "string", "description": d });
    vec![
        Tool::new(
            "note",
            "Say how the task is getting on; people see it on the task's timeline.",
            schema(json!({ "type": "object", "properties": { "text": text("What to say") }, "required": ["text"] })),
        ),
        Tool::new(
            "lock",
            "Take a named lock for this task (e.g. repo:web/src/api.rs, deploy:staging) before touching what it guards. \
             Held until unlock or the end of the run. Waiting that would deadlock is refused.",
            schema(json!({
                "type": "object",
                "properties": {
                    "name": text("The lock's name"),
                    "shared": { "type": "boolean", "description": "Share it with other shared holders (default: exclusive)" },
                    "wait_seconds": { "type": "number", "description": "How long to wait for it (default: try once)" }
                },
                "required": ["name"]
            })),
        ),
        Tool::new(
            "unlock",
            "Let go of a lock this task holds.",
            schema(
                json!({ "type": "object", "properties": { "name": text("The lock's name") }, "required": ["name"] }),
            ),
        ),
        Tool::new(
            "ask",
            "Ask a person to decide, and wait for the answer (the option they chose).",
            schema(json!({
                "type": "object",
                "properties": {
                    "question": text("The question, with what the person needs to know"),
                    "options": { "type": "array", "items": { "type": "string" }, "description": "Two or more (default: yes, no)" },
                    "default": text("The option taken if nobody answers in time"),
                    "timeout": text("How long a person has, e.g. 30m")
                },
                "required": ["question"]
            })),
        ),
        Tool::new(
            "send_message",
            "Send a message to an agent (agent:NAME), a task (task:ID) or a channel (channel:NAME).",
            schema(json!({
                "type": "object",
                "properties": { "to": text("agent:NAME, task:ID or channel:NAME"), "body": text("The message"),
                                "reply_to": { "type": "integer", "description": "The message this answers" } },
                "required": ["to", "body"]
            })),
        ),
        Tool::new(
            "read_messages",
            "Read this task's mailbox (or a channel), oldest first.",
            schema(json!({
                "type": "object",
                "properties": { "channel": text("A channel instead of the task's mailbox"),
                                "after": { "type": "integer", "description": "Only messages after this id" },
                                "wait_seconds": { "type": "number", "description": "Wait up to this long for one" } }
            })),
        ),
        Tool::new(
            "create_task",
            "Queue a follow-up task (at most 20 per task).",
            schema(json!({
                "type": "object",
                "properties": { "prompt": text("What the task is to do"), "runner": text("claude, codex, shell, …"),
                                "priority": text("urgent, high, normal or low"),
                                "capabilities": { "type": "array", "items": { "type": "string" } },
                                "repo": text("A repository to run in a worktree of") },
                "required": ["prompt"]
            })),
        ),
        Tool::new(
            "permission_prompt",
            "Asks a person whether a tool may be used (for --permission-prompt-tool).",
            schema(json!({
                "type": "object",
                "properties": { "tool_name": text("The tool"), "input": { "type": "object" }, "tool_use_id": text("Its use") },
                "required": ["tool_name", "input"]
            })),
        ),
    ]
}

#[derive(Clone)]
pub struct Server {
    client: Arc<Client>,
}

fn arg<'a>(args: &'a JsonObject, key: &str) -> Option<&'a Value> {
    args.get(key).filter(|v| !v.is_null())
}

fn text_arg(args: &JsonObject, key: &str) -> Result<String, String> {
    match arg(args, key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{key} must be text")),
        None => Err(format!("{key} is required")),
    }
}

fn seconds(args: &JsonObject, key: &str) -> Result<Option<f64>, String> {
    match arg(args, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Some)
            .ok_or_else(|| format!("{key} must be a number of seconds")),
    }
}

fn message_lines(all: &[MessageView]) -> String {
    if all.is_empty() {
        return "(no messages)".to_owned();
    }
    all.iter().map(|m| format!("#{} from {}: {}", m.id, m.sender, m.body)).collect::<Vec<_>>().join("\n")
}

impl Server {
    pub fn new(client: Client) -> Server {
        Server { client: Arc::new(client) }
    }

    /// Runs one tool; `Err` is a message the agent reads.
    async fn call(&self, name: &str, args: &JsonObject) -> Result<String, String> {
        let c = &self.client;
        let fail = |e: crate::CliError| e.message;
        match name {
            "note" => {
                c.post_no_content("/ctl/note", &CtlNote { text: text_arg(args, "text")? }).await.map_err(fail)?;
                Ok("noted".to_owned())
            }
            "lock" => {
                let name = text_arg(args, "name")?;
                // Zero, like none, tries once.
                let wait = seconds(args, "wait_seconds")?.filter(|w| *w > 0.0);
                let req = LockRequest {
                    name: name.clone(),
                    mode: arg(args, "shared").and_then(Value::as_bool).filter(|s| *s).map(|_| "shared".to_owned()),
                    wait: wait.map(muster_proto::api::DurationValue::Seconds),
                };
                let limit = std::time::Duration::from_secs_f64(wait.unwrap_or(0.0).min(3600.0));
                let _: Value = c
                    .post_waiting("/ctl/locks", &req, limit + std::time::Duration::from_secs(30))
                    .await
                    .map_err(fail)?;
                Ok(format!("holding {name}"))
            }
            "unlock" => {
                let name = text_arg(args, "name")?;
                c.post_no_content("/ctl/locks/release", &LockName { name: name.clone() }).await.map_err(fail)?;
                Ok(format!("released {name}"))
            }
            "ask" => {
                let options = match arg(args, "options") {
                    None => Vec::new(),
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|o| o.as_str().map(str::to_owned).ok_or("options must be text"))
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err("options must be a list".into()),
                };
                let req = CtlAsk {
                    question: text_arg(args, "question")?,
                    options,
                    default: arg(args, "default").and_then(Value::as_str).map(str::to_owned),
                    timeout: arg(args, "timeout")
                        .and_then(Value::as_str)
                        .map(|t| muster_proto::api::DurationValue::Text(t.to_owned())),
                    park: false,
                    permission: false,
                };
                let d = crate::ctl::ask(c, &req).await.map_err(fail)?;
                Ok(answer_text(&d))
            }
            "send_message" => {
                let req = MessageSend {
                    to: text_arg(args, "to")?,
                    body: text_arg(args, "body")?,
                    reply_to: arg(args, "reply_to").and_then(Value::as_i64),
                };
                let m: MessageView = c.post("/ctl/messages", &req).await.map_err(fail)?;
                Ok(format!("sent #{}", m.id))
            }
            "read_messages" => {
                let mut path =
                    format!("/ctl/messages?after={}", arg(args, "after").and_then(Value::as_i64).unwrap_or(0));
                if let Some(ch) = arg(args, "channel").and_then(Value::as_str) {
                    path.push_str(&format!("&to={}", crate::client::segment(&format!("channel:{ch}"))));
                }
                let wait = seconds(args, "wait_seconds")?.unwrap_or(0.0).min(60.0);
                if wait > 0.0 {
                    path.push_str(&format!("&wait={}ms", (wait * 1000.0) as u64));
                }
                let all: Vec<MessageView> =
                    c.get_waiting(&path, std::time::Duration::from_secs_f64(wait)).await.map_err(fail)?;
                Ok(message_lines(&all))
            }
            "create_task" => {
                let submit: TaskSubmit =
                    serde_json::from_value(Value::Object(args.clone())).map_err(|e| e.to_string())?;
                let created: muster_proto::api::TaskCreated = c.post("/ctl/tasks", &submit).await.map_err(fail)?;
                Ok(format!("queued {}", created.task.id))
            }
            "permission_prompt" => self.permission(args).await,
            other => Err(format!("no tool {other:?}")),
        }
    }

    /// Claude Code's permission prompt: a decision with allow or deny; the
    /// answer goes back in the form Claude Code reads.
    async fn permission(&self, args: &JsonObject) -> Result<String, String> {
        let tool = text_arg(args, "tool_name")?;
        let input = arg(args, "input").cloned().unwrap_or_else(|| json!({}));
        // Shown to people and kept: secrets in it (a token on a command line) are redacted first.
        let env: Vec<(String, String)> = std::env::vars().collect();
        let redactor = muster_agent::redact::Redactor::new(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let shown = redactor.redact(&serde_json::to_string(&input).unwrap_or_default()).into_owned();
        let shown: String =
            if shown.chars().count() > 1500 { shown.chars().take(1500).chain(['…']).collect() } else { shown };
        let req = CtlAsk {
            question: format!("Allow the agent to use {tool}?\n{shown}"),
            options: Vec::new(),
            default: None,
            timeout: None,
            park: false,
            permission: true,
        };
        let d = crate::ctl::ask(&self.client, &req).await.map_err(|e| e.message)?;
        let by = d.answered_by.clone().unwrap_or_else(|| "a person".to_owned());
        let verdict = if d.answer.as_deref() == Some("allow") {
            json!({ "behavior": "allow", "updatedInput": input })
        } else {
            let why = d.note.clone().map(|n| format!(": {n}")).unwrap_or_default();
            json!({ "behavior": "deny", "message": format!("{by} denied {tool} (decision #{}){why}", d.id) })
        };
        Ok(verdict.to_string())
    }
}

fn answer_text(d: &DecisionView) -> String {
    let mut s = d.answer.clone().unwrap_or_default();
    if let Some(note) = &d.note {
        s.push_str(&format!("\n(note from {}: {note})", d.answered_by.as_deref().unwrap_or("?")));
    }
    s
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("muster", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Muster coordinates this task with the rest of the fleet: take locks before touching shared \
                 things, ask a person when a decision is not yours, report progress with note.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult { tools: tools(), ..ListToolsResult::default() })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if !tools().iter().any(|t| t.name == request.name) {
            return Err(McpError::invalid_params(format!("no tool {:?}", request.name), None));
        }
        let args = request.arguments.unwrap_or_default();
        Ok(match self.call(&request.name, &args).await {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(why) => CallToolResult::error(vec![ContentBlock::text(why)]),
        }
        .into())
    }
}

/// `muster mcp`: serves until the client closes stdin.
pub async fn serve() -> crate::client::CliResult {
    let client = crate::ctl::run_client()?;
    let running = Server::new(client)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| crate::CliError::new(crate::exit::FAILURE, format!("MCP: cannot start: {e}")))?;
    running.waiting().await.map_err(|e| crate::CliError::new(crate::exit::FAILURE, format!("MCP: {e}")))?;
    Ok(())
}
