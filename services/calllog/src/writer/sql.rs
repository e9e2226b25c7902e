//! The writer's statements, from the `.sql` files beside this one. Those that write rows are
//! templates whose column lists come from the rows' declarations (`rows`, rendered by
//! `table::render`) once, on first use.

use std::sync::LazyLock;

use super::rows::{CallRows, EventRows, LegRows, OutboxRows};
use super::table::render;

/// Inserts a batch's events, `ON CONFLICT DO NOTHING` on the dedupe key: it returns only the
/// events stored for the first time, with the transaction's time.
pub(super) static INSERT_EVENTS: LazyLock<String> =
    LazyLock::new(|| render(include_str!("sql/insert_events.sql"), EventRows::COLUMNS));

/// Waits for every affected call's advisory lock, a 64-bit hash of its key (a collision only makes
/// two calls wait for each other), in lock-key order: two transactions locking overlapping sets
/// queue up in that order, never in a cycle. The same statement serves the publisher
/// (`outbox`).
pub(crate) const LOCK_CALLS: &str = include_str!("sql/lock_calls.sql");

/// Takes back events the batch stored beyond a call's most events (`max_events_per_call`).
pub(super) const DELETE_EVENTS: &str = "DELETE FROM call_events
     WHERE (source_id, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))";

/// What is stored of the locked calls, read after the locks so that it is what the previous
/// holder committed.
pub(super) const READ_CALLS: &str = include_str!("sql/read_calls.sql");

/// Calls that had no new event for the settle time (or, still ringing, for the longer one), whose
/// lock is free: `pg_try_advisory_xact_lock` skips a call a writer or another replica's sweep
/// holds, as `SKIP LOCKED` would, so sweeps share the work without waiting. The inner query is
/// a fence: locks are tried only on due calls. Only the open calls are read (`open_calls`).
pub(super) const DUE_CALLS: &str = include_str!("sql/due_calls.sql");

/// The due calls again, once locked: one completed by another sweep meanwhile, or that a writer
/// gave a new event, is no longer due. Its columns are `READ_CALLS`' and then the vendor.
pub(super) const READ_DUE: &str = include_str!("sql/read_due.sql");

/// Every stored event of some calls, as `read::event_from_row` reads them.
pub(super) const LOAD_EVENTS: &str = include_str!("sql/load_events.sql");

/// Calls without a row yet. A plain insert: under the call's lock nobody else can create it.
pub(super) static INSERT_CALLS: LazyLock<String> =
    LazyLock::new(|| render(include_str!("sql/insert_calls.sql"), CallRows::COLUMNS));

/// Calls with a row, where it still has the revision the fold started from. The parameter after
/// the columns: whether they gained events (which restarts the settle timer).
pub(super) static UPDATE_CALLS: LazyLock<String> =
    LazyLock::new(|| render(include_str!("sql/update_calls.sql"), CallRows::COLUMNS));

/// Legs not written before. An upsert all the same: a call from before migration 0004 has legs
/// but no hashes of them.
pub(super) static INSERT_LEGS: LazyLock<String> =
    LazyLock::new(|| render(include_str!("sql/insert_legs.sql"), LegRows::COLUMNS));

/// Legs written before whose content changed (the call row keeps a hash per leg).
pub(super) static UPDATE_LEGS: LazyLock<String> =
    LazyLock::new(|| render(include_str!("sql/update_legs.sql"), LegRows::COLUMNS));

/// A complete call's new record waits here for the publisher; a newer version replaces an older
/// one not yet published (and frees it from a lease, so that it is produced again).
pub(super) static UPSERT_OUTBOX: LazyLock<String> =
    LazyLock::new(|| render(include_str!("sql/upsert_outbox.sql"), OutboxRows::COLUMNS));

/// Keeps `open_calls` (migration 0007) the list of calls not complete: `$1`/`$2` are new calls
/// still open, `$3`/`$4` calls that have just completed.
pub(super) const TRACK_OPEN_CALLS: &str = include_str!("sql/track_open_calls.sql");

/// Completes a call the sweep found without events to fold (`$1`, `$2`: its key; `$3`: the
/// revision of this write).
pub(super) const SETTLE_WITHOUT_EVENTS: &str = include_str!("sql/settle_without_events.sql");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::table::Column;

    /// The highest `$n` a statement uses.
    fn highest_parameter(statement: &str) -> usize {
        statement
            .split('$')
            .skip(1)
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn every_statement_renders_with_one_parameter_per_column() {
        let statements: [(&str, &[Column], usize); 6] = [
            (&INSERT_EVENTS, EventRows::COLUMNS, 0),
            (&INSERT_CALLS, CallRows::COLUMNS, 0),
            // And whether the calls gained events.
            (&UPDATE_CALLS, CallRows::COLUMNS, 1),
            (&INSERT_LEGS, LegRows::COLUMNS, 0),
            (&UPDATE_LEGS, LegRows::COLUMNS, 0),
            (&UPSERT_OUTBOX, OutboxRows::COLUMNS, 0),
        ];
        for (statement, columns, more) in statements {
            assert_eq!(highest_parameter(statement), columns.len() + more, "{statement}");
        }
    }
}
