//! Owns the notification tables: the alert journal (`alert_log`, written by the rules in
//! the transaction that changes the alert state), the delivery `outbox`, per-user
//! delivery preferences (`notify_prefs`) and Telegram link codes.
//!
//! Times are Unix milliseconds.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StorageError;
use crate::domain::user::Units;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// `payload` is an alert event (JSON), rendered when sent.
    Alert,
    /// `payload` is a finished message (Telegram HTML).
    Notice,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Alert => "alert",
            OutboxKind::Notice => "notice",
        }
    }

    /// The CHECK constraint allows only the two spellings.
    fn from_column(s: &str) -> OutboxKind {
        if s == "notice" {
            OutboxKind::Notice
        } else {
            OutboxKind::Alert
        }
    }
}

/// A message to deliver. The channel is Telegram, the only one with an outbox (MQTT
/// delivery is the broker's).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Unique per (message, channel); a second insert with the same key is ignored.
    pub key: String,
    pub kind: OutboxKind,
    pub user_id: Option<i64>,
    /// Explicit chat (replies to chats with no account); otherwise the user's chat at
    /// send time, so an updated chat id takes effect for pending messages too.
    pub chat_id: Option<i64>,
    pub payload: String,
    /// Part of a digest: sent together with the user's other batched rows that are due.
    pub batched: bool,
    pub not_before: i64,
    pub created_at: i64,
}

/// Inserts deliveries (a key seen before is ignored); returns how many were new. Call
/// inside a transaction when it must go with other writes.
pub fn insert_deliveries(
    conn: &Connection,
    deliveries: &[NewDelivery],
) -> Result<usize, StorageError> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO outbox (key, channel, kind, user_id, chat_id, payload, batched,
                             not_before, created_at)
         VALUES (?1, 'telegram', ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (key) DO NOTHING",
    )?;
    let mut inserted = 0;
    for d in deliveries {
        inserted += insert.execute(params![
            d.key,
            d.kind.as_str(),
            d.user_id,
            d.chat_id,
            d.payload,
            d.batched,
            d.not_before,
            d.created_at
        ])?;
    }
    Ok(inserted)
}

/// Inserts deliveries and marks journal entries handled, in one transaction.
/// Returns how many deliveries were new.
pub fn enqueue(
    conn: &mut Connection,
    deliveries: &[NewDelivery],
    handled: &[String],
) -> Result<usize, StorageError> {
    let tx = conn.transaction()?;
    let inserted = insert_deliveries(&tx, deliveries)?;
    {
        let mut mark = tx.prepare_cached("UPDATE alert_log SET handled = 1 WHERE key = ?1")?;
        for key in handled {
            mark.execute([key])?;
        }
    }
    tx.commit()?;
    Ok(inserted)
}

/// A pending delivery with what sending it needs.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: i64,
    pub key: String,
    pub kind: OutboxKind,
    pub user_id: Option<i64>,
    pub payload: String,
    pub batched: bool,
    pub attempts: i64,
    pub created_at: i64,
    /// Where it goes now; `None` when the user has since removed their chat id.
    pub chat_id: Option<i64>,
    /// The user's chat is the one Telegram refused.
    pub broken: bool,
    pub timezone: String,
    pub units: Units,
}

fn due_from_row(r: &Row<'_>) -> rusqlite::Result<Due> {
    let kind: String = r.get(2)?;
    let units: Option<String> = r.get(11)?;
    let broken_chat: Option<i64> = r.get(10)?;
    let chat_id: Option<i64> = r.get(8)?;
    let user_chat: Option<i64> = r.get(9)?;
    Ok(Due {
        id: r.get(0)?,
        key: r.get(1)?,
        kind: OutboxKind::from_column(&kind),
        user_id: r.get(3)?,
        payload: r.get(4)?,
        batched: r.get(5)?,
        attempts: r.get(6)?,
        created_at: r.get(7)?,
        chat_id: chat_id.or(user_chat),
        broken: chat_id.is_none() && user_chat.is_some() && broken_chat == user_chat,
        timezone: r
            .get::<_, Option<String>>(12)?
            .unwrap_or_else(|| "UTC".into()),
        units: units
            .as_deref()
            .and_then(Units::parse)
            .unwrap_or(Units::Metric),
    })
}

/// Pending deliveries whose time has come, oldest first.
pub fn due(conn: &Connection, now: i64, limit: usize) -> Result<Vec<Due>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.key, o.kind, o.user_id, o.payload, o.batched, o.attempts, o.created_at,
                o.chat_id,
                CASE WHEN u.telegram_chat_confirmed THEN u.telegram_chat_id END,
                p.broken_chat_id, u.units, u.timezone
         FROM outbox o
         LEFT JOIN users u ON u.id = o.user_id
         LEFT JOIN notify_prefs p ON p.user_id = o.user_id
         WHERE o.status = 'pending' AND o.not_before <= ?1
         ORDER BY o.not_before, o.id
         LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now, limit as i64], due_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When the next pending delivery becomes due, if any is pending.
