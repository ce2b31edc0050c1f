//! The `[storage]` section: the SQLite file, its busy timeout and size cap.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

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

impl StorageConfig {
    /// Checks the section; the error names the key and how to fix it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "storage.path",
                "must name a file, e.g. \"./data/meteomesh.db\"",
            ));
        }
        if self.busy_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "storage.busy_timeout",
                "must be more than 0, e.g. \"5s\"",
            ));
        }
        if self.max_size.is_some_and(|m| m < 64 * 1024) {
            return Err(ConfigError::invalid(
                "storage.max_size",
                "must be at least 65536 bytes, or left out for no cap",
            ));
        }
        Ok(())
    }
}
