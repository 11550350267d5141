//! Runners, their circuit breakers and shadow runs.

use super::*;

pub(super) fn breaker_view(
    b: &muster_core::breaker::Breaker,
    policy: muster_core::breaker::Policy,
) -> muster_proto::api::BreakerView {
    muster_proto::api::BreakerView {
        scope: b.scope.as_str().to_owned(),
        name: b.name.clone(),
        state: b.state.as_str().to_owned(),
        failures: b.failures,
        opened_at: b.opened_at.map(timestamp),
        half_opens_at: b.half_opens_at(policy).map(timestamp),
        probe: b.probe.as_ref().map(|p| p.to_string()),
    }
}

/// Every circuit breaker that has seen a failure.
#[utoipa::path(
    get,
    path = "/breakers",
    tag = "runners",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Circuit breakers", body = Vec<muster_proto::api::BreakerView>),
    ),
)]
pub(super) async fn breakers(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let policy = hub.shared.runtime.borrow().breaker_policy();
    let all = hub.shared.store.breakers().await?;
    let views: Vec<_> = all.iter().map(|b| breaker_view(b, policy)).collect();
    Ok(json(StatusCode::OK, &views))
}

/// Close one now; `scope` is `agent` or `runner`.
#[utoipa::path(
    post,
    path = "/breakers/{scope}/{name}/reset",
    tag = "runners",
    security(("admin_token" = [])),
    params(
        ("scope" = String, Path, description = "runner or agent"),
        ("name" = String, Path, description = "The runner's or agent's name"),
    ),
    responses(
        (status = 200, description = "Closed", body = muster_proto::api::BreakerView),
    ),
)]
pub(super) async fn reset_breaker(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path((scope, name)): Path<(String, String)>,
) -> ApiResult {
    let scope = muster_core::breaker::Scope::parse(&scope)?;
    let b = hub.shared.store.reset_breaker(scope, &name, &by.name, hub.now()).await?;
    tracing::info!(scope = scope.as_str(), name = %name, by = %by.name, "circuit breaker reset");
    hub.wake_dispatcher();
    let policy = hub.shared.runtime.borrow().breaker_policy();
    Ok(json(StatusCode::OK, &breaker_view(&b, policy)))
}

/// Every known runner: status, agents offering it, why it is disabled.
#[utoipa::path(
    get,
    path = "/runners",
    tag = "runners",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Runners", body = Vec<muster_proto::api::RunnerView>),
    ),
)]
pub(super) async fn runners(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &runner_views(&hub).await?))
}

/// Every known runner: whether it is in service, and who offers it.
pub(super) async fn runner_views(hub: &Hub) -> ApiResult<Vec<muster_proto::api::RunnerView>> {
    let mut known: std::collections::BTreeSet<RunnerName> =
        hub.shared.known_runners.lock().expect("runners lock poisoned").iter().cloned().collect();
    let disabled = hub.shared.store.disabled_runners().await?;
    // A runner disabled before a restart is listed even before an agent offers it again.
    known.extend(disabled.iter().map(|d| d.name.clone()));
    let breakers = hub.shared.store.breakers().await?;
    let agents = hub.shared.store.list_agents().await?;
    let mut views = Vec::new();
    let now = hub.now();
    for name in known {
        let off = disabled.iter().find(|d| d.name == name && d.in_force(now));
        let breaker = breakers
            .iter()
            .find(|b| b.scope == muster_core::breaker::Scope::Runner && b.name == name.as_str())
            .map(|b| b.state);
        let offering: Vec<String> = agents
            .iter()
            .filter(|a| a.status.connected && a.runners.contains(&name))
            .map(|a| a.name.to_string())
            .collect();
        let status = match (off, breaker) {
            (Some(d), _) if d.until.is_some() => "limited",
            (Some(_), _) => "disabled",
            (None, Some(muster_core::breaker::State::Open)) => "circuit open",
            (None, Some(muster_core::breaker::State::HalfOpen)) => "half-open",
            _ if offering.is_empty() => "no agent",
            _ => "available",
        };
        views.push(muster_proto::api::RunnerView {
            name: name.to_string(),
            status: status.to_owned(),
            agents: offering,
            disabled_reason: off.map(|d| d.reason.clone()),
            disabled_by: off.map(|d| d.by.clone()),
            disabled_at: off.map(|d| timestamp(d.at)),
            until: off.and_then(|d| d.until).map(timestamp),
            breaker: breaker.map(|s| s.as_str().to_owned()),
        });
    }
    Ok(views)
}

