//! Scripted stand-ins for the model APIs the real coding-agent CLIs call:
//! Anthropic's Messages API (Claude Code) and OpenAI's Responses API
//! (Codex), each a small HTTP/1.1 server on a loopback port that streams
//! server-sent events in the shapes the real APIs use: several content
//! blocks per turn (thinking or reasoning first, text beside a tool call),
//! deltas in pieces, `ping`s, cache-token counts and, for Responses,
//! `sequence_number`s and `function_call_arguments.delta`s.
//!
//! A script lists the replies by turn: the first request of a run gets the
//! first reply, the request that carries the result of one tool call gets
//! the second, and so on. A test can make the server fail instead, the way
//! the providers do (`Fault`), for as long as it likes. Every request is
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
    /// The model calls a tool by name: an MCP tool, say.
    Tool { name: &'static str, input: Value },
}

/// How a model API fails, as the real ones do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The credentials are refused: `401` with the provider's error body.
    Refused,
    /// Rate limited: `429` with `retry-after` and the provider's reset
    /// headers, the reset this many seconds away.
    RateLimited { reset_s: u64 },
    /// Overloaded: Anthropic's `529 overloaded_error`, OpenAI's `503`.
    Overloaded,
    /// The stream starts, then the connection is closed in the middle of it.
    Cut,
    /// The stream starts, then nothing more comes and the connection stays open.
    Stall,
    /// The request is read and never answered.
    Silent,
}

/// Tokens each scripted reply reports: input outside the prompt cache, input
/// read from and written to the cache, and output.
pub const INPUT_TOKENS: u64 = 100;
pub const CACHE_READ_TOKENS: u64 = 30;
pub const CACHE_WRITE_TOKENS: u64 = 10;
pub const OUTPUT_TOKENS: u64 = 20;

