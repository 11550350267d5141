//! Operator commands, each a plain function that speaks to a hub over HTTP.
//!
//! Data goes to stdout (tables for people, `--json` for scripts), messages
//! to stderr. Failures carry an exit code from [`exit`].

mod client;
mod commands;
mod explain;
pub mod mcp;
mod table;

pub use client::{CliError, Client};
pub use commands::*;

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