pub(super) async fn runner_view(hub: &Hub, name: &RunnerName) -> ApiResult {
    let views = runner_views(hub).await?;
    let view = views
        .into_iter()
        .find(|v| v.name == name.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no runner {name:?} is known to this hub")))?;
    Ok(json(StatusCode::OK, &view))
}

/// Body `{"reason": "..."}`. Nothing more is dispatched to it.
#[utoipa::path(
    post,
    path = "/runners/{name}/disable",
    tag = "runners",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The runner's name"),
    ),
    request_body = muster_proto::api::RunnerDisable,
    responses(
        (status = 200, description = "Out of service", body = muster_proto::api::RunnerView),
    ),
)]
pub(super) async fn disable_runner(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path(name): Path<String>,
    Body(body): Body<muster_proto::api::RunnerDisable>,
) -> ApiResult {
    let name = RunnerName::parse(&name)?;
    if !hub.shared.known_runners.lock().expect("runners lock poisoned").contains(&name) {
        return Err(ApiError::NotFound(format!("no runner {name:?} is known to this hub")));
    }
    hub.shared.store.disable_runner(&name, &body.reason, &by.name, hub.now()).await?;
    tracing::warn!(runner = %name, reason = %body.reason, by = %by.name, "runner disabled");
    hub.wake_dispatcher();
    runner_view(&hub, &name).await
}

/// Back in service; 404 if it was not disabled.
#[utoipa::path(
    post,
    path = "/runners/{name}/enable",
    tag = "runners",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The runner's name"),
    ),
    responses(
        (status = 200, description = "In service", body = muster_proto::api::RunnerView),
    ),
)]
pub(super) async fn enable_runner(State(hub): State<Hub>, Admin(by): Admin, Path(name): Path<String>) -> ApiResult {
    let name = RunnerName::parse(&name)?;
    hub.shared.store.enable_runner(&name, &by.name, hub.now()).await?;
    tracing::info!(runner = %name, by = %by.name, "runner enabled");
    hub.wake_dispatcher();
    runner_view(&hub, &name).await
}

/// The shadow policies in force.
#[utoipa::path(
    get,
    path = "/shadow/policies",
    tag = "runners",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Shadow policies", body = Vec<muster_proto::api::ShadowPolicy>),
    ),
)]
pub(super) async fn shadow_policies(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.shadow_policies().await?))
}

/// Body `{"runner": "codex", "percent": 10, "filters": ["cap=rust"]}`; `percent` 0 removes it.
#[utoipa::path(
    put,
    path = "/shadow/policies",
    tag = "runners",
    security(("admin_token" = [])),
    request_body = muster_proto::api::ShadowPolicy,
    responses(
        (status = 200, description = "Shadow policies after the change", body = Vec<muster_proto::api::ShadowPolicy>),
    ),
)]
pub(super) async fn put_shadow_policy(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Body(policy): Body<muster_proto::api::ShadowPolicy>,
) -> ApiResult {
    hub.set_shadow_policy(policy, &by.name).await?;
    Ok(json(StatusCode::OK, &hub.shadow_policies().await?))
}

/// Finished task and shadow pairs compared: outcome and output agreement, run time and cost deltas,
/// mismatches.
#[utoipa::path(
    get,
    path = "/shadow/report",
    tag = "runners",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "How shadow runs compare", body = muster_proto::api::ShadowReport),
    ),
)]
pub(super) async fn shadow_report(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.shadow_report().await?))
}
