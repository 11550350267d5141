//! Messages and channels: `msg send|read`, `channel create|list|post|tail`.

use crate::Client;
use crate::client::{CliResult, ConnArgs, segment, usage};
use crate::output::print_json;
use crate::table::Table;
use clap::Subcommand;
use std::io::Read;

#[derive(Debug, Subcommand)]
pub enum MsgCmd {
    /// Send a message to an agent's or a task's mailbox (or a channel).
    Send {
        /// `agent:NAME`, `task:ID` or `channel:NAME`.
        #[arg(long)]
        to: String,
        /// The text (`-` reads it from standard input).
        text: String,
        /// The message this answers: the reply joins its thread.
        #[arg(long)]
        reply_to: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// A mailbox, oldest first, with whether each was delivered (agents) or read (tasks).
    Read {
        /// `agent:NAME` or `task:ID`.
        #[arg(long)]
        to: String,
        /// Only this thread (the id of its first message).
        #[arg(long)]
        thread: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChannelCmd {
    /// A named topic with history.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Post to a channel (`--reply-to ID` answers in that message's thread).
    Post {
        name: String,
        text: String,
        #[arg(long)]
        reply_to: Option<i64>,
    },
    /// A channel's history, oldest first; `--follow` waits for new posts.
    Tail {
        name: String,
        #[arg(long)]
        thread: Option<i64>,
        /// Start after this message id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
}

/// One message in a line: id, time, sender, thread, delivery, text.
pub(crate) fn message_line(m: &muster_proto::api::MessageView) -> String {
    let thread = if m.thread != m.id { format!(" (in #{})", m.thread) } else { String::new() };
    let state = match (&m.delivered_at, &m.read_at) {
        (_, Some(_)) => " [read]",
        (Some(_), None) => " [delivered]",
        _ if m.to.starts_with("channel:") => "",
        _ => " [waiting]",
    };
    format!("#{} {} {}{thread}{state}: {}", m.id, m.created_at, m.sender, m.body)
}

/// The text as given, or standard input for `-`.
pub(crate) fn read_text(text: String) -> CliResult<String> {
    if text != "-" {
        return Ok(text);
    }
    let mut buf = String::new();
    std::io::stdin().read_to_string(&mut buf).map_err(|e| usage(format!("cannot read stdin: {e}")))?;
    Ok(buf)
}

async fn print_messages(client: &Client, path: &str, follow: bool, json: bool, mut after: i64) -> CliResult {
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let wait = if follow { "&wait=30s" } else { "" };
        let page: Vec<muster_proto::api::MessageView> = client
            .get_waiting(&format!("{path}{sep}after={after}&limit=1000{wait}"), std::time::Duration::from_secs(30))
            .await?;
        for m in &page {
            if json {
                println!("{}", serde_json::to_string(m).unwrap_or_default());
            } else {
                println!("{}", message_line(m));
            }
        }
        if let Some(last) = page.last() {
            after = last.id;
        } else if !follow {
            return Ok(());
        }
    }
}

/// `muster msg send|read`.
pub(crate) async fn msg(conn: &ConnArgs, cmd: MsgCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        MsgCmd::Send { to, text, reply_to, json } => {
            let req = muster_proto::api::MessageSend { to, body: read_text(text)?, reply_to };
            let m: muster_proto::api::MessageView = client.post("/messages", &req).await?;
            if json {
                return print_json(&m);
            }
            println!("#{}", m.id);
            Ok(())
        }
        MsgCmd::Read { to, thread, json } => {
            let mut path = format!("/messages?to={}", segment(&to));
            if let Some(t) = thread {
                path.push_str(&format!("&thread={t}"));
            }
            print_messages(&client, &path, false, json, 0).await
        }
    }
}

/// `muster channel create|list|post|tail`.
pub(crate) async fn channel(conn: &ConnArgs, cmd: ChannelCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        ChannelCmd::Create { name, description } => {
            let c: muster_proto::api::ChannelView =
                client.post("/channels", &muster_proto::api::ChannelAdd { name, description }).await?;
            println!("{}", c.name);
            Ok(())
        }
        ChannelCmd::List { json } => {
            let all: Vec<muster_proto::api::ChannelView> = client.get("/channels").await?;
            if json {
                return print_json(&all);
            }
            if all.is_empty() {
                eprintln!("(no channels)");
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "MESSAGES", "CREATED", "BY", "DESCRIPTION"]);
            for c in &all {
                t.row(vec![
                    c.name.clone(),
                    c.messages.to_string(),
                    c.created_at.clone(),
                    c.created_by.clone(),
                    c.description.clone(),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        ChannelCmd::Post { name, text, reply_to } => {
            let req =
                muster_proto::api::MessageSend { to: format!("channel:{name}"), body: read_text(text)?, reply_to };
            let m: muster_proto::api::MessageView = client.post("/messages", &req).await?;
            println!("#{}", m.id);
            Ok(())
        }
        ChannelCmd::Tail { name, thread, after, follow, json } => {
            let mut path = format!("/messages?to={}", segment(&format!("channel:{name}")));
            if let Some(t) = thread {
                path.push_str(&format!("&thread={t}"));
            }
            print_messages(&client, &path, follow, json, after).await
        }
    }
}
