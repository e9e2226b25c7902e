//! Chronicall (Xima, for Avaya IP Office) "Web Service Integration Profiles": when a call
//! finishes, Chronicall makes one HTTP request (GET with URL parameters, or POST with form
//! parameters, `application/x-www-form-urlencoded`) whose parameter *names* the administrator
//! chooses and whose values are Chronicall tokens. Switchboard reads the names below; the
//! administrator copies them into the profile (URL or form parameters, either works):
//!
//! | Parameter         | Chronicall value         | Used for                                   |
//! |-------------------|--------------------------|--------------------------------------------|
//! | `call_id`         | `<Call ID>`              | call id (required; the call's UUID)        |
//! | `report_call_id`  | `<Report Call ID>`       | not stored (the short id of reports)       |
//! | `direction`       | `<Call Direction>`       | Inbound, Outbound, Internal, Intersite     |
//! | `agent`           | `<Agent>`                | agent extension, from `Ann Smith (201)`    |
//! | `caller_name`     | `<Caller Name>`          | not stored                                 |
//! | `dnis`            | `<DNIS>`                 | number called, on inbound calls            |
//! | `external_number` | `<External Number>`      | the other party's number                   |
//! | `group`           | `<Group/Skill>`          | not stored                                 |
//! | `time`            | `<Time>`                 | call start (Unix milliseconds)             |
//! | `tags`            | `<Tag>`                  | not stored                                 |
//! | `account_codes`   | `<Account Codes>`        | not stored                                 |
//! | `recording`       | `<Audio Recording Link>` | recording link                             |
//! | `event`           | the text `call_finished` | optional; any other value is dead-lettered |
//!
//! The names of Chronicall's older "Push External Listen Link" profile are read too: `callid`,
//! `agent`, `callDirection`, `externalNumber`, `group`, `time`, `tag` and `externallistenlink`.
//!
//! Authentication is Switchboard's default: the profile's HTTP headers carry
//! `Authorization: Basic base64(source_id:secret)`, or the Target URL ends in `?token=secret`.
//! The reply is the default `202` (Chronicall only logs it, under the "API Server Request" log
//! filter).
//!
//! Mapping. Chronicall reports a call once, when it has finished, and has no token for the end
//! time, so one request gives:
//! - `Ringing` at `time` (the call's start), or at the receive time when `time` is absent;
//! - `Hangup` at the receive time (the assumption: Chronicall sends the request as the call
//!   finishes, so the receive time stands in for the end time);
//! - `Recording` with the link, when `recording` (or `externallistenlink`) is an http(s) URL. The
//!   recording may still be `PENDING` in Chronicall at that moment; the link is the right one.
//!
//! All three carry the direction (`Intersite` is internal), the numbers and the agent.
//! Inbound: `external_number` is the caller (`from`) and `dnis` the number called (`to`).
//! Outbound and internal: the agent's extension is `from` and `external_number` (else `dnis`) is
//! `to`. `<Agent>` is the agent of the call's last event, usually written `Ann Smith (201)`: the
//! extension in parentheses (or an agent value that is only digits) becomes `agent_extension`
//! and `agent_number`; the name is kept nowhere. On an inbound call the hangup's disposition is
//! `answered` when an agent is named and `no_answer` when `<Agent>` is empty, which is how a
//! call abandoned in a queue or hunt group (Group/Skill set, no agent) shows. This is an
//! assumption: Chronicall has no outcome token, and a call whose last event was an agent
//! ringing would still name that agent. Outbound and internal hangups carry no disposition, as
//! nothing tells whether the far end answered.
//!
//! Dedupe key: a hash of (call id, which event, the `time` text), so a retried request, or the
//! same call posted by a second profile, gives the same events.

use switchboard_model::{CallEvent, Direction, Disposition, EventKind, RawWebhook};

use crate::support::{self, Fields};
use crate::{Adapter, AdapterError, Rejection, Request};

#[derive(Debug)]
pub struct Chronicall;

const TAG: &str = "chronicall";
const FORM: &str = "application/x-www-form-urlencoded";

/// Parameter names: Switchboard's documented one first, then the legacy listen-link profile's.
const CALL_ID: &[&str] = &["call_id", "callid"];
const DIRECTION: &[&str] = &["direction", "callDirection"];
const AGENT: &[&str] = &["agent"];
const EXTERNAL_NUMBER: &[&str] = &["external_number", "externalNumber"];
const DNIS: &[&str] = &["dnis"];
const TIME: &[&str] = &["time"];
const RECORDING: &[&str] = &["recording", "externallistenlink"];
const EVENT: &[&str] = &["event"];

