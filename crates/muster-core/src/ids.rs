//! Identifiers and names, each parsed once at the edge and trusted after.

use crate::Invalid;
use std::fmt;

/// A task id: `t_` followed by 26 Crockford base32 characters, a 48-bit
/// millisecond timestamp then 80 random bits, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(String);

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

impl TaskId {
    pub const PREFIX: &'static str = "t_";

    /// Builds an id from a creation time and 80 random bits supplied by the caller.
    pub fn from_parts(created_ms: i64, random: u128) -> TaskId {
        let time = (created_ms.max(0) as u128) & ((1u128 << 48) - 1);
        let random = random & ((1u128 << 80) - 1);
        let value = (time << 80) | random;
        let mut out = String::with_capacity(28);
        out.push_str(Self::PREFIX);
        for i in (0..26).rev() {
            let digit = ((value >> (i * 5)) & 0x1f) as usize;
            out.push(CROCKFORD[digit] as char);
        }
        TaskId(out)
    }

    pub fn parse(s: &str) -> Result<TaskId, Invalid> {
        let body = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| Invalid::new("id", format!("task id {s:?} must start with `t_`")))?;
        if body.len() != 26 || !body.bytes().all(|b| CROCKFORD.contains(&b)) {
            return Err(Invalid::new("id", format!("task id {s:?} must be `t_` and 26 lowercase base32 characters")));
        }
        // 26 base32 digits hold 130 bits; the top digit may only carry 3.
        if body.as_bytes()[0] > b'7' {
            return Err(Invalid::new("id", format!("task id {s:?} is out of range")));
        }
        Ok(TaskId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_name(field: &'static str, what: &str, s: &str, extra: &[u8]) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > 64 {
        return Err(Invalid::new(field, format!("{what} must be 1 to 64 characters, got {}", s.len())));
    }
    let bytes = s.as_bytes();
    if !(bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit()) {
        return Err(Invalid::new(field, format!("{what} {s:?} must start with a lowercase letter or a digit")));
    }
    if let Some(bad) =
        bytes.iter().find(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(b) || extra.contains(b)))
    {
        let allowed: String = extra.iter().map(|&b| b as char).collect();
        return Err(Invalid::new(
            field,
            format!(
                "{what} {s:?} contains {:?}; allowed are a-z, 0-9, '-', '_'{}",
                *bad as char,
                if allowed.is_empty() { String::new() } else { format!(" and {allowed:?}") }
            ),
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $what:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<$name, Invalid> {
                check_name($field, $what, s, $extra)?;
                Ok($name(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// An agent's registered name, unique in the hub.
    AgentName, "name", "agent name", b"."
);
name_type!(
    /// A runner profile name such as `claude`, `codex` or `shell`.
    RunnerName, "runner", "runner name", b""
);
name_type!(
    /// Something a task needs and an agent offers, such as `gpu` or `lang:rust`.
    Capability, "capabilities", "capability", b".:/"
);

/// A token's public id (`tk_` and 12 base32 characters). The secret part of
/// a token is never a `TokenId`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenId(String);

impl TokenId {
    pub fn from_random(random: u64) -> TokenId {
        let mut out = String::from("tk_");
        for i in (0..12).rev() {
            out.push(CROCKFORD[((random >> (i * 5)) & 0x1f) as usize] as char);
        }
        TokenId(out)
    }

    pub fn parse(s: &str) -> Result<TokenId, Invalid> {
        match s.strip_prefix("tk_") {
            Some(body) if body.len() == 12 && body.bytes().all(|b| CROCKFORD.contains(&b)) => Ok(TokenId(s.to_owned())),
            _ => Err(Invalid::new("id", format!("token id {s:?} must be `tk_` and 12 base32 characters"))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip_and_sort_by_time() {
        let a = TaskId::from_parts(1_700_000_000_000, u128::MAX);
        let b = TaskId::from_parts(1_700_000_000_001, 0);
        assert_eq!(TaskId::parse(a.as_str()), Ok(a.clone()));
        assert!(a < b);
        assert_eq!(a.as_str().len(), 28);
    }

    #[test]
    fn bad_task_ids_name_the_rule() {
        for bad in
            ["", "t_", "x_0000000000000000000000000", "t_0000000000000000000000000U", "t_80000000000000000000000000"]
        {
            let err = TaskId::parse(bad).unwrap_err();
            assert_eq!(err.field, "id", "{bad}");
        }
    }

    #[test]
    fn names_reject_what_they_do_not_allow() {
        assert!(AgentName::parse("build-01.eu").is_ok());
        assert!(Capability::parse("lang:rust").is_ok());
        let err = RunnerName::parse("Claude").unwrap_err();
        assert_eq!(err.field, "runner");
        assert!(err.reason.contains("lowercase"), "{}", err.reason);
        assert!(Capability::parse("a b").unwrap_err().reason.contains("' '"));
        assert!(AgentName::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn token_ids_round_trip() {
        let id = TokenId::from_random(0xdead_beef_cafe);
        assert_eq!(TokenId::parse(id.as_str()), Ok(id));
        assert!(TokenId::parse("tk_short").is_err());
    }
}
