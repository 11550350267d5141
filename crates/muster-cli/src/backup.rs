//! Backups of the database: `backup` and `backup list`.

use crate::client::{CliResult, ConnArgs};
use crate::output::print_json;
use crate::table::Table;
use clap::Subcommand;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// List backups, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `muster backup`: an online, verified copy of the database, now.
pub(crate) async fn run(conn: &ConnArgs, cmd: Option<BackupCmd>, json: bool) -> CliResult {
    let client = conn.client()?;
    match cmd {
        None => {
            let b: muster_proto::api::BackupView =
                client.post_waiting("/admin/backups", &(), Duration::from_secs(3600)).await?;
            if json {
                return print_json(&b);
            }
            println!("{}", b.path);
            eprintln!("backup verified: {} bytes, {} tasks", b.bytes, b.tasks.unwrap_or(0));
            Ok(())
        }
        Some(BackupCmd::List { json }) => {
            let all: Vec<muster_proto::api::BackupView> = client.get("/admin/backups").await?;
            if json {
                return print_json(&all);
            }
            let mut t = Table::new(&["FILE", "CREATED", "BYTES", "PATH"]);
            for b in &all {
                t.row(vec![b.file.clone(), b.created_at.clone(), b.bytes.to_string(), b.path.clone()]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}
