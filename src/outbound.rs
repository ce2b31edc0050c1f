//! Owns outbound HTTP: the one way meteomesh builds a blocking client (ureq, rustls) for
//! remote services (weather providers, Telegram). Callers run requests with
//! `spawn_blocking`. Publishes and consumes nothing.

use std::time::Duration;

/// A blocking HTTP agent with the given overall timeout that reports 4xx/5xx as
/// responses (the callers classify them).
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("meteomesh/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Percent-encodes a URL path segment or query value (RFC 3986 unreserved characters
/// stay as they are).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
