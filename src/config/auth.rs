//! The `[auth]` section: login tokens, password hashing and login throttling.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Anyone who can reach the HTTP port may create an account. The first account
    /// becomes admin. When off, only an admin (or `meteomesh user add`) creates accounts.
    pub open_registration: bool,
    /// HS256 key for login tokens. Empty: 32 random bytes are generated at first start
    /// and kept in the database, so tokens survive restarts.
    pub jwt_secret: Secret,
    /// How long a login token is valid.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// Password hashes computed at once (argon2id needs 19 MiB each).
    pub hash_concurrency: usize,
    /// Failed logins per account and per client address before each further attempt
    /// must wait (`login_first_delay`, doubling per failure, at most
    /// `login_failure_window`); failures are forgotten a window after the last delay ended. Devices that logged in to the
    /// account before count only their own failures.
    pub login_max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub login_failure_window: Duration,
    /// The wait after the `login_max_failures`-th failure; it doubles with each further one.
    #[serde(with = "humantime_serde")]
    pub login_first_delay: Duration,
    /// IANA time zone given to new accounts.
    pub default_timezone: String,
    /// Mark the session cookie `Secure` (set this when a TLS proxy fronts meteomesh).
    pub cookie_secure: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            open_registration: true,
            jwt_secret: Secret::default(),
            token_lifetime: Duration::from_secs(24 * 60 * 60),
            hash_concurrency: 2,
            login_max_failures: 5,
            login_failure_window: Duration::from_secs(15 * 60),
            login_first_delay: Duration::from_secs(1),
            default_timezone: "UTC".into(),
            cookie_secure: false,
        }
    }
}

impl AuthConfig {
    /// Checks the section; the error names the key and how to fix it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let auth = self;
        if !auth.jwt_secret.is_empty() && auth.jwt_secret.expose().len() < 32 {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                "must be at least 32 characters, or empty to generate one",
            ));
        }
        if auth.token_lifetime < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "auth.token_lifetime",
                "must be at least 1s, e.g. \"24h\"",
            ));
        }
        if !(1..=64).contains(&auth.hash_concurrency) {
            return Err(ConfigError::invalid(
                "auth.hash_concurrency",
                "must be between 1 and 64 (each hash needs 19 MiB)",
            ));
        }
        if auth.login_max_failures == 0 {
            return Err(ConfigError::invalid(
                "auth.login_max_failures",
                "must be at least 1",
            ));
        }
        if auth.login_failure_window.is_zero() {
            return Err(ConfigError::invalid(
                "auth.login_failure_window",
                "must be more than 0, e.g. \"15m\"",
            ));
        }
        if auth.login_first_delay.is_zero() || auth.login_first_delay > auth.login_failure_window {
            return Err(ConfigError::invalid(
                "auth.login_first_delay",
                "must be more than 0 and at most auth.login_failure_window, e.g. \"1s\"",
            ));
        }
        if jiff::tz::TimeZone::get(&auth.default_timezone).is_err() {
            return Err(ConfigError::invalid(
                "auth.default_timezone",
                format!(
                    "`{}` is not an IANA time zone; use a name such as \"Europe/Rome\" or \"UTC\"",
                    auth.default_timezone
                ),
            ));
        }
        Ok(())
    }
}
