//! Owns the `users` and `revoked_tokens` tables: accounts and the login-token denylist.
//! Usernames are stored lowercase and compared case-insensitively.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::StorageError;
use crate::domain::user::{Role, Units};

/// The typed operations on accounts and the login-token denylist, each in its own transaction (`db.users()`).
pub struct Users<'a>(pub(in crate::storage) &'a super::Db);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub telegram_chat_id: Option<i64>,
    /// Whether the chat proved it belongs to this account; messages go only to a
    /// confirmed chat.
    pub telegram_chat_confirmed: bool,
    pub role: Role,
    pub timezone: String,
    pub units: Units,
    /// Login tokens carry the generation they were issued in; raising it (password
    /// change) voids every earlier token at once.
    pub token_generation: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Random, fixed for the account's life; login tokens carry it, so a token can only
    /// ever name the account it was issued for.
    pub account_key: String,
}

pub struct NewUser<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
    pub telegram_chat_id: Option<i64>,
    /// Set by an administrator (trusted) rather than typed by the user.
    pub telegram_chat_confirmed: bool,
    pub role: Role,
    pub timezone: &'a str,
    pub now: i64,
}

const COLUMNS: &str = "id, username, password_hash, telegram_chat_id, role, timezone, units, \
                       token_generation, created_at, updated_at, account_key, \
                       telegram_chat_confirmed";

fn from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(4)?;
    let units: String = r.get(6)?;
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        password_hash: r.get(2)?,
        telegram_chat_id: r.get(3)?,
        // The CHECK constraints guarantee these parse.
        role: Role::parse(&role).unwrap_or(Role::User),
        timezone: r.get(5)?,
        units: Units::parse(&units).unwrap_or(Units::Metric),
        token_generation: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        account_key: r.get(10)?,
        telegram_chat_confirmed: r.get(11)?,
    })
}

/// Inserts a user; `Ok(None)` when the username is taken, here or by an account of
/// another mesh node. The id is one past the highest id ever given out (kept by a
/// trigger), never a deleted account's.
pub fn insert(conn: &Connection, u: &NewUser<'_>) -> Result<Option<User>, StorageError> {
    let key = crate::domain::ids::hex(16);
    let inserted = conn.execute(
        "INSERT INTO users (id, username, password_hash, telegram_chat_id, role, timezone,
                            created_at, updated_at, account_key, telegram_chat_confirmed)
         SELECT
            1 + max(
                coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'users.high_water'), 0),
                coalesce((SELECT max(id) FROM users), 0)),
            ?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8
         WHERE NOT EXISTS (SELECT 1 FROM mesh_names WHERE name = ?1)
         ON CONFLICT (username) DO NOTHING",
        params![
            u.username,
            u.password_hash,
            u.telegram_chat_id,
            u.role.as_str(),
            u.timezone,
            u.now,
            key,
            u.telegram_chat_confirmed || u.telegram_chat_id.is_none()
        ],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    by_id(conn, conn.last_insert_rowid())
}

/// Inserts a user as admin when there is no user yet, as `role` otherwise — in one
/// statement, so two concurrent first registrations cannot both become admin.
pub fn insert_first_admin(
    conn: &mut Connection,
    u: &NewUser<'_>,
) -> Result<Option<User>, StorageError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let empty: bool = tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0))?;
    let role = if empty { Role::Admin } else { u.role };
    let user = insert(&tx, &NewUser { role, ..*u })?;
    tx.commit()?;
    Ok(user)
}

pub fn by_id(conn: &Connection, id: i64) -> Result<Option<User>, StorageError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM users WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

