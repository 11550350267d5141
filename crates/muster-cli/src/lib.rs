//! Operator commands, each a plain function that speaks to a hub over HTTP.
//!
//! One module per noun holds that noun's clap types beside the functions
//! that run them; [`Command`] gathers them for the binary, which adds its
//! own commands (`up`, `hub`, `agent run`, …) around them, and [`run`]
//! dispatches one.
//!
//! Data goes to stdout (tables for people, `--json` for scripts), messages
//! to stderr. Failures carry an exit code from [`exit`].

mod client;
mod explain;
mod output;
mod table;

pub mod agent;
pub mod alerts;
pub mod backup;
pub mod breaker;
pub mod config;
pub mod conflict;
pub mod costs;
pub mod ctl;
pub mod db;
pub mod decision;
pub mod dispatch;
pub mod events;
pub mod lock;
pub mod mcp;
pub mod message;
pub mod pipeline;
pub mod regression;
pub mod runner;
pub mod schedule;
pub mod shadow;
pub mod status;
pub mod task;
pub mod token;

pub use client::{CliError, CliResult, Client, ConnArgs, DEFAULT_DATA_DIR, DEFAULT_URL};

use clap::Subcommand;

/// Documented exit codes.
pub mod exit {
    pub const OK: i32 = 0;
    /// Something failed that is not one of the cases below.
    pub const FAILURE: i32 = 1;
    /// The command line or the input was invalid (also clap's usage errors).
    pub const USAGE: i32 = 2;
    /// The task, agent or token does not exist.
    pub const NOT_FOUND: i32 = 3;
    /// The request conflicts with the current state (e.g. retrying a task that did not fail).
    pub const CONFLICT: i32 = 4;
    /// The token is missing, invalid, revoked, or lacks the scope.
    pub const AUTH: i32 = 5;
    /// The hub could not be reached.
    pub const UNREACHABLE: i32 = 6;
    /// `task wait` saw the task end in a state other than succeeded.
    pub const TASK_FAILED: i32 = 7;
    /// `ctl lock` was refused: waiting would have closed a deadlock.
    pub const DEADLOCK: i32 = 8;
    /// `ctl ask`: nobody answered in time and there was no default; the task fails.
    pub const DECISION_TIMEOUT: i32 = 9;
    /// The hub refused the request for a rate limit (429); the message says when to try again.
    pub const RATE_LIMITED: i32 = 10;
}

