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
    /// The account was created (its name is now held, mesh-wide).
    Created,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub user_id: i64,
    /// The account's username (its identity across a mesh; empty from older senders).
    #[serde(default)]
    pub username: String,
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
    pub conditions: crate::domain::weather::Conditions,
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
    pub constraint: crate::domain::subscription::Kind,
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
    pub violated: Vec<crate::domain::subscription::Kind>,
    /// The last conditions seen (absent before the first observation).
    pub conditions: Option<crate::domain::weather::Conditions>,
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

// ---------------------------------------------------------------------------------
// The mesh (see `mesh/`): node-to-node envelopes, the node directory, heartbeats, and
// each user's mesh topics under `meteomesh/v1/mesh/users/{username}/...`. Usernames are
// the identity across nodes (`[a-z0-9_.-]`, so they are safe as a topic level).

/// `meteomesh/v1/mesh/links/{from_node}` — internal (link accounts): an [`Envelope`]
/// that node `from_node` hands to this node over its link.
pub fn mesh_link(from_node: &str) -> String {
    format!("{ROOT}/mesh/links/{from_node}")
}
pub const MESH_LINKS: &str = "meteomesh/v1/mesh/links/+";

/// The node an envelope came from, read from its link topic.
pub fn mesh_link_sender(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("meteomesh/v1/mesh/links/")
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// `meteomesh/v1/mesh/peers/{node}` — internal (link accounts), RETAINED: what node
/// `node` told this node when its link came up: the nodes it knows and who is connected
/// to it. Retained so a node that subscribes a moment after a peer's link connected
/// (while starting) still hears it.
pub fn mesh_peer_hello(node: &str) -> String {
    format!("{ROOT}/mesh/peers/{node}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    pub node: String,
    pub adverts: Vec<NodeAdvert>,
    pub presence: Presence,
}

impl BusMessage for PeerHello {
    const FILTER: &'static str = "meteomesh/v1/mesh/peers/+";
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: true,
    };
}

/// Where an envelope is going.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One user, wherever they are connected.
    User(String),
    /// One node (acknowledgements, pongs).
    Node(String),
    /// Every node.
    All,
}

/// Everything that crosses from one node to another travels in an envelope; the
/// routing metadata is in the JSON payload (not MQTT 5 properties) so MQTT 3.1.1
/// clients and browsers see the same thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// `{origin}:{seq}`, unique per transmission; nodes drop an id they have seen.
    pub id: String,
    pub origin: String,
    /// Links crossed so far.
    pub hops: u8,
    /// Most links this envelope may cross.
    pub ttl: u8,
    /// The sending user (empty for the node's own control traffic).
    #[serde(default)]
    pub from: String,
    pub to: Target,
    /// What `data` is: one of the `TAG_*` constants.
    pub tag: String,
    pub data: serde_json::Value,
    /// The node that wants acknowledgements for this message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

impl BusMessage for Envelope {
    const FILTER: &'static str = MESH_LINKS;
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
}

/// A user message ([`MeshMessage`]).
pub const TAG_MESSAGE: &str = "msg";
/// A recipient acknowledged a message ([`MeshAck`]).
pub const TAG_ACK: &str = "ack";
/// A weather alert for a user connected elsewhere ([`AlertEvent`]).
pub const TAG_ALERT: &str = "alert";
/// The users connected to one node ([`Presence`]).
pub const TAG_PRESENCE: &str = "presence";
/// Node adverts ([`Vec<NodeAdvert>`]); relayed only when newer than what is known.
pub const TAG_ADVERTS: &str = "adverts";
/// Something happened on a whiteboard ([`BoardEvent`]); every node applies it.
pub const TAG_BOARD: &str = "board";
/// Login tokens of a user were revoked on their home node ([`Revocation`]).
pub const TAG_REVOKE: &str = "revoke";
/// The usernames the origin node's accounts hold ([`NameClaims`]).
pub const TAG_NAMES: &str = "names";
/// Round-trip measurement ([`LinkPing`]), answered with `pong`.
pub const TAG_PING: &str = "ping";
pub const TAG_PONG: &str = "pong";

/// `data` of a [`TAG_MESSAGE`] envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshMessage {
    /// Stable message id (`{origin}:{n}`), the same on every retry.
    pub msg: String,
    /// The sender's own increasing sequence number.
    pub seq: u64,
    pub body: serde_json::Value,
    /// Whether the origin wants an acknowledgement from the recipient.
    pub ack: bool,
    /// RFC 3339 time the sender's node accepted it.
    pub sent_at: String,
}

