//! Several hubs on one PostgreSQL database, as equals: each serves the
//! whole API and holds agent sockets; work submitted to any hub runs once,
//! on an agent of any hub; one hub at a time leads each duty, and the
//! duties move when their leader dies.

use crate::harness::{Agent, AgentOpts, Hub, HubOpts};
use muster_store::postgres::ScratchDb;
use serde_json::{Value, json};
use std::collections::BTreeSet;

async fn scratch() -> ScratchDb {
    tokio::task::spawn_blocking(ScratchDb::create).await.expect("the thread").expect("a scratch PostgreSQL database")
}

/// `n` hubs on `db`, the first made the admin token the others use.
async fn hubs_on(db: &ScratchDb, n: usize) -> Vec<Hub> {
    let first = Hub::start_with(HubOpts { database: Some(db.url().to_owned()), ..HubOpts::default() }).await;
    let mut all = vec![first];
    for _ in 1..n {
        let next = Hub::join(&all[0]).await;
        all.push(next);
    }
    all
}

/// The hubs `hub` lists: (id, alive, leads, agents).
async fn hubs(hub: &Hub) -> Vec<(String, bool, Vec<String>, Vec<String>)> {
    let list = hub.get("/admin/hubs").await;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().expect("a list").iter().map(|s| s.as_str().expect("a string").to_owned()).collect()
    };
    list.as_array()
        .expect("a list of hubs")
        .iter()
        .map(|h| {
            (
                h["id"].as_str().expect("id").to_owned(),
                h["alive"].as_bool().expect("alive"),
                strings(&h["leads"]),
                strings(&h["agents"]),
            )
        })
        .collect()
}

/// Every duty led by exactly one live hub; returns the leader of `reaper`.
fn duties_led_once(list: &[(String, bool, Vec<String>, Vec<String>)]) -> Option<String> {
    let mut led: Vec<&str> = list.iter().filter(|h| h.1).flat_map(|h| h.2.iter().map(String::as_str)).collect();
    led.sort_unstable();
    let all = ["alerts", "deadlines", "reaper", "schedules", "upkeep"];
    (led == all).then(|| list.iter().find(|h| h.1 && h.2.iter().any(|d| d == "reaper")).map(|h| h.0.clone()))?
}

