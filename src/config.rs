//! Owns the configuration: the serde structs, the layered load
//! (defaults → TOML file → `METEOMESH__SECTION__KEY` env → CLI flags), validation with
//! messages that say how to fix a bad value, and redaction of secrets.
//!
//! Every struct denies unknown keys so a typo fails at start instead of being ignored.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Serialize` never show the value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Name of the config file looked up in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "meteomesh.toml";
/// Prefix of environment overrides: `METEOMESH__HTTP__LISTEN=127.0.0.1:9000`.
pub const ENV_PREFIX: &str = "METEOMESH";
const ENV_SEPARATOR: &str = "__";
/// Service accounts from the environment: `user:password[,user:password...]`.
pub const ENV_USERS: &str = "METEOMESH__BUS__USERS";
/// Mesh seed peers from the environment: `host:port[,host:port...]`.
pub const ENV_PEERS: &str = "METEOMESH__MESH__PEERS";

fn parse_env_users(value: &str) -> Result<Vec<BusUser>, ConfigError> {
    value
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let (username, password) = entry.trim().split_once(':').ok_or_else(|| {
                ConfigError::invalid(
                    ENV_USERS,
                    "write it as user:password[,user:password...] (no commas in passwords)",
                )
            })?;
            Ok(BusUser {
                username: username.to_owned(),
                password: Secret::new(password),
            })
        })
        .collect()
}

/// A configuration problem found at start; the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A string that must never be printed: `Debug` and `Serialize` show `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str(REDACTED)
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { REDACTED })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub weather: WeatherConfig,
    pub notifier: NotifierConfig,
    pub telegram: TelegramConfig,
    pub sla: SlaConfig,
    pub bus: BusConfig,
    pub mesh: MeshConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ProviderKind {
    OpenMeteo,
    OpenWeatherMap,
}

impl TryFrom<String> for ProviderKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "open-meteo" => Ok(ProviderKind::OpenMeteo),
            "openweathermap" => Ok(ProviderKind::OpenWeatherMap),
            other => Err(format!(
                "unknown provider `{other}`; use \"open-meteo\" or \"openweathermap\""
            )),
        }
    }
}

impl ProviderKind {
    /// The name config files use.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenMeteo => "open-meteo",
            ProviderKind::OpenWeatherMap => "openweathermap",
        }
    }
}

