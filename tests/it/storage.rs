//! Storage: migrations on empty and migrated databases, refusal of a newer schema,
//! backups while serving, and a clean database after SIGTERM.

use crate::common;

use std::time::Duration;

use common::*;
use meteomesh::storage::{self, Db, LATEST_VERSION, StorageError};
use rusqlite::Connection;

fn pragma(conn: &Connection, name: &str) -> String {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| {
        r.get::<_, rusqlite::types::Value>(0)
    })
    .map(|v| match v {
        rusqlite::types::Value::Integer(i) => i.to_string(),
        rusqlite::types::Value::Text(t) => t,
        other => format!("{other:?}"),
    })
    .unwrap()
}

#[tokio::test]
async fn migrates_empty_then_reopens_migrated_database() {
    let dir = tempfile::tempdir().unwrap();
    // The folder does not exist yet: it is created.
    let path = dir.path().join("nested").join("state").join("m.db");
    let db = Db::open(&path, Duration::from_secs(1)).await.unwrap();
    let (version, node) = with_connection(db.path(), |c| {
        Ok((storage::schema_version(c)?, storage::node_id(c)?))
    })
    .unwrap();
    assert_eq!(version, LATEST_VERSION);
    let settings = db.connection_settings().await.unwrap();
    assert_eq!(settings.journal_mode, "wal");
    assert!(settings.foreign_keys);
    assert_eq!(settings.synchronous, 1, "synchronous=NORMAL");
    drop(db);

    // Already migrated: opens without change and keeps its data.
    let db = Db::open(&path, Duration::from_secs(1)).await.unwrap();
    let (version2, node2) = with_connection(db.path(), |c| {
        Ok((storage::schema_version(c)?, storage::node_id(c)?))
    })
    .unwrap();
    assert_eq!(version2, LATEST_VERSION);
    assert_eq!(node2, node, "node id is stable across restarts");
}

#[tokio::test]
async fn refuses_a_database_newer_than_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE future (x); PRAGMA user_version = {};",
            LATEST_VERSION + 1
        ))
        .unwrap();
    }
    let err = Db::open(&path, Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(err, StorageError::TooNew { found, known, .. } if found == LATEST_VERSION + 1 && known == LATEST_VERSION),
        "{err}"
    );
    // Untouched: the refusal changed nothing.
    let c = Connection::open(&path).unwrap();
    assert_eq!(pragma(&c, "user_version"), (LATEST_VERSION + 1).to_string());

    // The binary says so and exits non-zero, without serving.
    let out = bin()
        .args([
            "--database",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("METEOMESH__BUS__TCP_LISTEN", "127.0.0.1:0")
        .env("METEOMESH__BUS__WS_LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65), "EX_DATAERR");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("newer than this binary"), "{stderr}");
}

/// `meteomesh backup` while the server runs gives a complete, consistent copy; it
/// refuses to overwrite an existing file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving() {
    let t = TestApp::start().await;
    let target = t.dir.path().join("backup.db");
    let db = t.db_path();
    let run_backup = {
        let (db, target) = (db.clone(), target.clone());
        move || {
            bin()
                .args(["--database", db.to_str().unwrap(), "backup"])
                .arg(&target)
                .output()
                .unwrap()
        }
    };
    let out = tokio::task::spawn_blocking(run_backup.clone())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server keeps serving during and after the backup.
    assert_eq!(get(t.http, "/readyz").await.status, 200);

    let copy = Connection::open(&target).unwrap();
    assert_eq!(pragma(&copy, "integrity_check"), "ok");
    assert_eq!(pragma(&copy, "user_version"), LATEST_VERSION.to_string());
    let node: String = copy
        .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(node, t.app.node_id);

    let again = tokio::task::spawn_blocking(run_backup).await.unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    t.app.shutdown().await.unwrap();
}

#[test]
fn sigterm_exits_zero_with_a_clean_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_test_config(dir.path(), "");
    let p = ServeProcess::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    // The healthcheck subcommand sees the running service.
    let hc = bin()
        .args(["healthcheck", "--listen", &p.http.to_string()])
        .output()
        .unwrap();
    assert!(
        hc.status.success(),
        "{}",
        String::from_utf8_lossy(&hc.stderr)
    );

    let http = p.http;
    let (status, log) = p.terminate();
    assert!(status.success(), "exit {status:?}; log: {log:?}");
    assert!(log.iter().any(|l| l.contains("stopped cleanly")), "{log:?}");

    let db = test_db_path(dir.path());
    let c = Connection::open(&db).unwrap();
    assert_eq!(pragma(&c, "integrity_check"), "ok");
    // The WAL was checkpointed into the main file on the way out.
    let wal = dir.path().join("data").join("meteomesh.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);

    // And with the service gone, healthcheck fails.
    let hc = bin()
        .args([
            "healthcheck",
            "--timeout",
            "1",
            "--listen",
            &http.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(hc.status.code(), Some(1));
}

#[test]
fn sigint_takes_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_test_config(dir.path(), "");
    let mut p = ServeProcess::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let pid = p.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_child(&mut p.child);
    assert!(status.success(), "{status:?}");
    let log = p.rest_of_log();
    assert!(log.iter().any(|l| l.contains("SIGINT received")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("stopped cleanly")), "{log:?}");
}

#[tokio::test]
async fn revoked_token_list_is_pruned_after_expiry() {
    use meteomesh::domain::user::Role;
    use meteomesh::storage::users::{self, NewUser};
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("p.db"), Duration::from_secs(1))
        .await
        .unwrap();
    let remaining = with_connection(db.path(), |c| {
        let user = users::insert(
            c,
            &NewUser {
                username: "alice",
                password_hash: "x",
                telegram_chat_id: None,
                telegram_chat_confirmed: false,
                role: Role::User,
                timezone: "UTC",
                now: 1_000,
            },
        )?
        .unwrap();
        users::revoke_token(c, "old", user.id, 1_500)?;
        users::revoke_token(c, "new", user.id, 3_000)?;
        // Revoking twice is harmless.
        users::revoke_token(c, "new", user.id, 3_000)?;
        let pruned = users::prune_revoked_tokens(c, 2_000)?;
        assert_eq!(pruned, 1);
        Ok((
            users::is_token_revoked(c, "old")?,
            users::is_token_revoked(c, "new")?,
        ))
    })
    .unwrap();
    assert_eq!(remaining, (false, true));
}
