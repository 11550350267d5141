//! The timeline: `events`, paged or followed.

use crate::client::{CliResult, ConnArgs, encode};
use crate::table::clip;
use crate::{CliError, exit};
use clap::Args;
use muster_proto::api::{EventPage, EventView};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[arg(long)]
    pub task: Option<String>,
    #[arg(long)]
    pub agent: Option<String>,
    /// An event kind (task.failed) or a family of them (task, lock, agent).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// Print at most this many events (without --follow).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep printing new events as they happen.
    #[arg(long, short)]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `muster events`: pages of the timeline, or `--follow` for what comes next.
pub(crate) async fn run(conn: &ConnArgs, args: EventsArgs) -> CliResult {
    let client = conn.client()?;
    let mut after = args.after;
    let mut left = if args.follow { usize::MAX } else { args.limit.unwrap_or(usize::MAX) };
    while left > 0 {
        let page_size = left.min(1000);
        let mut query = vec![("after", after.to_string()), ("limit", page_size.to_string())];
        if let Some(t) = &args.task {
            query.push(("task", t.clone()));
        }
        if let Some(a) = &args.agent {
            query.push(("agent", a.clone()));
        }
        if let Some(k) = &args.kind {
            query.push(("kind", k.clone()));
        }
        if args.follow {
            query.push(("wait", "30s".into()));
        }
        let page: EventPage =
            client.get_waiting(&format!("/events?{}", encode(&query)), Duration::from_secs(30)).await?;
        for e in &page.events {
            if args.json {
                println!("{}", serde_json::to_string(e).map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?);
            } else {
                println!("{}", event_line(e));
            }
        }
        after = page.next_after;
        left = left.saturating_sub(page.events.len());
        if !args.follow && page.events.len() < page_size {
            return Ok(());
        }
    }
    Ok(())
}

fn event_line(e: &EventView) -> String {
    let mut parts = vec![format!("{:>6}", e.seq), e.at.clone(), format!("{:<22}", e.kind)];
    if let Some(t) = &e.task {
        parts.push(t.clone());
    }
    if let Some(a) = &e.agent {
        parts.push(format!("agent={a}"));
    }
    if let Some(ep) = e.epoch {
        parts.push(format!("epoch={ep}"));
    }
    if let Some(s) = &e.state {
        parts.push(format!("state={s}"));
    }
    if let Some(d) = &e.detail {
        parts.push(format!("({})", clip(d, 120)));
    }
    parts.join(" ")
}
