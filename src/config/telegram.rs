//! The `[telegram]` section: the bot, its limits, retries and chat linking.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// The bot token from @BotFather. Empty: no Telegram; alerts still go to MQTT.
    pub bot_token: Secret,
    /// Bot API base address (change only for a local Bot API server or a test).
    pub api_base: String,
    /// Long-poll `getUpdates` so users can link their chat with `/start <code>`.
    pub link: bool,
    /// Shortest gap between two messages to one chat (Telegram allows about 1/s).
    #[serde(with = "humantime_serde")]
    pub per_chat_interval: Duration,
    /// Messages per second to all chats together (Telegram allows about 30).
    pub messages_per_second: u32,
    /// Requests to Telegram at once. A crash may resend at most this many messages.
    pub max_in_flight: usize,
    /// Timeout of one sendMessage request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest wait between retries after 5xx answers or timeouts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long one getUpdates long poll waits for news.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            bot_token: Secret::default(),
            api_base: "https://api.telegram.org".into(),
            link: false,
            per_chat_interval: Duration::from_secs(1),
            messages_per_second: 25,
            max_in_flight: 4,
            request_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10 * 60),
            poll_timeout: Duration::from_secs(30),
        }
    }
}

impl TelegramConfig {
    /// Checks the section; the error names the key and how to fix it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let tg = self;
        if !(tg.api_base.starts_with("https://") || tg.api_base.starts_with("http://")) {
            return Err(ConfigError::invalid(
                "telegram.api_base",
                "must start with https:// (or http://)",
            ));
        }
        let token = tg.bot_token.expose();
        if !token.is_empty()
            && (!token.contains(':')
                || !token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '_' || c == '-'))
        {
            return Err(ConfigError::invalid(
                "telegram.bot_token",
                "does not look like a bot token (`123456:ABC-def...` from @BotFather)",
            ));
        }
        if tg.link && token.is_empty() {
            return Err(ConfigError::invalid(
                "telegram.link",
                "needs telegram.bot_token; set the token or link = false",
            ));
        }
        if tg.messages_per_second == 0 {
            return Err(ConfigError::invalid(
                "telegram.messages_per_second",
                "must be at least 1 (Telegram allows about 30)",
            ));
        }
        if !(1..=64).contains(&tg.max_in_flight) {
            return Err(ConfigError::invalid(
                "telegram.max_in_flight",
                "must be between 1 and 64",
            ));
        }
        if tg.request_timeout.is_zero() || tg.max_backoff.is_zero() {
            return Err(ConfigError::invalid(
                "telegram.request_timeout",
                "request_timeout and max_backoff must be more than 0",
            ));
        }
        if tg.poll_timeout > Duration::from_secs(50) {
            return Err(ConfigError::invalid(
                "telegram.poll_timeout",
                "must be at most 50s (Telegram closes longer polls)",
            ));
        }
        Ok(())
    }
}
