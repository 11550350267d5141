//! Cron schedules that create tasks: `schedule add|list|show|pause|resume|delete`.

use crate::client::{CliResult, ConnArgs, segment};
use crate::output::print_json;
use crate::table::{Table, dash};
use crate::task::{TaskAddArgs, task_submit};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Create tasks on a cron pattern: `schedule add NAME --cron '0 * * * *' [task add options] PROMPT`.
    Add {
        /// A name for it (letters, digits, -, _ or .).
        name: String,
        /// `MIN HOUR DAY MONTH WEEKDAY` (or with seconds first), or @hourly, @daily, @weekly, @monthly.
        #[arg(long)]
        cron: String,
        /// The time zone the pattern is read in (IANA, such as Europe/Paris); default UTC.
        #[arg(long)]
        tz: Option<String>,
        /// skip (default) or run-once: runs missed while the hub was down.
        #[arg(long, value_parser = ["skip", "run-once"])]
        missed: Option<String>,
        #[command(flatten)]
        task: Box<TaskAddArgs>,
    },
    /// Every schedule, with when it fires next.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One schedule and the task it creates.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop firing until resumed.
    Pause {
        name: String,
    },
    /// Fire again, from the next time after now (what fell due while paused is not run).
    Resume {
        name: String,
    },
    Delete {
        name: String,
    },
}

fn schedule_line(s: &muster_proto::api::ScheduleView) -> String {
    let next = if s.paused { "paused".to_owned() } else { s.next_at.clone().unwrap_or_else(|| "never".to_owned()) };
    format!("{}  `{}` {}  next {next}", s.name, s.cron, s.tz)
}

/// `muster schedule add|list|show|pause|resume|delete`.
pub(crate) async fn run(conn: &ConnArgs, cmd: ScheduleCmd) -> CliResult {
    let client = conn.client()?;
    let path = |name: &str, action: &str| format!("/schedules/{}{action}", segment(name));
    let (s, json): (muster_proto::api::ScheduleView, bool) = match cmd {
        ScheduleCmd::Add { name, cron, tz, missed, task } => {
            let json = task.json;
            let req = muster_proto::api::ScheduleAdd {
                name,
                cron,
                tz,
                missed: missed.map(|m| m.replace('-', "_")),
                task: task_submit(*task)?,
            };
            (client.post("/schedules", &req).await?, json)
        }
        ScheduleCmd::List { json } => {
            let all: Vec<muster_proto::api::ScheduleView> = client.get("/schedules").await?;
            if json {
                return print_json(&all);
            }
            if all.is_empty() {
                eprintln!("(no schedules)");
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "CRON", "TZ", "MISSED", "NEXT", "LAST", "LAST TASK", "RUNNER"]);
            for s in &all {
                t.row(vec![
                    s.name.clone(),
                    s.cron.clone(),
                    s.tz.clone(),
                    s.missed.replace('_', "-"),
                    if s.paused { "paused".to_owned() } else { dash(s.next_at.as_ref()) },
                    dash(s.last_at.as_ref()),
                    dash(s.last_task.as_ref()),
                    dash(s.task.runner.as_ref()),
                ]);
            }
            print!("{}", t.render());
            return Ok(());
        }
        ScheduleCmd::Show { name, json } => (client.get(&path(&name, "")).await?, json),
        ScheduleCmd::Pause { name } => (client.post(&path(&name, "/pause"), &()).await?, false),
        ScheduleCmd::Resume { name } => (client.post(&path(&name, "/resume"), &()).await?, false),
        ScheduleCmd::Delete { name } => {
            let s: muster_proto::api::ScheduleView = client.delete(&path(&name, "")).await?;
            println!("deleted {}", s.name);
            return Ok(());
        }
    };
    if json {
        return print_json(&s);
    }
    println!("{}", schedule_line(&s));
    Ok(())
}
