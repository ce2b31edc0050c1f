//! Owns the weather providers: one trait, two clients (Open-Meteo, the default, which
//! fetches many places per request; OpenWeatherMap 2.5, one place per request), the
//! Open-Meteo geocoding client, and the shared observation type. The clients are
//! blocking (ureq); callers run them with `spawn_blocking`.

mod geocoding;
pub mod open_meteo;
pub mod openweathermap;
pub mod quota;

use std::time::Duration;

use crate::domain::weather::{Conditions, Coord};
use crate::outbound::agent;

pub use geocoding::{Geocoder, PlaceCandidate};
pub use open_meteo::OpenMeteo;
pub use openweathermap::OpenWeatherMap;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    /// 429: slow down. `retry_after` when the provider says how long; `reason` as the
    /// provider words it ("Daily API request limit exceeded").
    #[error("rate limited by the provider: {reason}")]
    RateLimited {
        retry_after: Option<Duration>,
        reason: String,
    },
    /// 5xx or a dropped connection: worth retrying later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("provider timed out")]
    Timeout,
    /// 4xx other than 429: our request or key is wrong; retrying will not help.
    #[error("provider refused the request ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("unexpected provider response: {0}")]
    Parse(String),
}

impl ProviderError {
    /// Whether backing off and retrying may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            ProviderError::Refused { .. } | ProviderError::Parse(_)
        )
    }

    /// A short metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Unavailable(_) => "unavailable",
            ProviderError::Timeout => "timeout",
            ProviderError::Refused { .. } => "refused",
            ProviderError::Parse(_) => "bad_response",
        }
    }
}

/// A source of current conditions. `fetch` blocks; run it off the async executor.
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    /// Most places one `fetch` call may carry.
    fn max_batch(&self) -> usize;
    /// What one place of a request counts against the quota.
    fn weight_per_place(&self) -> f64 {
        1.0
    }
    /// Conditions for `places`, in the same order.
    fn fetch(&self, places: &[Coord]) -> Result<Vec<Conditions>, ProviderError>;
}

/// Sends a GET and returns (status, body), mapping transport failures.
fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, String), ProviderError> {
    match agent.get(url).call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .with_config()
                .limit(4 * 1024 * 1024)
                .read_to_string()
                .map_err(|e| transport(&e))?;
            Ok((status, body))
        }
        Err(e) => Err(transport(&e)),
    }
}

fn transport(e: &ureq::Error) -> ProviderError {
    match e {
        ureq::Error::Timeout(_) => ProviderError::Timeout,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ProviderError::Timeout,
        other => ProviderError::Unavailable(other.to_string()),
    }
}

/// Formats a coordinate for a query string: enough digits for the 0.01° grid.
fn coord(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Removes `base`'s trailing slash so paths can be appended.
fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}
