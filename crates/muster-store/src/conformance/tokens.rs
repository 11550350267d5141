//! Tokens: created hashed, listed, revoked, their use recorded.

use super::*;

pub async fn tokens_are_created_listed_and_revoked(store: Arc<dyn Store>) {
    let s = &*store;
    let first = ok("create_token", s.create_token(new_token(1, Scope::Admin, None), at(0)).await);
    assert_eq!(
        first,
        TokenRecord {
            id: token_id(1),
            name: "token-1".to_owned(),
            scope: Scope::Admin,
            agent: None,
            hash: format!("{:064x}", 1),
            created_at: at(0),
            revoked_at: None,
            last_used_at: None,
        }
    );
    let second = ok("create_token", s.create_token(new_token(2, Scope::Admin, None), at(1)).await);
    assert_eq!(ok("token", s.token(&token_id(1)).await), Some(first.clone()));
    assert_eq!(ok("token", s.token(&token_id(3)).await), None);
    let mut listed = ok("list_tokens", s.list_tokens().await);
    listed.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    assert_eq!(listed, [first.clone(), second.clone()]);

    let mark = last_seq(s).await;
    let revoked = ok("revoke_token", s.revoke_token(&token_id(1), at(5)).await);
    assert_eq!(revoked, TokenRecord { revoked_at: Some(at(5)), ..first.clone() });
    assert_eq!(ok("token", s.token(&token_id(1)).await), Some(revoked.clone()));
    assert_events(s, mark, &["token.revoked"], "revoke_token").await;

    // Revoking again is idempotent: the first revocation stands and nothing is written.
    let before = snapshot(s).await;
    let again = ok("revoke_token again", s.revoke_token(&token_id(1), at(9)).await);
    assert_eq!(again, revoked, "a second revoke must return the first revocation");
    assert_unchanged(s, &before, "a second revoke_token").await;
    assert_eq!(ok("token", s.token(&token_id(2)).await), Some(second), "revoking one token touched another");

    assert_eq!(not_found("revoke_token of an unknown token", s.revoke_token(&token_id(3), at(9)).await), "token");
    assert_eq!(kinds(&events_after(s, 0).await), ["token.created", "token.created", "token.revoked"]);
}

pub async fn touch_token_records_use_at_most_once_a_minute(store: Arc<dyn Store>) {
    let s = &*store;
    ok("create_token", s.create_token(new_token(1, Scope::Admin, None), at(0)).await);
    let last_used = || async { ok("token", s.token(&token_id(1)).await).expect("token exists").last_used_at };
    ok("touch_token", s.touch_token(&token_id(1), at(10)).await);
    assert_eq!(last_used().await, Some(at(10)));
    ok("touch_token", s.touch_token(&token_id(1), at(40)).await);
    assert_eq!(last_used().await, Some(at(10)), "a touch within a minute must not be recorded");
    ok("touch_token", s.touch_token(&token_id(1), at(80)).await);
    assert_eq!(last_used().await, Some(at(80)), "a touch more than a minute later must be recorded");
}