#[tokio::test]
async fn three_hubs_on_one_database_run_every_task_once_and_move_duties_when_one_dies() {
    let db = scratch().await;
    let mut all = hubs_on(&db, 3).await;
    let mut agents: Vec<Agent> = Vec::new();
    for (i, hub) in all.iter().enumerate() {
        let name = format!("w{i}");
        let token = all[0].add_agent(&name, &[]).await;
        agents.push(Agent::spawn(&hub.url, &name, &token, 2, &[]));
        hub.wait_connected(&name).await;
    }

    // Every hub lists all three, each with its own agent, and each duty led once.
    for hub in &all {
        let list = hub
            .wait_until("three hubs, each duty led once", || async {
                let list = hubs(hub).await;
                (list.len() == 3 && duties_led_once(&list).is_some()).then_some(list)
            })
            .await;
        let mut agents_by_hub: Vec<Vec<String>> = list.iter().map(|h| h.3.clone()).collect();
        agents_by_hub.sort();
        assert_eq!(agents_by_hub, [vec!["w0".to_owned()], vec!["w1".to_owned()], vec!["w2".to_owned()]]);
    }

    // Tasks submitted to every hub in turn each run once.
    let mut ids = Vec::new();
    for k in 0..30 {
        let hub = &all[k % 3];
        ids.push(hub.add_task(json!({"prompt": format!("echo task {k}"), "runner": "shell"})).await);
    }
    let mut ran_on = BTreeSet::new();
    for (k, id) in ids.iter().enumerate() {
        // Ask a hub other than the one it was submitted to.
        let task = all[(k + 1) % 3].wait_state(id, &["succeeded", "failed"]).await;
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["attempts"], 1, "ran once: {task}");
        ran_on.insert(task["agent"].as_str().expect("an agent").to_owned());
        assert_eq!(all[0].output(id).await.trim(), format!("task {k}"));
    }
    assert!(ran_on.len() >= 2, "the work spread over the hubs' agents: {ran_on:?}");
    let assigned = all[0].events("kind=task.assigned").await;
    assert_eq!(assigned.len(), ids.len(), "each task was handed out once");

    // kill -9 the hub that leads the reaper: its duties move to the others.
    let leader = duties_led_once(&hubs(&all[0]).await).expect("a reaper");
    let mut own_ids = Vec::new();
    for hub in &all {
        let list = hub.get("/admin/hubs").await;
        let me = list.as_array().expect("hubs").iter().find(|h| h["this"] == true).expect("this hub is listed");
        own_ids.push(me["id"].as_str().expect("an id").to_owned());
    }
    let dead = own_ids.iter().position(|id| *id == leader).expect("the leader is one of the three");
    all[dead].kill9().await;
    let survivor = &all[(dead + 1) % 3];
    let list = survivor
        .wait_until("the dead hub counted gone and its duties moved", || async {
            let list = hubs(survivor).await;
            let gone = list.iter().any(|h| h.0 == leader && !h.1);
            match duties_led_once(&list) {
                Some(reaper) if gone && reaper != leader => Some(list),
                _ => None,
            }
        })
        .await;
    assert!(list.iter().all(|h| h.0 != leader || h.3.is_empty()), "the dead hub holds no agents: {list:?}");
    assert_eq!(survivor.events("kind=hub.lost").await.len(), 1, "counted gone once");

    // The survivors keep taking work, on their own agents.
    let id = survivor.add_task(json!({"prompt": "echo after", "runner": "shell"})).await;
    let task = all[(dead + 2) % 3].wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!((task["state"].as_str(), task["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{task}");
    drop(agents);
    for hub in all.iter_mut().filter(|h| h.process.is_some()) {
        hub.terminate().await;
    }
    drop(db);
}

/// Whether `hub` holds `agent`'s socket, as it lists itself.
async fn holds(hub: &Hub, agent: &str) -> bool {
    let list = hub.get("/admin/hubs").await;
    let this = list.as_array().expect("hubs").iter().find(|h| h["this"] == true).cloned();
    this.is_some_and(|h| h["agents"].as_array().is_some_and(|a| a.iter().any(|n| n == agent)))
}

/// An agent given several hubs (`--hub URL1,URL2`) moves to another when its
/// hub dies: its run goes on meanwhile, is re-attached on the new hub under
/// its epoch, and finishes once.
#[tokio::test]
async fn an_agent_whose_hub_dies_moves_to_another_and_its_run_finishes_once() {
    let db = scratch().await;
    let opts = HubOpts { database: Some(db.url().to_owned()), ..HubOpts::default() };
    let mut a = Hub::start_with(opts).await;
    let b = Hub::join(&a).await;
    let token = a.add_agent("mover", &[]).await;
    let _agent = Agent::spawn(&format!("{},{}", a.url, b.url), "mover", &token, 1, &[]);
    a.wait_connected("mover").await;
    assert!(holds(&a, "mover").await, "the agent is on the first hub it was given");

    // A run that outlives its hub: it waits for the test's word.
    let gate = tempfile::tempdir().expect("a directory");
    let go = gate.path().join("go");
    // Then it speaks for its task through `muster ctl`, which reaches the
    // other hub with the same task token.
    let bin = env!("CARGO_BIN_EXE_muster");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; {bin} ctl note 'after the move' && echo finished",
        go.display()
    );
    let id = a.shell_task(&script).await;
    a.wait_state(&id, &["running"]).await;
    let epoch = a.task(&id).await["epoch"].clone();
    a.kill9().await;

    b.wait_until("the agent to reconnect to the other hub", || async { holds(&b, "mover").await.then_some(()) }).await;
    std::fs::write(&go, "").expect("the word");
    let task = b.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!((task["attempts"].as_u64(), &task["epoch"]), (Some(1), &epoch), "one attempt, its epoch kept: {task}");
    assert_eq!(b.output(&id).await.trim(), "finished", "the run's output, once");
    let started = b.events(&format!("task={id}&kind=task.started")).await;
    assert_eq!(started.len(), 1, "started once: {started:?}");
    let notes = b.events(&format!("task={id}&kind=task.note")).await;
    assert_eq!(notes.len(), 1, "the run's note reached the other hub: {notes:?}");
    assert_eq!(notes[0]["detail"], "after the move", "{notes:?}");
}

