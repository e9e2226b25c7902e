//! Switchboard's own JSON webhook format, for PBXs that can template an HTTP request (3CX,
//! FreePBX, custom dialplans) and for anything not covered by a vendor adapter.
//! The format is documented in `docs/generic-webhook.md`; in short:
//!
//! ```json
//! {"call_id": "c-1", "event": "answered", "leg_id": "c-1-a", "direction": "inbound",
//!  "from": "+44 20 7946 0000", "to": "0800 123 456", "agent": {"number": "101",
//!  "email": "ann@example.com"}, "timestamp": "2026-11-21T10:00:00Z", "sequence": 2,
//!  "event_id": "pbx-evt-9", "hangup_cause": "normal", "recording_url": "https://..."}
//! ```
//!
//! Only `call_id` and `event` are required. Unknown fields are ignored, so PBXs can send more.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use switchboard_model::{CallEvent, CallId, Direction, EventId, EventKind, LegId, RawWebhook, Region};

use crate::{Adapter, AdapterError, Rejection, Request, body_hash_event_id, support};

#[derive(Debug)]
pub struct GenericJson;

/// The body as sent. Fields are loosely typed here and checked one by one below, so that the
/// error names the field at fault.
#[derive(Debug, Deserialize)]
struct Body {
    event_id: Option<serde_json::Value>,
    call_id: Option<serde_json::Value>,
    leg_id: Option<serde_json::Value>,
    event: Option<String>,
    direction: Option<String>,
    from: Option<String>,
    to: Option<String>,
    agent: Option<Agent>,
    timestamp: Option<serde_json::Value>,
    sequence: Option<i64>,
    hangup_cause: Option<String>,
    recording_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Agent {
    number: Option<String>,
    email: Option<String>,
}

/// Only what ingress needs: is it a JSON object, and which call is it about.
#[derive(Debug, Deserialize)]
struct KeyOnly {
    call_id: Option<serde_json::Value>,
}

const MAX_TEXT: usize = 512;

/// Ids may be JSON strings or numbers (many PBXs number their calls).
fn id_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// serde reads a struct from a JSON array too; the format is an object, so say so first.
fn starts_with_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn bounded(field: &str, value: Option<String>) -> Result<Option<String>, AdapterError> {
    match value {
        Some(v) if v.len() > MAX_TEXT => {
            Err(AdapterError::new(format!("{field} is longer than {MAX_TEXT} bytes")))
        }
        Some(v) if v.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

fn parse_kind(event: Option<&str>) -> Result<EventKind, AdapterError> {
    match event.map(str::to_ascii_lowercase).as_deref() {
        Some("ringing" | "ring" | "started") => Ok(EventKind::Ringing),
        Some("answered" | "answer" | "connected") => Ok(EventKind::Answered),
        Some("hangup" | "ended" | "completed") => Ok(EventKind::Hangup),
        Some(other) => {
            Err(AdapterError::new(format!("event {other:?} is not one of ringing, answered, hangup")))
        }
        None => Err(AdapterError::new("event is missing")),
    }
}

fn parse_direction(direction: Option<&str>) -> Result<Direction, AdapterError> {
    match direction.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("unknown") => Ok(Direction::Unknown),
        Some("inbound" | "in" | "incoming") => Ok(Direction::Inbound),
        Some("outbound" | "out" | "outgoing") => Ok(Direction::Outbound),
        Some("internal") => Ok(Direction::Internal),
        Some(other) => {
            Err(AdapterError::new(format!("direction {other:?} is not one of inbound, outbound, internal")))
        }
    }
}

/// RFC 3339 text, or Unix time in seconds or milliseconds; absent means "when ingress got it".
fn parse_time(
    value: Option<&serde_json::Value>,
    received_at: DateTime<Utc>,
) -> Result<DateTime<Utc>, AdapterError> {
    let parsed = match value {
        None | Some(serde_json::Value::Null) => return Ok(received_at),
        Some(serde_json::Value::String(text)) => {
            DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).ok()
        }
        Some(serde_json::Value::Number(n)) => n.as_i64().and_then(|n| {
            // Values past the year 33658 in seconds are milliseconds.
            if n.unsigned_abs() >= 1_000_000_000_000 {
                DateTime::from_timestamp_millis(n)
            } else {
                DateTime::from_timestamp(n, 0)
            }
        }),
        Some(_) => None,
    };
    let parsed = parsed.ok_or_else(|| {
        AdapterError::new("timestamp is neither RFC 3339 text nor Unix seconds/milliseconds")
    })?;
    // A PBX clock can be off by minutes, not by years: anything outside this window is a bug in
    // the sender, and would corrupt the call's times.
    let earliest = DateTime::from_timestamp(946_684_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
    if parsed < earliest || parsed > support::latest_plausible(received_at) {
        return Err(AdapterError::new(format!(
            "timestamp {parsed} is before 2000 or more than a day after it was received"
        )));
    }
    Ok(parsed)
}

impl Adapter for GenericJson {
    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        support::require_json(request)?;
        let body = request.body;
        if !starts_with_object(body) {
            return Err(Rejection::Malformed("not a JSON object".into()));
        }
        let key: KeyOnly = serde_json::from_slice(body)
            .map_err(|e| Rejection::Malformed(format!("not a JSON object: {e}")))?;
        Ok(key.call_id.as_ref().and_then(id_text))
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        if !starts_with_object(&raw.body) {
            return Err(AdapterError::new("body is not a valid generic webhook: not a JSON object"));
        }
        let body: Body = serde_json::from_slice(&raw.body)
            .map_err(|e| AdapterError::new(format!("body is not a valid generic webhook: {e}")))?;
        let region: Region =
            raw.default_region.parse().map_err(|e| AdapterError::new(format!("source region: {e}")))?;

        let call_id = body
            .call_id
            .as_ref()
            .and_then(id_text)
            .ok_or_else(|| AdapterError::new("call_id is missing or not a string/number"))?;
        let call_id = CallId::parse(call_id).map_err(|e| AdapterError::new(e.to_string()))?;
        let leg_id = match body.leg_id.as_ref() {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => {
                let text =
                    id_text(value).ok_or_else(|| AdapterError::new("leg_id is not a string or number"))?;
                Some(LegId::parse(text).map_err(|e| AdapterError::new(e.to_string()))?)
            }
        };
        let event_id = match body.event_id.as_ref() {
            None | Some(serde_json::Value::Null) => body_hash_event_id(&raw.body),
            Some(value) => {
                id_text(value).ok_or_else(|| AdapterError::new("event_id is not a string or number"))?
            }
        };
        let event_id = EventId::parse(event_id).map_err(|e| AdapterError::new(e.to_string()))?;

        let kind = parse_kind(body.event.as_deref())?;
        let direction = parse_direction(body.direction.as_deref())?;
        let occurred_at = parse_time(body.timestamp.as_ref(), raw.received_at)?;
        let from_raw = bounded("from", body.from)?;
        let to_raw = bounded("to", body.to)?;
        let (agent_number, agent_email) = match body.agent {
            Some(agent) => (bounded("agent.number", agent.number)?, bounded("agent.email", agent.email)?),
            None => (None, None),
        };
        if let Some(email) = &agent_email
            && !email.contains('@')
        {
            return Err(AdapterError::new(format!("agent.email {email:?} is not an email address")));
        }
        let recording_url = bounded("recording_url", body.recording_url)?;
        if let Some(url) = &recording_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(AdapterError::new("recording_url must be an http(s) URL"));
        }

        let mut event = CallEvent::new(raw, event_id, call_id, kind, occurred_at);
        event.leg_id = leg_id;
        event.direction = direction;
        support::set_numbers(&mut event, from_raw.as_deref(), to_raw.as_deref(), region);
        event.agent_number = agent_number;
        event.agent_email = agent_email;
        event.sequence = body.sequence;
        event.hangup_cause = bounded("hangup_cause", body.hangup_cause)?;
        event.recording_url = recording_url;
        Ok(vec![event])
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::{PhoneNumber, Vendor};

    use super::*;
    use crate::test_support::{self, request};

    fn raw(body: &str) -> RawWebhook {
        RawWebhook {
            default_region: "GB".into(),
            received_at: test_support::at(1_800_000_000),
            ..test_support::json_raw(Vendor::Generic, body)
        }
    }

    #[test]
    fn reads_a_full_event() {
        let events = GenericJson
            .normalize(&raw(
                r#"{"call_id": 42, "event": "answered", "leg_id": "42-b", "direction": "inbound",
                    "from": "020 7946 0000", "to": "101", "agent": {"number": "101", "email": "a@x.io"},
                    "timestamp": "2026-11-21T10:00:00+01:00", "sequence": 2, "event_id": "e9",
                    "recording_url": "https://rec.example/1", "extra": {"ignored": true}}"#,
            ))
            .expect("valid");
        let event = &events[0];
        assert_eq!(event.call_id.as_str(), "42");
        assert_eq!(event.leg_id.as_ref().map(LegId::as_str), Some("42-b"));
        assert_eq!(event.kind, EventKind::Answered);
        assert_eq!(event.direction, Direction::Inbound);
        assert_eq!(event.from_e164.as_ref().map(PhoneNumber::as_str), Some("+442079460000"));
        assert_eq!(event.to_e164, None, "an extension is not a phone number");
        assert_eq!(event.to_raw.as_deref(), Some("101"));
        assert_eq!(event.occurred_at.to_rfc3339(), "2026-11-21T09:00:00+00:00");
        assert_eq!(event.event_id.as_str(), "e9");
        assert_eq!(event.sequence, Some(2));
    }

