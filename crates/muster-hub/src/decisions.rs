//! Decisions: questions a person answers by choosing an option, raised by
//! an operator on a queued task or by a run about its own task.
//!
//! The store keeps them and moves their tasks; this module serves them over
//! HTTP, holds a waiting run's request until the answer comes, and applies
//! deadlines from the dispatch loop.

use crate::Hub;
use crate::error::{ApiError, ApiResult};
use muster_proto::api::DecisionView;
use muster_proto::timestamp;
use muster_store::{DecisionRecord, DecisionState};
use std::time::Duration;

/// Most deadlines applied in one pass.
const EXPIRE_BATCH: usize = 200;

pub(crate) fn view(d: &DecisionRecord) -> DecisionView {
    DecisionView {
        id: d.id,
        task: d.task.to_string(),
        question: d.question.clone(),
        options: d.options.clone(),
        default: d.default.clone(),
        deadline: d.deadline.map(timestamp),
        answerers: d.answerers.clone(),
        raised_by: d.raised_by.clone(),
        park: d.park,
        state: d.state.as_str().to_owned(),
        answer: d.answer.clone(),
        note: d.note.clone(),
        answered_by: d.answered_by.clone(),
        created_at: timestamp(d.created_at),
        closed_at: d.closed_at.map(timestamp),
    }
}

pub(crate) fn timeout(t: Option<&muster_proto::api::DurationValue>) -> ApiResult<Option<Duration>> {
    Ok(t.map(|t| t.to_duration("timeout")).transpose()?)
}

pub(crate) fn decision_id(raw: &str) -> ApiResult<i64> {
    raw.trim_start_matches('#')
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad("id", format!("{raw:?} is not a decision id (a number, as in muster decisions)")))
}

impl Hub {
    /// Tells the agent running `task` how many questions its run asked and
    /// still waits for, so its silence meanwhile is not taken for a wedge.
    pub(crate) async fn sync_asking(&self, task: &muster_core::Task) {
        let Some(lease) = task.lease.as_ref().filter(|_| task.state == muster_core::TaskState::Running) else {
            return;
        };
        let open = match self.shared.store.decisions(true, Some(&task.id), 1000).await {
            Ok(all) => all.iter().filter(|d| !d.park && d.epoch == Some(lease.epoch)).count() as u32,
            Err(e) => {
                tracing::error!(task_id = %task.id, error = %e, "cannot count a run's open questions");
                return;
            }
        };
        let msg = muster_proto::ws::HubMsg::Asking { task: task.id.to_string(), epoch: lease.epoch.0, open };
        self.send_to(&lease.agent, msg);
    }

    /// Applies passed deadlines; a run whose task failed for it is told to stop.
    pub(crate) async fn expire_decisions_once(&self) -> Result<usize, muster_store::StoreError> {
        let now = self.now();
        match self.shared.store.next_decision_deadline().await? {
            Some(due) if due <= now => {}
            _ => return Ok(0),
        }
        if !self.lead(muster_store::Duty::Deadlines).await? {
            return Ok(0);
        }
        let expired = self.shared.store.expire_decisions(now, EXPIRE_BATCH).await?;
        for (d, task) in &expired {
            tracing::info!(decision = d.id, task_id = %task.id, state = d.state.as_str(), "decision deadline passed");
            if !d.park {
                self.sync_asking(task).await;
            }
            if d.state == DecisionState::TimedOut
                && d.epoch.is_some()
                && let Some(agent) = &task.agent
            {
                self.drop_run(agent, &task.id, task.epoch, "decision_timeout");
            }
        }
        if !expired.is_empty() {
            self.wake_dispatcher();
        }
        Ok(expired.len())
    }
}
