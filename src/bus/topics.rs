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

/// `meteomesh/v1/system/accounts` — internal (service accounts and meteomesh only): an
/// account changed so that its live sessions must end. Published by the auth module;
/// consumed by the embedded broker, which disconnects the affected MQTT sessions.
pub const ACCOUNT_EVENTS: &str = "meteomesh/v1/system/accounts";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AccountChange {
    /// The account is gone.
    Deleted,
    /// Every token issued so far is void (password changed).
    TokensRevoked,
    /// One token was revoked (logout).
    TokenRevoked { jti: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub user_id: i64,
    #[serde(flatten)]
    pub change: AccountChange,
}

impl BusMessage for AccountEvent {
    const FILTER: &'static str = ACCOUNT_EVENTS;
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
}

/// `meteomesh/v1/subscriptions/changed` — internal: a user's weather subscription was
/// created, updated or deleted. Published by the subscriptions module; consumed by the
/// poller (which places to fetch) and the rules (retained state).
pub const SUBSCRIPTIONS_CHANGED: &str = "meteomesh/v1/subscriptions/changed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionsChanged {
    pub user_id: i64,
    pub subscription_id: i64,
    pub change: Change,
}

impl BusMessage for SubscriptionsChanged {
    const FILTER: &'static str = SUBSCRIPTIONS_CHANGED;
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
}

/// `meteomesh/v1/weather/observed` — internal: current conditions at one grid cell
/// (0.01°), published by the poller once per place per cycle; consumed by the rules.
pub const WEATHER_OBSERVED: &str = "meteomesh/v1/weather/observed";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherObserved {
    /// The grid cell: latitude and longitude × 100, rounded.
    pub cell_lat: i64,
    pub cell_lon: i64,
    pub provider: String,
    /// Unix seconds when meteomesh received it.
    pub received_at: i64,
    pub conditions: crate::weather::Conditions,
}

impl BusMessage for WeatherObserved {
    const FILTER: &'static str = WEATHER_OBSERVED;
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
}

