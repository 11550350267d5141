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

/// Runs `id` once on `agent` and finishes it with `checks` as `(name,
/// passed, exit code)`, the worktree's head at `commit`.
async fn run_checks(
    s: &dyn Store,
    agent: &AgentName,
    id: &TaskId,
    commit: &str,
    checks: &[(&str, bool, Option<i32>)],
    when: Millis,
) {
    let e = start(s, agent, id, when).await;
    let failing: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
    let outcome =
        if failing.is_empty() { SUCCEEDED } else { failed(&format!("checks_failed: {}", failing.join(", "))) };
    let details = RunDetails {
        workspace: Some(WorkspaceRecord { head: Some(commit.to_owned()), ..WorkspaceRecord::default() }),
        checks: checks
            .iter()
            .map(|(name, passed, exit_code)| crate::CheckRecord {
                name: (*name).to_owned(),
                passed: *passed,
                exit_code: *exit_code,
                duration_ms: 10,
                output: String::new(),
            })
            .collect(),
        ..RunDetails::default()
    };
    ok("finish_task", s.finish_task(agent, id, e, &outcome, details, when, Retry::fixed(BACKOFF)).await);
}

/// A check that passed for an earlier task on a repository and fails now is
/// a regression, named once per task and check with the latest task that
/// passed; a check that could not start, another repository or a task with
/// no repository says nothing. Newest first.
pub async fn a_check_that_passed_before_and_fails_now_is_a_regression(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let in_repo = |repo: &str| TaskSpec {
        workspace: Some(muster_core::Workspace {
            repo: repo.into(),
            base: None,
            auto_commit: true,
            keep: muster_core::Keep::Never,
        }),
        ..spec("change it")
    };
    let first = submit(s, 1, in_repo("web"), at(0)).await;
    run_checks(s, &a, &first, "c1", &[("test", true, Some(0)), ("lint", true, Some(0))], at(1)).await;
    let second = submit(s, 2, in_repo("web"), at(2)).await;
    run_checks(s, &a, &second, "c2", &[("test", true, Some(0)), ("lint", true, Some(0))], at(3)).await;
    let elsewhere = submit(s, 3, with_attempts(in_repo("api"), 1), at(4)).await;
    run_checks(s, &a, &elsewhere, "c3", &[("test", false, Some(1))], at(5)).await;
    let no_repo = submit(s, 4, with_attempts(spec("no repository"), 1), at(6)).await;
    run_checks(s, &a, &no_repo, "c4", &[("test", false, Some(1))], at(7)).await;
    assert_eq!(ok("regressions", s.regressions(10).await), [], "no earlier pass on that repository, no regression");
    assert_eq!(attempts(s, &elsewhere).await[0].checks.len(), 1, "the checks are kept on the attempt");

    let breaking = submit(s, 5, with_attempts(in_repo("web"), 2), at(8)).await;
    let mark = last_seq(s).await;
    run_checks(s, &a, &breaking, "c5", &[("test", false, Some(101)), ("lint", false, None)], at(9)).await;
    let found = ok("regressions", s.regressions(10).await);
    let expected = crate::RegressionRecord {
        id: found.first().map_or(0, |r| r.id),
        repo: "web".into(),
        check: "test".into(),
        task: breaking.clone(),
        commit: Some("c5".into()),
        last_passed_task: second.clone(),
        last_passed_commit: Some("c2".into()),
        at: at(9),
    };
    assert_eq!(found, std::slice::from_ref(&expected), "a lint that could not start is no regression");
    let events = all_events(s, EventFilter { after: mark, ..EventFilter::default() }).await;
    let detected: Vec<&Event> = events.iter().filter(|e| e.kind == "regression.detected").collect();
    assert_eq!(detected.len(), 1, "{events:?}");
    assert_eq!(detected[0].task.as_ref(), Some(&breaking), "the regression is on the breaking task's timeline");

    // Its retry fails the same way: still one regression for that task.
    run_checks(s, &a, &breaking, "c6", &[("test", false, Some(101))], at(10 + BACKOFF.as_secs() as i64)).await;
    assert_eq!(
        ok("regressions", s.regressions(10).await),
        std::slice::from_ref(&expected),
        "named once per task and check"
    );

    // Another task breaks it too: the latest pass is still the second task's.
    let again = submit(s, 6, with_attempts(in_repo("web"), 1), at(20)).await;
    run_checks(s, &a, &again, "c7", &[("test", false, Some(1))], at(21)).await;
    let found = ok("regressions", s.regressions(10).await);
    let tasks: Vec<(&TaskId, &TaskId)> = found.iter().map(|r| (&r.task, &r.last_passed_task)).collect();
    assert_eq!(tasks, [(&again, &second), (&breaking, &second)], "newest first");
    assert_eq!(ok("regressions", s.regressions(1).await).len(), 1, "the limit is honoured");
}

/// Shadow runs are compared with the tasks they shadow once both have
/// ended, however they ended: the pairs come most recently finished first.
pub async fn shadow_pairs_are_finished_pairs_most_recently_finished_first(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 8, at(0)).await;
    // (task number, the task it shadows)
    let plan: [(u128, Option<u128>); 7] =
        [(1, None), (2, Some(1)), (3, None), (4, Some(3)), (5, None), (6, Some(5)), (7, None)];
    let mut runs = Vec::new();
    for (n, of) in plan {
        let once = with_attempts(spec("compare me"), 1);
        let id = submit(s, n, TaskSpec { shadow_of: of.map(task_id), ..once }, at(0)).await;
        let e = start(s, &a, &id, at(0)).await;
        runs.push((id, e));
    }
    let [task1, shadow1, task2, shadow2, task3, _shadow3, alone] = &runs[..] else { unreachable!("seven runs") };
    let end = |(id, e): &(TaskId, Epoch), outcome: RunOutcome, when: i64| {
        let (id, e, a) = (id.clone(), *e, a.clone());
        async move { finish(s, &a, &id, e, &outcome, at(when)).await }
    };
    let pairs = || async { ok("shadow_pairs", s.shadow_pairs(10).await) };
    assert_eq!(pairs().await, [], "nothing has finished");
    end(task1, SUCCEEDED, 1).await;
    end(shadow2, SUCCEEDED, 2).await;
    assert_eq!(pairs().await, [], "a pair is compared only once both have finished");
    end(task2, SUCCEEDED, 3).await;
    end(task3, SUCCEEDED, 4).await;
    end(alone, SUCCEEDED, 4).await;
    let second = (task2.0.clone(), shadow2.0.clone());
    assert_eq!(pairs().await, std::slice::from_ref(&second), "only pairs where both have finished");
    end(shadow1, failed("differs"), 5).await;
    let both = [(task1.0.clone(), shadow1.0.clone()), second];
    assert_eq!(pairs().await, both, "a failed shadow has finished too; the latest to finish comes first");
    assert_eq!(ok("shadow_pairs", s.shadow_pairs(1).await), both[..1], "the limit is honoured");
}
