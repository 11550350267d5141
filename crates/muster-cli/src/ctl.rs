//! What a run does for its own task, with the task token its agent gave it:
//! `ctl note|lock|unlock|ask|decisions|msg|task`. The MCP server (`mcp`) shares
//! its client and its way of asking.

use crate::client::{CliResult, DEFAULT_URL, segment, usage};
use crate::decision::decision_line;
use crate::message::{message_line, read_text};
use crate::output::print_json;
use crate::task::{TaskAddArgs, task_submit};
use crate::{CliError, Client, exit};
use clap::Subcommand;
use muster_proto::api::{DurationValue, TaskCreated};
use std::io::Read;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum CtlCmd {
    /// Say how the run is getting on: a `task.note` on the timeline.
    Note {
        /// What to say (`-` reads it from standard input).
        text: String,
    },
    /// Take a named lock for the task (`repo:web/src/api.rs`, `deploy:staging`);
    /// it is let go when the run ends. Exit 4: still held by another task; 8: deadlock.
    Lock {
        name: String,
        /// Share it with other shared holders; the default is exclusive.
        #[arg(long)]
        shared: bool,
        /// Wait up to this long for it (`30s`, `5m`); without it, try once.
        #[arg(long)]
        wait: Option<String>,
    },
    /// Let go of a lock the task holds.
    Unlock { name: String },
    /// Ask a person: prints the option chosen. Exit 9: nobody answered in
    /// time and there was no default (the task fails); 4: the question was withdrawn.
    Ask {
        question: String,
        /// An option to choose from (give two or more); without any: yes and no.
        #[arg(long = "option")]
        options: Vec<String>,
        /// The option taken when nobody answers by the timeout.
        #[arg(long)]
        default: Option<String>,
        /// How long a person has (`30m`, `1d`); without it, no limit.
        #[arg(long)]
        timeout: Option<String>,
        /// Do not wait: the run should stop now; the task waits without a
        /// slot and runs again once answered (`muster ctl decisions` shows the answer).
        #[arg(long)]
        park: bool,
    },
    /// The task's decisions and their answers (for a run resumed after one).
    Decisions {
        #[arg(long)]
        json: bool,
    },
    /// Messages: `ctl msg send --to … TEXT`, `ctl msg read [--channel NAME] [--wait 30s]`.
    Msg {
        #[command(subcommand)]
        cmd: CtlMsgCmd,
    },
    /// Create a follow-up task, with every `muster task add` option (at most
    /// 20 per task, 5 deep): `ctl task add --runner shell 'make docs'`.
    Task {
        #[command(subcommand)]
        cmd: CtlTaskCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum CtlTaskCmd {
    /// Queue a follow-up task; prints its id.
    Add(Box<TaskAddArgs>),
}

#[derive(Debug, Subcommand)]
pub enum CtlMsgCmd {
    /// Send a message (`--to agent:NAME|task:ID|channel:NAME`), signed as this task.
    Send {
        #[arg(long)]
        to: String,
        text: String,
        #[arg(long)]
        reply_to: Option<i64>,
    },
    /// Read the task's mailbox (marked read), or `--channel NAME`; `--wait 30s` waits for one.
    Read {
        #[arg(long)]
        channel: Option<String>,
        /// Only messages after this id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        wait: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Asks a person for the run's task; unless it parks, waits for the answer.
/// Errors: nobody answered in time without a default (exit 9), or it was withdrawn (exit 4).
pub(crate) async fn ask(
    client: &Client,
    req: &muster_proto::api::CtlAsk,
) -> CliResult<muster_proto::api::DecisionView> {
    let asked: muster_proto::api::DecisionView = client.post("/ctl/decisions", req).await?;
    if req.park {
        return Ok(asked);
    }
    eprintln!("asked as decision #{}; waiting for a person (muster decide {} OPTION)", asked.id, asked.id);
    loop {
        let d: muster_proto::api::DecisionView =
            client.get_waiting(&format!("/ctl/decisions/{}?wait=60s", asked.id), Duration::from_secs(60)).await?;
        match d.state.as_str() {
            "open" => continue,
            "answered" | "auto_resolved" => return Ok(d),
            "timed_out" => {
                return Err(CliError::new(
                    exit::DECISION_TIMEOUT,
                    format!(
                        "decision #{}: nobody answered in time and there is no default; the task fails (decision_timeout)",
                        d.id
                    ),
                ));
            }
            other => return Err(CliError::new(exit::CONFLICT, format!("decision #{} was {other}", d.id))),
        }
    }
}

/// The client a run uses: its task token and the hub's address from its environment.
pub(crate) fn run_client() -> CliResult<Client> {
    let token = std::env::var("MUSTER_TASK_TOKEN").ok().filter(|t| !t.is_empty()).ok_or_else(|| {
        CliError::new(
            exit::AUTH,
            "muster ctl runs inside a task: MUSTER_TASK_TOKEN is not set (the agent sets it for each run)",
        )
    })?;
    let url = std::env::var("MUSTER_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_owned());
    Client::new(&url, &token, crate::client::ca_from_env().as_deref())
}

/// `muster ctl ...`: what a run does for its own task, with the task token
/// its agent gave it (`MUSTER_TASK_TOKEN`, and `MUSTER_URL`).
pub(crate) async fn run(cmd: CtlCmd) -> CliResult {
    let client = run_client()?;
    match cmd {
        CtlCmd::Note { text } => {
            let text = if text == "-" {
                let mut buf = String::new();
                std::io::stdin().read_to_string(&mut buf).map_err(|e| usage(format!("cannot read stdin: {e}")))?;
                buf
            } else {
                text
            };
            client.post_no_content("/ctl/note", &muster_proto::api::CtlNote { text }).await
        }
        CtlCmd::Lock { name, shared, wait } => {
            // `--wait 0`, like none, tries once.
            let wait = wait.filter(|w| !matches!(w.trim(), "0" | "0s" | "0ms"));
            let limit = wait.as_deref().map(|w| muster_proto::parse_duration("wait", w)).transpose().map_err(usage)?;
            let req = muster_proto::api::LockRequest {
                name,
                mode: shared.then(|| "shared".to_owned()),
                wait: wait.map(DurationValue::Text),
            };
            let _: serde_json::Value =
                client.post_waiting("/ctl/locks", &req, limit.unwrap_or_default() + Duration::from_secs(30)).await?;
            Ok(())
        }
        CtlCmd::Unlock { name } => {
            client.post_no_content("/ctl/locks/release", &muster_proto::api::LockName { name }).await
        }
        CtlCmd::Ask { question, options, default, timeout, park } => {
            let req = muster_proto::api::CtlAsk {
                question,
                options,
                default,
                timeout: timeout.map(DurationValue::Text),
                park,
                permission: false,
            };
            let d = ask(&client, &req).await?;
            if park {
                println!("#{}", d.id);
                eprintln!("asked as decision #{}: stop this run now; the task runs again once it is answered", d.id);
                return Ok(());
            }
            if let Some(note) = &d.note {
                eprintln!("note from {}: {note}", d.answered_by.as_deref().unwrap_or("?"));
            }
            println!("{}", d.answer.unwrap_or_default());
            Ok(())
        }
        CtlCmd::Msg { cmd: CtlMsgCmd::Send { to, text, reply_to } } => {
            let req = muster_proto::api::MessageSend { to, body: read_text(text)?, reply_to };
            let m: muster_proto::api::MessageView = client.post("/ctl/messages", &req).await?;
            println!("#{}", m.id);
            Ok(())
        }
        CtlCmd::Msg { cmd: CtlMsgCmd::Read { channel, after, wait, json } } => {
            let limit = wait.as_deref().map(|w| muster_proto::parse_duration("wait", w)).transpose().map_err(usage)?;
            let mut path = format!("/ctl/messages?after={after}");
            if let Some(c) = channel {
                path.push_str(&format!("&to={}", segment(&format!("channel:{c}"))));
            }
            if let Some(w) = &wait {
                path.push_str(&format!("&wait={}", segment(w)));
            }
            let page: Vec<muster_proto::api::MessageView> =
                client.get_waiting(&path, limit.unwrap_or_default()).await?;
            for m in &page {
                if json {
                    println!("{}", serde_json::to_string(m).unwrap_or_default());
                } else {
                    println!("{}", message_line(m));
                }
            }
            Ok(())
        }
        CtlCmd::Task { cmd: CtlTaskCmd::Add(args) } => {
            let json = args.json;
            let submit = task_submit(*args)?;
            let created: TaskCreated = client.post("/ctl/tasks", &submit).await?;
            if json {
                return print_json(&created.task);
            }
            println!("{}", created.task.id);
            Ok(())
        }
        CtlCmd::Decisions { json } => {
            let all: Vec<muster_proto::api::DecisionView> = client.get("/ctl/decisions").await?;
            if json {
                return print_json(&all);
            }
            for d in &all {
                println!("{}", decision_line(d));
            }
            Ok(())
        }
    }
}
