//! What commands print besides tables: JSON for scripts, and dollars for people.

use crate::CliError;
use crate::client::CliResult;
use crate::exit;
use muster_core::MicroUsd;

/// A value as pretty JSON on stdout, for `--json`.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> CliResult {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// `$0.012300`, for dollars as the hub serves them.
pub(crate) fn usd(cost: f64) -> String {
    MicroUsd::from_usd(cost).map_or_else(|| format!("${cost}"), |m| m.to_string())
}