    #[test]
    fn minimal_event_defaults_time_and_hashes_the_body_for_its_id() {
        let body = r#"{"call_id": "c", "event": "ringing"}"#;
        let first = GenericJson.normalize(&raw(body)).expect("valid");
        let again = GenericJson.normalize(&raw(body)).expect("valid");
        assert_eq!(first[0].occurred_at, raw(body).received_at);
        assert!(first[0].event_id.as_str().starts_with("sha256:"));
        assert_eq!(first[0].event_id, again[0].event_id, "a retry is the same event");
        let other = GenericJson.normalize(&raw(r#"{"call_id": "c", "event": "hangup"}"#)).expect("valid");
        assert_ne!(first[0].event_id, other[0].event_id);
    }

    #[test]
    fn unix_times_in_seconds_and_milliseconds() {
        let s = GenericJson
            .normalize(&raw(r#"{"call_id": "c", "event": "ringing", "timestamp": 1800000100}"#))
            .expect("valid");
        let ms = GenericJson
            .normalize(&raw(r#"{"call_id": "c", "event": "ringing", "timestamp": 1800000100000}"#))
            .expect("valid");
        assert_eq!(s[0].occurred_at, ms[0].occurred_at);
    }

    #[test]
    fn extreme_times_are_refused_not_panicked_on() {
        for n in [i64::MIN, i64::MAX, -1_000_000_000_000_000, 0, 4_102_444_800] {
            let body = format!(r#"{{"call_id": "c", "event": "ringing", "timestamp": {n}}}"#);
            assert!(GenericJson.normalize(&raw(&body)).is_err(), "{n}");
        }
    }

    #[test]
    fn bad_bodies_name_the_field_at_fault() {
        let cases = [
            (r#"{"event": "ringing"}"#, "call_id"),
            (r#"{"call_id": "c"}"#, "event is missing"),
            (r#"{"call_id": "c", "event": "exploded"}"#, "exploded"),
            (r#"{"call_id": "c", "event": "ringing", "direction": "sideways"}"#, "direction"),
            (r#"{"call_id": "c", "event": "ringing", "timestamp": "yesterday"}"#, "timestamp"),
            (r#"{"call_id": "c", "event": "ringing", "timestamp": "1999-12-31T23:59:59Z"}"#, "before 2000"),
            (r#"{"call_id": "", "event": "ringing"}"#, "call id"),
            (r#"{"call_id": ["c"], "event": "ringing"}"#, "call_id"),
            (r#"{"call_id": "c", "event": "ringing", "recording_url": "ftp://x"}"#, "recording_url"),
            (r#"{"call_id": "c", "event": "ringing", "agent": {"email": "nobody"}}"#, "agent.email"),
            (r#"[1, 2]"#, "not a valid generic webhook"),
        ];
        for (body, expected) in cases {
            let error = GenericJson.normalize(&raw(body)).expect_err(body);
            assert!(error.0.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn ingress_check_wants_a_json_object_and_finds_the_call() {
        let check = |content_type: Option<&str>, body: &[u8]| {
            GenericJson.check(&request("POST", None, content_type, body))
        };
        let json = Some("application/json; charset=utf-8");
        assert_eq!(check(json, br#"{"call_id": "c-1"}"#), Ok(Some("c-1".into())));
        assert_eq!(check(json, br#"{"call_id": 7}"#), Ok(Some("7".into())));
        assert_eq!(check(json, br#"{"event": "x"}"#), Ok(None));
        assert!(matches!(check(json, b"{not json"), Err(Rejection::Malformed(_))));
        assert!(matches!(check(json, b"[1]"), Err(Rejection::Malformed(_))));
        assert!(matches!(check(Some("text/plain"), b"{}"), Err(Rejection::UnsupportedMediaType(_))));
        assert!(matches!(check(None, b"{}"), Err(Rejection::UnsupportedMediaType(_))));
    }
}
