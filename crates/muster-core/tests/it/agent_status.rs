//! `AgentStatus`: the derived state and the free slots agree with the facts.

use muster_core::{AgentState, AgentStatus};
use proptest::prelude::*;

fn any_status() -> impl Strategy<Value = AgentStatus> {
    // Mostly small numbers so every state is hit often, sometimes extreme
    // ones to catch overflow; `used_slots` may exceed `slots` (an agent that
    // lost slots while runs were under way).
    let count = prop_oneof![4 => 0u32..=6, 1 => any::<u32>()];
    (any::<bool>(), any::<bool>(), any::<bool>(), count.clone(), count).prop_map(
        |(connected, paused, draining, slots, used_slots)| AgentStatus {
            connected,
            paused,
            draining,
            slots,
            used_slots,
        },
    )
}

proptest! {
    #[test]
    fn free_slots_are_zero_unless_idle_and_never_exceed_slots(status in any_status()) {
        let free = status.free_slots();
        prop_assert!(free <= status.slots, "{status:?} reports {free} free slots");
        if status.state() == AgentState::Idle {
            prop_assert!(free > 0, "an idle agent must have a free slot: {status:?}");
            prop_assert_eq!(free, status.slots - status.used_slots);
        } else {
            prop_assert_eq!(free, 0, "{:?} is {:?}", status, status.state());
        }
    }

    #[test]
    fn agent_state_follows_the_facts_in_precedence_order(status in any_status()) {
        let expected = if !status.connected {
            AgentState::Offline
        } else if status.paused {
            AgentState::Paused
        } else if status.draining {
            AgentState::Draining
        } else if status.used_slots >= status.slots {
            AgentState::Busy
        } else {
            AgentState::Idle
        };
        prop_assert_eq!(status.state(), expected, "{:?}", status);
        prop_assert_eq!(AgentState::parse(expected.as_str()), Ok(expected));
    }
}
