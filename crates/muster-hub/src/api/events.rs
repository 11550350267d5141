//! The events timeline.

use super::*;

/// Events, oldest first. Query: `after`, `before` (the newest `limit` events below it, to read
/// backwards), `task`, `agent`, `kind` (`task.failed`, or a family: `task`, `lock`), `limit`
/// (default 1000, at most 10000), `wait` (long-poll, at most 60s).
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    security(("admin_token" = [])),
    params(
        ("after" = Option<i64>, Query, description = "Events after this sequence number"),
        ("before" = Option<i64>, Query, description = "Events before this sequence number, newest first"),
        ("task" = Option<String>, Query, description = "Only this task's"),
        ("agent" = Option<String>, Query, description = "Only this agent's"),
        ("kind" = Option<String>, Query, description = "Only this kind, or a family such as task.*"),
        ("limit" = Option<u32>, Query, description = "At most this many"),
        ("wait" = Option<String>, Query, description = "Long-poll up to this long for new events"),
    ),
    responses(
        (status = 200, description = "Events in order", body = muster_proto::api::EventPage),
    ),
)]
pub(super) async fn list_events(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["after", "before", "task", "agent", "kind", "limit", "wait"])?;
    let filter = EventFilter {
        after: p.number("after")?.unwrap_or(0),
        before: p.number("before")?,
        task: p.get("task").map(TaskId::parse).transpose()?,
        agent: p.get("agent").map(AgentName::parse).transpose()?,
        kind: p.get("kind").map(str::to_owned),
        limit: p.number::<usize>("limit")?.unwrap_or(1000).clamp(1, 10_000),
    };
    let deadline = tokio::time::Instant::now() + p.wait()?;
    let mut seen = hub.shared.store.subscribe();
    let mut stopping = hub.shared.stopping.subscribe();
    loop {
        seen.borrow_and_update();
        let events = hub.shared.store.events(&filter).await?;
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            let next_after = events.last().map_or(filter.after, |e| e.seq);
            let page = EventPage { events: events.into_iter().map(event_view).collect(), next_after };
            return Ok(json(StatusCode::OK, &page));
        }
        let woke = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                r = seen.changed() => r.is_ok(),
                _ = async { drop(stopping.wait_for(|stop| *stop).await) } => false,
            }
        })
        .await;
        if !matches!(woke, Ok(true)) {
            // Past the deadline, or the store closed: answer with what there is.
            let page = EventPage { events: Vec::new(), next_after: filter.after };
            return Ok(json(StatusCode::OK, &page));
        }
    }
}
