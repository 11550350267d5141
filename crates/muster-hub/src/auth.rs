//! Tokens: minting, hashing, and checking a request's bearer token.
//!
//! A token reads `mst_<12 chars of id>_<43 chars of secret>`. The id part
//! finds the record; the whole token's SHA-256 is compared in constant time
//! with the stored hash. Only hashes are stored; a token is shown once.

use crate::Hub;
use crate::error::{ApiError, ApiResult};
use axum::http::{HeaderMap, header};
use muster_core::{AgentName, TokenId};
use muster_store::{Scope, TokenRecord};
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;

const PREFIX: &str = "mst_";
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub struct Minted {
    pub id: TokenId,
    pub token: String,
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    Ok(buf)
}

/// A new token with 256 bits of secret.
pub fn mint_token() -> anyhow::Result<Minted> {
    let id = TokenId::from_random(u64::from_le_bytes(random_bytes::<8>()?));
    // 43 base62 characters carry more than 256 bits; rejection sampling keeps them uniform.
    let mut secret = String::with_capacity(43);
    while secret.len() < 43 {
        for b in random_bytes::<64>()? {
            if secret.len() < 43 && (b as usize) < 62 * 4 {
                secret.push(ALPHABET[(b as usize) % 62] as char);
            }
        }
    }
    let token = format!("{PREFIX}{}_{secret}", &id.as_str()[3..]);
    Ok(Minted { id, token })
}

/// The token id a token string claims, if it has the right shape.
pub fn parse_token(token: &str) -> Option<TokenId> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if secret.len() != 43 || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    TokenId::parse(&format!("tk_{id}")).ok()
}

pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Who a request speaks for.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin(TokenRecord),
    Agent(AgentName),
    /// A run, for its own task, while its lease lasts.
    Task {
        task: muster_core::TaskId,
        epoch: muster_core::Epoch,
    },
}

/// A task-scoped token reads `mtt_<task id>_<epoch>_<HMAC-SHA256, hex>`:
/// nothing is stored per token; the key is the hub's own.
const TASK_PREFIX: &str = "mtt_";

/// HMAC-SHA256 of `message` under `key` (RFC 2104, by the `hmac` crate).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Lower-case hexadecimal, two digits a byte. Every request hashes its
/// token through this, so it writes digits, not a formatted string a byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The bytes lower-case or upper-case hexadecimal spells (surrounding white
/// space ignored); `None` for anything else.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The token a run of `task` under `epoch` uses to act for that task.
pub fn task_token(key: &[u8], task: &muster_core::TaskId, epoch: muster_core::Epoch) -> String {
    let mac = hmac(key, format!("task:{task}:{epoch}").as_bytes());
    format!("{TASK_PREFIX}{}_{}_{}", &task.as_str()[2..], epoch.0, hex(&mac))
}

/// The task and epoch a task token speaks for, when its MAC is right.
pub fn check_task_token(key: &[u8], token: &str) -> Option<(muster_core::TaskId, muster_core::Epoch)> {
    let rest = token.strip_prefix(TASK_PREFIX)?;
    let mut parts = rest.split('_');
    let (id, epoch, mac) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let task = muster_core::TaskId::parse(&format!("t_{id}")).ok()?;
    let epoch = muster_core::Epoch(epoch.parse().ok()?);
    let expected = task_token(key, &task, epoch);
    bool::from(expected.as_bytes().ct_eq(token.as_bytes())).then_some((task, epoch)).filter(|_| !mac.is_empty())
}

/// Muster's own tokens (admin, agent and task tokens) wherever they appear
/// in `text`, replaced with `[REDACTED]`. The hub applies it to everything a
/// run sends it (notes, messages, questions, follow-up prompts, output,
/// steps), after the agent's own redaction: a run holds its task token, and
/// `muster ctl note "$MUSTER_TASK_TOKEN"` must not put it on the timeline.
pub(crate) fn redact_tokens(text: &str) -> std::borrow::Cow<'_, str> {
    static SHAPE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    if !text.contains("mst_") && !text.contains("mtt_") {
        return std::borrow::Cow::Borrowed(text);
    }
    let shape = SHAPE.get_or_init(|| {
        regex::Regex::new(r"mst_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}|mtt_[0-9A-Za-z]+_[0-9]+_[0-9a-f]{64}")
            .expect("a valid pattern")
    });
    shape.replace_all(text, "[REDACTED]")
}

/// Why a token or session was refused; counted by this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Missing,
    Malformed,
    Invalid,
    Revoked,
    Expired,
    Session,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Invalid => "invalid",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::Session => "session",
        }
    }
}

impl Hub {
    /// A refused token or session: counted, logged (rate-limited), and answered 401.
    pub(crate) fn refuse(&self, why: Refusal, detail: impl Into<String>) -> ApiError {
        let detail = detail.into();
        self.auth_failed(why, &detail);
        ApiError::Unauthorized(detail)
    }

