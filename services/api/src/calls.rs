//! The call log as JSON: the list of calls (filtered, newest first, by keyset pages) and one call
//! with its legs, events, agents, matched contacts and recording link. Reads only; the call log
//! writer owns these tables.

use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_postgres::Pool;
use serde_json::{Value, json};
use tokio_postgres::types::ToSql;
use tokio_postgres::{self, Row};

use crate::filter::{Cursor, ListQuery, NumberFilter};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// RFC 3339 in UTC, with as many fraction digits as the time has.
fn time(value: Option<DateTime<Utc>>) -> Value {
    value.map_or(Value::Null, |t| Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
}

fn seconds(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Value {
    match (from, to) {
        (Some(from), Some(to)) => json!(to.signed_duration_since(from).num_seconds().max(0)),
        _ => Value::Null,
    }
}

/// The columns both endpoints read, joined with the answering agent's directory entry, and
/// whether the call is [`BLACKLISTED`] (column 32).
const CALL_COLUMNS: &str = "c.source_id, c.call_id, c.vendor, c.direction, c.status, c.outcome, c.completion,
    c.completed_at, c.from_number, c.to_number, c.started_at, c.answered_at, c.ended_at, c.agent_id,
    c.agent_match, c.agent_extension, c.agent_number, c.agent_email, a.name, c.contact_ids,
    c.contact_match, c.recording_url, c.recording_id, c.version, c.leg_count, c.event_count,
    c.disposition, c.hangup_cause, c.responsible_agent_id, r.name, c.recording_status, c.recording_error";

/// Whether the call's external number — the caller of an inbound call, the callee of an outbound
/// one, either of a call whose direction is unknown (as the matcher reads it) — is on the
/// blacklist (migration 0012) with an entry not expired, at the time of the query. Judged when the
/// call is read, not when it was made: a number blacklisted after its call marks that call too,
/// and one taken off the list no longer does. Numbers the call log keeps as the PBX wrote them
/// (not E.164) are never on it. One primary-key probe per call shown.
const BLACKLISTED: &str = "EXISTS (SELECT 1 FROM blacklist b
    WHERE b.number = ANY (ARRAY[CASE WHEN c.direction IN ('inbound', 'unknown') THEN c.from_number END,
                                CASE WHEN c.direction IN ('outbound', 'unknown') THEN c.to_number END])
      AND (b.expires_at IS NULL OR b.expires_at > now()))";

/// The same as a filter, written so that the planner may find the calls through their number
/// indexes (migration 0004) from the live blacklist, read once, instead of probing every call.
const BLACKLISTED_FILTER: &str = "((c.direction IN ('inbound', 'unknown') AND c.from_number = ANY (ARRAY(
        SELECT number FROM blacklist WHERE expires_at IS NULL OR expires_at > now())))
    OR (c.direction IN ('outbound', 'unknown') AND c.to_number = ANY (ARRAY(
        SELECT number FROM blacklist WHERE expires_at IS NULL OR expires_at > now()))))";

/// The agent's wrap-up (migration 0013), columns 33 to 38, and the call's queue, 39.
const WRAP_UP_COLUMNS: &str = "c.wrap_up_code, c.wrap_up_label, c.wrap_up_note, c.wrap_up_tags, c.wrap_up_agent_id, c.wrap_up_at, c.queue";

/// The wrap-up of a row: `null` until an agent set one.
fn wrap_up(row: &Row) -> Value {
    let Some(set_at) = row.get::<_, Option<DateTime<Utc>>>(38) else { return Value::Null };
    let text = |i: usize| row.get::<_, Option<String>>(i);
    json!({
        "code": text(33), "label": text(34), "note": text(35),
        "tags": row.get::<_, Option<Vec<String>>>(36).unwrap_or_default(),
        "agent_id": text(37), "set_at": time(Some(set_at)),
    })
}

const CALL_FROM: &str = "FROM calls c
    LEFT JOIN agents a ON a.id = c.agent_id
    LEFT JOIN agents r ON r.id = c.responsible_agent_id";

