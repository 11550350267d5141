//! Checks: commands a task asks to be run in its workspace after the agent
//! finishes (`cargo test`), written `NAME=COMMAND` or just `COMMAND`.
//!
//! A command is split into arguments the way a shell would split words
//! (quotes and backslashes), and then run as that argument list: no shell
//! ever sees it.

use crate::Invalid;

/// Most checks a task may declare.
pub const MAX_CHECKS: usize = 16;
const MAX_ARG: usize = 4096;
const MAX_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub argv: Vec<String>,
}

fn bad(reason: impl Into<String>) -> Invalid {
    Invalid::new("checks", reason)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits `text` into words: whitespace separates, quotes group, `\` escapes
/// (not inside single quotes).
fn split_words(text: &str) -> Result<Vec<String>, Invalid> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(bad(format!("{text:?}: a ' is not closed"))),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(bad(format!("{text:?}: a \" is not closed"))),
                        },
                        Some(c) => word.push(c),
                        None => return Err(bad(format!("{text:?}: a \" is not closed"))),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(bad(format!("{text:?}: ends with a \\"))),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// One argument, quoted only when it has to be.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c));
    if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', "'\\''")) }
}

impl Check {
    /// `NAME=COMMAND`, or `COMMAND` (named after its program).
    pub fn parse(text: &str) -> Result<Check, Invalid> {
        let text = text.trim();
        let (name, command) = match text.split_once('=') {
            Some((name, rest)) if valid_name(name) => (Some(name.to_owned()), rest),
            _ => (None, text),
        };
        let argv = split_words(command)?;
        let Some(program) = argv.first() else {
            return Err(bad(format!("{text:?}: no command")));
        };
        let name = match name {
            Some(n) => n,
            None => {
                let base = program.rsplit('/').next().unwrap_or(program);
                let joined: String =
                    argv.iter().take(2).map(|a| a.rsplit('/').next().unwrap_or(a)).collect::<Vec<_>>().join("-");
                if valid_name(&joined) {
                    joined
                } else if valid_name(base) {
                    base.to_owned()
                } else {
                    "check".to_owned()
                }
            }
        };
        let check = Check { name, argv };
        check.validate()?;
        Ok(check)
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if !valid_name(&self.name) {
            return Err(bad(format!("check name {:?}: use 1 to {MAX_NAME} letters, digits, -, _ or .", self.name)));
        }
        if self.argv.is_empty() {
            return Err(bad(format!("check {}: no command", self.name)));
        }
        for a in &self.argv {
            if a.len() > MAX_ARG || a.chars().any(char::is_control) {
                return Err(bad(format!(
                    "check {}: an argument is over {MAX_ARG} bytes or holds a control character",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// `NAME=COMMAND`, which `parse` reads back to the same check.
    pub fn to_text(&self) -> String {
        let command: Vec<String> = self.argv.iter().map(|a| quote(a)).collect();
        format!("{}={}", self.name, command.join(" "))
    }
}

/// Checks a task's list whole: at most `MAX_CHECKS`, names unique.
pub fn validate_all(checks: &[Check]) -> Result<(), Invalid> {
    if checks.len() > MAX_CHECKS {
        return Err(bad(format!("at most {MAX_CHECKS} checks")));
    }
    for (i, c) in checks.iter().enumerate() {
        c.validate()?;
        if checks[..i].iter().any(|o| o.name == c.name) {
            return Err(bad(format!("two checks are named {:?}; name them NAME=COMMAND", c.name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_shell_and_read_back_the_same() {
        let c = Check::parse("cargo test --workspace").unwrap();
        assert_eq!(
            (c.name.as_str(), c.argv.clone()),
            ("cargo-test", vec!["cargo".into(), "test".into(), "--workspace".into()])
        );
        let c = Check::parse(r#"lint=sh -c 'echo "a b" && exit 1'"#).unwrap();
        assert_eq!(c.name, "lint");
        assert_eq!(c.argv, ["sh", "-c", r#"echo "a b" && exit 1"#]);
        assert_eq!(Check::parse(&c.to_text()).unwrap(), c);
        let c = Check::parse(r#"./ci/check "two words" it\'s"#).unwrap();
        assert_eq!(c.argv, ["./ci/check", "two words", "it's"]);
        assert_eq!(Check::parse(&c.to_text()).unwrap(), c);
        let c = Check::parse("FOO=1").unwrap();
        assert_eq!((c.name.as_str(), c.argv.clone()), ("FOO", vec!["1".to_owned()]));
    }

    #[test]
    fn bad_checks_are_named() {
        assert!(Check::parse("").unwrap_err().reason.contains("no command"));
        assert!(Check::parse("sh -c 'oops").unwrap_err().reason.contains("not closed"));
        assert!(Check::parse("unit=").unwrap_err().reason.contains("no command"));
        let two = [Check::parse("cargo test").unwrap(), Check::parse("cargo test --lib").unwrap()];
        assert!(validate_all(&two).unwrap_err().reason.contains("two checks are named \"cargo-test\""));
    }
}
