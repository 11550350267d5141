//! Cron patterns and time zones as `muster schedule add` reads them: any
//! text is a pattern or a refusal, and a next firing is later than the
//! instant it was asked after.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_core::Millis;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (cron, tz) = text.split_once('\n').unwrap_or((text, "UTC"));
    let after = Millis(1_765_000_000_000);
    if let Ok(Some(next)) = muster_hub::next_firing(cron, tz, after) {
        assert!(next > after, "{cron:?} in {tz:?} fired at {next:?}, not after {after:?}");
    }
});
