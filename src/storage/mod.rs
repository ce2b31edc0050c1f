//! Owns the one SQLite database: opening it with the pragmas every caller relies on
//! (WAL, busy timeout, foreign keys, `synchronous=NORMAL`), running the numbered
//! migrations, and running every statement off the async executor.
//!
//! Other modules reach it only through typed repositories, one per aggregate file
//! (`db.users()`, `db.notify()`, ...), each method its own transaction; the raw
//! connection (`Db::call`) is private to this module. It publishes and consumes nothing
//! on the bus.

pub mod boards;
pub mod mesh;
mod meta;
mod migrations;
pub mod notify;
pub mod sla;
pub mod subscriptions;
pub mod telegram_link;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use meta::{
    Meta, jwt_secret, last_seen, node_id, record_seen, set_telegram_offset, telegram_offset,
};
pub use migrations::{LATEST_VERSION, schema_version};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error(
        "the database {path} has schema version {found}, newer than this binary knows \
         ({known}); it was written by a newer meteomesh. Run that version, or restore a \
         backup made for this one"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("cannot create the database folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backup target {0} already exists; choose a new file name")]
    BackupExists(PathBuf),
    #[error("database task failed: {0}")]
    Task(String),
    /// The disk (or `storage.max_size`) is full: writes fail, reads still work.
    #[error(
        "the database is full: the disk or storage.max_size has no room left; free space \
         or raise storage.max_size, nothing was written"
    )]
    Full,
    #[error(
        "the database {path} is damaged or not a meteomesh database ({detail}). It was \
         left untouched: restore a backup (`meteomesh backup` makes them), or move the file \
         away to start with an empty database"
    )]
    Damaged { path: PathBuf, detail: String },
}

impl StorageError {
    /// Sorts SQLite's answers that callers act on (a full disk) out of the generic one.
    fn classify(self) -> StorageError {
        match &self {
            StorageError::Sqlite(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) =>
            {
                StorageError::Full
            }
            _ => self,
        }
    }

    /// Whether the database or its file is damaged (as opposed to busy, full, …).
    fn is_damage(e: &rusqlite::Error) -> bool {
        matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
        )
    }
}

/// The settings of the app's connection (see [`Db::connection_settings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub journal_mode: String,
    pub foreign_keys: bool,
    /// 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
    pub synchronous: i64,
}

/// A handle to the database. Cloning is cheap; all clones share one connection, which
/// is what a single small device wants (SQLite serialises writers anyway).
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
    observer: Option<Observer>,
}

