//! Pipelines of stages: `pipeline run|show|list`.

use crate::client::{CliResult, ConnArgs, segment, usage};
use crate::output::print_json;
use crate::table::{Table, dash};
use crate::{CliError, exit};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum PipelineCmd {
    /// Check a pipeline file and create its stages' tasks (every problem is
    /// reported with its line, and then nothing is created).
    Run {
        file: std::path::PathBuf,
        /// A value for `{{vars.NAME}}` in the file (repeat for more).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// A pipeline's stages, each with its task and where it stands.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Pipelines, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn print_pipeline(p: &muster_proto::api::PipelineView) {
    println!("pipeline {}  {}  {}  (by {}, {})", p.id, p.name, p.state, p.created_by, p.created_at);
    let mut t = Table::new(&["STAGE", "TASK", "STATE", "ATTEMPTS", "REASON"]);
    for s in &p.stages {
        t.row(vec![
            s.name.clone(),
            s.task.clone(),
            s.state.replace('_', "-"),
            s.attempts.to_string(),
            dash(s.reason.as_ref()),
        ]);
    }
    print!("{}", t.render());
}

/// `muster pipeline run|show|list`.
pub(crate) async fn run(conn: &ConnArgs, cmd: PipelineCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        PipelineCmd::Run { file, vars, json } => {
            let source =
                std::fs::read_to_string(&file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
            let mut map = std::collections::BTreeMap::new();
            for v in vars {
                let (k, val) = v.split_once('=').ok_or_else(|| usage(format!("--var {v:?}: expected NAME=VALUE")))?;
                map.insert(k.trim().to_owned(), val.to_owned());
            }
            let req = muster_proto::api::PipelineRun { source, vars: map };
            let p: muster_proto::api::PipelineView = match client.post("/pipelines", &req).await {
                Ok(p) => p,
                Err(e) if e.code == exit::USAGE => {
                    // One problem per line, each as FILE:LINE: …
                    let shown = file.display();
                    let lines: Vec<String> = e
                        .message
                        .strip_prefix("source: ")
                        .unwrap_or(&e.message)
                        .lines()
                        .map(|l| match l.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
                            Some((n, m)) => format!("{shown}:{n}: {m}"),
                            None => format!("{shown}: {l}"),
                        })
                        .collect();
                    return Err(CliError::new(exit::USAGE, lines.join("\n")));
                }
                Err(e) => return Err(e),
            };
            if json {
                return print_json(&p);
            }
            print_pipeline(&p);
            Ok(())
        }
        PipelineCmd::Show { id, json } => {
            let p: muster_proto::api::PipelineView = client.get(&format!("/pipelines/{}", segment(&id))).await?;
            if json {
                return print_json(&p);
            }
            print_pipeline(&p);
            Ok(())
        }
        PipelineCmd::List { json } => {
            let all: Vec<muster_proto::api::PipelineView> = client.get("/pipelines").await?;
            if json {
                return print_json(&all);
            }
            if all.is_empty() {
                eprintln!("(no pipelines)");
                return Ok(());
            }
            let mut t = Table::new(&["ID", "NAME", "STATE", "STAGES", "CREATED", "BY"]);
            for p in &all {
                let done = p.stages.iter().filter(|s| s.state == "succeeded").count();
                t.row(vec![
                    p.id.to_string(),
                    p.name.clone(),
                    p.state.clone(),
                    format!("{done}/{}", p.stages.len()),
                    p.created_at.clone(),
                    p.created_by.clone(),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}
