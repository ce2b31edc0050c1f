//! Telegram chats of accounts: link codes, linking and unlinking a chat, the chats of
//! administrators, and the confirmation code of a chat a user entered.

use rusqlite::{Connection, OptionalExtension, params};

use super::Notify;
use super::outbox::{NewDelivery, insert_deliveries};
use crate::storage::StorageError;

/// Gives the user a fresh one-time link code, replacing any earlier one.
pub fn put_link_code(
    conn: &Connection,
    user_id: i64,
    code: &str,
    expires_at: i64,
) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO telegram_link_codes (code, user_id, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET code = excluded.code, expires_at = excluded.expires_at",
        params![code, user_id, expires_at],
    )?;
    Ok(())
}

/// Consumes a link code: the user it belongs to (with their username) if it is valid.
pub fn take_link_code(
    conn: &Connection,
    code: &str,
    now: i64,
) -> Result<Option<(i64, String)>, StorageError> {
    let found: Option<(i64, i64)> = conn
        .query_row(
            "DELETE FROM telegram_link_codes WHERE code = ?1 RETURNING user_id, expires_at",
            [code],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some(user_id) = found.filter(|(_, exp)| *exp >= now).map(|(id, _)| id) else {
        return Ok(None);
    };
    Ok(conn
        .query_row(
            "SELECT id, username FROM users WHERE id = ?1",
            [user_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Sets the user's Telegram chat, proven (the chat itself sent the link code).
pub fn set_chat(
    conn: &Connection,
    user_id: i64,
    chat_id: Option<i64>,
    now: i64,
) -> Result<(), StorageError> {
    // `updated_at` is in seconds like the rest of the users table.
    conn.execute(
        "UPDATE users SET telegram_chat_id = ?2, telegram_chat_confirmed = 1, updated_at = ?3
         WHERE id = ?1",
        params![user_id, chat_id, now / 1000],
    )?;
    Ok(())
}

/// Accounts whose confirmed chat is `chat_id`: (id, username, units, time zone).
pub fn accounts_of_chat(
    conn: &Connection,
    chat_id: i64,
) -> Result<Vec<(i64, String, String, String)>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT id, username, units, timezone FROM users
         WHERE telegram_chat_id = ?1 AND telegram_chat_confirmed ORDER BY username",
    )?;
    let rows = stmt.query_map([chat_id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes `chat_id` from every account linked to it; returns their usernames.
pub fn unlink_chat(conn: &Connection, chat_id: i64, now: i64) -> Result<Vec<String>, StorageError> {
    let mut stmt = conn.prepare(
        "UPDATE users SET telegram_chat_id = NULL, updated_at = ?2 WHERE telegram_chat_id = ?1
         RETURNING username",
    )?;
    let rows = stmt.query_map(params![chat_id, now / 1000], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Administrators with a confirmed Telegram chat: (user id, chat id).
pub fn admin_chats(conn: &Connection) -> Result<Vec<(i64, i64)>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT id, telegram_chat_id FROM users
         WHERE role = 'admin' AND telegram_chat_id IS NOT NULL AND telegram_chat_confirmed
         ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A code sent to a chat the user entered, to be typed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfirmation {
    pub chat_id: i64,
    pub code: String,
    /// Unix ms.
    pub expires_at: i64,
    pub attempts: u32,
    /// Unix ms the code was sent.
    pub sent_at: i64,
}

/// The pending confirmation of `user_id`, if any.
pub fn chat_confirmation(
    conn: &Connection,
    user_id: i64,
) -> Result<Option<ChatConfirmation>, StorageError> {
    Ok(conn
        .query_row(
            "SELECT chat_id, code, expires_at, attempts, sent_at FROM telegram_confirmations
             WHERE user_id = ?1",
            [user_id],
            |r| {
                Ok(ChatConfirmation {
                    chat_id: r.get(0)?,
                    code: r.get(1)?,
                    expires_at: r.get(2)?,
                    attempts: r.get(3)?,
                    sent_at: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// Replaces the user's pending confirmation and queues the code's message, in one
/// transaction (a code is never stored without its message, nor sent without being
/// stored).
pub fn put_chat_confirmation(
    conn: &mut Connection,
    user_id: i64,
    c: &ChatConfirmation,
    message: &NewDelivery,
) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO telegram_confirmations (user_id, chat_id, code, expires_at, attempts, sent_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5)
         ON CONFLICT (user_id) DO UPDATE SET chat_id = excluded.chat_id, code = excluded.code,
             expires_at = excluded.expires_at, attempts = 0, sent_at = excluded.sent_at",
        params![user_id, c.chat_id, c.code, c.expires_at, c.sent_at],
    )?;
    insert_deliveries(&tx, std::slice::from_ref(message))?;
    tx.commit()?;
    Ok(())
}

/// Counts a wrong code; returns the attempts so far.
pub fn count_wrong_code(conn: &Connection, user_id: i64) -> Result<u32, StorageError> {
    Ok(conn
        .query_row(
            "UPDATE telegram_confirmations SET attempts = attempts + 1 WHERE user_id = ?1
             RETURNING attempts",
            [user_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Marks the user's chat confirmed if it is still `chat_id`, and drops the code.
/// Returns whether the chat was confirmed.
pub fn confirm_chat(
    conn: &mut Connection,
    user_id: i64,
    chat_id: i64,
    now: i64,
) -> Result<bool, StorageError> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE users SET telegram_chat_confirmed = 1, updated_at = ?3
         WHERE id = ?1 AND telegram_chat_id = ?2",
        params![user_id, chat_id, now / 1000],
    )?;
    tx.execute(
        "DELETE FROM telegram_confirmations WHERE user_id = ?1",
        [user_id],
    )?;
    tx.commit()?;
    Ok(changed > 0)
}

impl Notify<'_> {
    pub async fn chat_confirmation(
        &self,
        user_id: i64,
    ) -> Result<Option<ChatConfirmation>, StorageError> {
        self.0
            .call(move |conn| chat_confirmation(conn, user_id))
            .await
    }

    pub async fn confirm_chat(
        &self,
        user_id: i64,
        chat_id: i64,
        now: i64,
    ) -> Result<bool, StorageError> {
        self.0
            .call(move |conn| confirm_chat(conn, user_id, chat_id, now))
            .await
    }

    pub async fn count_wrong_code(&self, user_id: i64) -> Result<u32, StorageError> {
        self.0
            .call(move |conn| count_wrong_code(conn, user_id))
            .await
    }

    pub async fn put_chat_confirmation(
        &self,
        user_id: i64,
        c: &ChatConfirmation,
        message: &NewDelivery,
    ) -> Result<(), StorageError> {
        let c = c.to_owned();
        let message = message.to_owned();
        self.0
            .call(move |conn| put_chat_confirmation(conn, user_id, &c, &message))
            .await
    }

    pub async fn put_link_code(
        &self,
        user_id: i64,
        code: &str,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        let code = code.to_owned();
        self.0
            .call(move |conn| put_link_code(conn, user_id, &code, expires_at))
            .await
    }
}
