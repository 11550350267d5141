//! API tokens: listed without their secrets, revoked.

use super::*;

pub(super) fn token_view(t: &muster_store::TokenRecord) -> TokenView {
    TokenView {
        id: t.id.to_string(),
        name: t.name.clone(),
        scope: t.scope.as_str().to_owned(),
        agent: t.agent.as_ref().map(|a| a.to_string()),
        created_at: timestamp(t.created_at),
        revoked_at: t.revoked_at.map(timestamp),
        last_used_at: t.last_used_at.map(timestamp),
    }
}

/// List tokens (never secrets).
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every token, never its secret", body = Vec<muster_proto::api::TokenView>),
    ),
)]
pub(super) async fn list_tokens(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let tokens = hub.shared.store.list_tokens().await?;
    Ok(json(StatusCode::OK, &tokens.iter().map(token_view).collect::<Vec<_>>()))
}

/// Revoke a token.
#[utoipa::path(
    post,
    path = "/tokens/{id}/revoke",
    tag = "tokens",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The token's id"),
    ),
    responses(
        (status = 200, description = "Revoked", body = muster_proto::api::TokenView),
    ),
)]
pub(super) async fn revoke_token(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
    let id = TokenId::parse(&id)?;
    tracing::info!(token = %id, by = %by.name, "revoke token");
    let token = hub.shared.store.revoke_token(&id, hub.now()).await?;
    hub.shared.tokens.clear();
    if let Some(agent) = &token.agent {
        hub.close_agent(agent, "token revoked");
    }
    Ok(json(StatusCode::OK, &token_view(&token)))
}
