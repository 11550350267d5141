//! Where a task runs: a git worktree of a repository on the agent's machine,
//! on a branch of the task's own.

use crate::{Invalid, TaskId};

/// Longest repository name or path a task may give, in bytes.
pub const MAX_REPO_BYTES: usize = 1024;
/// Longest base ref, in bytes.
pub const MAX_REF_BYTES: usize = 256;

/// What to do with a worktree once its run has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// Keep it when the run failed, for inspection; remove it otherwise.
    #[default]
    OnFailure,
    Always,
    Never,
}

impl Keep {
    pub const ALL: [Keep; 3] = [Keep::OnFailure, Keep::Always, Keep::Never];

    pub fn as_str(self) -> &'static str {
        match self {
            Keep::OnFailure => "on_failure",
            Keep::Always => "always",
            Keep::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Result<Keep, Invalid> {
        let s = s.replace('-', "_");
        Keep::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            Invalid::new("keep_worktree", format!("unknown policy {s:?}; expected on_failure, always or never"))
        })
    }

    /// Whether a worktree whose run ended so stays.
    pub fn keeps(self, succeeded: bool) -> bool {
        match self {
            Keep::OnFailure => !succeeded,
            Keep::Always => true,
            Keep::Never => false,
        }
    }
}

/// A task's workspace, as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// A name the agent's config maps to a repository, or a path relative to
    /// the agent's repository root.
    pub repo: String,
    /// The ref the worktree starts from; the repository's `HEAD` when absent.
    pub base: Option<String>,
    /// Commit what the agent left uncommitted, on the task's branch.
    pub auto_commit: bool,
    pub keep: Keep,
}

impl Workspace {
    /// Checks what can be checked without the agent's machine: the agent
    /// resolves the name and confines the path to its root.
    pub fn validate(&self) -> Result<(), Invalid> {
        let repo = &self.repo;
        if repo.is_empty() || repo.len() > MAX_REPO_BYTES {
            return Err(Invalid::new("repo", format!("must be 1 to {MAX_REPO_BYTES} bytes")));
        }
        if repo.chars().any(char::is_control) {
            return Err(Invalid::new("repo", "must not contain control characters"));
        }
        if repo.starts_with('/') {
            return Err(Invalid::new(
                "repo",
                "must be a name the agent maps to a repository, or a path relative to its repository root, \
                 not an absolute path",
            ));
        }
        if repo.split('/').any(|part| part == "..") {
            return Err(Invalid::new("repo", "must not contain `..`"));
        }
        if let Some(base) = &self.base {
            check_ref(base)?;
        }
        Ok(())
    }
}

/// A ref a task may name as its base: what `git check-ref-format` allows,
/// and never something git could take for an option.
fn check_ref(r: &str) -> Result<(), Invalid> {
    let bad = |why: &str| Err(Invalid::new("base", format!("{r:?} is not a usable git ref: {why}")));
    if r.is_empty() || r.len() > MAX_REF_BYTES {
        return bad(&format!("it must be 1 to {MAX_REF_BYTES} bytes"));
    }
    if r.starts_with('-') {
        return bad("it starts with `-`");
    }
    if r.chars().any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c)) {
        return bad("it holds a space, a control character or one of ~^:?*[\\");
    }
    if r.contains("..") || r.contains("@{") || r.contains("//") {
        return bad("it holds `..`, `@{` or `//`");
    }
    if r.ends_with('/') || r.ends_with('.') || r.ends_with(".lock") || r.starts_with('/') || r == "@" {
        return bad("it begins or ends in a way git refuses");
    }
    Ok(())
}

/// The branch a task's worktree is on.
pub fn branch(task: &TaskId) -> String {
    format!("muster/{task}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(repo: &str, base: Option<&str>) -> Workspace {
        Workspace { repo: repo.into(), base: base.map(Into::into), auto_commit: false, keep: Keep::default() }
    }

    #[test]
    fn repos_and_refs_that_could_escape_or_inject_are_refused() {
        assert!(ws("web", None).validate().is_ok());
        assert!(ws("team/web", Some("origin/main")).validate().is_ok());
        assert!(ws("web", Some("v1.2.3")).validate().is_ok());
        assert!(ws("web", Some("a1b2c3d")).validate().is_ok());
        for (repo, base, field) in [
            ("", None, "repo"),
            ("/etc", None, "repo"),
            ("../outside", None, "repo"),
            ("a/../../b", None, "repo"),
            ("we\nb", None, "repo"),
            ("web", Some("--upload-pack=evil"), "base"),
            ("web", Some("main..dev"), "base"),
            ("web", Some("has space"), "base"),
            ("web", Some("head@{1}"), "base"),
            ("web", Some("refs/heads/x.lock"), "base"),
            ("web", Some(""), "base"),
        ] {
            let err = ws(repo, base).validate().expect_err(&format!("{repo:?} {base:?} must be refused"));
            assert_eq!(err.field, field, "{repo:?} {base:?}: {err}");
        }
    }

    #[test]
    fn keep_policies_parse_and_decide() {
        assert_eq!(Keep::parse("on-failure").unwrap(), Keep::OnFailure);
        assert_eq!(Keep::parse("always").unwrap(), Keep::Always);
        assert!(Keep::parse("sometimes").is_err());
        assert!(Keep::OnFailure.keeps(false) && !Keep::OnFailure.keeps(true));
        assert!(Keep::Always.keeps(true) && !Keep::Never.keeps(false));
    }
}
