//! Owns the notification tables: the alert journal (`alert_log`, written by the rules in
//! the transaction that changes the alert state) here; the delivery `outbox`
//! (`outbox`), per-user delivery preferences (`prefs`) and Telegram chats and link
//! codes (`chats`).
//!
//! Times are Unix milliseconds.

use rusqlite::{Connection, params};

use super::StorageError;

mod chats;
mod outbox;
mod prefs;

pub use chats::*;
pub use outbox::*;
pub use prefs::*;

/// The typed operations on the alert journal, the outbox, delivery preferences and Telegram chats, each in its own transaction (`db.notify()`).
pub struct Notify<'a>(pub(in crate::storage) &'a crate::storage::Db);

/// One alert event as the rules recorded it.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    /// `{event id}:{raised|cleared}`: stable across duplicates of one event.
    pub key: String,
    pub user_id: i64,
    /// The event as JSON.
    pub event: String,
    pub created_at: i64,
}

/// Records alert events (duplicates are ignored). Call inside the transaction that
/// stores the state change that caused them.
pub fn record_alerts(conn: &Connection, entries: &[JournalEntry]) -> Result<(), StorageError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO alert_log (key, user_id, event, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO NOTHING",
    )?;
    for e in entries {
        stmt.execute(params![e.key, e.user_id, e.event, e.created_at])?;
    }
    Ok(())
}

/// Journal entries created up to `until` that the notifier has not taken yet, oldest
/// first: (key, event JSON).
pub fn unhandled_alerts(
    conn: &Connection,
    limit: usize,
    until: i64,
) -> Result<Vec<(String, String)>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT key, event FROM alert_log WHERE handled = 0 AND created_at <= ?2
         ORDER BY created_at, key LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64, until], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Notify<'_> {
    pub async fn unhandled_alerts(
        &self,
        limit: usize,
        until: i64,
    ) -> Result<Vec<(String, String)>, StorageError> {
        self.0
            .call(move |conn| unhandled_alerts(conn, limit, until))
            .await
    }
}
