//! The `[weather]` section: the provider, polling, quotas and hysteresis.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WeatherConfig {
    /// "open-meteo" (default, no key) or "openweathermap" (needs `openweathermap_api_key`).
    pub provider: ProviderKind,
    /// How often every subscribed place is fetched: never more often than the
    /// provider's data changes, and less often when the quota cannot carry the places.
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
    /// Open-Meteo's limits (each place of a request counts as one call; 0 = none): the
    /// free tier's by default, a customer plan's with `open_meteo_api_key`.
    pub open_meteo_calls_per_minute: u32,
    pub open_meteo_calls_per_hour: u32,
    pub open_meteo_calls_per_day: u32,
    /// Key of an Open-Meteo customer plan (sent as `apikey`; use the customer URL).
    pub open_meteo_api_key: Secret,
    /// Calls per minute the OpenWeatherMap plan allows (free: 60; 0 = none).
    pub openweathermap_calls_per_minute: u32,
    /// Calls per month the OpenWeatherMap plan allows (free: 1,000,000; 0 = none).
    pub openweathermap_calls_per_month: u32,
    /// Subscriptions one user may have.
    pub max_subscriptions_per_user: usize,
    /// °C a temperature must move back past a threshold before its alert clears.
    pub hysteresis: f64,
    /// How long geocoding answers are kept.
    #[serde(with = "humantime_serde")]
    pub geocoding_cache_ttl: Duration,
    /// Readings older than this decide nothing (neither raise nor clear).
    pub max_observation_age: ObservationAge,
    /// A place without a fresh reading for this long: its users are told (and told
    /// again when data returns).
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
}

/// `"auto"` (twice the provider's update interval) or a duration such as `"45m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ObservationAge {
    Auto,
    Fixed(Duration),
}

impl TryFrom<String> for ObservationAge {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "auto" {
            return Ok(ObservationAge::Auto);
        }
        humantime::parse_duration(&s)
            .map(ObservationAge::Fixed)
            .map_err(|e| format!("`{s}` is neither \"auto\" nor a duration like \"45m\": {e}"))
    }
}

impl Serialize for ObservationAge {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ObservationAge::Auto => s.serialize_str("auto"),
            ObservationAge::Fixed(d) => {
                s.serialize_str(&humantime::format_duration(*d).to_string())
            }
        }
    }
}

impl ProviderKind {
    /// How often the provider's current conditions change: Open-Meteo's `current` block
    /// is 15-minute data; OpenWeatherMap's stations and model update about every 10
    /// minutes.
    pub fn update_interval(self) -> Duration {
        match self {
            ProviderKind::OpenMeteo => Duration::from_secs(15 * 60),
            ProviderKind::OpenWeatherMap => Duration::from_secs(10 * 60),
        }
    }
}

impl Default for WeatherConfig {
    fn default() -> Self {
        WeatherConfig {
            provider: ProviderKind::OpenMeteo,
            poll_interval: Duration::from_secs(15 * 60),
            batch_size: 100,
            request_timeout: Duration::from_secs(15),
            max_backoff: Duration::from_secs(15 * 60),
            open_meteo_url: "https://api.open-meteo.com".into(),
            geocoding_url: "https://geocoding-api.open-meteo.com".into(),
            openweathermap_url: "https://api.openweathermap.org".into(),
            openweathermap_api_key: Secret::default(),
            open_meteo_calls_per_minute: 600,
            open_meteo_calls_per_hour: 5_000,
            open_meteo_calls_per_day: 10_000,
            open_meteo_api_key: Secret::default(),
            openweathermap_calls_per_minute: 60,
            openweathermap_calls_per_month: 1_000_000,
            max_subscriptions_per_user: 50,
            hysteresis: 0.5,
            geocoding_cache_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            max_observation_age: ObservationAge::Auto,
            stale_after: Duration::from_secs(3600),
        }
    }
}

impl WeatherConfig {
    /// The age past which a reading decides nothing.
    pub fn max_observation_age(&self) -> Duration {
        match self.max_observation_age {
            ObservationAge::Auto => 2 * self.provider.update_interval(),
            ObservationAge::Fixed(d) => d,
        }
    }

    /// Checks the section; the error names the key and how to fix it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let w = self;
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
        // One request weighs up to a batch (Open-Meteo) or one place: it must fit in
        // every limit, or it could never be sent.
        let (batch, limits): (usize, &[(&str, u32)]) = match w.provider {
            ProviderKind::OpenMeteo => (
                w.batch_size,
                &[
                    (
                        "weather.open_meteo_calls_per_minute",
                        w.open_meteo_calls_per_minute,
                    ),
                    (
                        "weather.open_meteo_calls_per_hour",
                        w.open_meteo_calls_per_hour,
                    ),
                    (
                        "weather.open_meteo_calls_per_day",
                        w.open_meteo_calls_per_day,
                    ),
                ],
            ),
            ProviderKind::OpenWeatherMap => (
                1,
                &[
                    (
                        "weather.openweathermap_calls_per_minute",
                        w.openweathermap_calls_per_minute,
                    ),
                    (
                        "weather.openweathermap_calls_per_month",
                        w.openweathermap_calls_per_month,
                    ),
                ],
            ),
        };
        for (key, limit) in limits {
            if *limit != 0 && (*limit as usize) <= batch {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "({limit}) must be more than the calls of one request ({batch}: each \
                         place counts); raise it, set 0 for no limit, or lower weather.batch_size"
                    ),
                ));
            }
        }
        if w.max_subscriptions_per_user == 0 {
            return Err(ConfigError::invalid(
                "weather.max_subscriptions_per_user",
                "must be at least 1",
            ));
        }
        if let ObservationAge::Fixed(d) = w.max_observation_age
            && d < Duration::from_secs(60)
        {
            return Err(ConfigError::invalid(
                "weather.max_observation_age",
                "must be \"auto\" or at least 1m (providers update every 10–15 minutes)",
            ));
        }
        if w.stale_after.is_zero() {
            return Err(ConfigError::invalid(
                "weather.stale_after",
                "must be more than 0 (e.g. \"1h\")",
            ));
        }
        if !(0.0..=5.0).contains(&w.hysteresis) {
            return Err(ConfigError::invalid(
                "weather.hysteresis",
                "must be between 0 and 5 (°C)",
            ));
        }
        Ok(())
    }
}
