//! The database a service owns: SQLite by default, PostgreSQL in production, both
//! through sqlx's `Any` driver so one set of queries (with `$1` placeholders) runs
//! on either.
//!
//! SQLite gets WAL (readers never block the writer), a busy timeout (writers queue
//! instead of failing) and foreign keys; its file's folder is created on demand.
//! Writes go through [`Database::begin_write`] or [`Database::writer`]: on a
//! SQLite file that is a pool of one connection, so writers queue in the pool
//! (one wake-up when their turn comes) instead of sleeping in SQLite's busy
//! handler, and reads keep the other connections. Each write transaction is
//! counted (`agora_db_write_transactions_total` on every service's metrics).
//! Connections are not pinged on acquire (a dead one fails its query, which
//! [`is_transient`] reports as UNAVAILABLE, and the pool drops it).
//!
//! A service opens its database in one call, [`DatabaseArgs::open`]: the URL
//! and pool size from its flags, its [`Migrations`] applied before it serves.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Executor};

/// Which database engine a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (or memory).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A service's migrations, one folder per dialect
/// (`migrations/<service>/{sqlite,postgres}`), embedded at build time:
///
/// ```text
/// pub static MIGRATIONS: Migrations = Migrations {
///     sqlite: sqlx::migrate!("../../migrations/user/sqlite"),
///     postgres: sqlx::migrate!("../../migrations/user/postgres"),
/// };
/// ```
#[derive(Debug)]
pub struct Migrations {
    /// Applied to SQLite databases.
    pub sqlite: Migrator,
    /// Applied to PostgreSQL databases.
    pub postgres: Migrator,
}

/// Where a service keeps its data: the flags every service shares.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DatabaseArgs {
    /// The service's database: `sqlite://path?mode=rwc` (embedded; the
    /// default is `sqlite://data/<service>.db?mode=rwc`) or
    /// `postgres://user@host/db`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Most database connections held open.
    #[arg(long, env = "AGORA_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Apply the database migrations, then exit (for a deployment's
    /// migration job).
    #[arg(long)]
    pub migrate_only: bool,
}

impl DatabaseArgs {
    /// The configured URL, or the service's SQLite file under `./data`.
    pub fn url(&self, service: &str) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://data/{service}.db?mode=rwc"))
    }

    /// Connects to `service`'s database and applies its pending migrations.
    pub async fn open(&self, service: &str, migrations: &Migrations) -> anyhow::Result<Database> {
        let settings = PoolSettings {
            max_connections: self.db_max_connections,
            ..PoolSettings::default()
        };
        Database::open(&self.url(service), &settings, migrations).await
    }
}

/// A service's connection pools, and which engine is behind them.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    /// Where writes go: one connection on a SQLite file (SQLite has one
    /// writer at a time anyway), the same pool otherwise.
    writer: AnyPool,
    backend: Backend,
    write_transactions: Arc<AtomicU64>,
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Most connections held open.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

