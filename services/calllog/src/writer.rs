//! Writes batches of call events to PostgreSQL and keeps every affected call equal to the
//! [`fold`](crate::fold) of all its stored events, in one transaction per batch.
//!
//! A batch:
//! 1. inserts its events into `call_events` with one UNNEST statement, `ON CONFLICT DO NOTHING` on
//!    the dedupe key; only calls that gained an event go on (a replayed batch stops here);
//! 2. takes a transaction-scoped advisory lock per affected call, in one statement, in lock-key
//!    order, so that two writers, or a writer and the settle sweep or the publisher, never work on
//!    one call at once and never deadlock (a row lock would need the row to exist first: a new
//!    call would be written twice);
//! 3. folds each call in Rust from *all* its events (those another writer committed too): a call
//!    this replica wrote last has them in the [fold cache](crate::cache), and is folded before
//!    step 2, while the replica's previous batch may still be committing; for the others it reads
//!    what is stored of the call and every event of it; a call with no row yet has no other
//!    events than this batch's, since every transaction that stores an event writes its call;
//! 4. upserts the calls, the legs that changed and, for a complete call whose record changed, the
//!    new Avro record into `call_outbox`, which the publisher (`outbox`) produces after the
//!    commit. A call folded from the cache is updated only if its row still has the revision
//!    the cache holds; if another writer changed it since, the batch is rolled back and written
//!    again with those calls read back.
//!
//! The result is a pure function of the set of distinct events (plus the sweep's `settled` mark),
//! so any order, duplication or batching of the same events leaves the same rows; only `version`
//! counts how many distinct states the call went through. Updates leave every indexed column
//! alone unless it changed (migrations 0004 and 0007), so most are HOT.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use switchboard_core::avro::Codecs;
use switchboard_core::deadpool_postgres::{Pool, Transaction};
use switchboard_core::metrics;
use switchboard_core::model::{
    AgentRef, CallEvent, CallId, CallRecord, CallStatus, Completion, Direction, LegRecord, Outcome, SourceId,
    Vendor,
};
use switchboard_core::tokio_postgres::{self, Statement};

use crate::cache::{CachedCall, CallKey, FoldCache, Stored};
use crate::codes;
use crate::fold::{Event, Folded, fold};

/// A decoded event with where it was read from.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event: CallEvent,
    pub partition: i32,
    pub offset: i64,
}

/// What one transaction changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events stored for the first time.
    pub new_events: i64,
    /// Calls whose record changed (a new version); calls that only gained events that change
    /// nothing a CRM sees keep their version.
    pub calls: i64,
    /// Leg rows inserted or changed.
    pub legs: i64,
    /// Calls that became complete, with their direction and outcome.
    pub completed: Vec<(Direction, Outcome)>,
    /// Complete calls that changed again (a late event): each is published anew.
    pub late_updates: i64,
    /// Whether some complete call now has a version the calls topic has not seen.
    pub publishable: bool,
    /// Calls folded from the fold cache, without reading them back.
    pub from_cache: i64,
    /// Calls another writer had changed since this one cached them: the batch was rolled back
    /// and written again with them read back.
    pub stale: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The data itself is refused (a value out of range, a constraint): retrying the same rows
    /// cannot help.
    #[error("rows refused by PostgreSQL: {0}")]
    Rejected(#[source] tokio_postgres::Error),
    /// The database is unreachable, restarting, or the transaction lost a race: retry.
    #[error("PostgreSQL unavailable: {0}")]
    Transient(String),
    #[error("cannot encode a call record: {0}")]
    Encode(#[from] switchboard_core::avro::CodecError),
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(error: tokio_postgres::Error) -> Self {
        let class = error.code().map(|code| &code.code()[..2]);
        match class {
            // 22: data exception; 23: integrity constraint violation.
            Some("22" | "23") => WriteError::Rejected(error),
            _ => WriteError::Transient(error.to_string()),
        }
    }
}

impl From<switchboard_core::deadpool_postgres::PoolError> for WriteError {
    fn from(error: switchboard_core::deadpool_postgres::PoolError) -> Self {
        WriteError::Transient(error.to_string())
    }
}

const INSERT_EVENTS: &str = r#"
INSERT INTO call_events (source_id, event_id, call_id, leg_id, kind, occurred_at, received_at,
                         raw_id, sequence, kafka_partition, kafka_offset, vendor, direction,
                         from_raw, from_e164, to_raw, to_e164, agent_extension, agent_number,
                         agent_email, agent_id, agent_match, contact_ids, contact_match,
                         responsible_agent_id, disposition, hangup_cause, recording_url,
                         recording_id, recording_status, recording_error)
SELECT source_id, event_id, call_id, leg_id, kind, occurred_at, received_at, raw_id, sequence,
       kafka_partition, kafka_offset, vendor, direction, from_raw, from_e164, to_raw, to_e164,
       agent_extension, agent_number, agent_email, agent_id, agent_match,
       COALESCE(string_to_array(contact_ids, E'\x1f'), '{}'),
       contact_match, responsible_agent_id, disposition, hangup_cause, recording_url, recording_id,
       recording_status, recording_error
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::timestamptz[], $8::text[], $9::int8[], $10::int4[], $11::int8[], $12::text[],
            $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
            $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
            $25::text[], $26::text[], $27::text[], $28::text[], $29::text[], $30::text[],
            $31::text[])
     AS t(source_id, event_id, call_id, leg_id, kind, occurred_at, received_at, raw_id, sequence,
          kafka_partition, kafka_offset, vendor, direction, from_raw, from_e164, to_raw,
          to_e164, agent_extension, agent_number, agent_email, agent_id, agent_match,
          contact_ids, contact_match, responsible_agent_id, disposition, hangup_cause,
          recording_url, recording_id, recording_status, recording_error)
ON CONFLICT (source_id, event_id) DO NOTHING
RETURNING source_id, event_id, now()
"#;

/// Waits for every affected call's advisory lock, a 64-bit hash of its key (a collision only makes
/// two calls wait for each other), in lock-key order: two transactions locking overlapping sets
/// queue up in that order, never in a cycle. The same statement serves the publisher
/// (`outbox`).
pub(crate) const LOCK_CALLS: &str = r#"
SELECT pg_advisory_xact_lock(k), now()
FROM (SELECT DISTINCT hashtextextended(source_id || ':' || call_id, 0) AS k
      FROM UNNEST($1::text[], $2::text[]) AS u(source_id, call_id)
      ORDER BY k) keys
"#;

