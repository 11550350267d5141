//! Schedules: cron entries that create tasks when they fall due. The hub
//! reads the pattern and works out the times; the store keeps them and
//! fires each due time once.

use super::*;
use crate::{Firing, NewSchedule, ScheduleRecord};

fn new_schedule(name: &str, next_at: Option<Millis>) -> NewSchedule {
    NewSchedule {
        name: name.to_owned(),
        cron: "0 * * * *".to_owned(),
        tz: "UTC".to_owned(),
        template: r#"{"prompt":"tidy up"}"#.to_owned(),
        missed: "skip".to_owned(),
        next_at,
        created_by: "lead".to_owned(),
    }
}

async fn add(s: &dyn Store, name: &str, next_at: Option<Millis>, now: Millis) -> ScheduleRecord {
    ok("add_schedule", s.add_schedule(new_schedule(name, next_at), now).await)
}

async fn find(s: &dyn Store, key: &str) -> ScheduleRecord {
    ok("schedule", s.schedule(key).await).unwrap_or_else(|| panic!("schedule {key} is missing"))
}

fn names(list: &[ScheduleRecord]) -> Vec<&str> {
    list.iter().map(|s| s.name.as_str()).collect()
}

/// Schedules are kept as given, found by name or id, listed by name, and
/// paused, resumed and deleted on a person's word, who is named on the timeline.
pub async fn schedules_are_added_found_paused_resumed_and_deleted_with_who_on_the_timeline(store: Arc<dyn Store>) {
    let s = &*store;
    let alpha = add(s, "alpha", Some(at(60)), at(0)).await;
    let mark = last_seq(s).await;
    let nightly = add(s, "nightly", Some(at(3_600)), at(1)).await;
    let expected = ScheduleRecord {
        id: nightly.id,
        name: "nightly".into(),
        cron: "0 * * * *".into(),
        tz: "UTC".into(),
        template: r#"{"prompt":"tidy up"}"#.into(),
        missed: "skip".into(),
        paused: false,
        next_at: Some(at(3_600)),
        last_at: None,
        last_task: None,
        created_by: "lead".into(),
        created_at: at(1),
    };
    assert_eq!(nightly, expected, "add_schedule stores what it is given, running, never fired");
    assert_ne!(nightly.id, alpha.id);
    let events = assert_events(s, mark, &["schedule.added"], "add_schedule").await;
    assert_eq!(events[0].detail.as_deref(), Some("nightly `0 * * * *` UTC (by lead)"));

    // Found by name or by id; listed by name.
    assert_eq!(find(s, "nightly").await, expected);
    assert_eq!(find(s, &nightly.id.to_string()).await, expected, "a schedule is found by its id too");
    assert_eq!(ok("schedule", s.schedule("missing").await), None);
    assert_eq!(ok("schedule", s.schedule(&(nightly.id + 100).to_string()).await), None);
    assert_eq!(names(&ok("schedules", s.schedules().await)), ["alpha", "nightly"]);

    // A taken name is a conflict; a bad one is invalid; neither writes anything.
    let before = (snapshot(s).await, ok("schedules", s.schedules().await));
    match s.add_schedule(new_schedule("nightly", Some(at(10))), at(2)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("add_schedule with a taken name: expected StoreError::Conflict, got {other:?}"),
    }
    for bad in ["", "has space", "12345", &"x".repeat(65)] {
        let what = format!("add_schedule named {bad:?}");
        assert_eq!(invalid(&what, s.add_schedule(new_schedule(bad, None), at(2)).await).field, "name", "{what}");
    }
    assert_eq!((snapshot(s).await, ok("schedules", s.schedules().await)), before, "a refused add wrote something");

    // Paused: no next time, so never due; resumed from the time given.
    let mark = last_seq(s).await;
    let paused =
        ok("set_schedule_paused", s.set_schedule_paused(&nightly.id.to_string(), true, None, "ops", at(3)).await);
    assert_eq!(paused, ScheduleRecord { paused: true, next_at: None, ..expected.clone() });
    assert_eq!(find(s, "nightly").await, paused);
    match s.set_schedule_paused("nightly", true, None, "ops", at(4)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("pausing a paused schedule: expected StoreError::Conflict, got {other:?}"),
    }
    let resumed =
        ok("set_schedule_paused", s.set_schedule_paused("nightly", false, Some(at(7_200)), "lead", at(5)).await);
    assert_eq!(resumed, ScheduleRecord { next_at: Some(at(7_200)), ..expected.clone() });
    match s.set_schedule_paused("nightly", false, Some(at(9_000)), "lead", at(6)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("resuming a running schedule: expected StoreError::Conflict, got {other:?}"),
    }
    assert_eq!(find(s, "nightly").await.next_at, Some(at(7_200)), "a refused resume moved the schedule");
    let events = assert_events(s, mark, &["schedule.paused", "schedule.resumed"], "pause and resume").await;
    assert_eq!(events[0].detail.as_deref(), Some("nightly (by ops)"));
    assert_eq!(events[1].detail.as_deref(), Some("nightly (by lead)"));
    let r = s.set_schedule_paused("missing", true, None, "ops", at(6)).await;
    assert_eq!(not_found("set_schedule_paused of an unknown schedule", r), "schedule");

    // Deleted: gone, with who on the timeline; its name is free, its id never reused.
    let mark = last_seq(s).await;
    let deleted = ok("delete_schedule", s.delete_schedule("nightly", "ops", at(7)).await);
    assert_eq!(deleted, resumed, "delete_schedule answers with what it deleted");
    let events = assert_events(s, mark, &["schedule.deleted"], "delete_schedule").await;
    assert_eq!(events[0].detail.as_deref(), Some("nightly (by ops)"));
    assert_eq!(ok("schedule", s.schedule("nightly").await), None);
    assert_eq!(ok("schedule", s.schedule(&nightly.id.to_string()).await), None);
    assert_eq!(names(&ok("schedules", s.schedules().await)), ["alpha"]);
    let r = s.delete_schedule("nightly", "ops", at(8)).await;
    assert_eq!(not_found("deleting a deleted schedule", r), "schedule");
    let again = add(s, "nightly", Some(at(3_600)), at(9)).await;
    assert!(again.id > nightly.id, "a deleted schedule's id was reused: {} after {}", again.id, nightly.id);
}

