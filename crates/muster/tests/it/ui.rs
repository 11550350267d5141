//! The dashboard in a real browser: Debian's Chromium, driven by
//! playwright-core (`tests/ui/dashboard.mjs`). `.ci/run` installs both; a
//! machine without them skips these tests, says so and counts them
//! (`harness::skip`); with `CI` set they fail instead.

use crate::harness::{Hub, HubOpts};
use std::path::PathBuf;

/// The playwright-core module, or `None` (said loudly) when Chromium or Node is missing.
fn playwright(test: &str) -> Option<PathBuf> {
    let module =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-tests/node_modules/playwright-core/index.mjs");
    let chromium = std::path::Path::new("/usr/bin/chromium").exists();
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !chromium || !node {
        crate::harness::skip(
            test,
            crate::harness::Missing::Dependency("the dashboard's browser tests need /usr/bin/chromium and Node.js"),
        );
        return None;
    }
    assert!(
        module.exists(),
        "playwright-core is not installed in target/ui-tests: run .ci/run, or \
         `npm install --prefix target/ui-tests playwright-core@1.64.1`"
    );
    Some(module)
}

/// Runs `tests/ui/SCRIPT` against the hub and checks that each named step
/// passed and saved its screenshot; returns what the script printed.
async fn browse(module: &std::path::Path, hub: &Hub, script: &str, steps: &[&str]) -> String {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&shots).expect("the screenshot directory");
    let out = tokio::process::Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui").join(script))
        .env("HUB_URL", &hub.url)
        .env("ADMIN_TOKEN", &hub.token)
        .env("MUSTER_BIN", env!("CARGO_BIN_EXE_muster"))
        .env("SHOTS", &shots)
        .env("PLAYWRIGHT", module)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    for name in steps {
        assert!(stdout.contains(&format!("ok {name}\n")), "{name} did not pass:\n{stdout}");
        assert!(shots.join(format!("{name}.png")).exists(), "{name} saved no screenshot");
    }
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_signs_in_follows_the_fleet_live_and_acts_and_refuses_what_it_must() {
    let Some(module) =
        playwright("ui::the_dashboard_signs_in_follows_the_fleet_live_and_acts_and_refuses_what_it_must")
    else {
        return;
    };
    let hub = Hub::start_with(HubOpts {
        alert_interval: "100ms",
        extra: &["--window-interval", "500ms"],
        ..HubOpts::default()
    })
    .await;
    let steps = [
        "bad-token-refused",
        "signed-in",
        "agent-appears-live",
        "task-from-form-streams-its-log",
        "cancel-from-the-page",
        "retry-from-the-page",
        "alert-acknowledged-from-the-banner",
        "markup-in-output-is-text",
        "other-origin-refused",
        "agent-paused-and-resumed-from-its-card",
        "decision-answered-from-the-inbox",
        "lock-forced-free-from-the-page",
        "metrics-charts-of-the-last-hour",
        "admin-backs-up-from-the-page",
        "tasks-filtered-and-paged-on-the-server",
        "task-page-shows-steps-diff-tokens-and-cost",
        "timeline-filtered-by-kind-and-task",
        "reconnects-and-catches-up",
        "keyboard-and-dark-theme",
        "phone-answers-a-decision-and-acknowledges-an-alert",
        "phone-sized-overview",
    ];
    browse(&module, &hub, "dashboard.mjs", &steps).await;
}

/// 200 agents and 50,000 tasks in the store: the pages come from the server,
/// the timeline keeps only the rows in view in the page, live updates are
/// batched. What it measured is printed and saved, not judged.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_stays_usable_with_200_agents_and_50000_tasks() {
    let Some(module) = playwright("ui::the_dashboard_stays_usable_with_200_agents_and_50000_tasks") else { return };
    // The seeding sends 50,000 requests with the admin token as fast as it
    // can: what is measured is the page, not the per-token request rate.
    let hub = Hub::start_with(HubOpts { extra: &["--api-rate", "0"], ..HubOpts::default() }).await;
    let steps = [
        "fleet-overview",
        "fleet-tasks-paged",
        "fleet-tasks-searched",
        "fleet-timeline-virtual",
        "fleet-agents",
        "fleet-live-batched",
    ];
    let stdout = browse(&module, &hub, "fleet.mjs", &steps).await;
    eprintln!("{}", stdout.lines().filter(|l| l.starts_with("timings ")).collect::<Vec<_>>().join("\n"));
}