/// What is stored of the locked calls, read after the locks so that it is what the previous
/// holder committed.
const READ_CALLS: &str = r#"
SELECT source_id, call_id, version, content_hash, settled, completed_at, leg_hashes, revision
FROM calls
WHERE (source_id, call_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
"#;

/// Calls that had no new event for the settle time (or, still ringing, for the longer one), whose
/// lock is free: `pg_try_advisory_xact_lock` skips a call a writer or another replica's sweep
/// holds, as `SKIP LOCKED` would, so sweeps share the work without waiting. The inner query is
/// a fence: locks are tried only on due calls. Only the open calls are read (`open_calls`).
const DUE_CALLS: &str = r#"
SELECT source_id, call_id FROM (
    SELECT c.source_id, c.call_id FROM open_calls o
    JOIN calls c ON c.source_id = o.source_id AND c.call_id = o.call_id
    WHERE c.completed_at IS NULL
      AND c.last_event_at < now() - $1::int8 * interval '1 millisecond'
      AND (c.status <> 'ringing' OR c.last_event_at < now() - $2::int8 * interval '1 millisecond')
    ORDER BY c.last_event_at
    LIMIT $3) due
WHERE pg_try_advisory_xact_lock(hashtextextended(source_id || ':' || call_id, 0))
"#;

/// The due calls again, once locked: one completed by another sweep meanwhile, or that a writer
/// gave a new event, is no longer due.
const READ_DUE: &str = r#"
SELECT source_id, call_id, version, content_hash, settled, completed_at, leg_hashes, revision,
       vendor, now()
FROM calls
WHERE (source_id, call_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
  AND completed_at IS NULL
  AND last_event_at < now() - $3::int8 * interval '1 millisecond'
  AND (status <> 'ringing' OR last_event_at < now() - $4::int8 * interval '1 millisecond')
"#;

const LOAD_EVENTS: &str = r#"
SELECT e.source_id, e.call_id, event_id, leg_id, kind, direction, from_raw, from_e164, to_raw,
       to_e164, agent_extension, agent_number, agent_email, agent_id, agent_match, contact_ids,
       contact_match, responsible_agent_id, occurred_at, received_at, sequence, disposition,
       hangup_cause, recording_url, recording_id, recording_status, recording_error
FROM call_events e
JOIN UNNEST($1::text[], $2::text[]) AS k(source_id, call_id)
  ON e.source_id = k.source_id AND e.call_id = k.call_id
"#;

/// The calls' columns as UNNEST reads them: lists travel as text joined with the unit separator
/// (ids never hold control characters).
macro_rules! call_rows {
    () => {
        r#"UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
              $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::text[],
              $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
              $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::int4[],
              $25::int4[], $26::timestamptz[], $27::bool[], $28::text[], $29::timestamptz[],
              $30::int8[], $31::bytea[], $32::text[], $33::text[], $34::text[], $35::int8[],
              $36::int8[])
          AS u(source_id, call_id, vendor, direction, status, outcome, from_number, to_number,
               started_at, answered_at, ended_at, disposition, hangup_cause, agent_id,
               agent_match, agent_extension, agent_number, agent_email, contact_ids,
               contact_match, responsible_agent_id, recording_url, recording_id, event_count,
               leg_count, first_received_at, settled, completion, completed_at, version,
               content_hash, leg_hashes, recording_status, recording_error, revision,
               expected_revision)"#
    };
}

/// Calls without a row yet. A plain insert: under the call's lock nobody else can create it.
const INSERT_CALLS: &str = concat!(
    r#"
INSERT INTO calls (source_id, call_id, vendor, direction, status, outcome, from_number, to_number,
                   started_at, answered_at, ended_at, disposition, hangup_cause, agent_id,
                   agent_match, agent_extension, agent_number, agent_email, contact_ids,
                   contact_match, responsible_agent_id, recording_url, recording_id, event_count,
                   leg_count, first_received_at, settled, completion, completed_at, version,
                   content_hash, leg_hashes, recording_status, recording_error, revision)
SELECT source_id, call_id, vendor, direction, status, outcome, from_number, to_number, started_at,
       answered_at, ended_at, disposition, hangup_cause, agent_id, agent_match, agent_extension,
       agent_number, agent_email, COALESCE(string_to_array(contact_ids, E'\x1f'), '{}'),
       contact_match, responsible_agent_id, recording_url, recording_id, event_count, leg_count,
       first_received_at, settled, completion, completed_at, version, content_hash,
       COALESCE(string_to_array(leg_hashes, E'\x1f'), '{}'), recording_status, recording_error,
       revision
FROM "#,
    call_rows!()
);

/// Calls with a row, where it still has the revision the fold started from. `$37`: whether they
/// gained events (which restarts the settle timer).
const UPDATE_CALLS: &str = concat!(
    r#"
UPDATE calls AS c SET
    vendor = u.vendor, direction = u.direction, status = u.status, outcome = u.outcome,
    from_number = u.from_number, to_number = u.to_number, started_at = u.started_at,
    answered_at = u.answered_at, ended_at = u.ended_at, disposition = u.disposition,
    hangup_cause = u.hangup_cause, agent_id = u.agent_id, agent_match = u.agent_match,
    agent_extension = u.agent_extension, agent_number = u.agent_number,
    agent_email = u.agent_email,
    contact_ids = COALESCE(string_to_array(u.contact_ids, E'\x1f'), '{}'),
    contact_match = u.contact_match, responsible_agent_id = u.responsible_agent_id,
    recording_url = u.recording_url, recording_id = u.recording_id, event_count = u.event_count,
    leg_count = u.leg_count, first_received_at = u.first_received_at, settled = u.settled,
    completion = u.completion, completed_at = u.completed_at, version = u.version,
    content_hash = u.content_hash,
    leg_hashes = COALESCE(string_to_array(u.leg_hashes, E'\x1f'), '{}'),
    recording_status = u.recording_status, recording_error = u.recording_error,
    revision = u.revision,
    last_event_at = CASE WHEN $37 THEN now() ELSE c.last_event_at END, updated_at = now()
FROM "#,
    call_rows!(),
    r#"
WHERE c.source_id = u.source_id AND c.call_id = u.call_id AND c.revision = u.expected_revision"#
);

macro_rules! leg_rows {
    () => {
        r#"UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[],
              $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[],
              $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::text[],
              $16::text[], $17::text[], $18::text[], $19::int4[], $20::text[])
          AS u(source_id, call_id, leg_id, status, answered, agent_id, agent_match,
               agent_extension, agent_number, agent_email, started_at, rang_at, answered_at,
               ended_at, disposition, hangup_cause, recording_url, recording_id, event_count,
               agents)"#
    };
}

