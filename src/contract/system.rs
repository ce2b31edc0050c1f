//! The system part of the bus contract: node status (retained, with the broker's last
//! will), the ping/pong round trip readiness uses, and each user's local presence.

use serde::{Deserialize, Serialize};

use super::*;

/// `meteomesh/v1/nodes/{node}/status` — retained; the broker publishes the `offline`
/// form as the node's last will when its connection dies without a goodbye.
pub fn node_status(node: &str) -> String {
    format!("{ROOT}/nodes/{node}/status")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Online,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub state: NodeState,
    pub version: String,
    /// Unix seconds when this node process started.
    pub started_at: u64,
}

impl BusMessage for NodeStatus {
    const FILTER: &'static str = "meteomesh/v1/nodes/+/status";
    const DELIVERY: Delivery = Delivery::STATE;
}

/// `meteomesh/v1/system/ping` — anyone may ask every node to answer; used by
/// operators and by the bus round-trip check.
pub const PING: &str = "meteomesh/v1/system/ping";
/// `meteomesh/v1/system/pong` — each node's answer to a [`Ping`].
pub const PONG: &str = "meteomesh/v1/system/pong";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Opaque correlation id chosen by the asker (1..=64 chars), echoed in the [`Pong`].
    pub id: String,
}

impl BusMessage for Ping {
    const FILTER: &'static str = PING;
    const DELIVERY: Delivery = Delivery::EPHEMERAL;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub id: String,
    pub node: String,
}

impl BusMessage for Pong {
    const FILTER: &'static str = PONG;
    const DELIVERY: Delivery = Delivery::EPHEMERAL;
}

/// `meteomesh/v1/system/presence/{username}` — internal, RETAINED: how many sessions a
/// user has on this node's broker, published by the broker; an empty payload when none.
pub fn presence(username: &str) -> String {
    format!("{ROOT}/system/presence/{username}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPresence {
    pub user: String,
    pub sessions: u32,
}

impl BusMessage for LocalPresence {
    const FILTER: &'static str = "meteomesh/v1/system/presence/+";
    const DELIVERY: Delivery = Delivery::STATE;
}
