//! The `[http]` section: the listener, body and connection limits, timeouts, proxies.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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

impl HttpConfig {
    /// Checks the section; the error names the key and how to fix it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "http.max_body_bytes",
                "must be at least 1024 bytes",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "http.request_timeout",
                "must be more than 0, e.g. \"30s\"",
            ));
        }
        if self.max_connections == 0 || self.max_connections > 65_536 {
            return Err(ConfigError::invalid(
                "http.max_connections",
                "must be between 1 and 65536, e.g. 512",
            ));
        }
        if self.max_connections_per_client == 0 {
            return Err(ConfigError::invalid(
                "http.max_connections_per_client",
                "must be at least 1, e.g. 64",
            ));
        }
        if self.header_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "http.header_timeout",
                "must be more than 0, e.g. \"10s\"",
            ));
        }
        Ok(())
    }
}
