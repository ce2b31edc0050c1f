//! Owns the whiteboard tables: `boards` (each board's epoch, raised by every clear) and
//! `board_points` (the points drawn in the current epoch, in arrival order, at most a
//! bounded number per board).

use rusqlite::{Connection, params};

use super::StorageError;

/// The typed operations on whiteboard drawings, each in its own transaction (`db.boards()`).
pub struct Boards<'a>(pub(in crate::storage) &'a super::Db);

#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub username: String,
    pub stroke: u64,
    pub seq: u64,
    /// `start`, `drag` or `end`.
    pub kind: String,
    pub x: f64,
    pub y: f64,
    pub color: String,
}

/// A board's epoch and its points, oldest first (epoch 0 and none for a new board).
pub fn load(conn: &Connection, board: &str) -> Result<(u64, Vec<StoredPoint>), StorageError> {
    let epoch: i64 = conn
        .query_row("SELECT epoch FROM boards WHERE name = ?1", [board], |r| {
            r.get(0)
        })
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(0),
            e => Err(e),
        })?;
    let mut stmt = conn.prepare_cached(
        "SELECT username, stroke, seq, kind, x, y, color FROM board_points
         WHERE board = ?1 ORDER BY row",
    )?;
    let points = stmt
        .query_map([board], |r| {
            Ok(StoredPoint {
                username: r.get(0)?,
                stroke: r.get::<_, i64>(1)?.max(0) as u64,
                seq: r.get::<_, i64>(2)?.max(0) as u64,
                kind: r.get(3)?,
                x: r.get(4)?,
                y: r.get(5)?,
                color: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok((epoch.max(0) as u64, points))
}

/// One change to write.
#[derive(Debug, Clone, PartialEq)]
pub enum BoardWrite {
    Point {
        board: String,
        point: StoredPoint,
    },
    /// A new epoch: the points so far are gone.
    Clear {
        board: String,
        epoch: u64,
    },
}

/// Writes a batch in one transaction, then keeps at most `max_points` per touched board
/// (the oldest go).
pub fn write(
    conn: &mut Connection,
    writes: &[BoardWrite],
    max_points: usize,
) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    let mut touched = std::collections::BTreeSet::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO board_points (board, username, stroke, seq, kind, x, y, color)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )?;
        for w in writes {
            match w {
                BoardWrite::Point { board, point: p } => {
                    insert.execute(params![
                        board,
                        p.username,
                        p.stroke as i64,
                        p.seq as i64,
                        p.kind,
                        p.x,
                        p.y,
                        p.color
                    ])?;
                    touched.insert(board.as_str());
                }
                BoardWrite::Clear { board, epoch } => {
                    // Only a newer epoch clears: an old clear arriving late changes nothing.
                    let raised = tx.execute(
                        "INSERT INTO boards (name, epoch) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch
                         WHERE excluded.epoch > boards.epoch",
                        params![board, *epoch as i64],
                    )?;
                    if raised > 0 {
                        tx.execute("DELETE FROM board_points WHERE board = ?1", [board])?;
                    }
                }
            }
        }
    }
    for board in touched {
        tx.execute(
            "DELETE FROM board_points WHERE board = ?1 AND row <= (
               SELECT row FROM board_points WHERE board = ?1 ORDER BY row DESC
               LIMIT 1 OFFSET ?2)",
            params![board, max_points as i64],
        )?;
    }
    tx.commit()?;
    Ok(())
}

impl Boards<'_> {
    pub async fn load(&self, board: &str) -> Result<(u64, Vec<StoredPoint>), StorageError> {
        let board = board.to_owned();
        self.0.call(move |conn| load(conn, &board)).await
    }

    pub async fn write(
        &self,
        writes: &[BoardWrite],
        max_points: usize,
    ) -> Result<(), StorageError> {
        let writes = writes.to_owned();
        self.0
            .call(move |conn| write(conn, &writes, max_points))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::storage::test_connection as db;

    fn point(seq: u64) -> BoardWrite {
        BoardWrite::Point {
            board: "b".into(),
            point: StoredPoint {
                username: "ann".into(),
                stroke: 1,
                seq,
                kind: "drag".into(),
                x: 0.5,
                y: 0.25,
                color: "#aa0000".into(),
            },
        }
    }

    #[test]
    fn points_clear_and_cap() {
        let mut c = db();
        assert_eq!(load(&c, "b").unwrap(), (0, vec![]));
        write(&mut c, &[point(1), point(2), point(2), point(3)], 2).unwrap();
        let (epoch, points) = load(&c, "b").unwrap();
        assert_eq!(epoch, 0);
        let seqs: Vec<u64> = points.iter().map(|p| p.seq).collect();
        assert_eq!(
            seqs,
            [2, 3],
            "duplicates ignored, the oldest over the cap dropped"
        );
        write(
            &mut c,
            &[
                BoardWrite::Clear {
                    board: "b".into(),
                    epoch: 4,
                },
                point(9),
            ],
            10,
        )
        .unwrap();
        let (epoch, points) = load(&c, "b").unwrap();
        assert_eq!((epoch, points.len()), (4, 1));
        // An older epoch neither lowers it nor wipes the points.
        write(
            &mut c,
            &[BoardWrite::Clear {
                board: "b".into(),
                epoch: 2,
            }],
            10,
        )
        .unwrap();
        assert_eq!(load(&c, "b").unwrap(), (4, points));
    }
}
