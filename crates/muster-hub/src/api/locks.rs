//! Locks as an operator sees them, and forcing them free.

use super::*;

/// `{"held": [...], "waiting": [...]}`; each `{name, task, mode, since}`, a wait with `waits_for`
/// (the holders).
#[utoipa::path(
    get,
    path = "/locks",
    tag = "locks",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Held locks and waits", body = muster_proto::api::LocksView),
    ),
)]
pub(super) async fn locks(State(hub): State<Hub>, _: Admin) -> ApiResult {
    use muster_proto::api::{LockView, LocksView};
    let held = hub.shared.store.locks().await?;
    let waits = hub.shared.store.lock_waits().await?;
    let view = LocksView {
        held: held
            .iter()
            .map(|l| LockView {
                name: l.name.clone(),
                task: l.task.to_string(),
                mode: l.mode.as_str().to_owned(),
                since: timestamp(l.since),
                waits_for: Vec::new(),
            })
            .collect(),
        waiting: waits
            .iter()
            .map(|w| LockView {
                name: w.name.clone(),
                task: w.task.to_string(),
                mode: w.mode.as_str().to_owned(),
                since: timestamp(w.since),
                waits_for: w.holders.iter().map(|h| h.to_string()).collect(),
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &view))
}

/// `POST /api/v1/locks/unlock`: an operator forces one lock, or `{"all": true}` every one.
#[utoipa::path(
    post,
    path = "/locks/unlock",
    tag = "locks",
    security(("admin_token" = [])),
    request_body = muster_proto::api::LockForce,
    responses(
        (status = 200, description = "Released", body = muster_proto::api::Unlocked),
    ),
)]
pub(super) async fn unlock(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Body(req): Body<muster_proto::api::LockForce>,
) -> ApiResult {
    let released = match (req.name, req.all) {
        (Some(name), None | Some(false)) => hub.shared.store.release_lock(&name, None, &by.name, hub.now()).await?,
        (None, Some(true)) => hub.shared.store.release_all_locks(&by.name, hub.now()).await?,
        _ => return Err(ApiError::bad("name", r#"give {"name": "LOCK"} or {"all": true}"#)),
    };
    tracing::warn!(by = %by.name, released, "locks forced");
    Ok(json(StatusCode::OK, &muster_proto::api::Unlocked { released }))
}
