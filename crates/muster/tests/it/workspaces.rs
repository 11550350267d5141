//! Tasks that run in a git worktree of their own: made from the base the
//! task names on branch `muster/<task-id>`, read afterwards for commits,
//! files and the diff, committed when asked, kept or removed by policy, and
//! never allowed to reach outside the agent's repository root.

use crate::harness::{Agent, AgentOpts, Hub, path_str};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Runs git in `dir` and returns its trimmed output; panics when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository with one commit on `main` (README.md) and a tag `v1`.
pub fn repository(dir: &Path) -> PathBuf {
    let repo = dir.join("web");
    std::fs::create_dir_all(&repo).expect("the repository directory");
    git(&repo, &["init", "--quiet", "--initial-branch", "main"]);
    git(&repo, &["config", "user.name", "Test"]);
    git(&repo, &["config", "user.email", "test@example.com"]);
    std::fs::write(repo.join("README.md"), "# Web\n").expect("README.md written");
    git(&repo, &["add", "README.md"]);
    git(&repo, &["commit", "--quiet", "-m", "first"]);
    git(&repo, &["tag", "v1"]);
    std::fs::write(repo.join("README.md"), "# Web\n\nSecond.\n").expect("README.md written");
    git(&repo, &["commit", "--quiet", "-am", "second"]);
    repo
}

/// An agent whose config maps `web` to `repo`, offering `runners`.
pub async fn agent_with_repo(
    hub: &Hub,
    dir: &Path,
    repo: &Path,
    runners: &[&str],
    env: Vec<(String, String)>,
) -> Agent {
    let toml = format!("repos_root = {:?}\n\n[repos]\nweb = {:?}\n", path_str(dir), path_str(repo));
    hub.agent_with_config("coder", dir, &toml, AgentOpts { runners, env, ..AgentOpts::default() }).await
}