/// `data` of a [`TAG_ACK`] envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshAck {
    pub msg: String,
    pub user: String,
}

/// `data` of a [`TAG_PRESENCE`] envelope: the complete set of users connected to `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub node: String,
    /// Increases with every change, so an older set never replaces a newer one.
    pub version: u64,
    pub users: Vec<String>,
}

/// `data` of a [`TAG_REVOKE`] envelope: other nodes refuse the user's token `jti`, or
/// every token issued at or before `issued_before` (Unix seconds), until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub user: String,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub issued_before: Option<i64>,
    pub expires_at: i64,
}

/// `data` of a [`TAG_NAMES`] envelope: every username the origin node's accounts hold,
/// each since its account was created (Unix seconds). The whole list each time: it
/// replaces what the origin claimed before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameClaims {
    pub names: Vec<ClaimedName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedName {
    pub name: String,
    pub since: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPing {
    /// The asker's clock, milliseconds; echoed back.
    pub t_ms: u64,
}

/// What a node tells the mesh about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAdvert {
    pub id: String,
    /// `host:port` of its MQTT listener.
    pub mqtt: String,
    /// `host:port` of its MQTT-over-WebSocket listener, if on.
    pub ws: Option<String>,
    /// `http://host:port` of its HTTP server.
    pub http: String,
    /// Users connected when advertised.
    pub users: u32,
    /// Unix seconds the node process started.
    pub started_at: u64,
    /// Unix milliseconds the node made this advert; a newer one replaces an older one.
    pub at: u64,
}

/// `meteomesh/v1/mesh/heartbeat` — every node publishes one on its own broker every
/// `mesh.heartbeat_interval` (QoS 0); clients and peer links watch it to notice a dead
/// node within two beats.
pub const MESH_HEARTBEAT: &str = "meteomesh/v1/mesh/heartbeat";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    pub seq: u64,
    /// Users connected to this node now.
    pub users: u32,
}

impl BusMessage for Heartbeat {
    const FILTER: &'static str = MESH_HEARTBEAT;
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtMostOnce,
        retain: false,
    };
}

/// `meteomesh/v1/mesh/directory` — RETAINED on each node: the node list as that node
/// sees it. Clients keep it to fail over and to choose a node.
pub const MESH_DIRECTORY: &str = "meteomesh/v1/mesh/directory";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directory {
    /// The node that published this list.
    pub node: String,
    pub nodes: Vec<DirectoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    #[serde(flatten)]
    pub advert: NodeAdvert,
    /// Whether the publishing node's link to it is up (always true for itself).
    pub reachable: bool,
    /// The link's last measured round trip, milliseconds.
    pub rtt_ms: Option<f64>,
}

impl BusMessage for Directory {
    const FILTER: &'static str = MESH_DIRECTORY;
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: true,
    };
}

/// `meteomesh/v1/mesh/online` — RETAINED on each node: who is online anywhere.
pub const MESH_ONLINE: &str = "meteomesh/v1/mesh/online";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineUsers {
    pub users: Vec<OnlineUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineUser {
    pub user: String,
    pub nodes: Vec<String>,
}

impl BusMessage for OnlineUsers {
    const FILTER: &'static str = MESH_ONLINE;
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: true,
    };
}

/// `meteomesh/v1/mesh/users/{username}` — the root of one user's mesh topics.
pub fn mesh_user_root(username: &str) -> String {
    format!("{ROOT}/mesh/users/{username}")
}

/// `.../inbox` — messages for the user ([`InboxMessage`], QoS 1).
pub fn mesh_inbox(username: &str) -> String {
    format!("{}/inbox", mesh_user_root(username))
}
/// `.../send` — the user asks their node to send ([`SendRequest`]).
pub fn mesh_send(username: &str) -> String {
    format!("{}/send", mesh_user_root(username))
}
/// `.../ack` — the user acknowledges an inbox message ([`InboxAck`]).
pub fn mesh_ack(username: &str) -> String {
    format!("{}/ack", mesh_user_root(username))
}
/// `.../result` — the node answers a [`SendRequest`] ([`SendResult`]).
pub fn mesh_result(username: &str) -> String {
    format!("{}/result", mesh_user_root(username))
}

