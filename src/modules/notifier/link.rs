//! Owns linking Telegram chats to accounts: long-polls `getUpdates` and answers
//! `/start <code>` (links the chat to the account that issued the code), `/start`
//! (explains how), `/stop` (unlinks), and, to linked chats only, `/weather` (each
//! subscription now) and `/alerts` (what is active). Each batch of updates is applied with its replies
//! and the new offset in one transaction (`storage::telegram_link`), so an update is
//! acted on once even across a crash; replies go through the outbox like everything else.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::NotifierService;
use super::render::escape;
use super::telegram::{TelegramApi, TelegramError, Update};
use crate::domain::time::now_ms;
use crate::storage::StorageError;
use crate::storage::notify::NewDelivery;
use crate::storage::telegram_link::{LinkOutcome, LinkRequest, LinkUpdate};

/// Letters and digits that cannot be mistaken for each other.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 10;

/// A fresh one-time code (50 bits of randomness).
pub fn new_code() -> String {
    (0..CODE_LEN)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub struct LinkPoller {
    pub service: NotifierService,
    pub api: Arc<TelegramApi>,
    pub poll_timeout: Duration,
}

impl LinkPoller {
    pub async fn run(self, shutdown: CancellationToken) {
        let api = self.api.clone();
        // Every Telegram call races the stop: a hanging API must not hold it (a long poll
        // cut short loses nothing, the offset is stored only with the updates applied).
        let me = tokio::select! {
            r = tokio::task::spawn_blocking(move || api.get_me()) => r,
            _ = shutdown.cancelled() => return,
        };
        match me {
            Ok(Ok(name)) => {
                tracing::info!(bot = name, "Telegram linking on");
                if let Ok(mut slot) = self.service.inner.bot_username.write() {
                    *slot = Some(name);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot learn the bot's name; link codes work without the t.me link")
            }
            Err(_) => {}
        }
        let mut failures = 0u32;
        loop {
            let polled = tokio::select! {
                r = self.poll_once() => r,
                _ = shutdown.cancelled() => return,
            };
            let wait = match polled {
                Ok(()) => {
                    failures = 0;
                    Duration::ZERO
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "polling Telegram for link requests failed");
                    Duration::from_secs(1 << failures.min(6))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn poll_once(&self) -> Result<(), PollError> {
        let db = &self.service.inner.db;
        let offset = db.meta().telegram_offset().await?;
        let (api, timeout) = (self.api.clone(), self.poll_timeout);
        let updates = tokio::task::spawn_blocking(move || api.get_updates(offset, timeout))
            .await
            .map_err(|e| PollError::Telegram(TelegramError::Unavailable(e.to_string())))??;
        if updates.is_empty() {
            return Ok(());
        }
        let (requests, now) = (link_requests(&updates), now_ms());
        let replies = db
            .telegram_link()
            .apply_link_updates(requests, now, move |u, outcome| {
                reply_notice(u, outcome, now)
            })
            .await?;
        if replies > 0 {
            self.service.inner.wake.notify_one();
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error(transparent)]
    Telegram(#[from] TelegramError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a chat message asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    Start(Option<&'a str>),
    Stop,
    Weather,
    Alerts,
}

fn command(text: &str) -> Option<Command<'_>> {
    let mut words = text.split_whitespace();
    // In groups commands may carry the bot's name: `/start@meteomesh_bot CODE`.
    let head = words.next()?.split('@').next()?;
    match head {
        "/start" => Some(Command::Start(words.next())),
        "/stop" => Some(Command::Stop),
        "/weather" => Some(Command::Weather),
        "/alerts" => Some(Command::Alerts),
        _ => None,
    }
}

/// Reads a batch of updates as link requests (anything else only moves the offset on).
fn link_requests(updates: &[Update]) -> Vec<LinkUpdate> {
    updates
        .iter()
        .map(|u| {
            let message = u.message.as_ref();
            LinkUpdate {
                update_id: u.update_id,
                chat: message.map_or(0, |m| m.chat.id),
                request: message
                    .and_then(|m| m.text.as_deref())
                    .and_then(command)
                    .map(|cmd| match cmd {
                        Command::Start(Some(code)) => LinkRequest::Link {
                            code: code.to_owned(),
                        },
                        Command::Start(None) => LinkRequest::Hello,
                        Command::Stop => LinkRequest::Unlink,
                        Command::Weather => LinkRequest::Status { alerts_only: false },
                        Command::Alerts => LinkRequest::Status { alerts_only: true },
                    }),
            }
        })
        .collect()
}

/// The outbox row answering one update.
fn reply_notice(u: &LinkUpdate, outcome: &LinkOutcome, now: i64) -> NewDelivery {
    let (user, text) = reply(outcome);
    super::notice(format!("update:{}", u.update_id), user, u.chat, text, now)
}

/// The chat's answer to what its command did (and the account it now belongs to).
fn reply(outcome: &LinkOutcome) -> (Option<i64>, String) {
    match outcome {
        LinkOutcome::Linked { user_id, username } => (
            Some(*user_id),
            format!(
                "✅ Linked to the meteomesh account <b>{}</b>. Weather alerts will arrive in this chat. Send /stop to unlink.",
                escape(username)
            ),
        ),
        LinkOutcome::UnknownCode => (
            None,
            "Sorry, that link code is unknown or has expired. Open your meteomesh account page and press “Link Telegram” for a new one.".to_owned(),
        ),
        LinkOutcome::Hello => (
            None,
            "Hello! To get weather alerts here, open your meteomesh account page and press “Link Telegram”.".to_owned(),
        ),
        LinkOutcome::Unlinked { usernames } if usernames.is_empty() => (
            None,
            "This chat is not linked to any meteomesh account.".to_owned(),
        ),
        LinkOutcome::Status {
            accounts,
            alerts_only,
        } => (None, super::render::chat_status(accounts, *alerts_only)),
        LinkOutcome::Unlinked { usernames } => {
            let names: Vec<String> = usernames
                .iter()
                .map(|n| format!("<b>{}</b>", escape(n)))
                .collect();
            (
                None,
                format!(
                    "Unlinked from {}. No more alerts will arrive here.",
                    names.join(", ")
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(command("/start ABC"), Some(Command::Start(Some("ABC"))));
        assert_eq!(
            command("/start@meteo_bot  ABC "),
            Some(Command::Start(Some("ABC")))
        );
        assert_eq!(command("/start"), Some(Command::Start(None)));
        assert_eq!(command("/stop"), Some(Command::Stop));
        assert_eq!(command("hello"), None);
        assert_eq!(command(""), None);
    }

    #[test]
    fn codes_use_the_unambiguous_alphabet() {
        let c = new_code();
        assert_eq!(c.len(), CODE_LEN);
        assert!(c.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(new_code(), new_code());
    }
}
