//! API tokens: `token list|revoke`.

use crate::client::{CliResult, ConnArgs, segment};
use crate::output::print_json;
use crate::table::{Table, dash};
use clap::Subcommand;
use muster_proto::api::TokenView;

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; an agent using it is disconnected.
    Revoke { id: String },
}

/// `muster token list|revoke`.
pub(crate) async fn run(conn: &ConnArgs, cmd: TokenCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        TokenCmd::List { json } => {
            let tokens: Vec<TokenView> = client.get("/tokens").await?;
            if json {
                return print_json(&tokens);
            }
            let mut t = Table::new(&["ID", "NAME", "SCOPE", "AGENT", "CREATED", "LAST USED", "REVOKED"]);
            for tok in &tokens {
                t.row(vec![
                    tok.id.clone(),
                    tok.name.clone(),
                    tok.scope.clone(),
                    dash(tok.agent.as_ref()),
                    tok.created_at.clone(),
                    dash(tok.last_used_at.as_ref()),
                    dash(tok.revoked_at.as_ref()),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        TokenCmd::Revoke { id } => {
            let tok: TokenView = client.post(&format!("/tokens/{}/revoke", segment(&id)), &()).await?;
            eprintln!("revoked {} ({})", tok.id, tok.name);
            Ok(())
        }
    }
}