/// Told the duration and success of every database operation (for metrics).
pub type Observer = Arc<dyn Fn(Duration, bool) + Send + Sync>;

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens (creating file and folder) and migrates, on a blocking thread.
    pub async fn open(path: &Path, busy_timeout: Duration) -> Result<Db, StorageError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Db::open_blocking(&path, busy_timeout))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))?
    }

    pub fn open_blocking(path: &Path, busy_timeout: Duration) -> Result<Db, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let damaged = |e: rusqlite::Error| {
            if StorageError::is_damage(&e) {
                StorageError::Damaged {
                    path: path.to_owned(),
                    detail: e.to_string(),
                }
            } else {
                StorageError::Sqlite(e)
            }
        };
        let mut conn = Connection::open(path).map_err(damaged)?;
        configure(&conn, busy_timeout).map_err(|e| match e {
            StorageError::Sqlite(e) => damaged(e),
            other => other,
        })?;
        check_integrity(&conn, path).map_err(|e| match e {
            StorageError::Sqlite(e) => damaged(e),
            other => other,
        })?;
        migrations::migrate(&mut conn, path)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_owned()),
            observer: None,
        })
    }

    /// Opens with everything `[storage]` says: path, busy timeout, size cap.
    pub async fn open_config(cfg: &crate::config::StorageConfig) -> Result<Db, StorageError> {
        let db = Db::open(&cfg.path, cfg.busy_timeout).await?;
        if let Some(max) = cfg.max_size {
            db.set_max_size(max).await?;
        }
        Ok(db)
    }

    /// Caps the database file at about `bytes` (SQLite's `max_page_count`): past it,
    /// writes fail with [`StorageError::Full`] as on a full disk. Never below the
    /// current size, which SQLite keeps as the floor.
    pub async fn set_max_size(&self, bytes: u64) -> Result<(), StorageError> {
        self.call(move |c| {
            let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = bytes.div_ceil(page.max(512) as u64);
            c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// This handle (and its clones) report every call to `observer`.
    pub fn observed(self, observer: Observer) -> Db {
        Db {
            observer: Some(observer),
            ..self
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on tokio's blocking pool. Only storage's own typed
    /// methods call it: nothing outside `storage/` ever holds the connection.
    pub(in crate::storage) async fn call<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock poisons it; the connection itself is still
            // consistent (SQLite rolls back), so keep serving.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StorageError::Task(e.to_string()))
        .and_then(|r| r)
        .map_err(StorageError::classify);
        if let Some(observe) = &self.observer {
            observe(started.elapsed(), result.is_ok());
        }
        result
    }

    pub fn users(&self) -> users::Users<'_> {
        users::Users(self)
    }

    pub fn subscriptions(&self) -> subscriptions::Subscriptions<'_> {
        subscriptions::Subscriptions(self)
    }

    pub fn mesh(&self) -> mesh::Mesh<'_> {
        mesh::Mesh(self)
    }

    pub fn boards(&self) -> boards::Boards<'_> {
        boards::Boards(self)
    }

    pub fn sla(&self) -> sla::Slas<'_> {
        sla::Slas(self)
    }

    pub fn meta(&self) -> meta::Meta<'_> {
        meta::Meta(self)
    }

    pub fn notify(&self) -> notify::Notify<'_> {
        notify::Notify(self)
    }

    pub fn telegram_link(&self) -> telegram_link::TelegramLink<'_> {
        telegram_link::TelegramLink(self)
    }

    /// What this connection runs with: journal mode, foreign keys, synchronous level
    /// (checks and diagnostics; a second connection would not show its settings).
    pub async fn connection_settings(&self) -> Result<ConnectionSettings, StorageError> {
        self.call(|c| {
            Ok(ConnectionSettings {
                journal_mode: c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                foreign_keys: c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?,
                synchronous: c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
            })
        })
        .await
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map(|_| ())
    }

    /// Folds the WAL back into the main file so a copied or power-cut database is
    /// complete on its own. Called on shutdown.
    pub async fn checkpoint(&self) -> Result<(), StorageError> {
        self.call(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

fn configure(conn: &Connection, busy_timeout: Duration) -> Result<(), StorageError> {
    conn.busy_timeout(busy_timeout)?;
    // journal_mode returns a row, so it cannot go through execute_batch.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "SQLite refused WAL mode; continuing with {mode}");
    }
    // Sized for a 512 MB device on an SD card: a 2 MiB page cache, and the WAL file cut
    // back to 4 MiB after each checkpoint instead of staying at its high-water mark.
    // synchronous=NORMAL in WAL mode syncs at checkpoints, not at every commit: a power
    // cut may lose the last commits but never corrupts the database.
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -2048; PRAGMA journal_size_limit = 4194304;",
    )?;
    Ok(())
}

/// `PRAGMA quick_check`: a power cut in WAL mode loses at most the last commits, but a
/// failing SD card or a copied half-written file does not; find out at start, not at the
/// first query that touches the bad page. It reads the whole file once: 10 ms for 9 MB
/// from the page cache here; a cold SD card reads at ~20 MB/s.
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StorageError> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(StorageError::Damaged {
        path: path.to_owned(),
        detail: problems.join("; "),
    })
}

/// Writes a consistent copy of the database at `source` into `target` while a server
/// may be using it (`VACUUM INTO` reads one snapshot). Refuses to overwrite.
pub fn backup(source: &Path, target: &Path, busy_timeout: Duration) -> Result<(), StorageError> {
    if target.exists() {
        return Err(StorageError::BackupExists(target.to_owned()));
    }
    let conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    migrations::refuse_if_too_new(&conn, source)?;
    let target = target
        .to_str()
        .ok_or_else(|| StorageError::Task("backup path is not valid UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    Ok(())
}

/// A migrated database in a temporary directory, for storage unit tests.
#[cfg(test)]
pub(crate) fn test_connection() -> rusqlite::Connection {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("test.db");
    let mut conn = rusqlite::Connection::open(&path).expect("open");
    migrations::migrate(&mut conn, &path).expect("migrate");
    // Keep the directory for the life of the test process (a test's database is small).
    std::mem::forget(dir);
    conn
}