/// The operator commands, in the order `muster --help` lists them. The
/// binary flattens them into its own command line, after its `up`, `hub`,
/// `bench` and `agent`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue, inspect, cancel and retry tasks.
    #[command(subcommand)]
    Task(task::TaskCmd),
    /// List and revoke API tokens.
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// The hub's state at a glance.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The timeline of task and agent changes.
    Events(events::EventsArgs),
    /// Back up the database now (online, verified), or list backups.
    Backup {
        #[command(subcommand)]
        cmd: Option<backup::BackupCmd>,
        #[arg(long)]
        json: bool,
    },
    /// Alert rules and their state; `alerts ack RULE` acknowledges one.
    Alerts {
        #[command(subcommand)]
        cmd: Option<alerts::AlertsCmd>,
        #[arg(long)]
        json: bool,
    },
    /// Runtime settings: show them, or change them without a restart.
    Config {
        #[command(subcommand)]
        cmd: Option<config::ConfigCmd>,
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
        cmd: ctl::CtlCmd,
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
        cmd: decision::DecisionCmd,
    },
    /// Pipelines of stages from a YAML file: `pipeline run FILE [--var K=V]`, `pipeline show ID`, `pipeline list`.
    Pipeline {
        #[command(subcommand)]
        cmd: pipeline::PipelineCmd,
    },
    /// Messages to an agent's or a task's mailbox: `msg send --to agent:NAME|task:ID TEXT`, `msg read --to …`.
    Msg {
        #[command(subcommand)]
        cmd: message::MsgCmd,
    },
    /// Channels: named topics with history and threads (`channel create|list|post|tail`).
    Channel {
        #[command(subcommand)]
        cmd: message::ChannelCmd,
    },
    /// Cron schedules that create tasks: `schedule add NAME --cron …`, `list`, `show`, `pause`, `resume`, `delete`.
    Schedule {
        #[command(subcommand)]
        cmd: schedule::ScheduleCmd,
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
        cmd: runner::RunnerCmd,
    },
    /// Shadow mode: run tasks on another runner too and compare (`shadow set|clear|list|report`).
    Shadow {
        #[command(subcommand)]
        cmd: shadow::ShadowCmd,
    },
    /// Circuit breakers of agents and runners: open after failures in a row, half-open after a cooldown.
    Breakers {
        #[arg(long)]
        json: bool,
    },
    /// Act on one circuit breaker: `breaker reset NAME`.
    Breaker {
        #[command(subcommand)]
        cmd: breaker::BreakerCmd,
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
    /// Check the database and Muster's invariants; --repair fixes what it can.
    Check {
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Runs one operator command against the hub `conn` names (`ctl` and `mcp`
/// use the run's own task token instead).
pub async fn run(conn: &ConnArgs, command: Command) -> CliResult {
    match command {
        Command::Task(cmd) => task::run(conn, cmd).await,
        Command::Token(cmd) => token::run(conn, cmd).await,
        Command::Status { json } => status::status(conn, json).await,
        Command::Events(args) => events::run(conn, args).await,
        Command::Backup { cmd, json } => backup::run(conn, cmd, json).await,
        Command::Alerts { cmd, json } => alerts::run(conn, cmd, json).await,
        Command::Config { cmd, json } => config::run(conn, cmd, json).await,
        Command::Compact { json } => db::compact(conn, json).await,
        Command::Db { json } => db::show(conn, json).await,
        Command::Metrics { json } => status::metrics(conn, json).await,
        Command::Pause => dispatch::pause(conn, true).await,
        Command::Resume => dispatch::pause(conn, false).await,
        Command::Slo { json } => status::slo(conn, json).await,
        Command::Ctl { cmd } => ctl::run(cmd).await,
        Command::Decisions { all, task, json } => decision::list(conn, all, task, json).await,
        Command::Decide { id, option, note, json } => decision::decide(conn, &id, option, note, json).await,
        Command::Decision { cmd } => decision::run(conn, cmd).await,
        Command::Pipeline { cmd } => pipeline::run(conn, cmd).await,
        Command::Msg { cmd } => message::msg(conn, cmd).await,
        Command::Channel { cmd } => message::channel(conn, cmd).await,
        Command::Schedule { cmd } => schedule::run(conn, cmd).await,
        Command::Regressions { json } => regression::list(conn, json).await,
        Command::Conflicts { open, json } => conflict::list(conn, open, json).await,
        Command::Locks { json } => lock::list(conn, json).await,
        Command::Unlock { name, all, yes } => lock::unlock(conn, name, all, yes).await,
        Command::Deadlocks { json } => lock::deadlocks(conn, json).await,
        Command::Mcp => mcp::serve().await,
        Command::Approve { id, json } => task::approve(conn, &id, json).await,
        Command::Reject { id, reason, json } => task::reject(conn, &id, reason, json).await,
        Command::Runner { cmd } => runner::run(conn, cmd).await,
        Command::Shadow { cmd } => shadow::run(conn, cmd).await,
        Command::Breakers { json } => breaker::list(conn, json).await,
        Command::Breaker { cmd } => breaker::run(conn, cmd).await,
        Command::Costs { by, since, json } => costs::run(conn, &by, since, json).await,
        Command::Diagnose { json } => status::diagnose(conn, json).await,
        Command::Check { repair, json } => db::check(conn, repair, json).await,
    }
}
