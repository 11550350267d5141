//! Decisions waiting for a person: `decisions`, `decide`, `decision add|show`.

use crate::client::{CliResult, ConnArgs, segment};
use crate::output::print_json;
use crate::table::{Table, dash};
use clap::Subcommand;
use muster_proto::api::DurationValue;

#[derive(Debug, Subcommand)]
pub enum DecisionCmd {
    /// Ask a person about a queued task: it waits in needs_decision until answered.
    Add {
        task: String,
        question: String,
        /// An option to choose from (give two or more); without any: yes and no.
        #[arg(long = "option")]
        options: Vec<String>,
        /// The option taken when nobody answers by the timeout; without one the task fails.
        #[arg(long)]
        default: Option<String>,
        /// How long a person has (`30m`, `1d`); without it, no limit.
        #[arg(long)]
        timeout: Option<String>,
        /// A token name that may answer (repeat for more); without it, any admin token.
        #[arg(long = "answerer")]
        answerers: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// One decision, whatever its state.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// One decision in a line: id, state, question, and the answer if any.
pub(crate) fn decision_line(d: &muster_proto::api::DecisionView) -> String {
    let mut line = format!("#{} {}: {}", d.id, d.state.replace('_', "-"), d.question);
    if let Some(a) = &d.answer {
        line.push_str(&format!(" -> {a}"));
        if let Some(by) = &d.answered_by {
            line.push_str(&format!(" (by {by})"));
        }
    }
    line
}

fn decisions_table(all: &[muster_proto::api::DecisionView]) -> String {
    let mut t =
        Table::new(&["ID", "TASK", "STATE", "QUESTION", "OPTIONS", "DEFAULT", "DEADLINE", "ASKED BY", "ANSWER"]);
    for d in all {
        let answer = match (&d.answer, &d.answered_by) {
            (Some(a), Some(by)) => format!("{a} (by {by})"),
            (Some(a), None) => a.clone(),
            _ => "-".to_owned(),
        };
        let question: String = if d.question.chars().count() > 60 {
            d.question.chars().take(59).chain(['…']).collect()
        } else {
            d.question.clone()
        };
        t.row(vec![
            format!("#{}", d.id),
            d.task.clone(),
            d.state.replace('_', "-"),
            question.replace('\n', " "),
            d.options.join(" | "),
            dash(d.default.as_ref()),
            dash(d.deadline.as_ref()),
            d.raised_by.clone(),
            answer,
        ]);
    }
    t.render()
}

/// `muster decisions`: open ones by default, oldest first.
pub(crate) async fn list(conn: &ConnArgs, all: bool, task: Option<String>, json: bool) -> CliResult {
    let client = conn.client()?;
    let mut path = format!("/decisions?state={}", if all { "all" } else { "open" });
    if let Some(t) = task {
        path.push_str(&format!("&task={}", segment(&t)));
    }
    let list: Vec<muster_proto::api::DecisionView> = client.get(&path).await?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        eprintln!("{}", if all { "(no decisions)" } else { "(no decision waits for an answer)" });
        return Ok(());
    }
    print!("{}", decisions_table(&list));
    Ok(())
}

/// `muster decide ID OPTION [--note TEXT]`.
pub(crate) async fn decide(conn: &ConnArgs, id: &str, option: String, note: Option<String>, json: bool) -> CliResult {
    let client = conn.client()?;
    let id = id.trim_start_matches('#');
    let d: muster_proto::api::DecisionView = client
        .post(&format!("/decisions/{}/answer", segment(id)), &muster_proto::api::DecisionAnswer { option, note })
        .await?;
    if json {
        return print_json(&d);
    }
    println!("{}", decision_line(&d));
    Ok(())
}

/// `muster decision add|show`.
pub(crate) async fn run(conn: &ConnArgs, cmd: DecisionCmd) -> CliResult {
    let client = conn.client()?;
    let (d, json): (muster_proto::api::DecisionView, bool) = match cmd {
        DecisionCmd::Add { task, question, options, default, timeout, answerers, json } => {
            let req = muster_proto::api::DecisionAdd {
                task,
                question,
                options,
                default,
                timeout: timeout.map(DurationValue::Text),
                answerers,
            };
            (client.post("/decisions", &req).await?, json)
        }
        DecisionCmd::Show { id, json } => {
            (client.get(&format!("/decisions/{}", segment(id.trim_start_matches('#')))).await?, json)
        }
    };
    if json {
        return print_json(&d);
    }
    println!("{}", decision_line(&d));
    if d.state == "open" {
        println!("options: {}", d.options.join(", "));
    }
    Ok(())
}
