//! Reading a coding agent's event stream as it comes.
//!
//! Claude Code (`claude -p --output-format stream-json --verbose`) and Codex
//! (`codex exec --json`) print one JSON object per line. A `StreamParser`
//! takes the bytes in whatever pieces the pipe delivers, splits them into
//! lines (a line longer than the limit is skipped whole, never buffered),
//! hands each to its dialect, and keeps a `Summary` of the run: session,
//! steps, tool calls, tokens, cost and how it ended.
//!
//! Nothing an agent prints can make it panic or grow without bound: an
//! unreadable line becomes an `Unreadable` step with the reason, and a stream
//! that stops without its final report says so in `Summary::ended`.

mod claude;
mod codex;
mod limits;
mod prices;
mod recorder;

pub use claude::Claude;
pub use codex::Codex;
pub use limits::provider_limit;
pub use prices::Prices;
pub use recorder::{Recorder, run_report, verdict};

/// Lines longer than this are skipped (their length is noted).
pub const MAX_LINE_BYTES: usize = 4 << 20;
/// Text kept in a step's summary or a final message, in characters.
const SUMMARY_CHARS: usize = 200;
const FINAL_TEXT_CHARS: usize = 4000;

/// Tokens, as agents report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Input written to the provider's prompt cache.
    pub cache_write_tokens: u64,
}

impl Usage {
    fn add(&mut self, other: Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(other.cache_write_tokens);
    }
}

/// The agent's own final report of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The agent considers the run a success.
    pub ok: bool,
    /// The agent's word for how it ended (`success`, `error_max_turns`, ...).
    pub subtype: String,
    pub turns: Option<u32>,
    /// Totals for the run, where the agent reports them at the end.
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    pub duration_ms: Option<u64>,
    pub final_text: Option<String>,
}

/// One thing the agent did, as Muster records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Session {
        id: String,
        model: Option<String>,
    },
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        summary: String,
    },
    ToolResult {
        id: String,
        is_error: bool,
        summary: String,
    },
    /// Tokens one turn used.
    Usage(Usage),
    /// The agent's error message that did not end the run by itself.
    Error {
        message: String,
    },
    /// The model API failed and the agent tries again: Claude Code's
    /// `api_retry`, Codex's `Reconnecting…`. `what` is the status (`401`,
    /// `529`), or else the failure in the agent's words (`unknown`).
    Retry {
        what: String,
        message: String,
    },
    Report(Report),
    /// A line that could not be read, and why.
    Unreadable {
        reason: String,
    },
}

/// What a stream said, so far or in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub steps: u64,
    pub tool_uses: u64,
    pub tool_errors: u64,
    /// Tokens summed over turns; replaced by the final report's totals when it has them.
    pub usage: Usage,
    pub report: Option<Report>,
    /// The latest text or tool use, for "what is it doing now".
    pub latest: Option<String>,
    pub unreadable: u64,
    pub last_error: Option<String>,
    /// Why the stream is not a complete run, once it has ended: no final
    /// report, or the last line cut off.
    pub ended: Option<String>,
}

impl Summary {
    fn record(&mut self, step: &Step) {
        self.steps += 1;
        match step {
            Step::Session { id, model } => {
                self.session_id = Some(id.clone());
                if model.is_some() {
                    self.model = model.clone();
                }
            }
            Step::Text { text } => self.latest = Some(clip(text, SUMMARY_CHARS)),
            Step::ToolUse { name, summary, .. } => {
                self.tool_uses += 1;
                self.latest = Some(if summary.is_empty() { name.clone() } else { format!("{name}: {summary}") });
            }
            Step::ToolResult { is_error, .. } => self.tool_errors += u64::from(*is_error),
            Step::Usage(u) => self.usage.add(*u),
            Step::Error { message } => self.last_error = Some(message.clone()),
            // A retry the agent got past says nothing about how the run ended.
            Step::Retry { .. } => {}
            Step::Report(r) => {
                if let Some(total) = r.usage {
                    self.usage = total;
                }
                self.report = Some(r.clone());
            }
            Step::Unreadable { .. } => self.unreadable += 1,
        }
    }
}

