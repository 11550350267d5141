//! `muster`: the hub, the agent worker and the operator CLI in one binary.

/// A line on stderr. A closed stderr (`muster hub 2>&1 | head -1`) is not
/// worth a panic: a long-running command goes on without it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[cfg(test)]
mod doc_commands;
mod logging;
mod private;
mod serve;
mod settings;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use muster_cli::{ConnArgs, exit};
use settings::HubArgs;

/// Memory is often freed on another thread than the one that took it (a
/// change handed to the store's writer and its answer handed back), which
/// mimalloc does more cheaply than the C library (ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run a fleet of headless AI coding agents.
#[derive(Debug, Parser)]
#[command(name = "muster", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Command,
}

/// The binary's own commands, which start a hub or an agent or work on this
/// machine, around the operator commands of `muster_cli`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Start a hub and one local agent (shell runner enabled) in one process.
    Up(serve::UpArgs),
    /// Start the hub.
    Hub(HubArgs),
    /// Measure the hub: throughput, latency, idle agents, recovery, the write ceiling and peer queues.
    Bench(muster_bench::BenchArgs),
    /// Run an agent worker, or manage agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    // `task`, `status`, … `diagnose`, `check`: they speak to a hub over HTTP.
    #[command(flatten)]
    Operator(muster_cli::Command),
    /// On an agent's machine: can it run each of its runners? Exits 1 if not.
    Doctor(serve::DoctorArgs),
    /// Put a backup in place of the database. The hub must be stopped.
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
    },
    /// Copy a SQLite hub's whole history into an empty PostgreSQL database, then check it. The hub must be stopped.
    Migrate {
        /// The hub's data directory (or its muster.db).
        #[arg(long)]
        from: std::path::PathBuf,
        /// The PostgreSQL database: postgres://USER@HOST/DB.
        #[arg(long, env = "MUSTER_DATABASE")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// Connect to a hub and run tasks.
    Run(serve::AgentRunArgs),
    // `add`, `list`, `pause`, … : an operator's, over HTTP.
    #[command(flatten)]
    Manage(muster_cli::agent::AgentCmd),
}

/// The command line as [`Cli`] declares it, with `doctor`, which runs here,
/// listed beside `diagnose`, which asks the hub: clap lists subcommands by
/// declaration order, then by name, and `doctor` shares `diagnose`'s place.
fn command() -> clap::Command {
    let cli = Cli::command();
    let diagnose = cli.find_subcommand("diagnose").map(clap::Command::get_display_order);
    cli.mut_subcommand("doctor", |doctor| doctor.display_order(diagnose))
}

/// [`Cli::parse`], on [`command`].
fn parse() -> Cli {
    let mut matches = command().get_matches();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command()).exit())
}

fn main() {
    let cli = parse();
    // Rust ignores SIGPIPE, so a write to a closed pipe (`muster task list |
    // head -1`) fails, and `println!` panics. A command that only prints
    // ends at once instead, quietly, as Unix tools do. The hub, an agent and
    // `up` keep ignoring it: an agent writes prompts to its runs' pipes, and
    // none of them may die because a reader of its logs went away.
    if !matches!(cli.command, Command::Up(_) | Command::Hub(_) | Command::Agent(AgentCmd::Run(_))) {
        // SAFETY: restores the default disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // The hub and `up` set up their logs once their data directory is known.
    if !matches!(cli.command, Command::Up(_) | Command::Hub(_)) {
        let level = match cli.command {
            Command::Agent(AgentCmd::Run(_)) => "info",
            // Its report says what is missing; a warning line would say it twice.
            Command::Doctor(_) => "error",
            _ => "warn",
        };
        let logs = logging::Logs { console: logging::Console::Text, file: None, default_level: level };
        if let Err(e) = logging::init(logs) {
            say!("muster: cannot set up logging: {e}");
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            say!("muster: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    let code = runtime.block_on(run(cli));
    // Do not wait for detached background work (e.g. a stdin reader) to finish.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let conn = cli.conn;
    match cli.command {
        Command::Up(args) => report(serve::up(&conn, args).await),
        Command::Hub(args) => report(serve::hub(&conn, args).await),
        Command::Bench(args) => report(muster_bench::run(args).await),
        Command::Agent(AgentCmd::Run(args)) => report(serve::agent(&conn, args).await),
        Command::Agent(AgentCmd::Manage(cmd)) => finish(muster_cli::agent::run(&conn, cmd).await),
        Command::Operator(cmd) => finish(muster_cli::run(&conn, cmd).await),
        Command::Doctor(args) => report(serve::doctor(args).await),
        Command::Restore { file } => report(serve::restore(&conn, &file)),
        Command::Migrate { from, to } => report(serve::migrate(&from, &to).await),
    }
}

/// An operator command's exit code, with its failure on stderr.
fn finish(result: muster_cli::CliResult) -> i32 {
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            say!("muster: {}", e.message);
            e.code
        }
    }
}

/// The exit code of one of the binary's own commands, with its failure on stderr.
fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            say!("muster: {e:#}");
            match e.downcast_ref::<muster_cli::CliError>() {
                Some(cli) => cli.code,
                None => exit::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn help_lists_doctor_beside_diagnose_as_it_always_has() {
        let help = super::command().render_help().to_string();
        let at = |name: &str| help.find(&format!("\n  {name} ")).unwrap_or_else(|| panic!("no {name} in:\n{help}"));
        assert!(at("diagnose") < at("doctor") && at("doctor") < at("check") && at("check") < at("restore"), "{help}");
    }
}
