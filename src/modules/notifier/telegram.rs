//! Owns the Telegram Bot API client: `sendMessage`, `getUpdates` (long poll) and `getMe`
//! over blocking ureq (callers use `spawn_blocking`), and the classification of answers
//! into what the dispatcher should do. The token is part of every URL path, so no URL
//! or transport error text leaves this file without the token cut out.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::outbound::agent;

/// What went wrong with one call, sorted by what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TelegramError {
    /// 429: wait this long, then try again.
    #[error("rate limited by Telegram for {0:?}")]
    RateLimited(Duration),
    /// 400 "chat not found" or 403 (blocked, deactivated, kicked): this chat will not
    /// take messages until the user does something.
    #[error("Telegram refused the chat: {0}")]
    ChatRefused(String),
    /// Another 4xx: this message will never be accepted.
    #[error("Telegram rejected the message ({status}): {description}")]
    Rejected { status: u16, description: String },
    /// 401/404: the bot token is wrong; nothing will work until the operator fixes it.
    #[error("Telegram refused the bot token ({0}); check telegram.bot_token")]
    BadToken(u16),
    /// 409 on getUpdates: a webhook is set or another process polls this bot.
    #[error("Telegram reports a conflict: {0}")]
    Conflict(String),
    /// 5xx, timeouts, connection failures, garbled answers: try again later.
    #[error("Telegram unavailable: {0}")]
    Unavailable(String),
}

/// A chat message the bot received.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub chat: Chat,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Chat {
    pub id: i64,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

pub struct TelegramApi {
    /// `{api_base}/bot{token}`.
    base: String,
    token: String,
    agent: ureq::Agent,
    poll_agent: ureq::Agent,
}

impl std::fmt::Debug for TelegramApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelegramApi")
    }
}

impl TelegramApi {
    pub fn new(
        api_base: &str,
        token: &str,
        request_timeout: Duration,
        poll_timeout: Duration,
    ) -> TelegramApi {
        TelegramApi {
            base: format!("{}/bot{token}", api_base.trim_end_matches('/')),
            token: token.to_owned(),
            agent: agent(request_timeout),
            // The long poll holds the request open for `poll_timeout` by design.
            poll_agent: agent(poll_timeout + Duration::from_secs(10)),
        }
    }

    fn redact(&self, text: &str) -> String {
        if self.token.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.token, "[redacted]")
    }

    fn call(
        &self,
        agent: &ureq::Agent,
        method: &str,
        body: &Value,
    ) -> Result<Value, TelegramError> {
        let url = format!("{}/{method}", self.base);
        let mut response = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(8 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.transport(&e))?;
        classify(status, &text).map_err(|e| match e {
            TelegramError::Unavailable(m) => TelegramError::Unavailable(self.redact(&m)),
            other => other,
        })
    }

    fn transport(&self, e: &ureq::Error) -> TelegramError {
        let what = match e {
            ureq::Error::Timeout(_) => "timed out".to_owned(),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                "timed out".to_owned()
            }
            other => self.redact(&other.to_string()),
        };
        TelegramError::Unavailable(what)
    }

    /// Sends one HTML message.
    pub fn send_message(&self, chat_id: i64, html: &str) -> Result<(), TelegramError> {
        let body = json!({
            "chat_id": chat_id,
            "text": html,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": true},
        });
        self.call(&self.agent, "sendMessage", &body).map(|_| ())
    }

    /// Waits up to `timeout` for updates from `offset` on.
    pub fn get_updates(
        &self,
        offset: i64,
        timeout: Duration,
    ) -> Result<Vec<Update>, TelegramError> {
        let body = json!({
            "offset": offset,
            "timeout": timeout.as_secs(),
            "allowed_updates": ["message"],
        });
        let result = self.call(&self.poll_agent, "getUpdates", &body)?;
        // Parse one by one: an update of a kind we do not know must not hide the others.
        let items = result.as_array().cloned().unwrap_or_default();
        Ok(items
            .into_iter()
            .filter_map(|u| serde_json::from_value(u).ok())
            .collect())
    }

    /// The bot's username, for `t.me` links.
    pub fn get_me(&self) -> Result<String, TelegramError> {
        let result = self.call(&self.agent, "getMe", &json!({}))?;
        result
            .get("username")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| TelegramError::Unavailable("getMe answered no username".into()))
    }
}

/// Sorts a Bot API answer (`status`, body) into success or what to do next.
pub fn classify(status: u16, body: &str) -> Result<Value, TelegramError> {
    let answer: Option<Answer> = serde_json::from_str(body).ok();
    let description = answer
        .as_ref()
        .and_then(|a| a.description.clone())
        .unwrap_or_else(|| format!("HTTP {status}"));
    match (status, answer) {
        (200, Some(a)) if a.ok => Ok(a.result),
        (429, a) => {
            let secs = a
                .and_then(|a| a.parameters)
                .and_then(|p| p.retry_after)
                .unwrap_or(1);
            Err(TelegramError::RateLimited(Duration::from_secs(
                secs.clamp(1, 24 * 60 * 60),
            )))
        }
        (403, _) => Err(TelegramError::ChatRefused(description)),
        (400, _) if is_missing_chat(&description) => Err(TelegramError::ChatRefused(description)),
        (401 | 404, _) => Err(TelegramError::BadToken(status)),
        (409, _) => Err(TelegramError::Conflict(description)),
        (400..=499, _) => Err(TelegramError::Rejected {
            status,
            description,
        }),
        (200, _) => Err(TelegramError::Unavailable(
            "answer was not a Bot API reply".into(),
        )),
        _ => Err(TelegramError::Unavailable(description)),
    }
}

fn is_missing_chat(description: &str) -> bool {
    let d = description.to_ascii_lowercase();
    [
        "chat not found",
        "user not found",
        "chat_id is empty",
        "peer_id_invalid",
    ]
    .iter()
    .any(|p| d.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert!(classify(200, r#"{"ok":true,"result":{"message_id":1}}"#).is_ok());
        assert_eq!(
            classify(
                429,
                r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#
            ),
            Err(TelegramError::RateLimited(Duration::from_secs(7)))
        );
        assert_eq!(
            classify(429, "oops"),
            Err(TelegramError::RateLimited(Duration::from_secs(1)))
        );
        assert_eq!(
            classify(
                400,
                r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#
            ),
            Err(TelegramError::ChatRefused(
                "Bad Request: chat not found".into()
            ))
        );
        assert!(matches!(
            classify(
                403,
                r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#
            ),
            Err(TelegramError::ChatRefused(_))
        ));
        assert!(matches!(
            classify(
                400,
                r#"{"ok":false,"error_code":400,"description":"Bad Request: can't parse entities"}"#
            ),
            Err(TelegramError::Rejected { status: 400, .. })
        ));
        assert_eq!(
            classify(401, r#"{"ok":false,"description":"Unauthorized"}"#),
            Err(TelegramError::BadToken(401))
        );
        assert!(matches!(
            classify(502, "<html>Bad Gateway</html>"),
            Err(TelegramError::Unavailable(_))
        ));
        assert!(matches!(
            classify(200, "not json"),
            Err(TelegramError::Unavailable(_))
        ));
    }

    #[test]
    fn the_token_is_cut_from_error_text() {
        let api = TelegramApi::new(
            "http://127.0.0.1:9",
            "123:SECRET",
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert_eq!(
            api.redact("POST http://127.0.0.1:9/bot123:SECRET/sendMessage failed"),
            "POST http://127.0.0.1:9/bot[redacted]/sendMessage failed"
        );
        let err = api.send_message(1, "x").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("SECRET"), "{err:?}");
    }
}
