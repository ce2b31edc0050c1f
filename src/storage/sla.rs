//! Owns the SLA tables: definitions with their evaluation state (`slas`), violations
//! (`sla_violations`), and the metric history (`metric_series`, `metric_samples`).
//! Times are Unix seconds.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StorageError;

/// The typed operations on SLAs, their samples and violations, each in its own transaction (`db.sla()`).
pub struct Slas<'a>(pub(in crate::storage) &'a super::Db);

/// An SLA as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaRow {
    pub name: String,
    /// Canonical selector text.
    pub selector: String,
    pub desired_min: Option<f64>,
    pub desired_max: Option<f64>,
    pub for_seconds: i64,
    /// "p,d,q", or `None` to choose by AIC.
    pub arima_order: Option<String>,
    /// Out of range since (violated once `for_seconds` have passed).
    pub out_since: Option<i64>,
    pub violated_since: Option<i64>,
    pub last_value: Option<f64>,
    pub last_sampled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "name, selector, desired_min, desired_max, for_seconds, arima_order, \
                       out_since, violated_since, last_value, last_sampled_at, created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<SlaRow> {
    Ok(SlaRow {
        name: r.get(0)?,
        selector: r.get(1)?,
        desired_min: r.get(2)?,
        desired_max: r.get(3)?,
        for_seconds: r.get(4)?,
        arima_order: r.get(5)?,
        out_since: r.get(6)?,
        violated_since: r.get(7)?,
        last_value: r.get(8)?,
        last_sampled_at: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
    })
}

/// Creates or updates an SLA by name; returns whether it was new. An update keeps the
/// violation history and resets the evaluation state (the objective changed).
pub fn upsert(conn: &Connection, s: &SlaRow) -> Result<bool, StorageError> {
    let existed: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM slas WHERE name = ?1)",
        [&s.name],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO slas (name, selector, desired_min, desired_max, for_seconds, arima_order,
                           created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (name) DO UPDATE SET selector = excluded.selector,
             desired_min = excluded.desired_min, desired_max = excluded.desired_max,
             for_seconds = excluded.for_seconds, arima_order = excluded.arima_order,
             out_since = NULL, violated_since = NULL, updated_at = excluded.updated_at",
        params![
            s.name,
            s.selector,
            s.desired_min,
            s.desired_max,
            s.for_seconds,
            s.arima_order,
            s.updated_at
        ],
    )?;
    Ok(!existed)
}

/// Deletes an SLA and its violations.
pub fn delete(conn: &Connection, name: &str) -> Result<bool, StorageError> {
    Ok(conn.execute("DELETE FROM slas WHERE name = ?1", [name])? > 0)
}

pub fn list(conn: &Connection) -> Result<Vec<SlaRow>, StorageError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM slas ORDER BY name"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, name: &str) -> Result<Option<SlaRow>, StorageError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM slas WHERE name = ?1"),
            [name],
            from_row,
        )
        .optional()?)
}

/// The outcome of evaluating one SLA once.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub name: String,
    pub value: Option<f64>,
    pub at: i64,
    pub out_since: Option<i64>,
    pub violated_since: Option<i64>,
    /// Write a violation row.
    pub violated: bool,
}