pub fn next_due_at(conn: &Connection) -> Result<Option<i64>, StorageError> {
    Ok(conn.query_row(
        "SELECT min(not_before) FROM outbox WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )?)
}

fn for_each_id(
    conn: &mut Connection,
    ids: &[i64],
    sql: &str,
    bind: impl Fn(&mut rusqlite::CachedStatement<'_>, i64) -> rusqlite::Result<usize>,
) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(sql)?;
        for &id in ids {
            bind(&mut stmt, id)?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub fn mark_delivered(conn: &mut Connection, ids: &[i64], now: i64) -> Result<(), StorageError> {
    for_each_id(
        conn,
        ids,
        "UPDATE outbox SET status = 'delivered', finished_at = ?2, attempts = attempts + 1
         WHERE id = ?1 AND status = 'pending'",
        |s, id| s.execute(params![id, now]),
    )
}

/// Gives up on deliveries for good, keeping the reason.
pub fn mark_failed(
    conn: &mut Connection,
    ids: &[i64],
    reason: &str,
    now: i64,
) -> Result<(), StorageError> {
    for_each_id(
        conn,
        ids,
        "UPDATE outbox SET status = 'failed', finished_at = ?2, last_error = ?3,
                attempts = attempts + 1
         WHERE id = ?1 AND status = 'pending'",
        |s, id| s.execute(params![id, now, reason]),
    )
}

/// Puts deliveries back to wait until `not_before`. `attempt` counts a failed try.
pub fn reschedule(
    conn: &mut Connection,
    ids: &[i64],
    not_before: i64,
    error: &str,
    attempt: bool,
) -> Result<(), StorageError> {
    for_each_id(
        conn,
        ids,
        "UPDATE outbox SET not_before = ?2, last_error = ?3, attempts = attempts + ?4
         WHERE id = ?1 AND status = 'pending'",
        |s, id| s.execute(params![id, not_before, error, i64::from(attempt)]),
    )
}

/// Marks the user's Telegram chat `chat_id` as refused by Telegram and fails their
/// pending alerts to it. Sending resumes by itself when the user's chat id changes.
pub fn break_channel(
    conn: &mut Connection,
    user_id: i64,
    chat_id: i64,
    reason: &str,
    now: i64,
) -> Result<usize, StorageError> {
    let tx = conn.transaction()?;
    ensure_prefs(&tx, user_id)?;
    tx.execute(
        "UPDATE notify_prefs SET broken_chat_id = ?2, broken_reason = ?3, broken_at = ?4
         WHERE user_id = ?1",
        params![user_id, chat_id, reason, now],
    )?;
    let failed = tx.execute(
        "UPDATE outbox SET status = 'failed', finished_at = ?2, last_error = ?3
         WHERE user_id = ?1 AND chat_id IS NULL AND status = 'pending'",
        params![user_id, now, format!("telegram chat refused: {reason}")],
    )?;
    tx.commit()?;
    Ok(failed)
}

/// A message reached `chat_id`: if Telegram had refused that chat of the user's, it
/// takes messages again.
pub fn clear_broken(conn: &mut Connection, user_id: i64, chat_id: i64) -> Result<(), StorageError> {
    conn.execute(
        "UPDATE notify_prefs SET broken_chat_id = NULL, broken_reason = NULL, broken_at = NULL
         WHERE user_id = ?1 AND broken_chat_id = ?2",
        params![user_id, chat_id],
    )?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyMode {
    Immediate,
    Digest,
}

impl NotifyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyMode::Immediate => "immediate",
            NotifyMode::Digest => "digest",
        }
    }

    pub fn parse(s: &str) -> Option<NotifyMode> {
        match s {
            "immediate" => Some(NotifyMode::Immediate),
            "digest" => Some(NotifyMode::Digest),
            _ => None,
        }
    }
}

/// Minutes after local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    pub mode: NotifyMode,
    pub digest_minutes: u32,
    pub quiet: Option<QuietHours>,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs {
            mode: NotifyMode::Immediate,
            digest_minutes: 15,
            quiet: None,
        }
    }
}

/// What the notifier needs to know about a user to queue a message for them.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub user_id: i64,
    /// The account's chat, once it proved it belongs to the account.
    pub chat_id: Option<i64>,
    /// A chat the user entered that has not proved itself yet (nothing goes there but
    /// its confirmation code).
    pub unconfirmed_chat: Option<i64>,
    pub timezone: String,
    pub prefs: Prefs,
    /// Set while the current chat is the one Telegram refused: (reason, when).
    pub broken: Option<(String, i64)>,
}

