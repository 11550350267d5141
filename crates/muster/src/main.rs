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

use clap::{Parser, Subcommand};
use muster_cli::{AgentAddArgs, AlertsCmd, BackupCmd, ConfigCmd, ConnArgs, EventsArgs, TaskCmd, TokenCmd, exit};
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
    /// Queue, inspect, cancel and retry tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// List and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The hub's state at a glance.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The timeline of task and agent changes.
    Events(EventsArgs),
    /// Back up the database now (online, verified), or list backups.
    Backup {
        #[command(subcommand)]
        cmd: Option<BackupCmd>,
        #[arg(long)]
        json: bool,
    },
    /// Alert rules and their state; `alerts ack RULE` acknowledges one.
    Alerts {
        #[command(subcommand)]
        cmd: Option<AlertsCmd>,
        #[arg(long)]
        json: bool,
    },
    /// Runtime settings: show them, or change them without a restart.
    Config {
        #[command(subcommand)]
        cmd: Option<ConfigCmd>,
        #[arg(long)]
        json: bool,
    },
    /// Prune finished work past its retention and give the space back, now.
    Compact {
        #[arg(long)]
        json: bool,
    },
    /// The database: size, free space, rows, last backup and compaction.
    Db {
        #[arg(long)]
        json: bool,
    },
    /// The last hour: queue, throughput, latency, utilization, failures.
    Metrics {
        #[arg(long)]
        json: bool,
    },
    /// Stop handing out tasks, fleet-wide; runs under way go on.
    Pause,
    /// Hand out tasks again after `muster pause`.
    Resume,
    /// Service level objectives: error budget left and burn rate.
    Slo {
        #[arg(long)]
        json: bool,
    },
    /// Inside a run: act for its own task with the task token the agent gave it (`ctl note`, `ctl lock`, `ctl ask`, …).
    Ctl {
        #[command(subcommand)]
        cmd: muster_cli::CtlCmd,
    },
    /// Decisions waiting for a person (`--all`: answered ones too).
    Decisions {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Answer a decision: `decide ID OPTION [--note TEXT]`.
    Decide {
        id: String,
        option: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Ask a person about a queued task (`decision add`), or look one up (`decision show ID`).
    Decision {
        #[command(subcommand)]
        cmd: muster_cli::DecisionCmd,
    },
    /// Pipelines of stages from a YAML file: `pipeline run FILE [--var K=V]`, `pipeline show ID`, `pipeline list`.
    Pipeline {
        #[command(subcommand)]
        cmd: muster_cli::PipelineCmd,
    },
    /// Messages to an agent's or a task's mailbox: `msg send --to agent:NAME|task:ID TEXT`, `msg read --to …`.
    Msg {
        #[command(subcommand)]
        cmd: muster_cli::MsgCmd,
    },
    /// Channels: named topics with history and threads (`channel create|list|post|tail`).
    Channel {
        #[command(subcommand)]
        cmd: muster_cli::ChannelCmd,
    },
    /// Cron schedules that create tasks: `schedule add NAME --cron …`, `list`, `show`, `pause`, `resume`, `delete`.
    Schedule {
        #[command(subcommand)]
        cmd: muster_cli::ScheduleCmd,
    },
    /// Checks that passed for an earlier task on a repository and fail now, with the task and commit that broke them.
    Regressions {
        #[arg(long)]
        json: bool,
    },
    /// Active tasks on one repository changing the same files, and what was decided.
    Conflicts {
        /// Only those not yet decided.
        #[arg(long)]
        open: bool,
        #[arg(long)]
        json: bool,
    },
    /// Named locks that tasks hold or wait for (`ctl lock` inside a run).
    Locks {
        #[arg(long)]
        json: bool,
    },
    /// Force a lock free (`unlock NAME`), or every one (`unlock --all --yes`); on the timeline with who did it.
    Unlock {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        yes: bool,
    },
    /// The wait-for graph: which task waits for which lock, held by whom.
    Deadlocks {
        #[arg(long)]
        json: bool,
    },
    /// Inside a run: a Model Context Protocol server over stdio whose tools act for the run's task
    /// (note, lock, unlock, ask, send_message, read_messages, create_task, permission_prompt).
    Mcp,
    /// Approve a task pending approval: it joins the queue.
    Approve {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Reject a task pending approval: it ends cancelled, with the reason.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Runners fleet-wide: `runner list`, `runner disable NAME --reason TEXT`, `runner enable NAME`.
    Runner {
        #[command(subcommand)]
        cmd: muster_cli::RunnerCmd,
    },
    /// Shadow mode: run tasks on another runner too and compare (`shadow set|clear|list|report`).
    Shadow {
        #[command(subcommand)]
        cmd: muster_cli::ShadowCmd,
    },
    /// Circuit breakers of agents and runners: open after failures in a row, half-open after a cooldown.
    Breakers {
        #[arg(long)]
        json: bool,
    },
    /// Act on one circuit breaker: `breaker reset NAME`.
    Breaker {
        #[command(subcommand)]
        cmd: muster_cli::BreakerCmd,
    },
    /// Tokens and cost that coding agents reported, summed by day, runner, agent or task.
    Costs {
        /// day (UTC), runner, agent or task.
        #[arg(long, default_value = "day", value_parser = ["day", "runner", "agent", "task"])]
        by: String,
        /// Only attempts that ended this recently (e.g. 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Everything to look at first, in one report, with next steps. Exits 1 on problems.
    Diagnose {
        #[arg(long)]
        json: bool,
    },
    /// On an agent's machine: can it run each of its runners? Exits 1 if not.
    Doctor(serve::DoctorArgs),
    /// Check the database and Muster's invariants; --repair fixes what it can.
    Check {
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Put a backup in place of the database. The hub must be stopped.
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// Connect to a hub and run tasks.
    Run(serve::AgentRunArgs),
    /// Register an agent and print its token (shown once).
    Add(AgentAddArgs),
    /// List agents.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Take no new tasks on this agent (its runs go on).
    Pause { name: String },
    /// Let a paused agent take tasks again.
    Resume { name: String },
    /// Finish the agent's runs, take no new ones, then stop the agent.
    Drain { name: String },
    /// Remove an agent: revoke its token and forget it; its tasks' history keeps its name.
    /// Refused while it holds runs, unless --force, which queues them again.
    Remove {
        name: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke the agent's token and print a new one (shown once).
    Token {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
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
    let result: Result<(), muster_cli::CliError> = match cli.command {
        Command::Up(args) => return report(serve::up(&conn, args).await),
        Command::Hub(args) => return report(serve::hub(&conn, args).await),
        Command::Bench(args) => return report(muster_bench::run(args).await),
        Command::Agent(AgentCmd::Run(args)) => return report(serve::agent(&conn, args).await),
        Command::Agent(AgentCmd::Add(args)) => muster_cli::agent_add(&conn, args).await,
        Command::Agent(AgentCmd::List { json }) => muster_cli::agent_list(&conn, json).await,
        Command::Agent(AgentCmd::Pause { name }) => muster_cli::agent_pause(&conn, &name, true).await,
        Command::Agent(AgentCmd::Resume { name }) => muster_cli::agent_pause(&conn, &name, false).await,
        Command::Agent(AgentCmd::Drain { name }) => muster_cli::agent_drain(&conn, &name).await,
        Command::Agent(AgentCmd::Remove { name, force, json }) => {
            muster_cli::agent_remove(&conn, &name, force, json).await
        }
        Command::Doctor(args) => return report(serve::doctor(args).await),
        Command::Metrics { json } => muster_cli::metrics(&conn, json).await,
        Command::Diagnose { json } => muster_cli::diagnose(&conn, json).await,
        Command::Slo { json } => muster_cli::slo(&conn, json).await,
        Command::Costs { by, since, json } => muster_cli::costs(&conn, &by, since, json).await,
        Command::Breakers { json } => muster_cli::breakers(&conn, json).await,
        Command::Runner { cmd } => muster_cli::runner(&conn, cmd).await,
        Command::Decisions { all, task, json } => muster_cli::decisions(&conn, all, task, json).await,
        Command::Decide { id, option, note, json } => muster_cli::decide(&conn, &id, option, note, json).await,
        Command::Decision { cmd } => muster_cli::decision(&conn, cmd).await,
        Command::Pipeline { cmd } => muster_cli::pipeline(&conn, cmd).await,
        Command::Msg { cmd } => muster_cli::msg(&conn, cmd).await,
        Command::Channel { cmd } => muster_cli::channel(&conn, cmd).await,
        Command::Schedule { cmd } => muster_cli::schedule(&conn, cmd).await,
        Command::Regressions { json } => muster_cli::regressions(&conn, json).await,
        Command::Conflicts { open, json } => muster_cli::conflicts(&conn, open, json).await,
        Command::Locks { json } => muster_cli::locks(&conn, json).await,
        Command::Unlock { name, all, yes } => muster_cli::unlock(&conn, name, all, yes).await,
        Command::Deadlocks { json } => muster_cli::deadlocks(&conn, json).await,
        Command::Approve { id, json } => muster_cli::approve(&conn, &id, json).await,
        Command::Ctl { cmd } => muster_cli::ctl(cmd).await,
        Command::Mcp => muster_cli::mcp::serve().await,
        Command::Reject { id, reason, json } => muster_cli::reject(&conn, &id, reason, json).await,
        Command::Shadow { cmd } => muster_cli::shadow(&conn, cmd).await,
        Command::Breaker { cmd } => muster_cli::breaker(&conn, cmd).await,
        Command::Pause => muster_cli::dispatch(&conn, true).await,
        Command::Resume => muster_cli::dispatch(&conn, false).await,
        Command::Agent(AgentCmd::Token { name, json }) => muster_cli::agent_token(&conn, &name, json).await,
        Command::Task(cmd) => muster_cli::task(&conn, cmd).await,
        Command::Token(cmd) => muster_cli::token(&conn, cmd).await,
        Command::Status { json } => muster_cli::status(&conn, json).await,
        Command::Events(args) => muster_cli::events(&conn, args).await,
        Command::Backup { cmd, json } => muster_cli::backup(&conn, cmd, json).await,
        Command::Alerts { cmd, json } => muster_cli::alerts(&conn, cmd, json).await,
        Command::Check { repair, json } => muster_cli::check(&conn, repair, json).await,
        Command::Config { cmd, json } => muster_cli::config(&conn, cmd, json).await,
        Command::Compact { json } => muster_cli::compact(&conn, json).await,
        Command::Db { json } => muster_cli::db(&conn, json).await,
        Command::Restore { file } => return report(serve::restore(&conn, &file)),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            say!("muster: {}", e.message);
            e.code
        }
    }
}

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