impl Serialize for ProviderKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

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
    fn validate(&self, bus: &BusConfig, auth: &AuthConfig) -> Result<(), ConfigError> {
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeatherConfig {
    /// "open-meteo" (default, no key) or "openweathermap" (needs `openweathermap_api_key`).
    pub provider: ProviderKind,
    /// How often every subscribed place is fetched.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Places per Open-Meteo request (at most 1000).
    pub batch_size: usize,
    /// Timeout of one provider request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest wait between retries after 429/5xx answers.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    pub open_meteo_url: String,
    pub geocoding_url: String,
    pub openweathermap_url: String,
    pub openweathermap_api_key: Secret,
    /// Calls per minute the OpenWeatherMap plan allows (free: 60); calls are spaced out
    /// to stay under it.
    pub openweathermap_calls_per_minute: u32,
    /// Subscriptions one user may have.
    pub max_subscriptions_per_user: usize,
    /// °C a temperature must move back past a threshold before its alert clears.
    pub hysteresis: f64,
    /// How long geocoding answers are kept.
    #[serde(with = "humantime_serde")]
    pub geocoding_cache_ttl: Duration,
}

impl Default for WeatherConfig {
    fn default() -> Self {
        WeatherConfig {
            provider: ProviderKind::OpenMeteo,
            poll_interval: Duration::from_secs(10 * 60),
            batch_size: 100,
            request_timeout: Duration::from_secs(15),
            max_backoff: Duration::from_secs(15 * 60),
            open_meteo_url: "https://api.open-meteo.com".into(),
            geocoding_url: "https://geocoding-api.open-meteo.com".into(),
            openweathermap_url: "https://api.openweathermap.org".into(),
            openweathermap_api_key: Secret::default(),
            openweathermap_calls_per_minute: 60,
            max_subscriptions_per_user: 50,
            hysteresis: 0.5,
            geocoding_cache_ttl: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierConfig {
    /// How long delivered and permanently failed outbox rows are kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            retention: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// How often metrics are sampled into the history and SLAs evaluated (host metrics
    /// are refreshed at the same pace).
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// How long samples and violations are kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Default forecast horizon.
    #[serde(with = "humantime_serde")]
    pub forecast_horizon: Duration,
    /// How much recent history the forecast model is fitted on.
    #[serde(with = "humantime_serde")]
    pub forecast_window: Duration,
    /// Most SLAs (each adds one history series).
    pub max_slas: usize,
    /// Read current values and history from this Prometheus server
    /// (`http://host:9090`) instead of the embedded history. Empty: embedded.
    pub prometheus_url: String,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            sample_interval: Duration::from_secs(15),
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            forecast_horizon: Duration::from_secs(10 * 60),
            forecast_window: Duration::from_secs(60 * 60),
            max_slas: 50,
            prometheus_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// The bot token from @BotFather. Empty: no Telegram; alerts still go to MQTT.
    pub bot_token: Secret,
    /// Bot API base address (change only for a local Bot API server or a test).
    pub api_base: String,
    /// Long-poll `getUpdates` so users can link their chat with `/start <code>`.
    pub link: bool,
    /// Shortest gap between two messages to one chat (Telegram allows about 1/s).
    #[serde(with = "humantime_serde")]
    pub per_chat_interval: Duration,
    /// Messages per second to all chats together (Telegram allows about 30).
    pub messages_per_second: u32,
    /// Requests to Telegram at once. A crash may resend at most this many messages.
    pub max_in_flight: usize,
    /// Timeout of one sendMessage request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest wait between retries after 5xx answers or timeouts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long one getUpdates long poll waits for news.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            bot_token: Secret::default(),
            api_base: "https://api.telegram.org".into(),
            link: false,
            per_chat_interval: Duration::from_secs(1),
            messages_per_second: 25,
            max_in_flight: 4,
            request_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10 * 60),
            poll_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Anyone who can reach the HTTP port may create an account. The first account
    /// becomes admin. When off, only an admin (or `meteomesh user add`) creates accounts.
    pub open_registration: bool,
    /// HS256 key for login tokens. Empty: 32 random bytes are generated at first start
    /// and kept in the database, so tokens survive restarts.
    pub jwt_secret: Secret,
    /// How long a login token is valid.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// Password hashes computed at once (argon2id needs 19 MiB each).
    pub hash_concurrency: usize,
    /// Failed logins per account and per client address before each further attempt
    /// must wait (`login_first_delay`, doubling per failure, at most
    /// `login_failure_window`); failures are forgotten a window after the last delay ended. Devices that logged in to the
    /// account before count only their own failures.
    pub login_max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub login_failure_window: Duration,
    /// The wait after the `login_max_failures`-th failure; it doubles with each further one.
    #[serde(with = "humantime_serde")]
    pub login_first_delay: Duration,
    /// IANA time zone given to new accounts.
    pub default_timezone: String,
    /// Mark the session cookie `Secure` (set this when a TLS proxy fronts meteomesh).
    pub cookie_secure: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            open_registration: true,
            jwt_secret: Secret::default(),
            token_lifetime: Duration::from_secs(24 * 60 * 60),
            hash_concurrency: 2,
            login_max_failures: 5,
            login_failure_window: Duration::from_secs(15 * 60),
            login_first_delay: Duration::from_secs(1),
            default_timezone: "UTC".into(),
            cookie_secure: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `meteomesh=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The SQLite database file; its folder is created at start.
    pub path: PathBuf,
    /// How long a statement waits for a lock held by another connection.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// Cap on the database file in bytes (unset: the disk is the limit). Past it writes
    /// are refused as on a full disk; useful on a shared flash partition.
    pub max_size: Option<u64>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./data/meteomesh.db"),
            busy_timeout: Duration::from_secs(5),
            max_size: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time a client has to send a request's headers; idle keep-alive connections are
    /// closed after it too.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections one client address may have open at once; more are answered 429 and
    /// closed (trusted proxies are exempt).
    pub max_connections_per_client: usize,
    /// Reverse proxies in front of meteomesh: their connections are not capped per
    /// address, and the last address of their `X-Forwarded-For` header is taken as the
    /// client's (for login throttling and the logs). Anyone else's header is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            max_connections_per_client: 64,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum BusMode {
    /// Start the embedded rmqtt broker; modules connect to it over loopback.
    Embedded,
    /// Do not start a broker; every module talks to `bus.url`.
    External,
}

impl TryFrom<String> for BusMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "embedded" => Ok(BusMode::Embedded),
            "external" => Ok(BusMode::External),
            other => Err(format!(
                "unknown bus mode `{other}`; use \"embedded\" or \"external\""
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub mode: BusMode,
    /// External mode only: `mqtt://host:port` of the broker to use.
    pub url: String,
    /// External mode only: credentials of meteomesh's own connection.
    pub username: String,
    pub password: Secret,
    /// Prefix of the MQTT client ids meteomesh's modules use; must be unique per node
    /// on a shared external broker.
    pub client_id_prefix: String,
    /// Embedded broker: plain MQTT listener.
    pub tcp_enabled: bool,
    pub tcp_listen: SocketAddr,
    /// Embedded broker: MQTT over WebSocket listener (for browsers).
    pub ws_enabled: bool,
    pub ws_listen: SocketAddr,
    /// Embedded broker: sessions users and anonymous clients may hold at once (live, or
    /// stored for a persistent client); meteomesh's own modules and service accounts have
    /// `bus::RESERVED_SESSIONS` more.
    pub max_connections: usize,
    /// Embedded broker: largest MQTT packet, in bytes; larger ones are refused.
    pub max_packet_size: u32,
    /// Embedded broker: unacknowledged QoS 1/2 messages in flight per client.
    pub max_inflight: u16,
    /// Embedded broker: messages queued per client beyond the inflight window. A client
    /// that lets more pile up loses the oldest (counted in metrics).
    pub max_queued_messages: usize,
    /// Embedded broker: how long the session of a disconnected persistent client is kept.
    #[serde(with = "humantime_serde")]
    pub session_expiry: Duration,
    /// Embedded broker: accept clients that send no username. Off by default.
    pub allow_anonymous: bool,
    /// Embedded broker: sessions (live or stored persistent ones) one user account may
    /// hold at once; a reconnect with a client id it already holds always passes.
    pub max_sessions_per_user: usize,
    /// Embedded broker: retained messages that service accounts and wills may keep at
    /// once (users may not retain; meteomesh's own state is not counted).
    pub max_retained_messages: usize,
    /// Embedded broker: their total payload bytes.
    pub max_retained_bytes: usize,
    /// Embedded broker: a connection that has not sent its CONNECT within this long is
    /// closed (Linux).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Embedded broker: connections still waiting for their CONNECT after a second, in
    /// total; the oldest beyond it are closed (Linux).
    pub max_pending_connections: usize,
    /// Embedded broker: the same, per client address.
    pub max_pending_per_address: usize,
    /// Embedded broker: service accounts allowed to connect (full topic access).
    pub users: Vec<BusUser>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            mode: BusMode::Embedded,
            url: "mqtt://127.0.0.1:1883".into(),
            username: String::new(),
            password: Secret::default(),
            client_id_prefix: "meteomesh".into(),
            tcp_enabled: true,
            tcp_listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            ws_enabled: true,
            ws_listen: SocketAddr::from(([0, 0, 0, 0], 8083)),
            max_connections: 1024,
            max_packet_size: 256 * 1024,
            max_inflight: 32,
            max_queued_messages: 1000,
            session_expiry: Duration::from_secs(2 * 60 * 60),
            allow_anonymous: false,
            max_sessions_per_user: 10,
            max_retained_messages: 1000,
            max_retained_bytes: 4 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_pending_connections: 1024,
            max_pending_per_address: 32,
            users: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusUser {
    pub username: String,
    pub password: Secret,
}

/// Overrides given on the command line; they win over every other layer.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub http_listen: Option<SocketAddr>,
    pub database: Option<PathBuf>,
    pub log_level: Option<String>,
}

/// Where the config came from, for `print-config` and the start-up log.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
}

impl Config {
    /// Loads the layers in order. `file` is `--config`; without it `./meteomesh.toml` is
    /// read when present. `env` is the process environment (a parameter so tests can
    /// pass their own).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        cli: &CliOverrides,
    ) -> Result<Loaded, ConfigError> {
        let file = match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::Read {
                        path: path.to_owned(),
                        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                    });
                }
                Some(path.to_owned())
            }
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };

        // `bus.users` is a list of tables, which env vars cannot spell; take it in the
        // `user:password,user:password` form here instead.
        // `mesh.peers` likewise, as `host:port,host:port`.
        let mut env_users = None;
        let mut env_peers = None;
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, v)| match k.as_str() {
                ENV_USERS => {
                    env_users = Some(v.clone());
                    false
                }
                ENV_PEERS => {
                    env_peers = Some(v.clone());
                    false
                }
                _ => true,
            })
            .collect();
        let env_users = env_users.map(|v| parse_env_users(&v)).transpose()?;

        let text = match &file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let mut config = Config::layered(text.as_deref(), file.as_deref(), env)?;

        if let Some(users) = env_users {
            config.bus.users = users;
        }
        if let Some(peers) = env_peers {
            config.mesh.peers = peers
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(listen) = cli.http_listen {
            config.http.listen = listen;
        }
        if let Some(db) = &cli.database {
            config.storage.path = db.clone();
        }
        if let Some(level) = &cli.log_level {
            config.log.level = level.clone();
        }
        config.validate()?;
        Ok(Loaded { config, file })
    }

    /// The file's TOML (if any) under the environment's overrides, deserialised.
    fn layered(
        text: Option<&str>,
        file: Option<&Path>,
        env: std::collections::HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(text) = text {
            let shown = file.map_or_else(|| "config".into(), |p| p.display().to_string());
            // Parse with toml first: its errors carry line and column.
            toml::from_str::<toml::Table>(text)
                .map_err(|e| ConfigError::Parse(format!("{shown}: {e}")))?;
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .source(Some(env)),
        );
        let layered = builder.build().map_err(|e| describe_error(e, file))?;
        layered
            .try_deserialize()
            .map_err(|e| describe_error(e, file))
    }

    /// A config from TOML text alone (no environment, no file), validated. For tools and
    /// the fuzzer; the service itself goes through [`Config::load`].
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config = Config::layered(Some(text), None, Default::default())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges, combinations, URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::builder()
            .parse(&self.log.level)
            .is_err()
        {
            return Err(ConfigError::invalid(
                "log.level",
                format!(
                    "`{}` is not a log filter; use one of error, warn, info, debug, trace \
                     (or a directive such as `meteomesh=debug,info`)",
                    self.log.level
                ),
            ));
        }
        if self.storage.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "storage.path",
                "must name a file, e.g. \"./data/meteomesh.db\"",
            ));
        }
        if self.storage.busy_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "storage.busy_timeout",
                "must be more than 0, e.g. \"5s\"",
            ));
        }
        if self.storage.max_size.is_some_and(|m| m < 64 * 1024) {
            return Err(ConfigError::invalid(
                "storage.max_size",
                "must be at least 65536 bytes, or left out for no cap",
            ));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "http.max_body_bytes",
                "must be at least 1024 bytes",
            ));
        }
        if self.http.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "http.request_timeout",
                "must be more than 0, e.g. \"30s\"",
            ));
        }
        if self.http.max_connections == 0 || self.http.max_connections > 65_536 {
            return Err(ConfigError::invalid(
                "http.max_connections",
                "must be between 1 and 65536, e.g. 512",
            ));
        }
        if self.http.max_connections_per_client == 0 {
            return Err(ConfigError::invalid(
                "http.max_connections_per_client",
                "must be at least 1, e.g. 64",
            ));
        }
        if self.http.header_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "http.header_timeout",
                "must be more than 0, e.g. \"10s\"",
            ));
        }
        let auth = &self.auth;
        if !auth.jwt_secret.is_empty() && auth.jwt_secret.expose().len() < 32 {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                "must be at least 32 characters, or empty to generate one",
            ));
        }
        if auth.token_lifetime < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "auth.token_lifetime",
                "must be at least 1s, e.g. \"24h\"",
            ));
        }
        if !(1..=64).contains(&auth.hash_concurrency) {
            return Err(ConfigError::invalid(
                "auth.hash_concurrency",
                "must be between 1 and 64 (each hash needs 19 MiB)",
            ));
        }
        if auth.login_max_failures == 0 {
            return Err(ConfigError::invalid(
                "auth.login_max_failures",
                "must be at least 1",
            ));
        }
        if auth.login_failure_window.is_zero() {
            return Err(ConfigError::invalid(
                "auth.login_failure_window",
                "must be more than 0, e.g. \"15m\"",
            ));
        }
        if auth.login_first_delay.is_zero() || auth.login_first_delay > auth.login_failure_window {
            return Err(ConfigError::invalid(
                "auth.login_first_delay",
                "must be more than 0 and at most auth.login_failure_window, e.g. \"1s\"",
            ));
        }
        if jiff::tz::TimeZone::get(&auth.default_timezone).is_err() {
            return Err(ConfigError::invalid(
                "auth.default_timezone",
                format!(
                    "`{}` is not an IANA time zone; use a name such as \"Europe/Rome\" or \"UTC\"",
                    auth.default_timezone
                ),
            ));
        }
        let w = &self.weather;
        if w.poll_interval < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "weather.poll_interval",
                "must be at least 1m (the providers' free tiers allow ~10 calls per minute)",
            ));
        }
        if !(1..=1000).contains(&w.batch_size) {
            return Err(ConfigError::invalid(
                "weather.batch_size",
                "must be between 1 and 1000",
            ));
        }
        if w.request_timeout.is_zero() || w.max_backoff.is_zero() {
            return Err(ConfigError::invalid(
                "weather.request_timeout",
                "request_timeout and max_backoff must be more than 0",
            ));
        }
        for (key, url) in [
            ("weather.open_meteo_url", &w.open_meteo_url),
            ("weather.geocoding_url", &w.geocoding_url),
            ("weather.openweathermap_url", &w.openweathermap_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::invalid(
                    key,
                    "must start with https:// (or http://)",
                ));
            }
        }
        if w.provider == ProviderKind::OpenWeatherMap && w.openweathermap_api_key.is_empty() {
            return Err(ConfigError::invalid(
                "weather.openweathermap_api_key",
                "is required with provider = \"openweathermap\"",
            ));
        }
        if w.openweathermap_calls_per_minute == 0 {
            return Err(ConfigError::invalid(
                "weather.openweathermap_calls_per_minute",
                "must be at least 1",
            ));
        }
        if w.max_subscriptions_per_user == 0 {
            return Err(ConfigError::invalid(
                "weather.max_subscriptions_per_user",
                "must be at least 1",
            ));
        }
        if !(0.0..=5.0).contains(&w.hysteresis) {
            return Err(ConfigError::invalid(
                "weather.hysteresis",
                "must be between 0 and 5 (°C)",
            ));
        }
        if self.notifier.retention < Duration::from_secs(24 * 60 * 60) {
            return Err(ConfigError::invalid(
                "notifier.retention",
                "must be at least \"1day\" so a delivery is never forgotten before it is settled",
            ));
        }
        let tg = &self.telegram;
        if !(tg.api_base.starts_with("https://") || tg.api_base.starts_with("http://")) {
            return Err(ConfigError::invalid(
                "telegram.api_base",
                "must start with https:// (or http://)",
            ));
        }
        let token = tg.bot_token.expose();
        if !token.is_empty()
            && (!token.contains(':')
                || !token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '_' || c == '-'))
        {
            return Err(ConfigError::invalid(
                "telegram.bot_token",
                "does not look like a bot token (`123456:ABC-def...` from @BotFather)",
            ));
        }
        if tg.link && token.is_empty() {
            return Err(ConfigError::invalid(
                "telegram.link",
                "needs telegram.bot_token; set the token or link = false",
            ));
        }
        if tg.messages_per_second == 0 {
            return Err(ConfigError::invalid(
                "telegram.messages_per_second",
                "must be at least 1 (Telegram allows about 30)",
            ));
        }
        if !(1..=64).contains(&tg.max_in_flight) {
            return Err(ConfigError::invalid(
                "telegram.max_in_flight",
                "must be between 1 and 64",
            ));
        }
        if tg.request_timeout.is_zero() || tg.max_backoff.is_zero() {
            return Err(ConfigError::invalid(
                "telegram.request_timeout",
                "request_timeout and max_backoff must be more than 0",
            ));
        }
        if tg.poll_timeout > Duration::from_secs(50) {
            return Err(ConfigError::invalid(
                "telegram.poll_timeout",
                "must be at most 50s (Telegram closes longer polls)",
            ));
        }
        let sla = &self.sla;
        if sla.sample_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "sla.sample_interval",
                "must be at least 1s, e.g. \"15s\"",
            ));
        }
        if sla.retention < Duration::from_secs(6 * 60 * 60) {
            return Err(ConfigError::invalid(
                "sla.retention",
                "must be at least 6h (the violation counts look back 6 hours)",
            ));
        }
        if sla.forecast_horizon < sla.sample_interval
            || sla.forecast_horizon > sla.sample_interval * 240
        {
            return Err(ConfigError::invalid(
                "sla.forecast_horizon",
                "must be between one sample_interval and 240 of them",
            ));
        }
        if sla.forecast_window < sla.sample_interval * 30 {
            return Err(ConfigError::invalid(
                "sla.forecast_window",
                "must hold at least 30 samples (30 × sample_interval)",
            ));
        }
        if !(1..=1000).contains(&sla.max_slas) {
            return Err(ConfigError::invalid(
                "sla.max_slas",
                "must be between 1 and 1000",
            ));
        }
        let url = &sla.prometheus_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "sla.prometheus_url",
                "must start with http:// or https://, or be empty for the embedded history",
            ));
        }
        let bus = &self.bus;
        if bus.client_id_prefix.is_empty()
            || bus.client_id_prefix.len() > 32
            || !bus
                .client_id_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                "bus.client_id_prefix",
                "use 1 to 32 characters of [A-Za-z0-9_-]",
            ));
        }
        match bus.mode {
            BusMode::External => {
                BrokerUrl::parse(&bus.url).map_err(|m| ConfigError::invalid("bus.url", m))?;
            }
            BusMode::Embedded => {
                if bus.max_connections == 0 {
                    return Err(ConfigError::invalid(
                        "bus.max_connections",
                        "must be at least 1",
                    ));
                }
                if bus.max_packet_size < 1024 {
                    return Err(ConfigError::invalid(
                        "bus.max_packet_size",
                        "must be at least 1024 bytes",
                    ));
                }
                if bus.max_inflight == 0 {
                    return Err(ConfigError::invalid(
                        "bus.max_inflight",
                        "must be at least 1",
                    ));
                }
                if bus.max_queued_messages == 0 {
                    return Err(ConfigError::invalid(
                        "bus.max_queued_messages",
                        "must be at least 1",
                    ));
                }
                if bus.max_sessions_per_user == 0 {
                    return Err(ConfigError::invalid(
                        "bus.max_sessions_per_user",
                        "must be at least 1",
                    ));
                }
                if !(Duration::from_secs(1)..=Duration::from_secs(300))
                    .contains(&bus.connect_timeout)
                {
                    return Err(ConfigError::invalid(
                        "bus.connect_timeout",
                        "must be between 1s and 5m (clients send CONNECT at once; 10s is plenty)",
                    ));
                }
                for (key, value) in [
                    ("bus.max_pending_connections", bus.max_pending_connections),
                    ("bus.max_pending_per_address", bus.max_pending_per_address),
                ] {
                    if value == 0 {
                        return Err(ConfigError::invalid(key, "must be at least 1"));
                    }
                }
                // Port 0 means "any free port", so only fixed ports can clash.
                let clash = |a: SocketAddr, b: SocketAddr| a.port() != 0 && a == b;
                if bus.tcp_enabled && clash(bus.tcp_listen, self.http.listen) {
                    return Err(ConfigError::invalid(
                        "bus.tcp_listen",
                        "must differ from http.listen",
                    ));
                }
                if bus.ws_enabled && clash(bus.ws_listen, self.http.listen) {
                    return Err(ConfigError::invalid(
                        "bus.ws_listen",
                        "must differ from http.listen",
                    ));
                }
                if bus.tcp_enabled && bus.ws_enabled && clash(bus.tcp_listen, bus.ws_listen) {
                    return Err(ConfigError::invalid(
                        "bus.ws_listen",
                        "must differ from bus.tcp_listen",
                    ));
                }
                for (i, user) in bus.users.iter().enumerate() {
                    let key = format!("bus.users[{i}]");
                    if user.username.is_empty() || user.username.starts_with('$') {
                        return Err(ConfigError::invalid(
                            &format!("{key}.username"),
                            "must be non-empty and must not start with `$` (reserved)",
                        ));
                    }
                    if user.password.expose().len() < 8 {
                        return Err(ConfigError::invalid(
                            &format!("{key}.password"),
                            "must be at least 8 characters",
                        ));
                    }
                    if bus.users[..i].iter().any(|u| u.username == user.username) {
                        return Err(ConfigError::invalid(
                            &format!("{key}.username"),
                            format!("`{}` is listed twice", user.username),
                        ));
                    }
                }
            }
        }
        self.mesh.validate(&self.bus, &self.auth)?;
        Ok(())
    }

    /// The effective config as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Turns the layered loader's error into one that names the key and the fix.
