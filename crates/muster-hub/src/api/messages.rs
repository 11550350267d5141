//! Messages and channels, for operators and for runs.

use crate::Hub;
use crate::error::{ApiError, ApiResult, json};
use crate::extract::{Admin, Body, TaskCaller};
use crate::messages::*;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use muster_proto::api::{ChannelAdd, ChannelView, MessageSend};
use muster_proto::timestamp;
use muster_store::Recipient;

/// `POST /api/v1/messages`: to an agent, a task or a channel.
#[utoipa::path(
    post,
    operation_id = "send_message",
    path = "/messages",
    tag = "messages",
    security(("admin_token" = [])),
    request_body = muster_proto::api::MessageSend,
    responses(
        (status = 201, description = "Sent", body = muster_proto::api::MessageView),
    ),
)]
pub(crate) async fn send(State(hub): State<Hub>, Admin(by): Admin, Body(req): Body<MessageSend>) -> ApiResult {
    let m = hub.send_message(&recipient(&req.to)?, &by.name, &req.body, req.reply_to).await?;
    Ok(json(StatusCode::CREATED, &view(&m)))
}

/// `GET /api/v1/messages?to=agent:NAME|task:ID|channel:NAME`: a mailbox or channel, oldest first.
#[utoipa::path(
    get,
    operation_id = "list_messages",
    path = "/messages",
    tag = "messages",
    security(("admin_token" = [])),
    params(
        ("to" = Option<String>, Query, description = "Only to this recipient"),
        ("thread" = Option<String>, Query, description = "Only this thread"),
        ("after" = Option<i64>, Query, description = "Messages after this id"),
        ("limit" = Option<u32>, Query, description = "At most this many"),
        ("wait" = Option<String>, Query, description = "Long-poll up to this long for one"),
    ),
    responses(
        (status = 200, description = "Messages", body = Vec<muster_proto::api::MessageView>),
    ),
)]
pub(crate) async fn list(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    let (thread, after, limit, wait, p) = page_params(q)?;
    let to = recipient(p.get("to").ok_or_else(|| ApiError::bad("to", "give to=agent:NAME, task:ID or channel:NAME"))?)?;
    let found = hub.read_messages(&to, thread, after, limit, wait).await?;
    Ok(json(StatusCode::OK, &found.iter().map(view).collect::<Vec<_>>()))
}

/// Create `{"name": "deploys", "description": "…"}` (409 if it exists), or list with message
/// counts.
#[utoipa::path(
    post,
    operation_id = "create_channel",
    path = "/channels",
    tag = "messages",
    security(("admin_token" = [])),
    request_body = muster_proto::api::ChannelAdd,
    responses(
        (status = 201, description = "Created", body = muster_proto::api::ChannelView),
    ),
)]
pub(crate) async fn create_channel(State(hub): State<Hub>, Admin(by): Admin, Body(req): Body<ChannelAdd>) -> ApiResult {
    let c = hub.shared.store.create_channel(&req.name, req.description.trim(), &by.name, hub.now()).await?;
    Ok(json(
        StatusCode::CREATED,
        &ChannelView {
            name: c.name,
            description: c.description,
            created_by: c.created_by,
            created_at: timestamp(c.created_at),
            messages: c.messages,
        },
    ))
}

/// Create `{"name": "deploys", "description": "…"}` (409 if it exists), or list with message
/// counts.
#[utoipa::path(
    get,
    operation_id = "list_channels",
    path = "/channels",
    tag = "messages",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every channel", body = Vec<muster_proto::api::ChannelView>),
    ),
)]
pub(crate) async fn channels(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let all = hub.shared.store.channels().await?;
    let view: Vec<ChannelView> = all
        .into_iter()
        .map(|c| ChannelView {
            name: c.name,
            description: c.description,
            created_by: c.created_by,
            created_at: timestamp(c.created_at),
            messages: c.messages,
        })
        .collect();
    Ok(json(StatusCode::OK, &view))
}

/// `POST /api/v1/ctl/messages`: a run sends a message, signed as its task.
#[utoipa::path(
    post,
    path = "/ctl/messages",
    tag = "ctl",
    security(("task_token" = [])),
    request_body = muster_proto::api::MessageSend,
    responses(
        (status = 201, description = "Sent", body = muster_proto::api::MessageView),
    ),
)]
pub(crate) async fn ctl_send(
    State(hub): State<Hub>,
    TaskCaller(task, _): TaskCaller,
    Body(req): Body<MessageSend>,
) -> ApiResult {
    let text = crate::auth::redact_tokens(&req.body);
    let m = hub.send_message(&recipient(&req.to)?, &format!("task:{task}"), &text, req.reply_to).await?;
    Ok(json(StatusCode::CREATED, &view(&m)))
}

/// `GET /api/v1/ctl/messages`: the run's own task's mailbox (marked read),
/// or `to=channel:NAME`.
#[utoipa::path(
    get,
    path = "/ctl/messages",
    tag = "ctl",
    security(("task_token" = [])),
    params(
        ("thread" = Option<String>, Query, description = "Only this thread"),
        ("after" = Option<i64>, Query, description = "Messages after this id"),
        ("limit" = Option<u32>, Query, description = "At most this many"),
        ("wait" = Option<String>, Query, description = "Long-poll up to this long for one"),
    ),
    responses(
        (status = 200, description = "Messages to its task", body = Vec<muster_proto::api::MessageView>),
    ),
)]
pub(crate) async fn ctl_read(
    State(hub): State<Hub>,
    TaskCaller(task, _): TaskCaller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let (thread, after, limit, wait, p) = page_params(q)?;
    let to = match p.get("to") {
        None => Recipient::Task(task.clone()),
        Some(to) => match recipient(to)? {
            c @ Recipient::Channel(_) => c,
            Recipient::Task(t) if t == task => Recipient::Task(t),
            _ => return Err(ApiError::Forbidden("a run reads its own task's mailbox and channels only".into())),
        },
    };
    let found = hub.read_messages(&to, thread, after, limit, wait).await?;
    if let Recipient::Task(t) = &to
        && !found.is_empty()
    {
        hub.shared.store.mark_read(t, found.iter().map(|m| m.id).collect(), hub.now()).await?;
    }
    Ok(json(StatusCode::OK, &found.iter().map(view).collect::<Vec<_>>()))
}
