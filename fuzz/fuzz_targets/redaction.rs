//! Redaction: a run's secret never survives `redact`, and what a piece
//! holds back is a whole end of it, however the text is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_agent::redact::{REDACTED, Redactor};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (secret, text) = text.split_once('\n').unwrap_or(("correct-horse-battery", text));
    let r = Redactor::new([("SERVICE_API_KEY", secret)]);
    let clean = r.redact(text);
    // Outside the markers that replaced things, no trace of the secret.
    if secret.len() >= 8 {
        for piece in clean.split(REDACTED) {
            assert!(!piece.contains(secret), "{secret:?} survived in {clean:?}");
        }
    }
    let held = r.held_back(text);
    assert!(held <= text.len() && text.is_char_boundary(text.len() - held), "held {held} of {text:?}");
});
