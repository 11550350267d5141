//! The API's JSON bodies: any bytes are decoded or refused with the field
//! that is wrong, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_proto::api;

fuzz_target!(|data: &[u8]| {
    let _ = muster_proto::from_json::<api::TaskSubmit>(data);
    let _ = muster_proto::from_json::<api::TaskBatch>(data);
    let _ = muster_proto::from_json::<api::AgentAdd>(data);
    let _ = muster_proto::from_json::<api::LockRequest>(data);
    let _ = muster_proto::from_json::<api::CtlNote>(data);
    let _ = muster_proto::from_json::<api::MessageSend>(data);
    let _ = muster_proto::from_json::<api::RuleConfigPatch>(data);
    let _ = muster_proto::from_json::<api::ShadowPolicy>(data);
});
