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
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dir: PathBuf,
    repo: PathBuf,
    /// The worktree's own git directory, read before the run: afterwards the
    /// run may have rewritten the worktree's `.git` file, so it is not asked.
    git_dir: PathBuf,
    branch: String,
    base: String,
    /// Used for the snapshot ref of uncommitted changes.
    task: String,
    epoch: u64,
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
    let git_dir = PathBuf::from(
        git(&dir, &["rev-parse", "--absolute-git-dir"])
            .await
            .map_err(|e| format!("cannot read the new worktree {}: {e}", dir.display()))?
            .trim(),
    );
    Ok(Prepared { dir, repo, git_dir, branch, base, task: task.to_owned(), epoch })
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
            let admin = admin_dir(repo, Path::new(path)).await;
            match admin {
                Some(admin) if Path::new(path).exists() => {
                    Git::pinned(&admin, Path::new(path))
                        .run(&["checkout", "--quiet", "--detach"])
                        .await
                        .map_err(|e| format!("cannot free branch {branch} from {path}: {e}"))?;
                }
                _ => {
                    let _ = git(repo, &["worktree", "prune"]).await;
                }
            }
        }
    }
    Ok(())
}

/// The git directory of `repo`'s linked worktree at `path`, found from the
/// repository's side (`<common>/worktrees/*/gitdir`), never from the
/// worktree's own `.git` file, which a run could have rewritten.
async fn admin_dir(repo: &Path, path: &Path) -> Option<PathBuf> {
    let common = git(repo, &["rev-parse", "--path-format=absolute", "--git-common-dir"]).await.ok()?;
    let expected = path.join(".git");
    let entries = std::fs::read_dir(Path::new(common.trim()).join("worktrees")).ok()?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|admin| std::fs::read_to_string(admin.join("gitdir")).is_ok_and(|g| Path::new(g.trim()) == expected))
}

/// Reads what the run changed, commits it when asked, and removes or
/// keeps the worktree.
pub async fn conclude(p: &Prepared, spec: &WorkspaceView, prompt: &str, succeeded: bool) -> WorkspaceReport {
    let mut report = WorkspaceReport {
        repo: p.repo.display().to_string(),
        branch: p.branch.clone(),
        base: p.base.clone(),
        ..WorkspaceReport::default()
    };
    if let Err(e) = inspect(p, spec, prompt, &mut report).await {
        report.error = Some(e);
    }
    fit(&mut report);
    let keep = Keep::parse(&spec.keep_worktree).unwrap_or_default();
    if keep.keeps(succeeded) {
        report.kept_at = Some(p.dir.display().to_string());
    } else if let Err(e) = git(&p.repo, &["worktree", "remove", "--force", &path_arg(&p.dir)]).await {
        report.kept_at = Some(p.dir.display().to_string());
        report.error.get_or_insert(format!("cannot remove the worktree: {e}"));
    }
    report
}

/// Most paths one changed-files report carries.
pub const MAX_CHANGED_FILES: usize = 2000;

/// The files the run has changed so far against the base, committed or not,
/// untracked ones too, sorted; read without touching the worktree's index.
pub async fn changed_now(p: &Prepared) -> Result<Vec<String>, String> {
    let g = Git::pinned(&p.git_dir, &p.dir);
    let tracked = g.run(&["diff", "--name-only", "--no-renames", "-z", &p.base]).await?;
    let untracked = g.run(&["ls-files", "--others", "--exclude-standard", "-z"]).await?;
    let mut files: Vec<String> =
        tracked.split('\0').chain(untracked.split('\0')).filter(|f| !f.is_empty()).map(str::to_owned).collect();
    files.sort();
    files.dedup();
    files.truncate(MAX_CHANGED_FILES);
    Ok(files)
}

