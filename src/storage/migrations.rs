//! Owns the numbered schema migrations. Each entry is one schema version; never edit a
//! released entry, append a new one. The version lives in SQLite's `user_version`.

use std::path::Path;

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use super::StorageError;

const MIGRATIONS: &[M<'static>] = &[
    // 1: key/value facts about this installation (node id, generated secrets).
    M::up(
        "CREATE TABLE meta (
            key   TEXT PRIMARY KEY NOT NULL,
            value TEXT NOT NULL
        ) STRICT;",
    ),
    // 2: accounts and revoked login tokens.
    M::up(
        "CREATE TABLE users (
            id                  INTEGER PRIMARY KEY,
            username            TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash       TEXT NOT NULL,
            telegram_chat_id    INTEGER,
            role                TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
            timezone            TEXT NOT NULL,
            units               TEXT NOT NULL DEFAULT 'metric' CHECK (units IN ('metric', 'imperial')),
            token_generation    INTEGER NOT NULL DEFAULT 0,
            created_at          INTEGER NOT NULL,
            updated_at          INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE revoked_tokens (
            jti         TEXT PRIMARY KEY NOT NULL,
            user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            expires_at  INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens(expires_at);",
    ),
    // 3: weather subscriptions, their per-constraint alert state, the latest conditions
    // per place, the geocoding cache.
    M::up(
        "CREATE TABLE subscriptions (
            id               INTEGER PRIMARY KEY,
            user_id          INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            label            TEXT NOT NULL,
            place_name       TEXT NOT NULL,
            latitude         REAL NOT NULL,
            longitude        REAL NOT NULL,
            cell_lat         INTEGER NOT NULL,
            cell_lon         INTEGER NOT NULL,
            timezone         TEXT NOT NULL,
            min_temp_c       REAL,
            max_temp_c       REAL,
            rain             INTEGER NOT NULL,
            snow             INTEGER NOT NULL,
            notify_on_clear  INTEGER NOT NULL DEFAULT 1,
            for_observations INTEGER NOT NULL DEFAULT 1,
            enabled          INTEGER NOT NULL DEFAULT 1,
            created_at       INTEGER NOT NULL,
            updated_at       INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX subscriptions_by_user ON subscriptions(user_id);
        CREATE INDEX subscriptions_by_cell ON subscriptions(cell_lat, cell_lon) WHERE enabled = 1;
        CREATE TABLE alert_state (
            subscription_id INTEGER NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
            kind            TEXT NOT NULL CHECK (kind IN ('too_cold', 'too_hot', 'rain', 'snow')),
            violated        INTEGER NOT NULL,
            since           INTEGER,
            streak          INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (subscription_id, kind)
        ) STRICT;
        CREATE TABLE observations (
            cell_lat     INTEGER NOT NULL,
            cell_lon     INTEGER NOT NULL,
            conditions   TEXT NOT NULL,
            received_at  INTEGER NOT NULL,
            PRIMARY KEY (cell_lat, cell_lon)
        ) STRICT;
        CREATE TABLE geocoding_cache (
            query       TEXT NOT NULL,
            count       INTEGER NOT NULL,
            results     TEXT NOT NULL,
            fetched_at  INTEGER NOT NULL,
            PRIMARY KEY (query, count)
        ) STRICT;",
    ),
    // 4: notifications: the rules' alert journal (written with the state change, so an
    // alert cannot vanish between the rules and the notifier), the delivery outbox,
    // per-user delivery preferences, Telegram link codes.
    M::up(
        "CREATE TABLE alert_log (
            key          TEXT PRIMARY KEY NOT NULL,
            user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            event        TEXT NOT NULL,
            handled      INTEGER NOT NULL DEFAULT 0,
            created_at   INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX alert_log_unhandled ON alert_log(created_at) WHERE handled = 0;
        CREATE INDEX alert_log_by_time ON alert_log(created_at);
        CREATE TABLE outbox (
            id           INTEGER PRIMARY KEY,
            key          TEXT NOT NULL UNIQUE,
            channel      TEXT NOT NULL CHECK (channel IN ('telegram')),
            kind         TEXT NOT NULL CHECK (kind IN ('alert', 'notice')),
            user_id      INTEGER REFERENCES users(id) ON DELETE CASCADE,
            chat_id      INTEGER,
            payload      TEXT NOT NULL,
            batched      INTEGER NOT NULL DEFAULT 0,
            status       TEXT NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'delivered', 'failed')),
            not_before   INTEGER NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 0,
            last_error   TEXT,
            created_at   INTEGER NOT NULL,
            finished_at  INTEGER
        ) STRICT;
        CREATE INDEX outbox_pending ON outbox(not_before) WHERE status = 'pending';
        CREATE INDEX outbox_finished ON outbox(finished_at) WHERE status <> 'pending';
        CREATE TABLE notify_prefs (
            user_id         INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            mode            TEXT NOT NULL DEFAULT 'immediate' CHECK (mode IN ('immediate', 'digest')),
            digest_minutes  INTEGER NOT NULL DEFAULT 15,
            quiet_start     INTEGER,
            quiet_end       INTEGER,
            broken_chat_id  INTEGER,
            broken_reason   TEXT,
            broken_at       INTEGER
        ) STRICT;
        CREATE TABLE telegram_link_codes (
            code        TEXT PRIMARY KEY NOT NULL,
            user_id     INTEGER NOT NULL UNIQUE REFERENCES users(id) ON DELETE CASCADE,
            expires_at  INTEGER NOT NULL
        ) STRICT;",
    ),
    // 5: service-level objectives, their violations, and the embedded metric history
    // (series names stored once; samples keyed by series id and Unix seconds).
    M::up(
        "CREATE TABLE slas (
            name             TEXT PRIMARY KEY NOT NULL,
            selector         TEXT NOT NULL,
            desired_min      REAL,
            desired_max      REAL,
            for_seconds      INTEGER NOT NULL DEFAULT 0,
            arima_order      TEXT,
            out_since        INTEGER,
            violated_since   INTEGER,
            last_value       REAL,
            last_sampled_at  INTEGER,
            created_at       INTEGER NOT NULL,
            updated_at       INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE sla_violations (
            id     INTEGER PRIMARY KEY,
            sla    TEXT NOT NULL REFERENCES slas(name) ON DELETE CASCADE,
            value  REAL NOT NULL,
            at     INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX sla_violations_by_time ON sla_violations(sla, at);
        CREATE TABLE metric_series (
            id    INTEGER PRIMARY KEY,
            name  TEXT NOT NULL UNIQUE
        ) STRICT;
        CREATE TABLE metric_samples (
            series  INTEGER NOT NULL REFERENCES metric_series(id) ON DELETE CASCADE,
            at      INTEGER NOT NULL,
            value   REAL NOT NULL,
            PRIMARY KEY (series, at)
        ) STRICT, WITHOUT ROWID;",
    ),
    // 6: the mesh: the node directory as this node knows it, and messages queued for
    // recipients who have not acknowledged them yet (kept in send order per recipient).
    M::up(
        "CREATE TABLE mesh_nodes (
            id              TEXT PRIMARY KEY NOT NULL,
            mqtt            TEXT NOT NULL,
            ws              TEXT,
            http            TEXT NOT NULL,
            users           INTEGER NOT NULL DEFAULT 0,
            started_at      INTEGER NOT NULL,
            advertised_at   INTEGER NOT NULL,
            last_seen_at    INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE mesh_outbox (
            row         INTEGER PRIMARY KEY,
            id          TEXT NOT NULL UNIQUE,
            from_user   TEXT NOT NULL,
            to_user     TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            body        TEXT NOT NULL,
            sent_at     TEXT NOT NULL,
            expires_at  INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX mesh_outbox_by_recipient ON mesh_outbox(to_user, row);
        CREATE INDEX mesh_outbox_by_expiry ON mesh_outbox(expires_at);",
    ),
    // 7: login tokens of users of other nodes that their home node revoked (one token,
    // or every token issued up to a time), kept until such tokens expire anyway.
    M::up(
        "CREATE TABLE mesh_revocations (
            username        TEXT NOT NULL,
            jti             TEXT,
            issued_before   INTEGER,
            expires_at      INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX mesh_revocations_by_user ON mesh_revocations(username);",
    ),
    // 8: shared whiteboards: each board's epoch (raised by every clear) and the points
    // drawn since, in arrival order.
    M::up(
        "CREATE TABLE boards (
            name    TEXT PRIMARY KEY NOT NULL,
            epoch   INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE board_points (
            row         INTEGER PRIMARY KEY,
            board       TEXT NOT NULL,
            username    TEXT NOT NULL,
            stroke      INTEGER NOT NULL,
            seq         INTEGER NOT NULL,
            kind        TEXT NOT NULL CHECK (kind IN ('start', 'drag', 'end')),
            x           REAL NOT NULL,
            y           REAL NOT NULL,
            color       TEXT NOT NULL,
            UNIQUE (board, username, stroke, seq)
        ) STRICT;
        CREATE INDEX board_points_by_board ON board_points(board, row);",
    ),
    // 9: account identities are never reused. Each account gets a random key that its
    // login tokens carry (a token names the exact account, not only its id), and the
    // highest id ever given out is kept, so a deleted account's id is never handed to
    // the next one (SQLite reuses the largest rowid after it is deleted).
    M::up(
        "ALTER TABLE users ADD COLUMN account_key TEXT NOT NULL DEFAULT '';
        UPDATE users SET account_key = lower(hex(randomblob(16)));
        INSERT INTO meta (key, value)
            SELECT 'users.high_water', CAST(coalesce(max(id), 0) AS TEXT) FROM users
            WHERE true
            ON CONFLICT (key) DO UPDATE SET value = excluded.value;
        CREATE TRIGGER users_high_water AFTER INSERT ON users
        BEGIN
            INSERT INTO meta (key, value) VALUES ('users.high_water', CAST(NEW.id AS TEXT))
            ON CONFLICT (key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), NEW.id) AS TEXT);
        END;",
    ),
    // 10: a Telegram chat receives messages only once it proved it belongs to the account
    // (the bot link flow, a code sent to it and typed back, or set by an administrator).
    // Chats set before this version keep working: they count as confirmed.
    M::up(
        "ALTER TABLE users ADD COLUMN telegram_chat_confirmed INTEGER NOT NULL DEFAULT 1;
        CREATE TABLE telegram_confirmations (
            user_id     INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            chat_id     INTEGER NOT NULL,
            code        TEXT NOT NULL,
            expires_at  INTEGER NOT NULL,
            attempts    INTEGER NOT NULL DEFAULT 0,
            sent_at     INTEGER NOT NULL
        ) STRICT;",
    ),
    // 11: one name, one person across the mesh. Every node tells the others which
    // usernames its accounts hold and since when; the earliest claim (then the lowest node
    // id) holds a name everywhere. Claims of other nodes live here; this node's are its
    // `users` rows.
    M::up(
        "CREATE TABLE mesh_names (
            name        TEXT NOT NULL COLLATE NOCASE,
            home        TEXT NOT NULL,
            claimed_at  INTEGER NOT NULL,
            PRIMARY KEY (name, home)
        ) STRICT;",
    ),
    // 12: an `ice` constraint (freezing drizzle, freezing rain, sleet). SQLite cannot
    // change a CHECK, so alert_state is copied into a table that accepts the new kind.
    M::up(
        "ALTER TABLE subscriptions ADD COLUMN ice INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE alert_state_v12 (
            subscription_id INTEGER NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
            kind            TEXT NOT NULL
                            CHECK (kind IN ('too_cold', 'too_hot', 'rain', 'snow', 'ice')),
            violated        INTEGER NOT NULL,
            since           INTEGER,
            streak          INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (subscription_id, kind)
        ) STRICT;
        INSERT INTO alert_state_v12 SELECT subscription_id, kind, violated, since, streak
            FROM alert_state;
        DROP TABLE alert_state;
        ALTER TABLE alert_state_v12 RENAME TO alert_state;",
    ),
    // 13: `no_data` — a subscription's place has had no fresh reading for a while; the
    // user is told once, and again when data returns. The same copy as in 12.
    M::up(
        "CREATE TABLE alert_state_v13 (
            subscription_id INTEGER NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
            kind            TEXT NOT NULL CHECK (kind IN
                                ('too_cold', 'too_hot', 'rain', 'snow', 'ice', 'no_data')),
            violated        INTEGER NOT NULL,
            since           INTEGER,
            streak          INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (subscription_id, kind)
        ) STRICT;
        INSERT INTO alert_state_v13 SELECT subscription_id, kind, violated, since, streak
            FROM alert_state;
        DROP TABLE alert_state;
        ALTER TABLE alert_state_v13 RENAME TO alert_state;",
    ),
    // 14: reminders while a constraint holds (0 = never), and when the last one went.
    M::up(
        "ALTER TABLE subscriptions ADD COLUMN remind_hours INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE alert_state ADD COLUMN reminded_at INTEGER;",
    ),
];

