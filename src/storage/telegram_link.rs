//! Owns acting on the Telegram chat commands that link and unlink accounts: each batch
//! of updates is applied with its replies and the next update offset in one
//! transaction, so an update is acted on once even across a crash. The wording of the
//! replies is the notifier's (it passes `reply`); this file only knows the tables.

use rusqlite::Connection;

use super::StorageError;
use super::meta::set_telegram_offset;
use super::notify::{
    NewDelivery, accounts_of_chat, insert_deliveries, set_chat, take_link_code, unlink_chat,
};
use super::subscriptions::{StoredStatus, statuses_in};

/// The typed operations on the Telegram chat commands that link accounts, each in its own transaction (`db.telegram_link()`).
pub struct TelegramLink<'a>(pub(in crate::storage) &'a super::Db);

/// What a chat asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRequest {
    /// `/start CODE`: link the chat to the account the code was issued for.
    Link { code: String },
    /// `/start` without a code.
    Hello,
    /// `/stop`: unlink every account from the chat.
    Unlink,
    /// `/weather` (every subscription) or `/alerts` (only what is active): the state of
    /// the linked accounts' subscriptions.
    Status { alerts_only: bool },
}

/// One update of a batch; `request` is `None` for anything that is not a command
/// (it only moves the offset on).
#[derive(Debug, Clone)]
pub struct LinkUpdate {
    pub update_id: i64,
    pub chat: i64,
    pub request: Option<LinkRequest>,
}

/// What applying a request did, for the reply.
#[derive(Debug, Clone)]
pub enum LinkOutcome {
    Linked {
        user_id: i64,
        username: String,
    },
    UnknownCode,
    Hello,
    Unlinked {
        usernames: Vec<String>,
    },
    /// The linked accounts (none: the chat is not linked) with their subscriptions, for
    /// `/weather` or (`alerts_only`) `/alerts`.
    Status {
        accounts: Vec<ChatAccount>,
        alerts_only: bool,
    },
}

/// An account linked to a chat, as `/weather` and `/alerts` show it.
#[derive(Debug, Clone)]
pub struct ChatAccount {
    pub username: String,
    pub units: String,
    pub timezone: String,
    pub subscriptions: Vec<StoredStatus>,
}

/// Replies to chat commands that may wait in the outbox for one chat; commands beyond
/// are still acted on (a link, an unlink) but not answered, so a chat that floods the bot
/// cannot grow the outbox (it is answered at the per-chat pace anyway).
pub const MAX_PENDING_REPLIES: i64 = 3;

/// Replies to commands of `chat` still waiting in the outbox.
fn pending_replies(conn: &Connection, chat: i64) -> Result<i64, StorageError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM outbox
         WHERE chat_id = ?1 AND status = 'pending' AND key LIKE 'update:%'",
        [chat],
        |r| r.get(0),
    )?)
}

/// Applies `updates` and stores the next offset, in one transaction. `reply` turns an
/// update and its outcome into the message to queue. Returns how many were queued.
pub fn apply_link_updates(
    conn: &mut Connection,
    updates: &[LinkUpdate],
    now_ms: i64,
    reply: impl Fn(&LinkUpdate, &LinkOutcome) -> NewDelivery,
) -> Result<usize, StorageError> {
    let tx = conn.transaction()?;
    let mut replies = Vec::new();
    let mut next = 0;
    let mut waiting = std::collections::HashMap::new();
    for u in updates {
        next = next.max(u.update_id + 1);
        let Some(request) = &u.request else { continue };
        // The action always happens; the answer only while few wait for this chat (and
        // a question nobody will hear is not worked out).
        let pending = match waiting.entry(u.chat) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(pending_replies(&tx, u.chat)?),
        };
        let answer = *pending < MAX_PENDING_REPLIES;
        if !answer && matches!(request, LinkRequest::Status { .. } | LinkRequest::Hello) {
            continue;
        }
        let outcome = match request {
            LinkRequest::Link { code } => {
                match take_link_code(&tx, &code.to_ascii_uppercase(), now_ms)? {
                    Some((user_id, username)) => {
                        set_chat(&tx, user_id, Some(u.chat), now_ms)?;
                        LinkOutcome::Linked { user_id, username }
                    }
                    None => LinkOutcome::UnknownCode,
                }
            }
            LinkRequest::Hello => LinkOutcome::Hello,
            LinkRequest::Unlink => LinkOutcome::Unlinked {
                usernames: unlink_chat(&tx, u.chat, now_ms)?,
            },
            // Only a chat that proved it belongs to an account learns anything.
            LinkRequest::Status { alerts_only } => LinkOutcome::Status {
                alerts_only: *alerts_only,
                accounts: accounts_of_chat(&tx, u.chat)?
                    .into_iter()
                    .map(|(id, username, units, timezone)| {
                        Ok(ChatAccount {
                            username,
                            units,
                            timezone,
                            subscriptions: statuses_in(&tx, id)?,
                        })
                    })
                    .collect::<Result<_, StorageError>>()?,
            },
        };
        if answer {
            *pending += 1;
            replies.push(reply(u, &outcome));
        }
    }
    let n = insert_deliveries(&tx, &replies)?;
    set_telegram_offset(&tx, next)?;
    tx.commit()?;
    Ok(n)
}

impl TelegramLink<'_> {
    pub async fn apply_link_updates<F>(
        &self,
        updates: Vec<LinkUpdate>,
        now_ms: i64,
        reply: F,
    ) -> Result<usize, StorageError>
    where
        F: Fn(&LinkUpdate, &LinkOutcome) -> NewDelivery + Send + 'static,
    {
        self.0
            .call(move |conn| apply_link_updates(conn, &updates, now_ms, reply))
            .await
    }
}
