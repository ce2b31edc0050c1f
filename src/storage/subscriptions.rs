//! Owns the `subscriptions`, `alert_state` and `geocoding_cache` tables. A subscription's
//! place is kept with its grid cell (coordinates × 100, rounded), so the poller fetches
//! each cell once however many subscriptions share it.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StorageError;
use crate::domain::subscription::{ConstraintState, Kind, Subscription, cell};

/// The typed operations on subscriptions, alert states, observations and the geocoding cache, each in its own transaction (`db.subscriptions()`).
pub struct Subscriptions<'a>(pub(in crate::storage) &'a super::Db);

const COLUMNS: &str = "id, user_id, label, place_name, latitude, longitude, timezone, min_temp_c, \
     max_temp_c, rain, snow, notify_on_clear, for_observations, enabled, created_at, updated_at, \
     ice, remind_hours";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Subscription> {
    Ok(Subscription {
        id: r.get(0)?,
        user_id: r.get(1)?,
        label: r.get(2)?,
        place_name: r.get(3)?,
        lat: r.get(4)?,
        lon: r.get(5)?,
        timezone: r.get(6)?,
        min_temp_c: r.get(7)?,
        max_temp_c: r.get(8)?,
        rain: r.get(9)?,
        snow: r.get(10)?,
        notify_on_clear: r.get(11)?,
        for_observations: r.get(12)?,
        enabled: r.get(13)?,
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
        ice: r.get(16)?,
        remind_hours: r.get(17)?,
    })
}

/// Inserts `s` (its id is ignored) unless the user already has `limit`; returns the
/// stored row, or `None` when at the limit.
pub fn insert(
    conn: &mut Connection,
    s: &Subscription,
    limit: usize,
) -> Result<Option<Subscription>, StorageError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let have: i64 = tx.query_row(
        "SELECT count(*) FROM subscriptions WHERE user_id = ?1",
        [s.user_id],
        |r| r.get(0),
    )?;
    if have as usize >= limit {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO subscriptions (user_id, label, place_name, latitude, longitude, cell_lat,
             cell_lon, timezone, min_temp_c, max_temp_c, rain, snow, notify_on_clear,
             for_observations, enabled, created_at, updated_at, ice, remind_hours)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16, ?17,
                 ?18)",
        params![
            s.user_id,
            s.label,
            s.place_name,
            s.lat,
            s.lon,
            cell(s.lat),
            cell(s.lon),
            s.timezone,
            s.min_temp_c,
            s.max_temp_c,
            s.rain,
            s.snow,
            s.notify_on_clear,
            s.for_observations,
            s.enabled,
            s.created_at,
            s.ice,
            s.remind_hours
        ],
    )?;
    let id = tx.last_insert_rowid();
    let stored = by_id(&tx, id)?;
    tx.commit()?;
    Ok(stored)
}

/// Writes back every field but id, user and created_at. A changed place or constraint
/// resets the alert state (the old state described another question).
pub fn update(conn: &mut Connection, s: &Subscription) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE subscriptions SET label = ?2, place_name = ?3, latitude = ?4, longitude = ?5,
             cell_lat = ?6, cell_lon = ?7, timezone = ?8, min_temp_c = ?9, max_temp_c = ?10,
             rain = ?11, snow = ?12, notify_on_clear = ?13, for_observations = ?14,
             enabled = ?15, updated_at = ?16, ice = ?17, remind_hours = ?18
         WHERE id = ?1",
        params![
            s.id,
            s.label,
            s.place_name,
            s.lat,
            s.lon,
            cell(s.lat),
            cell(s.lon),
            s.timezone,
            s.min_temp_c,
            s.max_temp_c,
            s.rain,
            s.snow,
            s.notify_on_clear,
            s.for_observations,
            s.enabled,
            s.updated_at,
            s.ice,
            s.remind_hours
        ],
    )?;
    tx.execute("DELETE FROM alert_state WHERE subscription_id = ?1", [s.id])?;
    tx.commit()?;
    Ok(())
}

pub fn by_id(conn: &Connection, id: i64) -> Result<Option<Subscription>, StorageError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM subscriptions WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