    /// Checks a bearer token: 401 when missing, malformed, unknown or revoked.
    pub(crate) async fn authenticate(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let header =
            header.ok_or_else(|| self.refuse(Refusal::Missing, "an Authorization: Bearer token is required"))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(|| self.refuse(Refusal::Malformed, "the Authorization header must be `Bearer <token>`"))?;
        let invalid = || self.refuse(Refusal::Invalid, "the token is not valid");
        if token.starts_with(TASK_PREFIX) {
            let (task, epoch) = check_task_token(&self.shared.task_key, token).ok_or_else(invalid)?;
            // Good only while the run it was given to holds the task.
            let current = self.shared.store.task(&task).await?;
            let live = current.is_some_and(|t| t.state.is_leased() && t.lease.is_some_and(|l| l.epoch == epoch));
            if !live {
                return Err(
                    self.refuse(Refusal::Expired, format!("the token of {task}'s run under epoch {epoch} has expired"))
                );
            }
            return Ok(Caller::Task { task, epoch });
        }
        let id = parse_token(token).ok_or_else(invalid)?;
        let (mut record, generation) = match self.shared.tokens.get(&id) {
            Ok(record) => (record, None),
            Err(generation) => (self.shared.store.token(&id).await?.ok_or_else(invalid)?, Some(generation)),
        };
        let expected = record.hash.as_bytes();
        let presented = hash_token(token);
        if !bool::from(expected.ct_eq(presented.as_bytes())) {
            return Err(invalid());
        }
        if record.revoked_at.is_some() {
            return Err(self.refuse(Refusal::Revoked, "the token has been revoked"));
        }
        let now = self.now();
        let stale = record.last_used_at.is_none_or(|t| now.0 - t.0 > 60_000);
        if stale && self.shared.store.touch_token(&record.id, now).await.is_ok() {
            record.last_used_at = Some(now);
            // What the cache holds must say when the token was last used, too.
            self.shared.tokens.clear();
        } else if let Some(generation) = generation {
            self.shared.tokens.put(generation, id, record.clone());
        }
        match (record.scope, record.agent.clone()) {
            (Scope::Admin, _) => Ok(Caller::Admin(record)),
            (Scope::Agent, Some(agent)) => Ok(Caller::Agent(agent)),
            (Scope::Agent, None) => Err(invalid()),
        }
    }
}

// -- dashboard sessions -------------------------------------------------------

/// The cookie a session lives in.
pub(crate) const COOKIE: &str = "muster_session";
/// How long a session lasts without being used.
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// A session's end moves forward when it is used, at most this often (one
/// write an hour per browser, not one a request).
const SESSION_RENEW: Duration = Duration::from_secs(3600);

/// The session id in the request's cookies, if any.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

impl Hub {
    /// The admin token a session cookie stands for, if the session is live
    /// and the token not revoked.
    pub(crate) async fn session_token(&self, id: &str) -> ApiResult<muster_store::TokenRecord> {
        let expired = || self.refuse(Refusal::Session, "the session has ended; sign in again");
        let key = hash_token(id);
        let now = self.now();
        let store = &self.shared.store;
        let (token, expires) = store.session(key.clone(), now).await?.ok_or_else(expired)?;
        if expires < now.plus(SESSION_IDLE - SESSION_RENEW) {
            store.renew_session(key.clone(), now.plus(SESSION_IDLE)).await?;
        }
        let record = self.shared.store.token(&token).await?.ok_or_else(expired)?;
        if record.revoked_at.is_some() {
            store.end_session(key).await?;
            return Err(self.refuse(Refusal::Revoked, "the token this session signed in with has been revoked"));
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_back_to_their_id() {
        let m = mint_token().unwrap();
        assert!(m.token.starts_with("mst_"));
        assert_eq!(m.token.len(), 4 + 12 + 1 + 43);
        assert_eq!(parse_token(&m.token), Some(m.id));
        assert_ne!(mint_token().unwrap().token, m.token);
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for bad in ["", "mst_", "mst_abc_def", "xyz_0123456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn task_tokens_speak_for_their_task_and_epoch_only() {
        let key = [7u8; 32];
        let task = muster_core::TaskId::from_parts(1_700_000_000_000, 5);
        let token = task_token(&key, &task, muster_core::Epoch(3));
        assert!(token.starts_with("mtt_"));
        assert_eq!(check_task_token(&key, &token), Some((task.clone(), muster_core::Epoch(3))));
        assert_eq!(check_task_token(&[8u8; 32], &token), None, "another hub's key");
        let forged = token.replace("_3_", "_4_");
        assert_eq!(check_task_token(&key, &forged), None, "another epoch");
        assert_eq!(check_task_token(&key, "mtt_x_1_00"), None);
        // RFC 4231, test case 2.
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn hex_writes_two_lower_case_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xf0, 0xff, 0xa5]), "000ff0ffa5");
        assert_eq!(hex(&[]), "");
        assert_eq!(unhex(" 000ff0ffA5\n"), Some(vec![0x00, 0x0f, 0xf0, 0xff, 0xa5]));
        assert_eq!(unhex("abc"), None, "an odd count of digits");
        assert_eq!(unhex("zz"), None);
    }
}
