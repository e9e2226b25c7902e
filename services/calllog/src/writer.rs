//! Folds a batch of call events into `call_events`, `calls` and `call_legs` with one statement in
//! one transaction.
//!
//! Idempotent: events are inserted `ON CONFLICT DO NOTHING` on their dedupe key, and only the
//! events that were actually new feed the call and leg upserts, so replaying a topic (or a batch
//! after a crash) changes nothing. Order-independent for times and counts: start and answer times
//! merge with `LEAST`, end times with `GREATEST`, counts add up only new events, and the hangup
//! cause is the one of the latest hangup. Descriptive fields (numbers, agent, recording link)
//! keep the first value written across batches; choosing among them is the state machine's job.

use chrono::{DateTime, Utc};
use switchboard_core::deadpool_postgres::Pool;
use switchboard_core::model::CallEvent;
use switchboard_core::tokio_postgres;

/// A decoded event with where it was read from.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event: CallEvent,
    pub partition: i32,
    pub offset: i64,
}

/// What one batch changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    pub new_events: i64,
    pub calls: i64,
    pub legs: i64,
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

const FOLD_SQL: &str = r#"
WITH incoming AS (
    SELECT DISTINCT ON (source_id, event_id) *
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[],
                $12::timestamptz[], $13::text[], $14::int8[], $15::text[], $16::text[],
                $17::text[], $18::int4[], $19::int8[])
        AS t(source_id, event_id, call_id, leg_id, kind, direction, from_number, to_number,
             agent_number, agent_email, occurred_at, received_at, raw_id, sequence,
             hangup_cause, recording_url, vendor, kafka_partition, kafka_offset)
    -- Two deliveries of one event can differ (a PBX retry without its own timestamp); keep the
    -- first received, so which copy wins does not depend on batching.
    ORDER BY source_id, event_id, received_at, raw_id
),
inserted AS (
    INSERT INTO call_events (source_id, event_id, call_id, leg_id, kind, occurred_at,
                             received_at, raw_id, sequence, kafka_partition, kafka_offset)
    SELECT source_id, event_id, call_id, leg_id, kind, occurred_at,
           received_at, raw_id, sequence, kafka_partition, kafka_offset
    FROM incoming
    ON CONFLICT (source_id, event_id) DO NOTHING
    RETURNING source_id, event_id
),
fresh AS (
    SELECT incoming.* FROM incoming JOIN inserted USING (source_id, event_id)
),
upserted_calls AS (
    INSERT INTO calls AS c (source_id, call_id, vendor, direction, from_number, to_number,
                            agent_number, agent_email, started_at, answered_at, ended_at,
                            recording_url, hangup_cause, event_count, first_received_at)
    SELECT source_id, call_id, min(vendor),
           COALESCE((array_agg(direction ORDER BY occurred_at, event_id)
                     FILTER (WHERE direction <> 'unknown'))[1], 'unknown'),
           (array_agg(from_number ORDER BY occurred_at, event_id) FILTER (WHERE from_number IS NOT NULL))[1],
           (array_agg(to_number ORDER BY occurred_at, event_id) FILTER (WHERE to_number IS NOT NULL))[1],
           (array_agg(agent_number ORDER BY kind = 'answered' DESC, occurred_at, event_id)
                FILTER (WHERE agent_number IS NOT NULL))[1],
           (array_agg(agent_email ORDER BY kind = 'answered' DESC, occurred_at, event_id)
                FILTER (WHERE agent_email IS NOT NULL))[1],
           min(occurred_at),
           min(occurred_at) FILTER (WHERE kind = 'answered'),
           max(occurred_at) FILTER (WHERE kind = 'hangup'),
           (array_agg(recording_url ORDER BY occurred_at DESC, event_id)
                FILTER (WHERE recording_url IS NOT NULL))[1],
           (array_agg(hangup_cause ORDER BY occurred_at DESC, hangup_cause DESC)
                FILTER (WHERE kind = 'hangup' AND hangup_cause IS NOT NULL))[1],
           count(*), min(received_at)
    FROM fresh
    GROUP BY source_id, call_id
    ON CONFLICT (source_id, call_id) DO UPDATE SET
        direction = CASE WHEN c.direction = 'unknown' THEN EXCLUDED.direction ELSE c.direction END,
        from_number = COALESCE(c.from_number, EXCLUDED.from_number),
        to_number = COALESCE(c.to_number, EXCLUDED.to_number),
        agent_number = COALESCE(c.agent_number, EXCLUDED.agent_number),
        agent_email = COALESCE(c.agent_email, EXCLUDED.agent_email),
        started_at = LEAST(c.started_at, EXCLUDED.started_at),
        answered_at = LEAST(c.answered_at, EXCLUDED.answered_at),
        ended_at = GREATEST(c.ended_at, EXCLUDED.ended_at),
        recording_url = COALESCE(c.recording_url, EXCLUDED.recording_url),
        -- The cause of whichever hangup is latest; on a tie the greater text, so any order of
        -- batches gives the same answer.
        hangup_cause = CASE
            WHEN EXCLUDED.hangup_cause IS NULL THEN c.hangup_cause
            WHEN c.hangup_cause IS NULL OR EXCLUDED.ended_at > c.ended_at THEN EXCLUDED.hangup_cause
            WHEN EXCLUDED.ended_at = c.ended_at THEN GREATEST(c.hangup_cause, EXCLUDED.hangup_cause)
            ELSE c.hangup_cause END,
        event_count = c.event_count + EXCLUDED.event_count,
        first_received_at = LEAST(c.first_received_at, EXCLUDED.first_received_at),
        updated_at = now()
    RETURNING 1
),
upserted_legs AS (
    INSERT INTO call_legs AS l (source_id, call_id, leg_id, agent_number, agent_email,
                                started_at, answered_at, ended_at, hangup_cause, event_count)
    SELECT source_id, call_id, COALESCE(leg_id, call_id),
           (array_agg(agent_number ORDER BY occurred_at, event_id) FILTER (WHERE agent_number IS NOT NULL))[1],
           (array_agg(agent_email ORDER BY occurred_at, event_id) FILTER (WHERE agent_email IS NOT NULL))[1],
           min(occurred_at),
           min(occurred_at) FILTER (WHERE kind = 'answered'),
           max(occurred_at) FILTER (WHERE kind = 'hangup'),
           (array_agg(hangup_cause ORDER BY occurred_at DESC, hangup_cause DESC)
                FILTER (WHERE kind = 'hangup' AND hangup_cause IS NOT NULL))[1],
           count(*)
    FROM fresh
    GROUP BY source_id, call_id, COALESCE(leg_id, call_id)
    ON CONFLICT (source_id, call_id, leg_id) DO UPDATE SET
        agent_number = COALESCE(l.agent_number, EXCLUDED.agent_number),
        agent_email = COALESCE(l.agent_email, EXCLUDED.agent_email),
        started_at = LEAST(l.started_at, EXCLUDED.started_at),
        answered_at = LEAST(l.answered_at, EXCLUDED.answered_at),
        ended_at = GREATEST(l.ended_at, EXCLUDED.ended_at),
        hangup_cause = CASE
            WHEN EXCLUDED.hangup_cause IS NULL THEN l.hangup_cause
            WHEN l.hangup_cause IS NULL OR EXCLUDED.ended_at > l.ended_at THEN EXCLUDED.hangup_cause
            WHEN EXCLUDED.ended_at = l.ended_at THEN GREATEST(l.hangup_cause, EXCLUDED.hangup_cause)
            ELSE l.hangup_cause END,
        event_count = l.event_count + EXCLUDED.event_count,
        updated_at = now()
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted),
       (SELECT count(*) FROM upserted_calls),
       (SELECT count(*) FROM upserted_legs)
