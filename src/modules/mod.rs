//! The behaviour of meteomesh, one module per capability. Each module owns a background
//! loop (`run`) and a small service API for `http/`; modules affect each other only
//! through typed messages on the bus.

pub mod auth;
pub mod board;
pub mod host_metrics;
pub mod notifier;
pub mod poller;
pub mod rules;
pub mod sla;
pub mod subscriptions;
pub mod system;
