//! A task's git worktree: made before its run from the repository the task
//! names, on branch `muster/<task-id>`, and afterwards read for what
//! changed (commits, files, a diff stat and the diff), committed when the
//! task asks, and removed or kept by the task's policy.
//!
//! A task names its repository by a name the agent's config maps to a
//! path, or by a path relative to the agent's repository root. The path is
//! resolved with symlinks followed and must stay under that root: no `..`,
//! no absolute paths, no symlink that leads out.

use crate::process::ProcessGroup;
use muster_core::Keep;
use muster_proto::api::WorkspaceView;
use muster_proto::ws::WorkspaceReport;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Longest a single git command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes of diff sent to the hub; the hub keeps as much.
pub const MAX_DIFF_BYTES: usize = 1 << 20;
/// Commits listed per run.
const MAX_COMMITS: usize = 1_000;

/// Where an agent finds repositories and makes worktrees.
#[derive(Debug, Clone)]
pub struct Places {
    /// Repository names the agent's config maps to paths.
    pub repos: BTreeMap<String, PathBuf>,
    /// Paths a task gives are resolved under this directory.
    pub repos_root: PathBuf,
    /// Worktrees are made under this directory.
    pub worktrees: PathBuf,
}

/// A worktree ready for a run.
#[derive(Debug)]
pub struct Prepared {
    pub dir: PathBuf,
    repo: PathBuf,
    branch: String,
    base: String,
}

/// The repository a task names, as a directory on this machine.
pub fn resolve(places: &Places, repo: &str) -> Result<PathBuf, String> {
    if let Some(path) = places.repos.get(repo) {
        return Ok(path.clone());
    }
    let rel = Path::new(repo);
    if !rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("repository {repo:?} must be a configured name or a plain relative path"));
    }
    let root = places
        .repos_root
        .canonicalize()
        .map_err(|e| format!("the repository root {} is not usable: {e}", places.repos_root.display()))?;
    let full = root.join(rel).canonicalize().map_err(|_| {
        let names: Vec<&str> = places.repos.keys().map(String::as_str).collect();
        format!(
            "no repository {repo:?}: not a name this agent maps ({}) and not a directory under {}",
            if names.is_empty() { "it maps none".to_owned() } else { names.join(", ") },
            root.display()
        )
    })?;
    if !full.starts_with(&root) {
        return Err(format!("repository {repo:?} leads outside {} (through a symlink)", root.display()));
    }
    Ok(full)
}

/// Makes the worktree for one attempt of `task`.
pub async fn prepare(places: &Places, task: &str, epoch: u64, spec: &WorkspaceView) -> Result<Prepared, String> {
    let workspace = spec.to_workspace().map_err(|e| e.to_string())?;
    let repo = resolve(places, &workspace.repo)?;
    let base_ref = workspace.base.as_deref().unwrap_or("HEAD");
    let base = git(&repo, &["rev-parse", "--verify", "--quiet", &format!("{base_ref}^{{commit}}")])
        .await
        .map_err(|e| format!("base {base_ref:?} is not a commit in {}: {e}", repo.display()))?
        .trim()
        .to_owned();
    let branch = format!("muster/{task}");
    release_branch(&repo, &branch).await?;
    std::fs::create_dir_all(&places.worktrees)
        .map_err(|e| format!("cannot create {}: {e}", places.worktrees.display()))?;
    let dir = places.worktrees.join(format!("{task}-{epoch}"));
    if dir.exists() {
        // Left by an earlier run of this very attempt (the agent restarted).
        let _ = git(&repo, &["worktree", "remove", "--force", &path_arg(&dir)]).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    git(&repo, &["worktree", "add", "--quiet", "-B", &branch, &path_arg(&dir), &base])
        .await
        .map_err(|e| format!("cannot make a worktree of {}: {e}", repo.display()))?;
    Ok(Prepared { dir, repo, branch, base })
}

/// A branch is checked out in one worktree at a time: an earlier attempt's
/// worktree, kept for inspection, lets go of it (its files stay).
async fn release_branch(repo: &Path, branch: &str) -> Result<(), String> {
    let list = git(repo, &["worktree", "list", "--porcelain"])
        .await
        .map_err(|e| format!("{} is not a git repository this agent can use: {e}", repo.display()))?;
    let wanted = format!("branch refs/heads/{branch}");
    let mut current: Option<&str> = None;
    for line in list.lines() {
        if let Some(path) = line.strip_prefix("worktree ") {
            current = Some(path);
        } else if line == wanted
            && let Some(path) = current
        {
            if Path::new(path).exists() {
                git(Path::new(path), &["checkout", "--quiet", "--detach"])
                    .await
                    .map_err(|e| format!("cannot free branch {branch} from {path}: {e}"))?;
            } else {
                let _ = git(repo, &["worktree", "prune"]).await;
            }
        }
    }
    Ok(())
}

/// Reads what the run changed, commits it when asked, and removes or
/// keeps the worktree.
pub async fn conclude(
    p: &Prepared,
    spec: &WorkspaceView,
    task: &str,
    prompt: &str,
    succeeded: bool,
) -> WorkspaceReport {
    let mut report = WorkspaceReport {
        repo: p.repo.display().to_string(),
        branch: p.branch.clone(),
        base: p.base.clone(),
        ..WorkspaceReport::default()
    };
    if let Err(e) = inspect(p, spec, task, prompt, &mut report).await {
        report.error = Some(e);
    }
    let keep = Keep::parse(&spec.keep_worktree).unwrap_or_default();
    if keep.keeps(succeeded) {
        report.kept_at = Some(p.dir.display().to_string());
    } else if let Err(e) = git(&p.repo, &["worktree", "remove", "--force", &path_arg(&p.dir)]).await {
        report.kept_at = Some(p.dir.display().to_string());
        report.error.get_or_insert(format!("cannot remove the worktree: {e}"));
    }
    report
}

async fn inspect(
    p: &Prepared,
    spec: &WorkspaceView,
    task: &str,
    prompt: &str,
    report: &mut WorkspaceReport,
) -> Result<(), String> {
    let dir = &p.dir;
    if spec.auto_commit {
        git(dir, &["add", "--all"]).await?;
        if git(dir, &["diff", "--cached", "--quiet"]).await.is_err() {
            let subject = prompt.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            let subject: String = subject.chars().take(60).collect();
            let message = format!("muster {task}: {subject}");
            let mut args: Vec<&str> = Vec::new();
            let has_identity = git(dir, &["config", "user.email"]).await.is_ok_and(|e| !e.trim().is_empty());
            if !has_identity {
                args.extend(["-c", "user.name=Muster", "-c", "user.email=muster@localhost"]);
            }
            args.extend(["commit", "--quiet", "--no-verify", "-m", &message]);
            git(dir, &args).await?;
        }
    } else {
        // Untracked files show in the diff without being committed.
        git(dir, &["add", "--all", "--intent-to-add"]).await?;
    }
    report.head = Some(git(dir, &["rev-parse", "HEAD"]).await?.trim().to_owned());
    let range = format!("{}..HEAD", p.base);
    let log =
        git(dir, &["log", "--reverse", "--format=%H%x09%s", &format!("--max-count={MAX_COMMITS}"), &range]).await?;
    report.commits = log
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(sha, subject)| (sha.to_owned(), subject.to_owned())))
        .collect();
    let names = git(dir, &["diff", "--name-status", &p.base]).await?;
    report.files = names
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(status, path)| (status.to_owned(), path.replace('\t', " -> "))))
        .collect();
    report.stat = git(dir, &["diff", "--stat", &p.base]).await?;
    let (diff, truncated) = git_capped(dir, &["diff", &p.base], MAX_DIFF_BYTES).await?;
    report.diff = diff;
    report.diff_truncated = truncated;
    Ok(())
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// Runs git in `dir`; its standard output, or why it failed.
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    git_capped(dir, args, 16 << 20).await.map(|(out, _)| out)
}