/// Git's identity for commits Muster makes, unless the repository has one.
async fn identity(g: &Git<'_>) -> Vec<&'static str> {
    if g.run(&["config", "user.email"]).await.is_ok_and(|e| !e.trim().is_empty()) {
        Vec::new()
    } else {
        vec!["-c", "user.name=Muster", "-c", "user.email=muster@localhost"]
    }
}

async fn inspect(p: &Prepared, spec: &WorkspaceView, prompt: &str, report: &mut WorkspaceReport) -> Result<(), String> {
    let g = Git::pinned(&p.git_dir, &p.dir);
    // Everything the run left, untracked files too, in the worktree's own index.
    g.run(&["add", "--all"]).await?;
    let changed = g.run(&["diff", "--cached", "--quiet", "--no-ext-diff"]).await.is_err();
    if changed && spec.auto_commit {
        let subject = prompt.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let subject: String = subject.chars().take(60).collect();
        let message = format!("muster {}: {subject}", p.task);
        let mut args = identity(&g).await;
        args.extend(["commit", "--quiet", "--no-verify", "-m", &message]);
        g.run(&args).await?;
    }
    let head = g.run(&["rev-parse", "HEAD"]).await?.trim().to_owned();
    // What the run left uncommitted is kept too, as a commit on a ref of its
    // own, so removing the worktree never loses work.
    let mut target = head.clone();
    if changed && !spec.auto_commit {
        let tree = g.run(&["write-tree"]).await?.trim().to_owned();
        let message = format!("muster {} attempt {}: the worktree as the run left it, not committed", p.task, p.epoch);
        let mut args = identity(&g).await;
        args.extend(["commit-tree", &tree, "-p", &head, "-m", &message]);
        let snapshot = g.run(&args).await?.trim().to_owned();
        let name = format!("refs/muster/{}/{}", p.task, p.epoch);
        g.run(&["update-ref", &name, &snapshot]).await?;
        report.snapshot = Some(name);
        target = snapshot;
    }
    report.head = Some(head);
    let range = format!("{}..HEAD", p.base);
    let log = g.run(&["log", "--reverse", "--format=%H%x09%s", &format!("--max-count={MAX_COMMITS}"), &range]).await?;
    report.commits = log
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(sha, subject)| (sha.to_owned(), clip(subject, MAX_LINE_CHARS))))
        .collect();
    let diff_args = |extra: &'static [&'static str]| {
        let mut a = vec!["diff", "--no-ext-diff", "--no-textconv"];
        a.extend_from_slice(extra);
        a
    };
    let mut names = diff_args(&["--name-status"]);
    names.extend([p.base.as_str(), target.as_str()]);
    let listed = g.run(&names).await?;
    let all: Vec<(String, String)> = listed
        .lines()
        .filter_map(|l| {
            l.split_once('\t')
                .map(|(status, path)| (clip(status, 8), clip(&path.replace('\t', " -> "), MAX_LINE_CHARS)))
        })
        .collect();
    if all.len() > MAX_FILES {
        report.error = Some(format!("{} files changed; the first {MAX_FILES} are listed", all.len()));
    }
    report.files = all.into_iter().take(MAX_FILES).collect();
    let mut stat = diff_args(&["--stat"]);
    stat.extend([p.base.as_str(), target.as_str()]);
    report.stat = g.capped(&stat, MAX_STAT_BYTES).await?.0;
    let mut diff = diff_args(&[]);
    diff.extend([p.base.as_str(), target.as_str()]);
    let (text, truncated) = g.capped(&diff, MAX_DIFF_BYTES).await?;
    report.diff = text;
    report.diff_truncated = truncated;
    Ok(())
}

/// Characters kept of a commit subject or a path.
const MAX_LINE_CHARS: usize = 1_000;
/// Files listed per run.
const MAX_FILES: usize = 1_000;
const MAX_STAT_BYTES: usize = 64 << 10;
/// What a report may take once serialized: well inside the hub's frame limit.
const MAX_REPORT_JSON: usize = 4 << 20;

/// Shrinks the diff until the report fits in a message.
fn fit(report: &mut WorkspaceReport) {
    while serde_json::to_string(report).map_or(0, |j| j.len()) > MAX_REPORT_JSON && !report.diff.is_empty() {
        let mut cut = report.diff.len() / 2;
        while !report.diff.is_char_boundary(cut) {
            cut -= 1;
        }
        let cut = report.diff[..cut].rfind('\n').map_or(0, |i| i + 1);
        report.diff.truncate(cut);
        report.diff_truncated = true;
    }
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// Runs git in `dir`; its standard output, or why it failed.
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    Git { dir, pinned: None }.run(args).await
}

/// How git is run: in a directory, and for a worktree a run has used, with
/// its git directory pinned so nothing the run wrote can redirect git.
struct Git<'a> {
    dir: &'a Path,
    /// `GIT_DIR`, with `dir` as `GIT_WORK_TREE`.
    pinned: Option<&'a Path>,
}

impl<'a> Git<'a> {
    fn pinned(git_dir: &'a Path, work_tree: &'a Path) -> Git<'a> {
        Git { dir: work_tree, pinned: Some(git_dir) }
    }

    async fn run(&self, args: &[&str]) -> Result<String, String> {
        self.capped(args, 16 << 20).await.map(|(out, _)| out)
    }

    /// Like `run`, keeping at most `cap` bytes of output (and saying so).
    async fn capped(&self, args: &[&str], cap: usize) -> Result<(String, bool), String> {
        git_capped(self.dir, self.pinned, args, cap).await
    }
}

/// Hooks and file-system monitors never run: a run could have planted them.
const SAFE: &[&str] = &["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"];

async fn git_capped(dir: &Path, pinned: Option<&Path>, args: &[&str], cap: usize) -> Result<(String, bool), String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(SAFE).arg("-C").arg(dir).args(args).env_clear();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for name in ["PATH", "HOME", "USER", "TMPDIR"] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    if let Some(git_dir) = pinned {
        cmd.env("GIT_DIR", git_dir).env("GIT_WORK_TREE", dir);
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