fn worktrees(repo: &Path) -> Vec<String> {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree ").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_runs_in_its_own_worktree_on_its_own_branch_and_its_change_is_kept() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let _agent = agent_with_repo(&hub, dir.path(), &repo, &["shell"], Vec::new()).await;

    let script = "printf '\\n## Notes\\n' >> README.md\necho new > NOTES.md\ngit rev-parse --abbrev-ref HEAD\npwd";
    let id = hub.add_task(json!({ "prompt": script, "runner": "shell", "repo": "web" })).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    let output = hub.output(&id).await;
    assert_eq!(task["state"], "succeeded", "{}\n{output}", task["reason"]);
    let branch = format!("muster/{id}");
    assert!(output.starts_with(&format!("{branch}\n")), "the run is on the task's branch: {output}");
    assert!(!output.contains(&path_str(&repo)), "the run is not in the repository's own tree: {output}");

    let w = &task["attempts_detail"][0]["workspace"];
    assert_eq!((&w["branch"], &w["repo"]), (&json!(branch), &json!(path_str(&repo))), "{w}");
    assert_eq!(w["base"], git(&repo, &["rev-parse", "main"]));
    let files: Vec<(String, String)> = w["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["status"].as_str().unwrap().to_owned(), f["path"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(files, [("A".to_owned(), "NOTES.md".to_owned()), ("M".to_owned(), "README.md".to_owned())]);
    assert_eq!(w["commits"], json!([]), "nothing was committed without auto_commit");
    assert_eq!(w["kept_at"], Value::Null, "a successful run's worktree is removed by default");
    let snapshot = format!("refs/muster/{id}/1");
    assert_eq!(w["snapshot"], snapshot.as_str(), "{w}");
    assert_eq!(git(&repo, &["show", &format!("{snapshot}:NOTES.md")]), "new", "uncommitted work outlives the worktree");
    assert_eq!(worktrees(&repo), [path_str(&repo)], "only the repository's own worktree is left");
    assert_eq!(std::fs::read_to_string(repo.join("README.md")).unwrap(), "# Web\n\nSecond.\n", "main is untouched");

    let (code, diff, err) = hub.cli(&["task", "diff", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(diff.contains(&format!("# attempt 1 on {branch} in {}", path_str(&repo))), "{diff}");
    assert!(diff.contains("+## Notes") && diff.contains("+++ b/NOTES.md"), "{diff}");
    let (_, stat, _) = hub.cli(&["task", "diff", &id, "--stat"]).await;
    assert!(stat.contains("2 files changed"), "{stat}");
    let (_, shown, _) = hub.cli(&["task", "show", &id]).await;
    assert!(shown.contains("workspace     web at HEAD · keep on-failure"), "{shown}");
    assert!(shown.contains(&format!("attempt 1: branch {branch} · 0 commits · 2 files changed")), "{shown}");

    // From a named base, committed on the branch, the worktree kept.
    let id = hub
        .add_task(json!({ "prompt": "echo from v1 > V1.md", "runner": "shell", "repo": "web", "base": "v1",
            "auto_commit": true, "keep_worktree": "always" }))
        .await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    let w = &task["attempts_detail"][0]["workspace"];
    let branch = format!("muster/{id}");
    assert_eq!(w["base"], git(&repo, &["rev-parse", "v1"]), "the worktree starts from the named base");
    assert_eq!(w["commits"].as_array().unwrap().len(), 1, "{w}");
    assert_eq!(w["commits"][0]["subject"], format!("muster {id}: echo from v1 > V1.md"));
    assert_eq!(git(&repo, &["log", "-1", "--format=%s", &branch]), format!("muster {id}: echo from v1 > V1.md"));
    assert_eq!(git(&repo, &["rev-parse", &branch]), w["head"].as_str().unwrap(), "the branch holds the commit");
    let kept = w["kept_at"].as_str().expect("kept").to_owned();
    assert!(Path::new(&kept).join("V1.md").exists(), "the worktree was kept at {kept}");
    assert!(worktrees(&repo).contains(&kept));
    assert_eq!(git(Path::new(&kept), &["status", "--porcelain"]), "", "nothing is left uncommitted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_runs_worktree_is_kept_and_a_retry_starts_afresh_on_the_same_branch() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let _agent = agent_with_repo(&hub, dir.path(), &repo, &["shell"], Vec::new()).await;
    let marker = dir.path().join("failed-once");
    let script = format!(
        "echo attempt >> ATTEMPTS.md\nif [ ! -e {m} ]; then touch {m}; echo broken > BROKEN.md; exit 3; fi",
        m = path_str(&marker)
    );
    let id = hub.add_task(json!({ "prompt": script, "runner": "shell", "repo": "web", "max_attempts": 2 })).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    let attempts = task["attempts_detail"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    let first = &attempts[0]["workspace"];
    let kept = first["kept_at"].as_str().expect("a failed run's worktree is kept").to_owned();
    assert!(Path::new(&kept).join("BROKEN.md").exists(), "kept for inspection: {kept}");
    let second = &attempts[1]["workspace"];
    assert_eq!(second["branch"], format!("muster/{id}"));
    let files: Vec<&str> = second["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(files, ["ATTEMPTS.md"], "the retry starts from the base, not from the failed run's files");

    let (_, diff, _) = hub.cli(&["task", "diff", &id, "--attempt", "1"]).await;
    assert!(diff.contains("BROKEN.md") && diff.contains(&format!("# worktree kept at {kept}")), "{diff}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_outside_the_root_or_unknown_is_refused_with_the_reason() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = repository(outside.path());
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("escape")).unwrap();
    let _agent = agent_with_repo(&hub, dir.path(), &repo, &["shell"], Vec::new()).await;

    for (body, field) in [
        (json!({ "prompt": "true", "runner": "shell", "repo": "../web" }), "repo"),
        (json!({ "prompt": "true", "runner": "shell", "repo": "/etc" }), "repo"),
        (json!({ "prompt": "true", "runner": "shell", "repo": "web", "base": "--upload-pack=x" }), "base"),
        (json!({ "prompt": "true", "runner": "shell", "base": "main" }), "base"),
        (json!({ "prompt": "true", "runner": "shell", "repo": "web", "keep_worktree": "maybe" }), "keep_worktree"),
    ] {
        let (status, answer) = hub.post("/tasks", body.clone()).await;
        assert_eq!((status, answer["field"].as_str()), (400, Some(field)), "{body}: {answer}");
    }
    let (code, _, err) = hub.cli(&["task", "add", "--runner", "shell", "--base", "main", "true"]).await;
    assert_ne!(code, 0, "--base needs --repo");
    assert!(err.contains("--repo"), "{err}");

    for (repo_name, base, reason) in [
        ("escape", None, "leads outside"),
        ("missing", None, "no repository \"missing\": not a name this agent maps (web)"),
        ("web", Some("no-such-ref"), "base \"no-such-ref\" is not a commit"),
    ] {
        let id = hub
            .add_task(json!({ "prompt": "touch PWNED", "runner": "shell", "repo": repo_name, "base": base,
                "max_attempts": 1 }))
            .await;
        let task = hub.wait_state(&id, &["failed"]).await;
        let why = task["reason"].as_str().unwrap_or_default();
        assert!(why.starts_with("workspace: ") && why.contains(reason), "{repo_name}: {why}");
    }
    assert!(!elsewhere.join("PWNED").exists() && !dir.path().join("PWNED").exists(), "no run started");
    let (status, answer) = hub.request(reqwest::Method::GET, "/tasks/t_00000000000000000000000000/diff", None).await;
    assert_eq!(status, 404, "{answer}");
    let plain = hub.shell_task("true").await;
    hub.wait_state(&plain, &["succeeded"]).await;
    let (status, answer) = hub.request(reqwest::Method::GET, &format!("/tasks/{plain}/diff"), None).await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("names no repository"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_too_big_to_send_whole_is_cut_to_fit_and_says_so() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let _agent = agent_with_repo(&hub, dir.path(), &repo, &["shell"], Vec::new()).await;
    // 1,500 files with long names, and a 3 MiB file of text: more than one message may carry.
    let script = "mkdir -p deps\nfor i in $(seq 1 1500); do echo $i > \"deps/$(printf 'x%.0s' $(seq 1 150))-$i.txt\"; done\n\
                  head -c 3000000 /dev/zero | tr '\\0' 'a' | fold -w 100 > big.txt";
    let id = hub.add_task(json!({ "prompt": script, "runner": "shell", "repo": "web", "max_attempts": 1 })).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    let w = &task["attempts_detail"][0]["workspace"];
    assert_eq!(w["files"].as_array().map(Vec::len), Some(1_000), "files are listed up to the limit");
    assert_eq!(w["error"], "1501 files changed; the first 1000 are listed", "{}", w["error"]);
    let (code, diff, err) = hub.cli(&["task", "diff", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(diff.len() < 5 << 20, "the diff was cut: {} bytes", diff.len());
    assert!(
        diff.contains(&format!("refs/muster/{id}/1 in")) && diff.contains("has all of it"),
        "{}",
        &diff[diff.len() - 300..]
    );
    assert_eq!(
        git(&repo, &["show", &format!("refs/muster/{id}/1:big.txt")]).len(),
        3_000_000 + 30_000 - 1,
        "all of it is on the ref"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_the_run_writes_is_redacted_from_its_diff() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let _agent = agent_with_repo(&hub, dir.path(), &repo, &["shell"], Vec::new()).await;
    let id = hub
        .add_task(json!({ "prompt": "printf 'API_KEY=abcdefgh-secret-0123\\nDEBUG=1\\n' > .env", "runner": "shell", "repo": "web" }))
        .await;
    hub.wait_state(&id, &["succeeded"]).await;
    let (code, diff, err) = hub.cli(&["task", "diff", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(diff.contains("+API_KEY=[REDACTED]") && diff.contains("+DEBUG=1"), "{diff}");
    assert!(!diff.contains("abcdefgh-secret-0123"), "{diff}");
}
