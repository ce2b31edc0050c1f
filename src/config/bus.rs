//! The `[bus]` section: embedded or external broker, listeners, limits, service
//! accounts; and [`BrokerUrl`], the `mqtt://host:port` of an external broker.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

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

impl BusConfig {
    /// Checks the section (and that its listeners do not take HTTP's `http_listen`);
    /// the error names the key and how to fix it.
    pub(super) fn validate(&self, http_listen: SocketAddr) -> Result<(), ConfigError> {
        let bus = self;
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
                if bus.tcp_enabled && clash(bus.tcp_listen, http_listen) {
                    return Err(ConfigError::invalid(
                        "bus.tcp_listen",
                        "must differ from http.listen",
                    ));
                }
                if bus.ws_enabled && clash(bus.ws_listen, http_listen) {
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
        Ok(())
    }
}
