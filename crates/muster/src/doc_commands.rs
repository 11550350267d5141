//! Every `muster` command the README and docs/ quote must parse: an operator
//! who copies one from a runbook must never meet "unexpected argument".
//!
//! Commands are taken from shell code blocks (every line), from other code
//! blocks (lines after a `$ ` prompt, the rest being output), and from inline
//! code spans. Placeholders such as `ID` or `RULE` parse as the values they
//! stand for.

use crate::Cli;
use clap::Parser;
use std::path::{Path, PathBuf};

/// A quoted command and where it was found.
struct Quoted {
    place: String,
    line: String,
    /// Named in prose (an inline code span) rather than shown in full: it
    /// must name real commands and flags, but may leave out required values.
    reference: bool,
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The `muster ...` commands in one shell line: `a | b && c ; d`, with
/// comments, leading `VAR=value` assignments and redirections removed.
fn commands_in(line: &str) -> Vec<String> {
    let line = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    line.split(['|', ';'])
        .flat_map(|part| part.split("&&"))
        .map(|part| {
            let words: Vec<&str> =
                part.split_whitespace().skip_while(|w| w.contains('=') && !w.starts_with('-')).collect();
            let end = words.iter().position(|w| w.starts_with('>') || w.starts_with("2>")).unwrap_or(words.len());
            words[..end].join(" ")
        })
        .filter(|c| c.starts_with("muster "))
        .collect()
}

fn quoted_commands() -> Vec<Quoted> {
    let mut found = Vec::new();
    for path in documents() {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
        let mut fence: Option<String> = None;
        let mut pending = String::new();
        for (n, raw) in text.lines().enumerate() {
            let place = format!("{name}:{}", n + 1);
            let trimmed = raw.trim_start();
            if let Some(info) = trimmed.strip_prefix("```") {
                fence = match fence {
                    Some(_) => None,
                    None => Some(info.trim().to_owned()),
                };
                continue;
            }
            match fence.as_deref() {
                Some(lang @ ("sh" | "bash" | "console" | "text" | "")) => {
                    let shell = lang == "sh" || lang == "bash";
                    let line = match trimmed.strip_prefix("$ ") {
                        Some(after_prompt) => after_prompt,
                        None if shell || !pending.is_empty() => trimmed,
                        None => continue,
                    };
                    // A trailing backslash continues the command on the next line.
                    if let Some(head) = line.strip_suffix('\\') {
                        pending.push_str(head);
                        pending.push(' ');
                        continue;
                    }
                    let whole = std::mem::take(&mut pending) + line;
                    found.extend(commands_in(&whole).into_iter().map(|line| Quoted {
                        place: place.clone(),
                        line,
                        reference: false,
                    }));
                }
                Some(_) => {}
                None => {
                    for (i, span) in raw.split('`').enumerate() {
                        if i % 2 == 1 {
                            found.extend(commands_in(span).into_iter().map(|line| Quoted {
                                place: place.clone(),
                                line,
                                reference: true,
                            }));
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_muster_command_quoted_in_the_docs_parses() {
    let quoted = quoted_commands();
    assert!(quoted.len() > 100, "only {} commands found: is the extraction broken?", quoted.len());
    let mut failures = Vec::new();
    for q in &quoted {
        let Some(words) = shlex::split(&q.line) else {
            failures.push(format!("{}: `{}`: unbalanced quotes", q.place, q.line));
            continue;
        };
        if let Err(e) = Cli::try_parse_from(&words) {
            use clap::error::ErrorKind;
            let named_only = q.reference
                && matches!(
                    e.kind(),
                    ErrorKind::MissingRequiredArgument | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                );
            if !named_only && !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                failures.push(format!("{}: `{}`: {first}", q.place, q.line));
            }
        }
    }
    assert!(failures.is_empty(), "{} quoted commands do not parse:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_extraction_finds_commands_where_runbooks_put_them() {
    assert_eq!(commands_in("muster events --json | jq -c . # all of it"), ["muster events --json"]);
    assert_eq!(commands_in("MUSTER_TOKEN=x muster agent run --slots 2"), ["muster agent run --slots 2"]);
    assert_eq!(commands_in("muster backup >/dev/null && muster check"), ["muster backup", "muster check"]);
    assert!(commands_in("cargo run --release -- up").is_empty());
}
