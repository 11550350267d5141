//! What an agent (or anyone holding an agent token) sends on its socket,
//! and what the hub sends back: decoding never panics, and what decodes
//! encodes back to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_proto::ws::{AgentMsg, HubMsg};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = muster_proto::from_json::<AgentMsg>(data) {
        let again: AgentMsg = muster_proto::from_json(muster_proto::to_json(&msg).as_bytes()).expect("round trip");
        assert_eq!(format!("{again:?}"), format!("{msg:?}"));
    }
    let _ = muster_proto::from_json::<HubMsg>(data);
});
