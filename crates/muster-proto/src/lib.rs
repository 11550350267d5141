//! Muster's wire formats: the REST API's JSON bodies and the agent
//! WebSocket protocol. This is the only crate that serializes; domain types
//! from `muster-core` are converted by hand here, so the public API never
//! changes because a domain type did.

pub mod api;
mod words;
pub mod ws;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_core::Millis;
use serde::de::DeserializeOwned;

/// The API version prefix every REST route lives under.
pub const API_PREFIX: &str = "/api/v1";

/// A field of a request that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path to the field, or empty when the body as a whole is wrong.
    pub field: String,
    pub reason: String,
}

impl From<muster_core::Invalid> for FieldError {
    fn from(e: muster_core::Invalid) -> FieldError {
        FieldError { field: e.field.to_owned(), reason: e.reason }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() { f.write_str(&self.reason) } else { write!(f, "{}: {}", self.field, self.reason) }
    }
}

/// Parses a JSON body, naming the field at fault when it does not fit.
/// A body that is not well-formed JSON (including anything after the value)
/// names no field: the body as a whole is wrong.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    // Most bodies fit; only one that does not is read again, keeping track
    // of where it is, to say which field is at fault.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let malformed = |e: serde_json::Error| FieldError { field: String::new(), reason: format!("malformed JSON: {e}") };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return malformed(inner);
        }
        // The path already ends in the unknown field's name when there is one.
        FieldError { field: if path == "." { String::new() } else { path }, reason: inner.to_string() }
    })?;
    de.end().map_err(malformed)?;
    Ok(value)
}

pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types always serialize")
}

/// An instant as RFC 3339 with milliseconds, in UTC.
pub fn timestamp(m: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(m.0.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn parse_timestamp(s: &str) -> Option<Millis> {
    let t: SystemTime = humantime::parse_rfc3339_weak(s).ok()?;
    Some(Millis(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64))
}

/// A duration as people write it: `90s`, `5m`, `1h 30m`.
pub fn human_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// A duration in exact units, as settings are written: `90d`, `1h30m`, `250ms`.
/// Unlike `human_duration`, never in months or years, whose length varies.
pub fn setting_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        let n = rest / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            rest -= n * size;
        }
    }
    out
}

/// Parses `90`, `1.5` (seconds) or `90s`, `5m`, `1h30m`.
pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, FieldError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(field, secs);
    }
    humantime::parse_duration(s).map_err(|e| FieldError {
        field: field.to_owned(),
        reason: format!("{s:?} is not a duration ({e}); write for example 90s, 5m or 1h30m"),
    })
}

fn seconds(field: &'static str, secs: f64) -> Result<Duration, FieldError> {
    if !secs.is_finite() || secs <= 0.0 {
        return Err(FieldError { field: field.to_owned(), reason: format!("must be greater than zero, got {secs}") });
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| FieldError { field: field.to_owned(), reason: format!("{secs} seconds is out of range") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TaskSubmit;

    #[test]
    fn setting_durations_use_exact_units() {
        for (ms, shown) in
            [(0, "0s"), (250, "250ms"), (90_000, "1m30s"), (7_776_000_000, "90d"), (3_601_500, "1h1s500ms")]
        {
            let d = Duration::from_millis(ms);
            assert_eq!(setting_duration(d), shown);
            assert_eq!(parse_duration("d", shown).unwrap(), d, "{shown} reads back");
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let err = from_json::<TaskSubmit>(br#"{"prompt":"x","colour":"red"}"#).unwrap_err();
        assert_eq!(err.field, "colour");
        assert!(err.reason.contains("unknown field"), "{}", err.reason);
    }

    #[test]
    fn wrong_type_names_the_path() {
        let err = from_json::<TaskSubmit>(br#"{"prompt":"x","max_attempts":"three"}"#).unwrap_err();
        assert_eq!(err.field, "max_attempts");
    }

    #[test]
    fn malformed_json_says_so_and_names_no_field() {
        for body in [
            &br#"{"prompt": "#[..],
            br#"{"prompt":"x" "runner":"shell"}"#,
            br#"{"prompt":"x"} trailing"#,
            br#"{"prompt":"x"}}"#,
        ] {
            let err = from_json::<TaskSubmit>(body).unwrap_err();
            assert!(err.reason.starts_with("malformed JSON"), "{}", err.reason);
            assert_eq!(err.field, "", "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn durations_in_both_forms() {
        assert_eq!(parse_duration("timeout", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("timeout", "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("timeout", "0").unwrap_err().field, "timeout");
        assert!(parse_duration("timeout", "-5").is_err());
        assert!(parse_duration("timeout", "soon").is_err());
    }

    #[test]
    fn timestamps_round_trip() {
        let m = Millis(1_763_700_000_123);
        assert_eq!(parse_timestamp(&timestamp(m)), Some(m));
    }
}