/// Stores samples (series name, value) taken at `at` and the evaluations, in one
/// transaction.
pub fn save_cycle(
    conn: &mut Connection,
    at: i64,
    samples: &[(String, f64)],
    evaluations: &[Evaluation],
) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    {
        let mut series = tx.prepare_cached(
            "INSERT INTO metric_series (name) VALUES (?1)
             ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
        )?;
        let mut sample = tx.prepare_cached(
            "INSERT INTO metric_samples (series, at, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (series, at) DO UPDATE SET value = excluded.value",
        )?;
        for (name, value) in samples {
            let id: i64 = series.query_row([name], |r| r.get(0))?;
            sample.execute(params![id, at, value])?;
        }
        let mut state = tx.prepare_cached(
            "UPDATE slas SET out_since = ?2, violated_since = ?3, last_value = ?4,
                 last_sampled_at = ?5 WHERE name = ?1",
        )?;
        let mut violation =
            tx.prepare_cached("INSERT INTO sla_violations (sla, value, at) VALUES (?1, ?2, ?3)")?;
        for e in evaluations {
            state.execute(params![
                e.name,
                e.out_since,
                e.violated_since,
                e.value,
                e.at
            ])?;
            if let (true, Some(v)) = (e.violated, e.value) {
                violation.execute(params![e.name, v, e.at])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// Samples of one series from `since` on, oldest first.
pub fn history(
    conn: &Connection,
    series: &str,
    since: i64,
) -> Result<Vec<(i64, f64)>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.at, s.value FROM metric_samples s JOIN metric_series m ON m.id = s.series
         WHERE m.name = ?1 AND s.at >= ?2 ORDER BY s.at",
    )?;
    let rows = stmt.query_map(params![series, since], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes samples and violations older than `before`; series without samples go too.
pub fn prune(conn: &mut Connection, before: i64) -> Result<usize, StorageError> {
    let tx = conn.transaction()?;
    let ids: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT id FROM metric_series")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut n = 0;
    for id in ids {
        n += tx.execute(
            "DELETE FROM metric_samples WHERE series = ?1 AND at < ?2",
            params![id, before],
        )?;
    }
    tx.execute(
        "DELETE FROM metric_series WHERE NOT EXISTS
             (SELECT 1 FROM metric_samples s WHERE s.series = metric_series.id)",
        [],
    )?;
    n += tx.execute("DELETE FROM sla_violations WHERE at < ?1", [before])?;
    tx.commit()?;
    Ok(n)
}

/// Violations of `name` since each of `since` (e.g. 1 h, 3 h and 6 h ago).
pub fn violation_counts(
    conn: &Connection,
    name: &str,
    since: &[i64],
) -> Result<Vec<i64>, StorageError> {
    let mut stmt =
        conn.prepare_cached("SELECT count(*) FROM sla_violations WHERE sla = ?1 AND at >= ?2")?;
    since
        .iter()
        .map(|&t| Ok(stmt.query_row(params![name, t], |r| r.get(0))?))
        .collect()
}

/// Violations of `name` from `since` on, newest first: (value, at).
pub fn violations(
    conn: &Connection,
    name: &str,
    since: i64,
    limit: usize,
) -> Result<Vec<(f64, i64)>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT value, at FROM sla_violations WHERE sla = ?1 AND at >= ?2
         ORDER BY at DESC, id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![name, since, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Slas<'_> {
    pub async fn delete(&self, name: &str) -> Result<bool, StorageError> {
        let name = name.to_owned();
        self.0.call(move |conn| delete(conn, &name)).await
    }

    pub async fn get(&self, name: &str) -> Result<Option<SlaRow>, StorageError> {
        let name = name.to_owned();
        self.0.call(move |conn| get(conn, &name)).await
    }

    pub async fn history(&self, series: &str, since: i64) -> Result<Vec<(i64, f64)>, StorageError> {
        let series = series.to_owned();
        self.0.call(move |conn| history(conn, &series, since)).await
    }

    pub async fn list(&self) -> Result<Vec<SlaRow>, StorageError> {
        self.0.call(move |conn| list(conn)).await
    }

    pub async fn prune(&self, before: i64) -> Result<usize, StorageError> {
        self.0.call(move |conn| prune(conn, before)).await
    }

    pub async fn save_cycle(
        &self,
        at: i64,
        samples: &[(String, f64)],
        evaluations: &[Evaluation],
    ) -> Result<(), StorageError> {
        let samples = samples.to_owned();
        let evaluations = evaluations.to_owned();
        self.0
            .call(move |conn| save_cycle(conn, at, &samples, &evaluations))
            .await
    }

    pub async fn violations(
        &self,
        name: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<(f64, i64)>, StorageError> {
        let name = name.to_owned();
        self.0
            .call(move |conn| violations(conn, &name, since, limit))
            .await
    }
}

/// Inserts or replaces an SLA unless that would make more than `max`; `None` when
/// refused, else whether it was new. Checked and written in one transaction.
pub fn upsert_capped(
    conn: &mut Connection,
    s: &SlaRow,
    max: usize,
) -> Result<Option<bool>, StorageError> {
    let tx = conn.transaction()?;
    let exists = get(&tx, &s.name)?.is_some();
    if !exists && list(&tx)?.len() >= max {
        return Ok(None);
    }
    let created = upsert(&tx, s)?;
    tx.commit()?;
    Ok(Some(created))
}

/// Violations of each SLA since each of `since`, in one read.
pub fn violation_counts_of(
    conn: &Connection,
    names: &[String],
    since: &[i64],
) -> Result<Vec<Vec<i64>>, StorageError> {
    names
        .iter()
        .map(|n| violation_counts(conn, n, since))
        .collect()
}

impl Slas<'_> {
    pub async fn upsert_capped(
        &self,
        s: &SlaRow,
        max: usize,
    ) -> Result<Option<bool>, StorageError> {
        let s = s.to_owned();
        self.0.call(move |conn| upsert_capped(conn, &s, max)).await
    }

    pub async fn violation_counts_of(
        &self,
        names: &[String],
        since: &[i64],
    ) -> Result<Vec<Vec<i64>>, StorageError> {
        let (names, since) = (names.to_owned(), since.to_owned());
        self.0
            .call(move |conn| violation_counts_of(conn, &names, &since))
            .await
    }
}
