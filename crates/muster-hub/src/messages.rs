//! Messages: mailboxes of agents and tasks, and channels with history and
//! threads. An agent's mail waits until its socket takes it; a task's is
//! read by its runs (`muster ctl msg read`); a channel's posts go to the
//! agents following it as they happen, and stay for `channel tail`.

use crate::Hub;
use crate::error::{ApiError, ApiResult, json};
use crate::extract::{Admin, Body, Params, TaskCaller};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use muster_core::AgentName;
use muster_proto::api::{ChannelAdd, ChannelView, MessageSend, MessageView};
use muster_proto::timestamp;
use muster_proto::ws::HubMsg;
use muster_store::{MessageRecord, Recipient};

pub(crate) fn view(m: &MessageRecord) -> MessageView {
    MessageView {
        id: m.id,
        to: m.to.to_string(),
        sender: m.sender.clone(),
        body: m.body.clone(),
        thread: m.thread,
        reply_to: m.reply_to,
        created_at: timestamp(m.created_at),
        delivered_at: m.delivered_at.map(timestamp),
        read_at: m.read_at.map(timestamp),
    }
}

fn recipient(to: &str) -> ApiResult<Recipient> {
    Ok(Recipient::parse(to)?)
}

impl Hub {
    /// Sends an agent the mail that waited for it.
    pub(crate) async fn deliver_mail(&self, agent: &AgentName) {
        match self.shared.store.undelivered(agent).await {
            Ok(mail) => {
                for m in mail {
                    self.send_to(agent, HubMsg::Message(Box::new(view(&m))));
                }
            }
            Err(e) => tracing::error!(agent = %agent, error = %e, "cannot read the agent's mail"),
        }
    }

    /// Stores a message and sends it on to whoever is connected for it.
    pub(crate) async fn send_message(
        &self,
        to: &Recipient,
        sender: &str,
        body: &str,
        reply_to: Option<i64>,
    ) -> ApiResult<MessageRecord> {
        let m = self.shared.store.send_message(to, sender, body, reply_to, self.now()).await?;
        match &m.to {
            Recipient::Agent(agent) => {
                self.send_to(agent, HubMsg::Message(Box::new(view(&m))));
            }
            Recipient::Channel(name) => {
                let followers: Vec<AgentName> = {
                    let sessions = self.shared.sessions.lock().expect("sessions lock poisoned");
                    sessions.iter().filter(|(_, s)| s.channels.contains(name)).map(|(a, _)| a.clone()).collect()
                };
                for agent in followers {
                    self.send_to(&agent, HubMsg::Message(Box::new(view(&m))));
                }
            }
            Recipient::Task(_) => {}
        }
        // Long-polls on mailboxes and channels wake on any store change.
        Ok(m)
    }

    /// Messages after `after`, held up to `wait` until there is one.
    async fn read_messages(
        &self,
        to: &Recipient,
        thread: Option<i64>,
        after: i64,
        limit: usize,
        wait: std::time::Duration,
    ) -> ApiResult<Vec<MessageRecord>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.shared.store.subscribe();
        loop {
            changes.borrow_and_update();
            let found = self.shared.store.messages(to, thread, after, limit).await?;
            let now = tokio::time::Instant::now();
            if !found.is_empty() || now >= deadline {
                return Ok(found);
            }
            let _ = tokio::time::timeout(deadline - now, changes.changed()).await;
        }
    }
}

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

fn page_params(q: Option<String>) -> ApiResult<(Option<i64>, i64, usize, std::time::Duration, Params)> {
    let p = Params::parse(q, &["to", "thread", "after", "limit", "wait"])?;
    let thread = p.number::<i64>("thread")?;
    let after = p.number::<i64>("after")?.unwrap_or(0);
    let limit = p.number::<usize>("limit")?.unwrap_or(100).clamp(1, 1000);
    let wait = p.wait()?;
    Ok((thread, after, limit, wait, p))
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
