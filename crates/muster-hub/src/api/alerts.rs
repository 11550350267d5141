//! Alert rules and their state.

use super::*;

impl Hub {
    /// The health level over the configured window of recent runs.
    pub(crate) async fn health(&self) -> ApiResult<muster_proto::api::HealthView> {
        let config = &self.shared.config;
        let since = muster_core::Millis(self.now().0 - config.health_window.as_millis() as i64);
        let outcomes = self.shared.store.outcomes_since(since).await?;
        let (succeeded, failed) = muster_core::Outcome::tally(&outcomes);
        let (level, reasons) = muster_core::health::assess(succeeded, failed, &config.health);
        Ok(muster_proto::api::HealthView {
            level: level.as_str().to_owned(),
            reasons,
            window_secs: config.health_window.as_secs(),
            succeeded,
            failed,
        })
    }
}

/// Every alert rule with its state and settings.
#[utoipa::path(
    get,
    path = "/alerts",
    tag = "alerts",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Alert rules and their state", body = Vec<muster_proto::api::AlertView>),
    ),
)]
pub(super) async fn list_alerts(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.alert_views().await?))
}

/// Acknowledge a firing alert (409 if it is not firing).
#[utoipa::path(
    post,
    path = "/alerts/{rule}/ack",
    tag = "alerts",
    security(("admin_token" = [])),
    params(
        ("rule" = String, Path, description = "The alert rule"),
    ),
    responses(
        (status = 200, description = "Acknowledged", body = muster_proto::api::AlertView),
    ),
)]
pub(super) async fn ack_alert(State(hub): State<Hub>, Admin(by): Admin, Path(rule): Path<String>) -> ApiResult {
    let rule = muster_core::alert::Rule::parse(&rule)?;
    match hub.shared.store.acknowledge_alert(rule, &by.name, hub.now()).await {
        Ok(_) => {}
        // Not firing is a state conflict, not a malformed request.
        Err(StoreError::Invalid(i)) => {
            return Err(ApiError::Conflict {
                field: Some(i.field.to_owned()),
                detail: format!("{}: {}", rule.as_str(), i.reason),
            });
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(rule = rule.as_str(), by = %by.name, "alert acknowledged");
    let views = hub.alert_views().await?;
    let view = views
        .into_iter()
        .find(|v| v.rule == rule.as_str())
        .ok_or_else(|| ApiError::Internal("alert vanished".into()))?;
    Ok(json(StatusCode::OK, &view))
}
