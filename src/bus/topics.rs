//! The topic contract: every topic name and JSON payload that travels on the bus, in
//! one place. Names carry a version segment (`meteomesh/v1/...`); a breaking payload
//! change gets a new version instead of a silent edit. Documented in docs/mqtt-topics.md.
//!
//! Payloads are JSON so browsers (MQTT 3.1.1 over WebSocket) and shell tools
//! (`mosquitto_sub`) read them without extra decoding.

use serde::{Deserialize, Serialize};

/// Root of every meteomesh topic.
pub const ROOT: &str = "meteomesh/v1";

/// How a message travels: its MQTT QoS and whether the broker retains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub qos: Qos,
    pub retain: bool,
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
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: true,
    };
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
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtMostOnce,
        retain: false,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub id: String,
    pub node: String,
}

impl BusMessage for Pong {
    const FILTER: &'static str = PONG;
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtMostOnce,
        retain: false,
    };
}

/// MQTT filter matching (`+` one level, `#` the rest), for routing incoming messages to
/// the local subscriptions of one bus client.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    // MQTT-4.7.2-1: wildcards at the root do not match `$`-topics.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(!filter_matches("a/+/c", "a/b/d"));
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(!filter_matches("a/b", "a/b/c"));
        assert!(!filter_matches("a/b/c", "a/b"));
        assert!(filter_matches("#", "x/y"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(filter_matches(NodeStatus::FILTER, &node_status("n1")));
        assert!(filter_matches("+/+", "/x"));
    }
}