/// `muster migrate` copies a SQLite hub's whole history into an empty
/// PostgreSQL database, checks it, and refuses a database that is not empty;
/// a hub started on the copy has every task, event and token.
#[tokio::test]
async fn a_sqlite_hub_migrates_to_postgres_with_its_whole_history() {
    let mut old = Hub::start().await;
    let token = old.add_agent("w", &[]).await;
    let mut agent = Agent::spawn(&old.url, "w", &token, 2, &[]);
    let mut ids = Vec::new();
    for k in 0..5 {
        ids.push(old.shell_task(&format!("echo migrated {k}")).await);
    }
    for id in &ids {
        old.wait_state(id, &["succeeded"]).await;
    }
    let events = old.last_event().await;
    agent.kill9().await;
    old.terminate().await;

    let db = scratch().await;
    let dir = crate::harness::path_str(old.dir.path());
    let migrate = |to: String| {
        let dir = dir.clone();
        async move {
            let mut cmd = crate::harness::muster_command(&["migrate", "--from", &dir, "--to", &to]);
            crate::harness::run_to_end(&mut cmd, crate::harness::PATIENCE).await
        }
    };
    let (code, _, err) = migrate(db.url().to_owned()).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("check: ok"), "{err}");
    assert!(err.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["tasks", "5"]), "{err}");
    let (code, _, err) = migrate(db.url().to_owned()).await;
    assert_ne!(code, 0, "a second migration into the same database is refused");
    assert!(err.contains("is not empty"), "{err}");

    // A hub on the copy: the same history, the same admin token.
    old.opts.database = Some(db.url().to_owned());
    let mut copy = Hub::join(&old).await;
    for (k, id) in ids.iter().enumerate() {
        let task = copy.task(id).await;
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(copy.output(id).await.trim(), format!("migrated {k}"));
    }
    assert!(copy.last_event().await > events, "the history carries on after the copied events");
    let (code, out, err) = copy.cli(&["check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let id = copy.shell_task("echo after").await;
    let _agent = Agent::spawn(&copy.url, "w", &token, 1, &[]);
    assert_eq!(copy.wait_state(&id, &["succeeded", "failed"]).await["state"], "succeeded");
    copy.terminate().await;
}

/// What one hub is told reaches the agents and the hubs it concerns, wherever
/// they are: mail, a cancel and a drain for an agent held by another hub,
/// and settings and the dispatch pause changed on another hub, each within
/// a second or so.
#[tokio::test(flavor = "multi_thread")]
async fn orders_given_to_one_hub_reach_agents_and_settings_on_the_others() {
    let db = scratch().await;
    let opts = HubOpts { database: Some(db.url().to_owned()), ..HubOpts::default() };
    let a = Hub::start_with(opts).await;
    let b = Hub::join(&a).await;
    let began = std::time::Instant::now();
    let token = a.add_agent("w", &[]).await;
    let mut agent = Agent::spawn(&a.url, "w", &token, 1, &[]);
    a.wait_connected("w").await;
    assert!(holds(&a, "w").await && !holds(&b, "w").await, "the agent is the first hub's");

    // Mail sent through the other hub reaches the agent, which reads it.
    let (code, sent) = b.post("/messages", json!({"to": "agent:w", "body": "hello from b"})).await;
    assert_eq!(code, 201, "{sent}");
    b.wait_until("the agent to take mail sent through the other hub", || async {
        let mail = b.get("/messages?to=agent:w").await;
        mail[0]["delivered_at"].is_string().then_some(())
    })
    .await;

    // A cancel given to the other hub stops the run, all of its processes.
    let id = b.shell_task("sleep 300 & echo \"pgid $$\"; wait").await;
    let out = a.wait_output(&id, "pgid ").await;
    let pgid: i32 = out.trim().strip_prefix("pgid ").expect("a group").parse().expect("a number");
    let (code, body) = b.post(&format!("/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(code, 200, "{body}");
    let task = b.wait_state(&id, &["cancelled"]).await;
    assert_eq!(task["attempts_detail"][0]["outcome"], "cancelled", "{task}");
    assert_eq!(crate::harness::live_members(pgid), Vec::<i32>::new(), "the cancelled run's processes ended");

    // A setting changed on one hub is in force on the other.
    let (code, body) = a.request(reqwest::Method::PUT, "/config", Some(json!({"retention.events": "12h"}))).await;
    assert_eq!(code, 200, "{body}");
    b.wait_until("the other hub to put the setting in force", || async {
        let config = b.get("/config").await;
        let settings = config["settings"].as_array().cloned().unwrap_or_default();
        settings.iter().any(|s| s["key"] == "retention.events" && s["value"] == "12h").then_some(())
    })
    .await;

    // Dispatch paused on one hub is paused on both; resumed on the other, on both.
    let (code, body) = a.post("/admin/pause", json!({})).await;
    assert_eq!(code, 200, "{body}");
    b.wait_until("the other hub to pause", || async {
        (b.get("/status").await["dispatch_paused"] == true).then_some(())
    })
    .await;
    let held = b.shell_task("echo held").await;
    let (code, body) = b.post("/admin/resume", json!({})).await;
    assert_eq!(code, 200, "{body}");
    a.wait_until("the first hub to resume", || async {
        (a.get("/status").await["dispatch_paused"] == false).then_some(())
    })
    .await;
    assert_eq!(a.wait_state(&held, &["succeeded", "failed"]).await["state"], "succeeded");
    let started = a.events(&format!("task={held}&kind=task.assigned")).await;
    assert!(!started.is_empty(), "handed out once dispatch resumed");

    // A drain asked of the other hub reaches the agent, which finishes and leaves.
    let (code, body) = b.post("/agents/w/drain", json!({})).await;
    assert_eq!(code, 200, "a drain for an agent another hub holds: {body}");
    let process = agent.process.as_mut().expect("the agent runs");
    let status = tokio::time::timeout(crate::harness::PATIENCE, process.wait()).await.expect("the agent stops");
    assert_eq!(status.expect("its status").code(), Some(0), "a drained agent exits cleanly");

    // Hubs wake each other for changes only: a pass that wrote nothing
    // wakes nobody, so idle hubs do not keep each other busy.
    let workers = b.get("/status").await["workers"].clone();
    let changes = workers.as_array().expect("workers").iter().find(|w| w["name"] == "changes").cloned();
    let passes = changes.expect("the changes worker")["passes"].as_f64().expect("a count");
    let secs = began.elapsed().as_secs_f64();
    assert!(passes < 50.0 * secs.max(1.0), "{passes} passes of the changes worker in {secs:.1} s");
}

/// The scheduled tasks `hub` lists, as the due time of each firing (from its idempotency key, `schedule:ID:DUE`), in order.
async fn firings(hub: &Hub) -> Vec<i64> {
    let list = hub.get("/tasks?limit=1000").await;
    let items = list["tasks"].as_array().expect("a page of tasks").clone();
    let mut dues: Vec<i64> = items
        .iter()
        .filter_map(|t| t["idempotency_key"].as_str()?.strip_prefix("schedule:")?.split(':').nth(1)?.parse().ok())
        .collect();
    dues.sort_unstable();
    dues
}

/// Pauses schedule `name` through `hub`; from then on it fires no more.
async fn stop_schedule(hub: &Hub, name: &str) {
    let (code, body) = hub.post(&format!("/schedules/{name}/pause"), json!({})).await;
    assert_eq!(code, 200, "{body}");
}

/// Every tick of `dues` fired once, none skipped: two seconds apart.
fn once_per_tick(dues: &[i64], fired: usize) {
    assert_eq!(fired, dues.len(), "one schedule.fired event per task: {dues:?}");
    for pair in dues.windows(2) {
        assert_eq!(pair[1] - pair[0], 2000, "each tick once, none skipped: {dues:?}");
    }
}

fn every_two_seconds() -> Value {
    json!({"name": "tick", "cron": "*/2 * * * * *", "task": {"prompt": "echo tick", "runner": "shell"}})
}

/// Three hubs on one database, each free to fire the schedule, fire each
/// of its ticks exactly once, over a run of ticks.
#[tokio::test]
async fn a_schedule_fires_exactly_once_per_tick_across_three_hubs() {
    let db = scratch().await;
    let all = hubs_on(&db, 3).await;
    let (code, body) = all[1].post("/schedules", every_two_seconds()).await;
    assert_eq!(code, 201, "{body}");
    all[2].wait_until("eight ticks", || async { (firings(&all[2]).await.len() >= 8).then_some(()) }).await;
    stop_schedule(&all[0], "tick").await;
    let dues = firings(&all[1]).await;
    let fired = all[2].events("kind=schedule.fired").await.len();
    once_per_tick(&dues, fired);
}

/// A leader stopped with SIGSTOP loses its duties to another hub; woken
/// after they moved, it fires no schedule and reclaims no lease: every tick
/// still fired once, and a task running meanwhile finishes in one attempt.
#[tokio::test]
async fn a_stopped_leader_woken_after_its_duties_moved_acts_on_none_of_them() {
    let db = scratch().await;
    let opts = HubOpts { database: Some(db.url().to_owned()), ..HubOpts::default() };
    let mut a = Hub::start_with(opts).await;
    let b = Hub::join(&a).await;
    let a_id = a
        .wait_until("the first hub to lead", || async {
            hubs(&a).await.into_iter().find(|h| h.1 && h.2.iter().any(|d| d == "schedules")).map(|h| h.0)
        })
        .await;
    let token = b.add_agent("w", &[]).await;
    let _agent = Agent::spawn(&b.url, "w", &token, 2, &[]);
    b.wait_connected("w").await;
    let (code, body) = a.post("/schedules", every_two_seconds()).await;
    assert_eq!(code, 201, "{body}");
    a.wait_until("two ticks fired by the leader", || async { (firings(&a).await.len() >= 2).then_some(()) }).await;

    // A run that spans the leader's pause: its lease must not be reclaimed.
    let gate = tempfile::tempdir().expect("a directory");
    let go = gate.path().join("go");
    let id = b.shell_task(&format!("while [ ! -e {} ]; do sleep 0.05; done; echo done", go.display())).await;
    b.wait_state(&id, &["running"]).await;

    a.process.as_ref().expect("the first hub runs").signal(libc::SIGSTOP);
    b.wait_until("the other hub to take every duty", || async {
        let list = hubs(&b).await;
        let moved = duties_led_once(&list).is_some() && list.iter().all(|h| h.0 != a_id || (!h.1 && h.2.is_empty()));
        moved.then_some(())
    })
    .await;
    let before = firings(&b).await.len();
    b.wait_until("two ticks fired by the new leader", || async {
        (firings(&b).await.len() >= before + 2).then_some(())
    })
    .await;

    // Woken, the old leader finds its leases gone and acts on none of them.
    a.process.as_ref().expect("the first hub runs").signal(libc::SIGCONT);
    b.wait_until("the woken hub to beat again", || async {
        hubs(&b).await.into_iter().any(|h| h.0 == a_id && h.1).then_some(())
    })
    .await;
    let woke = firings(&b).await.len();
    b.wait_until("two more ticks", || async { (firings(&b).await.len() >= woke + 2).then_some(()) }).await;
    stop_schedule(&b, "tick").await;
    std::fs::write(&go, "").expect("the word");
    let task = b.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!((task["state"].as_str(), task["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{task}");
    assert!(b.events("kind=task.reclaimed").await.is_empty(), "no lease was reclaimed");
    let dues = firings(&b).await;
    let fired = b.events("kind=schedule.fired").await.len();
    assert_eq!(fired, dues.len(), "one schedule.fired event per task: {dues:?}");
    let mut distinct = dues.clone();
    distinct.dedup();
    assert_eq!(distinct, dues, "no tick fired twice");
    a.terminate().await;
}

/// The test's network namespace and a new one, joined by a veth pair: the
/// hubs listen on `hub_ip` here; agents run in `ns` and reach them over the
/// pair as over a network. Removed on drop (the pair goes with the namespace).
struct Veth {
    ns: String,
    hub_ip: String,
}

impl Veth {
    /// Made with `ip`, as root; the error says which step the kernel refused.
    async fn make() -> Result<Veth, String> {
        let id = std::process::id();
        let ns = format!("muster-{id}");
        let (here, there) = (format!("mst{}a", id % 100_000), format!("mst{}b", id % 100_000));
        let net = format!("10.231.{}", id % 250);
        let veth = Veth { ns: ns.clone(), hub_ip: format!("{net}.1") };
        let steps: Vec<Vec<String>> = [
            vec!["netns", "add", &ns],
            vec!["link", "add", &here, "type", "veth", "peer", "name", &there],
            vec!["link", "set", &there, "netns", &ns],
            vec!["addr", "add", &format!("{net}.1/24"), "dev", &here],
            vec!["link", "set", &here, "up"],
            vec!["netns", "exec", &ns, "ip", "addr", "add", &format!("{net}.2/24"), "dev", &there],
            vec!["netns", "exec", &ns, "ip", "link", "set", &there, "up"],
            vec!["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
        ]
        .into_iter()
        .map(|step| step.into_iter().map(str::to_owned).collect())
        .collect();
        for step in steps {
            let mut cmd = tokio::process::Command::new("ip");
            cmd.args(&step).stdin(std::process::Stdio::null());
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            let (code, out, err) = crate::harness::run_to_end(&mut cmd, crate::harness::PATIENCE).await;
            if code != 0 {
                return Err(format!("`ip {}` failed ({code}): {}{}", step.join(" "), out.trim(), err.trim()));
            }
        }
        Ok(veth)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// The deployment the docs describe, end to end: two hubs on PostgreSQL
/// behind TLS, listening off the loopback; an agent on another network (a
/// namespace joined by a veth pair) given both; one hub killed mid-run: the
/// agent moves to the other and every task finishes once.
#[tokio::test]
async fn two_hubs_behind_tls_serve_an_agent_on_another_network_through_the_death_of_one() {
    let test = "hubs::two_hubs_behind_tls_serve_an_agent_on_another_network_through_the_death_of_one";
    let has_ip =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("ip").is_file()));
    if !has_ip {
        return crate::harness::skip(test, crate::harness::Missing::Dependency("ip (Debian iproute2)"));
    }
    let veth = match Veth::make().await {
        Ok(v) => v,
        Err(why) => {
            let why = format!("cannot make a network namespace and veth pair: {why}");
            return crate::harness::skip(test, crate::harness::Missing::Kernel(&why));
        }
    };
    let certs = tempfile::tempdir().expect("a directory");
    let (ca, cert, key) = crate::tls::issue_for(certs.path(), "net", &[&veth.hub_ip]);
    let leak = crate::tls::leak;
    let extra: &'static [&'static str] = Box::leak(
        vec!["--tls-cert", leak(crate::harness::path_str(&cert)), "--tls-key", leak(crate::harness::path_str(&key))]
            .into_boxed_slice(),
    );
    let db = scratch().await;
    let opts = HubOpts {
        database: Some(db.url().to_owned()),
        ca: Some(ca.clone()),
        extra,
        listen: leak(format!("{}:0", veth.hub_ip)),
        ..HubOpts::default()
    };
    let mut a = Hub::start_with(opts).await;
    let b = Hub::join(&a).await;
    assert!(a.url.starts_with(&format!("https://{}:", veth.hub_ip)), "{}", a.url);

    let token = a.add_agent("far", &[]).await;
    let env = vec![("MUSTER_CA".to_owned(), crate::harness::path_str(&ca))];
    let agent_opts = AgentOpts { slots: 3, env, netns: Some(&veth.ns), ..AgentOpts::default() };
    let _agent = Agent::spawn_with(&format!("{},{}", a.url, b.url), "far", &token, agent_opts);
    a.wait_connected("far").await;
    assert!(holds(&a, "far").await, "the agent reached the first hub over the veth pair");

    // Work submitted to both hubs; three runs hold on until the test's word.
    let gate = tempfile::tempdir().expect("a directory");
    let go = gate.path().join("go");
    let mut ids = Vec::new();
    for k in 0..8 {
        let hub = if k % 2 == 0 { &a } else { &b };
        ids.push(hub.shell_task(&format!("while [ ! -e {} ]; do sleep 0.05; done; echo task {k}", go.display())).await);
    }
    b.wait_until("three runs under way", || async {
        let list = b.get("/tasks?state=running").await;
        (list["tasks"].as_array().map_or(0, Vec::len) == 3).then_some(())
    })
    .await;
    a.kill9().await;
    b.wait_until("the agent to move to the other hub", || async { holds(&b, "far").await.then_some(()) }).await;
    std::fs::write(&go, "").expect("the word");
    for (k, id) in ids.iter().enumerate() {
        let task = b.wait_state(id, &["succeeded", "failed"]).await;
        assert_eq!((task["state"].as_str(), task["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{task}");
        assert_eq!(b.output(id).await.trim(), format!("task {k}"), "its output, once");
        let started = b.events(&format!("task={id}&kind=task.started")).await;
        assert_eq!(started.len(), 1, "started once: {started:?}");
    }
}

/// A dashboard session started on one hub is good on every hub on the
/// database, and signing out on any of them ends it on all.
#[tokio::test]
async fn a_dashboard_session_is_good_on_every_hub_until_signed_out_on_any() {
    let db = scratch().await;
    let a = Hub::start_with(HubOpts { database: Some(db.url().to_owned()), ..HubOpts::default() }).await;
    let b = Hub::join(&a).await;
    let http = reqwest::Client::new();
    let session = |hub: &Hub| format!("{}/api/v1/ui/session", hub.url);
    let signed = http
        .post(session(&a))
        .header("origin", &a.url)
        .header("host", a.addr.to_string())
        .json(&json!({ "token": a.token }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(signed.status(), 200);
    let cookie =
        signed.headers()["set-cookie"].to_str().expect("ASCII").split(';').next().expect("a cookie").to_owned();
    let whoami = |hub: &Hub| {
        let (http, url, cookie) = (http.clone(), session(hub), cookie.clone());
        async move { http.get(url).header("cookie", cookie).send().await.expect("an answer").status().as_u16() }
    };
    assert_eq!((whoami(&a).await, whoami(&b).await), (200, 200), "signed in on both hubs");
    let out = http
        .delete(session(&b))
        .header("cookie", &cookie)
        .header("origin", &b.url)
        .header("host", b.addr.to_string())
        .send()
        .await
        .expect("an answer");
    assert!(out.status().is_success(), "{}", out.status());
    assert_eq!((whoami(&a).await, whoami(&b).await), (401, 401), "signed out on both hubs");
}