/// Legs not written before. An upsert all the same: a call from before migration 0004 has legs
/// but no hashes of them.
const INSERT_LEGS: &str = concat!(
    r#"
INSERT INTO call_legs (source_id, call_id, leg_id, status, answered, agent_id, agent_match,
                       agent_extension, agent_number, agent_email, started_at, rang_at,
                       answered_at, ended_at, disposition, hangup_cause, recording_url,
                       recording_id, event_count, agents)
SELECT source_id, call_id, leg_id, status, answered, agent_id, agent_match, agent_extension,
       agent_number, agent_email, started_at, rang_at, answered_at, ended_at, disposition,
       hangup_cause, recording_url, recording_id, event_count,
       COALESCE(string_to_array(agents, E'\x1f'), '{}')
FROM "#,
    leg_rows!(),
    r#"
ON CONFLICT (source_id, call_id, leg_id) DO UPDATE SET
    status = EXCLUDED.status, answered = EXCLUDED.answered, agent_id = EXCLUDED.agent_id,
    agent_match = EXCLUDED.agent_match, agent_extension = EXCLUDED.agent_extension,
    agent_number = EXCLUDED.agent_number, agent_email = EXCLUDED.agent_email,
    started_at = EXCLUDED.started_at, rang_at = EXCLUDED.rang_at,
    answered_at = EXCLUDED.answered_at, ended_at = EXCLUDED.ended_at,
    disposition = EXCLUDED.disposition, hangup_cause = EXCLUDED.hangup_cause,
    recording_url = EXCLUDED.recording_url, recording_id = EXCLUDED.recording_id,
    event_count = EXCLUDED.event_count, agents = EXCLUDED.agents, updated_at = now()"#
);

/// Legs written before whose content changed (the call row keeps a hash per leg).
const UPDATE_LEGS: &str = concat!(
    r#"
UPDATE call_legs AS l SET
    status = u.status, answered = u.answered, agent_id = u.agent_id, agent_match = u.agent_match,
    agent_extension = u.agent_extension, agent_number = u.agent_number,
    agent_email = u.agent_email, started_at = u.started_at, rang_at = u.rang_at,
    answered_at = u.answered_at, ended_at = u.ended_at, disposition = u.disposition,
    hangup_cause = u.hangup_cause, recording_url = u.recording_url,
    recording_id = u.recording_id, event_count = u.event_count,
    agents = COALESCE(string_to_array(u.agents, E'\x1f'), '{}'), updated_at = now()
FROM "#,
    leg_rows!(),
    r#"
WHERE l.source_id = u.source_id AND l.call_id = u.call_id AND l.leg_id = u.leg_id"#
);

/// Keeps `open_calls` (migration 0007) the list of calls not complete: `$1`/`$2` are new calls
/// still open, `$3`/`$4` calls that have just completed.
const TRACK_OPEN_CALLS: &str = r#"
WITH completed AS (
    DELETE FROM open_calls o USING UNNEST($3::text[], $4::text[]) AS d(source_id, call_id)
    WHERE o.source_id = d.source_id AND o.call_id = d.call_id
)
INSERT INTO open_calls (source_id, call_id)
SELECT * FROM UNNEST($1::text[], $2::text[])
ON CONFLICT DO NOTHING
"#;

/// A complete call's new record waits here for the publisher; a newer version replaces an older
/// one not yet published (and frees it from a lease, so that it is produced again).
const UPSERT_OUTBOX: &str = r#"
INSERT INTO call_outbox (source_id, call_id, version, record)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::bytea[])
ON CONFLICT (source_id, call_id) DO UPDATE SET
    version = EXCLUDED.version, record = EXCLUDED.record, lease_until = NULL
"#;

/// Column arrays for `INSERT_EVENTS`, one entry per event.
#[derive(Default)]
struct EventColumns<'a> {
    source_id: Vec<&'a str>,
    event_id: Vec<&'a str>,
    call_id: Vec<&'a str>,
    leg_id: Vec<Option<&'a str>>,
    kind: Vec<&'static str>,
    occurred_at: Vec<DateTime<Utc>>,
    received_at: Vec<DateTime<Utc>>,
    raw_id: Vec<&'a str>,
    sequence: Vec<Option<i64>>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
    vendor: Vec<&'static str>,
    direction: Vec<&'static str>,
    from_raw: Vec<Option<&'a str>>,
    from_e164: Vec<Option<&'a str>>,
    to_raw: Vec<Option<&'a str>>,
    to_e164: Vec<Option<&'a str>>,
    agent_extension: Vec<Option<&'a str>>,
    agent_number: Vec<Option<&'a str>>,
    agent_email: Vec<Option<&'a str>>,
    agent_id: Vec<Option<&'a str>>,
    agent_match: Vec<Option<&'static str>>,
    contact_ids: Vec<Option<String>>,
    contact_match: Vec<Option<&'static str>>,
    responsible_agent_id: Vec<Option<&'a str>>,
    disposition: Vec<Option<&'static str>>,
    hangup_cause: Vec<Option<&'a str>>,
    recording_url: Vec<Option<&'a str>>,
    recording_id: Vec<Option<&'a str>>,
    recording_status: Vec<Option<&'static str>>,
    recording_error: Vec<Option<&'a str>>,
}

/// Text lists travel through UNNEST joined with the unit separator, which the call log's ids never
/// hold; a vendor's agent text that does is cut at it, the rest of it kept.
const SEPARATOR: char = '\u{1f}';

fn joined<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.push_str(item.split(SEPARATOR).next().unwrap_or(""));
    }
    out
}

/// `None` for an empty list: `string_to_array('', …)` would be one empty element, NULL is none.
fn joined_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Option<String> {
    Some(joined(items)).filter(|text| !text.is_empty())
}

