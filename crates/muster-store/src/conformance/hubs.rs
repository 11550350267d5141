//! Hubs on one store: who is there, whose agents are whose, and the duties
//! one hub at a time leads, fenced so that a hub whose lease passed does
//! nothing.

use super::*;
use crate::{Duty, Fence, Firing, HubInfo, NewSchedule};

const HUB_TTL: Duration = Duration::from_secs(10);
const DUTY_TTL: Duration = Duration::from_secs(15);

fn hub(id: &str, name: &str) -> HubInfo {
    HubInfo {
        id: id.to_owned(),
        name: name.to_owned(),
        url: format!("https://{name}"),
        version: "1.0.0".to_owned(),
        ttl: HUB_TTL,
        exclusive: false,
    }
}

async fn listed(s: &dyn Store, now: Millis) -> Vec<(String, bool, Vec<AgentName>)> {
    ok("hubs", s.hubs(now).await).into_iter().map(|h| (h.id.clone(), h.alive(now), h.agents)).collect()
}

/// Each hub is listed with the agents whose sockets it holds; a second hub
/// leaves the first one's agents connected; a hub that starts again under
/// its name replaces its earlier run, whose agents are disconnected.
pub async fn hubs_are_listed_with_their_agents_and_a_restart_replaces_its_earlier_run(store: Arc<dyn Store>) {
    let s = &*store;
    ok("hub_started", s.hub_started(&hub("h_a1", "a:4000"), at(0), LEASE).await);
    let w1 = online(s, "w1", 1, at(1)).await;
    ok("hub_started", s.hub_started(&hub("h_b1", "b:4000"), at(2), LEASE).await);
    assert!(get_agent(s, &w1).await.status.connected, "another hub starting leaves w1 on hub a");
    let w2 = online(s, "w2", 1, at(3)).await;
    let mut hubs = listed(s, at(3)).await;
    hubs.sort();
    assert_eq!(
        hubs,
        [("h_a1".to_owned(), true, vec![w1.clone()]), ("h_b1".to_owned(), true, vec![w2.clone()])],
        "each hub with its own agents"
    );
    let mark = last_seq(s).await;
    ok("hub_started", s.hub_started(&hub("h_a2", "a:4000"), at(4), LEASE).await);
    assert!(!get_agent(s, &w1).await.status.connected, "w1's hub is gone: w1 must connect again");
    assert!(get_agent(s, &w2).await.status.connected, "w2's hub is still there");
    let alive: Vec<String> = listed(s, at(4)).await.into_iter().filter(|h| h.1).map(|h| h.0).collect();
    assert_eq!(alive.len(), 2, "a's earlier run is over: {alive:?}");
    assert!(alive.contains(&"h_a2".to_owned()) && !alive.contains(&"h_a1".to_owned()), "{alive:?}");
    let kinds: Vec<(String, Option<AgentName>)> =
        events_after(s, mark).await.into_iter().map(|e| (e.kind, e.agent)).collect();
    assert_eq!(
        kinds,
        [("agent.disconnected".to_owned(), Some(w1)), ("hub.started".to_owned(), None)],
        "the restart is on the timeline"
    );
    let only = HubInfo { exclusive: true, ..hub("h_c1", "c:4000") };
    ok("hub_started", s.hub_started(&only, at(5), LEASE).await);
    assert_eq!(listed(s, at(5)).await.into_iter().filter(|h| h.1).map(|h| h.0).collect::<Vec<_>>(), ["h_c1"]);
    assert!(!get_agent(s, &w2).await.status.connected, "a hub alone on its database: every other hub is over");
}

