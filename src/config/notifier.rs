//! The `[notifier]` section: how long delivered and failed notifications are kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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

impl NotifierConfig {
    /// Checks the section; the error names the key and how to fix it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.retention < Duration::from_secs(24 * 60 * 60) {
            return Err(ConfigError::invalid(
                "notifier.retention",
                "must be at least \"1day\" so a delivery is never forgotten before it is settled",
            ));
        }
        Ok(())
    }
}
