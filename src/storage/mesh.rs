//! Owns the mesh tables: `mesh_nodes` (the node directory, so a restarted node finds
//! its peers without its seeds), `mesh_outbox` (messages kept until their recipient
//! acknowledges them, in send order per recipient, until they expire) and
//! `mesh_revocations` (tokens of other nodes' users that their home node revoked) and
//! `mesh_names` (which usernames the accounts of other nodes hold, and since when).
//!
//! `advertised_at` is the advertising node's clock in Unix milliseconds; `last_seen_at`
//! and `expires_at` are this node's clock in Unix seconds.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StorageError;

/// The typed operations on the mesh: nodes, queued messages, revocations and name claims, each in its own transaction (`db.mesh()`).
pub struct Mesh<'a>(pub(in crate::storage) &'a super::Db);

/// One node as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNode {
    pub id: String,
    pub mqtt: String,
    pub ws: Option<String>,
    pub http: String,
    pub users: u32,
    pub started_at: u64,
    pub advertised_at: u64,
    pub last_seen_at: i64,
}

pub fn load_nodes(conn: &Connection) -> Result<Vec<StoredNode>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, mqtt, ws, http, users, started_at, advertised_at, last_seen_at
         FROM mesh_nodes ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredNode {
            id: r.get(0)?,
            mqtt: r.get(1)?,
            ws: r.get(2)?,
            http: r.get(3)?,
            users: r.get(4)?,
            started_at: r.get::<_, i64>(5)?.max(0) as u64,
            advertised_at: r.get::<_, i64>(6)?.max(0) as u64,
            last_seen_at: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the stored directory with `nodes` in one transaction.
pub fn save_nodes(conn: &mut Connection, nodes: &[StoredNode]) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM mesh_nodes", [])?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO mesh_nodes
             (id, mqtt, ws, http, users, started_at, advertised_at, last_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for n in nodes {
            stmt.execute(params![
                n.id,
                n.mqtt,
                n.ws,
                n.http,
                n.users,
                n.started_at as i64,
                n.advertised_at as i64,
                n.last_seen_at
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A message waiting for its recipient's acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedMessage {
    pub id: String,
    pub from_user: String,
    pub to_user: String,
    pub seq: u64,
    /// The body as JSON text.
    pub body: String,
    pub sent_at: String,
    pub expires_at: i64,
}

fn queued(r: &Row) -> rusqlite::Result<QueuedMessage> {
    Ok(QueuedMessage {
        id: r.get(0)?,
        from_user: r.get(1)?,
        to_user: r.get(2)?,
        seq: r.get::<_, i64>(3)?.max(0) as u64,
        body: r.get(4)?,
        sent_at: r.get(5)?,
        expires_at: r.get(6)?,
    })
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    /// The recipient already has `mesh.offline_max_per_user` messages waiting.
    Full,
}

/// Queues `m` unless its recipient already has `max_per_user` waiting. A message id
/// seen before is accepted again without a second copy.
pub fn enqueue(
    conn: &mut Connection,
    m: &QueuedMessage,
    max_per_user: u32,
) -> Result<Result<(), QueueRefusal>, StorageError> {
    let tx = conn.transaction()?;
    let waiting: i64 = tx.query_row(
        "SELECT count(*) FROM mesh_outbox WHERE to_user = ?1",
        [&m.to_user],
        |r| r.get(0),
    )?;
    if waiting >= i64::from(max_per_user) {
        return Ok(Err(QueueRefusal::Full));
    }
    tx.execute(
        "INSERT INTO mesh_outbox (id, from_user, to_user, seq, body, sent_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
        params![
            m.id,
            m.from_user,
            m.to_user,
            m.seq as i64,
            m.body,
            m.sent_at,
            m.expires_at
        ],
    )?;
    tx.commit()?;
    Ok(Ok(()))
}

/// The messages waiting for `to_user`, oldest first.
pub fn waiting_for(conn: &Connection, to_user: &str) -> Result<Vec<QueuedMessage>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, from_user, to_user, seq, body, sent_at, expires_at FROM mesh_outbox
         WHERE to_user = ?1 ORDER BY row",
    )?;
    let rows = stmt.query_map([to_user], queued)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Recipients with messages waiting.
pub fn recipients(conn: &Connection) -> Result<Vec<String>, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT to_user FROM mesh_outbox")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes acknowledged messages; returns how many were still queued.
pub fn remove(conn: &mut Connection, ids: &[String]) -> Result<usize, StorageError> {
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut stmt = tx.prepare_cached("DELETE FROM mesh_outbox WHERE id = ?1")?;
        for id in ids {
            n += stmt.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// Drops messages that waited past their expiry; returns how many.
pub fn expire(conn: &Connection, now: i64) -> Result<usize, StorageError> {
    Ok(conn.execute("DELETE FROM mesh_outbox WHERE expires_at <= ?1", [now])?)
}

pub fn waiting_count(conn: &Connection) -> Result<i64, StorageError> {
    Ok(conn.query_row("SELECT count(*) FROM mesh_outbox", [], |r| r.get(0))?)
}

/// Records a revocation from a user's home node.
pub fn add_revocation(
    conn: &Connection,
    username: &str,
    jti: Option<&str>,
    issued_before: Option<i64>,
    expires_at: i64,
) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO mesh_revocations (username, jti, issued_before, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![username, jti, issued_before, expires_at],
    )?;
    Ok(())
}

/// Whether a token of another node's user (`jti`, issued at `issued_at`) was revoked.
pub fn is_revoked(
    conn: &Connection,
    username: &str,
    jti: &str,
    issued_at: i64,
) -> Result<bool, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM mesh_revocations WHERE username = ?1
           AND (jti = ?2 OR issued_before >= ?3))",
    )?;
    Ok(stmt.query_row(params![username, jti, issued_at], |r| r.get(0))?)
}

pub fn prune_revocations(conn: &Connection, now: i64) -> Result<usize, StorageError> {
    Ok(conn.execute("DELETE FROM mesh_revocations WHERE expires_at <= ?1", [now])?)
}

/// A username an account holds, and since when (its creation, Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameClaim {
    pub name: String,
    pub since: i64,
}

