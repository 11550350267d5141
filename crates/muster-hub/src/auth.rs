//! Tokens: minting, hashing, and checking a request's bearer token.
//!
//! A token reads `mst_<12 chars of id>_<43 chars of secret>`. The id part
//! finds the record; the whole token's SHA-256 is compared in constant time
//! with the stored hash. Only hashes are stored; a token is shown once.

use crate::Hub;
use crate::http::ApiError;
use muster_core::{AgentName, TokenId};
use muster_store::{Scope, TokenRecord};
use sha2::{Digest, Sha256};
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
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who a request speaks for.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin(TokenRecord),
    Agent(AgentName),
}

impl Hub {
    /// Checks a bearer token: 401 when missing, malformed, unknown or revoked.
    pub(crate) async fn authenticate(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let header =
            header.ok_or_else(|| ApiError::Unauthorized("an Authorization: Bearer token is required".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
        let invalid = || ApiError::Unauthorized("the token is not valid".into());
        let id = parse_token(token).ok_or_else(invalid)?;
        let record = self.shared.store.token(&id).await?.ok_or_else(invalid)?;
        let expected = record.hash.as_bytes();
        let presented = hash_token(token);
        if !bool::from(expected.ct_eq(presented.as_bytes())) {
            return Err(invalid());
        }
        if record.revoked_at.is_some() {
            return Err(ApiError::Unauthorized("the token has been revoked".into()));
        }
        if record.last_used_at.is_none_or(|t| self.now().0 - t.0 > 60_000) {
            let _ = self.shared.store.touch_token(&record.id, self.now()).await;
        }
        match (record.scope, record.agent.clone()) {
            (Scope::Admin, _) => Ok(Caller::Admin(record)),
            (Scope::Agent, Some(agent)) => Ok(Caller::Agent(agent)),
            (Scope::Agent, None) => Err(invalid()),
        }
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
    fn hash_is_sha256_hex() {
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
