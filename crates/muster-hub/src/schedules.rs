//! Schedules: cron patterns, in a time zone, that create tasks.
//!
//! The dispatch loop fires what is due. A schedule that fires within
//! `ON_TIME` of its time is on time; one found further behind missed its
//! runs while the hub was down, and its policy says whether they are
//! skipped or run once. Either way it moves on to its next time after now,
//! in the same transaction as the task it creates.

use crate::Hub;
use crate::error::{ApiError, ApiResult};
use crate::new_task_id;
use chrono::{Datelike, TimeZone};
use muster_core::{Millis, RunnerName};
use muster_proto::api::{ScheduleView, TaskDefaults, TaskSubmit};
use muster_proto::timestamp;
use muster_store::{Firing, ScheduleRecord};
use std::time::Duration;

/// A firing this late is still on time; later, its runs were missed.
pub(crate) const ON_TIME: Duration = Duration::from_secs(60);

/// A parsed pattern and its zone.
pub(crate) struct When {
    cron: croner::Cron,
    pub(crate) tz: chrono_tz::Tz,
}

impl When {
    pub(crate) fn parse(cron: &str, tz: &str) -> Result<When, ApiError> {
        let pattern = match cron.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(pattern)
            .map_err(|e| ApiError::bad("cron", format!("{cron:?} is not a cron pattern: {e}")))?;
        let tz: chrono_tz::Tz = tz.parse().map_err(|_| {
            ApiError::bad("tz", format!("{tz:?} is not a time zone; use an IANA name such as UTC or Europe/Paris"))
        })?;
        Ok(When { cron, tz })
    }

    /// The first time strictly after `after`, if the pattern has one.
    pub(crate) fn next_after(&self, after: Millis) -> Option<Millis> {
        let at = self.tz.timestamp_millis_opt(after.0).single()?;
        // A pattern with no day left to fire on would make the search walk
        // every day to the year 5000, which takes most of a second; this
        // answers the same in microseconds.
        self.first_year_from(at.year())?;
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        Some(Millis(next.timestamp_millis()))
    }

    /// The first year from `year` with a day and a time of day the pattern
    /// fires on, if any. A year's calendar depends only on whether it is a
    /// leap year and the weekday it starts on, so at most 14 kinds of year
    /// are ever looked at day by day.
    fn first_year_from(&self, year: i32) -> Option<i32> {
        let p = &self.cron.pattern;
        let any = |n: u32, matches: &dyn Fn(u32) -> Result<bool, croner::errors::CronError>| {
            (0..n).any(|v| matches(v).unwrap_or(false))
        };
        if !any(24, &|h| p.hour_match(h)) || !any(60, &|m| p.minute_match(m)) || !any(60, &|s| p.second_match(s)) {
            return None;
        }
        let mut seen = [false; 14];
        for y in year..=croner::YEAR_UPPER_LIMIT {
            if !p.year_match(y).unwrap_or(false) {
                continue;
            }
            let jan1 = chrono::NaiveDate::from_ymd_opt(y, 1, 1)?;
            let kind = usize::from(jan1.leap_year()) * 7 + jan1.weekday().num_days_from_sunday() as usize;
            if std::mem::replace(&mut seen[kind], true) {
                continue;
            }
            let fires = jan1.iter_days().take_while(|d| d.year() == y).any(|d| {
                p.month_match(d.month()).unwrap_or(false)
                    && p.day_match(y, d.month(), d.day(), weekday(d)).unwrap_or(false)
            });
            if fires {
                return Some(y);
            }
            if seen.iter().all(|s| *s) {
                return None;
            }
        }
        None
    }

    /// How many times it fell in `[from, to]`, counting up to `cap`.
    fn count_between(&self, from: Millis, to: Millis, cap: usize) -> usize {
        let mut n = 0;
        let mut at = Some(Millis(from.0 - 1));
        while let Some(t) = at.and_then(|a| self.next_after(a)) {
            if t > to || n >= cap {
                break;
            }
            n += 1;
            at = Some(t);
        }
        n
    }
}

