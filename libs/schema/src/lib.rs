//! The database schema: every crate's migrations, in their one order.
//!
//! Each migration lives with the crate that owns its tables (`services/calllog/migrations/`,
//! `libs/directory/migrations/`...); this list is the one place that orders them, as the binary's
//! list of settings sections is for configuration. Every service that uses the database applies
//! the whole list at start-up (`pg::connect_and_migrate`), one migrator at a time, so that any
//! service may start first. The rules for a new migration, expand now and contract a release
//! later, are in this crate's README.md, and the unit tests below enforce them.

use switchboard_core::pg::Migration;

/// `(version, name, sql)`, in order. Never edit a released migration; add a new one, in the
/// folder of the crate whose tables it changes.
pub const MIGRATIONS: &[Migration] = &[
    (1, "initial", include_str!("../../../services/ingress/migrations/0001_initial.sql")),
    (2, "source_settings", include_str!("../../../services/ingress/migrations/0002_source_settings.sql")),
    (3, "directory", include_str!("../../directory/migrations/0003_directory.sql")),
    (4, "call_log", include_str!("../../../services/calllog/migrations/0004_call_log.sql")),
    (5, "recordings", include_str!("../../../services/recordings/migrations/0005_recordings.sql")),
    (6, "call_revision", include_str!("../../../services/calllog/migrations/0006_call_revision.sql")),
    (7, "hot_call_updates", include_str!("../../../services/calllog/migrations/0007_hot_call_updates.sql")),
    (8, "unparsed_numbers", include_str!("../../../services/calllog/migrations/0008_unparsed_numbers.sql")),
    (9, "dispatcher", include_str!("../../../services/dispatcher/migrations/0009_dispatcher.sql")),
    (10, "desk", include_str!("../../../services/desk/migrations/0010_desk.sql")),
    (11, "click_to_call", include_str!("../../../services/desk/migrations/0011_click_to_call.sql")),
    (12, "blacklist", include_str!("../../directory/migrations/0012_blacklist.sql")),
    (13, "wrap_up", include_str!("../../../services/desk/migrations/0013_wrap_up.sql")),
    (
        14,
        "sealed_source_secrets",
        include_str!("../../../services/ingress/migrations/0014_sealed_source_secrets.sql"),
    ),
    (
        15,
        "deliveries_by_call",
        include_str!("../../../services/dispatcher/migrations/0015_deliveries_by_call.sql"),
    ),
    (16, "disposition_lists", include_str!("../../../services/desk/migrations/0016_disposition_lists.sql")),
    (17, "oauth_tokens", include_str!("../../../services/dispatcher/migrations/0017_oauth_tokens.sql")),
];

/// The version of the newest migration: the schema this release runs on.
pub fn newest() -> i32 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

/// Throwaway databases at this schema for tests and benchmarks, each on the server of
/// `SB_TEST_POSTGRES`, so that tests run in parallel without sharing tables.
#[cfg(feature = "testing")]
pub mod scratch {
    use deadpool_postgres::Pool;
    pub use switchboard_core::pg::scratch::{admin_url, drop, url_of};
    use switchboard_core::pg::{self, PgError};

    /// A database of its own, `<prefix>_<random>`, created and migrated; returns its pool and name.
    pub async fn database(prefix: &str, pool_size: usize) -> Result<(Pool, String), PgError> {
        pg::scratch::database(prefix, pool_size, super::MIGRATIONS).await
    }

    /// A database of its own at the schema of migration `version` (and none after it), for a test
    /// that seeds an older schema and then applies the rest with [`migrate`].
    pub async fn database_at(prefix: &str, version: i32) -> Result<(Pool, String), PgError> {
        pg::scratch::database_at(prefix, version, super::MIGRATIONS).await
    }

    /// Applies every migration not applied yet, as a service does at start-up.
    pub async fn migrate(pool: &Pool) -> Result<(), PgError> {
        pg::scratch::migrate(pool, super::MIGRATIONS).await
    }
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// The statements that take away what the previous release may still use (README.md).
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
                     release may still use: ship it as a contract step (libs/schema/README.md)"
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
    fn versions_rise_one_by_one_and_files_carry_their_version_and_name() {
        for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(*version).ok(), Some(i + 1));
            assert!(!name.is_empty());
        }
        assert_eq!(super::newest(), MIGRATIONS.last().map_or(0, |m| m.0));
        // Each file is named `<version>_<name>.sql` in this list's order.
        let source = include_str!("lib.rs");
        for (version, name, _) in MIGRATIONS {
            let file = format!("/{version:04}_{name}.sql\")");
            assert!(source.contains(&file), "{file}");
        }
    }
}
