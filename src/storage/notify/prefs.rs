//! Per-user delivery preferences (`notify_prefs`): mode, quiet hours, units, and the
//! recipient a delivery goes to.

use rusqlite::{Connection, OptionalExtension, params};

use super::Notify;
use crate::storage::StorageError;

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

pub(super) fn ensure_prefs(conn: &Connection, user_id: i64) -> Result<(), StorageError> {
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

impl Notify<'_> {
    pub async fn recipient(&self, user_id: i64) -> Result<Option<Recipient>, StorageError> {
        self.0.call(move |conn| recipient(conn, user_id)).await
    }

    pub async fn set_prefs(
        &self,
        user_id: i64,
        prefs: &Prefs,
        now: i64,
    ) -> Result<(), StorageError> {
        let prefs = prefs.to_owned();
        self.0
            .call(move |conn| set_prefs(conn, user_id, &prefs, now))
            .await
    }
}

/// The recipients of several accounts in one read (`None`: no such account).
pub fn recipients(
    conn: &Connection,
    user_ids: &[i64],
) -> Result<std::collections::HashMap<i64, Option<Recipient>>, StorageError> {
    let mut out = std::collections::HashMap::new();
    for &id in user_ids {
        if let std::collections::hash_map::Entry::Vacant(slot) = out.entry(id) {
            slot.insert(recipient(conn, id)?);
        }
    }
    Ok(out)
}

/// Administrators with a confirmed chat, with their time zone: (user id, chat, zone).
pub fn admin_recipients(conn: &Connection) -> Result<Vec<(i64, i64, String)>, StorageError> {
    let mut out = Vec::new();
    for (admin, chat) in super::admin_chats(conn)? {
        let tz = recipient(conn, admin)?.map_or_else(|| "UTC".to_owned(), |r| r.timezone);
        out.push((admin, chat, tz));
    }
    Ok(out)
}

impl Notify<'_> {
    pub async fn recipients(
        &self,
        user_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Option<Recipient>>, StorageError> {
        let user_ids = user_ids.to_owned();
        self.0.call(move |conn| recipients(conn, &user_ids)).await
    }

    pub async fn admin_recipients(&self) -> Result<Vec<(i64, i64, String)>, StorageError> {
        self.0.call(|conn| admin_recipients(conn)).await
    }
}
