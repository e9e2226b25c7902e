//! OnlinePBX web-hooks (Profile › Web-hooks): the PBX POSTs one JSON object per call event, only to
//! URLs with a valid TLS certificate. Fields used: `event` (`call_start`, `call_answered`,
//! `call_end`; `call_missed` is read too), `uuid` (the call), `direction` (`inbound`/`outbound`),
//! `caller`, `callee`, `from_domain`/`to_domain` (a party's SIP domain: set for the PBX's own users),
//! `gateway` (the company line, DID), `date` (Unix seconds as text), and on `call_end`
//! `dialog_duration` (talk seconds), `hangup_cause` (FreeSWITCH cause names such as
//! `NORMAL_CLEARING`, `USER_BUSY`, `NO_ANSWER`, `ORIGINATOR_CANCEL`) and `download_url` (the
//! recording).
//!
//! OnlinePBX signs nothing, so the source keeps the default proof: the secret as `?token=` in the
//! hook URL (or HTTP Basic). The answer is Switchboard's default `202`.
//!
//! Mapping: `call_start` → ringing, `call_answered` → answered, `call_end` → hangup (and
//! `call_missed` → hangup, no answer). `from` and `to` are the two ends seen from outside: on an
//! inbound call the caller and the company line (`gateway`, else the callee), on an outbound call
//! the company line (else the caller) and the callee. The PBX user on the call (the party with a
//! SIP domain, or a short all-digit number) is the agent extension, and also the leg id, since
//! OnlinePBX numbers calls, not legs: the legs of a transfer between two agents stay apart. A
//! `call_end` with `dialog_duration` > 0 is answered; otherwise the cause decides (busy, no answer,
//! cancelled, rejected, failed; a normal clearing without dialogue is no answer). `download_url`
//! becomes the hangup's `recording_url` and an extra recording event.
//!
//! The public page shows no event id; the dedupe key is a hash of `uuid`, event, `date` and both
//! parties, so a retry hashes the same. `call_missed` is not in the public examples (the page
//! mentions four event kinds and shows three); it is read as a missed-call hangup, an assumption.

use switchboard_model::{CallEvent, Direction, Disposition, EventKind, RawWebhook};

use crate::support;
use crate::{Adapter, AdapterError, Rejection, Request};

#[derive(Debug)]
pub struct Onlinepbx;

type Object = serde_json::Map<String, serde_json::Value>;

/// A string or number field as text (numbers and durations come either way).
fn id(object: &Object, name: &str) -> Option<String> {
    support::json_id(object.get(name))
}

/// Whether a party is one of the PBX's own users rather than an outside number.
fn is_user(number: Option<&str>, domain: Option<&str>) -> bool {
    let Some(number) = number else { return false };
    domain.is_some() || (number.len() <= 6 && number.bytes().all(|b| b.is_ascii_digit()))
}

fn hangup_disposition(cause: Option<&str>) -> Disposition {
    let Some(cause) = cause else { return Disposition::NoAnswer };
    match cause.to_ascii_uppercase().as_str() {
        "NORMAL_CLEARING"
        | "NO_ANSWER"
        | "NO_USER_RESPONSE"
        | "ALLOTTED_TIMEOUT"
        | "RECOVERY_ON_TIMER_EXPIRE"
        | "LOSE_RACE"
        | "PICKED_OFF" => Disposition::NoAnswer,
        "USER_BUSY" => Disposition::Busy,
        "ORIGINATOR_CANCEL" => Disposition::Cancelled,
        "CALL_REJECTED" => Disposition::Rejected,
        "UNALLOCATED_NUMBER"
        | "NO_ROUTE_DESTINATION"
        | "NO_ROUTE_TRANSIT_NET"
        | "NUMBER_CHANGED"
        | "INVALID_NUMBER_FORMAT"
        | "DESTINATION_OUT_OF_ORDER"
        | "NETWORK_OUT_OF_ORDER"
        | "NORMAL_TEMPORARY_FAILURE"
        | "SWITCH_CONGESTION"
        | "NORMAL_CIRCUIT_CONGESTION"
        | "SUBSCRIBER_ABSENT"
        | "USER_NOT_REGISTERED"
        | "GATEWAY_DOWN"
        | "INCOMPATIBLE_DESTINATION"
        | "MEDIA_TIMEOUT"
        | "SERVICE_UNAVAILABLE" => Disposition::Failed,
        _ => Disposition::Unknown,
    }
}

/// Seconds as a JSON number or numeric text; `None` when absent or not a number.
fn seconds(object: &Object, name: &str) -> Option<f64> {
    id(object, name)?.parse::<f64>().ok().filter(|s| s.is_finite())
}

