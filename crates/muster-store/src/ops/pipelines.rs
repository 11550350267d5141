//! Pipelines: stages as tasks, with templates rendered by `muster_core::pipeline`.

use super::*;

/// Creates a pipeline's tasks, in order, in one transaction: all or none.
pub fn create_pipeline(c: &Connection, p: NewPipeline, now: Millis) -> Result<PipelineRecord> {
    if p.stages.is_empty() {
        return Err(StoreError::Invalid(Invalid::new("stages", "a pipeline needs at least one stage")));
    }
    let id: i64 = c
        .prepare_cached(
            "INSERT INTO pipelines (name, source, created_by, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        )?
        .query_row(params![p.name, p.source, p.created_by, now.0], |r| r.get(0))?;
    for (position, stage) in p.stages.into_iter().enumerate() {
        let created = create_task(c, stage.task.clone(), stage.spec, now)?;
        if !created.created {
            return Err(StoreError::Conflict(format!("stage {} would reuse task {}", stage.name, created.task.id)));
        }
        c.prepare_cached(
            "INSERT INTO pipeline_stages (pipeline_id, position, name, task_id, templated) VALUES (?, ?, ?, ?, ?)",
        )?
        .execute(params![id, position as i64, stage.name, stage.task.as_str(), stage.templated])?;
        task_event(c, now, "task.staged", &created.task, Some(&format!("pipeline {id} stage {}", stage.name)))?;
    }
    insert_event_row(
        c,
        now,
        "pipeline.created",
        EventRow { detail: Some(&format!("{id} {} (by {})", p.name, p.created_by)), ..EventRow::default() },
    )?;
    load_pipeline(c, id)
}

fn load_pipeline(c: &Connection, id: i64) -> Result<PipelineRecord> {
    pipeline(c, id)?.ok_or_else(|| StoreError::not_found("pipeline", id))
}

pub fn pipeline(c: &Connection, id: i64) -> Result<Option<PipelineRecord>> {
    let head: Option<(String, String, i64)> = c
        .prepare_cached("SELECT name, created_by, created_at FROM pipelines WHERE id = ?")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((name, created_by, created_at)) = head else { return Ok(None) };
    let rows: Vec<(String, String)> = c
        .prepare_cached("SELECT name, task_id FROM pipeline_stages WHERE pipeline_id = ? ORDER BY position")?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_>>()?;
    let stages = rows
        .into_iter()
        .map(|(name, task)| Ok(StageRecord { name, task: TaskId::parse(&task).map_err(|e| corrupt("task id", e))? }))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(PipelineRecord { id, name, created_by, created_at: Millis(created_at), stages }))
}

/// The newest first.
pub fn pipelines(c: &Connection, limit: usize) -> Result<Vec<PipelineRecord>> {
    let ids: Vec<i64> = c
        .prepare_cached("SELECT id FROM pipelines ORDER BY id DESC LIMIT ?")?
        .query_map([limit.clamp(1, 1000) as i64], |r| r.get(0))?
        .collect::<Result<_>>()?;
    ids.into_iter().map(|id| load_pipeline(c, id)).collect()
}

/// What `{{stages.NAME.result}}` stands for: the coding agent's final
/// message, else what the runner's summary pattern found, else the end of
/// the output of the stage's last attempt.
fn stage_result(c: &Connection, task: &TaskId) -> Result<String> {
    const TAIL: usize = 4000;
    let attempts = attempts(c, task)?;
    let Some(last) = attempts.last() else { return Ok(String::new()) };
    if let Some(result) = last.report.as_ref().and_then(|r| r.result.clone()) {
        return Ok(result);
    }
    if let Some(summary) = &last.summary {
        return Ok(summary.clone());
    }
    let filter = OutputFilter { attempt: Some(last.number), after: 0, limit: 10_000 };
    let mut out: Vec<u8> = Vec::new();
    for chunk in read_output(c, task, &filter)? {
        if chunk.stream == crate::Stream::Stdout {
            out.extend_from_slice(&chunk.data);
        }
    }
    let text = String::from_utf8_lossy(&out);
    let text = text.trim_end();
    let cut = text.len().saturating_sub(TAIL);
    let cut = (cut..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    Ok(text[cut..].to_owned())
}

/// A stage about to be queued: `{{stages.NAME.result}}` and
/// `{{stages.NAME.task}}` in its prompt become what those stages produced.
pub(super) fn render_stage(c: &Connection, task: &mut Task) -> Result<()> {
    let row: Option<(i64, bool)> = c
        .prepare_cached("SELECT pipeline_id, templated FROM pipeline_stages WHERE task_id = ?")?
        .query_row([task.id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((pipeline_id, true)) = row else { return Ok(()) };
    let stages: Vec<(String, String)> = c
        .prepare_cached("SELECT name, task_id FROM pipeline_stages WHERE pipeline_id = ?")?
        .query_map([pipeline_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_>>()?;
    let rendered = muster_core::pipeline::render(&task.spec.prompt, |name, field| -> Result<Option<String>> {
        let Some((_, id)) = stages.iter().find(|(n, _)| n == name) else { return Ok(None) };
        let id = TaskId::parse(id).map_err(|e| corrupt("task id", e))?;
        Ok(match field {
            "result" => Some(stage_result(c, &id)?),
            "task" => Some(id.to_string()),
            _ => None,
        })
    })?;
    task.spec.prompt = clip(&rendered, muster_core::task::MAX_PROMPT_BYTES);
    c.prepare_cached("UPDATE tasks SET prompt = ? WHERE id = ?")?
        .execute(params![task.spec.prompt, task.id.as_str()])?;
    c.prepare_cached("UPDATE pipeline_stages SET templated = 0 WHERE task_id = ?")?.execute([task.id.as_str()])?;
    Ok(())
}
