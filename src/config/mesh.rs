//! The `[mesh]` section: federation with other nodes, and the node choice of clients.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AuthConfig, BrokerUrl, BusConfig, BusMode, ConfigError, Secret};

/// Which node a client prefers (see `client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeChoice {
    /// The first reachable node in list order.
    First,
    /// The node with the fewest connected users.
    LeastUsers,
    /// The node with the lowest measured round-trip time.
    LowestRtt,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Federate with other meteomesh nodes. Off by default.
    pub enabled: bool,
    /// Seed peers: MQTT addresses (`host:port`) of other nodes. One is enough; the rest
    /// of the mesh is learned from it and remembered in the database.
    pub peers: Vec<String>,
    /// Link to every node learned from the mesh (a full mesh). Off: link only to
    /// `peers`, for a fixed topology such as a chain; messages still reach every node.
    pub auto_link: bool,
    /// Host name or IP address other nodes and clients use to reach this node. Empty:
    /// the listen address, which must then not be 0.0.0.0 / `::`.
    pub advertise_host: String,
    /// Credential of the node-to-node links: every node of a mesh has the same one and
    /// accepts it as a service account on its broker.
    pub link_username: String,
    pub link_password: Secret,
    /// With a value (the same on every node), login tokens are signed with it and any
    /// node accepts a token issued by another, so a client that fails over signs in at
    /// once. Replaces `auth.jwt_secret`.
    pub shared_secret: Secret,
    /// How often this node publishes its heartbeat (clients and peers watch it).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Heartbeats missed before a peer link counts as down.
    pub missed_heartbeats: u32,
    /// How often the node list is sent to every peer (also on every link-up).
    #[serde(with = "humantime_serde")]
    pub exchange_interval: Duration,
    /// A node not heard from for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub node_expiry: Duration,
    /// How often each link's round-trip time is measured.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Most links a message may cross.
    pub max_hops: u8,
    /// How long a message id is remembered to drop duplicates.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// How long a synchronous send or broadcast waits for acknowledgements.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// How long a queued message waits for an offline recipient.
    #[serde(with = "humantime_serde")]
    pub offline_expiry: Duration,
    /// Queued messages kept per recipient; beyond it a send is refused.
    pub offline_max_per_user: u32,
    /// Largest message body, in bytes of JSON.
    pub max_message_bytes: usize,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            enabled: false,
            peers: Vec::new(),
            auto_link: true,
            advertise_host: String::new(),
            link_username: "meteomesh-link".into(),
            link_password: Secret::default(),
            shared_secret: Secret::default(),
            heartbeat_interval: Duration::from_millis(250),
            missed_heartbeats: 2,
            exchange_interval: Duration::from_secs(10 * 60),
            node_expiry: Duration::from_secs(24 * 60 * 60),
            ping_interval: Duration::from_secs(5),
            max_hops: 8,
            dedup_window: Duration::from_secs(10 * 60),
            send_timeout: Duration::from_secs(3),
            offline_expiry: Duration::from_secs(24 * 60 * 60),
            offline_max_per_user: 1000,
            max_message_bytes: 16 * 1024,
        }
    }
}

impl MeshConfig {
    pub(super) fn validate(&self, bus: &BusConfig, auth: &AuthConfig) -> Result<(), ConfigError> {
        if !self.shared_secret.is_empty() {
            if self.shared_secret.expose().len() < 32 {
                return Err(ConfigError::invalid(
                    "mesh.shared_secret",
                    "must be at least 32 characters (the same on every node), or empty",
                ));
            }
            if !auth.jwt_secret.is_empty() {
                return Err(ConfigError::invalid(
                    "auth.jwt_secret",
                    "must be empty when mesh.shared_secret is set (the shared secret signs tokens)",
                ));
            }
        }
        if !self.enabled {
            return Ok(());
        }
        if bus.mode != BusMode::Embedded || !bus.tcp_enabled {
            return Err(ConfigError::invalid(
                "mesh.enabled",
                "needs the embedded broker with its TCP listener (bus.mode = \"embedded\", \
                 bus.tcp_enabled = true); an external broker cluster already shares messages",
            ));
        }
        if self.link_username.is_empty() || self.link_username.starts_with('$') {
            return Err(ConfigError::invalid(
                "mesh.link_username",
                "must be non-empty and must not start with `$`",
            ));
        }
        if bus.users.iter().any(|u| u.username == self.link_username) {
            return Err(ConfigError::invalid(
                "mesh.link_username",
                "must differ from the bus.users service accounts",
            ));
        }
        if self.link_password.expose().len() < 16 {
            return Err(ConfigError::invalid(
                "mesh.link_password",
                "must be at least 16 characters, the same on every node of the mesh",
            ));
        }
        if self.advertise_host.is_empty() && bus.tcp_listen.ip().is_unspecified() {
            return Err(ConfigError::invalid(
                "mesh.advertise_host",
                format!(
                    "must name this host (e.g. \"192.168.1.20\" or \"pi.lan\") because \
                     bus.tcp_listen ({}) listens on every address",
                    bus.tcp_listen
                ),
            ));
        }
        for (i, peer) in self.peers.iter().enumerate() {
            if BrokerUrl::parse_host_port(peer).is_err() {
                return Err(ConfigError::invalid(
                    &format!("mesh.peers[{i}]"),
                    format!("`{peer}` is not host:port, e.g. \"192.168.1.21:1883\""),
                ));
            }
        }
        let positive = [
            ("mesh.heartbeat_interval", self.heartbeat_interval),
            ("mesh.exchange_interval", self.exchange_interval),
            ("mesh.node_expiry", self.node_expiry),
            ("mesh.ping_interval", self.ping_interval),
            ("mesh.dedup_window", self.dedup_window),
            ("mesh.send_timeout", self.send_timeout),
            ("mesh.offline_expiry", self.offline_expiry),
        ];
        for (key, value) in positive {
            if value < Duration::from_millis(10) {
                return Err(ConfigError::invalid(key, "must be at least 10ms"));
            }
        }
        if self.missed_heartbeats == 0 {
            return Err(ConfigError::invalid(
                "mesh.missed_heartbeats",
                "must be at least 1",
            ));
        }
        if !(1..=32).contains(&self.max_hops) {
            return Err(ConfigError::invalid(
                "mesh.max_hops",
                "must be between 1 and 32",
            ));
        }
        if self.offline_max_per_user == 0 {
            return Err(ConfigError::invalid(
                "mesh.offline_max_per_user",
                "must be at least 1",
            ));
        }
        if !(64..=(bus.max_packet_size as usize / 2)).contains(&self.max_message_bytes) {
            return Err(ConfigError::invalid(
                "mesh.max_message_bytes",
                format!(
                    "must be between 64 and half of bus.max_packet_size ({})",
                    bus.max_packet_size / 2
                ),
            ));
        }
        Ok(())
    }
}