impl<'a> EventColumns<'a> {
    fn from_events(events: &[&'a StoredEvent]) -> Self {
        let mut c = EventColumns::default();
        for StoredEvent { event: e, partition, offset } in events.iter().copied() {
            c.source_id.push(e.source_id.as_str());
            c.event_id.push(e.event_id.as_str());
            c.call_id.push(e.call_id.as_str());
            c.leg_id.push(e.leg_id.as_ref().map(|l| l.as_str()));
            c.kind.push(e.kind.as_str());
            c.occurred_at.push(e.occurred_at);
            c.received_at.push(e.received_at);
            c.raw_id.push(&e.raw_id);
            c.sequence.push(e.sequence);
            c.kafka_partition.push(*partition);
            c.kafka_offset.push(*offset);
            c.vendor.push(e.vendor.as_str());
            c.direction.push(e.direction.as_str());
            c.from_raw.push(e.from_raw.as_deref());
            c.from_e164.push(e.from_e164.as_ref().map(|n| n.as_str()));
            c.to_raw.push(e.to_raw.as_deref());
            c.to_e164.push(e.to_e164.as_ref().map(|n| n.as_str()));
            c.agent_extension.push(e.agent_extension.as_deref());
            c.agent_number.push(e.agent_number.as_deref());
            c.agent_email.push(e.agent_email.as_deref());
            c.agent_id.push(e.agent_id.as_deref());
            c.agent_match.push(e.agent_match.map(codes::agent_match_str));
            c.contact_ids.push(joined_list(e.contact_ids.iter().map(String::as_str)));
            c.contact_match.push(e.contact_match.map(codes::contact_match_str));
            c.responsible_agent_id.push(e.responsible_agent_id.as_deref());
            c.disposition.push(e.disposition.map(|d| d.as_str()));
            c.hangup_cause.push(e.hangup_cause.as_deref());
            c.recording_url.push(e.recording_url.as_deref());
            c.recording_id.push(e.recording_id.as_deref());
            c.recording_status.push(e.recording_status.and_then(codes::recording_status_str));
            c.recording_error.push(e.recording_error.as_deref());
        }
        c
    }
}

/// What is stored of a locked call, from `READ_CALLS` or `READ_DUE`.
fn stored_from_row(row: &tokio_postgres::Row) -> (CallKey, Stored) {
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

/// A token for the next write of a call row (migration 0006): unique per write, never 0.
/// A random start per process, then a counter through the splitmix64 finaliser (a bijection): no
/// system call per write, distinct within a process, and unpredictable across processes.
fn new_revision() -> i64 {
    static SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        let (high, low) = uuid::Uuid::now_v7().as_u64_pair();
        high ^ low
    });
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut z = SEED.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    match (z ^ (z >> 31)) as i64 {
        0 => 1,
        revision => revision,
    }
}

/// A leg's hash is stored as 32 hex digits followed by its leg id.
const LEG_HASH_HEX: usize = 32;

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// SHA-256 of what a value's `Hash` implementation feeds it: every field, in declaration order,
/// without serialising the value first (Avro or JSON encoding was most of the writer's CPU). The
/// stream is stable for a given build; a build that changes it only makes each call's next write
/// count as a change once.
struct FieldDigest(Sha256);

impl std::hash::Hasher for FieldDigest {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Never called: `field_digest` takes the whole SHA-256.
        0
    }
}

/// The first 16 bytes of the field digest of `value`.
fn field_digest(value: &impl std::hash::Hash) -> [u8; 16] {
    let mut state = FieldDigest(Sha256::new());
    value.hash(&mut state);
    let mut out = [0; 16];
    out.copy_from_slice(&state.0.finalize()[..16]);
    out
}

/// What a leg row holds, hashed to tell whether it must be written again.
fn leg_hash(leg: &LegRecord, event_count: i32) -> String {
    hex(&field_digest(&(leg, event_count))[..LEG_HASH_HEX / 2])
}

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
    }
}

