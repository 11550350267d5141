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
            r"mtt_[A-Za-z0-9]+_[0-9]+_[0-9a-f]{16,}",
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

/// How credentials of a known shape begin; a piece of output that ends in
/// the middle of one waits for the rest.
const SHAPE_STARTS: &[&str] = &[
    "sk-",
    "mst_",
    "mtt_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "AKIA",
    "xoxa-",
    "xoxb-",
    "xoxp-",
    "xoxr-",
    "xoxs-",
    "AIza",
];

/// Words after which the next word is a secret (`Bearer …`, `password=…`).
const SECRET_KEYS: &[&str] =
    &["bearer", "api_key", "api-key", "apikey", "secret", "password", "passwd", "token", "auth"];

/// Bytes that no credential contains: a secret never spans one.
fn delimiter(b: u8) -> bool {
    b.is_ascii_whitespace() || b"\"',;<>()[]{}`".contains(&b)
}

impl Redactor {
    /// How many bytes at the end of `text` must wait for what follows
    /// before they are sent, because the next piece could complete a secret
    /// that begins there: the longest end of `text` that begins one of the
    /// run's secrets; a last word that begins a credential's shape (`sk-…`,
    /// `mtt_…`); or a key whose value may follow (`Bearer abc`, `password=`,
    /// `"api_key": "`, or a bare `Bearer`), held from the key on because the
    /// rules that find such a value need its key beside it. Anything else
    /// goes: a prompt that ends in an ordinary word is shown whole.
    pub fn held_back(&self, text: &str) -> usize {
        let mut held = 0;
        for secret in &self.secrets {
            let longest = secret.len().saturating_sub(1).min(text.len());
            if let Some(k) = (1..=longest).rev().find(|&k| secret.is_char_boundary(k) && text.ends_with(&secret[..k])) {
                held = held.max(k);
            }
        }
        let word_start = text.as_bytes().iter().rposition(|&b| delimiter(b)).map_or(0, |i| i + 1);
        let word = &text[word_start..];
        // A shape starts a word, or follows what no credential has inside
        // it (`KEY=sk-…`, `--token=ghp_…`); `items` does not begin `sk-`.
        let shaped = (0..word.len())
            .filter(|&i| word.is_char_boundary(i) && (i == 0 || !word.as_bytes()[i - 1].is_ascii_alphanumeric()))
            .find(|&i| {
                let rest = &word[i..];
                SHAPE_STARTS.iter().any(|start| rest.starts_with(start) || start.starts_with(rest))
            });
        if let Some(i) = shaped {
            held = held.max(word.len() - i);
        }
        if let Some(from) = key_start(text, word_start) {
            held = held.max(text.len() - from);
        }
        held
    }
}

