//! Claude Code's `--output-format stream-json --verbose` lines: `system`
//! (init: session and model), `assistant` and `user` (a Messages API message
//! under `message`: text, tool uses, tool results), and the closing `result`
//! (subtype, `is_error`, `num_turns`, `usage`, `total_cost_usd`,
//! `duration_ms`). Other line types are read and passed over.

use super::{Dialect, FINAL_TEXT_CHARS, Report, SUMMARY_CHARS, Step, Usage, clip, short, text_of, u64_of, unreadable};
use serde_json::Value;

/// Message ids whose usage was counted, at most; past that, usage comes from the final report only.
const MAX_COUNTED_MESSAGES: usize = 10_000;

#[derive(Debug, Default)]
pub struct Claude {
    /// Assistant messages whose usage was counted: a message split over
    /// several lines repeats its usage on each.
    counted: std::collections::HashSet<String>,
}

impl Dialect for Claude {
    fn line(&mut self, line: &[u8]) -> Vec<Step> {
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return vec![unreadable(format_args!("not JSON: {e}"))],
        };
        match v.get("type").and_then(Value::as_str) {
            Some("system") if v.get("subtype").and_then(Value::as_str) == Some("init") => {
                match v.get("session_id").and_then(Value::as_str) {
                    Some(id) => vec![Step::Session { id: id.to_owned(), model: text_of(v.get("model"), 100) }],
                    None => vec![unreadable("an init line without a session_id")],
                }
            }
            Some("system") if v.get("subtype").and_then(Value::as_str) == Some("api_retry") => vec![retry(&v)],
            Some("assistant") => {
                let mut steps: Vec<Step> = blocks(&v).iter().filter_map(assistant_block).collect();
                if let Some(usage) = self.usage_once(&v) {
                    steps.push(Step::Usage(usage));
                }
                steps
            }
            Some("user") => blocks(&v).iter().filter_map(user_block).collect(),
            Some("result") => vec![Step::Report(report(&v))],
            Some(_) => Vec::new(),
            None => vec![unreadable("a line without a type")],
        }
    }
}

impl Claude {
    /// The usage an assistant message reports, the first time its id is seen:
    /// so a run cut off before its final report still counts what it used.
    fn usage_once(&mut self, v: &Value) -> Option<Usage> {
        let id = v.pointer("/message/id")?.as_str()?;
        let u = v.pointer("/message/usage").filter(|u| u.is_object())?;
        if self.counted.len() >= MAX_COUNTED_MESSAGES || !self.counted.insert(clip(id, 200)) {
            return None;
        }
        Some(usage(u))
    }
}

/// `{"subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":567,
/// "error_status":401,"error":"authentication_failed"}`: a failed model
/// request Claude Code is about to try again.
fn retry(v: &Value) -> Step {
    let error = text_of(v.get("error"), 100).unwrap_or_else(|| "unknown".to_owned());
    let status = v.get("error_status").and_then(Value::as_u64);
    let what = status.map_or_else(|| error.clone(), |s| s.to_string());
    let attempt = |key: &str| v.get(key).and_then(Value::as_u64).map_or_else(|| "?".to_owned(), |n| n.to_string());
    let delay = v.get("retry_delay_ms").and_then(Value::as_u64).unwrap_or(0);
    let failed = match status {
        Some(s) => format!("{s} {error}"),
        None => error,
    };
    Step::Retry {
        what,
        message: format!(
            "the model API failed ({failed}); try {} of {} in {}",
            attempt("attempt"),
            attempt("max_retries"),
            muster_proto::setting_duration(std::time::Duration::from_millis(delay))
        ),
    }
}

fn usage(u: &Value) -> Usage {
    Usage {
        input_tokens: u64_of(u.get("input_tokens")),
        output_tokens: u64_of(u.get("output_tokens")),
        cache_read_tokens: u64_of(u.get("cache_read_input_tokens")),
        cache_write_tokens: u64_of(u.get("cache_creation_input_tokens")),
    }
}

fn blocks(v: &Value) -> Vec<Value> {
    match v.pointer("/message/content") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(s)) => vec![serde_json::json!({ "type": "text", "text": s })],
        _ => Vec::new(),
    }
}

fn assistant_block(b: &Value) -> Option<Step> {
    match b.get("type")?.as_str()? {
        "text" => {
            let text = b.get("text")?.as_str()?;
            (!text.trim().is_empty()).then(|| Step::Text { text: clip(text, FINAL_TEXT_CHARS) })
        }
        "tool_use" => {
            let name = b.get("name").and_then(Value::as_str).unwrap_or("?").to_owned();
            let summary = tool_summary(&name, b.get("input").unwrap_or(&Value::Null));
            let id = b.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
            Some(Step::ToolUse { id, name, summary })
        }
        _ => None,
    }
}

fn user_block(b: &Value) -> Option<Step> {
    if b.get("type")?.as_str()? != "tool_result" {
        return None;
    }
    let summary = match b.get("content") {
        Some(Value::Array(parts)) => {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            clip(&texts.join(" ").replace('\n', " "), SUMMARY_CHARS)
        }
        Some(other) => short(other),
        None => String::new(),
    };
    Some(Step::ToolResult {
        id: b.get("tool_use_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        summary,
    })
}

/// The part of a tool's input that says what it does.
fn tool_summary(name: &str, input: &Value) -> String {
    let field = |key: &str| input.get(key).map(short);
    let known = match name {
        "Bash" => field("command"),
        "Read" | "Write" | "Edit" | "MultiEdit" => field("file_path"),
        "NotebookEdit" => field("notebook_path"),
        "Glob" | "Grep" => field("pattern"),
        "WebFetch" => field("url"),
        "WebSearch" => field("query"),
        "Task" => field("description"),
        "TodoWrite" => input.get("todos").and_then(Value::as_array).map(|t| format!("{} items", t.len())),
        _ => None,
    };
    known.unwrap_or_else(|| short(input))
}

fn report(v: &Value) -> Report {
    let usage = v.get("usage").filter(|u| u.is_object()).map(usage);
    let subtype = v.get("subtype").and_then(Value::as_str).unwrap_or("unknown").to_owned();
    let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(subtype != "success");
    Report {
        ok: !is_error && subtype == "success",
        subtype,
        turns: v.get("num_turns").and_then(Value::as_u64).map(|n| n.min(u64::from(u32::MAX)) as u32),
        usage,
        cost_usd: v.get("total_cost_usd").and_then(Value::as_f64).filter(|c| c.is_finite() && *c >= 0.0),
        duration_ms: v.get("duration_ms").and_then(Value::as_u64),
        final_text: text_of(v.get("result"), FINAL_TEXT_CHARS),
    }
}