/// A hub that stops beating is counted gone by the reaper: its agents are
/// disconnected (their leases run out unless they reconnect elsewhere) and
/// its duties are free. When it beats again it learns it was counted gone.
pub async fn a_hub_whose_beats_stop_is_reaped_its_agents_disconnected_and_its_duties_freed(store: Arc<dyn Store>) {
    let s = &*store;
    ok("hub_started", s.hub_started(&hub("h_a", "a"), at(0), LEASE).await);
    let w1 = online(s, "w1", 1, at(0)).await;
    let led = ok("take_duty", s.take_duty(Duty::Schedules, "h_a", DUTY_TTL, at(0)).await).expect("free");
    ok("hub_started", s.hub_started(&hub("h_b", "b"), at(1), LEASE).await);
    assert!(!ok("hub_beat", s.hub_beat("h_b", at(5)).await), "b was never counted gone");
    assert!(ok("reap_hubs", s.reap_hubs(at(5)).await).is_empty(), "a beat within its ttl");
    assert_eq!(not_found("hub_beat of an unknown hub", s.hub_beat("h_ghost", at(5)).await), "hub");

    let silent = at(0).plus(HUB_TTL).plus(Duration::from_millis(1));
    ok("hub_beat", s.hub_beat("h_b", silent).await);
    let mark = last_seq(s).await;
    let lost = ok("reap_hubs", s.reap_hubs(silent).await);
    assert_eq!(lost.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["h_a"]);
    assert!(!get_agent(s, &w1).await.status.connected, "a's agents are disconnected");
    let kinds: Vec<String> = events_after(s, mark).await.into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["hub.lost", "agent.disconnected"]);
    let taken = ok("take_duty", s.take_duty(Duty::Schedules, "h_b", DUTY_TTL, silent).await);
    assert_eq!(taken.map(|f| (f.hub, f.epoch)), Some(("h_b".to_owned(), led.epoch + 1)), "a's duty is free");
    assert!(ok("reap_hubs again", s.reap_hubs(silent).await).is_empty(), "a hub is counted gone once");
    assert!(ok("hub_beat", s.hub_beat("h_a", silent.plus(Duration::from_secs(1))).await), "a learns it was gone");
    assert!(listed(s, silent.plus(Duration::from_secs(1))).await.iter().all(|h| h.1), "and is listed alive again");
}

/// One hub at a time leads a duty; it renews under the same epoch, and the
/// duty changes hands, with a new epoch, only once its lease has run out or
/// its hub stopped.
pub async fn a_duty_is_led_by_one_hub_and_changes_hands_only_when_its_lease_runs_out(store: Arc<dyn Store>) {
    let s = &*store;
    let a = ok("take_duty", s.take_duty(Duty::Reaper, "h_a", DUTY_TTL, at(0)).await).expect("a free duty");
    assert_eq!((a.hub.as_str(), a.epoch, a.expires_at), ("h_a", 1, at(15)));
    assert_eq!(ok("take_duty", s.take_duty(Duty::Reaper, "h_b", DUTY_TTL, at(1)).await), None, "a holds it");
    let renewed = ok("take_duty", s.take_duty(Duty::Reaper, "h_a", DUTY_TTL, at(10)).await).expect("renewed");
    assert_eq!((renewed.epoch, renewed.expires_at), (1, at(25)), "a renewal keeps the epoch");
    assert_eq!(ok("take_duty", s.take_duty(Duty::Reaper, "h_b", DUTY_TTL, at(24)).await), None);
    let b = ok("take_duty", s.take_duty(Duty::Reaper, "h_b", DUTY_TTL, at(25)).await).expect("a's lease ran out");
    assert_eq!((b.hub.as_str(), b.epoch), ("h_b", 2));
    assert_eq!(ok("take_duty", s.take_duty(Duty::Reaper, "h_a", DUTY_TTL, at(26)).await), None, "b holds it now");
    ok("take_duty", s.take_duty(Duty::Alerts, "h_a", DUTY_TTL, at(26)).await).expect("duties are separate");
    let led: Vec<(Duty, String, u64)> =
        ok("duties", s.duties().await).into_iter().map(|f| (f.duty, f.hub, f.epoch)).collect();
    assert_eq!(led, [(Duty::Alerts, "h_a".to_owned(), 1), (Duty::Reaper, "h_b".to_owned(), 2)]);

    ok("hub_started", s.hub_started(&hub("h_b", "b"), at(26), LEASE).await);
    ok("hub_stopped", s.hub_stopped("h_b", at(27)).await);
    let a = ok("take_duty", s.take_duty(Duty::Reaper, "h_a", DUTY_TTL, at(27)).await).expect("b stopped");
    assert_eq!(a.epoch, 3, "freed by a stop, taken at once with a new epoch");
    assert!(!listed(s, at(27)).await.iter().any(|h| h.0 == "h_b" && h.1), "a stopped hub is not alive");
}

