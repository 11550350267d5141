//! Attempts: what each run reported (tokens, cost, workspace, diff) and the
//! reads over them (costs, shadow pairs, diffs).

use super::*;

pub(super) fn save_report(c: &Connection, id: &TaskId, epoch: Epoch, r: &RunReport) -> Result<()> {
    let int = |n: u64| n.min(i64::MAX as u64) as i64;
    c.prepare_cached(
        "UPDATE attempts SET reported = 1, session_id = ?, model = ?, turns = ?, input_tokens = ?, \
         output_tokens = ?, cache_read_tokens = ?, cache_write_tokens = ?, cost_micro_usd = ?, result = ?, \
         tool_uses = ?, tool_errors = ? WHERE task_id = ? AND epoch = ?",
    )?
    .execute(params![
        r.session_id.as_deref().map(|s| clip(s, 200)),
        r.model.as_deref().map(|s| clip(s, 200)),
        r.turns,
        int(r.tokens.input),
        int(r.tokens.output),
        int(r.tokens.cache_read),
        int(r.tokens.cache_write),
        r.cost.map(MicroUsd::micros_i64),
        r.result.as_deref().map(|s| clip(s, MAX_RESULT_CHARS)),
        int(r.tool_uses),
        int(r.tool_errors),
        id.as_str(),
        epoch.0 as i64
    ])?;
    Ok(())
}

/// Bytes of a diff kept per attempt.
pub const MAX_DIFF_BYTES: usize = 1 << 20;
/// Commits and files listed per attempt.
const MAX_LISTED: usize = 1_000;

pub(super) fn save_workspace(c: &Connection, id: &TaskId, epoch: Epoch, w: &WorkspaceRecord) -> Result<()> {
    let lines = |pairs: &[(String, String)]| {
        pairs.iter().take(MAX_LISTED).map(|(a, b)| format!("{a}\t{b}")).collect::<Vec<_>>().join("\n")
    };
    let mut diff = w.diff.as_str();
    let mut truncated = w.diff_truncated;
    if diff.len() > MAX_DIFF_BYTES {
        let mut cut = MAX_DIFF_BYTES;
        while !diff.is_char_boundary(cut) {
            cut -= 1;
        }
        diff = &diff[..cut];
        truncated = true;
    }
    c.prepare_cached(
        "UPDATE attempts SET ws_repo = ?, ws_branch = ?, ws_base = ?, ws_head = ?, ws_commits = ?, ws_files = ?, \
         ws_stat = ?, ws_diff = ?, ws_diff_truncated = ?, ws_kept_at = ?, ws_error = ?, ws_snapshot = ? \
         WHERE task_id = ? AND epoch = ?",
    )?
    .execute(params![
        clip(&w.repo, 4096),
        clip(&w.branch, 300),
        clip(&w.base, 300),
        w.head.as_deref().map(|h| clip(h, 300)),
        lines(&w.commits),
        lines(&w.files),
        clip(&w.stat, 64 << 10),
        diff,
        truncated,
        w.kept_at.as_deref().map(|k| clip(k, 4096)),
        w.error.as_deref().map(|e| clip(e, 2000)),
        w.snapshot.as_deref().map(|s| clip(s, 300)),
        id.as_str(),
        epoch.0 as i64
    ])?;
    Ok(())
}

pub(super) fn pairs(text: Option<String>) -> Vec<(String, String)> {
    text.unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('\t') {
            Some((a, b)) => (a.to_owned(), b.to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect()
}

/// Characters kept of an agent's final message.
const MAX_RESULT_CHARS: usize = 8_000;
/// Characters kept of the latest step, shown live.
pub(super) const LATEST_STEP_CHARS: usize = 300;

/// `text` cut to at most `max` characters, on a character boundary.
pub(super) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// One attempt's diff, which `attempts` leaves out: (diff, truncated).
pub fn attempt_diff(c: &Connection, id: &TaskId, number: u32) -> Result<Option<(String, bool)>> {
    c.prepare_cached(
        "SELECT ws_diff, ws_diff_truncated FROM attempts WHERE task_id = ? AND number = ? AND ws_repo IS NOT NULL",
    )?
    .query_row(params![id.as_str(), number], |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get(1)?)))
    .optional()
}

/// Shadow runs and the tasks they shadow, both finished, newest first.
pub fn shadow_pairs(c: &Connection, limit: usize) -> Result<Vec<(TaskId, TaskId)>> {
    let mut stmt = c.prepare_cached(
        "SELECT p.id, s.id FROM tasks s JOIN tasks p ON p.id = s.shadow_of \
         WHERE s.finished_at IS NOT NULL AND p.finished_at IS NOT NULL \
         ORDER BY CASE WHEN s.finished_at > p.finished_at THEN s.finished_at ELSE p.finished_at END DESC LIMIT ?",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        let (p, s): (String, String) = (r.get(0)?, r.get(1)?);
        Ok((
            TaskId::parse(&p).map_err(|e| corrupt("task id", e))?,
            TaskId::parse(&s).map_err(|e| corrupt("task id", e))?,
        ))
    })?;
    rows.collect::<Result<_>>()
}