/// The username level of a `meteomesh/v1/mesh/users/{username}/{leaf}` topic.
pub fn mesh_user_of<'t>(topic: &'t str, leaf: &str) -> Option<&'t str> {
    let name = topic
        .strip_prefix("meteomesh/v1/mesh/users/")?
        .strip_suffix(leaf)?
        .strip_suffix('/')?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Message id; acknowledge it on `.../ack` when `ack` is true.
    pub id: String,
    pub from: String,
    /// The sender's sequence number: increasing per sender, so duplicates can be dropped.
    pub seq: u64,
    /// `message`, `broadcast` or `alert`.
    pub kind: String,
    pub body: serde_json::Value,
    pub ack: bool,
    pub sent_at: String,
}

impl BusMessage for InboxMessage {
    const FILTER: &'static str = "meteomesh/v1/mesh/users/+/inbox";
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxAck {
    pub id: String,
}

impl BusMessage for InboxAck {
    const FILTER: &'static str = "meteomesh/v1/mesh/users/+/ack";
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
}

/// How a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendMode {
    /// To one user; answers once the recipient acknowledged, or not within the timeout.
    Send,
    /// To one user; queued (kept for an offline recipient), answers at once.
    FireSend,
    /// To every online user; answers how many acknowledged out of how many were online.
    Broadcast,
    /// To every online user; answers at once.
    FireBroadcast,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The client's correlation id, echoed in the [`SendResult`] (1..=64 chars).
    pub req: String,
    pub mode: SendMode,
    /// Recipient username (`send`, `fire_send`).
    #[serde(default)]
    pub to: Option<String>,
    /// The sender's sequence number; a retried request reuses it so the recipient
    /// drops the duplicate. Absent: the node assigns one.
    #[serde(default)]
    pub seq: Option<u64>,
    pub body: serde_json::Value,
}

impl BusMessage for SendRequest {
    const FILTER: &'static str = "meteomesh/v1/mesh/users/+/send";
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResult {
    pub req: String,
    /// The message id, absent when refused.
    pub id: Option<String>,
    pub seq: u64,
    /// `send`: whether the recipient acknowledged in time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delivered: Option<bool>,
    /// `broadcast`: recipients that acknowledged in time, and how many were online.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acked: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub online: Option<u32>,
    /// `fire_send`: accepted and stored until the recipient acknowledges.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub queued: Option<bool>,
    /// Why the request was refused: a code to act on and a message to show.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<SendRefusal>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendRefusal {
    /// The request is malformed (fix it; do not retry as is).
    Invalid,
    /// The recipient has too many messages waiting (retry later).
    QueueFull,
    /// The node cannot take it now: storage failed or it is stopping (retry elsewhere).
    Unavailable,
}

impl BusMessage for SendResult {
    const FILTER: &'static str = "meteomesh/v1/mesh/users/+/result";
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: false,
    };
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
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtLeastOnce,
        retain: true,
    };
}

// ---------------------------------------------------------------------------------
// Shared whiteboards (see `modules::board`). Users draw by publishing [`BoardInput`] on
// their own `boards/{board}/draw/{username}`; the board module checks it, stamps the
// user, keeps the drawing and publishes [`BoardEvent`]s on `boards/{board}/events`,
// which the mesh carries to every node.