/// The only value of the optional `event` parameter.
const CALL_FINISHED: &str = "call_finished";

/// Longest extension taken from an agent's name.
const MAX_EXTENSION: usize = 32;

/// The request's parameters: the query of a GET, the form body (and query) of a POST. A POST
/// with only URL parameters may come without a content type, which is read as an empty form.
fn fields(request: &Request<'_>) -> Result<Fields, Rejection> {
    if request.method == "GET" {
        return Ok(Fields::from_request(request));
    }
    let media = request.media_type();
    if media == FORM || media.is_empty() {
        let as_form = Request { content_type: Some(FORM), ..*request };
        Ok(Fields::from_request(&as_form))
    } else {
        Err(Rejection::UnsupportedMediaType(media))
    }
}

fn direction(text: Option<&str>) -> Direction {
    match text.map(str::to_ascii_lowercase).as_deref() {
        Some("inbound" | "incoming") => Direction::Inbound,
        Some("outbound" | "outgoing") => Direction::Outbound,
        Some("internal" | "intersite") => Direction::Internal,
        _ => Direction::Unknown,
    }
}

/// The extension in `Ann Smith (201)`, or the whole value when it is only an extension.
fn agent_extension(agent: &str) -> Option<String> {
    let agent = agent.trim();
    let is_extension = |text: &str| {
        !text.is_empty()
            && text.len() <= MAX_EXTENSION
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'*' | b'#'))
            && text.bytes().any(|b| b.is_ascii_digit())
    };
    if agent.bytes().all(|b| b.is_ascii_digit()) && is_extension(agent) {
        return Some(agent.to_owned());
    }
    let inner = agent.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let extension = inner.get(open + 1..)?.trim();
    is_extension(extension).then(|| extension.to_owned())
}

