//! String fields whose values are a fixed set of words, described to the
//! OpenAPI document from the core's own lists: the document cannot name a
//! word the hub never sends, nor miss one it does.

use muster_core::agent::AgentState;
use muster_core::{Live, Outcome, Priority, TaskState};
use serde_json::Value;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

fn one_of(words: impl IntoIterator<Item = &'static str>) -> Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(words)).build()
}

/// The words, or null.
fn maybe_one_of(words: impl IntoIterator<Item = &'static str>) -> Object {
    let values = words.into_iter().map(Value::from).chain([Value::Null]);
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(values))
        .build()
}

pub(crate) fn task_state() -> Object {
    one_of(TaskState::ALL.map(TaskState::as_str))
}

pub(crate) fn priority() -> Object {
    one_of(Priority::ALL.map(Priority::as_str))
}

pub(crate) fn maybe_priority() -> Object {
    maybe_one_of(Priority::ALL.map(Priority::as_str))
}

pub(crate) fn agent_state() -> Object {
    one_of(AgentState::ALL.map(AgentState::as_str))
}

pub(crate) fn maybe_outcome() -> Object {
    maybe_one_of(Outcome::ALL.map(Outcome::as_str))
}

pub(crate) fn maybe_live() -> Object {
    maybe_one_of(Live::REPORTED.into_iter().chain([Live::Done]).map(Live::as_str))
}
