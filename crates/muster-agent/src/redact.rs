//! Secrets out of everything a run sends: output, steps and reports are
//! redacted on the agent, before they are sent, so no hub, log or
//! transcript ever holds them.
//!
//! Two kinds of rule: the values of the run's own secret environment
//! variables (API keys it was given), matched exactly; and the shapes of
//! well-known credentials (provider keys, GitHub, AWS and Slack tokens,
//! Muster tokens, bearer headers, `password=` assignments).

use regex::Regex;
use std::borrow::Cow;
use std::sync::OnceLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";
/// Environment values shorter than this are not treated as secrets: too
/// likely to occur by chance.
const MIN_SECRET_LEN: usize = 8;

/// Shapes of credentials; a capture group 1, when present, is kept (the
/// `Bearer ` or `password=` before the secret).
fn shapes() -> &'static [Regex] {
    static SHAPES: OnceLock<Vec<Regex>> = OnceLock::new();
    SHAPES.get_or_init(|| {
        [
            r"sk-ant-[A-Za-z0-9_\-]{10,}",
            r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
            r"mst_[A-Za-z0-9_\-]{20,}",
            r"gh[pousr]_[A-Za-z0-9]{30,}",
            r"github_pat_[A-Za-z0-9_]{20,}",
            r"glpat-[A-Za-z0-9_\-]{20,}",
            r"AKIA[0-9A-Z]{16}",
            r"xox[abprs]-[A-Za-z0-9\-]{10,}",
            r"AIza[0-9A-Za-z_\-]{35}",
            r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{16,}",
            // Also inside JSON held in a JSON string, where quotes come escaped: `{\"api_key\": \"…\"}`.
            r#"(?i)((?:api[_\-]?key|secret|password|passwd|token|auth)\\?["']?\s*[:=]\s*\\?["']?)[^\s"'\\,;&]{8,}"#,
        ]
        .iter()
        .map(|p| Regex::new(p).expect("a valid pattern"))
        .collect()
    })
}

/// Redacts one run's text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Exact secret values, longest first.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for a run whose environment holds `env` (name, value):
    /// values of variables named like secrets are redacted wherever they appear.
    pub fn new<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut secrets: Vec<String> = env
            .into_iter()
            .filter(|(name, value)| secret_name(name) && value.len() >= MIN_SECRET_LEN)
            .map(|(_, value)| value.to_owned())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        for shape in shapes() {
            if shape.is_match(&out) {
                let replaced = shape.replace_all(&out, |c: &regex::Captures<'_>| {
                    format!("{}{REDACTED}", c.get(1).map_or("", |m| m.as_str()))
                });
                out = Cow::Owned(replaced.into_owned());
            }
        }
        out
    }
}

fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH"].iter().any(|w| upper.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_credentials_and_the_runs_own_secrets_are_redacted() {
        let r = Redactor::new([("ANTHROPIC_API_KEY", "plain-looking-value-123"), ("HOME", "/home/someone")]);
        for (text, want) in [
            ("key is plain-looking-value-123 ok", "key is [REDACTED] ok"),
            ("export ANTHROPIC_API_KEY=sk-ant-api03-abcdefghijklmnop", "export ANTHROPIC_API_KEY=[REDACTED]"),
            (
                "curl -H 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz'",
                "curl -H 'Authorization: Bearer [REDACTED]'",
            ),
            ("OPENAI sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX", "OPENAI [REDACTED]"),
            ("token ghp_0123456789abcdefghijklmnopqrstuvwxyz", "token [REDACTED]"),
            ("aws AKIAIOSFODNN7EXAMPLE!", "aws [REDACTED]!"),
            ("password: hunter2hunter2", "password: [REDACTED]"),
            (r#"{"api_key": "abcdefgh12345678"}"#, r#"{"api_key": "[REDACTED]"}"#),
            (r#"{"content":"{\"password\": \"hunter2hunter2\"}"}"#, r#"{"content":"{\"password\": \"[REDACTED]\"}"}"#),
            ("MUSTER_TOKEN=mst_abcdefghijkl_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", "MUSTER_TOKEN=[REDACTED]"),
        ] {
            assert_eq!(r.redact(text), want, "{text}");
        }
        assert_eq!(r.redact("/home/someone is not a secret"), "/home/someone is not a secret");
        assert!(matches!(r.redact("nothing to see here"), Cow::Borrowed(_)), "clean text is not copied");
    }

    #[test]
    fn short_values_are_not_taken_for_secrets() {
        let r = Redactor::new([("GITHUB_TOKEN", "abc")]);
        assert_eq!(r.redact("abc abc"), "abc abc");
    }
}