pub fn costs(c: &Connection, by: CostGroup, since: Millis) -> Result<(Vec<CostRow>, CostRow)> {
    let key = match by {
        CostGroup::Task => "a.task_id".to_owned(),
        CostGroup::Agent => "a.agent".to_owned(),
        CostGroup::Runner => "COALESCE(a.runner, t.runner)".to_owned(),
        CostGroup::Day => c.day_of("a.finished_at"),
    };
    let sql = format!(
        "SELECT {key}, COUNT(*), SUM(CASE WHEN a.cost_micro_usd IS NOT NULL THEN 1 ELSE 0 END), SUM(a.input_tokens), SUM(a.output_tokens), \
         SUM(a.cache_read_tokens), SUM(a.cache_write_tokens), COALESCE(SUM(a.cost_micro_usd), 0) \
         FROM attempts a JOIN tasks t ON t.id = a.task_id \
         WHERE a.reported = 1 AND a.finished_at >= ? GROUP BY 1 ORDER BY 8 DESC, 1 LIMIT ?"
    );
    let row = |r: &Row<'_>| {
        let n = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0).max(0) as u64);
        Ok(CostRow {
            key: r.get(0)?,
            attempts: n(1)?,
            priced: n(2)?,
            tokens: Tokens { input: n(3)?, output: n(4)?, cache_read: n(5)?, cache_write: n(6)? },
            cost: MicroUsd(n(7)?),
        })
    };
    let rows =
        c.prepare_cached(&sql)?.query_map(params![since.0, MAX_COST_ROWS as i64], row)?.collect::<Result<_>>()?;
    // The total over every row, not only those listed.
    let total = c
        .prepare_cached(
            "SELECT 'total', COUNT(*), SUM(CASE WHEN cost_micro_usd IS NOT NULL THEN 1 ELSE 0 END), SUM(input_tokens), SUM(output_tokens), \
             SUM(cache_read_tokens), SUM(cache_write_tokens), COALESCE(SUM(cost_micro_usd), 0) \
             FROM attempts WHERE reported = 1 AND finished_at >= ?",
        )?
        .query_row([since.0], row)?;
    Ok((rows, total))
}

pub fn attempts(c: &Connection, id: &TaskId) -> Result<Vec<AttemptRecord>> {
    let mut stmt = c.prepare_cached(
        "SELECT number, epoch, agent, started_at, finished_at, outcome, exit_code, reason, output_bytes, \
         output_truncated, output_pruned, steps, latest_step, reported, session_id, model, turns, input_tokens, \
         output_tokens, cache_read_tokens, cache_write_tokens, cost_micro_usd, result, tool_uses, tool_errors, \
         ws_repo, ws_branch, ws_base, ws_head, ws_commits, ws_files, ws_stat, NULL, ws_diff_truncated, \
         ws_kept_at, ws_error, live, live_detail, ws_snapshot, runner, summary, output_incomplete FROM attempts \
         WHERE task_id = ? ORDER BY number",
    )?;
    let rows = stmt.query_map([id.as_str()], |r| {
        let agent: String = r.get(2)?;
        let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
        let report = if r.get::<_, bool>(13)? {
            Some(RunReport {
                session_id: r.get(14)?,
                model: r.get(15)?,
                turns: r.get(16)?,
                tokens: Tokens { input: n(17)?, output: n(18)?, cache_read: n(19)?, cache_write: n(20)? },
                cost: r.get::<_, Option<i64>>(21)?.map(MicroUsd::from_micros),
                result: r.get(22)?,
                tool_uses: n(23)?,
                tool_errors: n(24)?,
            })
        } else {
            None
        };
        Ok(AttemptRecord {
            checks: Vec::new(),
            number: r.get(0)?,
            epoch: Epoch(r.get::<_, i64>(1)? as u64),
            agent: AgentName::parse(&agent).map_err(|e| corrupt("agent", e))?,
            started_at: Millis(r.get(3)?),
            finished_at: ms(r.get(4)?),
            outcome: r
                .get::<_, Option<String>>(5)?
                .map(|o| Outcome::parse(&o))
                .transpose()
                .map_err(|e| corrupt("attempt outcome", e))?,
            exit_code: r.get(6)?,
            reason: r.get(7)?,
            output_bytes: r.get::<_, i64>(8)? as u64,
            output_truncated: r.get(9)?,
            output_incomplete: r.get(41)?,
            output_pruned: r.get(10)?,
            steps: n(11)?,
            latest_step: r.get(12)?,
            live: r.get(36)?,
            live_detail: r.get(37)?,
            runner: r.get(39)?,
            summary: r.get(40)?,
            report,
            workspace: match r.get::<_, Option<String>>(25)? {
                Some(repo) => Some(WorkspaceRecord {
                    repo,
                    branch: r.get(26)?,
                    base: r.get(27)?,
                    head: r.get(28)?,
                    commits: pairs(r.get(29)?),
                    files: pairs(r.get(30)?),
                    stat: r.get::<_, Option<String>>(31)?.unwrap_or_default(),
                    diff: r.get::<_, Option<String>>(32)?.unwrap_or_default(),
                    diff_truncated: r.get(33)?,
                    kept_at: r.get(34)?,
                    error: r.get(35)?,
                    snapshot: r.get(38)?,
                }),
                None => None,
            },
        })
    })?;
    let mut out: Vec<AttemptRecord> = rows.collect::<Result<_>>()?;
    for a in &mut out {
        a.checks = checks_of(c, id, a.epoch)?;
    }
    Ok(out)
}