pub fn of_user(conn: &Connection, user_id: i64) -> Result<Vec<Subscription>, StorageError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE user_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([user_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn delete(conn: &Connection, id: i64) -> Result<bool, StorageError> {
    Ok(conn.execute("DELETE FROM subscriptions WHERE id = ?1", [id])? > 0)
}

/// The distinct grid cells with at least one enabled subscription.
pub fn active_cells(conn: &Connection) -> Result<Vec<(i64, i64)>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT cell_lat, cell_lon FROM subscriptions WHERE enabled = 1
         ORDER BY cell_lat, cell_lon",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A subscription with the stored state of each of its constraints.
pub type WithState = (Subscription, Vec<(Kind, ConstraintState)>);

/// Enabled subscriptions in one cell, with the stored state of each constraint.
pub fn in_cell(
    conn: &Connection,
    cell_lat: i64,
    cell_lon: i64,
) -> Result<Vec<WithState>, StorageError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM subscriptions
         WHERE cell_lat = ?1 AND cell_lon = ?2 AND enabled = 1 ORDER BY id"
    ))?;
    let subs: Vec<Subscription> = stmt
        .query_map([cell_lat, cell_lon], from_row)?
        .collect::<Result<_, _>>()?;
    let mut states = conn.prepare(
        "SELECT kind, violated, since, streak, reminded_at FROM alert_state
         WHERE subscription_id = ?1",
    )?;
    let mut out = Vec::with_capacity(subs.len());
    for s in subs {
        let state = states
            .query_map([s.id], |r| {
                let kind: String = r.get(0)?;
                Ok((
                    kind,
                    ConstraintState {
                        violated: r.get(1)?,
                        since: r.get(2)?,
                        streak: r.get(3)?,
                        reminded_at: r.get(4)?,
                    },
                ))
            })?
            .filter_map(|row| match row {
                Ok((kind, st)) => Kind::parse(&kind).map(|k| Ok((k, st))),
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push((s, state));
    }
    Ok(out)
}

/// Stores changed constraint states and the alert events they caused in one
/// transaction, so an event cannot be lost once its state change is committed.
pub fn save_states(
    conn: &mut Connection,
    changes: &[(i64, Kind, ConstraintState)],
    events: &[super::notify::JournalEntry],
) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    super::notify::record_alerts(&tx, events)?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO alert_state (subscription_id, kind, violated, since, streak, reminded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (subscription_id, kind) DO UPDATE SET
                 violated = excluded.violated, since = excluded.since, streak = excluded.streak,
                 reminded_at = excluded.reminded_at",
        )?;
        for (id, kind, st) in changes {
            stmt.execute(params![
                id,
                kind.as_str(),
                st.violated,
                st.since,
                st.streak,
                st.reminded_at
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The cached geocoding answer (JSON) if younger than `max_age` seconds.
pub fn cached_places(
    conn: &Connection,
    query: &str,
    count: u8,
    now: i64,
    max_age: i64,
) -> Result<Option<String>, StorageError> {
    Ok(conn
        .query_row(
            "SELECT results FROM geocoding_cache WHERE query = ?1 AND count = ?2 AND fetched_at >= ?3",
            params![query, count, now - max_age],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn cache_places(
    conn: &Connection,
    query: &str,
    count: u8,
    results: &str,
    now: i64,
) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO geocoding_cache (query, count, results, fetched_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (query, count) DO UPDATE SET results = excluded.results, fetched_at = excluded.fetched_at",
        params![query, count, results, now],
    )?;
    Ok(())
}

/// Keeps the latest conditions (JSON) of a grid cell.
pub fn save_observation(
    conn: &Connection,
    (cell_lat, cell_lon): (i64, i64),
    conditions: &str,
    received_at: i64,
) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO observations (cell_lat, cell_lon, conditions, received_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (cell_lat, cell_lon) DO UPDATE SET conditions = excluded.conditions,
             received_at = excluded.received_at",
        params![cell_lat, cell_lon, conditions, received_at],
    )?;
    Ok(())
}

/// The latest conditions (JSON) and their time for a grid cell.
/// A place's last stored reading: (grid cell, conditions JSON, received_at).
pub type StoredReading = ((i64, i64), String, i64);

/// The last readings, received before `before` (Unix seconds), of places where an enabled
/// subscription has not been told yet that its data is old: (cell, conditions JSON,
/// received_at).
pub fn stale_observations(
    conn: &Connection,
    before: i64,
) -> Result<Vec<StoredReading>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.cell_lat, o.cell_lon, o.conditions, o.received_at FROM observations o
         WHERE o.received_at < ?1 AND EXISTS (
             SELECT 1 FROM subscriptions s
             LEFT JOIN alert_state a ON a.subscription_id = s.id AND a.kind = 'no_data'
             WHERE s.cell_lat = o.cell_lat AND s.cell_lon = o.cell_lon AND s.enabled = 1
               AND coalesce(a.violated, 0) = 0)",
    )?;
    let rows = stmt.query_map([before], |r| {
        Ok(((r.get(0)?, r.get(1)?), r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn latest_observation(
    conn: &Connection,
    (cell_lat, cell_lon): (i64, i64),
) -> Result<Option<(String, i64)>, StorageError> {
    Ok(conn
        .query_row(
            "SELECT conditions, received_at FROM observations WHERE cell_lat = ?1 AND cell_lon = ?2",
            [cell_lat, cell_lon],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Violated constraints of a subscription now.
pub fn violated_kinds(conn: &Connection, subscription_id: i64) -> Result<Vec<Kind>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT kind FROM alert_state WHERE subscription_id = ?1 AND violated = 1 ORDER BY kind",
    )?;
    let rows = stmt.query_map([subscription_id], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for kind in rows {
        if let Some(k) = Kind::parse(&kind?) {
            out.push(k);
        }
    }
    Ok(out)
}

impl Subscriptions<'_> {
    pub async fn active_cells(&self) -> Result<Vec<(i64, i64)>, StorageError> {
        self.0.call(move |conn| active_cells(conn)).await
    }

    pub async fn by_id(&self, id: i64) -> Result<Option<Subscription>, StorageError> {
        self.0.call(move |conn| by_id(conn, id)).await
    }

    pub async fn cache_places(
        &self,
        query: &str,
        count: u8,
        results: &str,
        now: i64,
    ) -> Result<(), StorageError> {
        let query = query.to_owned();
        let results = results.to_owned();
        self.0
            .call(move |conn| cache_places(conn, &query, count, &results, now))
            .await
    }

    pub async fn cached_places(
        &self,
        query: &str,
        count: u8,
        now: i64,
        max_age: i64,
    ) -> Result<Option<String>, StorageError> {
        let query = query.to_owned();
        self.0
            .call(move |conn| cached_places(conn, &query, count, now, max_age))
            .await
    }

    pub async fn delete(&self, id: i64) -> Result<bool, StorageError> {
        self.0.call(move |conn| delete(conn, id)).await
    }

    pub async fn in_cell(
        &self,
        cell_lat: i64,
        cell_lon: i64,
    ) -> Result<Vec<WithState>, StorageError> {
        self.0
            .call(move |conn| in_cell(conn, cell_lat, cell_lon))
            .await
    }

    pub async fn insert(
        &self,
        s: &Subscription,
        limit: usize,
    ) -> Result<Option<Subscription>, StorageError> {
        let s = s.to_owned();
        self.0.call(move |conn| insert(conn, &s, limit)).await
    }

    pub async fn latest_observation(
        &self,
        (cell_lat, cell_lon): (i64, i64),
    ) -> Result<Option<(String, i64)>, StorageError> {
        self.0
            .call(move |conn| latest_observation(conn, (cell_lat, cell_lon)))
            .await
    }

    pub async fn stale_observations(
        &self,
        before: i64,
    ) -> Result<Vec<StoredReading>, StorageError> {
        self.0
            .call(move |conn| stale_observations(conn, before))
            .await
    }

    pub async fn save_observation(
        &self,
        (cell_lat, cell_lon): (i64, i64),
        conditions: &str,
        received_at: i64,
    ) -> Result<(), StorageError> {
        let conditions = conditions.to_owned();
        self.0
            .call(move |conn| {
                save_observation(conn, (cell_lat, cell_lon), &conditions, received_at)
            })
            .await
    }

    pub async fn save_states(
        &self,
        changes: &[(i64, Kind, ConstraintState)],
        events: &[super::notify::JournalEntry],
    ) -> Result<(), StorageError> {
        let changes = changes.to_owned();
        let events = events.to_owned();
        self.0
            .call(move |conn| save_states(conn, &changes, &events))
            .await
    }

    pub async fn update(&self, s: &Subscription) -> Result<(), StorageError> {
        let s = s.to_owned();
        self.0.call(move |conn| update(conn, &s)).await
    }
}

/// How many subscriptions there are (all users).
pub fn count(conn: &Connection) -> Result<i64, StorageError> {
    Ok(conn.query_row("SELECT count(*) FROM subscriptions", [], |r| r.get(0))?)
}

/// A subscription with its violated constraints and the latest observation of its
/// place (JSON and time), read together.
#[derive(Debug, Clone)]
pub struct StoredStatus {
    pub subscription: Subscription,
    pub violated: Vec<Kind>,
    pub latest: Option<(String, i64)>,
}

/// Every subscription of `user_id` with its state, in one read.
pub fn statuses_of_user(
    conn: &mut Connection,
    user_id: i64,
) -> Result<Vec<StoredStatus>, StorageError> {
    let tx = conn.transaction()?;
    let out = statuses_in(&tx, user_id)?;
    tx.commit()?;
    Ok(out)
}

/// [`statuses_of_user`] inside a transaction the caller holds.
pub fn statuses_in(conn: &Connection, user_id: i64) -> Result<Vec<StoredStatus>, StorageError> {
    let mut out = Vec::new();
    for s in of_user(conn, user_id)? {
        let violated = violated_kinds(conn, s.id)?;
        let latest = latest_observation(conn, (cell(s.lat), cell(s.lon)))?;
        out.push(StoredStatus {
            subscription: s,
            violated,
            latest,
        });
    }
    Ok(out)
}

impl Subscriptions<'_> {
    pub async fn count(&self) -> Result<i64, StorageError> {
        self.0.call(|conn| count(conn)).await
    }

    pub async fn statuses_of_user(&self, user_id: i64) -> Result<Vec<StoredStatus>, StorageError> {
        self.0
            .call(move |conn| statuses_of_user(conn, user_id))
            .await
    }
}
