//! Agents: registration, connection, flags and heartbeats; and what a hub's
//! start does to the agents and leases the last one left.

use super::*;

const AGENT_COLS: &str = "a.name, a.token_id, a.capabilities, a.announced_capabilities, a.runners, a.slots, \
     a.version, a.connected, a.session, a.paused, a.draining, a.last_seen_at, a.created_at, \
     (SELECT COUNT(*) FROM tasks t WHERE t.lease_agent = a.name), a.doctor";

fn agent_row(r: &Row<'_>) -> Result<AgentRecord> {
    let name: String = r.get(0)?;
    let token_id: String = r.get(1)?;
    let caps: String = r.get(2)?;
    let announced: String = r.get(3)?;
    let runners: String = r.get(4)?;
    let used: i64 = r.get(13)?;
    Ok(AgentRecord {
        name: AgentName::parse(&name).map_err(|e| corrupt("agent name", e))?,
        token_id: TokenId::parse(&token_id).map_err(|e| corrupt("token id", e))?,
        registered_capabilities: split(&caps, Capability::parse)?,
        announced_capabilities: split(&announced, Capability::parse)?,
        runners: split(&runners, RunnerName::parse)?,
        version: r.get(6)?,
        status: AgentStatus {
            connected: r.get(7)?,
            paused: r.get(9)?,
            draining: r.get(10)?,
            slots: r.get(5)?,
            used_slots: used as u32,
        },
        session: r.get::<_, i64>(8)? as u64,
        last_seen_at: ms(r.get(11)?),
        created_at: Millis(r.get(12)?),
        doctor: r.get(14)?,
    })
}

pub fn agent(c: &Connection, name: &AgentName) -> Result<Option<AgentRecord>> {
    c.prepare_cached(&format!("SELECT {AGENT_COLS} FROM agents a WHERE a.name = ?"))?
        .query_row([name.as_str()], agent_row)
        .optional()
}

pub(super) fn load_agent(c: &Connection, name: &AgentName) -> Result<AgentRecord> {
    agent(c, name)?.ok_or_else(|| StoreError::not_found("agent", name))
}

pub fn list_agents(c: &Connection) -> Result<Vec<AgentRecord>> {
    c.prepare(&format!("SELECT {AGENT_COLS} FROM agents a ORDER BY a.name"))?
        .query_map([], agent_row)?
        .collect::<Result<_>>()
}

pub fn register_agent(c: &Connection, a: &NewAgent, t: &NewToken, now: Millis) -> Result<AgentRecord> {
    if agent(c, &a.name)?.is_some() {
        return Err(StoreError::Conflict(format!("an agent named {:?} already exists", a.name.as_str())));
    }
    create_token(c, t, now)?;
    let mut caps = a.capabilities.clone();
    caps.sort();
    caps.dedup();
    c.execute(
        "INSERT INTO agents (name, token_id, capabilities, created_at) VALUES (?, ?, ?, ?)",
        params![a.name.as_str(), t.id.as_str(), join(&caps.iter().map(|c| c.as_str()).collect::<Vec<_>>()), now.0],
    )?;
    agent_event(c, now, "agent.registered", Some(&a.name), Some("offline"), None)?;
    load_agent(c, &a.name)
}

pub fn replace_agent_token(c: &Connection, name: &AgentName, t: &NewToken, now: Millis) -> Result<AgentRecord> {
    let before = load_agent(c, name)?;
    revoke_token(c, &before.token_id, now)?;
    create_token(c, t, now)?;
    c.execute("UPDATE agents SET token_id = ? WHERE name = ?", params![t.id.as_str(), name.as_str()])?;
    load_agent(c, name)
}

/// Removes an agent: refused while it holds leases, unless `force`, which
/// takes them back. Its token is revoked and its record and circuit
/// breaker deleted; its attempts, events and messages keep its name.
pub fn remove_agent(c: &Connection, name: &AgentName, force: bool, by: &str, now: Millis) -> Result<Vec<Task>> {
    let agent = load_agent(c, name)?;
    let leased: Vec<(String, i64)> = c
        .prepare_cached("SELECT id, lease_epoch FROM tasks WHERE lease_agent = ? ORDER BY id")?
        .query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_>>()?;
    if !leased.is_empty() && !force {
        let ids: Vec<&str> = leased.iter().map(|(id, _)| id.as_str()).collect();
        return Err(StoreError::Conflict(format!(
            "agent {name} holds {} ({}); let them end (muster agent drain {name}), or remove it with --force, \
             which queues them again",
            if ids.len() == 1 { "a run".to_owned() } else { format!("{} runs", ids.len()) },
            ids.join(", ")
        )));
    }
    let mut taken = Vec::with_capacity(leased.len());
    for (id, epoch) in leased {
        let id = TaskId::parse(&id).map_err(|e| corrupt("task id", e))?;
        taken.push(take_back(c, &id, now, None, Some((name, Epoch(epoch as u64), Disowned::Removed)))?.0);
    }
    revoke_token(c, &agent.token_id, now)?;
    c.prepare_cached("DELETE FROM breakers WHERE scope = 'agent' AND name = ?")?.execute([name.as_str()])?;
    c.prepare_cached("DELETE FROM agents WHERE name = ?")?.execute([name.as_str()])?;
    let detail = match taken.len() {
        0 => format!("by {by}"),
        n => format!("by {by}; {n} of its tasks taken back"),
    };
    agent_event(c, now, "agent.removed", Some(name), None, Some(&detail))?;
    Ok(taken)
}

