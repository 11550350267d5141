//! Outcomes, alerts, settings, quiet runs and service level counts.

use super::*;

pub async fn outcomes_since_counts_recent_attempts_by_outcome(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    let old = submit(s, 1, spec("old"), at(0)).await;
    let e = start(s, &a, &old, at(0)).await;
    finish(s, &a, &old, e, &SUCCEEDED, at(1)).await;
    let flaky = submit(s, 2, spec("flaky"), at(10)).await;
    let e = start(s, &a, &flaky, at(10)).await;
    finish(s, &a, &flaky, e, &failed("boom"), at(11)).await;
    let e = start(s, &a, &flaky, at(11).plus(BACKOFF)).await;
    finish(s, &a, &flaky, e, &SUCCEEDED, at(20)).await;
    let running = submit(s, 3, spec("running"), at(20)).await;
    start(s, &a, &running, at(21)).await;

    let recent = ok("outcomes_since", s.outcomes_since(at(5)).await);
    assert_eq!(recent, [(Outcome::Failed, 1), (Outcome::Succeeded, 1)], "only attempts ended since then");
    let all = ok("outcomes_since", s.outcomes_since(at(0)).await);
    assert_eq!(all, [(Outcome::Failed, 1), (Outcome::Succeeded, 2)]);
    assert_eq!(ok("outcomes_since", s.outcomes_since(at(100)).await), []);
}

pub async fn alerts_are_saved_acknowledged_and_on_the_timeline(store: Arc<dyn Store>) {
    use muster_core::alert::{AlertState, Rule, Severity};
    let s = &*store;
    assert_eq!(ok("alerts", s.alerts().await), []);
    let r = s.acknowledge_alert(Rule::DiskLow, "admin", at(0)).await;
    assert!(matches!(r, Err(StoreError::Invalid(ref i)) if i.field == "state"), "{r:?}");

    let mark = last_seq(s).await;
    let firing = crate::AlertRecord {
        rule: Rule::DiskLow,
        state: AlertState::Firing,
        severity: Severity::Critical,
        detail: Some("1% free".into()),
        since: Some(at(1)),
        acknowledged_by: None,
        acknowledged_at: None,
        updated_at: at(1),
    };
    ok("save_alert", s.save_alert(firing.clone(), Some("alert.firing"), at(1)).await);
    assert_eq!(ok("alerts", s.alerts().await), std::slice::from_ref(&firing));
    let acked = ok("acknowledge_alert", s.acknowledge_alert(Rule::DiskLow, "admin", at(2)).await);
    assert_eq!(
        (acked.state, acked.acknowledged_by.as_deref(), acked.acknowledged_at),
        (AlertState::Acknowledged, Some("admin"), Some(at(2)))
    );
    let again = s.acknowledge_alert(Rule::DiskLow, "admin", at(3)).await;
    assert!(matches!(again, Err(StoreError::Invalid(_))), "acknowledged twice: {again:?}");
    let resolved = crate::AlertRecord { state: AlertState::Resolved, updated_at: at(4), ..acked };
    ok("save_alert", s.save_alert(resolved.clone(), Some("alert.resolved"), at(4)).await);
    ok("save_alert", s.save_alert(resolved.clone(), None, at(5)).await);
    assert_eq!(ok("alerts", s.alerts().await), [resolved]);
    let events = assert_events(s, mark, &["alert.firing", "alert.acknowledged", "alert.resolved"], "alerts").await;
    assert_eq!(events[0].detail.as_deref(), Some("disk_low (critical): 1% free"));
    assert_eq!(events[1].state.as_deref(), Some("acknowledged"));
}

pub async fn settings_are_stored_by_key_with_an_event(store: Arc<dyn Store>) {
    let s = &*store;
    let mark = last_seq(s).await;
    let set = |k: &str, v: &str| (k.to_owned(), Some(v.to_owned()));
    let pairs = vec![set("alerts.disk_low.threshold", "0.1"), set("other.key", "x"), set("gone.soon", "y")];
    ok("put_settings", s.put_settings(pairs, "admin", at(1)).await);
    let pairs = vec![set("alerts.disk_low.threshold", "0.2"), ("gone.soon".to_owned(), None)];
    ok("put_settings", s.put_settings(pairs, "admin", at(2)).await);
    assert_eq!(
        ok("settings", s.settings("alerts.").await),
        [("alerts.disk_low.threshold".to_owned(), "0.2".to_owned())]
    );
    assert_eq!(ok("settings", s.settings("").await).len(), 2, "a None value removes its key");
    let events = assert_events(s, mark, &["config.changed", "config.changed"], "put_settings").await;
    assert_eq!(events[1].detail.as_deref(), Some("alerts.disk_low.threshold=0.2, gone.soon reset by admin"));
}

pub async fn a_shared_setting_is_decided_by_the_first_to_store_it(store: Arc<dyn Store>) {
    let s = &*store;
    let mark = last_seq(s).await;
    let first = ok("setting_or_insert", s.setting_or_insert("secret.k", "one".into(), at(1)).await);
    assert_eq!(first, "one", "nothing was stored: the value given is stored");
    let second = ok("setting_or_insert", s.setting_or_insert("secret.k", "two".into(), at(2)).await);
    assert_eq!(second, "one", "the first value stays");
    assert_eq!(ok("settings", s.settings("secret.").await), [("secret.k".to_owned(), "one".to_owned())]);
    assert_events(s, mark, &[], "setting_or_insert").await;
}