fn ensure_prefs(conn: &Connection, user_id: i64) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO notify_prefs (user_id) VALUES (?1) ON CONFLICT (user_id) DO NOTHING",
        [user_id],
    )?;
    Ok(())
}

/// The user's chat, time zone and preferences; `None` when the user does not exist.
pub fn recipient(conn: &Connection, user_id: i64) -> Result<Option<Recipient>, StorageError> {
    Ok(conn
        .query_row(
            "SELECT u.telegram_chat_id, u.timezone, p.mode, p.digest_minutes, p.quiet_start,
                    p.quiet_end, p.broken_chat_id, p.broken_reason, p.broken_at,
                    u.telegram_chat_confirmed
             FROM users u LEFT JOIN notify_prefs p ON p.user_id = u.id
             WHERE u.id = ?1",
            [user_id],
            |r| {
                let entered: Option<i64> = r.get(0)?;
                let confirmed: bool = r.get(9)?;
                let chat_id = entered.filter(|_| confirmed);
                let mode: Option<String> = r.get(2)?;
                let start: Option<u16> = r.get(4)?;
                let end: Option<u16> = r.get(5)?;
                let broken_chat: Option<i64> = r.get(6)?;
                let broken = match (chat_id, broken_chat) {
                    (Some(c), Some(b)) if c == b => Some((
                        r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                        r.get::<_, Option<i64>>(8)?.unwrap_or_default(),
                    )),
                    _ => None,
                };
                Ok(Recipient {
                    user_id,
                    chat_id,
                    unconfirmed_chat: entered.filter(|_| !confirmed),
                    timezone: r.get(1)?,
                    prefs: Prefs {
                        mode: mode
                            .as_deref()
                            .and_then(NotifyMode::parse)
                            .unwrap_or(NotifyMode::Immediate),
                        digest_minutes: r.get::<_, Option<u32>>(3)?.unwrap_or(15),
                        quiet: start.zip(end).map(|(start, end)| QuietHours { start, end }),
                    },
                    broken,
                })
            },
        )
        .optional()?)
}

/// Stores the preferences and releases messages held for a digest or quiet hours, so
/// a change of mind never strands them (they go out as one digest).
pub fn set_prefs(
    conn: &mut Connection,
    user_id: i64,
    prefs: &Prefs,
    now: i64,
) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    ensure_prefs(&tx, user_id)?;
    tx.execute(
        "UPDATE notify_prefs SET mode = ?2, digest_minutes = ?3, quiet_start = ?4, quiet_end = ?5
         WHERE user_id = ?1",
        params![
            user_id,
            prefs.mode.as_str(),
            prefs.digest_minutes,
            prefs.quiet.map(|q| q.start),
            prefs.quiet.map(|q| q.end)
        ],
    )?;
    tx.execute(
        "UPDATE outbox SET not_before = ?2
         WHERE user_id = ?1 AND status = 'pending' AND batched = 1 AND not_before > ?2",
        params![user_id, now],
    )?;
    tx.commit()?;
    Ok(())
}

/// Outbox depth: pending rows and the creation time of the oldest.
pub fn depth(conn: &Connection) -> Result<(i64, Option<i64>), StorageError> {
    Ok(conn.query_row(
        "SELECT count(*), min(created_at) FROM outbox WHERE status = 'pending'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// Deletes settled outbox rows and handled journal entries older than `before`, and
/// expired link codes.
pub fn prune(conn: &Connection, before: i64, now: i64) -> Result<usize, StorageError> {
    let mut n = conn.execute(
        "DELETE FROM outbox WHERE status <> 'pending' AND finished_at < ?1",
        [before],
    )?;
    n += conn.execute(
        "DELETE FROM alert_log WHERE handled = 1 AND created_at < ?1",
        [before],
    )?;
    conn.execute(
        "DELETE FROM telegram_link_codes WHERE expires_at < ?1",
        [now],
    )?;
    Ok(n)
}

/// One Telegram message of a user's, for the account page and the API.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub key: String,
    pub kind: OutboxKind,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// A user's most recent deliveries, newest first.
pub fn recent_deliveries(
    conn: &Connection,
    user_id: i64,
    limit: usize,
) -> Result<Vec<DeliveryRow>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT key, kind, status, attempts, last_error, created_at, finished_at FROM outbox
         WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![user_id, limit as i64], |r| {
        let kind: String = r.get(1)?;
        Ok(DeliveryRow {
            key: r.get(0)?,
            kind: OutboxKind::from_column(&kind),
            status: r.get(2)?,
            attempts: r.get(3)?,
            last_error: r.get(4)?,
            created_at: r.get(5)?,
            finished_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

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