pub(crate) fn weekday(d: chrono::NaiveDate) -> croner::Weekday {
    croner::Weekday::from_days_from_sunday(d.weekday().num_days_from_sunday())
}

/// When a pattern read in a time zone fires first after `after`, or why
/// it cannot be read: the same reading `muster schedule add` gives it.
pub fn next_firing(cron: &str, tz: &str, after: Millis) -> Result<Option<Millis>, String> {
    Ok(When::parse(cron, tz).map_err(|e| e.to_string())?.next_after(after))
}

pub(crate) fn defaults(hub: &Hub) -> TaskDefaults {
    let config = &hub.shared.config;
    TaskDefaults {
        runner: hub.runtime().default_runner,
        timeout: config.default_timeout,
        max_attempts: config.default_max_attempts,
    }
}

/// The task a schedule creates, checked as `POST /api/v1/tasks` would.
pub(crate) fn spec_of(hub: &Hub, task: &TaskSubmit) -> ApiResult<muster_core::TaskSpec> {
    if !task.depends_on.is_empty() || task.idempotency_key.is_some() || !task.shadow.is_empty() {
        return Err(ApiError::bad("task", "a scheduled task cannot name depends_on, idempotency_key or shadow"));
    }
    let mut spec = task.clone().into_spec(&defaults(hub)).map_err(|mut e| {
        e.field = format!("task.{}", e.field);
        e
    })?;
    let known = hub.shared.known_runners.lock().expect("runners lock poisoned");
    if !known.contains(&spec.runner) {
        let names: Vec<&str> = known.iter().map(RunnerName::as_str).collect();
        return Err(ApiError::bad(
            "task.runner",
            format!("unknown runner {:?}; known runners: {}", spec.runner.as_str(), names.join(", ")),
        ));
    }
    spec.requires_approval |= hub.shared.runtime.borrow().approval_runners.contains(&spec.runner);
    Ok(spec)
}

pub(crate) fn view(s: &ScheduleRecord) -> ScheduleView {
    ScheduleView {
        id: s.id,
        name: s.name.clone(),
        cron: s.cron.clone(),
        tz: s.tz.clone(),
        missed: s.missed.clone(),
        paused: s.paused,
        next_at: s.next_at.map(timestamp),
        last_at: s.last_at.map(timestamp),
        last_task: s.last_task.as_ref().map(|t| t.to_string()),
        task: serde_json::from_str(&s.template).unwrap_or_default(),
        created_by: s.created_by.clone(),
        created_at: timestamp(s.created_at),
    }
}