pub struct ScriptedModel {
    pub url: String,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

struct State {
    api: Api,
    script: Vec<Reply>,
    requests: Mutex<Vec<Value>>,
    fault: Mutex<Option<Fault>>,
    faulted: Mutex<Vec<Fault>>,
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
        let state = Arc::new(State {
            api,
            script,
            requests: Mutex::new(Vec::new()),
            fault: Mutex::new(None),
            faulted: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let server = tokio::spawn(async move {
            // Held connections end with the server.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                let state = shared.clone();
                conns.spawn(async move {
                    if let Err(e) = serve(conn, &state).await {
                        eprintln!("[model] connection ended: {e}");
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        ScriptedModel { url, state, server }
    }

    /// The JSON bodies of the model requests received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().expect("the request log").clone()
    }

    /// From now on every model request fails with `fault`; `None` answers
    /// by the script again.
    pub fn fail(&self, fault: Option<Fault>) {
        *self.state.fault.lock().expect("the fault") = fault;
    }

    /// How many requests were answered with `fault`.
    pub fn faulted(&self, fault: Fault) -> usize {
        self.state.faulted.lock().expect("the fault log").iter().filter(|f| **f == fault).count()
    }
}

/// Answers requests on one connection until the client closes it.
async fn serve(mut conn: TcpStream, state: &State) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut conn, &mut buf).await? else { return Ok(()) };
        let line = head.lines().next().unwrap_or_default().to_owned();
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let endpoint = match state.api {
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
        state.requests.lock().expect("the request log").push(request.clone());
        let fault = *state.fault.lock().expect("the fault");
        if let Some(fault) = fault {
            state.faulted.lock().expect("the fault log").push(fault);
            return fail(conn, state.api, fault, &request).await;
        }
        let turn = tool_results(state.api, &request);
        let reply = &state.script[turn.min(state.script.len() - 1)];
        if state.api == Api::Anthropic && request["stream"] != true {
            // Claude Code's fallback when a stream fails: the whole message at once.
            let message = anthropic_message(reply, &request, turn).to_string();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{message}",
                message.len()
            );
            conn.write_all(answer.as_bytes()).await?;
            conn.shutdown().await?;
            return Ok(());
        }
        let events = match state.api {
            Api::Anthropic => anthropic_events(reply, &request, turn),
            Api::OpenAi => openai_events(reply, turn),
        };
        conn.write_all(&sse(&events)).await?;
        conn.shutdown().await?;
        return Ok(());
    }
}

/// A `200` event stream holding `events`.
fn sse(events: &[(&'static str, String)]) -> Vec<u8> {
    let mut answer = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
    );
    for (name, data) in events {
        answer.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    answer.into_bytes()
}

/// Answers one request with `fault`.
async fn fail(mut conn: TcpStream, api: Api, fault: Fault, request: &Value) -> std::io::Result<()> {
    let error = |status: &str, headers: &str, body: Value| {
        let body = body.to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let anthropic = |kind: &str, message: &str| json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_scripted"});
    let openai = |kind: &str, code: Value, message: &str| json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let answer = match (fault, api) {
        (Fault::Refused, Api::Anthropic) => {
            error("401 Unauthorized", "", anthropic("authentication_error", "invalid x-api-key"))
        }
        (Fault::Refused, Api::OpenAi) => error(
            "401 Unauthorized",
            "",
            openai("invalid_request_error", json!("invalid_api_key"), "Incorrect API key provided: sk-scr****0000."),
        ),
        (Fault::RateLimited { reset_s }, _) => {
            let reset = humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() + std::time::Duration::from_secs(reset_s),
            );
            let headers = format!(
                "retry-after: {reset_s}\r\nanthropic-ratelimit-requests-remaining: 0\r\n\
                 anthropic-ratelimit-requests-reset: {reset}\r\nx-ratelimit-remaining-requests: 0\r\n\
                 x-ratelimit-reset-requests: {reset_s}s\r\n"
            );
            let body = match api {
                Api::Anthropic => anthropic(
                    "rate_limit_error",
                    "This request would exceed your organization's rate limit of 50 requests per minute.",
                ),
                Api::OpenAi => openai(
                    "requests",
                    json!("rate_limit_exceeded"),
                    &format!("Rate limit reached for requests per min. Please try again in {reset_s}s."),
                ),
            };
            error("429 Too Many Requests", &headers, body)
        }
        (Fault::Overloaded, Api::Anthropic) => error("529 Overloaded", "", anthropic("overloaded_error", "Overloaded")),
        (Fault::Overloaded, Api::OpenAi) => error(
            "503 Service Unavailable",
            "",
            openai("server_error", Value::Null, "The server is overloaded or not ready yet."),
        ),
        (Fault::Cut | Fault::Stall, _) => {
            // The head of a real stream: its first events, then no more.
            let reply = Reply::Text("This answer never ends.");
            let events = match api {
                Api::Anthropic => anthropic_events(&reply, request, 0),
                Api::OpenAi => openai_events(&reply, 0),
            };
            let first_text = events.iter().position(|(name, data)| {
                *name == "response.output_text.delta" || data.contains(r#""type":"text_delta""#)
            });
            let head = sse(&events[..first_text.map_or(events.len() / 2, |i| i + 1)]);
            conn.write_all(&head).await?;
            if fault == Fault::Cut {
                return conn.shutdown().await;
            }
            return std::future::pending().await;
        }
        (Fault::Silent, _) => return std::future::pending().await,
    };
    conn.write_all(answer.as_bytes()).await?;
    conn.shutdown().await
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

/// The content blocks of a reply: thinking first, as the real models do,
/// then text, and the tool call beside its own words.
fn anthropic_blocks(reply: &Reply, turn: usize) -> Vec<Value> {
    let thinking = json!({"type": "thinking", "thinking": "The task is clear.", "signature": "c2NyaXB0ZWQ="});
    let tool = |name: &str, input: &Value| {
        vec![
            thinking.clone(),
            json!({"type": "text", "text": "Running it now."}),
            json!({"type": "tool_use", "id": format!("toolu_scripted_{turn}"), "name": name, "input": input}),
        ]
    };
    match reply {
        Reply::Text(text) => vec![thinking.clone(), json!({"type": "text", "text": text})],
        Reply::Shell { command, description } => tool("Bash", &json!({"command": command, "description": description})),
        Reply::Tool { name, input } => tool(name, input),
    }
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply {
        Reply::Text(_) => "end_turn",
        Reply::Shell { .. } | Reply::Tool { .. } => "tool_use",
    }
}

fn anthropic_usage(output_tokens: u64) -> Value {
    json!({"input_tokens": INPUT_TOKENS, "cache_creation_input_tokens": CACHE_WRITE_TOKENS,
        "cache_read_input_tokens": CACHE_READ_TOKENS, "output_tokens": output_tokens})
}

/// A whole message, as a request with `stream: false` gets it.
fn anthropic_message(reply: &Reply, request: &Value, turn: usize) -> Value {
    json!({"id": format!("msg_scripted_{turn}"), "type": "message", "role": "assistant",
        "model": request["model"].as_str().unwrap_or("claude-scripted"), "content": anthropic_blocks(reply, turn),
        "stop_reason": stop_reason(reply), "stop_sequence": null, "usage": anthropic_usage(OUTPUT_TOKENS)})
}

/// Splits `text` in two pieces, as a stream of deltas does.
fn halves(text: &str) -> [&str; 2] {
    let mid = (0..=text.len() / 2).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    [&text[..mid], &text[mid..]]
}

fn anthropic_events(reply: &Reply, request: &Value, turn: usize) -> Vec<(&'static str, String)> {
    let model = request["model"].as_str().unwrap_or("claude-scripted");
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_scripted_{turn}"), "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": anthropic_usage(1)}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    for (index, block) in anthropic_blocks(reply, turn).into_iter().enumerate() {
        let (empty, deltas) = match block["type"].as_str() {
            Some("thinking") => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                halves(block["thinking"].as_str().unwrap_or_default())
                    .map(|t| json!({"type": "thinking_delta", "thinking": t}))
                    .into_iter()
                    .chain([json!({"type": "signature_delta", "signature": block["signature"]})])
                    .collect::<Vec<_>>(),
            ),
            Some("text") => (
                json!({"type": "text", "text": ""}),
                halves(block["text"].as_str().unwrap_or_default())
                    .map(|t| json!({"type": "text_delta", "text": t}))
                    .to_vec(),
            ),
            _ => {
                let mut start = block.clone();
                start["input"] = json!({});
                let input = block["input"].to_string();
                (start, halves(&input).map(|p| json!({"type": "input_json_delta", "partial_json": p})).to_vec())
            }
        };
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": empty}),
        ));
        for delta in deltas {
            events
                .push(("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta})));
        }
        events.push(("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        if index == 0 {
            events.push(("ping", json!({"type": "ping"})));
        }
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(reply), "stop_sequence": null},
            "usage": anthropic_usage(OUTPUT_TOKENS)}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events.into_iter().map(|(name, data)| (name, data.to_string())).collect()
}

fn openai_events(reply: &Reply, turn: usize) -> Vec<(&'static str, String)> {
    let id = format!("resp_scripted_{turn}");
    let response = |status: &str| json!({"id": id, "object": "response", "status": status, "model": "scripted-model", "output": []});
    let mut events = vec![
        ("response.created", json!({"type": "response.created", "response": response("in_progress")})),
        ("response.in_progress", json!({"type": "response.in_progress", "response": response("in_progress")})),
    ];
    // Reasoning first, as the reasoning models give it.
    let reasoning = json!({"type": "reasoning", "id": format!("rs_scripted_{turn}"), "summary": []});
    events.push((
        "response.output_item.added",
        json!({"type": "response.output_item.added", "output_index": 0, "item": reasoning}),
    ));
    events.push((
        "response.output_item.done",
        json!({"type": "response.output_item.done", "output_index": 0, "item": reasoning}),
    ));
    match reply {
        Reply::Text(text) => {
            let item_id = format!("msg_scripted_{turn}");
            let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
            let at = |kind: &str| json!({"type": kind, "item_id": item_id, "output_index": 1, "content_index": 0});
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "message",
                    "id": item_id, "role": "assistant", "status": "in_progress", "content": []}}),
            ));
            let mut added = at("response.content_part.added");
            added["part"] = part("");
            events.push(("response.content_part.added", added));
            for piece in halves(text) {
                let mut delta = at("response.output_text.delta");
                delta["delta"] = json!(piece);
                events.push(("response.output_text.delta", delta));
            }
            let mut done = at("response.output_text.done");
            done["text"] = json!(text);
            events.push(("response.output_text.done", done));
            let mut part_done = at("response.content_part.done");
            part_done["part"] = part(text);
            events.push(("response.content_part.done", part_done));
            events.push((
                "response.output_item.done",
                json!({"type": "response.output_item.done", "output_index": 1, "item": {"type": "message",
                    "id": item_id, "role": "assistant", "status": "completed", "content": [part(text)]}}),
            ));
        }
        Reply::Shell { .. } | Reply::Tool { .. } => {
            let (name, arguments) = match reply {
                Reply::Shell { command, .. } => ("exec_command", json!({"cmd": command})),
                Reply::Tool { name, input } => (*name, input.clone()),
                Reply::Text(_) => unreachable!("handled above"),
            };
            let arguments = arguments.to_string();
            let item_id = format!("fc_scripted_{turn}");
            let call = |arguments: &str, status: &str| {
                json!({"type": "function_call", "id": item_id, "call_id": format!("call_scripted_{turn}"),
                    "name": name, "arguments": arguments, "status": status})
            };
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 1, "item": call("", "in_progress")}),
            ));
            for piece in halves(&arguments) {
                events.push((
                    "response.function_call_arguments.delta",
                    json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                        "output_index": 1, "delta": piece}),
                ));
            }
            events.push((
                "response.function_call_arguments.done",
                json!({"type": "response.function_call_arguments.done", "item_id": item_id, "output_index": 1,
                    "arguments": arguments}),
            ));
            events.push((
                "response.output_item.done",
                json!({"type": "response.output_item.done", "output_index": 1, "item": call(&arguments, "completed")}),
            ));
        }
    }
    let mut completed = response("completed");
    // OpenAI counts the cached input inside `input_tokens`.
    completed["usage"] = json!({"input_tokens": INPUT_TOKENS + CACHE_READ_TOKENS,
        "input_tokens_details": {"cached_tokens": CACHE_READ_TOKENS}, "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + CACHE_READ_TOKENS + OUTPUT_TOKENS});
    events.push(("response.completed", json!({"type": "response.completed", "response": completed})));
    events
        .into_iter()
        .enumerate()
        .map(|(sequence, (name, mut data))| {
            data["sequence_number"] = json!(sequence);
            (name, data.to_string())
        })
        .collect()
}
