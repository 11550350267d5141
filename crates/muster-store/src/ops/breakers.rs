//! Circuit breakers per runner and per agent: loaded and saved here, moved by
//! `muster_core::breaker`.

use super::*;

pub(super) fn load_breaker(c: &Connection, scope: BreakerScope, name: &str) -> Result<Breaker> {
    let row = c
        .prepare_cached("SELECT state, failures, opened_at, probe_task FROM breakers WHERE scope = ? AND name = ?")?
        .query_row(params![scope.as_str(), name], |r| {
            let state: String = r.get(0)?;
            let probe: Option<String> = r.get(3)?;
            Ok(Breaker {
                scope,
                name: name.to_owned(),
                state: BreakerState::parse(&state).map_err(|e| corrupt("breaker state", e))?,
                failures: r.get(1)?,
                opened_at: ms(r.get(2)?),
                probe: probe.map(|p| TaskId::parse(&p)).transpose().map_err(|e| corrupt("probe task", e))?,
            })
        })
        .optional()?;
    Ok(row.unwrap_or_else(|| Breaker::new(scope, name)))
}

/// A breaker as the scheduler sees it: a probe whose task no longer holds a
/// lease under this breaker (it was released, cancelled, reclaimed, or handed
/// to another agent or runner since) is lost, and replaced.
pub(super) fn load_for_claim(c: &Connection, scope: BreakerScope, name: &str) -> Result<Breaker> {
    let mut b = load_breaker(c, scope, name)?;
    if let Some(probe) = b.probe.clone() {
        let held: Option<(String, Option<String>, String)> = c
            .prepare_cached("SELECT state, lease_agent, COALESCE(lease_runner, runner) FROM tasks WHERE id = ?")?
            .query_row([probe.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let still = held.is_some_and(|(state, agent, runner)| {
            (state == "assigned" || state == "running")
                && match scope {
                    BreakerScope::Agent => agent.as_deref() == Some(name),
                    BreakerScope::Runner => runner == name,
                }
        });
        if !still {
            b.probe_lost(&probe);
        }
    }
    Ok(b)
}

pub(super) fn save_breaker(c: &Connection, b: &Breaker, now: Millis) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO breakers (scope, name, state, failures, opened_at, probe_task, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, name) DO UPDATE SET state = excluded.state, \
         failures = excluded.failures, opened_at = excluded.opened_at, probe_task = excluded.probe_task, \
         updated_at = excluded.updated_at",
    )?
    .execute(params![
        b.scope.as_str(),
        b.name,
        b.state.as_str(),
        b.failures,
        b.opened_at.map(|m| m.0),
        b.probe.as_ref().map(|p| p.as_str()),
        now.0
    ])?;
    Ok(())
}

fn breaker_event(c: &Connection, now: Millis, b: &Breaker, change: Change, why: &str) -> Result<()> {
    let kind = match change {
        Change::Opened => "breaker.opened",
        Change::HalfOpened => "breaker.half_open",
        Change::Closed => "breaker.closed",
    };
    let detail = format!("{} {}: {why}", b.scope.as_str(), b.name);
    let agent = match b.scope {
        BreakerScope::Agent => AgentName::parse(&b.name).ok(),
        BreakerScope::Runner => None,
    };
    let row = EventRow {
        task: b.probe.as_ref(),
        agent: agent.as_ref(),
        epoch: None,
        state: Some(b.state.as_str()),
        detail: Some(&detail),
    };
    insert_event_row(c, now, kind, row)
}

pub(super) fn probe(c: &Connection, b: &mut Breaker, task: &Task, now: Millis) -> Result<()> {
    if let Some(change) = b.start_probe(&task.id) {
        breaker_event(c, now, b, change, &format!("cooled down; {} goes through as the probe", task.id))?;
    }
    save_breaker(c, b, now)
}

/// Applies a run's verdict (`None`: no verdict, e.g. cancelled) to the
/// breakers of the agent that ran it and of its runner.
pub(super) fn record_breakers(
    c: &Connection,
    task: &Task,
    agent: &AgentName,
    runner: &RunnerName,
    (agent_verdict, runner_verdict): (Option<bool>, Option<bool>),
    now: Millis,
    policy: Policy,
) -> Result<()> {
    for (scope, name, verdict) in
        [(BreakerScope::Agent, agent.as_str(), agent_verdict), (BreakerScope::Runner, runner.as_str(), runner_verdict)]
    {
        let mut b = load_breaker(c, scope, name)?;
        let before = b.clone();
        let change = match verdict {
            Some(ok) => b.record(&task.id, ok, now, policy),
            None => {
                b.probe_lost(&task.id);
                None
            }
        };
        if let Some(change) = change {
            let why = match change {
                Change::Opened if before.state == BreakerState::HalfOpen => {
                    format!("the probe {} failed; open for {} more", task.id, seconds(policy.cooldown))
                }
                Change::Opened => format!(
                    "{} failed attempts in a row (the last {}); one task goes through after {}",
                    b.failures,
                    task.id,
                    seconds(policy.cooldown)
                ),
                Change::Closed => format!("the probe {} succeeded", task.id),
                Change::HalfOpened => String::new(),
            };
            breaker_event(c, now, &b, change, &why)?;
        }
        // Rows are kept only for breakers that have something to say.
        if b != before && !(b.state == BreakerState::Closed && b.failures == 0 && !breaker_exists(c, scope, name)?) {
            save_breaker(c, &b, now)?;
        }
    }
    Ok(())
}

pub(super) fn breaker_exists(c: &Connection, scope: BreakerScope, name: &str) -> Result<bool> {
    Ok(c.prepare_cached("SELECT 1 FROM breakers WHERE scope = ? AND name = ?")?
        .query_row(params![scope.as_str(), name], |_| Ok(()))
        .optional()?
        .is_some())
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

pub fn breakers(c: &Connection) -> Result<Vec<Breaker>> {
    let keys: Vec<(String, String)> = c
        .prepare_cached("SELECT scope, name FROM breakers ORDER BY scope, name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_>>()?;
    keys.iter()
        .map(|(scope, name)| {
            let scope = BreakerScope::parse(scope).map_err(|e| StoreError::Database(e.to_string()))?;
            load_breaker(c, scope, name)
        })
        .collect()
}

pub fn reset_breaker(c: &Connection, scope: BreakerScope, name: &str, by: &str, now: Millis) -> Result<Breaker> {
    if !breaker_exists(c, scope, name)? {
        return Err(StoreError::not_found("breaker", format!("{} {name}", scope.as_str())));
    }
    let mut b = load_breaker(c, scope, name)?;
    let was = b.state;
    b.reset();
    save_breaker(c, &b, now)?;
    breaker_event(c, now, &b, Change::Closed, &format!("reset by {by} (it was {})", was.as_str()))?;
    Ok(b)
}
