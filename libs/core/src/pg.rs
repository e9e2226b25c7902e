//! PostgreSQL: the connection pool, database creation and migrations.
//!
//! Migrations are the list `switchboard_schema::MIGRATIONS` (each crate's SQL files, in one
//! order), applied at start-up by every service that uses the database. A transaction-scoped advisory lock makes
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

/// One migration: `(version, name, sql)`. The whole list, in order, is
/// `switchboard_schema::MIGRATIONS`; core knows none of them.
pub type Migration = (i32, &'static str, &'static str);

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
    migrations: &[Migration],
    cancel: &CancellationToken,
) -> Result<Option<Pool>, PgError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            attempt = try_connect_and_migrate(settings, migrations, i32::MAX) => attempt,
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

/// Connects and applies the migrations up to `newest` (all of them but in a test that seeds an
/// older schema).
async fn try_connect_and_migrate(
    settings: &PostgresSettings,
    migrations: &[Migration],
    newest: i32,
) -> Result<Pool, PgError> {
    if settings.create_database {
        let config =
            tokio_postgres::Config::from_str(&settings.url).map_err(|e| PgError::Url(e.to_string()))?;
        create_database_if_missing(&config).await?;
    }
    let pool = pool(settings)?;
    let mut client = pool.get().await?;
    migrate_to(&mut client, migrations, newest).await?;
    Ok(pool)
}

/// The pool of `settings`: connections that time out rather than hang, with the services'
/// statement timeout unless the URL sets its own options.
fn pool(settings: &PostgresSettings) -> Result<Pool, PgError> {
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
    let manager =
        Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let wait = Duration::from_millis(settings.pool_wait_ms);
    Pool::builder(manager)
        .max_size(settings.pool_size)
        // Without these a request waits for a connection as long as PostgreSQL stalls.
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| PgError::Build(e.to_string()))
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

/// Applies the migrations up to `newest` (a test seeds a database at an older schema with it).
async fn migrate_to(
    client: &mut deadpool_postgres::Object,
    migrations: &[Migration],
    newest: i32,
) -> Result<(), PgError> {
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
    for (version, name, sql) in migrations.iter().filter(|(version, _, _)| *version <= newest) {
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

    use super::{Migration, PgError, Pool};
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
    pub async fn database(
        prefix: &str,
        pool_size: usize,
        migrations: &[Migration],
    ) -> Result<(Pool, String), PgError> {
        let (name, settings) = settings(prefix, pool_size);
        let pool = super::connect_and_migrate(&settings, migrations, &CancellationToken::new())
            .await?
            .ok_or_else(|| PgError::Build("cancelled".into()))?;
        Ok((pool, name))
    }

    /// A database of its own at the schema of migration `version` (and none after it), for a test
    /// that seeds an older schema and then applies the rest with [`migrate`].
    pub async fn database_at(
        prefix: &str,
        version: i32,
        migrations: &[Migration],
    ) -> Result<(Pool, String), PgError> {
        let (name, settings) = settings(prefix, 2);
        Ok((super::try_connect_and_migrate(&settings, migrations, version).await?, name))
    }

    /// A new database name, `<prefix>_<random>`, and the settings that reach it.
    fn settings(prefix: &str, pool_size: usize) -> (String, PostgresSettings) {
        let name = format!("{prefix}_{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
        let settings = PostgresSettings { url: url_of(&name), pool_size, ..PostgresSettings::default() };
        (name, settings)
    }

    /// Applies every migration not applied yet, as a service does at start-up.
    pub async fn migrate(pool: &Pool, migrations: &[Migration]) -> Result<(), PgError> {
        super::migrate_to(&mut pool.get().await?, migrations, i32::MAX).await
    }

    /// Drops database `name`, closing what is still connected to it.
    ///
    /// `WITH (FORCE)` ends the test's own lingering sessions, but a role without
    /// `pg_signal_backend` (ours) may not end an autovacuum worker, so it fails while one works
    /// in the database (after the migration test's five million legs, say); a plain `DROP`
    /// cancels autovacuum itself and waits a few seconds for the other sessions to go. The two
    /// take turns until one succeeds.
    pub async fn drop(name: &str) -> Result<(), tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await?;
        let _driver = tokio::spawn(connection);
        let mut tries = 0;
        loop {
            let force = if tries % 2 == 0 { " WITH (FORCE)" } else { "" };
            let dropped = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\"{force}")).await;
            tries += 1;
            if dropped.is_ok() || tries >= 6 {
                return dropped;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}