fn describe_error(e: config::ConfigError, file: Option<&Path>) -> ConfigError {
    let origin = file
        .map(|p| format!(" (in {} or a METEOMESH__* variable)", p.display()))
        .unwrap_or_else(|| " (in a METEOMESH__* variable)".to_owned());
    let text = e.to_string();
    let hint = if text.contains("unknown field") {
        "; remove it or check its spelling against config.example.toml"
    } else if text.contains("invalid socket address") {
        "; write it as IP:PORT, e.g. \"0.0.0.0:8080\""
    } else if text.contains("time unit") || text.contains("duration") {
        "; write a duration such as \"500ms\", \"15s\", \"10m\" or \"2h\""
    } else if text.contains("unknown variant") {
        "; use one of the values listed"
    } else {
        "; see config.example.toml for the expected form"
    };
    ConfigError::Parse(format!("{text}{origin}{hint}"))
}

/// `mqtt://host:port` of an external broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// `host:port` (a mesh peer, a client's node list); the port is required.
    pub fn parse_host_port(addr: &str) -> Result<Self, String> {
        let fix = "write it as HOST:PORT, e.g. \"192.168.1.21:1883\"";
        let (host, port) = addr
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| format!("`{addr}` has no port; {fix}"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{port}` is not a port; {fix}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(format!("`{addr}` has no valid host; {fix}"));
        }
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
        })
    }

    pub fn parse(url: &str) -> Result<Self, String> {
        let fix = "write it as mqtt://HOST:PORT, e.g. \"mqtt://127.0.0.1:1883\"";
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| format!("`{url}` has no mqtt:// scheme; {fix}"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{p}` is not a port; {fix}"))?;
                (h, port)
            }
            None => (rest, 1883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(format!("`{url}` has no valid host; {fix}"));
        }
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(None, env, &CliOverrides::default()).map(|l| l.config)
    }

    #[test]
    fn secret_never_shows_in_debug_or_serialize() {
        let mut c = Config::default();
        c.bus.password = Secret::new("hunter2-very-secret");
        c.bus.users.push(BusUser {
            username: "svc".into(),
            password: Secret::new("another-secret"),
        });
        let debug = format!("{c:?}");
        let toml = c.to_redacted_toml();
        for out in [&debug, &toml] {
            assert!(!out.contains("hunter2"), "{out}");
            assert!(!out.contains("another-secret"), "{out}");
            assert!(out.contains(REDACTED));
        }
    }

    #[test]
    fn env_overrides_nested_keys_and_parses_types() {
        let c = load_env(&[
            ("METEOMESH__HTTP__LISTEN", "127.0.0.1:9999"),
            ("METEOMESH__BUS__WS_ENABLED", "false"),
            ("METEOMESH__BUS__MAX_INFLIGHT", "7"),
            ("METEOMESH__STORAGE__BUSY_TIMEOUT", "250ms"),
            ("OTHER_VAR", "ignored"),
        ])
        .unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:9999".parse().unwrap());
        assert!(!c.bus.ws_enabled);
        assert_eq!(c.bus.max_inflight, 7);
        assert_eq!(c.storage.busy_timeout, Duration::from_millis(250));
    }

    #[test]
    fn env_strings_are_not_reinterpreted_as_numbers() {
        let c = load_env(&[
            ("METEOMESH__BUS__PASSWORD", "0012345678"),
            ("METEOMESH__BUS__CLIENT_ID_PREFIX", "007"),
            ("METEOMESH__BUS__USERNAME", "true"),
        ])
        .unwrap();
        assert_eq!(c.bus.password.expose(), "0012345678");
        assert_eq!(c.bus.client_id_prefix, "007");
        assert_eq!(c.bus.username, "true");
    }

    #[test]
    fn env_mesh_peers_and_checks() {
        let c = load_env(&[
            (ENV_PEERS, "127.0.0.2:1883, pi.lan:1884"),
            ("METEOMESH__MESH__ENABLED", "true"),
            ("METEOMESH__MESH__ADVERTISE_HOST", "127.0.0.1"),
            ("METEOMESH__MESH__LINK_PASSWORD", "link-password-123456"),
        ])
        .unwrap();
        assert_eq!(c.mesh.peers, ["127.0.0.2:1883", "pi.lan:1884"]);
        let err = load_env(&[
            (ENV_PEERS, "nohost"),
            ("METEOMESH__MESH__ENABLED", "true"),
            ("METEOMESH__MESH__ADVERTISE_HOST", "127.0.0.1"),
            ("METEOMESH__MESH__LINK_PASSWORD", "link-password-123456"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("mesh.peers[0]"), "{err}");
        let err = load_env(&[
            ("METEOMESH__MESH__ENABLED", "true"),
            ("METEOMESH__MESH__LINK_PASSWORD", "link-password-123456"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("mesh.advertise_host"), "{err}");
        let err = load_env(&[("METEOMESH__MESH__SHARED_SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mesh.shared_secret"), "{err}");
    }

    #[test]
    fn env_service_accounts() {
        let c = load_env(&[(ENV_USERS, "svc:pass-word-1, other:p:w-long-1")]).unwrap();
        assert_eq!(c.bus.users.len(), 2);
        assert_eq!(c.bus.users[0].username, "svc");
        assert_eq!(c.bus.users[1].password.expose(), "p:w-long-1");
        let err = load_env(&[(ENV_USERS, "nocolon")]).unwrap_err().to_string();
        assert!(err.contains(ENV_USERS), "{err}");
        let err = load_env(&[(ENV_USERS, "svc:short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bus.users[0].password"), "{err}");
    }

    #[test]
    fn broker_url_forms() {
        assert_eq!(
            BrokerUrl::parse("mqtt://broker.lan:1884").unwrap(),
            BrokerUrl {
                host: "broker.lan".into(),
                port: 1884
            }
        );
        assert_eq!(BrokerUrl::parse("mqtt://10.0.0.2").unwrap().port, 1883);
        assert_eq!(BrokerUrl::parse("mqtt://[::1]:1883").unwrap().host, "::1");
        assert!(BrokerUrl::parse("http://x:1").is_err());
        assert!(BrokerUrl::parse("mqtt://:1883").is_err());
        assert!(BrokerUrl::parse("mqtt://h:0").is_err());
        assert!(BrokerUrl::parse("mqtt://h:99999").is_err());
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = load_env(&[("METEOMESH__HTTP__LISTEN", "localhost")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http.listen") && err.contains("IP:PORT"),
            "{err}"
        );
        let err = load_env(&[("METEOMESH__STORAGE__BUSY_TIMEOUT", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("busy_timeout") && err.contains("duration"),
            "{err}"
        );
        let err = load_env(&[("METEOMESH__HTTP__COLOUR", "blue")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour") && err.contains("spelling"), "{err}");
        let err = load_env(&[("METEOMESH__LOG__LEVEL", "loud[")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level"), "{err}");
    }
}
