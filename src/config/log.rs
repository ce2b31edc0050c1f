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
        if tracing_subscriber::EnvFilter::builder()
            .parse(&self.level)
            .is_err()
        {
            return Err(ConfigError::invalid(
                "log.level",
                format!(
                    "`{}` is not a log filter; use one of error, warn, info, debug, trace \
                     (or a directive such as `meteomesh=debug,info`)",
                    self.level
                ),
            ));
        }
        Ok(())
    }
}
