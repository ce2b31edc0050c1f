//! The one integration-test binary: one module per capability, all sharing
//! `tests/common` (the real app on loopback port 0, fakes of the outside services, a
//! runner for the binary). One binary links the crate once instead of once per file.

#[path = "../common/mod.rs"]
mod common;

mod architecture;
mod auth;
mod board;
mod bus;
mod config;
mod external_broker;
mod faults;
mod http;
mod mesh;
mod mesh_client;
mod mqtt_users;
mod notifier;
mod notifier_crash;
mod packaging;
mod security;
mod shutdown;
mod sla;
mod storage;
mod supervisor;
mod trust_boundary;
mod users_cli;
mod weather;
mod weather_answers;
mod web;
