//! Messages: mailboxes of agents and tasks, and channels with history and
//! threads. An agent's mail waits until its socket takes it; a task's is
//! read by its runs (`muster ctl msg read`); a channel's posts go to the
//! agents following it as they happen, and stay for `channel tail`.

use crate::Hub;
use crate::error::ApiResult;
use crate::extract::Params;
use muster_core::AgentName;
use muster_proto::api::MessageView;
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

pub(crate) fn recipient(to: &str) -> ApiResult<Recipient> {
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
                self.deliver_handouts();
                for agent in self.followers(name) {
                    let _ = self.push_local(&agent, Box::new(HubMsg::Message(Box::new(view(&m)))));
                }
                // Followers connected to other hubs hear it from theirs.
                let msg = HubMsg::Message(Box::new(view(&m)));
                self.relay(crate::hubs::Relayed::Channel { name: name.clone(), msg }).await;
            }
            Recipient::Task(_) => {}
        }
        // Long-polls on mailboxes and channels wake on any store change.
        Ok(m)
    }

    /// Messages after `after`, held up to `wait` until there is one.
    pub(crate) async fn read_messages(
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

pub(crate) fn page_params(q: Option<String>) -> ApiResult<(Option<i64>, i64, usize, std::time::Duration, Params)> {
    let p = Params::parse(q, &["to", "thread", "after", "limit", "wait"])?;
    let thread = p.number::<i64>("thread")?;
    let after = p.number::<i64>("after")?.unwrap_or(0);
    let limit = p.number::<usize>("limit")?.unwrap_or(100).clamp(1, 1000);
    let wait = p.wait()?;
    Ok((thread, after, limit, wait, p))
}