/// Every identifier of a leg's agent, for the query API's agent filter (migration 0007).
fn agent_keys(agent: &AgentRef) -> Vec<String> {
    let mut keys: Vec<String> = [
        agent.agent_id.clone(),
        agent.extension.clone(),
        agent.number.clone(),
        agent.email.as_ref().map(|e| e.to_lowercase()),
    ]
    .into_iter()
    .flatten()
    .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The call log: the database pool, the record codec and the fold cache of this replica.
#[derive(Debug)]
pub struct CallLog {
    pool: Pool,
    codecs: Codecs,
    cache: FoldCache,
}

/// How many calls a writer keeps in its fold cache unless configured.
pub const DEFAULT_FOLD_CACHE_CALLS: usize = 50_000;

/// Why an attempt at a batch did not commit.
enum Attempt {
    Failed(WriteError),
    /// This many calls folded from the cache had been written by another writer since: rolled
    /// back.
    Stale(usize),
}

impl From<WriteError> for Attempt {
    fn from(error: WriteError) -> Self {
        Attempt::Failed(error)
    }
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(error: tokio_postgres::Error) -> Self {
        Attempt::Failed(error.into())
    }
}

impl From<switchboard_core::deadpool_postgres::PoolError> for Attempt {
    fn from(error: switchboard_core::deadpool_postgres::PoolError) -> Self {
        Attempt::Failed(error.into())
    }
}

impl CallLog {
    pub fn new(pool: Pool) -> Result<Self, WriteError> {
        Self::with_fold_cache(pool, DEFAULT_FOLD_CACHE_CALLS)
    }

    /// A call log whose fold cache holds up to `calls` calls (0: none).
    pub fn with_fold_cache(pool: Pool, calls: usize) -> Result<Self, WriteError> {
        Ok(Self { pool, codecs: Codecs::new()?, cache: FoldCache::new(calls) })
    }

    /// Writes one batch of events in one transaction.
    pub async fn write_batch(&self, events: &[StoredEvent]) -> Result<BatchOutcome, WriteError> {
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let keys: std::collections::HashSet<CallKey> =
            events.iter().map(|e| (e.event.source_id.to_string(), e.event.call_id.to_string())).collect();
        let _reservation = self.cache.reserve(keys.iter().cloned().collect());
        let (mut use_cache, mut stale) = (true, 0);
        loop {
            let attempt = self.attempt(events, use_cache).await;
            if attempt.is_err() {
                // What this attempt put in the cache did not commit (evicted while the calls are
                // still reserved, so that no other batch takes it meanwhile).
                self.cache.evict(&keys);
            }
            match attempt {
                Ok(outcome) => return Ok(BatchOutcome { stale, ..outcome }),
                Err(Attempt::Failed(error)) => return Err(error),
                Err(Attempt::Stale(calls)) => {
                    stale += calls as i64;
                    metrics::CALLLOG_FOLD_CACHE.with_label_values(&["stale"]).inc_by(calls as u64);
                    tracing::debug!(calls, "Calls changed by another writer; writing the batch again.");
                    if !use_cache {
                        // Under the calls' locks what was read cannot change; should it, the
                        // service retries the batch.
                        return Err(WriteError::Transient("a call changed under its lock".into()));
                    }
                    use_cache = false;
                }
            }
        }
    }

    /// One transaction for the batch; `use_cache`: fold the calls the cache holds from it.
    async fn attempt(&self, events: &[StoredEvent], use_cache: bool) -> Result<BatchOutcome, Attempt> {
        // One copy of each event: two deliveries of one event can differ (a PBX retry without its
        // own timestamp), and the first received is kept, so which wins does not depend on
        // batching.
        let mut kept: HashMap<(&str, &str), &StoredEvent> = HashMap::with_capacity(events.len());
        for stored in events {
            let event = &stored.event;
            let slot = kept.entry((event.source_id.as_str(), event.event_id.as_str())).or_insert(stored);
            if (event.received_at, &event.raw_id) < (slot.event.received_at, &slot.event.raw_id) {
                *slot = stored;
            }
        }
        // In key order, so that two transactions inserting some of the same events (a PBX retry
        // split over two batches in flight) queue on them instead of deadlocking.
        let mut distinct: Vec<&StoredEvent> = kept.values().copied().collect();
        distinct.sort_unstable_by_key(|e| (e.event.source_id.as_str(), e.event.event_id.as_str()));
        let c = EventColumns::from_events(&distinct);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let insert = tx.prepare_cached(INSERT_EVENTS).await?;
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = &[
            &c.source_id,
            &c.event_id,
            &c.call_id,
            &c.leg_id,
            &c.kind,
            &c.occurred_at,
            &c.received_at,
            &c.raw_id,
            &c.sequence,
            &c.kafka_partition,
            &c.kafka_offset,
            &c.vendor,
            &c.direction,
            &c.from_raw,
            &c.from_e164,
            &c.to_raw,
            &c.to_e164,
            &c.agent_extension,
            &c.agent_number,
            &c.agent_email,
            &c.agent_id,
            &c.agent_match,
            &c.contact_ids,
            &c.contact_match,
            &c.responsible_agent_id,
            &c.disposition,
            &c.hangup_cause,
            &c.recording_url,
            &c.recording_id,
            &c.recording_status,
            &c.recording_error,
        ];
        let inserted = tx.query(&insert, params).await?;
        let mut outcome = BatchOutcome { new_events: inserted.len() as i64, ..BatchOutcome::default() };
        let Some(now) = inserted.first().map(|row| row.get::<_, DateTime<Utc>>(2)) else {
            tx.commit().await?;
            return Ok(outcome);
        };

        // The events stored for the first time, grouped by call: all the events of a call that has
        // no row yet.
        let mut new_events: HashMap<CallKey, Vec<Event>> = HashMap::new();
        let mut vendors: HashMap<CallKey, String> = HashMap::new();
        for row in &inserted {
            let Some(stored) = kept.get(&(row.get::<_, &str>(0), row.get::<_, &str>(1))) else { continue };
            let event = &stored.event;
            let key = (event.source_id.to_string(), event.call_id.to_string());
            let _ = vendors.entry(key.clone()).or_insert_with(|| event.vendor.as_str().to_owned());
            new_events.entry(key).or_default().push(Event::from(event));
        }
        let all: Vec<CallKey> = vendors.keys().cloned().collect();
        let mut prepared = Prepared::default();

        // Before the locks, so that folding overlaps the previous batch's commit: the calls the
        // cache holds. A call an earlier batch of this replica is writing is not there (it took
        // the entry) and waits for the locks below; one another writer changes meanwhile fails
        // the revision check.
        let early = if use_cache { self.cache.take_unshared(&all) } else { HashMap::new() };
        let mut hits = early.len();
        for (key, cached) in early {
            let vendor = vendors.remove(&key).unwrap_or_default();
            let call = ToFold::cached(key, vendor, cached, &mut new_events);
            self.prepare(call, now, false, &mut prepared, &mut outcome)?;
        }

        let (sources, calls): (Vec<&str>, Vec<&str>) =
            all.iter().map(|(s, c)| (s.as_str(), c.as_str())).unzip();
        let lock = tx.prepare_cached(LOCK_CALLS).await?;
        let _ = tx.query(&lock, &[&sources, &calls]).await?;

        // The others once locked: an earlier batch of this replica that shared a call has put its
        // entry back by the time it released the lock; the rest is read.
        let mut late = if use_cache { self.cache.take(vendors.keys()) } else { HashMap::new() };
        hits += late.len();
        let (read_sources, read_calls): (Vec<&str>, Vec<&str>) = vendors
            .keys()
            .filter(|key| !late.contains_key(*key))
            .map(|(s, c)| (s.as_str(), c.as_str()))
            .unzip();
        let mut stored: HashMap<CallKey, Stored> = HashMap::new();
        if !read_calls.is_empty() {
            let read = tx.prepare_cached(READ_CALLS).await?;
            stored.extend(tx.query(&read, &[&read_sources, &read_calls]).await?.iter().map(stored_from_row));
        }
        // Calls with a row get all their events read back (this batch's included); those without
        // have only this batch's.
        let mut loaded = load_events(&tx, stored.keys()).await?;
        metrics::CALLLOG_FOLD_CACHE.with_label_values(&["miss"]).inc_by(stored.len() as u64);
        metrics::CALLLOG_FOLD_CACHE.with_label_values(&["hit"]).inc_by(hits as u64);
        outcome.from_cache = hits as i64;
        for (key, vendor) in vendors {
            let call = if let Some(cached) = late.remove(&key) {
                ToFold::cached(key, vendor, cached, &mut new_events)
            } else if let Some(previous) = stored.remove(&key) {
                let events = loaded.remove(&key).unwrap_or_default();
                ToFold { key, vendor, previous: Some(previous), events }
            } else {
                let events = new_events.remove(&key).unwrap_or_default();
                ToFold { key, vendor, previous: None, events }
            };
            self.prepare(call, now, false, &mut prepared, &mut outcome)?;
        }
        let written = match self.write(&tx, prepared, true, &mut outcome).await {
            // A leg or outbox row of a call without a row: the cache had an entry of a batch that
            // rolled back. Read it back like any call another writer changed.
            Err(WriteError::Rejected(error))
                if use_cache
                    && error.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
            {
                return Err(Attempt::Stale(1));
            }
            written => written?,
        };
        match written {
            0 => {
                tx.commit().await?;
                Ok(outcome)
            }
            stale => Err(Attempt::Stale(stale)),
        }
    }

    /// Completes calls that had no new event for `settle` (`ringing` for calls still ringing):
    /// marks up to `limit` of them settled and refolds them. Returns how many it found. Safe with
    /// several replicas running it at once: each call is taken by one.
    pub async fn settle_due(
        &self,
        settle: Duration,
        ringing: Duration,
        limit: i64,
    ) -> Result<(usize, BatchOutcome), WriteError> {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let (settle, ringing) = (millis(settle), millis(ringing));
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let due = tx.prepare_cached(DUE_CALLS).await?;
        let locked = tx.query(&due, &[&settle, &ringing, &limit]).await?;
        let mut outcome = BatchOutcome::default();
        if locked.is_empty() {
            tx.commit().await?;
            return Ok((0, outcome));
        }
        let sources: Vec<String> = locked.iter().map(|row| row.get(0)).collect();
        let calls: Vec<String> = locked.iter().map(|row| row.get(1)).collect();
        let read = tx.prepare_cached(READ_DUE).await?;
        let rows = tx.query(&read, &[&sources, &calls, &settle, &ringing]).await?;
        let now: DateTime<Utc> = rows.first().map_or_else(Utc::now, |row| row.get(9));
        let due: Vec<(CallKey, Stored)> = rows.iter().map(stored_from_row).collect();
        // The sweep rewrites these calls: this replica's cached copies would only be stale.
        self.cache.evict(due.iter().map(|(key, _)| key));
        let mut loaded = load_events(&tx, due.iter().map(|(key, _)| key)).await?;
        let mut prepared = Prepared::default();
        for ((key, previous), row) in due.into_iter().zip(&rows) {
            let events = loaded.remove(&key).unwrap_or_default();
            let call = ToFold { key, vendor: row.get(8), previous: Some(previous), events };
            self.prepare(call, now, true, &mut prepared, &mut outcome)?;
        }
        if self.write(&tx, prepared, false, &mut outcome).await? > 0 {
            // Read under the locks, so no other writer can have changed them.
            return Err(WriteError::Transient("a call changed under its lock".into()));
        }
        tx.commit().await?;
        Ok((locked.len(), outcome))
    }

    /// Folds one call from all its events and adds what changed to `prepared`: the call row, the
    /// legs that changed, and the record of a complete call that changed. The version grows only
    /// if the record changed. `settle`: the sweep is completing the call.
    fn prepare(
        &self,
        call: ToFold,
        now: DateTime<Utc>,
        settle: bool,
        prepared: &mut Prepared,
        outcome: &mut BatchOutcome,
    ) -> Result<(), WriteError> {
        let ToFold { key, vendor, previous, events } = call;
        let is_new = previous.is_none();
        let previous = previous.unwrap_or_default();
        let settled = previous.settled || settle;
        let (source, call) = (&key.0, &key.1);
        let (Ok(source_id), Ok(call_id)) = (SourceId::parse(source), CallId::parse(call)) else {
            tracing::error!(%source, %call, "Stored call key does not parse.");
            return Ok(());
        };
        let vendor: Vendor = vendor.parse().unwrap_or(Vendor::Generic);
        let Some(folded) = fold(&source_id, vendor, &call_id, &events, settled) else {
            // Only a call from before migration 0004 whose events were removed by hand: there is
            // nothing to fold, and the sweep completes it as it stands.
            tracing::warn!(%source, %call, "Call without events.");
            if settle {
                prepared.open.completed(source, call);
                prepared.without_events.push(key);
            }
            return Ok(());
        };
        let Folded { mut record, event_count, leg_event_counts, first_received_at } = folded;
        let complete = record.completion.is_some();
        match (is_new, previous.completed_at.is_some(), complete) {
            (true, _, false) => prepared.open.opened(source, call),
            (false, false, true) => prepared.open.completed(source, call),
            _ => {}
        }
        record.completed_at = previous.completed_at.or(complete.then_some(now));
        // The version counts changes of what a CRM sees; event counts are bookkeeping and are
        // written without one.
        let hash = field_digest(&record).to_vec();
        record.version = previous.version;
        if previous.content_hash.as_deref() != Some(hash.as_slice()) {
            record.version += 1;
            outcome.calls += 1;
            if complete && previous.completed_at.is_none() {
                if let Some(result) = record.outcome {
                    outcome.completed.push((record.direction, result));
                }
            } else if previous.completed_at.is_some() {
                outcome.late_updates += 1;
            }
            if complete {
                prepared.outbox.push(&record, self.codecs.call_record.encode(&record)?);
            }
        }
        let leg_hashes = push_legs(
            &record,
            &leg_event_counts,
            &previous.leg_hashes,
            (&mut prepared.new_legs, &mut prepared.changed_legs),
        );
        let revision = new_revision();
        let rows = if is_new { &mut prepared.new_calls } else { &mut prepared.known_calls };
        rows.push(
            &record,
            (event_count, first_received_at, settled),
            (revision, previous.revision),
            hash.clone(),
            &leg_hashes,
        );
        if !settle && !complete {
            let stored = Stored {
                revision,
                version: record.version,
                content_hash: Some(hash),
                settled,
                completed_at: record.completed_at,
                leg_hashes: leg_hashes.into_iter().map(|(leg, hash)| (leg.to_owned(), hash)).collect(),
            };
            prepared.in_progress.push((key, CachedCall { stored, events }));
        }
        Ok(())
    }

    /// Writes what `prepare` gathered: the calls, their legs, the outbox and the open calls, in
    /// one pipeline on the transaction's connection. Calls still in progress go into the fold
    /// cache first. `new_events`: the calls gained events (which restarts their settle timer).
    /// Returns how many calls were not updated because their row no longer had the revision
    /// their fold started from (the caller rolls back).
    async fn write(
        &self,
        tx: &Transaction<'_>,
        prepared: Prepared,
        new_events: bool,
        outcome: &mut BatchOutcome,
    ) -> Result<usize, WriteError> {
        let Prepared {
            new_calls,
            known_calls,
            new_legs,
            changed_legs,
            outbox,
            open,
            in_progress,
            without_events,
        } = prepared;
        outcome.publishable |= !outbox.source_id.is_empty();
        outcome.legs += (new_legs.source_id.len() + changed_legs.source_id.len()) as i64;
        for (source, call) in &without_events {
            let _ = tx
                .execute(
                    "UPDATE calls SET settled = true, completion = 'settled', completed_at = now(),
                                      revision = $3
                     WHERE source_id = $1 AND call_id = $2",
                    &[source, call, &new_revision()],
                )
                .await?;
        }
        // Before the commit, so that this replica's next batch finds them (see `cache`).
        self.cache.put(in_progress);
        // In order: the calls first, as legs and the outbox refer to them. Statements are
        // prepared before any runs, so that the executions go out in this order; empty ones are
        // skipped.
        let (insert_calls, update_calls, insert_legs, update_legs, enqueue, track) = tokio::try_join!(
            tx.prepare_cached(INSERT_CALLS),
            tx.prepare_cached(UPDATE_CALLS),
            tx.prepare_cached(INSERT_LEGS),
            tx.prepare_cached(UPDATE_LEGS),
            tx.prepare_cached(UPSERT_OUTBOX),
            tx.prepare_cached(TRACK_OPEN_CALLS),
        )?;
        let insert_calls = new_calls.execute(tx, &insert_calls, None);
        let update_calls = known_calls.execute(tx, &update_calls, Some(new_events));
        let insert_legs = new_legs.execute(tx, &insert_legs);
        let update_legs = changed_legs.execute(tx, &update_legs);
        let enqueue = outbox.execute(tx, &enqueue);
        let track = open.execute(tx, &track);
        // Polled in statement order: once one statement fails, the later ones fail with "current
        // transaction is aborted", and the first error is the one that says what happened.
        let (_, updated, _, _, _, _) =
            tokio::try_join!(biased; insert_calls, update_calls, insert_legs, update_legs, enqueue, track)?;
        Ok(known_calls.source_id.len().saturating_sub(updated as usize))
    }
}

/// Every stored event of `keys`' calls.
async fn load_events<'k>(
    tx: &Transaction<'_>,
    keys: impl Iterator<Item = &'k CallKey>,
) -> Result<HashMap<CallKey, Vec<Event>>, WriteError> {
    let (sources, calls): (Vec<&str>, Vec<&str>) = keys.map(|(s, c)| (s.as_str(), c.as_str())).unzip();
    let mut events: HashMap<CallKey, Vec<Event>> = HashMap::new();
    if calls.is_empty() {
        return Ok(events);
    }
    let load = tx.prepare_cached(LOAD_EVENTS).await?;
    for row in tx.query(&load, &[&sources, &calls]).await? {
        events.entry((row.get(0), row.get(1))).or_default().push(event_from_row(&row));
    }
    Ok(events)
}

