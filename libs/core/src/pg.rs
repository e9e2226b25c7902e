//! PostgreSQL: the connection pool, database creation and migrations.
//!
//! Migrations are the SQL files in `libs/core/migrations/`, compiled in and applied at
//! start-up by every service that uses the database. A transaction-scoped advisory lock makes
//! concurrent starts (several replicas at once) apply each migration exactly once.

/// Database errors name their cause only in their sources: log them with the whole chain.
pub use crate::errors::chain as error_chain;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use crate::config::PostgresSettings;
use crate::retry::Backoff;

/// `(version, name, sql)`, in order. Never edit an applied migration; add a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "source_settings", include_str!("../migrations/0002_source_settings.sql")),
    (3, "directory", include_str!("../migrations/0003_directory.sql")),
    (4, "call_log", include_str!("../migrations/0004_call_log.sql")),
    (5, "recordings", include_str!("../migrations/0005_recordings.sql")),
    (6, "call_revision", include_str!("../migrations/0006_call_revision.sql")),
    (7, "hot_call_updates", include_str!("../migrations/0007_hot_call_updates.sql")),
    (8, "unparsed_numbers", include_str!("../migrations/0008_unparsed_numbers.sql")),
    (9, "dispatcher", include_str!("../migrations/0009_dispatcher.sql")),
    (10, "desk", include_str!("../migrations/0010_desk.sql")),
    (11, "click_to_call", include_str!("../migrations/0011_click_to_call.sql")),
    (12, "blacklist", include_str!("../migrations/0012_blacklist.sql")),
    (13, "wrap_up", include_str!("../migrations/0013_wrap_up.sql")),
    (14, "sealed_source_secrets", include_str!("../migrations/0014_sealed_source_secrets.sql")),
    (15, "deliveries_by_call", include_str!("../migrations/0015_deliveries_by_call.sql")),
    (16, "disposition_lists", include_str!("../migrations/0016_disposition_lists.sql")),
];

/// Any advisory-lock key unique to Switchboard's migrator.
pub const MIGRATION_LOCK: i64 = 0x5357_4244_4d49_4752; // "SWBDMIGR"

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid postgres.url: {0}")]
    Url(String),
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("cannot build the connection pool: {0}")]
    Build(String),
}

/// Creates the database when asked to, builds the pool and applies migrations, retrying while
/// the server is unreachable. Returns `None` when cancelled first.
pub async fn connect_and_migrate(
    settings: &PostgresSettings,
    cancel: &CancellationToken,
) -> Result<Option<Pool>, PgError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            attempt = try_connect_and_migrate(settings) => attempt,
        };
        match attempt {
            Ok(pool) => return Ok(Some(pool)),
            // A malformed URL will not get better by waiting.
            Err(error @ (PgError::Url(_) | PgError::Build(_))) => return Err(error),
            Err(error) => tracing::warn!(%error, "PostgreSQL not ready; retrying."),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn try_connect_and_migrate(settings: &PostgresSettings) -> Result<Pool, PgError> {
    let mut config =
        tokio_postgres::Config::from_str(&settings.url).map_err(|e| PgError::Url(e.to_string()))?;
    // A stalled server or network must surface as an error that callers retry (and that a
    // shutdown can interrupt), never as a call that hangs until TCP gives up hours later.
    if config.get_connect_timeout().is_none() {
        let _ = config.connect_timeout(Duration::from_secs(5));
    }
    let _ = config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .tcp_user_timeout(Duration::from_secs(30));
    if config.get_options().is_none() {
        let _ = config.options("-c statement_timeout=30000");
    }
    if settings.create_database {
        create_database_if_missing(&config).await?;
    }
    let manager =
        Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let wait = Duration::from_millis(settings.pool_wait_ms);
    let pool = Pool::builder(manager)
        .max_size(settings.pool_size)
        // Without these a request waits for a connection as long as PostgreSQL stalls.
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| PgError::Build(e.to_string()))?;
    let mut client = pool.get().await?;
    migrate(&mut client).await?;
    Ok(pool)
}

async fn create_database_if_missing(config: &tokio_postgres::Config) -> Result<(), PgError> {
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = config.clone();
    let _ = admin.dbname("postgres");
    let (client, connection) = admin.connect(NoTls).await?;
    tokio::spawn(connection);
    let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await?.is_some();
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match client.batch_execute(&format!("CREATE DATABASE {quoted}")).await {
            Ok(()) => tracing::info!(database = %name, "Created database."),
            // Another replica created it between our check and our create.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    // Without the services' statement timeout (#18): a migration may take long on a large call
    // log, and a replica may wait long for another's migrations. Under the timeout either would
    // fail, be retried, and fail again, so that the service never started.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> =
        tx.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|row| row.get(0)).collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        let _ = tx
            .execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name])
            .await?;
        tracing::info!(version, name, "Applied migration.");
    }
    tx.commit().await?;
    Ok(())
}

/// Throwaway migrated databases for tests and benchmarks, each on the server of `SB_TEST_POSTGRES`
/// (default: the local superuser), so that tests run in parallel without sharing tables.
#[cfg(feature = "testing")]
pub mod scratch {
    use tokio_util::sync::CancellationToken;

    use super::{PgError, Pool};
    use crate::config::PostgresSettings;

    /// The maintenance database tests connect to in order to create and drop their own.
    pub fn admin_url() -> String {
        std::env::var("SB_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// The URL of database `name` on the admin URL's server.
    pub fn url_of(name: &str) -> String {
        let admin = admin_url();
        match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => format!("{admin}/{name}"),
        }
    }

    /// A database of its own, `<prefix>_<random>`, created and migrated; returns its pool and name.
    pub async fn database(prefix: &str, pool_size: usize) -> Result<(Pool, String), PgError> {
        let name = format!("{prefix}_{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
        let settings = PostgresSettings { url: url_of(&name), pool_size, ..PostgresSettings::default() };
        let pool = super::connect_and_migrate(&settings, &CancellationToken::new())
            .await?
            .ok_or_else(|| PgError::Build("cancelled".into()))?;
        Ok((pool, name))
    }

    /// Drops database `name`, closing what is still connected to it.
    pub async fn drop(name: &str) -> Result<(), tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await?;
        let _driver = tokio::spawn(connection);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
    }
}
