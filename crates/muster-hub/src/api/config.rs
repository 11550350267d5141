//! Runtime settings and alert rule settings.

use super::*;

/// Every runtime setting with its value, startup value and source; PUT changes the keys given
/// (`null` resets), all or nothing.
#[utoipa::path(
    get,
    path = "/config",
    tag = "config",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Runtime settings", body = muster_proto::api::ConfigView),
    ),
)]
pub(super) async fn config(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.config_view().await?))
}

/// Every runtime setting with its value, startup value and source; PUT changes the keys given
/// (`null` resets), all or nothing.
#[utoipa::path(
    put,
    path = "/config",
    tag = "config",
    security(("admin_token" = [])),
    request_body = std::collections::BTreeMap<String, serde_json::Value>,
    responses(
        (status = 200, description = "Runtime settings after the change", body = muster_proto::api::ConfigView),
    ),
)]
pub(super) async fn put_config(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Body(patch): Body<BTreeMap<String, serde_json::Value>>,
) -> ApiResult {
    // Once approvers are named, only they may change who they are.
    if patch.contains_key("approval.approvers") {
        check_approver(&hub, &by.name)?;
    }
    hub.update_config(patch, &by.name).await?;
    Ok(json(StatusCode::OK, &hub.config_view().await?))
}

/// Alert rules' settings; PUT changes the fields given.
#[utoipa::path(
    get,
    path = "/config/alerts",
    tag = "config",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Alert rule settings", body = std::collections::BTreeMap<String, muster_proto::api::RuleConfigView>),
    ),
)]
pub(super) async fn alert_config(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.alert_config_views().await?))
}

/// Alert rules' settings; PUT changes the fields given.
#[utoipa::path(
    put,
    path = "/config/alerts",
    tag = "config",
    security(("admin_token" = [])),
    request_body = std::collections::BTreeMap<String, muster_proto::api::RuleConfigPatch>,
    responses(
        (status = 200, description = "Alert rule settings after the change", body = std::collections::BTreeMap<String, muster_proto::api::RuleConfigView>),
    ),
)]
pub(super) async fn put_alert_config(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Body(patch): Body<BTreeMap<String, muster_proto::api::RuleConfigPatch>>,
) -> ApiResult {
    hub.update_alert_config(patch, &by.name).await?;
    Ok(json(StatusCode::OK, &hub.alert_config_views().await?))
}