/// A call as the list shows it: everything HaloPSA's Calls tab has (when, from which number, who
/// answered with their number and email), the outcome and the recording: its stable link, which
/// keeps working after the vendor's own link has expired, and whether it is pending, ready or
/// failed (with the reason).
fn summary(row: &Row) -> Value {
    let text = |i: usize| row.get::<_, Option<String>>(i);
    let (source_id, call_id): (String, String) = (row.get(0), row.get(1));
    let (started, answered, ended): (DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        (row.get(10), row.get(11), row.get(12));
    let agent = [13, 15, 16, 17].iter().any(|&i| text(i).is_some()).then(|| {
        json!({
            "id": text(13), "name": text(18), "match": text(14),
            "extension": text(15), "number": text(16), "email": text(17),
        })
    });
    let contact_ids: Vec<String> = row.get(19);
    json!({
        "source_id": source_id,
        "call_id": call_id,
        "href": format!("/v1/calls/{}/{}", source_id, encode_segment(&call_id)),
        "vendor": row.get::<_, String>(2),
        "direction": row.get::<_, String>(3),
        "status": row.get::<_, String>(4),
        "outcome": text(5),
        "complete": text(6).is_some(),
        "completion": text(6),
        "completed_at": time(row.get(7)),
        "from_number": text(8),
        "to_number": text(9),
        "started_at": time(Some(started)),
        "answered_at": time(answered),
        "ended_at": time(ended),
        "duration_seconds": seconds(Some(started), ended),
        "talk_seconds": seconds(answered, ended),
        "agent": agent,
        "contact": {"ids": contact_ids, "match": text(20)},
        "recording_url": text(21),
        "recording_id": text(22),
        "recording_status": text(30),
        "recording_error": text(31),
        "version": row.get::<_, i64>(23),
        "leg_count": row.get::<_, i32>(24),
        "event_count": row.get::<_, i32>(25),
        "blacklisted": row.get::<_, bool>(32),
        "queue": row.get::<_, Option<String>>(39),
        "wrap_up": wrap_up(row),
    })
}

/// A path segment with everything but unreserved characters percent-encoded (call ids may hold
/// `/`, `?`, spaces).
pub fn encode_segment(text: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// The region a source reads national numbers in, for the number filter.
pub async fn source_region(pool: &Pool, source: &str) -> Result<Option<String>, ReadError> {
    let client = pool.get().await?;
    let row = client.query_opt("SELECT default_region FROM sources WHERE id = $1", &[&source]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// A WHERE clause under construction: each value bound becomes the next `$n`.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Where {
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!("WHERE {}", self.clauses.join(" AND ")) }
    }
}

/// `column`'s digits equal `param`, for a number not stored in E.164: the expression and the
/// condition of migration 0008's partial indexes, written the same way so that the planner uses them.
fn unparsed_digits(column: &str, param: &str) -> String {
    format!(
        r"(regexp_replace({column}, '[^0-9]', '', 'g') = {param} AND {column} !~ '^\+[1-9][0-9]{{6,14}}$')"
    )
}

/// One page of calls, newest first, and the cursor of the next page when there is one.
pub async fn list(pool: &Pool, q: &ListQuery) -> Result<Value, ReadError> {
    let mut w = Where::default();
    let names = |items: Vec<&str>| items.into_iter().map(str::to_owned).collect::<Vec<String>>();
    if let Some(source) = &q.source {
        let p = w.bind(source.to_string());
        w.clauses.push(format!("c.source_id = {p}"));
    }
    if let Some(from) = q.from {
        let p = w.bind(from);
        w.clauses.push(format!("c.started_at >= {p}"));
    }
    if let Some(to) = q.to {
        let p = w.bind(to);
        w.clauses.push(format!("c.started_at < {p}"));
    }
    match &q.number {
        Some(NumberFilter::Digits(digits)) => {
            // The call log keeps a number that does not parse as the PBX wrote it: compare digits
            // (indexed by migration 0008), and match one written in E.164 shape as it is.
            let (p, plus) = (w.bind(digits.clone()), w.bind(format!("+{digits}")));
            w.clauses.push(format!(
                "({} OR {} OR c.from_number = {plus} OR c.to_number = {plus})",
                unparsed_digits("c.from_number", &p),
                unparsed_digits("c.to_number", &p)
            ));
        }
        Some(number) => {
            let p = w.bind(number.as_str().to_owned());
            w.clauses.push(format!("(c.from_number = {p} OR c.to_number = {p})"));
        }
        None => {}
    }
    if let Some(agent) = &q.agent {
        let p = w.bind(agent.clone());
        // Any agent on any leg (the call's agent is one of them); each leg keeps its agent's
        // identifiers, indexed where it has any (migration 0007; the condition on the empty list
        // lets the planner use that partial index).
        w.clauses.push(format!(
            "EXISTS (SELECT 1 FROM call_legs l WHERE l.source_id = c.source_id AND l.call_id = c.call_id \
             AND l.agents <> '{{}}' AND l.agents @> ARRAY[{p}::text])"
        ));
    }
    if let Some(contact) = &q.contact {
        let p = w.bind(contact.clone());
        w.clauses.push(format!("c.contact_ids @> ARRAY[{p}::text]"));
    }
    if !q.outcomes.is_empty() {
        let p = w.bind(names(q.outcomes.iter().map(|o| o.as_str()).collect()));
        w.clauses.push(format!("c.outcome = ANY({p}::text[])"));
    }
    if !q.directions.is_empty() {
        let p = w.bind(names(q.directions.iter().map(|d| d.as_str()).collect()));
        w.clauses.push(format!("c.direction = ANY({p}::text[])"));
    }
    if !q.statuses.is_empty() {
        let p = w.bind(names(q.statuses.iter().map(|s| s.as_str()).collect()));
        w.clauses.push(format!("c.status = ANY({p}::text[])"));
    }
    if !q.recordings.is_empty() {
        let p = w.bind(names(q.recordings.iter().map(|r| r.as_str()).collect()));
        w.clauses.push(format!("c.recording_status = ANY({p}::text[])"));
    }
    if let Some(complete) = q.complete {
        w.clauses.push(format!("c.completed_at IS {} NULL", if complete { "NOT" } else { "" }));
    }
    if let Some(tag) = &q.tag {
        let p = w.bind(tag.clone());
        w.clauses.push(format!("c.wrap_up_tags @> ARRAY[{p}::text]"));
    }
    if !q.dispositions.is_empty() {
        let p = w.bind(q.dispositions.clone());
        w.clauses.push(format!("c.wrap_up_code = ANY({p}::text[])"));
    }
    match q.blacklisted {
        // As it is, not `IS TRUE`, which would hide it from the indexes (3 ms instead of 200 over
        // 300,000 calls and 50 numbers).
        Some(true) => w.clauses.push(BLACKLISTED_FILTER.to_owned()),
        // `IS NOT TRUE`: a call without the number is not blacklisted (the comparison is NULL).
        Some(false) => w.clauses.push(format!("{BLACKLISTED_FILTER} IS NOT TRUE")),
        None => {}
    }
    if let Some(cursor) = &q.cursor {
        let (t, s, c) =
            (w.bind(cursor.started_at), w.bind(cursor.source_id.clone()), w.bind(cursor.call_id.clone()));
        w.clauses.push(format!("(c.started_at, c.source_id, c.call_id) < ({t}, {s}, {c})"));
    }
    let limit = w.bind(q.limit.saturating_add(1));
    let sql = format!(
        "SELECT {CALL_COLUMNS}, {BLACKLISTED}, {WRAP_UP_COLUMNS} {CALL_FROM} {} ORDER BY c.started_at DESC, c.source_id DESC, c.call_id DESC LIMIT {limit}",
        w.sql()
    );
    let client = pool.get().await?;
    let refs: Vec<&(dyn ToSql + Sync)> = w.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    let rows = client.query(&sql, &refs).await?;
    let more = rows.len() as i64 > q.limit;
    let page = rows.get(..rows.len().min(q.limit as usize)).unwrap_or_default();
    let next_cursor = more.then(|| page.last()).flatten().map(|last| {
        Cursor { started_at: last.get(10), source_id: last.get(0), call_id: last.get(1) }.encode()
    });
    Ok(json!({
        "calls": page.iter().map(summary).collect::<Vec<Value>>(),
        "next_cursor": next_cursor,
    }))
}

/// Events shown with one call; a call with more is cut short (and says so).
const MAX_EVENTS: i64 = 1000;

/// One call with its legs, events, agents, matched contacts and recording; `None` when unknown.
pub async fn get(pool: &Pool, source_id: &str, call_id: &str) -> Result<Option<Value>, ReadError> {
    let client = pool.get().await?;
    let key: [&(dyn ToSql + Sync); 2] = [&source_id, &call_id];
    let sql = format!(
        "SELECT {CALL_COLUMNS}, {BLACKLISTED}, {WRAP_UP_COLUMNS} {CALL_FROM} WHERE c.source_id = $1 AND c.call_id = $2"
    );
    let Some(row) = client.query_opt(&sql, &key).await? else {
        return Ok(None);
    };
    let mut call = summary(&row);
    let text = |i: usize| row.get::<_, Option<String>>(i);
    let disposition = json!(text(26));
    let hangup_cause = json!(text(27));
    let responsible_agent = match text(28) {
        Some(id) => json!({"id": id, "name": text(29)}),
        None => Value::Null,
    };
    let contact_ids: Vec<String> = row.get(19);

    let legs_sql = "SELECT l.leg_id, l.status, l.answered, l.agent_id, l.agent_match, l.agent_extension,
                           l.agent_number, l.agent_email, a.name, l.started_at, l.rang_at, l.answered_at,
                           l.ended_at, l.disposition, l.hangup_cause, l.recording_url, l.recording_id,
                           l.event_count
                    FROM call_legs l LEFT JOIN agents a ON a.id = l.agent_id
                    WHERE l.source_id = $1 AND l.call_id = $2 ORDER BY l.started_at, l.leg_id";
    let events_sql = "SELECT event_id, leg_id, kind, occurred_at, received_at, sequence, direction, from_raw,
                             from_e164, to_raw, to_e164, agent_extension, agent_number, agent_email, agent_id,
                             disposition, hangup_cause, recording_url, recording_id, raw_id,
                             recording_status, recording_error
                      FROM call_events WHERE source_id = $1 AND call_id = $2
                      ORDER BY occurred_at, sequence NULLS LAST, event_id LIMIT $3";
    let contacts_sql = "SELECT c.id, c.name, c.company, c.phone_numbers, c.responsible_agent_id, a.name
                        FROM contacts c LEFT JOIN agents a ON a.id = c.responsible_agent_id
                        WHERE c.id = ANY($1) ORDER BY c.id";
    let event_limit = MAX_EVENTS + 1;
    let event_params: [&(dyn ToSql + Sync); 3] = [&source_id, &call_id, &event_limit];
    let contact_params: [&(dyn ToSql + Sync); 1] = [&contact_ids];
    // Three reads pipelined on one connection.
    let (legs, events, contacts) = tokio::try_join!(
        client.query(legs_sql, &key),
        client.query(events_sql, &event_params),
        client.query(contacts_sql, &contact_params),
    )?;

    let legs: Value = legs
        .iter()
        .map(|l| {
            let text = |i: usize| l.get::<_, Option<String>>(i);
            let agent = [3, 5, 6, 7].iter().any(|&i| text(i).is_some()).then(|| {
                json!({
                    "id": text(3), "name": text(8), "match": text(4),
                    "extension": text(5), "number": text(6), "email": text(7),
                })
            });
            json!({
                "leg_id": l.get::<_, String>(0),
                "status": l.get::<_, String>(1),
                "answered": l.get::<_, bool>(2),
                "agent": agent,
                "started_at": time(Some(l.get(9))),
                "rang_at": time(l.get(10)),
                "answered_at": time(l.get(11)),
                "ended_at": time(l.get(12)),
                "disposition": text(13),
                "hangup_cause": text(14),
                "recording_url": text(15),
                "recording_id": text(16),
                "event_count": l.get::<_, i32>(17),
            })
        })
        .collect();
    let events_truncated = json!(events.len() as i64 > MAX_EVENTS);
    let events: Value = events
        .iter()
        .take(MAX_EVENTS as usize)
        .map(|e| {
            let text = |i: usize| e.get::<_, Option<String>>(i);
            json!({
                "event_id": e.get::<_, String>(0),
                "leg_id": text(1),
                "kind": e.get::<_, String>(2),
                "occurred_at": time(Some(e.get(3))),
                "received_at": time(Some(e.get(4))),
                "sequence": e.get::<_, Option<i64>>(5),
                "direction": text(6),
                "from": {"raw": text(7), "e164": text(8)},
                "to": {"raw": text(9), "e164": text(10)},
                "agent": {"extension": text(11), "number": text(12), "email": text(13), "id": text(14)},
                "disposition": text(15),
                "hangup_cause": text(16),
                "recording_url": text(17),
                "recording_id": text(18),
                "recording_status": text(20),
                "recording_error": text(21),
                "raw_id": e.get::<_, String>(19),
            })
        })
        .collect();
    let contacts: Value = contacts
        .iter()
        .map(|c| {
            json!({
                "id": c.get::<_, String>(0),
                "name": c.get::<_, String>(1),
                "company": c.get::<_, Option<String>>(2),
                "phone_numbers": c.get::<_, Vec<String>>(3),
                "responsible_agent": c.get::<_, Option<String>>(4)
                    .map(|id| json!({"id": id, "name": c.get::<_, Option<String>>(5)})),
            })
        })
        .collect();
    let recording = match (text(21), text(22), text(30)) {
        (None, None, None) => Value::Null,
        (url, id, status) => json!({"url": url, "id": id, "status": status, "error": text(31)}),
    };
    if let Some(fields) = call.as_object_mut() {
        let details = [
            ("disposition", disposition),
            ("hangup_cause", hangup_cause),
            ("responsible_agent", responsible_agent),
            ("legs", legs),
            ("events_truncated", events_truncated),
            ("events", events),
            ("contacts", contacts),
            ("recording", recording),
        ];
        fields.extend(details.map(|(name, value)| (name.to_owned(), value)));
    }
    Ok(Some(call))
}
