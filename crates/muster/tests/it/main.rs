//! End-to-end tests: a real `muster` hub on port 0 with a temporary data
//! directory, real agents over real WebSockets running real processes, and
//! the real CLI. Tests wait on the hub's event stream, never on sleeps.

mod harness;
mod models;

mod agents;
mod alerting;
mod backups;
mod bad_input;
mod bench;
mod breakers;
mod care;
mod cli;
mod control;
mod crash;
mod decisions;
mod dispatch;
mod docs;
mod edges;
mod hubs;
mod lifecycle;
mod liveness;
mod logs;
mod mcp;
mod messages;
mod model_faults;
mod openapi;
mod operate;
mod pipelines;
mod private;
mod regressions;
mod shadows;
mod stale_epoch;
mod streams;
mod surface;
mod tls;
mod ui;
mod workspaces;
