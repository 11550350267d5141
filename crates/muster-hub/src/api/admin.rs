//! The hub's own upkeep: backups, checks, the database, compaction, diagnosis, log level, workers.

use super::*;

/// Database size, free pages, rows, last backup, last compaction, retention.
#[utoipa::path(
    get,
    path = "/admin/db",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The database", body = muster_proto::api::DbView),
    ),
)]
pub(super) async fn db(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.db_view().await?))
}

/// Apply retention and give free space back now (409 while one runs).
#[utoipa::path(
    post,
    path = "/admin/compact",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Pruned and compacted", body = muster_proto::api::CompactView),
    ),
)]
pub(super) async fn compact(State(hub): State<Hub>, Admin(by): Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.compact_now(&by.name, true).await?))
}

#[utoipa::path(
    put,
    path = "/admin/log-level",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = muster_proto::api::LogLevel,
    responses(
        (status = 200, description = "The level now", body = muster_proto::api::LogLevel),
    ),
)]
pub(super) async fn put_log_level(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Body(muster_proto::api::LogLevel { level }): Body<muster_proto::api::LogLevel>,
) -> ApiResult {
    let set =
        hub.shared.log_level.get().ok_or_else(|| ApiError::Unavailable("this hub's log level is fixed".into()))?;
    set(&level).map_err(|reason| ApiError::BadRequest(FieldError { field: "level".into(), reason }))?;
    tracing::warn!(level = %level, by = %by.name, "log level changed until the next restart");
    Ok(json(StatusCode::OK, &muster_proto::api::LogLevel { level }))
}

/// The hub's background workers: what each does, whether it is waiting or
/// working, its passes, and its last error until a pass succeeds.
#[utoipa::path(
    get,
    path = "/admin/workers",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every background worker", body = Vec<muster_proto::api::WorkerView>),
    ),
)]
pub(super) async fn workers(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.shared.workers.views()))
}

/// The hubs on the database (those running, and those stopped in the last
/// day), with the duties each leads and the agents whose sockets it holds.
#[utoipa::path(
    get,
    path = "/admin/hubs",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every hub, this one first", body = Vec<muster_proto::api::HubView>),
    ),
)]
pub(super) async fn hubs(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.hub_views().await?))
}

/// What `muster diagnose` prints: problems with next steps, notes (agents never started), recent
/// log warnings.
#[utoipa::path(
    get,
    path = "/admin/diagnose",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "What is wrong, with the next step for each", body = muster_proto::api::DiagnoseView),
    ),
)]
pub(super) async fn diagnose(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.diagnose().await?))
}

/// Integrity check and invariants; `?repair=true` repairs.
#[utoipa::path(
    post,
    path = "/admin/check",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("repair" = Option<bool>, Query, description = "Repair what it finds"),
    ),
    responses(
        (status = 200, description = "What the check found", body = muster_proto::api::CheckView),
    ),
)]
pub(super) async fn check(State(hub): State<Hub>, Admin(by): Admin, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["repair"])?;
    let repair = p.flag("repair")?;
    let views = |findings: Vec<(String, String)>| -> Vec<muster_proto::api::FindingView> {
        findings.into_iter().map(|(kind, detail)| muster_proto::api::FindingView { kind, detail }).collect()
    };
    let report = hub.shared.store.check(repair, hub.now()).await?;
    let remaining = if repair && !report.repaired.is_empty() {
        tracing::warn!(by = %by.name, repaired = ?report.repaired, "database repaired");
        // Expired leases are reclaimed by the dispatch loop.
        hub.wake_dispatcher();
        hub.shared.store.check(false, hub.now()).await?.findings
    } else {
        report.findings.clone()
    };
    let view = muster_proto::api::CheckView {
        findings: views(report.findings),
        repaired: report.repaired,
        remaining: views(remaining),
    };
    Ok(json(StatusCode::OK, &view))
}

/// Make a verified backup now; list backups.
#[utoipa::path(
    post,
    path = "/admin/backups",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Backed up and verified", body = muster_proto::api::BackupView),
    ),
)]
pub(super) async fn create_backup(State(hub): State<Hub>, Admin(by): Admin) -> ApiResult {
    tracing::info!(by = %by.name, "backup requested");
    let backup = hub.backup_now().await?;
    Ok(json(StatusCode::CREATED, &backup))
}

/// Make a verified backup now; list backups.
#[utoipa::path(
    get,
    path = "/admin/backups",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Backups, newest first", body = Vec<muster_proto::api::BackupView>),
    ),
)]
pub(super) async fn list_backups(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let dir = &hub.config().backup_dir;
    let backups = crate::backup::list(dir)
        .map_err(|e| ApiError::Internal(format!("cannot list backups in {}: {e}", dir.display())))?;
    Ok(json(StatusCode::OK, &backups))
}