/// Board names: 1–32 of `[a-z0-9_-]`.
pub fn valid_board(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `meteomesh/v1/boards/{board}/draw/{username}` — a user's input to a board.
pub fn board_draw(board: &str, username: &str) -> String {
    format!("{ROOT}/boards/{board}/draw/{username}")
}
/// `meteomesh/v1/boards/{board}/events` — everything that happens on a board (QoS 0:
/// a lost point is redrawn by the next snapshot, and drawing must not queue).
pub fn board_events(board: &str) -> String {
    format!("{ROOT}/boards/{board}/events")
}
/// `meteomesh/v1/mesh/users/{username}/boards/{board}/snapshot` — a board's drawing for
/// one user, in parts.
pub fn board_snapshot(username: &str, board: &str) -> String {
    format!("{}/boards/{board}/snapshot", mesh_user_root(username))
}
/// `meteomesh/v1/system/boards/local` — internal: board events that happened on this
/// node, for the mesh to carry to the others.
pub const BOARDS_LOCAL: &str = "meteomesh/v1/system/boards/local";
/// `meteomesh/v1/system/boards/remote` — internal: board events from other nodes, for
/// the board module.
pub const BOARDS_REMOTE: &str = "meteomesh/v1/system/boards/remote";

/// (board, username) of a `boards/{board}/draw/{username}` topic.
pub fn board_draw_of(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("meteomesh/v1/boards/")?;
    let (board, user) = rest.split_once("/draw/")?;
    (valid_board(board) && !user.is_empty() && !user.contains('/')).then_some((board, user))
}

/// What a user sends to a board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BoardInput {
    /// A point of a stroke: `start`, then `drag`s, then `end`. `x`, `y` are relative
    /// to the board (0..1); `seq` increases within the user's strokes; `epoch` is the
    /// board epoch the user drew on.
    Start(BoardPoint),
    Drag(BoardPoint),
    End(BoardPoint),
    /// Wipe the board: `epoch` is the new epoch (the one the user saw, plus one).
    Clear {
        epoch: u64,
    },
    /// The user is on the board (sent on joining and every 30 s) with their colour.
    Here {
        color: String,
    },
    /// The user left.
    Gone,
    /// Send me the drawing (on `.../snapshot`).
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardPoint {
    pub stroke: u64,
    pub seq: u64,
    pub x: f64,
    pub y: f64,
    pub color: String,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoardEventKind {
    Start,
    Drag,
    End,
    Clear,
    Here,
    Gone,
}

/// One thing that happened on a board, as every node and browser sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardEvent {
    pub board: String,
    pub user: String,
    pub kind: BoardEventKind,
    #[serde(default)]
    pub stroke: u64,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub x: f64,
    #[serde(default)]
    pub y: f64,
    #[serde(default)]
    pub color: String,
    pub epoch: u64,
}

impl BusMessage for BoardEvent {
    const FILTER: &'static str = "meteomesh/v1/boards/+/events";
    const DELIVERY: Delivery = Delivery {
        qos: Qos::AtMostOnce,
        retain: false,
    };
}

/// A board's drawing for a joining or reconnecting user, in parts of at most
/// [`SNAPSHOT_PART`] points; apply live events on top (duplicates are dropped by
/// (user, stroke, seq)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardSnapshot {
    pub board: String,
    pub epoch: u64,
    pub part: u32,
    pub parts: u32,
    pub points: Vec<BoardEvent>,
    /// Users on the board now, with their colours.
    pub users: Vec<BoardUser>,
}

pub const SNAPSHOT_PART: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardUser {
    pub user: String,
    pub color: String,
}

/// `meteomesh/v1/users/{id}` — the root of one user's private topics.
pub fn user_root(user_id: i64) -> String {
    format!("{ROOT}/users/{user_id}")
}

/// Every user's private topics.
pub const ALL_USER_TOPICS: &str = "meteomesh/v1/users/+/#";

