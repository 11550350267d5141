//! The SQLite schema, as an ordered list of migrations.
//!
//! `PRAGMA user_version` records how many have been applied. Each migration
//! runs in its own transaction, so a crash mid-migration leaves the previous
//! version intact. Migrations are only ever appended.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the foundation.
    r#"
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    scope         TEXT NOT NULL CHECK (scope IN ('admin', 'agent')),
    agent         TEXT,
    hash          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);

CREATE TABLE agents (
    name                    TEXT PRIMARY KEY,
    token_id                TEXT NOT NULL REFERENCES tokens(id),
    capabilities            TEXT NOT NULL DEFAULT '',
    announced_capabilities  TEXT NOT NULL DEFAULT '',
    runners                 TEXT NOT NULL DEFAULT '',
    slots                   INTEGER NOT NULL DEFAULT 0,
    version                 TEXT,
    connected               INTEGER NOT NULL DEFAULT 0,
    session                 INTEGER NOT NULL DEFAULT 0,
    paused                  INTEGER NOT NULL DEFAULT 0,
    draining                INTEGER NOT NULL DEFAULT 0,
    last_seen_at            INTEGER,
    created_at              INTEGER NOT NULL
);

CREATE TABLE tasks (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    prompt            TEXT NOT NULL,
    runner            TEXT NOT NULL,
    capabilities      TEXT NOT NULL,
    priority          INTEGER NOT NULL,
    timeout_ms        INTEGER NOT NULL,
    max_attempts      INTEGER NOT NULL,
    idempotency_key   TEXT UNIQUE,
    metadata          TEXT,
    state             TEXT NOT NULL,
    attempts          INTEGER NOT NULL,
    epoch             INTEGER NOT NULL,
    lease_agent       TEXT,
    lease_epoch       INTEGER,
    lease_expires_at  INTEGER,
    ready_at          INTEGER NOT NULL,
    cancel_requested  INTEGER NOT NULL,
    exit_code         INTEGER,
    reason            TEXT,
    agent             TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER
);
CREATE INDEX tasks_queue ON tasks (priority, seq) WHERE state = 'queued';
CREATE INDEX tasks_ready ON tasks (ready_at) WHERE state = 'queued';
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX tasks_lease_agent ON tasks (lease_agent) WHERE lease_agent IS NOT NULL;
CREATE INDEX tasks_state ON tasks (state, seq);

CREATE TABLE task_caps (
    task_id  TEXT NOT NULL,
    cap      TEXT NOT NULL,
    PRIMARY KEY (task_id, cap)
) WITHOUT ROWID;

CREATE TABLE attempts (
    task_id           TEXT NOT NULL,
    epoch             INTEGER NOT NULL,
    number            INTEGER NOT NULL,
    agent             TEXT NOT NULL,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    outcome           TEXT,
    exit_code         INTEGER,
    reason            TEXT,
    output_bytes      INTEGER NOT NULL DEFAULT 0,
    output_truncated  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, epoch)
) WITHOUT ROWID;

CREATE TABLE output (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT NOT NULL,
    epoch    INTEGER NOT NULL,
    stream   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    data     BLOB NOT NULL
);
CREATE INDEX output_task ON output (task_id, seq);

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    task_id TEXT,
    agent   TEXT,
    epoch   INTEGER,
    state   TEXT,
    detail  TEXT
);
CREATE INDEX events_task ON events (task_id, seq) WHERE task_id IS NOT NULL;
CREATE INDEX events_agent ON events (agent, seq) WHERE agent IS NOT NULL;
"#,
    // 2: health reads recent outcomes by time.
    r#"
CREATE INDEX attempts_finished ON attempts (finished_at) WHERE finished_at IS NOT NULL;
"#,
    // 3: alerts and runtime settings.
    r#"