impl Adapter for Chronicall {
    fn methods(&self) -> &'static [&'static str] {
        &["GET", "POST"]
    }

    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        let fields = fields(request)?;
        let call_id = fields
            .get_any(CALL_ID)
            .ok_or_else(|| Rejection::Malformed("call_id (<Call ID>) is missing".into()))?;
        support::call_key(Some(call_id), "call_id")
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let request = Request::from_raw(raw);
        let fields = fields(&request).map_err(|e| AdapterError::new(format!("request: {e}")))?;
        if let Some(event) = fields.get_any(EVENT)
            && !event.eq_ignore_ascii_case(CALL_FINISHED)
        {
            return Err(AdapterError::new(format!(
                "event {:?} is not {CALL_FINISHED:?}, the only event Chronicall profiles send",
                support::clip(event)
            )));
        }
        let call_id = support::call_id(fields.get_any(CALL_ID), "call_id")?;
        let region = support::region(raw)?;

        let direction = direction(fields.get_any(DIRECTION));
        let agent = fields.get_any(AGENT);
        let extension = agent.and_then(agent_extension);
        let external = fields.get_any(EXTERNAL_NUMBER);
        let dnis = fields.get_any(DNIS);
        let (from, to) = match direction {
            Direction::Inbound | Direction::Unknown => (external, dnis),
            Direction::Outbound | Direction::Internal => (extension.as_deref(), external.or(dnis)),
        };
        let time = fields.get_any(TIME);
        // The start can be no later than the request that reports the finished call.
        let started_at =
            support::time_or_received(time, support::timezone(raw), raw.received_at).min(raw.received_at);

        let event = |which: &str, kind: EventKind, at| -> Result<CallEvent, AdapterError> {
            let key = support::stable_text_id(&[TAG, call_id.as_str(), which, time.unwrap_or("")]);
            let mut event = CallEvent::new(raw, support::event_id(key)?, call_id.clone(), kind, at);
            event.direction = direction;
            support::set_numbers(&mut event, from, to, region);
            event.agent_extension.clone_from(&extension);
            event.agent_number.clone_from(&extension);
            Ok(event)
        };

        let mut events = vec![event("ringing", EventKind::Ringing, started_at)?];
        let mut hangup = event("hangup", EventKind::Hangup, raw.received_at)?;
        if direction == Direction::Inbound {
            hangup.disposition =
                Some(if agent.is_some() { Disposition::Answered } else { Disposition::NoAnswer });
        }
        events.push(hangup);
        if let Some(url) = support::url(fields.get_any(RECORDING)) {
            let mut recording = event("recording", EventKind::Recording, raw.received_at)?;
            recording.recording_url = Some(url);
            events.push(recording);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, JSON, RECEIVED, e164, request};

    fn raw(method: &str, query: Option<&str>, content_type: Option<&str>, body: &str) -> RawWebhook {
        test_support::raw(Vendor::Chronicall, method, query, content_type, body)
    }

    fn post(body: &str) -> RawWebhook {
        raw("POST", None, Some("application/x-www-form-urlencoded; charset=UTF-8"), body)
    }

    fn received() -> DateTime<Utc> {
        test_support::at(RECEIVED)
    }

    #[test]
    fn an_answered_inbound_call_with_a_recording() {
        let events = Chronicall
            .normalize(&post(
                "call_id=8f14e45f-ceea-467f-a0e6-1b2c3d4e5f60&report_call_id=104233&direction=Inbound\
                 &agent=Ann+Smith+(201)&caller_name=ACME+CORP&dnis=4157350100\
                 &external_number=%2B1+212+736+5000&group=Sales&time=1793527200000&tags=VIP\
                 &recording=https%3A%2F%2Fpbx.example.com%2Frecording%3Fid%3D42&event=call_finished",
            ))
            .expect("valid");
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Ringing, EventKind::Hangup, EventKind::Recording]);
        for event in &events {
            assert_eq!(event.call_id.as_str(), "8f14e45f-ceea-467f-a0e6-1b2c3d4e5f60");
            assert_eq!(event.leg_id, None);
            assert_eq!(event.direction, Direction::Inbound);
            assert_eq!(e164(&event.from_e164), Some("+12127365000"));
            assert_eq!(e164(&event.to_e164), Some("+14157350100"));
            assert_eq!(event.agent_extension.as_deref(), Some("201"));
            assert_eq!(event.agent_number.as_deref(), Some("201"));
        }
        assert_eq!(events[0].occurred_at.to_rfc3339(), "2026-11-01T10:00:00+00:00");
        assert_eq!(events[1].occurred_at, received());
        assert_eq!(events[1].disposition, Some(Disposition::Answered));
        assert_eq!(events[2].recording_url.as_deref(), Some("https://pbx.example.com/recording?id=42"));
        let ids: std::collections::HashSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids.len(), 3, "each event has its own dedupe key");
    }

    #[test]
    fn an_inbound_call_nobody_answered_has_no_agent() {
        let events = Chronicall
            .normalize(&post(
                "call_id=c-2&direction=Inbound&agent=&group=Support&dnis=4157350100\
                 &external_number=2127365000&time=1793527200000&recording=",
            ))
            .expect("valid");
        assert_eq!(events.len(), 2, "no recording without a link");
        assert_eq!(events[1].disposition, Some(Disposition::NoAnswer));
        assert_eq!(events[1].agent_extension, None);
    }

    #[test]
    fn an_outbound_call_by_get() {
        let query = "call_id=c-3&direction=Outbound&agent=Bob+Jones+(202)&external_number=(212)+736-5000\
                     &dnis=&time=1793527260000";
        let events = Chronicall.normalize(&raw("GET", Some(query), None, "")).expect("valid");
        assert_eq!(events.len(), 2);
        let hangup = &events[1];
        assert_eq!(hangup.direction, Direction::Outbound);
        assert_eq!(hangup.from_raw.as_deref(), Some("202"));
        assert_eq!(hangup.from_e164, None);
        assert_eq!(e164(&hangup.to_e164), Some("+12127365000"));
        assert_eq!(hangup.disposition, None, "nothing says whether the far end answered");
    }

    #[test]
    fn internal_and_intersite_calls_are_internal() {
        for value in ["Internal", "Intersite", "INTERNAL"] {
            let body = format!("call_id=c-4&direction={value}&agent=Ann+Smith+(201)&external_number=202");
            let events = Chronicall.normalize(&post(&body)).expect("valid");
            assert_eq!(events[0].direction, Direction::Internal, "{value}");
            assert_eq!(events[0].from_raw.as_deref(), Some("201"));
            assert_eq!(events[0].to_raw.as_deref(), Some("202"));
            assert_eq!(events[0].to_e164, None);
        }
        let events = Chronicall.normalize(&post("call_id=c-4&direction=Sideways")).expect("valid");
        assert_eq!(events[0].direction, Direction::Unknown, "an unknown direction is not fatal");
    }

    #[test]
    fn the_legacy_listen_link_names() {
        let events = Chronicall
            .normalize(&post(
                "callid=c-5&agent=Ann+Smith+(201)&callDirection=Inbound&externalNumber=2127365000\
                 &group=Sales&time=1793527200000&tag=&externallistenlink=http%3A%2F%2Fpbx.local%2Flisten%2F9",
            ))
            .expect("valid");
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].call_id.as_str(), "c-5");
        assert_eq!(events[0].direction, Direction::Inbound);
        assert_eq!(e164(&events[0].from_e164), Some("+12127365000"));
        assert_eq!(events[2].recording_url.as_deref(), Some("http://pbx.local/listen/9"));
    }

    #[test]
    fn agent_extensions() {
        assert_eq!(agent_extension("Ann Smith (201)").as_deref(), Some("201"));
        assert_eq!(agent_extension(" José Núñez ( 4410 ) ").as_deref(), Some("4410"));
        assert_eq!(agent_extension("Smith (Sales) (305)").as_deref(), Some("305"));
        assert_eq!(agent_extension("201").as_deref(), Some("201"));
        assert_eq!(agent_extension("Ann Smith"), None);
        assert_eq!(agent_extension("Ann (Sales)"), None);
        assert_eq!(agent_extension("()"), None);
        assert_eq!(agent_extension(")"), None);
        assert_eq!(agent_extension(""), None);
        assert_eq!(agent_extension(&format!("Ann ({})", "1".repeat(40))), None);
    }

    #[test]
    fn a_retry_gives_the_same_events_and_other_calls_do_not_collide() {
        let body = "call_id=c-6&direction=Inbound&agent=Ann+Smith+(201)&time=1793527200000";
        let first = Chronicall.normalize(&post(body)).expect("valid");
        let mut retry = post(body);
        retry.received_at = received() + chrono::Duration::seconds(30);
        let again = Chronicall.normalize(&retry).expect("valid");
        let ids = |events: &[CallEvent]| events.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&first), ids(&again));
        let other = Chronicall
            .normalize(&post("call_id=c-7&direction=Inbound&agent=Ann+Smith+(201)&time=1793527200000"))
            .expect("valid");
        assert!(ids(&first).iter().all(|id| !ids(&other).contains(id)));
    }

    #[test]
    fn times_without_or_after_the_request_fall_back_to_receipt() {
        let none = Chronicall.normalize(&post("call_id=c-8")).expect("valid");
        assert_eq!(none[0].occurred_at, received());
        let garbage = Chronicall.normalize(&post("call_id=c-8&time=yesterday")).expect("valid");
        assert_eq!(garbage[0].occurred_at, received());
        let later = Chronicall.normalize(&post("call_id=c-8&time=1793527800000")).expect("valid");
        assert_eq!(later[0].occurred_at, received(), "a start after the report is clamped");
    }

    #[test]
    fn the_token_is_never_read_as_a_field() {
        let fields = fields(&request("GET", Some("call_id=c-9&token=s3cret"), None, b"")).expect("a GET");
        assert_eq!(fields.get("token"), None);
        assert_eq!(fields.get("call_id"), Some("c-9"));
    }

    #[test]
    fn bad_requests_name_the_field_at_fault() {
        let cases = [
            (post("direction=Inbound"), "call_id is missing"),
            (post("call_id=c&event=recording_ready"), "event"),
            (post(&format!("call_id={}", "x".repeat(300))), "call_id"),
            (raw("POST", None, Some(JSON), r#"{"call_id": "c"}"#), "unsupported content type"),
        ];
        for (raw, expected) in cases {
            let error = Chronicall.normalize(&raw).expect_err(expected);
            assert!(error.0.contains(expected), "{expected}: {error}");
        }
        let mut region = post("call_id=c");
        region.default_region = "nowhere".into();
        assert!(Chronicall.normalize(&region).expect_err("region").0.contains("region"));
    }

    #[test]
    fn ingress_check() {
        let check = |method: &str, query: Option<&str>, content_type: Option<&str>, body: &[u8]| {
            Chronicall.check(&request(method, query, content_type, body))
        };
        let form = Some(FORM);
        assert_eq!(check("POST", None, form, b"call_id=c-1&agent=x"), Ok(Some("c-1".into())));
        assert_eq!(check("POST", Some("callid=c-2&token=t"), None, b""), Ok(Some("c-2".into())));
        assert_eq!(check("GET", Some("call_id=c-3"), None, b""), Ok(Some("c-3".into())));
        assert!(matches!(check("POST", None, form, b"agent=x"), Err(Rejection::Malformed(_))));
        assert!(matches!(check("GET", Some("call_id="), None, b""), Err(Rejection::Malformed(_))));
        assert!(matches!(check("GET", None, None, b""), Err(Rejection::Malformed(_))));
        assert!(matches!(check("POST", None, Some(JSON), b"{}"), Err(Rejection::UnsupportedMediaType(_))));
        assert!(matches!(
            check("POST", None, Some("text/plain"), b"call_id=c"),
            Err(Rejection::UnsupportedMediaType(_))
        ));
        assert_eq!(Chronicall.methods(), &["GET", "POST"]);
    }
}