/// Firing creates the due time's task and moves the schedule on in one
/// change; a firing for a time that is no longer due (another hub fired it,
/// or it was paused, deleted or moved meanwhile) does nothing.
pub async fn a_schedule_fires_once_for_each_due_time(store: Arc<dyn Store>) {
    let s = &*store;
    let next = || async { ok("next_schedule_at", s.next_schedule_at().await) };
    let due = |when: Millis| async move { names(&ok("due_schedules", s.due_schedules(when).await)).join(" ") };
    assert_eq!(next().await, None, "no schedule, no next time");
    let hourly = add(s, "hourly", Some(at(60)), at(0)).await;
    let daily = add(s, "daily", Some(at(120)), at(0)).await;
    let held = add(s, "held", Some(at(30)), at(0)).await;
    ok("set_schedule_paused", s.set_schedule_paused("held", true, None, "ops", at(0)).await);
    add(s, "over", None, at(0)).await;
    assert_eq!(next().await, Some(at(60)), "the earliest time of a running schedule");
    assert_eq!(due(just_before(at(60))).await, "", "nothing is due before its time");
    assert_eq!(due(at(60)).await, "hourly");
    assert_eq!(due(at(500)).await, "hourly daily", "due schedules come earliest first; paused ones never");

    // Fired on time: its task is created and the schedule moves on, together.
    let firing = |schedule: &ScheduleRecord, due: Millis, next_at: Option<Millis>, task: Option<u128>| Firing {
        schedule: schedule.id,
        due,
        next_at,
        task: task.map(|n| (task_id(n), spec("tidy up"))),
        note: "on time".to_owned(),
    };
    let mark = last_seq(s).await;
    let fired = ok("fire_schedule", s.fire_schedule(firing(&hourly, at(60), Some(at(3_660)), Some(1)), at(61)).await);
    let task = fired.flatten().expect("a firing with a task creates it");
    assert_eq!((&task.id, task.state), (&task_id(1), TaskState::Queued));
    assert_eq!(get(s, &task_id(1)).await, task, "the answer is the stored task");
    let events = assert_events(s, mark, &["task.created", "schedule.fired"], "fire_schedule").await;
    let detail = events[1].detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("hourly") && detail.contains(task_id(1).as_str()) && detail.contains("on time"),
        "{detail}"
    );
    let moved = find(s, "hourly").await;
    assert_eq!(
        (moved.next_at, moved.last_at, moved.last_task.as_ref()),
        (Some(at(3_660)), Some(at(61)), Some(&task_id(1))),
        "a firing moves the schedule on and names its task"
    );
    assert_eq!(next().await, Some(at(120)));

    // The same due time again (a retry, or a second hub) fires nothing.
    let before = snapshot(s).await;
    let twice = ok("fire_schedule", s.fire_schedule(firing(&hourly, at(60), Some(at(3_660)), Some(2)), at(62)).await);
    assert_eq!(twice, None, "a due time fires once");
    // Nor does a paused, an unknown or a deleted schedule.
    let paused = ok("fire_schedule", s.fire_schedule(firing(&held, at(30), Some(at(90)), Some(3)), at(62)).await);
    assert_eq!(paused, None, "a paused schedule does not fire");
    let unknown = Firing { schedule: hourly.id + 100, ..firing(&hourly, at(60), None, Some(4)) };
    assert_eq!(ok("fire_schedule", s.fire_schedule(unknown, at(62)).await), None, "an unknown schedule does not fire");
    assert_unchanged(s, &before, "a firing that was no longer due").await;
    assert_eq!(find(s, "hourly").await, moved, "a firing that was no longer due moved the schedule");
    for n in 2..=4 {
        assert_eq!(ok("task", s.task(&task_id(n)).await), None, "a firing that was no longer due created a task");
    }

    // Missed runs skipped: no task, the last task kept; no next time: never due again.
    let mark = last_seq(s).await;
    let skip =
        Firing { note: "3 runs missed while the hub was down; skipped".into(), ..firing(&daily, at(120), None, None) };
    assert_eq!(ok("fire_schedule", s.fire_schedule(skip, at(500)).await), Some(None), "fired, with no task");
    assert_events(s, mark, &["schedule.fired"], "a firing that skips its run").await;
    let skipped = find(s, "daily").await;
    assert_eq!((skipped.next_at, skipped.last_at, skipped.last_task), (None, Some(at(500)), None));
    let skip = Firing { note: "skipped".into(), ..firing(&hourly, at(3_660), Some(at(7_260)), None) };
    assert_eq!(ok("fire_schedule", s.fire_schedule(skip, at(4_000)).await), Some(None));
    assert_eq!(find(s, "hourly").await.last_task, Some(task_id(1)), "a skipped run keeps the last task");
    assert_eq!(next().await, Some(at(7_260)));
    assert_eq!(due(at(7_000)).await, "", "a schedule with no next time is never due");

    ok("delete_schedule", s.delete_schedule("hourly", "ops", at(4_001)).await);
    let gone = firing(&hourly, at(7_260), Some(at(10_860)), Some(5));
    assert_eq!(ok("fire_schedule", s.fire_schedule(gone, at(7_260)).await), None, "a deleted schedule does not fire");
    assert_eq!(ok("task", s.task(&task_id(5)).await), None);
    assert_eq!(next().await, None, "no running schedule has a next time");
}