/// One call to fold: its key and vendor, what is stored of it (`None`: no row yet), and every
/// event it has.
struct ToFold {
    key: CallKey,
    vendor: String,
    previous: Option<Stored>,
    events: Vec<Event>,
}

impl ToFold {
    /// A call from the fold cache, with the events this batch stored for it added.
    fn cached(
        key: CallKey,
        vendor: String,
        CachedCall { stored, mut events }: CachedCall,
        new_events: &mut HashMap<CallKey, Vec<Event>>,
    ) -> Self {
        events.extend(new_events.remove(&key).unwrap_or_default());
        Self { key, vendor, previous: Some(stored), events }
    }
}

/// The rows a transaction writes, gathered call by call.
#[derive(Default)]
struct Prepared {
    new_calls: CallRows,
    known_calls: CallRows,
    new_legs: LegRows,
    changed_legs: LegRows,
    outbox: OutboxRows,
    open: OpenCalls,
    /// Calls still in progress, for the fold cache.
    in_progress: Vec<(CallKey, CachedCall)>,
    /// Calls the sweep completes that have no events to fold.
    without_events: Vec<CallKey>,
}

/// Column arrays for `TRACK_OPEN_CALLS`.
#[derive(Default)]
struct OpenCalls {
    opened_sources: Vec<String>,
    opened_calls: Vec<String>,
    completed_sources: Vec<String>,
    completed_calls: Vec<String>,
}

