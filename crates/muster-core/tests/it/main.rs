//! The one integration-test binary of `muster-core`.
//!
//! Property tests for the core's state machines: random event sequences
//! driven through the public API, with the invariants checked after every
//! step. Each module covers one noun of the domain.

mod agent_status;
mod backoff;
mod locks;
mod task_machine;
