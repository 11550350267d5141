//! API tokens: stored hashed, scoped, revocable.

use super::*;

const TOKEN_COLS: &str = "id, name, scope, agent, hash, created_at, revoked_at, last_used_at";

fn token_row(r: &Row<'_>) -> Result<TokenRecord> {
    let id: String = r.get(0)?;
    let scope: String = r.get(2)?;
    let agent: Option<String> = r.get(3)?;
    Ok(TokenRecord {
        id: TokenId::parse(&id).map_err(|e| corrupt("token id", e))?,
        name: r.get(1)?,
        scope: Scope::parse(&scope).ok_or_else(|| corrupt("token scope", &scope))?,
        agent: agent.map(|a| AgentName::parse(&a)).transpose().map_err(|e| corrupt("agent name", e))?,
        hash: r.get(4)?,
        created_at: Millis(r.get(5)?),
        revoked_at: ms(r.get(6)?),
        last_used_at: ms(r.get(7)?),
    })
}

pub fn create_token(c: &Connection, t: &NewToken, now: Millis) -> Result<TokenRecord> {
    c.execute(
        "INSERT INTO tokens (id, name, scope, agent, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        params![t.id.as_str(), t.name, t.scope.as_str(), t.agent.as_ref().map(|a| a.as_str()), t.hash, now.0],
    )?;
    agent_event(c, now, "token.created", t.agent.as_ref(), None, Some(&format!("{} ({})", t.id, t.name)))?;
    token(c, &t.id)?.ok_or_else(|| StoreError::not_found("token", &t.id))
}

pub fn token(c: &Connection, id: &TokenId) -> Result<Option<TokenRecord>> {
    c.prepare_cached(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?"))?
        .query_row([id.as_str()], token_row)
        .optional()
}

pub fn list_tokens(c: &Connection) -> Result<Vec<TokenRecord>> {
    c.prepare(&format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY created_at, id"))?
        .query_map([], token_row)?
        .collect::<Result<_>>()
}

pub fn revoke_token(c: &Connection, id: &TokenId, now: Millis) -> Result<TokenRecord> {
    let existing = token(c, id)?.ok_or_else(|| StoreError::not_found("token", id))?;
    if existing.revoked_at.is_some() {
        return Ok(existing);
    }
    c.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", params![now.0, id.as_str()])?;
    agent_event(c, now, "token.revoked", existing.agent.as_ref(), None, Some(&format!("{id} ({})", existing.name)))?;
    token(c, id)?.ok_or_else(|| StoreError::not_found("token", id))
}

pub fn touch_token(c: &Connection, id: &TokenId, now: Millis) -> Result<()> {
    c.prepare_cached("UPDATE tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)")?
        .execute(params![now.0, id.as_str(), now.0 - 60_000])?;
    Ok(())
}

/// Starts a dashboard session (`key` is the hash of its cookie), and drops
/// the sessions that have ended, so they do not pile up.
pub fn start_session(c: &Connection, key: &str, token: &TokenId, expires: Millis, now: Millis) -> Result<()> {
    c.prepare_cached("DELETE FROM ui_sessions WHERE expires_at <= ?")?.execute([now.0])?;
    c.prepare_cached("INSERT INTO ui_sessions (key, token_id, expires_at) VALUES (?, ?, ?)")?.execute(params![
        key,
        token.as_str(),
        expires.0
    ])?;
    Ok(())
}

/// The token a live session stands for, and until when it lasts.
pub fn session(c: &Connection, key: &str, now: Millis) -> Result<Option<(TokenId, Millis)>> {
    let row: Option<(String, i64)> = c
        .prepare_cached("SELECT token_id, expires_at FROM ui_sessions WHERE key = ? AND expires_at > ?")?
        .query_row(params![key, now.0], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(id, at)| Ok((TokenId::parse(&id).map_err(|e| corrupt("token id", e))?, Millis(at)))).transpose()
}

/// Moves a session's end to `expires`.
pub fn renew_session(c: &Connection, key: &str, expires: Millis) -> Result<()> {
    c.prepare_cached("UPDATE ui_sessions SET expires_at = ? WHERE key = ?")?.execute(params![expires.0, key])?;
    Ok(())
}

pub fn end_session(c: &Connection, key: &str) -> Result<()> {
    c.prepare_cached("DELETE FROM ui_sessions WHERE key = ?")?.execute([key])?;
    Ok(())
}