/// The schema version this binary writes.
pub const LATEST_VERSION: usize = MIGRATIONS.len();

pub fn schema_version(conn: &Connection) -> Result<usize, StorageError> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(usize::try_from(v).unwrap_or(usize::MAX))
}

pub fn refuse_if_too_new(conn: &Connection, path: &Path) -> Result<(), StorageError> {
    let found = schema_version(conn)?;
    if found > LATEST_VERSION {
        return Err(StorageError::TooNew {
            path: path.to_owned(),
            found,
            known: LATEST_VERSION,
        });
    }
    Ok(())
}

/// Brings the schema to [`LATEST_VERSION`], all pending steps in one transaction, so a
/// power cut mid-migration leaves the previous version intact.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StorageError> {
    refuse_if_too_new(conn, path)?;
    let from = schema_version(conn)?;
    Migrations::from_slice(MIGRATIONS).to_latest(conn)?;
    if from != LATEST_VERSION {
        tracing::info!(from, to = LATEST_VERSION, "database schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
    }

    /// The schema runs on the SQLite .cargo/config.toml trims; if that file stops applying
    /// (moved, renamed variable), the binary silently grows by the extensions again.
    #[test]
    fn sqlite_is_built_without_the_unused_extensions() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        for unused in [
            "ENABLE_FTS3",
            "ENABLE_FTS5",
            "ENABLE_RTREE",
            "ENABLE_DBSTAT_VTAB",
        ] {
            assert!(
                !options.iter().any(|o| o == unused),
                "{unused} in {options:?}"
            );
        }
        assert!(
            options.iter().any(|o| o == "OMIT_LOAD_EXTENSION"),
            "{options:?}"
        );
    }
}