pub fn by_username(conn: &Connection, username: &str) -> Result<Option<User>, StorageError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM users WHERE username = ?1"),
            [username],
            from_row,
        )
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<User>, StorageError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM users ORDER BY id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn count(conn: &Connection) -> Result<i64, StorageError> {
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

pub fn count_admins(conn: &Connection) -> Result<i64, StorageError> {
    Ok(
        conn.query_row("SELECT count(*) FROM users WHERE role = 'admin'", [], |r| {
            r.get(0)
        })?,
    )
}

/// Writes the mutable fields of `u` back (not id, username or created_at).
pub fn update(conn: &Connection, u: &User) -> Result<(), StorageError> {
    conn.execute(
        "UPDATE users SET password_hash = ?2, telegram_chat_id = ?3, role = ?4, timezone = ?5,
                units = ?6, token_generation = ?7, updated_at = ?8, telegram_chat_confirmed = ?9
         WHERE id = ?1",
        params![
            u.id,
            u.password_hash,
            u.telegram_chat_id,
            u.role.as_str(),
            u.timezone,
            u.units.as_str(),
            u.token_generation,
            u.updated_at,
            u.telegram_chat_confirmed || u.telegram_chat_id.is_none()
        ],
    )?;
    Ok(())
}

/// Deletes the user; their rows in other tables go with them (foreign keys cascade).
pub fn delete(conn: &Connection, id: i64) -> Result<bool, StorageError> {
    Ok(conn.execute("DELETE FROM users WHERE id = ?1", [id])? > 0)
}

/// What a change guarded by "keep one administrator" did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminGuarded<T> {
    Done(T),
    NotFound,
    /// Refused: it would leave no administrator.
    LastAdmin,
}

/// Deletes an account and everything it owns (foreign keys cascade), unless it is the
/// last administrator; checked and done in one immediate transaction, so two deletions
/// at once cannot remove the last two. Returns the deleted username.
pub fn delete_keeping_an_admin(
    conn: &mut Connection,
    id: i64,
) -> Result<AdminGuarded<String>, StorageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(user) = by_id(&tx, id)? else {
        return Ok(AdminGuarded::NotFound);
    };
    if user.role == Role::Admin && count_admins(&tx)? <= 1 {
        return Ok(AdminGuarded::LastAdmin);
    }
    delete(&tx, id)?;
    tx.commit()?;
    Ok(AdminGuarded::Done(user.username))
}

/// Sets an account's role, unless that demotes the last administrator (one immediate
/// transaction, as above). `now` is Unix seconds.
pub fn set_role_keeping_an_admin(
    conn: &mut Connection,
    id: i64,
    role: Role,
    now: i64,
) -> Result<AdminGuarded<User>, StorageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(mut user) = by_id(&tx, id)? else {
        return Ok(AdminGuarded::NotFound);
    };
    if user.role == Role::Admin && role != Role::Admin && count_admins(&tx)? <= 1 {
        return Ok(AdminGuarded::LastAdmin);
    }
    user.role = role;
    user.updated_at = now;
    update(&tx, &user)?;
    tx.commit()?;
    Ok(AdminGuarded::Done(user))
}

pub fn revoke_token(
    conn: &Connection,
    jti: &str,
    user_id: i64,
    expires_at: i64,
) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (jti) DO NOTHING",
        params![jti, user_id, expires_at],
    )?;
    Ok(())
}

pub fn is_token_revoked(conn: &Connection, jti: &str) -> Result<bool, StorageError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?1)",
        [jti],
        |r| r.get(0),
    )?)
}

/// Drops denylist entries of tokens that have expired anyway; returns how many.
pub fn prune_revoked_tokens(conn: &Connection, now: i64) -> Result<usize, StorageError> {
    Ok(conn.execute("DELETE FROM revoked_tokens WHERE expires_at < ?1", [now])?)
}

