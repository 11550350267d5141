//! Scripted stand-ins for the model APIs the real coding-agent CLIs call:
//! Anthropic's Messages API (Claude Code) and OpenAI's Responses API
//! (Codex), each a small HTTP/1.1 server on a loopback port that streams
//! server-sent events. A script lists the replies by turn: the first
//! request of a run gets the first reply, the request that carries the
//! result of one tool call gets the second, and so on. Every request is
//! kept, so tests can check what the CLI sent.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which API a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/messages`, as Claude Code calls it.
    Anthropic,
    /// `POST /v1/responses`, as Codex calls it.
    OpenAi,
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The model answers with text and ends its turn.
    Text(&'static str),
    /// The model asks to run a shell command (Claude Code's `Bash` tool,
    /// Codex's `exec_command`).
    Shell { command: String, description: &'static str },
    /// The model calls a tool by name (Anthropic only): an MCP tool, say.
    Tool { name: &'static str, input: Value },
}

/// Tokens each scripted reply reports.
pub const INPUT_TOKENS: u64 = 100;
pub const OUTPUT_TOKENS: u64 = 20;

pub struct ScriptedModel {
    pub url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ScriptedModel {
    pub async fn start(api: Api, script: Vec<Reply>) -> ScriptedModel {
        assert!(!script.is_empty(), "a script needs a reply");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (script, seen) = (Arc::new(script), requests.clone());
        let server = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (script, seen) = (script.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(conn, api, &script, &seen).await {
                        eprintln!("[model] connection ended: {e}");
                    }
                });
            }
        });
        ScriptedModel { url, requests, server }
    }

    /// The JSON bodies of the model requests received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("the request log").clone()
    }
}

/// Answers requests on one connection until the client closes it.
async fn serve(mut conn: TcpStream, api: Api, script: &[Reply], seen: &Mutex<Vec<Value>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut conn, &mut buf).await? else { return Ok(()) };
        let line = head.lines().next().unwrap_or_default().to_owned();
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let endpoint = match api {
            Api::Anthropic => "/v1/messages",
            Api::OpenAi => "/v1/responses",
        };
        let route = path.split('?').next().unwrap_or_default();
        if method != "POST" || route != endpoint {
            // Anything else (a connectivity probe, token counting) gets an empty 404.
            let answer = "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
            conn.write_all(answer.as_bytes()).await?;
            continue;
        }
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock().expect("the request log").push(request.clone());
        let turn = tool_results(api, &request).min(script.len() - 1);
        let events = match api {
            Api::Anthropic => anthropic_events(&script[turn], &request, turn),
            Api::OpenAi => openai_events(&script[turn], turn),
        };
        let mut answer =
            String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n");
        answer.push_str("connection: close\r\n\r\n");
        for (name, data) in events {
            answer.push_str(&format!("event: {name}\ndata: {data}\n\n"));
        }
        conn.write_all(answer.as_bytes()).await?;
        conn.shutdown().await?;
        return Ok(());
    }
}

/// Reads one request: its head as text and its body (by `content-length`
/// or chunked). `None` when the client closed the connection first.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(conn, buf).await? {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !fill(conn, buf).await? {
                    return Ok(None);
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
            while buf.len() < line_end + 2 + size + 2 {
                if !fill(conn, buf).await? {
                    return Ok(None);
                }
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok(Some((head, body)));
            }
        }
    }
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < length {
        if !fill(conn, buf).await? {
            return Ok(None);
        }
    }
    let body = buf.drain(..length).collect();
    Ok(Some((head, body)))
}

async fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = vec![0u8; 64 << 10];
    let n = conn.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// How many tool results the conversation carries: the turn it is on.
fn tool_results(api: Api, request: &Value) -> usize {
    match api {
        Api::Anthropic => request["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .filter_map(|m| m["content"].as_array())
                    .flatten()
                    .filter(|b| b["type"] == "tool_result")
                    .count()
            })
            .unwrap_or(0),
        Api::OpenAi => request["input"]
            .as_array()
            .map(|items| items.iter().filter(|i| i["type"] == "function_call_output").count())
            .unwrap_or(0),
    }
}

fn anthropic_events(reply: &Reply, request: &Value, turn: usize) -> Vec<(&'static str, String)> {
    let model = request["model"].as_str().unwrap_or("claude-scripted");
    let start = json!({"type": "message_start", "message": {"id": "msg_scripted", "type": "message",
        "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1}}});
    let (block, delta, stop_reason) = match reply {
        Reply::Text(text) => {
            (json!({"type": "text", "text": ""}), json!({"type": "text_delta", "text": text}), "end_turn")
        }
        Reply::Shell { command, description } => (
            json!({"type": "tool_use", "id": format!("toolu_scripted_{turn}"), "name": "Bash", "input": {}}),
            json!({"type": "input_json_delta",
                "partial_json": json!({"command": command, "description": description}).to_string()}),
            "tool_use",
        ),
        Reply::Tool { name, input } => (
            json!({"type": "tool_use", "id": format!("toolu_scripted_{turn}"), "name": name, "input": {}}),
            json!({"type": "input_json_delta", "partial_json": input.to_string()}),
            "tool_use",
        ),
    };
    [
        ("message_start", start),
        ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": block})),
        ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": delta})),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": OUTPUT_TOKENS}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]
    .into_iter()
    .map(|(name, data)| (name, data.to_string()))
    .collect()
}

fn openai_events(reply: &Reply, turn: usize) -> Vec<(&'static str, String)> {
    let id = format!("resp_scripted_{turn}");
    let mut events = vec![(
        "response.created",
        json!({"type": "response.created",
        "response": {"id": id, "status": "in_progress"}}),
    )];
    match reply {
        Reply::Text(text) => {
            let item_id = format!("msg_scripted_{turn}");
            let done = json!({"type": "message", "id": item_id, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]});
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added",
                "output_index": 0, "item": {"type": "message", "id": item_id, "role": "assistant",
                "status": "in_progress", "content": []}}),
            ));
            events.push((
                "response.output_text.delta",
                json!({"type": "response.output_text.delta",
                "item_id": item_id, "output_index": 0, "content_index": 0, "delta": text}),
            ));
            events.push((
                "response.output_item.done",
                json!({"type": "response.output_item.done",
                "output_index": 0, "item": done}),
            ));
        }
        Reply::Shell { .. } | Reply::Tool { .. } => {
            let (name, arguments) = match reply {
                Reply::Shell { command, .. } => ("exec_command", json!({"cmd": command})),
                Reply::Tool { name, input } => (*name, input.clone()),
                Reply::Text(_) => unreachable!("handled above"),
            };
            let call = json!({"type": "function_call", "id": format!("fc_scripted_{turn}"),
                "call_id": format!("call_scripted_{turn}"), "name": name,
                "arguments": arguments.to_string(), "status": "completed"});
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added",
                "output_index": 0, "item": call}),
            ));
            events.push((
                "response.output_item.done",
                json!({"type": "response.output_item.done",
                "output_index": 0, "item": call}),
            ));
        }
    }
    events.push((
        "response.completed",
        json!({"type": "response.completed", "response": {"id": id,
        "status": "completed", "usage": {"input_tokens": INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}}}),
    ));
    events.into_iter().map(|(name, data)| (name, data.to_string())).collect()
}
