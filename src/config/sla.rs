//! The `[sla]` section: sampling, history and the optional Prometheus to read from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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

impl SlaConfig {
    /// Checks the section; the error names the key and how to fix it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let sla = self;
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
        Ok(())
    }
}
