//! What agents report of a run, and the costs summed from it.

use super::*;

pub async fn finish_keeps_the_agents_report_of_the_run(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let task = submit(s, 1, spec("agentic"), at(0)).await;
    let e = start(s, &a, &task, at(0)).await;
    let report = RunReport {
        session_id: Some("sess-1".into()),
        model: Some("model-x".into()),
        turns: Some(3),
        tokens: Tokens { input: 125, output: 27, cache_read: 1_000, cache_write: 5 },
        cost: Some(MicroUsd(1_040)),
        result: Some("wrote NOTES.md".into()),
        tool_uses: 2,
        tool_errors: 1,
    };
    assert_eq!(report.tokens.total(), 1_157);
    let r = ok(
        "finish_task",
        s.finish_task(&a, &task, e, &SUCCEEDED, details(report.clone()), at(1), Retry::fixed(BACKOFF)).await,
    );
    assert!(matches!(r.1, FinishResult::Applied(Finished::Succeeded)));
    assert_eq!(attempts(s, &task).await[0].report, Some(report.clone()), "the report is kept on the attempt");
    // A resend changes nothing, whatever it carries.
    let other = RunReport { turns: Some(99), ..report.clone() };
    let r =
        ok("finish_task", s.finish_task(&a, &task, e, &SUCCEEDED, details(other), at(2), Retry::fixed(BACKOFF)).await);
    assert_eq!(r.1, FinishResult::Duplicate);
    assert_eq!(attempts(s, &task).await[0].report, Some(report));

    // An attempt without a report says so, rather than claiming zero tokens.
    let plain = submit(s, 2, spec("plain"), at(3)).await;
    let e = start(s, &a, &plain, at(3)).await;
    finish(s, &a, &plain, e, &SUCCEEDED, at(4)).await;
    assert_eq!((&attempts(s, &plain).await[0].report, &attempts(s, &plain).await[0].workspace), (&None, &None));

    // A task in a worktree: its spec keeps the workspace, its attempt what changed.
    let workspace = muster_core::Workspace {
        repo: "web".into(),
        base: Some("origin/main".into()),
        auto_commit: true,
        keep: muster_core::Keep::Always,
    };
    let in_repo = submit(s, 3, TaskSpec { workspace: Some(workspace.clone()), ..spec("edit") }, at(5)).await;
    assert_eq!(get(s, &in_repo).await.spec.workspace, Some(workspace), "the workspace is part of the spec");
    let e = start(s, &a, &in_repo, at(5)).await;
    let changed = WorkspaceRecord {
        repo: "/srv/repos/web".into(),
        branch: format!("muster/{in_repo}"),
        base: "1111111111111111111111111111111111111111".into(),
        head: Some("2222222222222222222222222222222222222222".into()),
        commits: vec![("2222222".into(), "muster: edit\twith a tab".into())],
        files: vec![("A".into(), "NOTES.md".into()), ("M".into(), "src/lib.rs".into())],
        stat: " NOTES.md | 1 +\n 1 file changed".into(),
        diff: "diff --git a/NOTES.md b/NOTES.md\n+hello\n".into(),
        diff_truncated: false,
        kept_at: Some("/srv/work/worktrees/x".into()),
        error: None,
        snapshot: Some("refs/muster/x/1".into()),
    };
    let with =
        RunDetails { workspace: Some(changed.clone()), summary: Some("2 files".into()), ..RunDetails::default() };
    ok("finish_task", s.finish_task(&a, &in_repo, e, &SUCCEEDED, with, at(6), Retry::fixed(BACKOFF)).await);
    let listed = WorkspaceRecord { diff: String::new(), ..changed.clone() };
    assert_eq!(attempts(s, &in_repo).await[0].workspace, Some(listed), "attempts leave the diff out");
    assert_eq!(attempts(s, &in_repo).await[0].summary.as_deref(), Some("2 files"), "a summary is kept");
    assert_eq!(
        ok("attempt_diff", s.attempt_diff(&in_repo, 1).await),
        Some((changed.diff.clone(), false)),
        "the diff is read on its own"
    );
    assert_eq!(ok("attempt_diff", s.attempt_diff(&plain, 1).await), None, "no worktree, no diff");
}

async fn spend(s: &dyn Store, agent: &AgentName, n: u128, runner: &str, cost: Option<u64>, tokens: u64, when: Millis) {
    let id = submit(s, n, TaskSpec { runner: runners(&[runner]).remove(0), ..spec("spend") }, when).await;
    let e = start(s, agent, &id, when).await;
    let report = RunReport {
        tokens: Tokens { input: tokens, output: 1, cache_read: 0, cache_write: 0 },
        cost: cost.map(MicroUsd),
        ..RunReport::default()
    };
    ok("finish_task", s.finish_task(agent, &id, e, &SUCCEEDED, details(report), when, Retry::fixed(BACKOFF)).await);
}

pub async fn costs_are_summed_by_task_agent_runner_and_day(store: Arc<dyn Store>) {
    let s = &*store;
    let a = register(s, "a", &[], days(0)).await;
    connect(s, &a, &["claude", "codex", "shell"], &[], 4, days(0)).await;
    let b = register(s, "b", &[], days(0)).await;
    connect(s, &b, &["claude", "codex", "shell"], &[], 4, days(0)).await;
    spend(s, &a, 1, "claude", Some(1_500_000), 100, days(1)).await;
    spend(s, &a, 2, "claude", Some(500_000), 50, days(2)).await;
    spend(s, &b, 3, "codex", None, 70, days(2)).await;
    spend(s, &b, 4, "claude", Some(250_000), 10, days(2).plus(Duration::from_secs(3600))).await;
    // A run without a report spends nothing that is known.
    let plain = submit(s, 5, spec("plain"), days(2)).await;
    let e = start(s, &a, &plain, days(2)).await;
    finish(s, &a, &plain, e, &SUCCEEDED, days(2)).await;

    let by = |rows: Vec<CostRow>| -> Vec<(String, u64, u64, u64, u64)> {
        rows.into_iter().map(|r| (r.key, r.attempts, r.priced, r.tokens.input, r.cost.0)).collect()
    };
    let (rows, total) = ok("costs", s.costs(CostGroup::Runner, days(0)).await);
    assert_eq!((total.attempts, total.priced, total.tokens.input, total.cost.0), (4, 3, 230, 2_250_000));
    let runner = by(rows);
    assert_eq!(
        runner,
        [("claude".into(), 3, 3, 160, 2_250_000), ("codex".into(), 1, 0, 70, 0)],
        "costliest first; an unpriced run counts its tokens"
    );
    let agent = by(ok("costs", s.costs(CostGroup::Agent, days(0)).await).0);
    assert_eq!(agent, [("a".into(), 2, 2, 150, 2_000_000), ("b".into(), 2, 1, 80, 250_000)]);
    let day = by(ok("costs", s.costs(CostGroup::Day, days(0)).await).0);
    let first = "2023-11-15".to_owned();
    let second = "2023-11-16".to_owned();
    assert_eq!(day, [(first, 1, 1, 100, 1_500_000), (second.clone(), 3, 2, 130, 750_000)], "by UTC day");
    let since = by(ok("costs", s.costs(CostGroup::Day, days(2)).await).0);
    assert_eq!(since, [(second, 3, 2, 130, 750_000)], "since leaves out what ended before");
    let tasks = ok("costs", s.costs(CostGroup::Task, days(0)).await).0;
    assert_eq!(tasks.len(), 4, "one row per task that reported: {tasks:?}");
    assert_eq!(tasks[0].key, task_id(1).to_string());
}
