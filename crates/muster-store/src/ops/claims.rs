//! Claims: which queued tasks an agent gets, and on which runner. The choice
//! is `muster_core::dispatch`'s; this reads what it needs and writes the leases.

use super::*;

pub fn claim_tasks(
    c: &Connection,
    name: &AgentName,
    now: Millis,
    accept_within: Duration,
    policy: Policy,
) -> Result<Vec<Task>> {
    let agent = load_agent(c, name)?;
    if agent.status.free_slots() == 0 || agent.runners.is_empty() {
        return Ok(Vec::new());
    }
    // The core decides; this reads what it needs and writes what it chose.
    let mut agent_breaker = load_for_claim(c, BreakerScope::Agent, name.as_str())?;
    let agent_admits = agent_breaker.admits(now, policy);
    let free = Claim::slots(agent.status.free_slots(), agent_admits);
    if free == 0 {
        return Ok(Vec::new());
    }
    let offer = agent.offer();
    let disabled: Vec<Unavailable> = disabled_runners(c)?
        .into_iter()
        .filter(|d| d.in_force(now))
        .map(|d| Unavailable {
            why: match d.until {
                Some(_) => format!("{} is limited: {}", d.name, d.reason),
                None => format!("{} is disabled: {}", d.name, d.reason),
            },
            runner: d.name,
        })
        .collect();
    let mut runner_breakers = Vec::new();
    for b in breakers(c)?.iter().filter(|b| b.scope == BreakerScope::Runner) {
        let Ok(runner) = RunnerName::parse(&b.name) else { continue };
        runner_breakers.push((runner, load_for_claim(c, b.scope, &b.name)?.admits(now, policy)));
    }
    let mut claim = Claim::new(&offer.runners, disabled, &runner_breakers);
    let names = |rs: &[RunnerName]| rs.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>();
    let (usable, probing) = (names(claim.usable()), names(claim.probing()));
    let usable: Vec<&str> = usable.iter().map(String::as_str).collect();
    let caps: Vec<&str> = offer.capabilities.iter().map(|c| c.as_str()).collect();
    let mut candidates = queued_for(c, &usable, &caps, now, free)?;
    // A runner whose breaker has cooled lets one task through, as its probe.
    for runner in &probing {
        candidates.extend(queued_for(c, &[runner.as_str()], &caps, now, 1)?);
    }
    let fall_from: Vec<String> = claim.fall_from().map(|r| r.as_str().to_owned()).collect();
    let fall_from: Vec<&str> = fall_from.iter().map(String::as_str).collect();
    candidates.extend(queued_for_fallback(c, &fall_from, &usable, &caps, now, free)?);
    muster_core::dispatch::order(&mut candidates);
    let mut claimed = Vec::with_capacity(candidates.len());
    for mut task in candidates {
        if claimed.len() >= free as usize {
            break;
        }
        let Some(pick) = claim.pick(&task) else { continue };
        let req = muster_core::Requirements { runner: &pick.runner, capabilities: &task.spec.capabilities };
        if !offer.can_run(req) {
            // The query and the core must agree; never hand out a task the core refuses.
            tracing::error!(task_id = %task.id, agent = %name, "dispatch query returned a task the agent cannot run");
            continue;
        }
        task.assign(name, now, accept_within).map_err(refused)?;
        let fallback = pick.fallback.then(|| pick.runner.clone());
        if let Some(lease) = task.lease.as_mut() {
            lease.runner = fallback.clone();
        }
        save_task(c, &task)?;
        task_event(c, now, "task.assigned", &task, fallback.as_ref().map(|f| format!("runner {f}")).as_deref())?;
        if let Some(f) = &fallback {
            let why = claim.why(&task.spec.runner).unwrap_or("");
            task_event(c, now, "task.fallback", &task, Some(&format!("{why}; runs on {f}")))?;
        }
        if agent_admits == Admit::Probe {
            probe(c, &mut agent_breaker, &task, now)?;
        }
        if pick.probe {
            let mut runner_breaker = load_breaker(c, BreakerScope::Runner, task.spec.runner.as_str())?;
            probe(c, &mut runner_breaker, &task, now)?;
        }
        claimed.push(task);
    }
    Ok(claimed)
}

/// Claims for each agent in turn. With `savepoints`, each claim runs in its
/// own, so one that fails is undone alone and the others stand. Without,
/// a claim that fails before writing anything fails alone, and one that
/// fails after writing fails the whole pass, which the caller must undo.
pub fn claim_for_agents(
    c: &Connection,
    agents: &[AgentName],
    now: Millis,
    accept_within: Duration,
    policy: Policy,
    savepoints: bool,
) -> Result<Vec<Result<Vec<Task>>>> {
    let mut out = Vec::with_capacity(agents.len());
    for (k, agent) in agents.iter().enumerate() {
        // Once nothing is due, the agents left would each look for nothing.
        // (Callers ask before the first.)
        if k > 0 && next_ready(c)?.is_none_or(|ready| ready > now) {
            out.push(Ok(Vec::new()));
            continue;
        }
        if !savepoints {
            let before = c.total_changes();
            match claim_tasks(c, agent, now, accept_within, policy) {
                Err(e) if c.total_changes() != before => return Err(e),
                claimed => out.push(claimed),
            }
            continue;
        }
        c.execute_batch("SAVEPOINT claim")?;
        let claimed = claim_tasks(c, agent, now, accept_within, policy);
        if claimed.is_err() {
            c.execute_batch("ROLLBACK TO claim")?;
        }
        c.execute_batch("RELEASE claim")?;
        out.push(claimed);
    }
    Ok(out)
}

/// Up to `limit` due tasks whose runner is `blocked` and that name a fallback in `usable`.
fn queued_for_fallback(
    c: &Connection,
    blocked: &[&str],
    usable: &[&str],
    caps: &[&str],
    now: Millis,
    limit: u32,
) -> Result<Vec<Task>> {
    if blocked.is_empty() || usable.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let names = vec![c.contains("' ' || t.fallback || ' '", "' ' || ? || ' '"); usable.len()].join(" OR ");
    let sql = format!(
        "SELECT {TASK_COLS} FROM tasks t INDEXED BY tasks_queue WHERE state = 'queued' AND ready_at <= ? \
         AND attempts < max_attempts \
         AND t.fallback IS NOT NULL AND runner IN ({}) AND ({names}) \
         AND NOT EXISTS (SELECT 1 FROM task_caps c WHERE c.task_id = t.id AND c.cap NOT IN ({})) \
         ORDER BY priority, seq LIMIT ?",
        placeholders(blocked.len()),
        placeholders(caps.len()),
    );
    let mut args: Vec<Owned> = vec![now.0.into()];
    args.extend(blocked.iter().map(|r| Owned::from(r.to_string())));
    args.extend(usable.iter().map(|r| Owned::from(r.to_string())));
    args.extend(caps.iter().map(|c| Owned::from(c.to_string())));
    args.push(i64::from(limit).into());
    c.prepare_cached(&sql)?.query_map(params_from_iter(args), task_row)?.collect::<Result<_>>()
}