/// The usernames this node's accounts hold.
pub fn local_name_claims(conn: &Connection) -> Result<Vec<NameClaim>, StorageError> {
    let mut stmt = conn.prepare_cached("SELECT username, created_at FROM users ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(NameClaim {
            name: r.get(0)?,
            since: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces what node `home` claims with `claims` (its whole list), and returns this
/// node's usernames that another node now holds (`own_node` is this node's id).
pub fn replace_name_claims(
    conn: &mut Connection,
    home: &str,
    claims: &[NameClaim],
    own_node: &str,
) -> Result<Vec<(String, String)>, StorageError> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM mesh_names WHERE home = ?1", [home])?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO mesh_names (name, home, claimed_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name, home) DO UPDATE SET claimed_at = min(claimed_at, excluded.claimed_at)",
        )?;
        for c in claims {
            insert.execute(params![c.name, home, c.since])?;
        }
    }
    let lost = lost_names(&tx, own_node)?;
    tx.commit()?;
    Ok(lost)
}

/// Forgets the claims of a node the mesh no longer knows.
pub fn forget_name_claims(conn: &Connection, home: &str) -> Result<usize, StorageError> {
    Ok(conn.execute("DELETE FROM mesh_names WHERE home = ?1", [home])?)
}

/// How many usernames other nodes' accounts hold (as far as this node knows).
pub fn remote_name_count(conn: &Connection) -> Result<i64, StorageError> {
    Ok(
        conn.query_row("SELECT count(DISTINCT name) FROM mesh_names", [], |r| {
            r.get(0)
        })?,
    )
}

/// The node whose account holds `name` mesh-wide: the earliest claim, ties to the
/// lowest node id; this node's own account counts as a claim of `own_node`. `None`
/// when no account known to this node has the name.
pub fn name_holder(
    conn: &Connection,
    name: &str,
    own_node: &str,
) -> Result<Option<String>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT home FROM (
            SELECT home, claimed_at FROM mesh_names WHERE name = ?1
            UNION ALL
            SELECT ?2, created_at FROM users WHERE username = ?1)
         ORDER BY claimed_at, home LIMIT 1",
    )?;
    Ok(stmt
        .query_row(params![name, own_node], |r| r.get(0))
        .optional()?)
}

