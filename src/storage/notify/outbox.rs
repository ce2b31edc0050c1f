//! The delivery `outbox`: rows to send (alerts and notices), what is due, and each
//! row's outcome (delivered, rescheduled, failed, a broken channel); depth and pruning.

use rusqlite::{Connection, Row, params};

use super::Notify;
use super::prefs::ensure_prefs;
use crate::domain::user::Units;
use crate::storage::StorageError;

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

impl Notify<'_> {
    pub async fn depth(&self) -> Result<(i64, Option<i64>), StorageError> {
        self.0.call(move |conn| depth(conn)).await
    }

    pub async fn due(&self, now: i64, limit: usize) -> Result<Vec<Due>, StorageError> {
        self.0.call(move |conn| due(conn, now, limit)).await
    }

    pub async fn enqueue(
        &self,
        deliveries: &[NewDelivery],
        handled: &[String],
    ) -> Result<usize, StorageError> {
        let deliveries = deliveries.to_owned();
        let handled = handled.to_owned();
        self.0
            .call(move |conn| enqueue(conn, &deliveries, &handled))
            .await
    }

    pub async fn mark_failed(
        &self,
        ids: &[i64],
        reason: &str,
        now: i64,
    ) -> Result<(), StorageError> {
        let ids = ids.to_owned();
        let reason = reason.to_owned();
        self.0
            .call(move |conn| mark_failed(conn, &ids, &reason, now))
            .await
    }

    pub async fn next_due_at(&self) -> Result<Option<i64>, StorageError> {
        self.0.call(move |conn| next_due_at(conn)).await
    }

    pub async fn prune(&self, before: i64, now: i64) -> Result<usize, StorageError> {
        self.0.call(move |conn| prune(conn, before, now)).await
    }

    pub async fn recent_deliveries(
        &self,
        user_id: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StorageError> {
        self.0
            .call(move |conn| recent_deliveries(conn, user_id, limit))
            .await
    }

    pub async fn reschedule(
        &self,
        ids: &[i64],
        not_before: i64,
        error: &str,
        attempt: bool,
    ) -> Result<(), StorageError> {
        let ids = ids.to_owned();
        let error = error.to_owned();
        self.0
            .call(move |conn| reschedule(conn, &ids, not_before, &error, attempt))
            .await
    }
}

/// Marks rows delivered and, when the chat belonged to an account, clears the
/// account's broken-channel mark (the chat works again), in one call.
pub fn mark_delivered_to(
    conn: &mut Connection,
    ids: &[i64],
    now: i64,
    account_chat: Option<(i64, i64)>,
) -> Result<(), StorageError> {
    mark_delivered(conn, ids, now)?;
    match account_chat {
        Some((user, chat)) => clear_broken(conn, user, chat),
        None => Ok(()),
    }
}

/// Fails rows for good and marks the account's chat broken (Telegram refused it).
pub fn fail_and_break(
    conn: &mut Connection,
    ids: &[i64],
    reason: &str,
    user_id: i64,
    chat_id: i64,
    now: i64,
) -> Result<(), StorageError> {
    mark_failed(conn, ids, reason, now)?;
    break_channel(conn, user_id, chat_id, reason, now).map(|_| ())
}

impl Notify<'_> {
    pub async fn mark_delivered_to(
        &self,
        ids: &[i64],
        now: i64,
        account_chat: Option<(i64, i64)>,
    ) -> Result<(), StorageError> {
        let ids = ids.to_owned();
        self.0
            .call(move |conn| mark_delivered_to(conn, &ids, now, account_chat))
            .await
    }

    pub async fn fail_and_break(
        &self,
        ids: &[i64],
        reason: &str,
        user_id: i64,
        chat_id: i64,
        now: i64,
    ) -> Result<(), StorageError> {
        let (ids, reason) = (ids.to_owned(), reason.to_owned());
        self.0
            .call(move |conn| fail_and_break(conn, &ids, &reason, user_id, chat_id, now))
            .await
    }
}