CREATE TABLE alerts (
    rule             TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    severity         TEXT NOT NULL,
    detail           TEXT,
    since            INTEGER,
    acknowledged_by  TEXT,
    acknowledged_at  INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX output_recent ON output (task_id, at);
"#,
    // 4: what each agent's doctor found at its latest connect.
    r#"
ALTER TABLE agents ADD COLUMN doctor TEXT;
"#,
    // 5: how long each attempt waited in the queue, for service level objectives.
    r#"
ALTER TABLE attempts ADD COLUMN waited_ms INTEGER;
CREATE INDEX attempts_started ON attempts (started_at);
"#,
    // 6: retention prunes finished tasks by age and keeps a note of pruned output.
    r#"
ALTER TABLE attempts ADD COLUMN output_pruned INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
"#,
    // 7: what coding agents did and used: steps, and each run's report.
    r#"
ALTER TABLE attempts ADD COLUMN steps INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN latest_step TEXT;
ALTER TABLE attempts ADD COLUMN reported INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN session_id TEXT;
ALTER TABLE attempts ADD COLUMN model TEXT;
ALTER TABLE attempts ADD COLUMN turns INTEGER;
ALTER TABLE attempts ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN cost_micro_usd INTEGER;
ALTER TABLE attempts ADD COLUMN result TEXT;
ALTER TABLE attempts ADD COLUMN tool_uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN tool_errors INTEGER NOT NULL DEFAULT 0;
CREATE TABLE steps (
    task_id      TEXT NOT NULL,
    epoch        INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT,
    summary      TEXT NOT NULL,
    is_error     INTEGER NOT NULL,
    duration_ms  INTEGER,
    PRIMARY KEY (task_id, epoch, seq)
) WITHOUT ROWID;
"#,
    // 8: tasks that run in a git worktree, and what changed there.
    r#"
ALTER TABLE tasks ADD COLUMN repo TEXT;
ALTER TABLE tasks ADD COLUMN base_ref TEXT;
ALTER TABLE tasks ADD COLUMN auto_commit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN keep_worktree TEXT;
ALTER TABLE attempts ADD COLUMN ws_repo TEXT;
ALTER TABLE attempts ADD COLUMN ws_branch TEXT;
ALTER TABLE attempts ADD COLUMN ws_base TEXT;
ALTER TABLE attempts ADD COLUMN ws_head TEXT;
ALTER TABLE attempts ADD COLUMN ws_commits TEXT;
ALTER TABLE attempts ADD COLUMN ws_files TEXT;
ALTER TABLE attempts ADD COLUMN ws_stat TEXT;
ALTER TABLE attempts ADD COLUMN ws_diff TEXT;
ALTER TABLE attempts ADD COLUMN ws_diff_truncated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN ws_kept_at TEXT;
ALTER TABLE attempts ADD COLUMN ws_error TEXT;
"#,
    // 9: a running attempt's live status, as its agent last reported it.
    r#"
ALTER TABLE attempts ADD COLUMN live TEXT;
ALTER TABLE attempts ADD COLUMN live_detail TEXT;
"#,
    // 10: output chunks compressed at rest (0 raw, 1 deflate).
    r#"
ALTER TABLE output ADD COLUMN encoding INTEGER NOT NULL DEFAULT 0;
"#,
    // 11: the ref that keeps what a run left uncommitted in its worktree.
    r#"
ALTER TABLE attempts ADD COLUMN ws_snapshot TEXT;
"#,
    // 12: circuit breakers per agent and per runner.
    r#"
CREATE TABLE breakers (
    scope       TEXT NOT NULL,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL,
    failures    INTEGER NOT NULL,
    opened_at   INTEGER,
    probe_task  TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
"#,
    // 13: fallback runners, the runner a lease and an attempt used, runners taken out of service.
    r#"
ALTER TABLE tasks ADD COLUMN fallback TEXT;
ALTER TABLE tasks ADD COLUMN lease_runner TEXT;
ALTER TABLE attempts ADD COLUMN runner TEXT;
CREATE TABLE runners_disabled (
    name    TEXT PRIMARY KEY,
    reason  TEXT NOT NULL,
    by      TEXT NOT NULL,
    at      INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // 14: a runner limited by its provider is out of service until a time.
    r#"
ALTER TABLE runners_disabled ADD COLUMN until INTEGER;
"#,
    // 15: what one run of a task may spend.
    r#"
ALTER TABLE tasks ADD COLUMN max_cost_micro_usd INTEGER;
ALTER TABLE tasks ADD COLUMN max_tokens INTEGER;
"#,
    // 16: what a generic runner's summary pattern found in its output.
    r#"
ALTER TABLE attempts ADD COLUMN summary TEXT;
"#,
    // 17: shadow runs, compared with the task they shadow.
    r#"
ALTER TABLE tasks ADD COLUMN shadow_of TEXT;
CREATE INDEX tasks_shadow ON tasks (shadow_of) WHERE shadow_of IS NOT NULL;
"#,
    // 18: tasks a person approves before they are queued.
    r#"
ALTER TABLE tasks ADD COLUMN requires_approval INTEGER NOT NULL DEFAULT 0;
"#,
    // 19: dependencies between tasks.
    r#"
ALTER TABLE tasks ADD COLUMN depends_on TEXT;
ALTER TABLE tasks ADD COLUMN on_dependency_failure TEXT NOT NULL DEFAULT 'fail';
CREATE TABLE task_deps (
    task_id  TEXT NOT NULL,
    dep_id   TEXT NOT NULL,
    PRIMARY KEY (dep_id, task_id)
) WITHOUT ROWID;
"#,
    // 20: named locks held by tasks, and the tasks waiting for them.
    r#"
CREATE TABLE locks (
    name     TEXT NOT NULL,
    task_id  TEXT NOT NULL,
    mode     TEXT NOT NULL,
    since    INTEGER NOT NULL,
    PRIMARY KEY (name, task_id)
) WITHOUT ROWID;
CREATE INDEX locks_task ON locks (task_id);
CREATE TABLE lock_waits (
    name     TEXT NOT NULL,
    task_id  TEXT NOT NULL,
    mode     TEXT NOT NULL,
    since    INTEGER NOT NULL,
    PRIMARY KEY (task_id, name)
) WITHOUT ROWID;
"#,
    // 21: decisions people answer, and the tasks that wait for them.
    r#"
CREATE TABLE decisions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         TEXT NOT NULL,
    question        TEXT NOT NULL,
    options         TEXT NOT NULL,
    default_option  TEXT,
    deadline        INTEGER,
    answerers       TEXT NOT NULL,
    raised_by       TEXT NOT NULL,
    epoch           INTEGER,
    park            INTEGER NOT NULL,
    state           TEXT NOT NULL,
    answer          TEXT,
    note            TEXT,
    answered_by     TEXT,
    created_at      INTEGER NOT NULL,
    closed_at       INTEGER
);
CREATE INDEX decisions_task ON decisions (task_id, state);
CREATE INDEX decisions_open ON decisions (state, deadline);
"#,
    // 22: pipelines, and which task runs each of their stages.
    r#"
CREATE TABLE pipelines (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE pipeline_stages (
    pipeline_id INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    templated   INTEGER NOT NULL,
    PRIMARY KEY (pipeline_id, position)
) WITHOUT ROWID;
CREATE UNIQUE INDEX pipeline_stages_task ON pipeline_stages (task_id);
"#,
    // 23: the files active runs change, and the conflicts between them.
    r#"
CREATE TABLE task_files (
    task_id  TEXT NOT NULL,
    repo     TEXT NOT NULL,
    path     TEXT NOT NULL,
    PRIMARY KEY (task_id, path)
) WITHOUT ROWID;
CREATE INDEX task_files_path ON task_files (repo, path);
CREATE TABLE conflicts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    repo         TEXT NOT NULL,
    files        TEXT NOT NULL,
    winner       TEXT NOT NULL,
    loser        TEXT NOT NULL,
    decision_id  INTEGER,
    resolution   TEXT,
    created_at   INTEGER NOT NULL,
    resolved_at  INTEGER
);
CREATE INDEX conflicts_winner ON conflicts (winner);
CREATE INDEX conflicts_loser ON conflicts (loser);
"#,
    // 24: checks a task declares, how they went per attempt, and regressions.
    r#"
ALTER TABLE tasks ADD COLUMN checks TEXT NOT NULL DEFAULT '';
CREATE TABLE check_results (
    task_id      TEXT NOT NULL,
    epoch        INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    repo         TEXT,
    commit_sha   TEXT,
    name         TEXT NOT NULL,
    passed       INTEGER NOT NULL,
    exit_code    INTEGER,
    duration_ms  INTEGER NOT NULL,
    output       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (task_id, epoch, position)
) WITHOUT ROWID;
CREATE INDEX check_results_repo ON check_results (repo, name, passed, at);
CREATE TABLE regressions (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    repo                TEXT NOT NULL,
    name                TEXT NOT NULL,
    task_id             TEXT NOT NULL,
    commit_sha          TEXT,
    passed_task_id      TEXT NOT NULL,
    passed_commit_sha   TEXT,
    at                  INTEGER NOT NULL,
    UNIQUE (task_id, name)
);
"#,
    // 25: cron schedules that create tasks.
    r#"
CREATE TABLE schedules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    cron        TEXT NOT NULL,
    tz          TEXT NOT NULL,
    template    TEXT NOT NULL,
    missed      TEXT NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER,
    last_at     INTEGER,
    last_task   TEXT,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX schedules_next ON schedules (paused, next_at);
"#,
    // 26: messages to agents, tasks and channels.
    r#"
CREATE TABLE channels (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient     TEXT NOT NULL,
    sender        TEXT NOT NULL,
    body          TEXT NOT NULL,
    thread        INTEGER NOT NULL,
    reply_to      INTEGER,
    created_at    INTEGER NOT NULL,
    delivered_at  INTEGER,
    read_at       INTEGER
);
CREATE INDEX messages_recipient ON messages (recipient, id);
CREATE INDEX messages_created ON messages (created_at);
"#,
    // 27: tasks a run created for its own task.
    r#"
CREATE TABLE followups (
    child   TEXT PRIMARY KEY,
    parent  TEXT NOT NULL,
    depth   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX followups_parent ON followups (parent);
"#,
    // 28: the task tree each follow-up belongs to, for the budget per tree.
    r#"
ALTER TABLE followups ADD COLUMN root TEXT NOT NULL DEFAULT '';
WITH RECURSIVE tree(child, root) AS (
    SELECT child, parent FROM followups WHERE parent NOT IN (SELECT child FROM followups)
    UNION ALL
    SELECT f.child, tree.root FROM followups f JOIN tree ON f.parent = tree.child
)
UPDATE followups SET root = (SELECT root FROM tree WHERE tree.child = followups.child);
CREATE INDEX followups_root ON followups (root);
"#,
    // 29: a row readiness rewrites to learn whether a commit reaches the disk.
    r#"
CREATE TABLE probe (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);
INSERT INTO probe (id, at) VALUES (1, 0);
"#,
    // 30: runs started in all, across retries (the number of the latest attempt).
    r#"
ALTER TABLE tasks ADD COLUMN runs INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET runs = (SELECT COUNT(*) FROM attempts WHERE attempts.task_id = tasks.id)
    WHERE EXISTS (SELECT 1 FROM attempts WHERE attempts.task_id = tasks.id);
"#,
    // 31: output the agent sent that never reached the store.
    r#"
ALTER TABLE attempts ADD COLUMN output_incomplete INTEGER NOT NULL DEFAULT 0;
"#,
    // 32: hubs on the database, the duties one of them leads, and which
    // hub holds each agent's socket.
    r#"
CREATE TABLE hubs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    url         TEXT NOT NULL,
    version     TEXT NOT NULL,
    ttl_ms      INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    seen_at     INTEGER NOT NULL,
    stopped_at  INTEGER
);
CREATE TABLE duties (
    duty        TEXT PRIMARY KEY,
    hub         TEXT,
    epoch       INTEGER NOT NULL,
    taken_at    INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
ALTER TABLE agents ADD COLUMN hub TEXT;
"#,
    // 33: messages one hub leaves for another to pass to an agent it holds.
    r#"
CREATE TABLE relays (
    id          INTEGER PRIMARY KEY,
    hub         TEXT NOT NULL,
    body        TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX relays_hub ON relays (hub);
"#,
    // 34: dashboard sessions, so every hub on the database knows them and
    // they outlive a restart.
    r#"
CREATE TABLE ui_sessions (
    key         TEXT PRIMARY KEY,
    token_id    TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
"#,
];

/// The schema version this build writes.
pub const CURRENT: usize = MIGRATIONS.len();

/// Applies the migrations this database has not seen yet.
pub fn migrate(conn: &mut Connection) -> Result<usize, crate::StoreError> {
    let applied: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if applied > CURRENT {
        return Err(crate::StoreError::Database(format!(
            "the database is at schema version {applied}, newer than this muster build knows ({CURRENT}); \
             upgrade muster"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied migration");
    }
    Ok(CURRENT - applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follow-ups made before the tree budget learn the root of their tree.
    #[test]
    fn follow_ups_from_before_the_budget_are_given_their_roots() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..27] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 27).unwrap();
        conn.execute_batch(
            "INSERT INTO followups (child, parent, depth) VALUES
                 ('a', 'r', 1), ('b', 'a', 2), ('c', 'b', 3), ('d', 'r', 1), ('e', 's', 1);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), CURRENT - 27);
        let roots: Vec<(String, String)> = conn
            .prepare("SELECT child, root FROM followups ORDER BY child")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want = [("a", "r"), ("b", "r"), ("c", "r"), ("d", "r"), ("e", "s")];
        assert_eq!(roots, want.map(|(c, r)| (c.to_owned(), r.to_owned())));
    }
}
