//! meteomesh: a weather-alert hub and an MQTT message mesh in one process.
//!
//! The module map (ARCHITECTURE.md draws it, `tests/it/architecture.rs` guards it):
//! - [`domain`]: vocabulary without I/O (the one clock, accounts, subscriptions,
//!   weather, ids, validation, text); imports no other layer.
//! - [`contract`]: every bus topic and payload, the ACL and topic filters; imports only
//!   the domain.
//! - [`storage`]: the only place that knows SQL; [`config`], `metrics`, `outbound`: leaf
//!   services (crate-private, like `http`).
//! - [`bus`]: MQTT plumbing (the embedded broker, typed clients), no behaviour.
//! - [`modules`]: the behaviour, one module per capability (the mesh among them); modules
//!   never import each other, they exchange contract messages on the bus.
//! - [`weather`]: the providers; `http`: the API and the pages over module services.
//! - [`app`]: the composition root and the one shutdown path; [`cli`]: the command line.
//! - [`client`]: the mesh client library (contract and domain only).

// System calls std lacks go through crates with safe interfaces (nix); the binary's
// allocator setup is the only unsafe code, and it lives in main.rs.
#![forbid(unsafe_code)]

pub mod app;
pub mod bus;
pub mod cli;
pub mod client;
pub mod config;
pub mod contract;
pub mod domain;
pub(crate) mod http;
pub(crate) mod metrics;
pub mod modules;
pub(crate) mod outbound;
pub mod storage;
pub mod weather;
