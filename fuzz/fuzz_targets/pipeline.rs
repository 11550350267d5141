//! Pipeline files: any text is checked into stages or into problems, each
//! with a line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_core::{RunnerName, TaskId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else { return };
    let defaults = muster_proto::api::TaskDefaults {
        runner: RunnerName::parse("shell").ok(),
        timeout: Duration::from_secs(60),
        max_attempts: 3,
    };
    let known: BTreeSet<RunnerName> = ["shell", "claude"].iter().filter_map(|r| RunnerName::parse(r).ok()).collect();
    let mut n = 0u128;
    let mut new_id = || {
        n += 1;
        TaskId::from_parts(1_700_000_000_000, n)
    };
    let _ = muster_hub::pipeline::check(source, &BTreeMap::new(), &defaults, &known, &mut new_id);
});