"#;

/// Column arrays for `FOLD_SQL`, one entry per event.
#[derive(Default)]
struct Columns<'a> {
    source_id: Vec<&'a str>,
    event_id: Vec<&'a str>,
    call_id: Vec<&'a str>,
    leg_id: Vec<Option<&'a str>>,
    kind: Vec<&'static str>,
    direction: Vec<&'static str>,
    from_number: Vec<Option<&'a str>>,
    to_number: Vec<Option<&'a str>>,
    agent_number: Vec<Option<&'a str>>,
    agent_email: Vec<Option<&'a str>>,
    occurred_at: Vec<DateTime<Utc>>,
    received_at: Vec<DateTime<Utc>>,
    raw_id: Vec<&'a str>,
    sequence: Vec<Option<i64>>,
    hangup_cause: Vec<Option<&'a str>>,
    recording_url: Vec<Option<&'a str>>,
    vendor: Vec<&'static str>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn from_events(events: &'a [StoredEvent]) -> Self {
        let mut c = Columns::default();
        for StoredEvent { event: e, partition, offset } in events {
            c.source_id.push(e.source_id.as_str());
            c.event_id.push(e.event_id.as_str());
            c.call_id.push(e.call_id.as_str());
            c.leg_id.push(e.leg_id.as_ref().map(|l| l.as_str()));
            c.kind.push(e.kind.as_str());
            c.direction.push(e.direction.as_str());
            // The E.164 form when the number parsed, else what the PBX sent (an extension).
            c.from_number.push(e.from_e164.as_ref().map(|n| n.as_str()).or(e.from_raw.as_deref()));
            c.to_number.push(e.to_e164.as_ref().map(|n| n.as_str()).or(e.to_raw.as_deref()));
            // The call log has one agent column until #3 splits extension from number.
            c.agent_number.push(e.agent_number.as_deref().or(e.agent_extension.as_deref()));
            c.agent_email.push(e.agent_email.as_deref());
            c.occurred_at.push(e.occurred_at);
            c.received_at.push(e.received_at);
            c.raw_id.push(&e.raw_id);
            c.sequence.push(e.sequence);
            c.hangup_cause.push(e.hangup_cause.as_deref().or(e.disposition.map(|d| d.as_str())));
            c.recording_url.push(e.recording_url.as_deref());
            c.vendor.push(e.vendor.as_str());
            c.kafka_partition.push(*partition);
            c.kafka_offset.push(*offset);
        }
        c
    }
}

/// Writes one batch in one transaction.
pub async fn write_batch(pool: &Pool, events: &[StoredEvent]) -> Result<BatchOutcome, WriteError> {
    if events.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let c = Columns::from_events(events);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let statement = tx.prepare_cached(FOLD_SQL).await?;
    let row = tx
        .query_one(
            &statement,
            &[
                &c.source_id,
                &c.event_id,
                &c.call_id,
                &c.leg_id,
                &c.kind,
                &c.direction,
                &c.from_number,
                &c.to_number,
                &c.agent_number,
                &c.agent_email,
                &c.occurred_at,
                &c.received_at,
                &c.raw_id,
                &c.sequence,
                &c.hangup_cause,
                &c.recording_url,
                &c.vendor,
                &c.kafka_partition,
                &c.kafka_offset,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(BatchOutcome { new_events: row.get(0), calls: row.get(1), legs: row.get(2) })
}
