//! Recognising a provider's rate or usage limit in what a coding agent said
//! when its run failed, and when the limit resets if it said.

use super::{Summary, clip};
use muster_proto::ws::ProviderLimit;
use regex::Regex;
use std::sync::OnceLock;

/// How the agents word a limit: Anthropic's `rate_limit_error` and Claude
/// Code's `usage limit reached`, OpenAI's `Rate limit reached`, `You've hit
/// your usage limit` and `insufficient_quota`, and plain HTTP 429.
fn limit_words() -> &'static Regex {
    static WORDS: OnceLock<Regex> = OnceLock::new();
    WORDS.get_or_init(|| {
        Regex::new(
            r"(?i)rate[ _-]?limit|usage[ _-]?limit|too many requests|\b429\b|quota[ _-]?exceeded|insufficient_quota|exceeded your current quota",
        )
        .expect("a valid pattern")
    })
}

/// Claude Code's `Claude AI usage limit reached|<reset, in Unix seconds>`.
fn claude_reset() -> &'static Regex {
    static RESET: OnceLock<Regex> = OnceLock::new();
    RESET.get_or_init(|| Regex::new(r"(?i)limit reached\|(\d{9,11})").expect("a valid pattern"))
}

/// `try again in 1.5s`, `Please try again in 20 minutes`, `retry after 30`.
fn try_again() -> &'static Regex {
    static AGAIN: OnceLock<Regex> = OnceLock::new();
    AGAIN.get_or_init(|| {
        Regex::new(r"(?i)(?:try again in|retry[ -]after:?)\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)?")
            .expect("a valid pattern")
    })
}

/// The limit a failed run's stream reports, if any; `now_ms` is the agent's clock.
pub fn provider_limit(s: &Summary, now_ms: u64) -> Option<ProviderLimit> {
    let mut texts: Vec<&str> = Vec::new();
    if let Some(r) = s.report.as_ref().filter(|r| !r.ok) {
        texts.push(&r.subtype);
        texts.extend(r.final_text.as_deref());
    }
    texts.extend(s.last_error.as_deref());
    let said = texts.iter().find(|t| limit_words().is_match(t))?;
    let reset_at_ms = texts.iter().find_map(|t| reset_of(t, now_ms));
    Some(ProviderLimit { message: clip(said, 300), reset_at_ms })
}

fn reset_of(text: &str, now_ms: u64) -> Option<u64> {
    if let Some(c) = claude_reset().captures(text) {
        return c[1].parse::<u64>().ok().map(|secs| secs.saturating_mul(1000));
    }
    let c = try_again().captures(text)?;
    let n: f64 = c[1].parse().ok()?;
    let unit = c.get(2).map_or("s", |m| m.as_str()).to_ascii_lowercase();
    let ms = match unit.as_str() {
        u if u.starts_with("ms") || u.starts_with("milli") => n,
        u if u.starts_with('h') => n * 3_600_000.0,
        u if u.starts_with('m') => n * 60_000.0,
        _ => n * 1000.0,
    };
    (ms.is_finite() && ms >= 0.0).then(|| now_ms.saturating_add(ms.min(7.0 * 86_400_000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Report;

    fn failed(text: &str) -> Summary {
        Summary {
            report: Some(Report {
                ok: false,
                subtype: "error_during_execution".into(),
                turns: None,
                usage: None,
                cost_usd: None,
                duration_ms: None,
                final_text: Some(text.into()),
            }),
            ..Summary::default()
        }
    }

    #[test]
    fn the_agents_own_words_for_a_limit_are_recognised_with_their_reset() {
        let now = 1_800_000_000_000;
        let claude = provider_limit(&failed("Claude AI usage limit reached|1800003600"), now).expect("a limit");
        assert_eq!(claude.reset_at_ms, Some(1_800_003_600_000));
        let api =
            failed(r#"API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#);
        assert_eq!(provider_limit(&api, now).expect("a limit").reset_at_ms, None);
        let codex = Summary {
            last_error: Some("Rate limit reached for gpt-5 in organization org-x. Please try again in 1.5s.".into()),
            ..Summary::default()
        };
        assert_eq!(provider_limit(&codex, now).expect("a limit").reset_at_ms, Some(now + 1_500));
        let usage = Summary {
            last_error: Some("You've hit your usage limit. Try again in 20 minutes.".into()),
            ..Summary::default()
        };
        assert_eq!(provider_limit(&usage, now).expect("a limit").reset_at_ms, Some(now + 1_200_000));
        assert_eq!(
            provider_limit(&failed("the tests failed: 3 of 12"), now),
            None,
            "an ordinary failure is not a limit"
        );
        let ok =
            Summary { report: Some(Report { ok: true, ..failed("rate limit").report.unwrap() }), ..Summary::default() };
        assert_eq!(provider_limit(&ok, now), None, "a successful run's words are not read");
    }
}
