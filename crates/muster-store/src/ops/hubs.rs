//! Hubs on one database: who is there, which hub holds each agent's socket,
//! and the duties one hub at a time leads under a lease with an epoch.

use super::*;
use crate::{Duty, Fence, HubInfo, HubRecord, RelayTo};

const HUB_COLS: &str = "id, name, url, version, ttl_ms, started_at, seen_at, stopped_at";

fn hub_row(r: &Row<'_>) -> Result<HubRecord> {
    Ok(HubRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        url: r.get(2)?,
        version: r.get(3)?,
        ttl: Duration::from_millis(r.get::<_, i64>(4)?.max(0) as u64),
        started_at: Millis(r.get(5)?),
        seen_at: Millis(r.get(6)?),
        stopped_at: ms(r.get(7)?),
        agents: Vec::new(),
    })
}

/// A hub starts: an earlier run under its name is over (its duties are
/// free), and so is every other hub when the database can have only one
/// (`hub.exclusive`: SQLite, whose file one hub locks); then every agent whose
/// socket no live hub holds is disconnected.
/// The leases of the agents it disconnects (every live lease, when the hub
/// is alone) are extended to `now + grace`, so agents that were running
/// tasks have time to reconnect and re-attach to them.
pub fn hub_started(c: &Connection, hub: &HubInfo, now: Millis, grace: Duration) -> Result<()> {
    c.execute(
        "UPDATE hubs SET stopped_at = ? WHERE (name = ? OR ?) AND id <> ? AND stopped_at IS NULL",
        params![now.0, hub.name, hub.exclusive, hub.id],
    )?;
    c.execute(
        "INSERT INTO hubs (id, name, url, version, ttl_ms, started_at, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, stopped_at = NULL",
        params![hub.id, hub.name, hub.url, hub.version, hub.ttl.as_millis() as i64, now.0, now.0],
    )?;
    free_duties_of_stopped(c, now)?;
    let names: Vec<String> = c
        .prepare_cached(
            "SELECT name FROM agents WHERE connected = 1 AND (hub IS NULL OR hub NOT IN \
             (SELECT id FROM hubs WHERE stopped_at IS NULL AND seen_at + ttl_ms >= ?))",
        )?
        .query_map([now.0], |r| r.get(0))?
        .collect::<Result<_>>()?;
    let until = now.plus(grace).0;
    let mut extended = 0;
    for name in &names {
        let agent = AgentName::parse(name).map_err(|e| corrupt("agent name", e))?;
        c.execute("UPDATE agents SET connected = 0 WHERE name = ?", [agent.as_str()])?;
        agent_event(c, now, "agent.disconnected", Some(&agent), Some("offline"), Some("hub restarted"))?;
        if !hub.exclusive {
            // Its runs get the grace to be re-attached; other hubs' agents keep their leases as they are.
            extended += c.execute(
                "UPDATE tasks SET lease_expires_at = ? WHERE lease_agent = ? AND lease_expires_at < ?",
                params![until, agent.as_str(), until],
            )?;
        }
    }
    if hub.exclusive {
        // Alone on the database: every lease belongs to an agent that must reconnect.
        extended = c.execute(
            "UPDATE tasks SET lease_expires_at = ? WHERE lease_expires_at IS NOT NULL AND lease_expires_at < ?",
            params![until, until],
        )?;
    }
    let detail = format!("{} ({}); {extended} leases extended", hub.name, hub.id);
    agent_event(c, now, "hub.started", None, None, Some(&detail))
}

fn free_duties_of_stopped(c: &Connection, now: Millis) -> Result<()> {
    c.execute(
        "UPDATE duties SET expires_at = ? WHERE expires_at > ? AND hub IN (SELECT id FROM hubs WHERE stopped_at IS NOT NULL)",
        params![now.0, now.0],
    )?;
    Ok(())
}

/// The hub is alive; returns whether it had been counted gone (its agents
/// were disconnected meanwhile: it must drop their sockets, so that they
/// connect again and are counted as its).
pub fn hub_beat(c: &Connection, id: &str, now: Millis) -> Result<bool> {
    let stopped: Option<Option<i64>> =
        c.prepare_cached("SELECT stopped_at FROM hubs WHERE id = ?")?.query_row([id], |r| r.get(0)).optional()?;
    let Some(stopped) = stopped else { return Err(StoreError::not_found("hub", id)) };
    c.prepare_cached("UPDATE hubs SET seen_at = ?, stopped_at = NULL WHERE id = ?")?.execute(params![now.0, id])?;
    if stopped.is_some() {
        agent_event(c, now, "hub.returned", None, None, Some(&format!("{id} beats again after it was counted gone")))?;
    }
    Ok(stopped.is_some())
}

