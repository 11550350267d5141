//! Checks after a run, and regressions between a task's runs.

use super::*;

pub(super) fn checks_of(c: &Connection, id: &TaskId, epoch: Epoch) -> Result<Vec<CheckRecord>> {
    let rows = c
        .prepare_cached(
            "SELECT name, passed, exit_code, duration_ms, output FROM check_results \
             WHERE task_id = ? AND epoch = ? ORDER BY position",
        )?
        .query_map(params![id.as_str(), epoch.0 as i64], |r| {
            Ok(CheckRecord {
                name: r.get(0)?,
                passed: r.get(1)?,
                exit_code: r.get(2)?,
                duration_ms: r.get::<_, i64>(3)?.max(0) as u64,
                output: r.get(4)?,
            })
        })?
        .collect::<Result<_>>()?;
    Ok(rows)
}

/// Records an attempt's check results; a check that passed for an earlier
/// task on the same repository and fails now is a regression, named with the
/// task and commit that broke it.
pub(super) fn save_checks(c: &Connection, id: &TaskId, epoch: Epoch, details: &RunDetails, now: Millis) -> Result<()> {
    if details.checks.is_empty() {
        return Ok(());
    }
    let task = load_task(c, id)?;
    let repo = task.spec.workspace.as_ref().map(|w| w.repo.clone());
    let commit = details.workspace.as_ref().and_then(|w| w.head.clone());
    for (position, check) in details.checks.iter().take(muster_core::check::MAX_CHECKS).enumerate() {
        let name = clip(&check.name, 64);
        c.prepare_cached(
            "INSERT INTO check_results (task_id, epoch, position, repo, commit_sha, name, passed, exit_code, \
             duration_ms, output, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (task_id, epoch, position) DO UPDATE SET repo = excluded.repo, \
             commit_sha = excluded.commit_sha, name = excluded.name, passed = excluded.passed, \
             exit_code = excluded.exit_code, duration_ms = excluded.duration_ms, output = excluded.output, \
             at = excluded.at",
        )?
        .execute(params![
            id.as_str(),
            epoch.0 as i64,
            position as i64,
            repo,
            commit,
            name,
            check.passed,
            check.exit_code,
            check.duration_ms.min(i64::MAX as u64) as i64,
            clip(&check.output, 4000),
            now.0,
        ])?;
        let Some(repo) = &repo else { continue };
        // A check that could not even start says nothing about the code.
        if check.passed || check.exit_code.is_none() {
            continue;
        }
        let good: Option<(String, Option<String>)> = c
            .prepare_cached(
                "SELECT task_id, commit_sha FROM check_results WHERE repo = ? AND name = ? AND passed = 1 \
                 AND task_id != ? ORDER BY at DESC LIMIT 1",
            )?
            .query_row(params![repo, name, id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((good_task, good_commit)) = good else { continue };
        let added = c
            .prepare_cached(
                "INSERT INTO regressions (repo, name, task_id, commit_sha, passed_task_id, passed_commit_sha, at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )?
            .execute(params![repo, name, id.as_str(), commit, good_task, good_commit, now.0])?;
        if added > 0 {
            let short = |c: &Option<String>| c.as_deref().map_or("-".to_owned(), |c| c.chars().take(12).collect());
            task_event(
                c,
                now,
                "regression.detected",
                &task,
                Some(&format!(
                    "{name} on {repo}: passed for {good_task} at {}, fails for {id} at {}",
                    short(&good_commit),
                    short(&commit)
                )),
            )?;
        }
    }
    Ok(())
}

/// Newest first.
pub fn regressions(c: &Connection, limit: usize) -> Result<Vec<RegressionRecord>> {
    let rows = c
        .prepare_cached(
            "SELECT id, repo, name, task_id, commit_sha, passed_task_id, passed_commit_sha, at FROM regressions \
             ORDER BY id DESC LIMIT ?",
        )?
        .query_map([limit.clamp(1, 1000) as i64], |r| {
            let (task, good): (String, String) = (r.get(3)?, r.get(5)?);
            Ok(RegressionRecord {
                id: r.get(0)?,
                repo: r.get(1)?,
                check: r.get(2)?,
                task: TaskId::parse(&task).map_err(|e| corrupt("task id", e))?,
                commit: r.get(4)?,
                last_passed_task: TaskId::parse(&good).map_err(|e| corrupt("task id", e))?,
                last_passed_commit: r.get(6)?,
                at: Millis(r.get(7)?),
            })
        })?
        .collect::<Result<_>>()?;
    Ok(rows)
}