impl OpenCalls {
    fn opened(&mut self, source: &str, call: &str) {
        self.opened_sources.push(source.to_owned());
        self.opened_calls.push(call.to_owned());
    }

    fn completed(&mut self, source: &str, call: &str) {
        self.completed_sources.push(source.to_owned());
        self.completed_calls.push(call.to_owned());
    }

    async fn execute(
        &self,
        tx: &Transaction<'_>,
        statement: &Statement,
    ) -> Result<u64, tokio_postgres::Error> {
        if self.opened_calls.is_empty() && self.completed_calls.is_empty() {
            return Ok(0);
        }
        tx.execute(
            statement,
            &[&self.opened_sources, &self.opened_calls, &self.completed_sources, &self.completed_calls],
        )
        .await
    }
}

/// Column arrays for `UPSERT_OUTBOX`.
#[derive(Default)]
struct OutboxRows {
    source_id: Vec<String>,
    call_id: Vec<String>,
    version: Vec<i64>,
    record: Vec<Vec<u8>>,
}

impl OutboxRows {
    async fn execute(
        &self,
        tx: &Transaction<'_>,
        statement: &Statement,
    ) -> Result<u64, tokio_postgres::Error> {
        if self.source_id.is_empty() {
            return Ok(0);
        }
        tx.execute(statement, &[&self.source_id, &self.call_id, &self.version, &self.record]).await
    }

    fn push(&mut self, record: &CallRecord, encoded: Vec<u8>) {
        self.source_id.push(record.source_id.to_string());
        self.call_id.push(record.call_id.to_string());
        self.version.push(record.version);
        self.record.push(encoded);
    }
}

/// Column arrays for `UPSERT_CALLS`.
#[derive(Default)]
struct CallRows {
    source_id: Vec<String>,
    call_id: Vec<String>,
    vendor: Vec<String>,
    direction: Vec<&'static str>,
    status: Vec<&'static str>,
    outcome: Vec<Option<&'static str>>,
    from_number: Vec<Option<String>>,
    to_number: Vec<Option<String>>,
    started_at: Vec<DateTime<Utc>>,
    answered_at: Vec<Option<DateTime<Utc>>>,
    ended_at: Vec<Option<DateTime<Utc>>>,
    disposition: Vec<Option<&'static str>>,
    hangup_cause: Vec<Option<String>>,
    agent_id: Vec<Option<String>>,
    agent_match: Vec<Option<&'static str>>,
    agent_extension: Vec<Option<String>>,
    agent_number: Vec<Option<String>>,
    agent_email: Vec<Option<String>>,
    contact_ids: Vec<Option<String>>,
    contact_match: Vec<Option<&'static str>>,
    responsible_agent_id: Vec<Option<String>>,
    recording_url: Vec<Option<String>>,
    recording_id: Vec<Option<String>>,
    event_count: Vec<i32>,
    leg_count: Vec<i32>,
    first_received_at: Vec<DateTime<Utc>>,
    settled: Vec<bool>,
    completion: Vec<Option<&'static str>>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    version: Vec<i64>,
    content_hash: Vec<Option<Vec<u8>>>,
    leg_hashes: Vec<Option<String>>,
    recording_status: Vec<Option<&'static str>>,
    recording_error: Vec<Option<String>>,
    revision: Vec<i64>,
    /// The revision the fold started from (0 for a new call).
    expected_revision: Vec<i64>,
}