/// Where a key whose value may still come begins, when `text` ends with it:
/// `password=hun` or `password=` (the key is in the last word), a bare key
/// or the start of one (`Bearer`, `pass`), or a key and the separators
/// before its value, perhaps with the value's first part (`Bearer abc`,
/// `"api_key": "x`, `password: `).
fn key_start(text: &str, word_start: usize) -> Option<usize> {
    let word = text[word_start..].to_ascii_lowercase();
    let is_key = |k: &str| SECRET_KEYS.iter().any(|key| k.ends_with(key));
    // `Bearer abc`, `password: `: a key, then separators, then perhaps the
    // value's start (a last word of only `:` or `=` is a separator too).
    let only_seps = word.chars().all(|c| c == ':' || c == '=');
    let head = if only_seps { text } else { &text[..word_start] };
    let seps_at = head.trim_end_matches(|c: char| c.is_whitespace() || "\"':=\\".contains(c)).len();
    let seps = &head[seps_at..];
    // After the last character no key holds (which may be wider than a byte).
    let key_at = head[..seps_at]
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let key = head[key_at..seps_at].to_ascii_lowercase();
    let value_started = !only_seps;
    let bearer = key.ends_with("bearer") && (!value_started || seps.chars().any(char::is_whitespace));
    // Before the value starts, its `:` or `=` may still be on its way (`"api_key"`).
    if bearer || (is_key(&key) && (!value_started || seps.contains([':', '=']))) {
        return Some(key_at);
    }
    // `password=hun`, `password=`: the key is in the last word.
    if let Some(i) = word.find(['=', ':'])
        && is_key(word[..i].trim_matches(['"', '\'', '\\']))
    {
        return Some(word_start);
    }
    // The last word is a key, or may become one, at a word's boundary
    // (`Bearer`, `OPENAI_API_KEY`, `pass`; not `OAuth`).
    let bare = (0..word.len())
        .filter(|&i| word.is_char_boundary(i) && (i == 0 || matches!(word.as_bytes()[i - 1], b'_' | b'-' | b'.')))
        .any(|i| SECRET_KEYS.iter().any(|k| k.starts_with(&word[i..])));
    (!word.is_empty() && bare).then_some(word_start)
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
    fn a_piece_that_ends_where_a_secret_may_begin_holds_back_only_that() {
        let r = Redactor::new([("MUSTER_TASK_TOKEN", "mtt_01abc_3_0123456789abcdef0123456789abcdef")]);
        for (text, held) in [
            ("progress 50%\n", 0),
            ("Enter a name: ", 0),
            ("continue? [y/N]", 0),
            ("copied 3 items", 0),
            ("signed in with OAuth", 0),
            ("plain words here", 0),
            ("the token is mtt_01", 6),
            ("the token is m", 1),
            ("export OPENAI_API_KEY=sk-pr", 20),
            ("export OPENAI_API_KEY=", 15),
            ("Authorization: Bearer abcd", 11),
            ("Authorization: Bearer ", 7),
            ("Authorization: Bearer", 6),
            ("password=hunt", 13),
            ("password: ", 10),
            ("your pass", 4),
            (r#"{"api_key": "abc"#, 14),
            ("ghp_0123", 8),
        ] {
            assert_eq!(r.held_back(text), held, "{text:?}");
        }
    }

    /// A secret split across two pieces is never sent in part, wherever
    /// the cut falls: the run's own token, and credentials found only by
    /// their shape or their key.
    #[test]
    fn a_secret_cut_anywhere_is_redacted_whole_when_pieces_hold_back_their_ends() {
        let token = "mtt_01hf7yat000000000000000003_7_5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let r = Redactor::new([("MUSTER_TASK_TOKEN", token)]);
        let cases = [
            (format!("my token is {token} ok\n"), "5bdcc146bf60"),
            ("curl -H 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345'\n".to_owned(), "ghijklmnop"),
            ("password: hunter2hunter2 ok\n".to_owned(), "hunter2hun"),
            (r#"{"api_key": "zyxwvutsrqponm"}"#.to_owned() + "\n", "utsrqpon"),
            ("export OPENAI_API_KEY=sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX\n".to_owned(), "FGHIJKLMNO"),
        ];
        for (line, inside) in cases {
            for cut in (1..line.len()).filter(|&c| line.is_char_boundary(c)) {
                let first = &line[..cut];
                let hold = r.held_back(first);
                let mut sent = r.redact(&first[..first.len() - hold]).into_owned();
                sent.push_str(&r.redact(&format!("{}{}", &first[first.len() - hold..], &line[cut..])));
                let windows = (0..inside.len() - 5).map(|i| &inside[i..i + 6]);
                for w in windows {
                    assert!(!sent.contains(w), "cut at {cut} of {line:?} sent {w:?}: {sent:?}");
                }
                assert!(sent.contains(REDACTED), "cut at {cut}: {sent:?}");
            }
        }
    }

    /// Found by the `redaction` fuzz target: a key after a character wider
    /// than a byte.
    #[test]
    fn a_key_after_a_wide_character_is_found_on_a_character_boundary() {
        let r = Redactor::default();
        assert_eq!(r.held_back("skӋrt "), 0);
        assert_eq!(r.held_back("Ӌpassword: "), "password: ".len());
    }

    #[test]
    fn short_values_are_not_taken_for_secrets() {
        let r = Redactor::new([("GITHUB_TOKEN", "abc")]);
        assert_eq!(r.redact("abc abc"), "abc abc");
    }
}