impl Database {
    /// Connects to `url` (`sqlite://path?mode=rwc`, `sqlite::memory:`, or
    /// `postgres://…`).
    pub async fn connect(url: &str, settings: &PoolSettings) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite: or postgres:");
        };
        if backend == Backend::Sqlite {
            create_sqlite_folder(url)?;
        }
        let options = AnyConnectOptions::from_str(url)
            .context("parsing the database URL")?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        // An in-memory SQLite database lives as long as its one connection.
        let in_memory = backend == Backend::Sqlite && url.contains(":memory:");
        let pool = pool_options(backend, in_memory, settings, settings.max_connections)
            .connect_with(options.clone())
            .await
            .context("connecting to the database")?;
        let writer = if backend == Backend::Sqlite && !in_memory {
            pool_options(backend, false, settings, 1)
                .connect_with(options)
                .await
                .context("connecting to the database")?
        } else {
            pool.clone()
        };
        Ok(Self {
            pool,
            writer,
            backend,
            write_transactions: Arc::default(),
        })
    }

    /// Connects to `url` and applies `migrations`, so the schema is current
    /// before anything queries it.
    pub async fn open(
        url: &str,
        settings: &PoolSettings,
        migrations: &Migrations,
    ) -> anyhow::Result<Self> {
        let database = Self::connect(url, settings).await?;
        database.migrate(migrations).await?;
        Ok(database)
    }

    /// Applies the migrations for this engine.
    pub async fn migrate(&self, migrations: &Migrations) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &migrations.sqlite,
            Backend::Postgres => &migrations.postgres,
        };
        migrator
            .run(&self.pool)
            .await
            .context("applying database migrations")
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction (counted; `BEGIN IMMEDIATE` on SQLite, so
    /// it holds the write lock from its first statement and never has to
    /// upgrade a read lock midway).
    pub async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.write_transactions.fetch_add(1, Ordering::Relaxed);
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.writer.begin().await,
        }
    }

    /// The pool for one write statement outside a transaction (counted as
    /// one write transaction: the statement commits on its own).
    pub fn writer(&self) -> &AnyPool {
        self.write_transactions.fetch_add(1, Ordering::Relaxed);
        &self.writer
    }

    /// Write transactions begun so far through [`Self::begin_write`] and
    /// [`Self::writer`].
    pub fn write_transactions(&self) -> u64 {
        self.write_transactions.load(Ordering::Relaxed)
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// True when the database answers a trivial query within `timeout`.
    pub async fn is_reachable(&self, timeout: Duration) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// A query bound with owned values, on either engine: what a caller binds
/// for [`crate::outbox::Outbox::execute_and_append`], or hands to a helper
/// that binds a row's values.
pub type AnyQuery = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// One pool's options: `max_connections` connections (one, kept forever, for
/// an in-memory SQLite database), no ping on acquire, SQLite's pragmas on
/// connect.
fn pool_options(
    backend: Backend,
    in_memory: bool,
    settings: &PoolSettings,
    max_connections: u32,
) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(if in_memory { 1 } else { max_connections })
        .min_connections(if in_memory { 1 } else { 0 })
        .idle_timeout(if in_memory {
            None
        } else {
            Some(Duration::from_secs(300))
        })
        .max_lifetime(if in_memory {
            None
        } else {
            Some(Duration::from_secs(1800))
        })
        .acquire_timeout(settings.acquire_timeout)
        // A ping per acquire is a round trip (to SQLite's worker thread, or
        // over the network) before every query; a broken connection fails
        // its query instead, and the pool drops it.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // synchronous = NORMAL in WAL mode: a commit survives a
                    // crash of the process; only a power loss may lose the
                    // last commits, never corrupt the file.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                         PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                    )
                    .await?;
                }
                Ok(())
            })
        })
}

/// Creates the folder a SQLite file URL points into, so `sqlite://data/x.db`
/// works on a fresh checkout.
fn create_sqlite_folder(url: &str) -> anyhow::Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

/// `$first, $first+1, …`: `count` numbered placeholders, which both engines
/// take, for a statement whose number of values varies (`IN (…)`).
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, …, $width), ($width+1, …), …`: the `VALUES` of a multi-row insert
/// of `rows` rows, `width` columns each.
pub fn value_rows(width: usize, rows: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(1 + row * width, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a database error is a unique-constraint violation, and of which
/// constraint when the engine names it (PostgreSQL does; SQLite does not, so a
/// table whose only unique key besides its UUID primary key is the one in
/// question can rely on the kind alone).
pub fn unique_violation(error: &sqlx::Error) -> Option<Option<String>> {
    match error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Some(db.constraint().map(str::to_owned))
        }
        _ => None,
    }
}

/// The error for a value read back from a service's own table that does not
/// parse: corruption or a bug, never a caller's mistake (it becomes INTERNAL
/// and the value goes to the log, not to the caller).
pub fn corrupt(what: &str, value: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("stored {what} {value:?} is not valid")
}

/// Whether a database error means "two transactions collided; run it again":
/// SQLite busy or locked, PostgreSQL serialization failure or deadlock.
pub fn is_conflict(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    match db.code().as_deref() {
        // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with extended codes.
        Some(code) if code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)) => true,
        // PostgreSQL: serialization_failure, deadlock_detected.
        Some("40001" | "40P01") => true,
        _ => false,
    }
}

/// Whether an error means the database could not be reached or is overloaded,
/// as opposed to a bad query: such errors become UNAVAILABLE, not INTERNAL.
pub fn is_transient(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    )
}