/// A hub stops on purpose: its duties are free at once.
pub fn hub_stopped(c: &Connection, id: &str, now: Millis) -> Result<()> {
    c.execute("UPDATE hubs SET stopped_at = ? WHERE id = ? AND stopped_at IS NULL", params![now.0, id])?;
    c.execute("UPDATE duties SET expires_at = ? WHERE hub = ? AND expires_at > ?", params![now.0, id, now.0])?;
    Ok(())
}

/// Every hub that has not stopped, and those that stopped within the last
/// day, newest first, each with the agents whose sockets it holds.
pub fn hubs(c: &Connection, now: Millis) -> Result<Vec<HubRecord>> {
    let mut hubs: Vec<HubRecord> = c
        .prepare_cached(&format!(
            "SELECT {HUB_COLS} FROM hubs WHERE stopped_at IS NULL OR stopped_at >= ? ORDER BY started_at DESC, id"
        ))?
        .query_map([now.0 - 86_400_000], hub_row)?
        .collect::<Result<_>>()?;
    for h in &mut hubs {
        let names: Vec<String> = c
            .prepare_cached("SELECT name FROM agents WHERE hub = ? AND connected = 1 ORDER BY name")?
            .query_map([h.id.as_str()], |r| r.get(0))?
            .collect::<Result<_>>()?;
        h.agents =
            names.iter().map(|n| AgentName::parse(n)).collect::<Result<_, _>>().map_err(|e| corrupt("agent", e))?;
    }
    Ok(hubs)
}

/// Hubs that stopped beating without saying so: each is counted gone
/// (`hub.lost`), its duties are freed and its agents disconnected, so that
/// their leases run out unless they reconnect to another hub. Returns them.
pub fn reap_hubs(c: &Connection, now: Millis) -> Result<Vec<HubRecord>> {
    let lost: Vec<HubRecord> = c
        .prepare_cached(&format!("SELECT {HUB_COLS} FROM hubs WHERE stopped_at IS NULL AND seen_at + ttl_ms < ?"))?
        .query_map([now.0], hub_row)?
        .collect::<Result<_>>()?;
    for hub in &lost {
        c.execute("UPDATE hubs SET stopped_at = ? WHERE id = ?", params![now.0, hub.id])?;
        let silent = now.since(hub.seen_at).as_secs();
        agent_event(c, now, "hub.lost", None, None, Some(&format!("{} ({}) silent for {silent} s", hub.name, hub.id)))?;
        let names: Vec<String> = c
            .prepare_cached("SELECT name FROM agents WHERE hub = ? AND connected = 1")?
            .query_map([hub.id.as_str()], |r| r.get(0))?
            .collect::<Result<_>>()?;
        for name in names {
            let agent = AgentName::parse(&name).map_err(|e| corrupt("agent name", e))?;
            c.execute("UPDATE agents SET connected = 0 WHERE name = ?", [agent.as_str()])?;
            let why = format!("its hub {} stopped answering", hub.name);
            agent_event(c, now, "agent.disconnected", Some(&agent), Some("offline"), Some(&why))?;
        }
    }
    free_duties_of_stopped(c, now)?;
    // Left for hubs that are gone, or never taken: nobody passes them on.
    c.prepare_cached("DELETE FROM relays WHERE at < ? OR hub NOT IN (SELECT id FROM hubs WHERE stopped_at IS NULL)")?
        .execute([now.0 - RELAY_KEPT.as_millis() as i64])?;
    Ok(lost)
}

/// How long a message left for another hub waits to be passed on.
const RELAY_KEPT: Duration = Duration::from_secs(600);

/// Leaves `body` for the hubs that pass it on: the hub holding the agent's
/// socket, or every other live hub. Returns how many hubs it was left for
/// (none when the agent is not connected to another hub).
pub fn relay(c: &Connection, from: &str, to: &RelayTo, body: &str, now: Millis) -> Result<usize> {
    match to {
        RelayTo::Agent(agent) => c
            .prepare_cached(
                "INSERT INTO relays (hub, body, at) SELECT hub, CAST(? AS TEXT), CAST(? AS BIGINT) FROM agents \
                 WHERE name = ? AND connected = 1 AND hub IS NOT NULL AND hub <> ?",
            )?
            .execute(params![body, now.0, agent.as_str(), from]),
        RelayTo::Hubs => c
            .prepare_cached(
                "INSERT INTO relays (hub, body, at) SELECT id, CAST(? AS TEXT), CAST(? AS BIGINT) FROM hubs \
                 WHERE stopped_at IS NULL AND seen_at + ttl_ms >= ? AND id <> ?",
            )?
            .execute(params![body, now.0, now.0, from]),
        RelayTo::Hub(id) => c
            .prepare_cached(
                "INSERT INTO relays (hub, body, at) SELECT id, CAST(? AS TEXT), CAST(? AS BIGINT) FROM hubs \
                 WHERE id = ? AND id <> ? AND stopped_at IS NULL",
            )?
            .execute(params![body, now.0, id, from]),
    }
}

