//! Conflicts between runs over the same files.

use super::*;

pub async fn a_conflict_pauses_the_lower_priority_run_and_ends_with_either_task(store: Arc<dyn Store>) {
    use crate::DecisionState;
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let in_web = |name: &str, priority: muster_core::Priority| TaskSpec {
        workspace: Some(muster_core::Workspace {
            repo: "web".into(),
            base: None,
            auto_commit: false,
            keep: muster_core::Keep::default(),
        }),
        priority,
        ..spec(name)
    };
    let high = submit(s, 1, in_web("high", muster_core::Priority::High), at(0)).await;
    let eh = start(s, &a, &high, at(0)).await;
    let low = submit(s, 2, in_web("low", muster_core::Priority::Normal), at(0)).await;
    let el = start(s, &a, &low, at(0)).await;
    let files = |f: &[&str]| f.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(ok("report", s.report_files(&a, &high, eh, files(&["README.md"]), at(1)).await).is_empty());
    let found = ok("report", s.report_files(&a, &low, el, files(&["README.md", "src/lib.rs"]), at(2)).await);
    assert_eq!(found.len(), 1);
    let c = &found[0];
    assert_eq!((&c.conflict.winner, &c.conflict.loser, &c.conflict.files), (&high, &low, &files(&["README.md"])));
    assert_eq!(c.stop, Some((a.clone(), el)), "the lower-priority run is stopped");
    // A report that changes nothing raises nothing new.
    assert!(ok("report", s.report_files(&a, &high, eh, files(&["README.md"]), at(3)).await).is_empty());

    // The stop reaches it after it finished on its own: it keeps its result.
    let (task, _) = finish(s, &a, &low, el, &SUCCEEDED, at(4)).await;
    assert_eq!(task.state, TaskState::Succeeded);
    let d = ok("decision", s.decision(c.conflict.decision.expect("a decision")).await).expect("the decision");
    assert_eq!(d.state, DecisionState::Withdrawn);
    assert!(ok("conflicts", s.conflicts(true, 10).await).is_empty(), "the conflict ended with the task");

    // Another lower-priority run is stopped and parked; when the winner ends, it goes on.
    let third = submit(s, 3, in_web("third", muster_core::Priority::Low), at(5)).await;
    let e3 = start(s, &a, &third, at(5)).await;
    let found = ok("report", s.report_files(&a, &third, e3, files(&["README.md"]), at(6)).await);
    assert_eq!(found.len(), 1, "the pair met again after the first conflict ended");
    let (task, _) = finish(s, &a, &third, e3, &RunOutcome::Cancelled, at(7)).await;
    assert_eq!((task.state, task.attempts), (TaskState::NeedsDecision, 0));
    finish(s, &a, &high, eh, &SUCCEEDED, at(8)).await;
    assert_eq!(get(s, &third).await.state, TaskState::Queued, "its question is moot once the other ended");
    let all = ok("conflicts", s.conflicts(false, 10).await);
    assert!(all.iter().all(|c| c.resolution.as_deref() == Some("ended")), "{all:?}");
}
