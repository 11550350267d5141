//! A scripted Anthropic model for trying Muster by hand, offline: the model
//! asks Claude Code to add a section to README.md with its Bash tool, then
//! says so. It serves until it is killed:
//!
//! ```sh
//! cargo run -p muster --example scripted_claude
//! ```
//!
//! and an agent whose `ANTHROPIC_BASE_URL` is the address it prints runs
//! `claude` tasks against it. The same server the tests use
//! (`tests/it/models.rs`).

#[allow(dead_code)]
#[path = "../tests/it/models.rs"]
mod models;

use models::{Api, Reply, ScriptedModel};

#[tokio::main]
async fn main() {
    let model = ScriptedModel::start(
        Api::Anthropic,
        vec![
            Reply::Shell {
                command: "printf '\\n## Usage\\n\\nRun `make` to build, `make test` to test.\\n' >> README.md".into(),
                description: "add a Usage section",
            },
            Reply::Text("I added a Usage section to README.md."),
        ],
    )
    .await;
    println!("scripted Anthropic model at {}", model.url);
    std::future::pending::<()>().await;
}
