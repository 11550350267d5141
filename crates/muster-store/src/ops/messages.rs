//! Messages between tasks, agents and people, by channel.

use super::*;

const MESSAGE_COLS: &str = "id, recipient, sender, body, thread, reply_to, created_at, delivered_at, read_at";

fn message_row(r: &Row<'_>) -> Result<MessageRecord> {
    let to: String = r.get(1)?;
    Ok(MessageRecord {
        id: r.get(0)?,
        to: Recipient::parse(&to).map_err(|e| corrupt("recipient", e))?,
        sender: r.get(2)?,
        body: r.get(3)?,
        thread: r.get(4)?,
        reply_to: r.get(5)?,
        created_at: Millis(r.get(6)?),
        delivered_at: ms(r.get(7)?),
        read_at: ms(r.get(8)?),
    })
}

fn load_message(c: &Connection, id: i64) -> Result<MessageRecord> {
    c.prepare_cached(&format!("SELECT {MESSAGE_COLS} FROM messages WHERE id = ?"))?
        .query_row([id], message_row)
        .optional()?
        .ok_or_else(|| StoreError::not_found("message", id))
}

pub fn create_channel(c: &Connection, name: &str, description: &str, by: &str, now: Millis) -> Result<ChannelRecord> {
    check_channel_name(name).map_err(|e| StoreError::Invalid(Invalid::new("name", e.reason)))?;
    if description.len() > 500 {
        return Err(StoreError::Invalid(Invalid::new("description", "at most 500 bytes")));
    }
    let added = c
        .prepare_cached(
            "INSERT INTO channels (name, description, created_by, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![name, description, by, now.0])?;
    if added == 0 {
        return Err(StoreError::Conflict(format!("channel {name} exists")));
    }
    insert_event_row(
        c,
        now,
        "channel.created",
        EventRow { detail: Some(&format!("{name} (by {by})")), ..EventRow::default() },
    )?;
    Ok(ChannelRecord {
        name: name.to_owned(),
        description: description.to_owned(),
        created_by: by.to_owned(),
        created_at: now,
        messages: 0,
    })
}

pub fn channels(c: &Connection) -> Result<Vec<ChannelRecord>> {
    let rows = c
        .prepare_cached(
            "SELECT c.name, c.description, c.created_by, c.created_at, \
             (SELECT count(*) FROM messages m WHERE m.recipient = 'channel:' || c.name) FROM channels c ORDER BY c.name",
        )?
        .query_map([], |r| {
            Ok(ChannelRecord {
                name: r.get(0)?,
                description: r.get(1)?,
                created_by: r.get(2)?,
                created_at: Millis(r.get(3)?),
                messages: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?
        .collect::<Result<_>>()?;
    Ok(rows)
}

/// Stores a message; a reply joins its thread, which must be in the same mailbox or channel.
pub fn send_message(
    c: &Connection,
    to: &Recipient,
    sender: &str,
    body: &str,
    reply_to: Option<i64>,
    now: Millis,
) -> Result<MessageRecord> {
    if body.trim().is_empty() || body.len() > MAX_MESSAGE {
        return Err(StoreError::Invalid(Invalid::new("body", format!("must be 1 to {MAX_MESSAGE} bytes"))));
    }
    match to {
        Recipient::Agent(a) => {
            load_agent(c, a)?;
        }
        Recipient::Task(t) => {
            load_task(c, t)?;
        }
        Recipient::Channel(name) => {
            let known: i64 =
                c.prepare_cached("SELECT count(*) FROM channels WHERE name = ?")?.query_row([name], |r| r.get(0))?;
            if known == 0 {
                return Err(StoreError::not_found("channel", name));
            }
        }
    }
    let thread = match reply_to {
        Some(id) => {
            let parent = load_message(c, id)?;
            if let Recipient::Channel(ch) = &parent.to
                && parent.to != *to
            {
                return Err(StoreError::Invalid(Invalid::new(
                    "reply_to",
                    format!("message {id} is in channel {ch}; reply there"),
                )));
            }
            Some(parent.thread)
        }
        None => None,
    };
    let recipient = to.to_string();
    let id: i64 = c
        .prepare_cached(
            "INSERT INTO messages (recipient, sender, body, thread, reply_to, created_at) \
             VALUES (?, ?, ?, 0, ?, ?) RETURNING id",
        )?
        .query_row(params![recipient, sender, body, reply_to, now.0], |r| r.get(0))?;
    c.prepare_cached("UPDATE messages SET thread = ? WHERE id = ?")?.execute(params![thread.unwrap_or(id), id])?;
    let row = EventRow {
        task: match to {
            Recipient::Task(t) => Some(t),
            _ => None,
        },
        agent: match to {
            Recipient::Agent(a) => Some(a),
            _ => None,
        },
        detail: Some(&format!("#{id} to {recipient} from {sender}: {}", clip(body.lines().next().unwrap_or(""), 120))),
        ..EventRow::default()
    };
    insert_event_row(c, now, "message.sent", row)?;
    load_message(c, id)
}

/// A mailbox or channel, oldest first, after message `after`; `thread` keeps one thread.
pub fn messages(
    c: &Connection,
    to: &Recipient,
    thread: Option<i64>,
    after: i64,
    limit: usize,
) -> Result<Vec<MessageRecord>> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE recipient = ?1 AND id > ?2 AND (CAST(?3 AS BIGINT) IS NULL OR thread = ?3) \
             ORDER BY id LIMIT ?4"
        ))?
        .query_map(params![to.to_string(), after, thread, limit.clamp(1, 1000) as i64], message_row)?
        .collect::<Result<_>>()?;
    Ok(rows)
}

/// An agent's messages not yet delivered, oldest first.
pub fn undelivered(c: &Connection, agent: &AgentName) -> Result<Vec<MessageRecord>> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE recipient = ? AND delivered_at IS NULL ORDER BY id LIMIT 1000"
        ))?
        .query_map([Recipient::Agent(agent.clone()).to_string()], message_row)?
        .collect::<Result<_>>()?;
    Ok(rows)
}

/// The agent's socket took these; returns how many were new.
pub fn mark_delivered(c: &Connection, agent: &AgentName, ids: &[i64], now: Millis) -> Result<u64> {
    let to = Recipient::Agent(agent.clone()).to_string();
    let mut n = 0;
    for id in ids.iter().take(1000) {
        let new = c
            .prepare_cached(
                "UPDATE messages SET delivered_at = ? WHERE id = ? AND recipient = ? AND delivered_at IS NULL",
            )?
            .execute(params![now.0, id, to])? as u64;
        if new > 0 {
            let row = EventRow { agent: Some(agent), detail: Some(&format!("#{id} to {to}")), ..EventRow::default() };
            insert_event_row(c, now, "message.delivered", row)?;
        }
        n += new;
    }
    Ok(n)
}

/// A run read these messages of its task's mailbox.
pub fn mark_read(c: &Connection, task: &TaskId, ids: &[i64], now: Millis) -> Result<()> {
    let to = Recipient::Task(task.clone()).to_string();
    for id in ids.iter().take(1000) {
        c.prepare_cached("UPDATE messages SET read_at = ? WHERE recipient = ? AND id = ? AND read_at IS NULL")?
            .execute(params![now.0, to, id])?;
    }
    Ok(())
}
