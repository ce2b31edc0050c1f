//! The node-to-node part of the bus contract: links, hellos, envelopes and what they
//! carry (messages, acks, presence, adverts, revocations, name claims), heartbeats,
//! the node directory and who is online.

use serde::{Deserialize, Serialize};

use super::*;

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
    const DELIVERY: Delivery = Delivery::STATE;
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
    const DELIVERY: Delivery = Delivery::EVENT;
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
    const DELIVERY: Delivery = Delivery::EPHEMERAL;
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
    const DELIVERY: Delivery = Delivery::STATE;
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
    const DELIVERY: Delivery = Delivery::STATE;
}
