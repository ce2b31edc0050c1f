//! The `[log]` section: the log filter.

use serde::{Deserialize, Serialize};

use super::ConfigError;

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

impl LogConfig {
    /// Checks the section; the error names the key and how to fix it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        // Targets accepts any word as a target name; a module path is all a target is.
        let targets_are_paths = self.level.split(',').all(|directive| {
            let target = directive.split('=').next().unwrap_or_default();
            !target.is_empty()
                && target
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
        });
        if !targets_are_paths
            || self
                .level
                .parse::<tracing_subscriber::filter::Targets>()
                .is_err()
        {
            return Err(ConfigError::invalid(
                "log.level",
                format!(
                    "`{}` is not a log filter; use one of error, warn, info, debug, trace \
                     (or targets such as `meteomesh=debug,info`)",
                    self.level
                ),
            ));
        }
        Ok(())
    }
}