impl Hub {
    /// Fires every schedule that is due; returns how many tasks it created.
    pub(crate) async fn fire_schedules_once(&self) -> Result<usize, muster_store::StoreError> {
        // A hub on its way down creates no work; what falls due is fired, or
        // missed, by the next one.
        if self.shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(0);
        }
        let now = self.now();
        match self.shared.store.next_schedule_at().await? {
            Some(next) if next <= now => {}
            _ => return Ok(0),
        }
        if !self.lead(muster_store::Duty::Schedules).await? {
            return Ok(0);
        }
        let mut created = 0;
        for s in self.shared.store.due_schedules(now).await? {
            let Some(due) = s.next_at else { continue };
            let firing = match self.firing(&s, due, now) {
                Ok(f) => f,
                Err(why) => {
                    // A schedule that cannot fire any more (its runner went away, say) waits, paused, for a person.
                    tracing::error!(schedule = %s.name, error = %why, "cannot fire the schedule; pausing it");
                    self.shared.store.set_schedule_paused(&s.id.to_string(), true, None, "muster", now).await?;
                    continue;
                }
            };
            match self.shared.store.fire_schedule(firing, now).await? {
                Some(Some(task)) => {
                    tracing::info!(schedule = %s.name, task_id = %task.id, "schedule fired");
                    created += 1;
                }
                Some(None) => tracing::warn!(schedule = %s.name, "missed runs skipped"),
                None => {}
            }
        }
        if created > 0 {
            self.wake_dispatcher();
        }
        Ok(created)
    }

    fn firing(&self, s: &ScheduleRecord, due: Millis, now: Millis) -> Result<Firing, String> {
        let when = When::parse(&s.cron, &s.tz).map_err(|e| format!("{e:?}"))?;
        let template: TaskSubmit = serde_json::from_str(&s.template).map_err(|e| format!("bad template: {e}"))?;
        let spec = spec_of(self, &template).map_err(|e| format!("{e:?}"))?;
        let next_at = when.next_after(now);
        let late = now.since(due);
        let (run, note) = if late <= ON_TIME {
            (true, "on time".to_owned())
        } else {
            let missed = when.count_between(due, now, 10_000);
            let runs = if missed == 1 { "1 run".to_owned() } else { format!("{missed} runs") };
            match s.missed.as_str() {
                "run_once" => (true, format!("{runs} missed while the hub was down; ran once")),
                _ => (false, format!("{runs} missed while the hub was down; skipped")),
            }
        };
        let task = if run {
            let id = new_task_id(now).map_err(|e| format!("{e:?}"))?;
            Some((id, spec))
        } else {
            None
        };
        Ok(Firing { schedule: s.id, due, next_at, task, note })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, HubConfig};
    use muster_store::sqlite::SqliteStore;
    use muster_store::{NewSchedule, Store};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A clock the test moves by hand.
    struct Hand(AtomicI64);

    impl Clock for Hand {
        fn now(&self) -> Millis {
            Millis(self.0.load(Ordering::SeqCst))
        }
    }

    /// 2026-11-21T10:00:00Z.
    const START: i64 = 1_795_255_200_000;

    async fn hub(dir: &std::path::Path) -> (Hub, Arc<Hand>) {
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.join("muster.db"), Default::default()).expect("a store"));
        let clock = Arc::new(Hand(AtomicI64::new(START)));
        let config = HubConfig { data_dir: dir.to_path_buf(), ..HubConfig::default() };
        let hub = Hub::new(store, config, clock.clone()).await.expect("a hub");
        (hub, clock)
    }

    fn submit(prompt: &str) -> TaskSubmit {
        TaskSubmit { prompt: prompt.into(), runner: Some("shell".into()), ..TaskSubmit::default() }
    }

    async fn add(hub: &Hub, name: &str, cron: &str, tz: &str, missed: &str) -> ScheduleRecord {
        let when = When::parse(cron, tz).expect("a pattern");
        let new = NewSchedule {
            name: name.into(),
            cron: cron.into(),
            tz: tz.into(),
            template: serde_json::to_string(&submit(&format!("echo {name}"))).expect("json"),
            missed: missed.into(),
            next_at: when.next_after(hub.now()),
            created_by: "admin".into(),
        };
        hub.shared.store.add_schedule(new, hub.now()).await.expect("added")
    }

    #[test]
    fn patterns_fire_in_their_time_zone() {
        let when = When::parse("0 9 * * *", "Europe/Paris").unwrap();
        // 10:00 UTC is 11:00 in Paris: the next 09:00 there is 08:00 UTC tomorrow.
        assert_eq!(when.next_after(Millis(START)), Some(Millis(START + 22 * 3_600_000)));
        let hourly = When::parse("@hourly", "UTC").unwrap();
        assert_eq!(hourly.next_after(Millis(START)), Some(Millis(START + 3_600_000)));
        assert_eq!(hourly.count_between(Millis(START), Millis(START + 5 * 3_600_000), 100), 6);
        assert!(When::parse("61 * * * *", "UTC").is_err());
        assert!(When::parse("* * * * *", "Mars/Olympus").is_err());
    }

    /// Patterns with no time left to fire on are answered without walking
    /// the calendar to the search's limit, and rare ones are still found.
    #[test]
    fn patterns_that_never_fire_are_known_at_once_and_rare_ones_are_found() {
        for never in [
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "* 1 , 8 * 1 *",
            " 0 ,, */5 */5 * * * ",
            "0 0 0 1 1 * 2020",
            "0 0 0 29 2 * 2100",
            "0 0 0 29 2 +1 2101-2103",
        ] {
            let when = When::parse(never, "UTC").unwrap_or_else(|e| panic!("{never:?}: {e:?}"));
            assert_eq!(when.next_after(Millis(START)), None, "{never:?}");
        }
        let at = |cron: &str| {
            let when = When::parse(cron, "UTC").unwrap_or_else(|e| panic!("{cron:?}: {e:?}"));
            let next = when.next_after(Millis(START)).unwrap_or_else(|| panic!("{cron:?} fires"));
            chrono::DateTime::from_timestamp_millis(next.0).unwrap().format("%Y-%m-%d %a").to_string()
        };
        // Friday the 13th, with the day-of-week field's `+` meaning both.
        assert_eq!(at("0 0 13 * +5"), "2027-08-13 Fri");
        // Without it, either field: the 13th or any Friday.
        assert_eq!(at("0 0 13 * 5"), "2026-11-27 Fri");
        assert_eq!(at("0 0 29 2 +1"), "2044-02-29 Mon");
        assert_eq!(at("0 0 L 2 *"), "2027-02-28 Sun");
        assert_eq!(at("0 0 * * 5#5"), "2027-01-29 Fri");
        assert_eq!(at("0 0 0 1 1 * 4999"), "4999-01-01 Tue");
        assert_eq!(at("0 0 0 29 2 * 2100-2104"), "2104-02-29 Fri");
    }

    #[tokio::test]
    async fn a_schedule_fires_on_the_clock_and_missed_runs_follow_its_policy() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, clock) = hub(dir.path()).await;
        let hourly = add(&hub, "hourly", "0 * * * *", "UTC", "skip").await;
        let catch_up = add(&hub, "catch-up", "0 * * * *", "UTC", "run_once").await;
        assert_eq!(hourly.next_at, Some(Millis(START + 3_600_000)));
        assert_eq!(hub.fire_schedules_once().await.unwrap(), 0, "nothing is due yet");

        clock.0.store(START + 3_600_000 + 2_000, Ordering::SeqCst);
        assert_eq!(hub.fire_schedules_once().await.unwrap(), 2, "both fire on time");
        assert_eq!(hub.fire_schedules_once().await.unwrap(), 0, "and once only");
        let s = hub.shared.store.schedule("hourly").await.unwrap().unwrap();
        assert_eq!(s.next_at, Some(Millis(START + 2 * 3_600_000)));
        let task = hub.shared.store.task(s.last_task.as_ref().unwrap()).await.unwrap().unwrap();
        assert_eq!(task.spec.prompt, "echo hourly");

        // The hub was down for three hours: four runs fell due.
        clock.0.store(START + 5 * 3_600_000 + 30 * 60_000, Ordering::SeqCst);
        assert_eq!(hub.fire_schedules_once().await.unwrap(), 1, "run_once runs once; skip runs none");
        let after_skip = hub.shared.store.schedule("hourly").await.unwrap().unwrap();
        assert_eq!(after_skip.last_task, s.last_task, "skipped: no new task");
        assert_eq!(after_skip.next_at, Some(Millis(START + 6 * 3_600_000)), "on to the next time after now");
        let ran = hub.shared.store.schedule(&catch_up.id.to_string()).await.unwrap().unwrap();
        assert_ne!(ran.last_task, None);
        let events =
            hub.shared.store.events(&muster_store::EventFilter { limit: 1000, ..Default::default() }).await.unwrap();
        let fired: Vec<&str> =
            events.iter().filter(|e| e.kind == "schedule.fired").filter_map(|e| e.detail.as_deref()).collect();
        assert!(
            fired.iter().any(|d| d.starts_with("hourly: no task (4 runs missed while the hub was down; skipped)")),
            "{fired:?}"
        );
        assert!(fired.iter().any(|d| d.contains("4 runs missed while the hub was down; ran once")), "{fired:?}");

        // Paused, it does not fire; resumed, it goes on from now.
        hub.shared.store.set_schedule_paused("hourly", true, None, "admin", hub.now()).await.unwrap();
        clock.0.store(START + 6 * 3_600_000 + 1_000, Ordering::SeqCst);
        assert_eq!(hub.fire_schedules_once().await.unwrap(), 1, "only catch-up");
    }
}