impl CallRows {
    /// Runs `INSERT_CALLS` or `UPDATE_CALLS` (whose `$37` is `new_events`) on these rows.
    async fn execute(
        &self,
        tx: &Transaction<'_>,
        statement: &Statement,
        new_events: Option<bool>,
    ) -> Result<u64, tokio_postgres::Error> {
        if self.source_id.is_empty() {
            return Ok(0);
        }
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &self.source_id,
            &self.call_id,
            &self.vendor,
            &self.direction,
            &self.status,
            &self.outcome,
            &self.from_number,
            &self.to_number,
            &self.started_at,
            &self.answered_at,
            &self.ended_at,
            &self.disposition,
            &self.hangup_cause,
            &self.agent_id,
            &self.agent_match,
            &self.agent_extension,
            &self.agent_number,
            &self.agent_email,
            &self.contact_ids,
            &self.contact_match,
            &self.responsible_agent_id,
            &self.recording_url,
            &self.recording_id,
            &self.event_count,
            &self.leg_count,
            &self.first_received_at,
            &self.settled,
            &self.completion,
            &self.completed_at,
            &self.version,
            &self.content_hash,
            &self.leg_hashes,
            &self.recording_status,
            &self.recording_error,
            &self.revision,
            &self.expected_revision,
        ];
        if let Some(flag) = &new_events {
            params.push(flag);
        }
        tx.execute(statement, &params).await
    }

    fn push(
        &mut self,
        r: &CallRecord,
        (event_count, first_received_at, settled): (i32, DateTime<Utc>, bool),
        (revision, expected_revision): (i64, i64),
        hash: Vec<u8>,
        leg_hashes: &[(&str, String)],
    ) {
        let agent = r.agent.clone().unwrap_or_default();
        self.source_id.push(r.source_id.to_string());
        self.call_id.push(r.call_id.to_string());
        self.vendor.push(r.vendor.as_str().to_owned());
        self.direction.push(r.direction.as_str());
        self.status.push(status_str(r.status));
        self.outcome.push(r.outcome.map(Outcome::as_str));
        self.from_number.push(r.from_number.clone());
        self.to_number.push(r.to_number.clone());
        self.started_at.push(r.started_at);
        self.answered_at.push(r.answered_at);
        self.ended_at.push(r.ended_at);
        self.disposition.push(r.disposition.map(|d| d.as_str()));
        self.hangup_cause.push(r.hangup_cause.clone());
        self.agent_id.push(agent.agent_id);
        self.agent_match.push(agent.agent_match.map(codes::agent_match_str));
        self.agent_extension.push(agent.extension);
        self.agent_number.push(agent.number);
        self.agent_email.push(agent.email);
        self.contact_ids.push(joined_list(r.contact_ids.iter().map(String::as_str)));
        self.contact_match.push(r.contact_match.map(codes::contact_match_str));
        self.responsible_agent_id.push(r.responsible_agent_id.clone());
        self.recording_url.push(r.recording_url.clone());
        self.recording_id.push(r.recording_id.clone());
        self.event_count.push(event_count);
        self.leg_count.push(r.legs.len() as i32);
        self.first_received_at.push(first_received_at);
        self.settled.push(settled);
        self.completion.push(r.completion.map(Completion::as_str));
        self.completed_at.push(r.completed_at);
        self.version.push(r.version);
        self.content_hash.push(Some(hash));
        let leg_hashes: Vec<String> = leg_hashes.iter().map(|(leg, hash)| format!("{hash}{leg}")).collect();
        self.leg_hashes.push(joined_list(leg_hashes.iter().map(String::as_str)));
        self.recording_status.push(r.recording_status.and_then(codes::recording_status_str));
        self.recording_error.push(r.recording_error.clone());
        self.revision.push(revision);
        self.expected_revision.push(expected_revision);
    }
}

fn status_str(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Ringing | CallStatus::Unknown => "ringing",
        CallStatus::Answered => "answered",
        CallStatus::Ended => "ended",
    }
}

/// Column arrays for `UPSERT_LEGS`.
#[derive(Default)]
struct LegRows {
    source_id: Vec<String>,
    call_id: Vec<String>,
    leg_id: Vec<String>,
    status: Vec<&'static str>,
    answered: Vec<bool>,
    agent_id: Vec<Option<String>>,
    agent_match: Vec<Option<&'static str>>,
    agent_extension: Vec<Option<String>>,
    agent_number: Vec<Option<String>>,
    agent_email: Vec<Option<String>>,
    started_at: Vec<DateTime<Utc>>,
    rang_at: Vec<Option<DateTime<Utc>>>,
    answered_at: Vec<Option<DateTime<Utc>>>,
    ended_at: Vec<Option<DateTime<Utc>>>,
    disposition: Vec<Option<&'static str>>,
    hangup_cause: Vec<Option<String>>,
    recording_url: Vec<Option<String>>,
    recording_id: Vec<Option<String>>,
    event_count: Vec<i32>,
    agents: Vec<Option<String>>,
}

impl LegRows {
    /// Runs `INSERT_LEGS` or `UPDATE_LEGS` on these rows.
    async fn execute(
        &self,
        tx: &Transaction<'_>,
        statement: &Statement,
    ) -> Result<u64, tokio_postgres::Error> {
        if self.source_id.is_empty() {
            return Ok(0);
        }
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 20] = [
            &self.source_id,
            &self.call_id,
            &self.leg_id,
            &self.status,
            &self.answered,
            &self.agent_id,
            &self.agent_match,
            &self.agent_extension,
            &self.agent_number,
            &self.agent_email,
            &self.started_at,
            &self.rang_at,
            &self.answered_at,
            &self.ended_at,
            &self.disposition,
            &self.hangup_cause,
            &self.recording_url,
            &self.recording_id,
            &self.event_count,
            &self.agents,
        ];
        tx.execute(statement, &params).await
    }

    fn push(&mut self, r: &CallRecord, leg: &LegRecord, count: i32) {
        self.source_id.push(r.source_id.to_string());
        self.call_id.push(r.call_id.to_string());
        self.leg_id.push(leg.leg_id.clone());
        self.status.push(status_str(leg.status));
        self.answered.push(leg.answered);
        self.agent_id.push(leg.agent.agent_id.clone());
        self.agent_match.push(leg.agent.agent_match.map(codes::agent_match_str));
        self.agent_extension.push(leg.agent.extension.clone());
        self.agent_number.push(leg.agent.number.clone());
        self.agent_email.push(leg.agent.email.clone());
        self.started_at.push(leg.started_at);
        self.rang_at.push(leg.rang_at);
        self.answered_at.push(leg.answered_at);
        self.ended_at.push(leg.ended_at);
        self.disposition.push(leg.disposition.map(|d| d.as_str()));
        self.hangup_cause.push(leg.hangup_cause.clone());
        self.recording_url.push(leg.recording_url.clone());
        self.recording_id.push(leg.recording_id.clone());
        self.event_count.push(count);
        self.agents.push(joined_list(agent_keys(&leg.agent).iter().map(String::as_str)));
    }
}

/// Sorts a call's legs into those never written and those whose row changed, leaving out the
/// unchanged; returns every leg's id and hash, for the call row.
fn push_legs<'r>(
    r: &'r CallRecord,
    event_counts: &[i32],
    previous: &HashMap<String, String>,
    (new, changed): (&mut LegRows, &mut LegRows),
) -> Vec<(&'r str, String)> {
    let mut hashes = Vec::with_capacity(r.legs.len());
    for (leg, count) in r.legs.iter().zip(event_counts) {
        let hash = leg_hash(leg, *count);
        match previous.get(&leg.leg_id) {
            None => new.push(r, leg, *count),
            Some(written) if *written != hash => changed.push(r, leg, *count),
            Some(_) => {}
        }
        hashes.push((leg.leg_id.as_str(), hash));
    }
    hashes
}
