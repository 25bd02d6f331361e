//! Confab's durable state: users, their digest credentials, and the registrations the running
//! server writes behind its in-memory location service.
//!
//! The default backend is SQLite in WAL mode under the data directory (`<data_dir>/confab.db`),
//! created and migrated by [`Store::open`]. Queries are checked at run time (`sqlx::query`), never
//! by compile-time macros, and use only SQL that PostgreSQL accepts as well (`$N` placeholders,
//! `ON CONFLICT`, `RETURNING`), so the same schema can move there.
//!
//! What this crate refuses to do: it never stores a plain password. [`Store::add_user`] and
//! [`Store::set_password`] keep only HA1 digests per realm and algorithm (RFC 7616 §3.4.2, RFC
//! 8760), computed with [`confab_sip::auth::ha1`].
//!
//! Every change to users or credentials bumps a `directory_version` counter
//! ([`Store::directory_version`]), so a server can poll it and reload its user cache only when it
//! changed.

mod calls;
mod error;
mod registrations;
mod users;
mod validate;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use calls::*;
pub use error::StoreError;
pub use registrations::BindingRecord;
pub use users::{CredentialRecord, NewUser, User};
pub use validate::{validate_extension, validate_username};

/// The digest algorithm of a stored credential (re-exported from `confab-sip`).
pub use confab_sip::auth::Algorithm;

/// File name of the SQLite database inside the data directory.
pub const DATABASE_FILE: &str = "confab.db";

/// Migrations embedded at compile time; no database is needed to build.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A handle on Confab's database. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    path: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) the data directory and `confab.db` inside it, in WAL mode, and
    /// applies any pending migrations.
    ///
    /// Several processes may open the same directory at once (the server, and `confab user add`
    /// from the CLI): SQLite's WAL lets readers and one writer proceed together, and writers wait
    /// up to a few seconds for each other.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DATABASE_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL only risks the last transactions on power loss, never corruption.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            path: Some(path),
        })
    }

    /// Opens a private in-memory database with the full schema, for tests.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection that never idles out: every in-memory connection is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, path: None })
    }

    /// Path of the database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Closes the pool, waiting for queries under way. Later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The directory version: a counter bumped by every change to users or credentials.
    ///
    /// Poll it (it is one indexed read) and call [`Store::load_credentials`] again only when it
    /// changed.
    pub async fn directory_version(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'directory_version'")
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(0) };
        let value: String = row.try_get("value")?;
        Ok(value.trim().parse().unwrap_or(0))
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`)
    /// so a read-then-write transaction cannot fail half-way when another process wrote meanwhile.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Bumps the directory version inside a transaction that changed users or credentials.
async fn bump_directory_version(conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) \
         WHERE key = 'directory_version'",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Seconds since the Unix epoch, for `created_at` columns.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
