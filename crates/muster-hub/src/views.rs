//! Records as the API shows them, for the routes and the dashboard's socket.

use muster_proto::api::{EventView, OutputView};
use muster_proto::{from_json, timestamp};
use muster_store::AgentRecord;

pub(crate) fn doctor_of(a: &AgentRecord) -> Option<muster_proto::ws::DoctorReport> {
    a.doctor.as_deref().and_then(|d| from_json(d.as_bytes()).ok())
}

/// An event as the API and the dashboard's socket show it.
pub(crate) fn event_view(e: muster_store::Event) -> EventView {
    EventView {
        seq: e.seq,
        at: timestamp(e.at),
        kind: e.kind,
        task: e.task.map(|t| t.to_string()),
        agent: e.agent.map(|a| a.to_string()),
        epoch: e.epoch.map(|e| e.0),
        state: e.state,
        detail: e.detail,
    }
}

/// A chunk of output as the API and the dashboard's socket show it.
pub(crate) fn output_view(c: muster_store::OutputRecord) -> OutputView {
    OutputView {
        seq: c.seq,
        attempt: c.attempt,
        stream: c.stream.as_str().to_owned(),
        at: timestamp(c.at),
        data: String::from_utf8_lossy(&c.data).into_owned(),
    }
}