/// How one agent's lines are read.
pub trait Dialect {
    /// The steps in one complete line (without its newline).
    fn line(&mut self, line: &[u8]) -> Vec<Step>;
}

/// Splits bytes into lines and reads each with `D`.
pub struct StreamParser<D> {
    dialect: D,
    buf: Vec<u8>,
    /// Inside a line already over the limit: drop bytes to its end.
    skipping: Option<usize>,
    summary: Summary,
    redactor: Option<std::sync::Arc<crate::redact::Redactor>>,
}

impl<D: Dialect> StreamParser<D> {
    pub fn new(dialect: D) -> StreamParser<D> {
        StreamParser { dialect, buf: Vec::new(), skipping: None, summary: Summary::default(), redactor: None }
    }

    /// A parser that redacts each line before reading it.
    pub fn with_redactor(dialect: D, redactor: std::sync::Arc<crate::redact::Redactor>) -> StreamParser<D> {
        StreamParser { redactor: Some(redactor), ..StreamParser::new(dialect) }
    }

    /// Takes the next bytes of the stream; returns the steps completed by them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (piece, rest, ends_line) = match newline {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if let Some(skipped) = self.skipping.as_mut() {
                *skipped += piece.len();
            } else if self.buf.len() + piece.len() > MAX_LINE_BYTES {
                self.skipping = Some(self.buf.len() + piece.len());
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(piece);
            }
            if ends_line {
                if let Some(len) = self.skipping.take() {
                    steps.push(Step::Unreadable {
                        reason: format!("a line of {len} bytes is over the {MAX_LINE_BYTES}-byte limit"),
                    });
                } else {
                    let line = std::mem::take(&mut self.buf);
                    steps.extend(self.read(&line));
                }
            }
        }
        for step in &steps {
            self.summary.record(step);
        }
        steps
    }

    fn read(&mut self, line: &[u8]) -> Vec<Step> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Vec::new();
        }
        if let (Some(redactor), Ok(text)) = (&self.redactor, std::str::from_utf8(line))
            && let std::borrow::Cow::Owned(clean) = redactor.redact(text)
        {
            return self.dialect.line(clean.as_bytes());
        }
        self.dialect.line(line)
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The stream has ended: reads a last line that had no newline and says
    /// whether the run's report was seen. Returns the steps that last line
    /// completed, and the whole summary.
    pub fn finish(mut self) -> (Vec<Step>, Summary) {
        let mut cut = false;
        let mut steps = Vec::new();
        if self.skipping.is_some() {
            steps = self.feed(b"\n");
        } else if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            steps = self.read(&line);
            cut = steps.iter().any(|s| matches!(s, Step::Unreadable { .. }));
            for step in &steps {
                self.summary.record(step);
            }
        }
        if self.summary.report.is_none() {
            self.summary.ended = Some(if cut {
                "the stream was cut off mid-line, before the agent's final report".to_owned()
            } else {
                "the stream ended without the agent's final report".to_owned()
            });
        }
        (steps, self.summary)
    }
}

/// `text` cut to `max` characters, on a character boundary, marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A JSON value as one short line, for a tool input or result no rule knows.
fn short(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => clip(&s.replace('\n', " "), SUMMARY_CHARS),
        serde_json::Value::Null => String::new(),
        other => clip(&other.to_string(), SUMMARY_CHARS),
    }
}

fn unreadable(e: impl std::fmt::Display) -> Step {
    Step::Unreadable { reason: clip(&e.to_string(), SUMMARY_CHARS) }
}

fn text_of(value: Option<&serde_json::Value>, max: usize) -> Option<String> {
    value.and_then(serde_json::Value::as_str).map(|s| clip(s, max))
}

fn u64_of(value: Option<&serde_json::Value>) -> u64 {
    value.and_then(serde_json::Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
