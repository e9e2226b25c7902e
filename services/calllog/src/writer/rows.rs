//! The rows the writer sends, one type per table, each declared column by column with the value a
//! row gives it (see [`columns!`]); the statements in `sql` are rendered from the same lists.

use chrono::{DateTime, Utc};
use switchboard_core::model::{AgentRef, CallEvent, CallRecord, CallStatus, Completion, LegRecord, Outcome};
use tokio_postgres::types::ToSql;

use super::table::{Rows, columns, joined_list};
use crate::codes;

columns! {
    /// `call_events`: one row per distinct event of the batch.
    struct EventRows<'a>;
    fn push(e: &'a CallEvent, partition: i32, offset: i64) {}
    source_id (text, key): &'a str = e.source_id.as_str(),
    event_id (text, key): &'a str = e.event_id.as_str(),
    call_id (text): &'a str = e.call_id.as_str(),
    leg_id (text): Option<&'a str> = e.leg_id.as_ref().map(|l| l.as_str()),
    kind (text): &'static str = e.kind.as_str(),
    occurred_at (timestamptz): DateTime<Utc> = e.occurred_at,
    received_at (timestamptz): DateTime<Utc> = e.received_at,
    raw_id (text): &'a str = &e.raw_id,
    sequence (int8): Option<i64> = e.sequence,
    kafka_partition (int4): i32 = partition,
    kafka_offset (int8): i64 = offset,
    vendor (text): &'static str = e.vendor.as_str(),
    direction (text): &'static str = e.direction.as_str(),
    from_raw (text): Option<&'a str> = e.from_raw.as_deref(),
    from_e164 (text): Option<&'a str> = e.from_e164.as_ref().map(|n| n.as_str()),
    to_raw (text): Option<&'a str> = e.to_raw.as_deref(),
    to_e164 (text): Option<&'a str> = e.to_e164.as_ref().map(|n| n.as_str()),
    agent_extension (text): Option<&'a str> = e.agent_extension.as_deref(),
    agent_number (text): Option<&'a str> = e.agent_number.as_deref(),
    agent_email (text): Option<&'a str> = e.agent_email.as_deref(),
    agent_id (text): Option<&'a str> = e.agent_id.as_deref(),
    agent_match (text): Option<&'static str> = e.agent_match.map(codes::agent_match_str),
    contact_ids (text, list): Option<String> = joined_list(&e.contact_ids),
    contact_match (text): Option<&'static str> = e.contact_match.map(codes::contact_match_str),
    responsible_agent_id (text): Option<&'a str> = e.responsible_agent_id.as_deref(),
    disposition (text): Option<&'static str> = e.disposition.map(|d| d.as_str()),
    hangup_cause (text): Option<&'a str> = e.hangup_cause.as_deref(),
    recording_url (text): Option<&'a str> = e.recording_url.as_deref(),
    recording_id (text): Option<&'a str> = e.recording_id.as_deref(),
    recording_status (text): Option<&'static str> = e.recording_status.and_then(codes::recording_status_str),
    recording_error (text): Option<&'a str> = e.recording_error.as_deref(),
    queue (text): Option<&'a str> = e.queue.as_deref(),
    wrap_up_code (text): Option<&'a str> = e.wrap_up.as_ref().and_then(|w| w.code.as_deref()),
    wrap_up_label (text): Option<&'a str> = e.wrap_up.as_ref().and_then(|w| w.label.as_deref()),
    wrap_up_note (text): Option<&'a str> = e.wrap_up.as_ref().and_then(|w| w.note.as_deref()),
    wrap_up_tags (text, list): Option<String> = e.wrap_up.as_ref().and_then(|w| joined_list(&w.tags)),
    wrap_up_agent_id (text): Option<&'a str> = e.wrap_up.as_ref().and_then(|w| w.agent_id.as_deref()),
    wrap_up_at (timestamptz): Option<DateTime<Utc>> = e.wrap_up.as_ref().map(|w| w.set_at),
}

/// A call row: the folded record and what only the database keeps of the call.
pub(super) struct CallRow<'r> {
    pub(super) record: &'r CallRecord,
    /// Distinct events of the call.
    pub(super) event_count: i32,
    pub(super) first_received_at: DateTime<Utc>,
    pub(super) settled: bool,
    pub(super) content_hash: Vec<u8>,
    /// Each leg's id and the hash of its row.
    pub(super) leg_hashes: &'r [(&'r str, String)],
    /// The token of this write.
    pub(super) revision: i64,
    /// The revision the fold started from (0 for a new call).
    pub(super) expected_revision: i64,
}

