//! What the hub records of a coding agent's stream: each step as a message,
//! tool calls timed from their use to their result, and the run's report.

use super::{Claude, Codex, Step, StreamParser, Summary, clip};
use crate::config::Format;
use muster_proto::ws::{RunReport, StepMsg};
use std::collections::HashMap;
use std::time::Instant;

/// Characters of a step's text sent to the hub.
const STEP_CHARS: usize = 1_000;
/// Characters kept of a tool's name or id.
const NAME_CHARS: usize = 200;
/// Tool calls timed at once; a stream that opens more without results is
/// not timed past this.
const MAX_OPEN_TOOLS: usize = 10_000;

enum Parser {
    Claude(StreamParser<Claude>),
    Codex(StreamParser<Codex>),
}

/// Reads one run's standard output as its agent's event stream.
pub struct Recorder {
    parser: Parser,
    /// Tool calls awaiting their result: name and when they began.
    open: HashMap<String, (String, Instant)>,
}

impl Recorder {
    /// Each line is redacted before it is read, so nothing taken from it
    /// (a step's summary, the final text) is cut through a secret.
    pub fn new(format: Format, redactor: std::sync::Arc<crate::redact::Redactor>) -> Recorder {
        let parser = match format {
            Format::Claude => Parser::Claude(StreamParser::with_redactor(Claude::default(), redactor)),
            Format::Codex => Parser::Codex(StreamParser::with_redactor(Codex::default(), redactor)),
        };
        Recorder { parser, open: HashMap::new() }
    }

    /// Takes the next bytes of standard output; returns the steps they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<StepMsg> {
        let steps = match &mut self.parser {
            Parser::Claude(p) => p.feed(bytes),
            Parser::Codex(p) => p.feed(bytes),
        };
        steps.into_iter().filter_map(|s| Self::message(&mut self.open, s)).collect()
    }

    /// What the stream has said so far.
    pub fn summary(&self) -> &Summary {
        match &self.parser {
            Parser::Claude(p) => p.summary(),
            Parser::Codex(p) => p.summary(),
        }
    }

    /// The stream has ended: the steps its unfinished last line completed,
    /// and what it said in all.
    pub fn finish(mut self) -> (Vec<StepMsg>, Summary) {
        let (steps, summary) = match self.parser {
            Parser::Claude(p) => p.finish(),
            Parser::Codex(p) => p.finish(),
        };
        let steps = steps.into_iter().filter_map(|s| Self::message(&mut self.open, s)).collect();
        (steps, summary)
    }

    fn message(open: &mut HashMap<String, (String, Instant)>, step: Step) -> Option<StepMsg> {
        let msg = |kind: &str, name: Option<String>, summary: &str, is_error: bool| StepMsg {
            kind: kind.to_owned(),
            name: name.map(|n| clip(&n, NAME_CHARS)),
            summary: clip(summary, STEP_CHARS),
            is_error,
            duration_ms: None,
        };
        Some(match step {
            Step::Session { id, model } => msg("session", model, &id, false),
            Step::Text { text } => msg("text", None, &text, false),
            Step::ToolUse { id, name, summary } => {
                if open.len() < MAX_OPEN_TOOLS && !id.is_empty() {
                    open.insert(clip(&id, NAME_CHARS), (clip(&name, NAME_CHARS), Instant::now()));
                }
                msg("tool_use", Some(name), &summary, false)
            }
            Step::ToolResult { id, is_error, summary } => {
                let opened = open.remove(&clip(&id, NAME_CHARS));
                let mut m = msg("tool_result", opened.as_ref().map(|(name, _)| name.clone()), &summary, is_error);
                m.duration_ms = opened.map(|(_, at)| at.elapsed().as_millis().min(u128::from(u64::MAX)) as u64);
                m
            }
            Step::Usage(_) => return None,
            Step::Error { message } => msg("error", None, &message, true),
            Step::Retry { what, message } => msg("retry", Some(what), &message, true),
            Step::Report(r) => msg("result", Some(r.subtype.clone()), r.final_text.as_deref().unwrap_or(""), !r.ok),
            Step::Unreadable { reason } => msg("unreadable", None, &reason, true),
        })
    }
}

/// The report the hub keeps for a run whose stream said `s`.
pub fn run_report(s: &Summary) -> RunReport {
    let report = s.report.as_ref();
    RunReport {
        session_id: s.session_id.clone(),
        model: s.model.clone(),
        turns: report.and_then(|r| r.turns),
        input_tokens: s.usage.input_tokens,
        output_tokens: s.usage.output_tokens,
        cache_read_tokens: s.usage.cache_read_tokens,
        cache_write_tokens: s.usage.cache_write_tokens,
        cost_usd: report.and_then(|r| r.cost_usd),
        result: report.and_then(|r| r.final_text.clone()).or_else(|| s.latest.clone()),
        tool_uses: s.tool_uses,
        tool_errors: s.tool_errors,
    }
}

/// Why a run whose process exited with `code` failed in its agent's eyes,
/// or `None` when both agree it succeeded.
pub fn verdict(s: &Summary, code: i32) -> Option<String> {
    let detail = |r: &super::Report| {
        // Claude Code ends a run the model API failed as `success` marked `is_error`.
        let said = if !r.ok && r.subtype == "success" { "an error" } else { r.subtype.as_str() };
        match &r.final_text {
            Some(text) => format!("the agent reported {said}: {}", clip(text, 200)),
            None => format!("the agent reported {said}"),
        }
    };
    match (&s.report, code) {
        (Some(r), 0) if r.ok => None,
        (Some(r), 0) => Some(detail(r)),
        (None, 0) => Some(format!(
            "exit code 0, but {}",
            s.ended.as_deref().unwrap_or("the stream ended without the agent's final report")
        )),
        (Some(r), code) if !r.ok => Some(format!("exit code {code}; {}", detail(r))),
        (_, code) => match &s.last_error {
            Some(e) => Some(format!("exit code {code}; the agent's last error: {}", clip(e, 200))),
            None => Some(format!("exit code {code}")),
        },
    }
}