impl Adapter for Onlinepbx {
    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        let object = support::json_request(request)?;
        support::call_key(id(&object, "uuid").as_deref(), "uuid")
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let object = support::json_object(&raw.body).map_err(|e| AdapterError::new(format!("body: {e}")))?;
        let event_name =
            support::json_str(&object, "event").ok_or_else(|| AdapterError::new("event is missing"))?;
        let (kind, missed) = match event_name.to_ascii_lowercase().as_str() {
            "call_start" => (EventKind::Ringing, false),
            "call_answered" => (EventKind::Answered, false),
            "call_end" => (EventKind::Hangup, false),
            "call_missed" => (EventKind::Hangup, true),
            _ => {
                return Err(AdapterError::new(format!(
                    "event {:?} is not one of call_start, call_answered, call_end, call_missed",
                    support::clip(event_name)
                )));
            }
        };
        let uuid = id(&object, "uuid");
        let call_id = support::call_id(uuid.as_deref(), "uuid")?;
        let region = support::region(raw)?;
        let date = id(&object, "date");
        let occurred_at = support::time_or_received(date.as_deref(), support::timezone(raw), raw.received_at);

        let caller = id(&object, "caller");
        let callee = id(&object, "callee");
        let gateway = id(&object, "gateway");
        let caller_is_user = is_user(caller.as_deref(), support::json_str(&object, "from_domain"));
        let callee_is_user = is_user(callee.as_deref(), support::json_str(&object, "to_domain"));
        let direction = match support::json_str(&object, "direction").map(str::to_ascii_lowercase).as_deref()
        {
            _ if caller_is_user && callee_is_user => Direction::Internal,
            Some("inbound" | "incoming" | "in") => Direction::Inbound,
            Some("outbound" | "outgoing" | "out") => Direction::Outbound,
            Some("internal" | "local") => Direction::Internal,
            _ => Direction::Unknown,
        };
        let (from, to, agent) = match direction {
            Direction::Outbound => (
                gateway.as_deref().or(caller.as_deref()),
                callee.as_deref(),
                caller_is_user.then_some(&caller),
            ),
            Direction::Internal => (caller.as_deref(), callee.as_deref(), Some(&callee)),
            _ => (
                caller.as_deref(),
                gateway.as_deref().or(callee.as_deref()),
                callee_is_user.then_some(&callee),
            ),
        };
        let agent = agent.and_then(Option::as_deref).map(support::clip);

        let event_id = support::stable_text_id(&[
            "onlinepbx",
            call_id.as_str(),
            &event_name.to_ascii_lowercase(),
            date.as_deref().unwrap_or(""),
            caller.as_deref().unwrap_or(""),
            callee.as_deref().unwrap_or(""),
        ]);