/// This node's usernames held by an earlier account of another node, with that node.
fn lost_names(conn: &Connection, own_node: &str) -> Result<Vec<(String, String)>, StorageError> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.username, (SELECT m.home FROM mesh_names m WHERE m.name = u.username
                                ORDER BY m.claimed_at, m.home LIMIT 1)
         FROM users u
         WHERE EXISTS (SELECT 1 FROM mesh_names m WHERE m.name = u.username
                       AND (m.claimed_at < u.created_at
                            OR (m.claimed_at = u.created_at AND m.home < ?1)))
         ORDER BY u.username",
    )?;
    let rows = stmt.query_map([own_node], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Mesh<'_> {
    pub async fn enqueue(
        &self,
        m: &QueuedMessage,
        max_per_user: u32,
    ) -> Result<Result<(), QueueRefusal>, StorageError> {
        let m = m.to_owned();
        self.0
            .call(move |conn| enqueue(conn, &m, max_per_user))
            .await
    }

    pub async fn expire(&self, now: i64) -> Result<usize, StorageError> {
        self.0.call(move |conn| expire(conn, now)).await
    }

    pub async fn forget_name_claims(&self, home: &str) -> Result<usize, StorageError> {
        let home = home.to_owned();
        self.0
            .call(move |conn| forget_name_claims(conn, &home))
            .await
    }

    pub async fn is_revoked(
        &self,
        username: &str,
        jti: &str,
        issued_at: i64,
    ) -> Result<bool, StorageError> {
        let username = username.to_owned();
        let jti = jti.to_owned();
        self.0
            .call(move |conn| is_revoked(conn, &username, &jti, issued_at))
            .await
    }

    pub async fn load_nodes(&self) -> Result<Vec<StoredNode>, StorageError> {
        self.0.call(move |conn| load_nodes(conn)).await
    }

    pub async fn local_name_claims(&self) -> Result<Vec<NameClaim>, StorageError> {
        self.0.call(move |conn| local_name_claims(conn)).await
    }

    pub async fn name_holder(
        &self,
        name: &str,
        own_node: &str,
    ) -> Result<Option<String>, StorageError> {
        let name = name.to_owned();
        let own_node = own_node.to_owned();
        self.0
            .call(move |conn| name_holder(conn, &name, &own_node))
            .await
    }

    pub async fn prune_revocations(&self, now: i64) -> Result<usize, StorageError> {
        self.0.call(move |conn| prune_revocations(conn, now)).await
    }

    pub async fn recipients(&self) -> Result<Vec<String>, StorageError> {
        self.0.call(move |conn| recipients(conn)).await
    }

    pub async fn remote_name_count(&self) -> Result<i64, StorageError> {
        self.0.call(move |conn| remote_name_count(conn)).await
    }

    pub async fn remove(&self, ids: &[String]) -> Result<usize, StorageError> {
        let ids = ids.to_owned();
        self.0.call(move |conn| remove(conn, &ids)).await
    }

    pub async fn replace_name_claims(
        &self,
        home: &str,
        claims: &[NameClaim],
        own_node: &str,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let home = home.to_owned();
        let claims = claims.to_owned();
        let own_node = own_node.to_owned();
        self.0
            .call(move |conn| replace_name_claims(conn, &home, &claims, &own_node))
            .await
    }

    pub async fn save_nodes(&self, nodes: &[StoredNode]) -> Result<(), StorageError> {
        let nodes = nodes.to_owned();
        self.0.call(move |conn| save_nodes(conn, &nodes)).await
    }

    pub async fn waiting_count(&self) -> Result<i64, StorageError> {
        self.0.call(move |conn| waiting_count(conn)).await
    }

    pub async fn waiting_for(&self, to_user: &str) -> Result<Vec<QueuedMessage>, StorageError> {
        let to_user = to_user.to_owned();
        self.0.call(move |conn| waiting_for(conn, &to_user)).await
    }
}

/// Whether another node revoked this token, and who holds the name mesh-wide, read
/// together (a foreign token's check).
pub fn revocation_and_holder(
    conn: &Connection,
    username: &str,
    jti: &str,
    issued_at: i64,
    own_node: &str,
) -> Result<(bool, Option<String>), StorageError> {
    Ok((
        is_revoked(conn, username, jti, issued_at)?,
        name_holder(conn, username, own_node)?,
    ))
}

impl Mesh<'_> {
    pub async fn revocation_and_holder(
        &self,
        username: &str,
        jti: &str,
        issued_at: i64,
        own_node: &str,
    ) -> Result<(bool, Option<String>), StorageError> {
        let (username, jti, own_node) = (username.to_owned(), jti.to_owned(), own_node.to_owned());
        self.0
            .call(move |conn| revocation_and_holder(conn, &username, &jti, issued_at, &own_node))
            .await
    }
}