/// `hub`: the hub that holds the socket, when the store knows it.
pub fn agent_connected(
    c: &Connection,
    name: &AgentName,
    hello: &Announce,
    hub: Option<&str>,
    now: Millis,
) -> Result<(AgentRecord, u64)> {
    let before = load_agent(c, name)?;
    let caps: Vec<&str> = hello.capabilities.iter().map(|c| c.as_str()).collect();
    let runners: Vec<&str> = hello.runners.iter().map(|r| r.as_str()).collect();
    c.prepare_cached(
        "UPDATE agents SET announced_capabilities = ?, runners = ?, slots = ?, version = ?, connected = 1, \
         session = session + 1, draining = 0, last_seen_at = ?, doctor = ?, hub = ? WHERE name = ?",
    )?
    .execute(params![
        join(&caps),
        join(&runners),
        hello.slots,
        hello.version,
        now.0,
        hello.doctor,
        hub,
        name.as_str()
    ])?;
    let detail = if before.status.connected { "replaced an earlier connection" } else { "connected" };
    let state = load_agent(c, name)?.status.state();
    agent_event(c, now, "agent.connected", Some(name), Some(state.as_str()), Some(detail))?;
    if let Some(holds) = &hello.holds {
        let leased: Vec<(String, i64)> = c
            .prepare_cached("SELECT id, lease_epoch FROM tasks WHERE lease_agent = ?")?
            .query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_>>()?;
        for (id, epoch) in leased {
            let id = TaskId::parse(&id).map_err(|e| corrupt("task id", e))?;
            let epoch = Epoch(epoch as u64);
            if !holds.iter().any(|(t, e)| *t == id && *e == epoch) {
                take_back(c, &id, now, None, Some((name, epoch, Disowned::Reconnected)))?;
            }
        }
    }
    // Read again: taking tasks back frees its slots.
    let after = load_agent(c, name)?;
    let session = after.session;
    Ok((after, session))
}

pub fn agent_disconnected(c: &Connection, name: &AgentName, session: u64, reason: &str, now: Millis) -> Result<()> {
    let changed = c
        .prepare_cached(
            "UPDATE agents SET connected = 0, last_seen_at = ? WHERE name = ? AND session = ? AND connected = 1",
        )?
        .execute(params![now.0, name.as_str(), session as i64])?;
    if changed > 0 {
        agent_event(c, now, "agent.disconnected", Some(name), Some("offline"), Some(reason))?;
    }
    Ok(())
}

pub fn set_agent_flags(c: &Connection, name: &AgentName, flags: AgentFlags, now: Millis) -> Result<AgentRecord> {
    let before = load_agent(c, name)?;
    if let Some(p) = flags.paused {
        c.execute("UPDATE agents SET paused = ? WHERE name = ?", params![p, name.as_str()])?;
    }
    if let Some(d) = flags.draining {
        c.execute("UPDATE agents SET draining = ? WHERE name = ?", params![d, name.as_str()])?;
    }
    let after = load_agent(c, name)?;
    if after.status.state() != before.status.state() {
        let state = after.status.state().as_str();
        agent_event(c, now, "agent.state", Some(name), Some(state), None)?;
    }
    Ok(after)
}

pub fn heartbeat(
    c: &Connection,
    name: &AgentName,
    runs: &[(TaskId, Epoch)],
    now: Millis,
    ttl: Duration,
) -> Result<Heartbeat> {
    let seen = c
        .prepare_cached("UPDATE agents SET last_seen_at = ? WHERE name = ?")?
        .execute(params![now.0, name.as_str()])?;
    if seen == 0 {
        return Err(StoreError::not_found("agent", name));
    }
    let mut out = Heartbeat::default();
    for (id, epoch) in runs {
        let Some(mut task) = find_task(c, id)? else {
            out.stale.push((id.clone(), *epoch));
            continue;
        };
        match task.renew(name, *epoch, now, ttl) {
            Ok(()) => {
                let expires = task.lease.as_ref().map(|l| l.expires_at.0);
                c.prepare_cached("UPDATE tasks SET lease_expires_at = ? WHERE id = ?")?
                    .execute(params![expires, id.as_str()])?;
                out.renewed += 1;
            }
            Err(_) if adopt_lost_accept(c, name, &task, *epoch, now, ttl)? => out.renewed += 1,
            // The agent is waiting for the hub to acknowledge an outcome already
            // applied: nothing to renew, nothing to drop.
            Err(_) if attempt_finished_by(c, name, id, *epoch)? => continue,
            Err(_) => {
                out.stale.push((id.clone(), *epoch));
                continue;
            }
        }
        if task.cancel_requested {
            out.cancel.push((id.clone(), *epoch));
        }
    }
    Ok(out)
}
