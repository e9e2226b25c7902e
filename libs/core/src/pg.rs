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

/// The version of the newest migration: the schema this release runs on.
pub fn newest_migration() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

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
            attempt = try_connect_and_migrate(settings, i32::MAX) => attempt,
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
async fn try_connect_and_migrate(settings: &PostgresSettings, newest: i32) -> Result<Pool, PgError> {
    if settings.create_database {
        let config =
            tokio_postgres::Config::from_str(&settings.url).map_err(|e| PgError::Url(e.to_string()))?;
        create_database_if_missing(&config).await?;
    }
    let pool = pool(settings)?;
    let mut client = pool.get().await?;
    migrate_to(&mut client, newest).await?;
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
async fn migrate_to(client: &mut deadpool_postgres::Object, newest: i32) -> Result<(), PgError> {
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
    for (version, name, sql) in MIGRATIONS.iter().filter(|(version, _, _)| *version <= newest) {
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
        let (name, settings) = settings(prefix, pool_size);
        let pool = super::connect_and_migrate(&settings, &CancellationToken::new())
            .await?
            .ok_or_else(|| PgError::Build("cancelled".into()))?;
        Ok((pool, name))
    }

    /// A database of its own at the schema of migration `version` (and none after it), for a test
    /// that seeds an older schema and then applies the rest with [`migrate`].
    pub async fn database_at(prefix: &str, version: i32) -> Result<(Pool, String), PgError> {
        let (name, settings) = settings(prefix, 2);
        Ok((super::try_connect_and_migrate(&settings, version).await?, name))
    }

    /// A new database name, `<prefix>_<random>`, and the settings that reach it.
    fn settings(prefix: &str, pool_size: usize) -> (String, PostgresSettings) {
        let name = format!("{prefix}_{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
        let settings = PostgresSettings { url: url_of(&name), pool_size, ..PostgresSettings::default() };
        (name, settings)
    }

    /// Applies every migration not applied yet, as a service does at start-up.
    pub async fn migrate(pool: &Pool) -> Result<(), PgError> {
        super::migrate_to(&mut pool.get().await?, i32::MAX).await
    }

    /// Drops database `name`, closing what is still connected to it.
    pub async fn drop(name: &str) -> Result<(), tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await?;
        let _driver = tokio::spawn(connection);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
    }
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// The statements that take away what the previous release may still use (migrations/README.md).
    const CONTRACTING: [&str; 7] = [
        "drop table",
        "drop column",
        "rename ",
        "set not null",
        "drop constraint",
        "drop view",
        "drop function",
    ];

    /// `sql` in lower case without its comments and with its whitespace collapsed.
    fn statements(sql: &str) -> String {
        let code: Vec<&str> = sql.lines().map(|line| line.split("--").next().unwrap_or("")).collect();
        code.join(" ").to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn migrations_after_0007_only_expand() {
        for (version, name, sql) in MIGRATIONS.iter().filter(|(version, _, _)| *version > 7) {
            let code = statements(sql);
            let marked = sql.lines().any(|line| line.trim_start().starts_with("-- contract:"));
            for statement in CONTRACTING {
                assert!(
                    marked || !code.contains(statement),
                    "migration {version} ({name}) has `{statement}`, which takes away what the previous \
                     release may still use: ship it as a contract step (libs/core/migrations/README.md)"
                );
            }
            let column_type = code.contains("alter column") && code.contains(" type ");
            assert!(marked || !column_type, "migration {version} ({name}) changes a column's type");
            // An index may go only where the same migration builds its replacement.
            assert!(
                !code.contains("drop index") || code.contains("create index"),
                "migration {version} ({name}) drops an index without building the one that replaces it"
            );
        }
    }

    #[test]
    fn the_policy_check_sees_a_contracting_statement() {
        let code = statements("-- drops nothing\nALTER TABLE calls\n    DROP   COLUMN agents;");
        assert!(code.contains("drop column"));
        assert!(!statements("-- DROP COLUMN in a comment").contains("drop column"));
    }

    #[test]
    fn versions_rise_one_by_one() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(*version).ok(), Some(i + 1));
        }
        assert_eq!(super::newest_migration(), MIGRATIONS.last().map_or(0, |m| m.0));
    }
}
