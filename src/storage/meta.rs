//! Owns the `meta` table: small facts about this installation that must survive
//! restarts, such as the node id.

use rusqlite::{Connection, OptionalExtension};

use super::StorageError;

/// The typed operations on the node's own settings (node id, token key, Telegram offset, last time seen), each in its own transaction (`db.meta()`).
pub struct Meta<'a>(pub(in crate::storage) &'a super::Db);

fn get(conn: &Connection, key: &str) -> Result<Option<String>, StorageError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Returns the stored value for `key`, or stores and returns `make()` the first time.
fn get_or_init(
    conn: &mut Connection,
    key: &str,
    make: impl FnOnce() -> String,
) -> Result<String, StorageError> {
    let tx = conn.transaction()?;
    let value = match get(&tx, key)? {
        Some(v) => v,
        None => {
            let v = make();
            tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", [key, &v])?;
            v
        }
    };
    tx.commit()?;
    Ok(value)
}

/// This node's stable identity: generated at first start, then read back.
pub fn node_id(conn: &mut Connection) -> Result<String, StorageError> {
    get_or_init(conn, "node_id", || crate::domain::ids::hex(6))
}

/// The login-token key used when none is configured: 32 random bytes, hex, generated
/// once so tokens stay valid across restarts.
pub fn jwt_secret(conn: &mut Connection) -> Result<String, StorageError> {
    get_or_init(conn, "jwt_secret", || crate::domain::ids::hex(32))
}

/// The next Telegram update id to ask for (`getUpdates` offset); 0 before the first.
pub fn telegram_offset(conn: &Connection) -> Result<i64, StorageError> {
    Ok(get(conn, "telegram_update_offset")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

pub fn set_telegram_offset(conn: &Connection, offset: i64) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('telegram_update_offset', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [offset.to_string()],
    )?;
    Ok(())
}

/// The latest wall-clock time (Unix seconds) this installation recorded; 0 before the
/// first record.
pub fn last_seen(conn: &Connection) -> Result<i64, StorageError> {
    Ok(get(conn, "last_seen")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Records `at` as seen, unless a later time is already recorded.
pub fn record_seen(conn: &Connection, at: i64) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('last_seen', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value
         WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
        [at.to_string()],
    )?;
    Ok(())
}

impl Meta<'_> {
    pub async fn jwt_secret(&self) -> Result<String, StorageError> {
        self.0.call(jwt_secret).await
    }

    pub async fn last_seen(&self) -> Result<i64, StorageError> {
        self.0.call(move |conn| last_seen(conn)).await
    }

    pub async fn node_id(&self) -> Result<String, StorageError> {
        self.0.call(node_id).await
    }

    pub async fn record_seen(&self, at: i64) -> Result<(), StorageError> {
        self.0.call(move |conn| record_seen(conn, at)).await
    }

    pub async fn telegram_offset(&self) -> Result<i64, StorageError> {
        self.0.call(move |conn| telegram_offset(conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_seen_time_only_moves_forward() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)",
        )
        .unwrap();
        assert_eq!(last_seen(&conn).unwrap(), 0);
        record_seen(&conn, 1_795_000_000).unwrap();
        record_seen(&conn, 1_700_000_000).unwrap();
        assert_eq!(last_seen(&conn).unwrap(), 1_795_000_000);
        record_seen(&conn, 1_795_000_600).unwrap();
        assert_eq!(last_seen(&conn).unwrap(), 1_795_000_600);
    }
}