        let mut event = CallEvent::new(raw, support::event_id(event_id.clone())?, call_id, kind, occurred_at);
        event.leg_id = support::leg_id(agent.as_deref(), "agent extension")?;
        event.direction = direction;
        support::set_numbers(&mut event, from, to, region);
        event.agent_extension = agent;
        if kind == EventKind::Hangup {
            let cause = support::json_str(&object, "hangup_cause");
            let talked = seconds(&object, "dialog_duration").is_some_and(|s| s > 0.0);
            event.disposition = Some(match () {
                _ if missed => Disposition::NoAnswer,
                _ if talked => Disposition::Answered,
                _ => hangup_disposition(cause),
            });
            event.hangup_cause = cause.map(support::clip);
            event.recording_url = support::url(support::json_str(&object, "download_url"));
        }
        support::with_recording(event, &event_id)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, FORM, JSON, e164, request};

    fn raw(body: &str) -> RawWebhook {
        RawWebhook { default_region: "RU".into(), ..test_support::json_raw(Vendor::Onlinepbx, body) }
    }

    fn normalize(body: &str) -> Vec<CallEvent> {
        Onlinepbx.normalize(&raw(body)).expect("valid")
    }

    const OUTBOUND_START: &str = r#"{"domain":"acme.onpbx.ru","event":"call_start","direction":"outbound",
        "uuid":"d02d3dd1-36f9-41a8-9055-3139369b6b90","caller":"505","callee":"79111117960",
        "from_domain":"acme.onpbx.ru","to_domain":"","gateway":"74957775533","date":"1793527200"}"#;

    #[test]
    fn call_start_outbound() {
        let events = normalize(OUTBOUND_START);
        let e = &events[0];
        assert_eq!((e.kind, e.direction), (EventKind::Ringing, Direction::Outbound));
        assert_eq!(e.call_id.as_str(), "d02d3dd1-36f9-41a8-9055-3139369b6b90");
        assert_eq!(e164(&e.from_e164), Some("+74957775533"), "the company line");
        assert_eq!(e164(&e.to_e164), Some("+79111117960"));
        assert_eq!(e.agent_extension.as_deref(), Some("505"));
        assert_eq!(e.leg_id.as_ref().map(|l| l.as_str()), Some("505"));
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-01T10:00:00+00:00");
    }

    #[test]
    fn inbound_answer_names_the_user_who_answered() {
        let events = normalize(
            r#"{"event":"call_answered","direction":"inbound","uuid":"u1","caller":"74951234567",
                "callee":"101","to_domain":"acme.onpbx.ru","gateway":"74957775533","date":1793527207}"#,
        );
        let e = &events[0];
        assert_eq!((e.kind, e.direction), (EventKind::Answered, Direction::Inbound));
        assert_eq!(e164(&e.from_e164), Some("+74951234567"));
        assert_eq!(e164(&e.to_e164), Some("+74957775533"));
        assert_eq!(e.agent_extension.as_deref(), Some("101"));
        assert_eq!(e.occurred_at.timestamp(), 1_793_527_207);
    }

    #[test]
    fn call_end_dispositions() {
        let end = |dialog: &str, cause: &str| {
            let body = format!(
                r#"{{"event":"call_end","direction":"inbound","uuid":"u1","caller":"74951234567",
                    "callee":"101","date":"1793527380","call_duration":"40","dialog_duration":{dialog},
                    "hangup_cause":"{cause}"}}"#
            );
            normalize(&body)[0].disposition
        };
        assert_eq!(end("\"31\"", "NORMAL_CLEARING"), Some(Disposition::Answered));
        assert_eq!(end("31", "NORMAL_CLEARING"), Some(Disposition::Answered));
        assert_eq!(end("\"0\"", "NORMAL_CLEARING"), Some(Disposition::NoAnswer));
        assert_eq!(end("0", "USER_BUSY"), Some(Disposition::Busy));
        assert_eq!(end("0", "NO_ANSWER"), Some(Disposition::NoAnswer));
        assert_eq!(end("0", "ORIGINATOR_CANCEL"), Some(Disposition::Cancelled));
        assert_eq!(end("0", "CALL_REJECTED"), Some(Disposition::Rejected));
        assert_eq!(end("0", "UNALLOCATED_NUMBER"), Some(Disposition::Failed));
        assert_eq!(end("0", "SOMETHING_NEW"), Some(Disposition::Unknown));
        assert_eq!(end("\"n/a\"", "USER_BUSY"), Some(Disposition::Busy));
        let events = normalize(r#"{"event":"call_end","uuid":"u1","hangup_cause":"NORMAL_CLEARING"}"#);
        assert_eq!(events[0].hangup_cause.as_deref(), Some("NORMAL_CLEARING"));
        let missed = normalize(r#"{"event":"call_missed","uuid":"u1","dialog_duration":"0"}"#);
        assert_eq!((missed[0].kind, missed[0].disposition), (EventKind::Hangup, Some(Disposition::NoAnswer)));
    }

    #[test]
    fn download_url_adds_a_recording_event() {
        let events = normalize(
            r#"{"event":"call_end","uuid":"u1","dialog_duration":"31","hangup_cause":"NORMAL_CLEARING",
                "download_url":"https://api2.onlinepbx.ru/acme.onpbx.ru/download/u1.mp3"}"#,
        );
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, EventKind::Recording);
        let url = Some("https://api2.onlinepbx.ru/acme.onpbx.ru/download/u1.mp3");
        assert_eq!((events[0].recording_url.as_deref(), events[1].recording_url.as_deref()), (url, url));
        assert_eq!(events[1].disposition, None);
    }

    #[test]
    fn internal_calls() {
        let events = normalize(
            r#"{"event":"call_start","direction":"outbound","uuid":"u2","caller":"101","callee":"102",
                "from_domain":"acme.onpbx.ru","to_domain":"acme.onpbx.ru","date":"1793527200"}"#,
        );
        assert_eq!(events[0].direction, Direction::Internal);
        assert_eq!(events[0].agent_extension.as_deref(), Some("102"));
    }

    #[test]
    fn retries_hash_the_same_and_other_events_differ() {
        let first = normalize(OUTBOUND_START);
        assert_eq!(first[0].event_id, normalize(OUTBOUND_START)[0].event_id);
        let answered = normalize(&OUTBOUND_START.replace("call_start", "call_answered"));
        assert_ne!(first[0].event_id, answered[0].event_id);
    }

    #[test]
    fn bad_bodies_name_the_field_at_fault() {
        let cases = [
            ("[1]", "not a JSON object"),
            ("{nope", "not JSON"),
            (r#"{"uuid":"u1"}"#, "event is missing"),
            (r#"{"event":"call_parked","uuid":"u1"}"#, "event \"call_parked\""),
            (r#"{"event":"call_start"}"#, "uuid is missing"),
            (r#"{"event":"call_start","uuid":"a\nb"}"#, "uuid"),
        ];
        for (body, expected) in cases {
            let error = Onlinepbx.normalize(&raw(body)).expect_err(body);
            assert!(error.0.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn ingress_check() {
        let check = |content_type: Option<&str>, body: &[u8]| {
            Onlinepbx.check(&request("POST", None, content_type, body))
        };
        let json = Some(JSON);
        assert_eq!(check(json, br#"{"event":"call_start","uuid":"u1"}"#), Ok(Some("u1".into())));
        assert!(matches!(check(json, br#"{"event":"call_start"}"#), Err(Rejection::Malformed(_))));
        assert!(matches!(check(json, b"[]"), Err(Rejection::Malformed(_))));
        assert!(matches!(check(Some(FORM), b"uuid=u1"), Err(Rejection::UnsupportedMediaType(_))));
    }
}