impl Users<'_> {
    pub async fn by_id(&self, id: i64) -> Result<Option<User>, StorageError> {
        self.0.call(move |conn| by_id(conn, id)).await
    }

    pub async fn by_username(&self, username: &str) -> Result<Option<User>, StorageError> {
        let username = username.to_owned();
        self.0.call(move |conn| by_username(conn, &username)).await
    }

    pub async fn count(&self) -> Result<i64, StorageError> {
        self.0.call(move |conn| count(conn)).await
    }

    pub async fn delete_keeping_an_admin(
        &self,
        id: i64,
    ) -> Result<AdminGuarded<String>, StorageError> {
        self.0
            .call(move |conn| delete_keeping_an_admin(conn, id))
            .await
    }

    pub async fn list(&self) -> Result<Vec<User>, StorageError> {
        self.0.call(move |conn| list(conn)).await
    }

    pub async fn prune_revoked_tokens(&self, now: i64) -> Result<usize, StorageError> {
        self.0
            .call(move |conn| prune_revoked_tokens(conn, now))
            .await
    }

    pub async fn revoke_token(
        &self,
        jti: &str,
        user_id: i64,
        expires_at: i64,
    ) -> Result<(), StorageError> {
        let jti = jti.to_owned();
        self.0
            .call(move |conn| revoke_token(conn, &jti, user_id, expires_at))
            .await
    }

    pub async fn set_role_keeping_an_admin(
        &self,
        id: i64,
        role: Role,
        now: i64,
    ) -> Result<AdminGuarded<User>, StorageError> {
        self.0
            .call(move |conn| set_role_keeping_an_admin(conn, id, role, now))
            .await
    }

    pub async fn update(&self, u: &User) -> Result<(), StorageError> {
        let u = u.to_owned();
        self.0.call(move |conn| update(conn, &u)).await
    }
}

/// What a live session's check needs, read together: the account, whether the token
/// was revoked (`jti`, when the session logged in with one), and who holds the name
/// mesh-wide.
pub fn session_check(
    conn: &Connection,
    user_id: i64,
    jti: Option<&str>,
    username: &str,
    own_node: &str,
) -> Result<(Option<User>, bool, Option<String>), StorageError> {
    let revoked = match jti {
        Some(jti) => is_token_revoked(conn, jti)?,
        None => false,
    };
    let holder = super::mesh::name_holder(conn, username, own_node)?;
    Ok((by_id(conn, user_id)?, revoked, holder))
}

impl Users<'_> {
    /// Whether the token `jti` is revoked, and its account, read together.
    pub async fn token_check(
        &self,
        jti: &str,
        user_id: i64,
    ) -> Result<(bool, Option<User>), StorageError> {
        let jti = jti.to_owned();
        self.0
            .call(move |conn| Ok((is_token_revoked(conn, &jti)?, by_id(conn, user_id)?)))
            .await
    }

    pub async fn session_check(
        &self,
        user_id: i64,
        jti: Option<&str>,
        username: &str,
        own_node: &str,
    ) -> Result<(Option<User>, bool, Option<String>), StorageError> {
        let (jti, username, own_node) = (
            jti.map(str::to_owned),
            username.to_owned(),
            own_node.to_owned(),
        );
        self.0
            .call(move |conn| session_check(conn, user_id, jti.as_deref(), &username, &own_node))
            .await
    }

    /// Inserts an account (the first one becomes the administrator, see
    /// [`insert_first_admin`]).
    pub async fn insert_first_admin(&self, u: &NewUser<'_>) -> Result<Option<User>, StorageError> {
        let (username, hash, timezone) = (
            u.username.to_owned(),
            u.password_hash.to_owned(),
            u.timezone.to_owned(),
        );
        let (chat, confirmed, role, now) =
            (u.telegram_chat_id, u.telegram_chat_confirmed, u.role, u.now);
        self.0
            .call(move |conn| {
                insert_first_admin(
                    conn,
                    &NewUser {
                        username: &username,
                        password_hash: &hash,
                        telegram_chat_id: chat,
                        telegram_chat_confirmed: confirmed,
                        role,
                        timezone: &timezone,
                        now,
                    },
                )
            })
            .await
    }
}