/// Takes the messages left for hub `hub`, oldest first.
pub fn take_relays(c: &Connection, hub: &str) -> Result<Vec<String>> {
    let mut taken: Vec<(i64, String)> = c
        .prepare_cached("DELETE FROM relays WHERE hub = ? RETURNING id, body")?
        .query_map([hub], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_>>()?;
    taken.sort_by_key(|t| t.0);
    Ok(taken.into_iter().map(|t| t.1).collect())
}

fn fence_row(r: &Row<'_>) -> Result<Option<Fence>> {
    let duty: String = r.get(0)?;
    let hub: Option<String> = r.get(1)?;
    Ok(match (Duty::parse(&duty), hub) {
        (Some(duty), Some(hub)) => Some(Fence {
            duty,
            hub,
            epoch: r.get::<_, i64>(2)?.max(0) as u64,
            taken_at: Millis(r.get(3)?),
            expires_at: Millis(r.get(4)?),
        }),
        _ => None,
    })
}

/// Who leads `duty`, as the database says; `None` when no hub ever did.
fn load_duty(c: &Connection, duty: Duty) -> Result<Option<Fence>> {
    Ok(c.prepare_cached("SELECT duty, hub, epoch, taken_at, expires_at FROM duties WHERE duty = ?")?
        .query_row([duty.as_str()], fence_row)
        .optional()?
        .flatten())
}

/// Takes `duty` for `hub`, or renews it when `hub` holds it: `None` while
/// another hub's lease runs. A change of hands raises the epoch and is on
/// the timeline (`duty.taken`).
pub fn take_duty(c: &Connection, duty: Duty, hub: &str, ttl: Duration, now: Millis) -> Result<Option<Fence>> {
    let held = load_duty(c, duty)?;
    let until = now.plus(ttl);
    match held {
        Some(f) if f.hub == hub && f.expires_at > now => {
            c.execute("UPDATE duties SET expires_at = ? WHERE duty = ?", params![until.0, duty.as_str()])?;
            Ok(Some(Fence { expires_at: until, ..f }))
        }
        Some(f) if f.expires_at > now => Ok(None),
        previous => {
            let epoch = previous.as_ref().map_or(0, |f| f.epoch) + 1;
            c.execute(
                "INSERT INTO duties (duty, hub, epoch, taken_at, expires_at) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (duty) DO UPDATE SET hub = excluded.hub, epoch = excluded.epoch, \
                 taken_at = excluded.taken_at, expires_at = excluded.expires_at",
                params![duty.as_str(), hub, epoch as i64, now.0, until.0],
            )?;
            let from = previous.map(|f| format!(" from {}", f.hub)).unwrap_or_default();
            let detail = format!("{} by {hub}{from} (epoch {epoch})", duty.as_str());
            agent_event(c, now, "duty.taken", None, None, Some(&detail))?;
            Ok(Some(Fence { duty, hub: hub.to_owned(), epoch, taken_at: now, expires_at: until }))
        }
    }
}

/// Every duty some hub has led, by name.
pub fn duties(c: &Connection) -> Result<Vec<Fence>> {
    let rows: Vec<Option<Fence>> = c
        .prepare_cached("SELECT duty, hub, epoch, taken_at, expires_at FROM duties ORDER BY duty")?
        .query_map([], fence_row)?
        .collect::<Result<_>>()?;
    Ok(rows.into_iter().flatten().collect())
}

/// Refuses, in the transaction about to act, unless the database still
/// names `fence`'s hub as the duty's leader under `fence`'s epoch and its
/// lease has not run out: a hub that was paused past its lease, and woke
/// to find the duty in other hands, does nothing.
pub fn check_fence(c: &Connection, fence: Option<&Fence>, now: Millis) -> Result<()> {
    let Some(f) = fence else { return Ok(()) };
    let held = load_duty(c, f.duty)?;
    match held {
        Some(h) if h.hub == f.hub && h.epoch == f.epoch && h.expires_at > now => Ok(()),
        _ => Err(StoreError::Conflict(format!(
            "this hub ({}) no longer leads {} (its lease, epoch {}, has passed); the hub that leads it now acts",
            f.hub,
            f.duty.as_str(),
            f.epoch
        ))),
    }
}
