//! The pipeline routes: check a file and create its tasks, and show how
//! far each pipeline has got.

use crate::Hub;
use crate::error::ApiResult;
use muster_core::TaskState;
use muster_proto::api::{PipelineView, StageView};
use muster_proto::timestamp;
use muster_store::PipelineRecord;

pub(crate) async fn view(hub: &Hub, p: &PipelineRecord) -> ApiResult<PipelineView> {
    let mut stages = Vec::with_capacity(p.stages.len());
    for s in &p.stages {
        let task = hub.shared.store.task(&s.task).await?;
        stages.push(match task {
            Some(t) => StageView {
                name: s.name.clone(),
                task: s.task.to_string(),
                state: t.state.as_str().to_owned(),
                attempts: t.attempts,
                reason: t.reason.clone(),
                started_at: t.started_at.map(timestamp),
                finished_at: t.finished_at.map(timestamp),
            },
            // Retention removed it: it had ended long ago.
            None => StageView {
                name: s.name.clone(),
                task: s.task.to_string(),
                state: "pruned".into(),
                attempts: 0,
                reason: None,
                started_at: None,
                finished_at: None,
            },
        });
    }
    let state = |s: &StageView| TaskState::parse(&s.state).ok();
    let overall = if stages.iter().all(|s| state(s) == Some(TaskState::Succeeded)) {
        "succeeded"
    } else if stages.iter().any(|s| state(s).is_some_and(|st| st.is_terminal() && st != TaskState::Succeeded)) {
        "failed"
    } else if stages.iter().any(|s| state(s).is_some_and(TaskState::is_leased)) {
        "running"
    } else {
        "waiting"
    };
    Ok(PipelineView {
        id: p.id,
        name: p.name.clone(),
        state: overall.to_owned(),
        created_by: p.created_by.clone(),
        created_at: timestamp(p.created_at),
        stages,
    })
}