/// A store fenced for its duties acts for one only while the database, in
/// the transaction that acts, still names its hub with the same epoch: a
/// hub paused past its lease, woken after the duty moved, does nothing.
pub async fn a_fenced_store_acts_for_a_duty_only_while_the_database_still_names_it(store: Arc<dyn Store>) {
    let s = &*store;
    let take = |duty, hub: &'static str, now| async move {
        ok("take_duty", s.take_duty(duty, hub, DUTY_TTL, now).await).expect("the duty is free")
    };
    let fences: Vec<Fence> = vec![
        take(Duty::Reaper, "h_a", at(0)).await,
        take(Duty::Schedules, "h_a", at(0)).await,
        take(Duty::Deadlines, "h_a", at(0)).await,
        take(Duty::Alerts, "h_a", at(0)).await,
    ];
    let alert = |at: Millis| crate::AlertRecord {
        rule: muster_core::alert::Rule::DiskLow,
        state: muster_core::alert::AlertState::Firing,
        severity: muster_core::alert::Severity::Critical,
        detail: Some("1% free".into()),
        since: Some(at),
        acknowledged_by: None,
        acknowledged_at: None,
        updated_at: at,
    };
    s.hold_duties(Some(fences));
    let schedule = NewSchedule {
        name: "hourly".to_owned(),
        cron: "0 * * * *".to_owned(),
        tz: "UTC".to_owned(),
        template: r#"{"prompt":"tidy up"}"#.to_owned(),
        missed: "skip".to_owned(),
        next_at: Some(at(5)),
        created_by: "lead".to_owned(),
    };
    let schedule = ok("add_schedule", s.add_schedule(schedule, at(0)).await);
    let firing = |due: Millis, next: Millis| Firing {
        schedule: schedule.id,
        due,
        next_at: Some(next),
        task: None,
        note: "on time".to_owned(),
    };
    ok("reclaim_expired while leading", s.reclaim_expired(at(1), 10).await);
    ok("reap_hubs while leading", s.reap_hubs(at(1)).await);
    ok("expire_decisions while leading", s.expire_decisions(at(1), 10).await);
    assert!(ok("fire_schedule while leading", s.fire_schedule(firing(at(5), at(20)), at(5)).await).is_some());
    ok("save_alert while leading", s.save_alert(alert(at(5)), Some("alert.firing"), at(5)).await);

    // Paused past the lease; another hub took every duty meanwhile.
    for duty in [Duty::Reaper, Duty::Schedules, Duty::Deadlines, Duty::Alerts] {
        take(duty, "h_b", at(16)).await;
    }
    let stale = |what: &str, r: Result<()>| match r {
        Err(StoreError::Conflict(why)) => assert!(why.contains("no longer leads"), "{what}: {why}"),
        other => panic!("{what} with a stale fence: expected Conflict, got {other:?}"),
    };
    let mark = last_seq(s).await;
    stale("reclaim_expired", s.reclaim_expired(at(20), 10).await.map(drop));
    stale("reap_hubs", s.reap_hubs(at(20)).await.map(drop));
    stale("expire_decisions", s.expire_decisions(at(20), 10).await.map(drop));
    stale("fire_schedule", s.fire_schedule(firing(at(20), at(35)), at(20)).await.map(drop));
    stale("save_alert", s.save_alert(alert(at(20)), Some("alert.firing"), at(20)).await);
    assert!(events_after(s, mark).await.is_empty(), "a stale leader writes nothing");
    assert_eq!(ok("schedule", s.schedule("hourly").await).and_then(|s| s.next_at), Some(at(20)), "not fired");

    s.hold_duties(Some(Vec::new()));
    match s.reclaim_expired(at(20), 10).await {
        Err(StoreError::Conflict(why)) => assert!(why.contains("does not lead reaper"), "{why}"),
        other => panic!("reclaim_expired without the duty: expected Conflict, got {other:?}"),
    }
    s.hold_duties(None);
    ok("reclaim_expired unfenced", s.reclaim_expired(at(20), 10).await);
}
