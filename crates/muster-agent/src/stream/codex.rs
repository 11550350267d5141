//! Codex's `exec --json` lines: `thread.started` (the session), `item.*`
//! (agent messages, commands run, file changes, tool calls), `turn.completed`
//! with the turn's `usage`, `turn.failed` and `error`. Codex gives no final
//! report line of its own: the run's report is made when a turn ends, from
//! the last agent message and the tokens summed over turns.

use super::{Dialect, FINAL_TEXT_CHARS, Report, SUMMARY_CHARS, Step, Usage, clip, short, text_of, u64_of, unreadable};
use serde_json::Value;

#[derive(Debug, Default)]
pub struct Codex {
    turns: u32,
    usage: Usage,
    last_message: Option<String>,
    /// The last `error` line: Codex repeats it in `turn.failed`.
    last_error: Option<String>,
}

impl Dialect for Codex {
    fn line(&mut self, line: &[u8]) -> Vec<Step> {
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return vec![unreadable(format_args!("not JSON: {e}"))],
        };
        match v.get("type").and_then(Value::as_str) {
            Some("thread.started") => match v.get("thread_id").and_then(Value::as_str) {
                Some(id) => vec![Step::Session { id: id.to_owned(), model: None }],
                None => vec![unreadable("thread.started without a thread_id")],
            },
            Some("item.started") => v.get("item").and_then(|i| self.started(i)).into_iter().collect(),
            Some("item.completed") => v.get("item").map(|i| self.completed(i)).unwrap_or_default(),
            Some("turn.completed") => {
                self.turns += 1;
                let u = v.get("usage").unwrap_or(&Value::Null);
                // Codex's input count includes the cached part; Muster keeps them apart, as Claude does.
                let cached = u64_of(u.get("cached_input_tokens"));
                let usage = Usage {
                    input_tokens: u64_of(u.get("input_tokens")).saturating_sub(cached),
                    output_tokens: u64_of(u.get("output_tokens")),
                    cache_read_tokens: cached,
                    cache_write_tokens: u64_of(u.get("cache_write_input_tokens")),
                };
                self.usage.add(usage);
                vec![Step::Usage(usage), Step::Report(self.report(true, "success"))]
            }
            Some("turn.failed") => {
                let message = text_of(v.pointer("/error/message"), SUMMARY_CHARS).unwrap_or_default();
                self.turns += 1;
                let mut report = self.report(false, "turn_failed");
                if report.final_text.is_none() && !message.is_empty() {
                    report.final_text = Some(message.clone());
                }
                if self.last_error.as_ref() == Some(&message) {
                    return vec![Step::Report(report)];
                }
                vec![Step::Error { message }, Step::Report(report)]
            }
            Some("error") => {
                // Read whole: a long error body must not cut off what says it is a retry.
                if let Some(retry) = v.get("message").and_then(Value::as_str).and_then(retry) {
                    return vec![retry];
                }
                let message = text_of(v.get("message"), SUMMARY_CHARS).unwrap_or_default();
                self.last_error = Some(message.clone());
                vec![Step::Error { message }]
            }
            Some(_) => Vec::new(),
            None => vec![unreadable("a line without a type")],
        }
    }
}

impl Codex {
    fn report(&self, ok: bool, subtype: &str) -> Report {
        Report {
            ok,
            subtype: subtype.to_owned(),
            turns: Some(self.turns),
            usage: Some(self.usage),
            cost_usd: None,
            duration_ms: None,
            final_text: self.last_message.clone(),
        }
    }

    /// A tool call begins: a command run, a file change, an MCP tool.
    fn started(&self, item: &Value) -> Option<Step> {
        let (name, summary) = tool(item)?;
        Some(Step::ToolUse { id: id(item), name, summary })
    }

    fn completed(&mut self, item: &Value) -> Vec<Step> {
        match item.get("type").and_then(Value::as_str) {
            Some("agent_message") => {
                let Some(text) = text_of(item.get("text"), FINAL_TEXT_CHARS) else { return Vec::new() };
                self.last_message = Some(text.clone());
                vec![Step::Text { text }]
            }
            Some(_) if tool(item).is_some() => {
                let failed = item.get("status").and_then(Value::as_str) == Some("failed")
                    || item.get("exit_code").and_then(Value::as_i64).is_some_and(|c| c != 0);
                let summary = item.get("aggregated_output").map(short).unwrap_or_default();
                vec![Step::ToolResult { id: id(item), is_error: failed, summary }]
            }
            Some("error") => {
                vec![Step::Error { message: text_of(item.get("message"), SUMMARY_CHARS).unwrap_or_default() }]
            }
            _ => Vec::new(),
        }
    }
}

/// `Reconnecting... 2/5 (unexpected status 503 Service Unavailable: …)`:
/// a failed model request Codex is about to try again.
fn retry(message: &str) -> Option<Step> {
    let rest = message.strip_prefix("Reconnecting...")?.trim_start();
    let (count, why) = rest.split_once(' ').unwrap_or((rest, ""));
    let (attempt, of) = count.split_once('/')?;
    let why = why.trim();
    let why = why.strip_prefix('(').and_then(|w| w.strip_suffix(')')).unwrap_or(why);
    // `unexpected status 401 …`, `last status: 429 …`; else the failure's first words.
    let status = why.match_indices("status").find_map(|(i, word)| {
        let code = why[i + word.len()..].trim_start_matches([':', ' ']).get(..3)?;
        code.bytes().all(|b| b.is_ascii_digit()).then_some(code)
    });
    let what = status.map_or_else(|| why.split(':').next().unwrap_or(why).trim().to_owned(), str::to_owned);
    Some(Step::Retry {
        what: clip(&what, 100),
        message: format!("the model API failed ({}); try {attempt} of {of}", clip(why, SUMMARY_CHARS)),
    })
}

fn id(item: &Value) -> String {
    item.get("id").and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// A tool call's name and what it does, for the item types that are tool calls.
fn tool(item: &Value) -> Option<(String, String)> {
    let field = |key: &str| item.get(key).map(short).unwrap_or_default();
    match item.get("type")?.as_str()? {
        "command_execution" => Some(("command".into(), field("command"))),
        "file_change" => {
            let paths: Vec<String> = item
                .get("changes")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(|c| c.get("path").and_then(Value::as_str).map(str::to_owned)).collect())
                .unwrap_or_default();
            Some(("file_change".into(), clip(&paths.join(", "), SUMMARY_CHARS)))
        }
        "mcp_tool_call" => Some((format!("{}.{}", field("server"), field("tool")), field("arguments"))),
        "web_search" => Some(("web_search".into(), field("query"))),
        _ => None,
    }
}