pub async fn dashboard_sessions_last_until_they_end(store: Arc<dyn Store>) {
    let s = &*store;
    let token = ok("create_token", s.create_token(new_token(77, Scope::Admin, None), at(0)).await);
    let start = |key: &str, until: i64, now: i64| s.start_session(key.into(), token.id.clone(), at(until), at(now));
    ok("start_session", start("k1", 10, 1).await);
    ok("start_session", start("k2", 3, 1).await);
    assert_eq!(ok("session", s.session("k1".into(), at(2)).await), Some((token.id.clone(), at(10))));
    assert_eq!(ok("session", s.session("nope".into(), at(2)).await), None, "an unknown key");
    assert_eq!(ok("session", s.session("k2".into(), at(3)).await), None, "ended at its expiry");
    ok("renew_session", s.renew_session("k1".into(), at(20)).await);
    assert_eq!(ok("session", s.session("k1".into(), at(15)).await), Some((token.id.clone(), at(20))));
    ok("start_session", start("k3", 30, 4).await);
    ok("start_session", start("k2", 30, 5).await);
    assert_eq!(
        ok("session", s.session("k2".into(), at(6)).await),
        Some((token.id.clone(), at(30))),
        "an ended session's key is free again"
    );
    ok("end_session", s.end_session("k1".into()).await);
    assert_eq!(ok("session", s.session("k1".into(), at(6)).await), None, "signed out");
    assert_eq!(ok("session", s.session("k3".into(), at(6)).await).map(|x| x.1), Some(at(30)), "the others stay");
}

pub async fn quiet_running_tasks_are_counted(store: Arc<dyn Store>) {
    let s = &*store;
    let a = online(s, "a", 3, at(0)).await;
    let chatty = submit(s, 1, spec("chatty"), at(0)).await;
    let e = start(s, &a, &chatty, at(0)).await;
    let quiet = submit(s, 2, spec("quiet"), at(0)).await;
    start(s, &a, &quiet, at(0)).await;
    let fresh = submit(s, 3, spec("fresh"), at(0)).await;
    start(s, &a, &fresh, at(50)).await;
    ok("append_output", s.append_output(&a, &chatty, e, vec![stdout(b"still here")], at(45)).await);
    assert_eq!(ok("count_quiet_running", s.count_quiet_running(at(40)).await), 1, "only the quiet one");
    assert_eq!(ok("count_quiet_running", s.count_quiet_running(at(60)).await), 3);
    assert_eq!(ok("count_quiet_running", s.count_quiet_running(at(0)).await), 0, "none started before then");
}

/// Tasks in every state, retries, a reclaim and a cancel.
pub(super) async fn tell_a_short_story(s: &dyn Store) {
    let a = online(s, "a", 3, at(0)).await;
    let running = submit(s, 4, spec("running"), at(0)).await;
    let re = start(s, &a, &running, at(0)).await;
    let done = submit(s, 1, spec("done"), at(0)).await;
    let e = start(s, &a, &done, at(0)).await;
    finish(s, &a, &done, e, &SUCCEEDED, at(1)).await;
    let retried = submit(s, 2, spec("retried"), at(0)).await;
    let e = start(s, &a, &retried, at(1)).await;
    finish(s, &a, &retried, e, &failed("once"), at(2)).await;
    let lost = submit(s, 3, spec("lost"), at(2)).await;
    start(s, &a, &lost, at(2)).await;
    ok("heartbeat", s.heartbeat(&a, &[(running.clone(), re)], at(20), LEASE).await);
    ok("reclaim_expired", s.reclaim_expired(at(2).plus(LEASE), 10).await);
    let cancelled = submit(s, 5, spec("cancelled"), at(40)).await;
    ok("cancel_task", s.cancel_task(&cancelled, at(41)).await);
}

pub async fn slo_counts_judge_queue_waits_and_run_times(store: Arc<dyn Store>) {
    use crate::SloKind;
    let s = &*store;
    let a = online(s, "a", 1, at(0)).await;
    // Waits 1 s, runs 2 s.
    let quick = submit(s, 1, spec("quick"), at(0)).await;
    let e = start(s, &a, &quick, at(1)).await;
    finish(s, &a, &quick, e, &SUCCEEDED, at(3)).await;
    // Waits 10 s, runs 60 s, fails.
    let slow = submit(s, 2, spec("slow"), at(3)).await;
    let e = start(s, &a, &slow, at(13)).await;
    finish(s, &a, &slow, e, &failed("late"), at(73)).await;
    // Cancelled runs do not count against run time.
    let gone = submit(s, 3, with_attempts(spec("gone"), 1), at(73)).await;
    let e = start(s, &a, &gone, at(73)).await;
    ok("cancel_task", s.cancel_task(&gone, at(74)).await);
    finish(s, &a, &gone, e, &RunOutcome::Cancelled, at(80)).await;

    let five = Duration::from_secs(5);
    assert_eq!(ok("slo_counts", s.slo_counts(SloKind::Dispatch, at(0), five).await), (2, 3));
    assert_eq!(ok("slo_counts", s.slo_counts(SloKind::Run, at(0), five).await), (1, 2));
    assert_eq!(ok("slo_counts", s.slo_counts(SloKind::Run, at(0), Duration::from_secs(60)).await), (2, 2));
    assert_eq!(
        ok("slo_counts", s.slo_counts(SloKind::Dispatch, at(10), five).await),
        (1, 2),
        "only attempts since then"
    );
}
