//! The bus contract: every topic name and JSON payload that travels on the bus, in one
//! place, split by domain (system, accounts, weather, alerts, sla, mesh, boards), with
//! who may use which topic ([`acl`]) and the topic-filter algorithms ([`filter`]). Names
//! carry a version segment (`meteomesh/v1/...`); a breaking payload change gets a new
//! version instead of a silent edit. Documented in docs/mqtt-topics.md.
//!
//! Payloads are JSON so browsers (MQTT 3.1.1 over WebSocket) and shell tools
//! (`mosquitto_sub`) read them without extra decoding. The contract imports only the
//! domain, so the client library carries no broker, storage or HTTP code.

use serde::{Deserialize, Serialize};

pub mod accounts;
pub mod acl;
pub mod alerts;
pub mod boards;
pub mod filter;
pub mod mesh;
pub mod mesh_users;
pub mod sla;
pub mod system;
pub mod weather;

pub use accounts::*;
pub use acl::*;
pub use alerts::*;
pub use boards::*;
pub use filter::*;
pub use mesh::*;
pub use mesh_users::*;
pub use sla::*;
pub use system::*;
pub use weather::*;

/// Root of every meteomesh topic.
pub const ROOT: &str = "meteomesh/v1";

/// How a message travels: its MQTT QoS and whether the broker retains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub qos: Qos,
    pub retain: bool,
}

impl Delivery {
    /// Every copy matters (alerts, account changes, sends): QoS 1, not retained.
    pub const EVENT: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
    /// The latest value is what counts (node status, a subscription's state, presence):
    /// QoS 1, retained, so a subscriber that comes later still learns it.
    pub const STATE: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: true,
    };
    /// Worth nothing late (pings, heartbeats, drawing strokes): QoS 0, not retained.
    pub const EPHEMERAL: Delivery = Delivery {
        qos: Qos::AtMostOnce,
        retain: false,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

/// A payload type bound to its topic pattern and delivery.
pub trait BusMessage: Serialize + for<'de> Deserialize<'de> + Send + 'static {
    /// Subscription filter that matches every topic this message is published on.
    const FILTER: &'static str;
    const DELIVERY: Delivery;
}

#[cfg(test)]
mod tests;
