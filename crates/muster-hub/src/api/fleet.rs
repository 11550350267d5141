//! The fleet at a glance: status, health, SLOs, costs, the last hour, pause and resume, the version.

use super::*;

/// Version, API version, agent protocol.
#[utoipa::path(
    get,
    path = "/version",
    tag = "fleet",
    responses(
        (status = 200, description = "The hub's version and protocol", body = muster_proto::api::VersionView),
    ),
)]
pub(super) async fn version() -> Response {
    let view = muster_proto::api::VersionView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        api: "v1".to_owned(),
        agent_protocol: muster_proto::ws::PROTOCOL_VERSION,
    };
    json(StatusCode::OK, &view)
}

/// The last hour: 360 points and the queue's trend.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The last hour, point by point", body = muster_proto::api::MetricsWindow),
    ),
)]
pub(super) async fn metrics_window(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.metrics_window()))
}

/// Tokens and cost summed. Query: `by` (`day` (default), `runner`, `agent`, `task`), `since` (a
/// duration back from now).
#[utoipa::path(
    get,
    path = "/costs",
    tag = "fleet",
    security(("admin_token" = [])),
    params(
        ("by" = Option<String>, Query, description = "task, agent, runner or day"),
        ("since" = Option<String>, Query, description = "How far back, e.g. 7d"),
    ),
    responses(
        (status = 200, description = "Tokens and cost summed by a key", body = muster_proto::api::CostsView),
    ),
)]
pub(super) async fn costs(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    use muster_proto::api::{CostRowView, CostsView};
    let p = Params::parse(q, &["by", "since"])?;
    let by = match p.get("by") {
        None => muster_store::CostGroup::Day,
        Some(b) => muster_store::CostGroup::parse(b).ok_or_else(|| {
            ApiError::BadRequest(muster_proto::FieldError {
                field: "by".into(),
                reason: format!("unknown grouping {b:?}; expected task, agent, runner or day"),
            })
        })?,
    };
    let now = hub.now();
    let since = match p.get("since") {
        None => muster_core::Millis(0),
        Some(s) => {
            let back = muster_proto::parse_duration("since", s).map_err(ApiError::BadRequest)?;
            muster_core::Millis(now.0.saturating_sub(back.as_millis().min(i64::MAX as u128) as i64))
        }
    };
    let (rows, all) = hub.shared.store.costs(by, since).await?;
    let view = |r: &muster_store::CostRow| CostRowView {
        key: r.key.clone(),
        attempts: r.attempts,
        priced_attempts: r.priced,
        input_tokens: r.tokens.input,
        output_tokens: r.tokens.output,
        cache_read_tokens: r.tokens.cache_read,
        cache_write_tokens: r.tokens.cache_write,
        cost_usd: r.cost.usd(),
    };
    let costs = CostsView {
        by: by.as_str().to_owned(),
        since: timestamp(since),
        rows: rows.iter().map(view).collect(),
        total: view(&all),
    };
    Ok(json(StatusCode::OK, &costs))
}

/// Each objective with its error budget left and burn rate.
#[utoipa::path(
    get,
    path = "/slo",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Each objective with its error budget", body = Vec<muster_proto::api::SloView>),
    ),
)]
pub(super) async fn slo(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let now = hub.now();
    let mut views = Vec::new();
    for o in &hub.config().slos {
        let since = |d: std::time::Duration| muster_core::Millis(now.0 - d.as_millis() as i64);
        let (good, total) = hub.shared.store.slo_counts(o.kind, since(o.window), o.threshold).await?;
        let (recent_good, recent_total) =
            hub.shared.store.slo_counts(o.kind, since(std::time::Duration::from_secs(3600)), o.threshold).await?;
        let budget = muster_core::slo::budget(good, total, o.target);
        let burn = muster_core::slo::burn_rate(recent_good, recent_total, o.target);
        let status = if budget.remaining <= 0.0 {
            "exhausted"
        } else if burn > 1.0 {
            "burning"
        } else {
            "ok"
        };
        views.push(muster_proto::api::SloView {
            name: o.name.clone(),
            kind: o.kind.as_str().to_owned(),
            threshold_secs: o.threshold.as_secs_f64(),
            target: o.target,
            window_secs: o.window.as_secs(),
            good,
            total,
            sli: budget.sli,
            budget_remaining: if budget.remaining.is_finite() { budget.remaining } else { -1.0 },
            burn_rate_1h: if burn.is_finite() { burn } else { f64::MAX },
            status: status.to_owned(),
        });
    }
    Ok(json(StatusCode::OK, &views))
}

/// The health level, its reasons and counts.
#[utoipa::path(
    get,
    path = "/health",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The health level over recent runs", body = muster_proto::api::HealthView),
    ),
)]
pub(super) async fn health(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.health().await?))
}

pub(super) async fn set_dispatch(hub: Hub, Admin(by): Admin, paused: bool) -> ApiResult {
    let setting = vec![(crate::DISPATCH_PAUSED.to_owned(), Some(paused.to_string()))];
    {
        // Stored and in force with no other hub's change put in force between.
        let _one = hub.shared.changing_config.lock().await;
        hub.shared.store.put_settings(setting, &by.name, hub.now()).await?;
        hub.shared.dispatch_paused.store(paused, std::sync::atomic::Ordering::SeqCst);
    }
    hub.publish_roster();
    tracing::warn!(paused, by = %by.name, "dispatch {}", if paused { "paused" } else { "resumed" });
    hub.wake_dispatcher();
    status(State(hub.clone()), Admin(by)).await
}

/// Stop or restart all dispatch; answers with the status.
#[utoipa::path(
    post,
    path = "/admin/pause",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Dispatch paused", body = muster_proto::api::StatusView),
    ),
)]
pub(super) async fn pause_dispatch(State(hub): State<Hub>, admin: Admin) -> ApiResult {
    set_dispatch(hub, admin, true).await
}

/// Stop or restart all dispatch; answers with the status.
#[utoipa::path(
    post,
    path = "/admin/resume",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Dispatch resumed", body = muster_proto::api::StatusView),
    ),
)]
pub(super) async fn resume_dispatch(State(hub): State<Hub>, admin: Admin) -> ApiResult {
    set_dispatch(hub, admin, false).await
}

/// Counts and uptime.
#[utoipa::path(
    get,
    path = "/status",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The hub at a glance", body = muster_proto::api::StatusView),
    ),
)]
pub(super) async fn status(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let counts = hub.shared.store.count_tasks().await?;
    let agents = hub.shared.store.list_agents().await?;
    let mut by_state: BTreeMap<String, u64> =
        muster_core::AgentState::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
    for a in &agents {
        *by_state.entry(a.status.state().as_str().to_owned()).or_default() += 1;
    }
    let now = hub.now();
    let health = hub.health().await?;
    let last_event = *hub.shared.store.subscribe().borrow();
    let hubs = hub.hub_views().await?;
    let view = StatusView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: timestamp(hub.shared.started_at),
        uptime_secs: now.since(hub.shared.started_at).as_secs(),
        draining: hub.shared.draining.load(std::sync::atomic::Ordering::SeqCst),
        tasks: counts.into_iter().map(|(s, n)| (s.as_str().to_owned(), n)).collect(),
        agents: by_state,
        connected_agents: hub.shared.sessions.lock().expect("sessions lock poisoned").len() as u64,
        last_event,
        health,
        dispatch_paused: hub.shared.dispatch_paused.load(std::sync::atomic::Ordering::SeqCst),
        workers: hub.shared.workers.views(),
        hubs,
    };
    Ok(json(StatusCode::OK, &view))
}
