//! Agents: register, list, pause, drain, remove, reissue tokens, doctor reports.

use super::*;

/// The agent's latest doctor report.
#[utoipa::path(
    get,
    path = "/agents/{name}/doctor",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "What the agent checked of its runners", body = muster_proto::ws::DoctorReport),
    ),
)]
pub(super) async fn agent_doctor(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    let agent = load_agent(&hub, &name).await?;
    let report = doctor_of(&agent)
        .ok_or_else(|| ApiError::NotFound(format!("agent {} has not sent a doctor report", agent.name)))?;
    Ok(json(StatusCode::OK, &report))
}

pub(super) fn agent_view(a: &AgentRecord) -> AgentView {
    AgentView {
        name: a.name.to_string(),
        state: a.status.state().as_str().to_owned(),
        connected: a.status.connected,
        capabilities: a.capabilities().iter().map(|c| c.to_string()).collect(),
        runners: a.runners.iter().map(|r| r.to_string()).collect(),
        slots: a.status.slots,
        used_slots: a.status.used_slots,
        paused: a.status.paused,
        draining: a.status.draining,
        version: a.version.clone(),
        unavailable: doctor_of(a)
            .map(|d| {
                d.runners.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.name, r.problems.join("; "))).collect()
            })
            .unwrap_or_default(),
        token_id: a.token_id.to_string(),
        last_seen_at: a.last_seen_at.map(timestamp),
        created_at: timestamp(a.created_at),
    }
}

/// Register an agent: `{"name": …, "capabilities": [...]}`. 201 with `name`, `token`, `token_id`.
#[utoipa::path(
    post,
    path = "/agents",
    tag = "agents",
    security(("admin_token" = [])),
    request_body = muster_proto::api::AgentAdd,
    responses(
        (status = 201, description = "Registered; the token is shown once", body = muster_proto::api::AgentCreated),
    ),
)]
pub(super) async fn add_agent(State(hub): State<Hub>, _: Admin, Body(add): Body<AgentAdd>) -> ApiResult {
    let name = AgentName::parse(&add.name)?;
    let capabilities = add.capabilities.iter().map(|c| Capability::parse(c)).collect::<Result<Vec<_>, _>>()?;
    let (minted, token) = agent_token(&name)?;
    let agent = hub.shared.store.register_agent(NewAgent { name, capabilities }, token, hub.now()).await?;
    Ok(json(
        StatusCode::CREATED,
        &AgentCreated { name: agent.name.to_string(), token: minted.token, token_id: minted.id.to_string() },
    ))
}

/// A fresh token for `name`: the secret to show once, and the record to store.
pub(super) fn agent_token(name: &AgentName) -> ApiResult<(crate::auth::Minted, NewToken)> {
    let minted = mint_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    let token = NewToken {
        id: minted.id.clone(),
        name: format!("agent:{name}"),
        scope: Scope::Agent,
        agent: Some(name.clone()),
        hash: hash_token(&minted.token),
    };
    Ok((minted, token))
}

impl Hub {
    /// Revokes the agent's token, issues a new one and disconnects the agent;
    /// returns the new token, which is shown only this once.
    pub async fn reissue_agent_token(&self, name: &AgentName) -> Result<(String, String), ApiError> {
        let (minted, token) = agent_token(name)?;
        self.shared.store.replace_agent_token(name, token, self.now()).await?;
        self.shared.tokens.clear();
        self.close_agent(name, "token revoked");
        Ok((minted.token, minted.id.to_string()))
    }

    /// Registers an agent; returns its token, shown only this once.
    pub async fn register_agent(&self, name: &AgentName, capabilities: Vec<Capability>) -> Result<String, ApiError> {
        let (minted, token) = agent_token(name)?;
        self.shared.store.register_agent(NewAgent { name: name.clone(), capabilities }, token, self.now()).await?;
        Ok(minted.token)
    }
}

