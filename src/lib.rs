//! meteomesh: a weather-alert hub and an MQTT message mesh in one process.
//!
//! Layers (see docs and ARCHITECTURE): `http` turns requests into calls on module
//! services; `bus` owns the embedded broker and the topic contract; `modules` hold the
//! behaviour and talk to each other only over the bus; `storage` is the only place that
//! knows SQL. `app` wires them together and owns the one shutdown path; `config` the
//! layered configuration; `cli` the command line; `ops` the non-serving subcommands;
//! `mesh` links nodes and carries user-to-user messages.

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
pub mod http;
pub mod mesh;
pub mod metrics;
pub mod modules;
pub mod outbound;
pub mod storage;
pub mod weather;