/// The account id whose private subtree (`user_root`) `topic` is in.
pub fn user_id_of(topic: &str) -> Option<i64> {
    topic
        .strip_prefix("meteomesh/v1/users/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Topic filters anyone on the broker may subscribe to, besides their own subtrees.
const PUBLIC_SUBSCRIBE: &[&str] = &[NodeStatus::FILTER, PONG, MESH_HEARTBEAT, MESH_DIRECTORY];
/// Topics anyone on the broker may publish to.
const PUBLIC_PUBLISH: &[&str] = &[PING];

/// Who a user session is: the account on this node (absent for a user whose home is
/// another mesh node) and the username, their identity across the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    pub user_id: Option<i64>,
    pub username: &'a str,
}

/// The access rule for user accounts on the embedded broker (service accounts and
/// meteomesh itself are not limited): subscribe to their own subtrees
/// `meteomesh/v1/users/{id}/#` (home node only) and `meteomesh/v1/mesh/users/{name}/#`,
/// the online list, and the public filters; nothing wider. An anonymous session (only
/// when anonymous access is on) gets the public filters.
pub fn may_subscribe(user: Option<Principal>, filter: &str) -> bool {
    let own = user.is_some_and(|p| {
        p.user_id
            .is_some_and(|id| filter_within(filter, &format!("{}/#", user_root(id))))
            || filter_within(filter, &format!("{}/#", mesh_user_root(p.username)))
            || filter_within(filter, MESH_ONLINE)
            || filter_within(filter, BoardEvent::FILTER)
    });
    own || PUBLIC_SUBSCRIBE.iter().any(|p| filter_within(filter, p))
}

/// Users publish only where the contract invites them to: the public topics, and their
/// own mesh `send` and `ack` topics.
pub fn may_publish(user: Option<Principal>, topic: &str) -> bool {
    let own = user.is_some_and(|p| {
        topic == mesh_send(p.username)
            || topic == mesh_ack(p.username)
            || board_draw_of(topic).is_some_and(|(_, u)| u == p.username)
    });
    own || PUBLIC_PUBLISH.iter().any(|p| filter_matches(p, topic))
}

/// What the whiteboard page's credential may subscribe to: the boards' events, its own
/// board snapshots, and the mesh directory and heartbeat it fails over by.
pub fn board_credential_may_subscribe(username: &str, filter: &str) -> bool {
    filter_within(filter, BoardEvent::FILTER)
        || filter_within(filter, &format!("{}/boards/#", mesh_user_root(username)))
        || filter_within(filter, MESH_DIRECTORY)
        || filter_within(filter, MESH_HEARTBEAT)
}

/// What the whiteboard page's credential may publish: its own strokes.
pub fn board_credential_may_publish(username: &str, topic: &str) -> bool {
    board_draw_of(topic).is_some_and(|(_, u)| u == username)
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
    fn user_ids_are_read_back_from_private_topics() {
        assert_eq!(user_id_of(&format!("{}/alerts", user_root(42))), Some(42));
        assert_eq!(user_id_of(&user_root(7)), Some(7));
        assert_eq!(user_id_of("meteomesh/v1/mesh/users/bob/inbox"), None);
        assert_eq!(user_id_of("meteomesh/v1/users/bob/alerts"), None);
    }

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
        let user = |id| {
            Some(Principal {
                user_id: Some(id),
                username: "ann",
            })
        };
        let may_subscribe = |u: Option<i64>, f: &str| super::may_subscribe(u.and_then(user), f);
        let may_publish = |u: Option<i64>, t: &str| super::may_publish(u.and_then(user), t);
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
        // Mesh topics go by username.
        assert!(may_subscribe(Some(7), "meteomesh/v1/mesh/users/ann/#"));
        assert!(may_subscribe(Some(7), &mesh_inbox("ann")));
        assert!(!may_subscribe(Some(7), &mesh_inbox("bob")));
        assert!(!may_subscribe(Some(7), "meteomesh/v1/mesh/users/+/inbox"));
        assert!(may_subscribe(Some(7), MESH_ONLINE));
        assert!(!may_subscribe(None, MESH_ONLINE));
        assert!(may_subscribe(None, MESH_HEARTBEAT));
        assert!(!may_subscribe(Some(7), MESH_LINKS));
        assert!(may_publish(Some(7), &mesh_send("ann")));
        assert!(may_publish(Some(7), &mesh_ack("ann")));
        assert!(!may_publish(Some(7), &mesh_send("bob")));
        assert!(!may_publish(Some(7), &mesh_inbox("ann")));
        assert!(!may_publish(Some(7), &mesh_link("x")));
        let remote = Some(Principal {
            user_id: None,
            username: "ann",
        });
        assert!(super::may_subscribe(remote, &mesh_inbox("ann")));
        assert!(!super::may_subscribe(remote, "meteomesh/v1/users/7/#"));
        // Boards: anyone signed in reads every board; draws only as themselves.
        assert!(may_subscribe(Some(7), &board_events("b1")));
        assert!(may_subscribe(Some(7), BoardEvent::FILTER));
        assert!(!may_subscribe(None, &board_events("b1")));
        assert!(may_publish(Some(7), &board_draw("b1", "ann")));
        assert!(!may_publish(Some(7), &board_draw("b1", "bob")));
        assert!(!may_publish(Some(7), &board_events("b1")));
        assert!(!may_publish(Some(7), &board_draw("Bad Name", "ann")));
        assert!(may_subscribe(Some(7), &board_snapshot("ann", "b1")));
        assert!(!may_subscribe(Some(7), BOARDS_LOCAL));
        assert_eq!(mesh_user_of(&mesh_send("ann"), "send"), Some("ann"));
        assert_eq!(
            mesh_user_of("meteomesh/v1/mesh/users/a/b/send", "send"),
            None
        );
        assert_eq!(mesh_link_sender(&mesh_link("n1")), Some("n1"));
    }
}