columns! {
    /// `calls`: one row per call written.
    struct CallRows;
    fn push(row: CallRow<'_>) {
        let r = row.record;
        let agent = r.agent.clone().unwrap_or_default();
    }
    source_id (text, key): String = r.source_id.to_string(),
    call_id (text, key): String = r.call_id.to_string(),
    vendor (text): String = r.vendor.as_str().to_owned(),
    direction (text): &'static str = r.direction.as_str(),
    status (text): &'static str = status_str(r.status),
    outcome (text): Option<&'static str> = r.outcome.map(Outcome::as_str),
    from_number (text): Option<String> = r.from_number.clone(),
    to_number (text): Option<String> = r.to_number.clone(),
    started_at (timestamptz): DateTime<Utc> = r.started_at,
    answered_at (timestamptz): Option<DateTime<Utc>> = r.answered_at,
    ended_at (timestamptz): Option<DateTime<Utc>> = r.ended_at,
    disposition (text): Option<&'static str> = r.disposition.map(|d| d.as_str()),
    hangup_cause (text): Option<String> = r.hangup_cause.clone(),
    agent_id (text): Option<String> = agent.agent_id,
    agent_match (text): Option<&'static str> = agent.agent_match.map(codes::agent_match_str),
    agent_extension (text): Option<String> = agent.extension,
    agent_number (text): Option<String> = agent.number,
    agent_email (text): Option<String> = agent.email,
    contact_ids (text, list): Option<String> = joined_list(&r.contact_ids),
    contact_match (text): Option<&'static str> = r.contact_match.map(codes::contact_match_str),
    responsible_agent_id (text): Option<String> = r.responsible_agent_id.clone(),
    recording_url (text): Option<String> = r.recording_url.clone(),
    recording_id (text): Option<String> = r.recording_id.clone(),
    event_count (int4): i32 = row.event_count,
    leg_count (int4): i32 = r.legs.len() as i32,
    first_received_at (timestamptz): DateTime<Utc> = row.first_received_at,
    settled (bool): bool = row.settled,
    completion (text): Option<&'static str> = r.completion.map(Completion::as_str),
    completed_at (timestamptz): Option<DateTime<Utc>> = r.completed_at,
    version (int8): i64 = r.version,
    content_hash (bytea): Option<Vec<u8>> = Some(row.content_hash),
    leg_hashes (text, list): Option<String> =
        joined_list(row.leg_hashes.iter().map(|(leg, hash)| format!("{hash}{leg}"))),
    recording_status (text): Option<&'static str> = r.recording_status.and_then(codes::recording_status_str),
    recording_error (text): Option<String> = r.recording_error.clone(),
    revision (int8): i64 = row.revision,
    queue (text): Option<String> = r.queue.clone(),
    wrap_up_code (text): Option<String> = r.wrap_up.as_ref().and_then(|w| w.code.clone()),
    wrap_up_label (text): Option<String> = r.wrap_up.as_ref().and_then(|w| w.label.clone()),
    wrap_up_note (text): Option<String> = r.wrap_up.as_ref().and_then(|w| w.note.clone()),
    wrap_up_tags (text, list): Option<String> = r.wrap_up.as_ref().and_then(|w| joined_list(&w.tags)),
    wrap_up_agent_id (text): Option<String> = r.wrap_up.as_ref().and_then(|w| w.agent_id.clone()),
    wrap_up_at (timestamptz): Option<DateTime<Utc>> = r.wrap_up.as_ref().map(|w| w.set_at),
    expected_revision (int8, input): i64 = row.expected_revision,
}

columns! {
    /// `call_legs`: one row per leg written.
    struct LegRows;
    fn push(r: &CallRecord, leg: &LegRecord, event_count: i32) {}
    source_id (text, key): String = r.source_id.to_string(),
    call_id (text, key): String = r.call_id.to_string(),
    leg_id (text, key): String = leg.leg_id.clone(),
    status (text): &'static str = status_str(leg.status),
    answered (bool): bool = leg.answered,
    agent_id (text): Option<String> = leg.agent.agent_id.clone(),
    agent_match (text): Option<&'static str> = leg.agent.agent_match.map(codes::agent_match_str),
    agent_extension (text): Option<String> = leg.agent.extension.clone(),
    agent_number (text): Option<String> = leg.agent.number.clone(),
    agent_email (text): Option<String> = leg.agent.email.clone(),
    started_at (timestamptz): DateTime<Utc> = leg.started_at,
    rang_at (timestamptz): Option<DateTime<Utc>> = leg.rang_at,
    answered_at (timestamptz): Option<DateTime<Utc>> = leg.answered_at,
    ended_at (timestamptz): Option<DateTime<Utc>> = leg.ended_at,
    disposition (text): Option<&'static str> = leg.disposition.map(|d| d.as_str()),
    hangup_cause (text): Option<String> = leg.hangup_cause.clone(),
    recording_url (text): Option<String> = leg.recording_url.clone(),
    recording_id (text): Option<String> = leg.recording_id.clone(),
    event_count (int4): i32 = event_count,
    agents (text, list): Option<String> = joined_list(agent_keys(&leg.agent)),
}

columns! {
    /// `call_outbox`: a complete call's new record, for the publisher.
    struct OutboxRows;
    fn push(call: &CallRecord, encoded: Vec<u8>) {}
    source_id (text, key): String = call.source_id.to_string(),
    call_id (text, key): String = call.call_id.to_string(),
    version (int8): i64 = call.version,
    record (bytea): Vec<u8> = encoded,
}

/// The changes to `open_calls`: calls opened and calls completed, two key lists each.
#[derive(Default)]
pub(super) struct OpenCalls {
    opened_sources: Vec<String>,
    opened_calls: Vec<String>,
    completed_sources: Vec<String>,
    completed_calls: Vec<String>,
}

impl OpenCalls {
    pub(super) fn opened(&mut self, source: &str, call: &str) {
        self.opened_sources.push(source.to_owned());
        self.opened_calls.push(call.to_owned());
    }

    pub(super) fn completed(&mut self, source: &str, call: &str) {
        self.completed_sources.push(source.to_owned());
        self.completed_calls.push(call.to_owned());
    }
}

impl Rows for OpenCalls {
    fn len(&self) -> usize {
        self.opened_calls.len().saturating_add(self.completed_calls.len())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.opened_sources, &self.opened_calls, &self.completed_sources, &self.completed_calls]
    }
}

fn status_str(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Ringing | CallStatus::Unknown => "ringing",
        CallStatus::Answered => "answered",
        CallStatus::Ended => "ended",
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