/// Like `git`, keeping at most `cap` bytes of output (and saying so).
async fn git_capped(dir: &Path, args: &[&str], cap: usize) -> Result<(String, bool), String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C").arg(dir).args(args).env_clear().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for name in ["PATH", "HOME", "USER", "TMPDIR"] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0").env("LC_ALL", "C");
    let what = format!("git {}", args.first().copied().unwrap_or_default());
    let mut group = ProcessGroup::spawn(&mut cmd).map_err(|e| format!("cannot run git: {e}"))?;
    let (Some(mut out), Some(mut err)) = (group.child_mut().stdout.take(), group.child_mut().stderr.take()) else {
        return Err("git has no pipes".into());
    };
    let run = async {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let read_out = async {
            let mut buf = vec![0u8; 64 << 10];
            let mut truncated = false;
            loop {
                match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = cap.saturating_sub(stdout.len());
                        stdout.extend_from_slice(&buf[..n.min(room)]);
                        truncated |= n > room;
                    }
                }
            }
            truncated
        };
        let read_err = async {
            let _ = (&mut err).take(64 << 10).read_to_end(&mut stderr).await;
        };
        let (truncated, ()) = tokio::join!(read_out, read_err);
        let status = group.wait().await;
        (stdout, stderr, truncated, status)
    };
    match tokio::time::timeout(GIT_TIMEOUT, run).await {
        Ok((out, _, truncated, Ok(status))) if status.success() => {
            let mut text = String::from_utf8_lossy(&out).into_owned();
            if truncated {
                // Cut on a line, so a diff never ends mid-line.
                if let Some(end) = text.rfind('\n') {
                    text.truncate(end + 1);
                }
            }
            Ok((text, truncated))
        }
        Ok((_, err, _, Ok(status))) => {
            let err = String::from_utf8_lossy(&err);
            let err = err.trim();
            Err(if err.is_empty() { format!("{what} exited with {status}") } else { format!("{what}: {err}") })
        }
        Ok((_, _, _, Err(e))) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what} took longer than {GIT_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(root: &Path) -> Places {
        let mut repos = BTreeMap::new();
        repos.insert("mapped".to_owned(), PathBuf::from("/srv/elsewhere"));
        Places { repos, repos_root: root.to_owned(), worktrees: root.join("worktrees") }
    }

    #[test]
    fn a_task_path_never_leaves_the_repository_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("team/web")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("sneaky")).unwrap();
        let p = places(root.path());

        assert_eq!(resolve(&p, "mapped").unwrap(), PathBuf::from("/srv/elsewhere"), "a configured name is trusted");
        let web = resolve(&p, "team/web").unwrap();
        assert!(web.starts_with(root.path().canonicalize().unwrap()));
        for (repo, needle) in [
            ("../x", "plain relative path"),
            ("/etc", "plain relative path"),
            ("team/../../x", "plain relative path"),
            ("sneaky", "leads outside"),
            ("missing", "no repository \"missing\""),
        ] {
            let err = resolve(&p, repo).expect_err(repo);
            assert!(err.contains(needle), "{repo}: {err}");
        }
    }
}