/// `meteomesh/v1/users/{id}/alerts` — each raise or clear of one constraint of one of
/// the user's subscriptions (QoS 1, not retained).
pub fn user_alerts(user_id: i64) -> String {
    format!("{}/alerts", user_root(user_id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Cleared,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Stable across duplicates: `{subscription}-{constraint}-{start, Unix ms}`; the
    /// raise and the clear of one episode share it.
    pub id: String,
    pub user_id: i64,
    pub subscription_id: i64,
    pub label: String,
    pub place: String,
    pub constraint: crate::storage::subscriptions::Kind,
    pub state: AlertState,
    /// The observed value that decided it (°C for temperatures, mm/cm for rain/snow).
    pub value: Option<f64>,
    /// The subscription's threshold in °C (temperature constraints only).
    pub threshold_c: Option<f64>,
    pub weather_code: Option<u16>,
    /// RFC 3339: when this episode started, and when this event happened.
    pub started_at: String,
    pub at: String,
    /// Whether the user wants a notification for this event (clears may be muted).
    pub notify: bool,
}

impl AlertEvent {
    /// `{id}:{raised|cleared}`: names this event (not the episode) across duplicates.
    pub fn key(&self) -> String {
        let state = match self.state {
            AlertState::Raised => "raised",
            AlertState::Cleared => "cleared",
        };
        format!("{}:{state}", self.id)
    }
}

impl BusMessage for AlertEvent {
    const FILTER: &'static str = "meteomesh/v1/users/+/alerts";
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
}

/// `meteomesh/v1/users/{id}/subscriptions/{sid}/state` — RETAINED current state of one
/// subscription; an empty retained payload removes it when the subscription is deleted.
pub fn subscription_state(user_id: i64, subscription_id: i64) -> String {
    format!(
        "{}/subscriptions/{subscription_id}/state",
        user_root(user_id)
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionStateMsg {
    pub subscription_id: i64,
    pub label: String,
    pub place: String,
    /// Constraints violated now.
    pub violated: Vec<crate::storage::subscriptions::Kind>,
    /// The last conditions seen (absent before the first observation).
    pub conditions: Option<crate::weather::Conditions>,
    /// RFC 3339 time of the last evaluation.
    pub updated_at: String,
}

impl BusMessage for SubscriptionStateMsg {
    const FILTER: &'static str = "meteomesh/v1/users/+/subscriptions/+/state";
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: true,
    };
}

/// `meteomesh/v1/system/sla` — internal: an SLA went into violation or came back into
/// range. Published by the SLA module; consumed by the notifier, which tells every
/// administrator with a Telegram chat about violations.
pub const SLA_EVENTS: &str = "meteomesh/v1/system/sla";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaState {
    Violated,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaEvent {
    pub name: String,
    pub selector: String,
    pub state: SlaState,
    pub value: Option<f64>,
    pub desired_min: Option<f64>,
    pub desired_max: Option<f64>,
    /// Unix seconds of the evaluation that changed the state.
    pub at: i64,
    /// Unix seconds since when the value has been out of range (violations only).
    pub since: Option<i64>,
}

impl BusMessage for SlaEvent {
    const FILTER: &'static str = SLA_EVENTS;
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
}

/// `meteomesh/v1/users/{id}` — the root of one user's private topics.
pub fn user_root(user_id: i64) -> String {
    format!("{ROOT}/users/{user_id}")
}

/// Topic filters any logged-in user may subscribe to, besides their own subtree.
const PUBLIC_SUBSCRIBE: &[&str] = &[NodeStatus::FILTER, PONG];
/// Topics any logged-in user may publish to.
const PUBLIC_PUBLISH: &[&str] = &[PING];

/// The access rule for user accounts on the embedded broker (service accounts and
/// meteomesh itself are not limited): subscribe to their own subtree
/// `meteomesh/v1/users/{id}/#` and the public filters; nothing wider. An anonymous
/// session (`user` = None, only when anonymous access is on) gets the public filters.
pub fn may_subscribe(user: Option<i64>, filter: &str) -> bool {
    let own = user.is_some_and(|id| filter_within(filter, &format!("{}/#", user_root(id))));
    own || PUBLIC_SUBSCRIBE.iter().any(|p| filter_within(filter, p))
}

/// Users publish only where the contract invites them to.
pub fn may_publish(_user: Option<i64>, topic: &str) -> bool {
    PUBLIC_PUBLISH.iter().any(|p| filter_matches(p, topic))
}

/// Whether every topic `filter` can match is also matched by `pattern`.
pub fn filter_within(filter: &str, pattern: &str) -> bool {
    let mut f = filter.split('/');
    let mut p = pattern.split('/');
    loop {
        match (f.next(), p.next()) {
            (_, Some("#")) => return true,
            (Some("#"), _) => return false,
            (Some("+"), Some("+")) => {}
            (Some("+"), _) => return false,
            (Some(_), Some("+")) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
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

    #[test]
    fn filter_containment() {
        assert!(filter_within("a/b/c", "a/#"));
        assert!(filter_within("a/+/c", "a/#"));
        assert!(filter_within("a/#", "a/#"));
        assert!(!filter_within("#", "a/#"));
        assert!(!filter_within("a/+", "a/b"));
        assert!(filter_within("a/b", "a/+"));
        assert!(filter_within("a/+", "a/+"));
        assert!(!filter_within("a/b/c", "a/+"));
        assert!(!filter_within("a/#", "a/+"));
    }

    #[test]
    fn user_acl() {
        assert!(may_subscribe(Some(7), "meteomesh/v1/users/7/#"));
        assert!(may_subscribe(Some(7), "meteomesh/v1/users/7/alerts"));
        assert!(may_subscribe(Some(7), "meteomesh/v1/users/7/+/x"));
        assert!(!may_subscribe(Some(7), "meteomesh/v1/users/8/#"));
        assert!(!may_subscribe(Some(7), "meteomesh/v1/users/77/#"));
        assert!(!may_subscribe(Some(7), "meteomesh/v1/users/+/#"));
        assert!(!may_subscribe(Some(7), "meteomesh/v1/#"));
        assert!(!may_subscribe(Some(7), "#"));
        assert!(!may_subscribe(Some(7), ACCOUNT_EVENTS));
        assert!(may_subscribe(Some(7), "meteomesh/v1/nodes/+/status"));
        assert!(may_subscribe(Some(7), "meteomesh/v1/nodes/abc/status"));
        assert!(may_subscribe(Some(7), PONG));
        assert!(may_publish(Some(7), PING));
        assert!(!may_publish(Some(7), PONG));
        assert!(!may_publish(Some(7), ACCOUNT_EVENTS));
        assert!(!may_publish(Some(7), "meteomesh/v1/users/7/alerts"));
        assert!(may_subscribe(None, PONG));
        assert!(!may_subscribe(None, "meteomesh/v1/users/7/#"));
    }
}