/// `DELETE /api/v1/agents/{name}[?force=true]`: revokes the agent's token,
/// disconnects it and deletes its record; its history keeps its name.
/// Refused (409) while it holds runs, unless forced, which queues them again.
#[utoipa::path(
    delete,
    path = "/agents/{name}",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
        ("force" = Option<bool>, Query, description = "Remove even while it holds tasks (they go back to the queue)"),
    ),
    responses(
        (status = 200, description = "Removed; its token revoked", body = muster_proto::api::AgentRemoved),
    ),
)]
pub(super) async fn remove_agent(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q, &["force"])?;
    let force = p.flag("force")?;
    let agent = load_agent(&hub, &name).await?;
    // Looked up first: once removed, the agent's row no longer names its hub.
    let holder = hub.holder(&agent.name).await;
    let taken = hub.shared.store.remove_agent(&agent.name, force, &by.name, hub.now()).await?;
    hub.shared.tokens.clear();
    if !hub.close_local(&agent.name, "token revoked")
        && let Some(id) = holder
    {
        let close = crate::hubs::Relayed::Close { agent: agent.name.to_string(), reason: "token revoked".into() };
        hub.relay_to(muster_store::RelayTo::Hub(id), close).await;
    }
    hub.wake_dispatcher();
    tracing::info!(agent = %agent.name, by = %by.name, taken_back = taken.len(), "agent removed");
    let view = muster_proto::api::AgentRemoved {
        name: agent.name.to_string(),
        tasks: taken
            .iter()
            .map(|t| muster_proto::api::TakenBack { task: t.id.to_string(), state: t.state.as_str().to_owned() })
            .collect(),
    };
    Ok(json(StatusCode::OK, &view))
}

/// Revoke the agent's token and issue a new one (201).
#[utoipa::path(
    post,
    path = "/agents/{name}/token",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 201, description = "A new token; the old one is revoked", body = muster_proto::api::AgentCreated),
    ),
)]
pub(super) async fn reissue_token(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    let agent = load_agent(&hub, &name).await?;
    let (token, token_id) = hub.reissue_agent_token(&agent.name).await?;
    Ok(json(StatusCode::CREATED, &AgentCreated { name: agent.name.to_string(), token, token_id }))
}

/// Tell a connected agent to finish its runs and stop.
#[utoipa::path(
    post,
    path = "/agents/{name}/drain",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "Finishes its runs, then disconnects", body = muster_proto::api::AgentView),
    ),
)]
pub(super) async fn drain_agent(State(hub): State<Hub>, Admin(by): Admin, Path(name): Path<String>) -> ApiResult {
    let agent = load_agent(&hub, &name).await?;
    let reason = format!("drain requested by {}", by.name);
    if !hub.tell(&agent.name, muster_proto::ws::HubMsg::Drain { reason: reason.clone() }).await {
        return Err(ApiError::Conflict {
            field: Some("name".into()),
            detail: format!("agent {} is not connected; only a connected agent can drain", agent.name),
        });
    }
    // Take nothing new for it from now on, without waiting for its next heartbeat.
    let flags = muster_store::AgentFlags { paused: None, draining: Some(true) };
    let agent = hub.shared.store.set_agent_flags(&agent.name, flags, hub.now()).await?;
    tracing::info!(agent = %agent.name, by = %by.name, "drain requested");
    Ok(json(StatusCode::OK, &agent_view(&agent)))
}

/// List agents.
#[utoipa::path(
    get,
    path = "/agents",
    tag = "agents",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every agent", body = Vec<muster_proto::api::AgentView>),
    ),
)]
pub(super) async fn list_agents(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let agents = hub.shared.store.list_agents().await?;
    Ok(json(StatusCode::OK, &agents.iter().map(agent_view).collect::<Vec<_>>()))
}

pub(super) async fn load_agent(hub: &Hub, raw: &str) -> ApiResult<AgentRecord> {
    let name = AgentName::parse(raw)?;
    hub.shared.store.agent(&name).await?.ok_or_else(|| ApiError::NotFound(format!("no agent named {name}")))
}

/// One agent.
#[utoipa::path(
    get,
    path = "/agents/{name}",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "The agent", body = muster_proto::api::AgentView),
    ),
)]
pub(super) async fn show_agent(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    Ok(json(StatusCode::OK, &agent_view(&load_agent(&hub, &name).await?)))
}

pub(super) async fn set_paused(hub: Hub, name: String, paused: bool) -> ApiResult {
    let agent = load_agent(&hub, &name).await?;
    let flags = muster_store::AgentFlags { paused: Some(paused), draining: None };
    let agent = hub.shared.store.set_agent_flags(&agent.name, flags, hub.now()).await?;
    hub.wake_dispatcher();
    Ok(json(StatusCode::OK, &agent_view(&agent)))
}

/// Pause an agent.
#[utoipa::path(
    post,
    path = "/agents/{name}/pause",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "Takes no new work", body = muster_proto::api::AgentView),
    ),
)]
pub(super) async fn pause_agent(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    set_paused(hub, name, true).await
}

/// Resume an agent.
#[utoipa::path(
    post,
    path = "/agents/{name}/resume",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "Takes work again", body = muster_proto::api::AgentView),
    ),
)]
pub(super) async fn resume_agent(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    set_paused(hub, name, false).await
}
