//! What a transaction reads back: the stored state of locked calls and every event stored of them,
//! the fold's input for a call the fold cache does not hold.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use switchboard_core::model::{Direction, WrapUp};

use super::WriteError;
use super::digest::LEG_HASH_HEX;
use super::sql;
use crate::cache::{CallKey, Stored};
use crate::codes;
use crate::fold::Event;

/// What is stored of a locked call, from `READ_CALLS` or `READ_DUE`.
pub(super) fn stored_from_row(row: &tokio_postgres::Row) -> (CallKey, Stored) {
    let leg_hashes: Vec<String> = row.get(6);
    let stored = Stored {
        version: row.get(2),
        content_hash: row.get(3),
        settled: row.get(4),
        completed_at: row.get(5),
        leg_hashes: leg_hashes
            .into_iter()
            .filter(|entry| entry.len() > LEG_HASH_HEX)
            .map(|entry| (entry[LEG_HASH_HEX..].to_owned(), entry[..LEG_HASH_HEX].to_owned()))
            .collect(),
        revision: row.get(7),
    };
    ((row.get(0), row.get(1)), stored)
}

/// Every stored event of `keys`' calls.
pub(super) async fn load_events<'k>(
    tx: &Transaction<'_>,
    keys: impl Iterator<Item = &'k CallKey>,
) -> Result<HashMap<CallKey, Vec<Event>>, WriteError> {
    let (sources, calls): (Vec<&str>, Vec<&str>) = keys.map(|(s, c)| (s.as_str(), c.as_str())).unzip();
    let mut events: HashMap<CallKey, Vec<Event>> = HashMap::new();
    if calls.is_empty() {
        return Ok(events);
    }
    let load = tx.prepare_cached(sql::LOAD_EVENTS).await?;
    for row in tx.query(&load, &[&sources, &calls]).await? {
        events.entry((row.get(0), row.get(1))).or_default().push(event_from_row(&row));
    }
    Ok(events)
}

/// An event as `LOAD_EVENTS` selects it (after the call's key).
fn event_from_row(row: &tokio_postgres::Row) -> Event {
    let text = |i: usize| row.get::<_, Option<String>>(i);
    Event {
        event_id: row.get(2),
        leg_id: text(3),
        kind: codes::kind(row.get(4)),
        direction: text(5).as_deref().map_or(Direction::Unknown, codes::direction),
        from_raw: text(6),
        from_e164: text(7),
        to_raw: text(8),
        to_e164: text(9),
        agent_extension: text(10),
        agent_number: text(11),
        agent_email: text(12),
        agent_id: text(13),
        agent_match: text(14).as_deref().map(codes::agent_match),
        contact_ids: row.get(15),
        contact_match: text(16).as_deref().map(codes::contact_match),
        responsible_agent_id: text(17),
        occurred_at: row.get(18),
        received_at: row.get(19),
        sequence: row.get(20),
        disposition: text(21).as_deref().map(codes::disposition),
        hangup_cause: text(22),
        recording_url: text(23),
        recording_id: text(24),
        recording_status: text(25).as_deref().and_then(codes::recording_status),
        recording_error: text(26),
        wrap_up: row.get::<_, Option<DateTime<Utc>>>(32).map(|set_at| WrapUp {
            code: text(27),
            label: text(28),
            note: text(29),
            tags: row.get::<_, Option<Vec<String>>>(30).unwrap_or_default(),
            agent_id: text(31),
            set_at,
        }),
        queue: text(33),
    }
}