impl Mesh<'_> {
    pub async fn add_revocation(
        &self,
        username: &str,
        jti: Option<&str>,
        issued_before: Option<i64>,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        let (username, jti) = (username.to_owned(), jti.map(str::to_owned));
        self.0
            .call(move |conn| {
                add_revocation(conn, &username, jti.as_deref(), issued_before, expires_at)
            })
            .await
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    use crate::storage::test_connection as db;

    fn msg(id: &str, to: &str, seq: u64) -> QueuedMessage {
        QueuedMessage {
            id: id.into(),
            from_user: "ann".into(),
            to_user: to.into(),
            seq,
            body: "\"hi\"".into(),
            sent_at: "2026-11-22T00:00:00Z".into(),
            expires_at: 100,
        }
    }

    fn claim(name: &str, since: i64) -> NameClaim {
        NameClaim {
            name: name.into(),
            since,
        }
    }

    #[test]
    fn the_earliest_claim_holds_a_name_and_blocks_new_accounts() {
        use crate::domain::user::Role;
        use crate::storage::users::{self, NewUser};
        let mut c = db();
        let add = |c: &Connection, name: &str, now: i64| {
            users::insert(
                c,
                &NewUser {
                    username: name,
                    password_hash: "x",
                    telegram_chat_id: None,
                    telegram_chat_confirmed: false,
                    role: Role::User,
                    timezone: "UTC",
                    now,
                },
            )
            .unwrap()
        };
        assert!(add(&c, "bob", 200).is_some());
        assert!(add(&c, "dave", 100).is_some());
        // Node "b" claims bob earlier and dave later; node "a" ties with dave.
        let lost = replace_name_claims(
            &mut c,
            "b",
            &[claim("Bob", 150), claim("dave", 300), claim("erin", 5)],
            "me",
        )
        .unwrap();
        assert_eq!(lost, vec![("bob".to_owned(), "b".to_owned())]);
        assert_eq!(name_holder(&c, "bob", "me").unwrap().as_deref(), Some("b"));
        assert_eq!(
            name_holder(&c, "DAVE", "me").unwrap().as_deref(),
            Some("me")
        );
        assert_eq!(name_holder(&c, "erin", "me").unwrap().as_deref(), Some("b"));
        assert_eq!(name_holder(&c, "frank", "me").unwrap(), None);
        replace_name_claims(&mut c, "a", &[claim("dave", 100)], "me").unwrap();
        assert_eq!(name_holder(&c, "dave", "me").unwrap().as_deref(), Some("a"));
        assert_eq!(name_holder(&c, "dave", "0").unwrap().as_deref(), Some("0"));
        // A name another node holds cannot be registered here, in any spelling.
        assert!(add(&c, "erin", 400).is_none());
        assert!(add(&c, "Erin", 400).is_none());
        assert_eq!(remote_name_count(&c).unwrap(), 3);
        // A node's new list replaces its old one; a forgotten node's claims go.
        let lost = replace_name_claims(&mut c, "b", &[claim("erin", 5)], "me").unwrap();
        assert!(lost.iter().all(|(n, _)| n != "bob"), "{lost:?}");
        assert_eq!(name_holder(&c, "bob", "me").unwrap().as_deref(), Some("me"));
        forget_name_claims(&c, "b").unwrap();
        assert!(add(&c, "erin", 400).is_some());
    }

    #[test]
    fn queue_in_order_with_cap_and_expiry() {
        let mut c = db();
        for (i, id) in ["a:3", "a:1", "a:2"].iter().enumerate() {
            assert_eq!(
                enqueue(&mut c, &msg(id, "bob", i as u64), 3).unwrap(),
                Ok(())
            );
        }
        // Same id again: accepted, no copy. Over the cap: refused.
        assert_eq!(
            enqueue(&mut c, &msg("a:4", "bob", 9), 3).unwrap(),
            Err(QueueRefusal::Full)
        );
        assert_eq!(enqueue(&mut c, &msg("a:5", "cy", 1), 3).unwrap(), Ok(()));
        let ids: Vec<_> = waiting_for(&c, "bob")
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["a:3", "a:1", "a:2"]);
        assert_eq!(remove(&mut c, &["a:1".into(), "nope".into()]).unwrap(), 1);
        let mut r = recipients(&c).unwrap();
        r.sort();
        assert_eq!(r, ["bob", "cy"]);
        assert_eq!(expire(&c, 100).unwrap(), 3);
        assert_eq!(waiting_count(&c).unwrap(), 0);
    }

    #[test]
    fn revocations() {
        let c = db();
        add_revocation(&c, "ann", Some("j1"), None, 100).unwrap();
        add_revocation(&c, "bob", None, Some(50), 100).unwrap();
        assert!(is_revoked(&c, "ann", "j1", 10).unwrap());
        assert!(!is_revoked(&c, "ann", "j2", 10).unwrap());
        assert!(is_revoked(&c, "bob", "any", 50).unwrap());
        assert!(
            !is_revoked(&c, "bob", "any", 51).unwrap(),
            "issued after the change"
        );
        assert_eq!(prune_revocations(&c, 100).unwrap(), 2);
        assert!(!is_revoked(&c, "ann", "j1", 10).unwrap());
    }

    #[test]
    fn nodes_round_trip() {
        let mut c = db();
        let n = StoredNode {
            id: "n1".into(),
            mqtt: "127.0.0.1:1883".into(),
            ws: None,
            http: "http://127.0.0.1:8080".into(),
            users: 2,
            started_at: 5,
            advertised_at: 6,
            last_seen_at: 7,
        };
        save_nodes(&mut c, std::slice::from_ref(&n)).unwrap();
        assert_eq!(load_nodes(&c).unwrap(), [n]);
        save_nodes(&mut c, &[]).unwrap();
        assert!(load_nodes(&c).unwrap().is_empty());
    }
}
