//! net2phone (Unite) call webhooks.
//!
//! net2phone posts one `application/json` object per event to the URL entered under Settings ›
//! API Integration. Its published webhook specification documents `call_ringing` ("an incoming
//! call is ringing on any phone number in your account, or an outgoing call is ringing its
//! destination") and `call_answered`, each with `id` ("unique per message"), `event`,
//! `timestamp` (UTC, ISO 8601), `direction` (`inbound` or `outbound`), `originating_number`
//! (who started the call), `dialed_number` (its recipient) and `user_name` (the Unite user's
//! display name, which the call model has no field for).
//!
//! Assumptions where the public specification is silent:
//! - The specification's examples carry no call identifier, but events of one call have to be
//!   grouped: the call id is read from `call_id` (string or number), required like any vendor's
//!   call id (400 at ingress when a call event lacks it).
//! - The completion events are not in the public excerpt: `call_completed` (also `call_ended`,
//!   `call_hangup`) is a `Hangup`, `call_missed` a `Hangup` with `NoAnswer`, `call_voicemail` (also
//!   `voicemail_left`) a `Hangup` with `Voicemail`. Another `call_*` event is dead-lettered, so
//!   that it is noticed rather than dropped; events that are not about calls give no event.
//!
//! Authentication: net2phone only takes a URL, so the source's secret travels as `?token=` (or
//! HTTP Basic when a proxy adds it); the reply is Switchboard's default.
//!
//! Mapping: numbers are `originating_number` → from and `dialed_number` → to for both
//! directions (that is what the fields mean); several users ringing for one call are several
//! `Ringing` events on the call, with no legs (the payload names no leg). The event time is
//! `timestamp`.
//!
//! Dedupe key: `id`, which is unique per message (a redelivery repeats it); when absent, a hash
//! of (`event`, `call_id`, `timestamp`, `user_name`).

use switchboard_model::{CallEvent, Direction, Disposition, EventKind, RawWebhook};

use crate::{Adapter, AdapterError, Rejection, Request, support};

#[derive(Debug)]
pub struct Net2phone;

fn is_call_event(event: &str) -> bool {
    event.starts_with("call_") || event == "voicemail_left"
}

fn kind(event: &str) -> Result<(EventKind, Option<Disposition>), AdapterError> {
    Ok(match event {
        "call_ringing" => (EventKind::Ringing, None),
        "call_answered" => (EventKind::Answered, None),
        "call_completed" | "call_ended" | "call_hangup" => (EventKind::Hangup, None),
        "call_missed" => (EventKind::Hangup, Some(Disposition::NoAnswer)),
        "call_voicemail" | "voicemail_left" => (EventKind::Hangup, Some(Disposition::Voicemail)),
        other => {
            return Err(AdapterError::new(format!(
                "event {other:?} is not one of call_ringing, call_answered, call_completed, call_missed, \
                 call_voicemail"
            )));
        }
    })
}

impl Adapter for Net2phone {
    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        let body = support::json_request(request)?;
        let event = support::json_str(&body, "event")
            .ok_or_else(|| Rejection::Malformed("event is missing".into()))?;
        if !is_call_event(event) {
            return Ok(None);
        }
        support::json_id(body.get("call_id"))
            .map(Some)
            .ok_or_else(|| Rejection::Malformed("call_id is missing".into()))
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let body = support::json_object(&raw.body)
            .map_err(|e| AdapterError::new(format!("body is not a net2phone webhook: {e}")))?;
        let event = support::json_str(&body, "event").ok_or_else(|| AdapterError::new("event is missing"))?;
        if !is_call_event(event) {
            return Ok(vec![]);
        }
        let (kind, disposition) = kind(event)?;
        let region = support::region(raw)?;
        let call_id = support::call_id(support::json_id(body.get("call_id")).as_deref(), "call_id")?;
        let timestamp = support::json_str(&body, "timestamp");
        let event_id = match support::json_id(body.get("id")) {
            Some(id) => id,
            None => support::stable_text_id(&[
                "net2phone",
                event,
                call_id.as_str(),
                timestamp.unwrap_or(""),
                support::json_str(&body, "user_name").unwrap_or(""),
            ]),
        };
        let occurred_at = support::time_or_received(timestamp, chrono_tz::UTC, raw.received_at);
        let mut found = CallEvent::new(raw, support::event_id(event_id)?, call_id, kind, occurred_at);
        found.direction = match support::json_str(&body, "direction").map(str::to_ascii_lowercase).as_deref()
        {
            Some("inbound") => Direction::Inbound,
            Some("outbound") => Direction::Outbound,
            _ => Direction::Unknown,
        };
        support::set_numbers(
            &mut found,
            support::json_str(&body, "originating_number"),
            support::json_str(&body, "dialed_number"),
            region,
        );
        if kind == EventKind::Hangup {
            found.disposition = disposition;
            found.hangup_cause = Some(support::clip(event));
        }
        Ok(vec![found])
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, JSON, request};

    fn raw(body: &str) -> RawWebhook {
        RawWebhook {
            received_at: test_support::at(1_793_527_200),
            ..test_support::json_raw(Vendor::Net2phone, body)
        }
    }

    fn one(body: &str) -> CallEvent {
        let mut events = Net2phone.normalize(&raw(body)).expect("valid");
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    #[test]
    fn reads_the_documented_fields() {
        let event = one(r#"{"id": "c998e523-3750-4ff4-9eac-76af1dc360b1", "event": "call_ringing",
                "timestamp": "2026-11-01T09:58:02Z", "direction": "inbound",
                "originating_number": "+14155550187", "dialed_number": "+14155550100",
                "user_name": "Ann Smith", "call_id": "2f6c7d1e"}"#);
        assert_eq!(event.event_id.as_str(), "c998e523-3750-4ff4-9eac-76af1dc360b1");
        assert_eq!(event.call_id.as_str(), "2f6c7d1e");
        assert_eq!(event.kind, EventKind::Ringing);
        assert_eq!(event.direction, Direction::Inbound);
        assert_eq!(event.from_e164.as_ref().map(|n| n.as_str()), Some("+14155550187"));
        assert_eq!(event.to_e164.as_ref().map(|n| n.as_str()), Some("+14155550100"));
        assert_eq!(event.occurred_at.to_rfc3339(), "2026-11-01T09:58:02+00:00");
    }

    #[test]
    fn every_call_event() {
        for (name, kind, disposition) in [
            ("call_ringing", EventKind::Ringing, None),
            ("call_answered", EventKind::Answered, None),
            ("call_completed", EventKind::Hangup, None),
            ("call_missed", EventKind::Hangup, Some(Disposition::NoAnswer)),
            ("call_voicemail", EventKind::Hangup, Some(Disposition::Voicemail)),
        ] {
            let event = one(&format!(
                r#"{{"id": "m-{name}", "event": "{name}", "call_id": 42, "direction": "outbound"}}"#
            ));
            assert_eq!((event.kind, event.disposition), (kind, disposition), "{name}");
            assert_eq!(event.call_id.as_str(), "42");
            assert_eq!(event.direction, Direction::Outbound);
            assert_eq!(event.occurred_at, event.received_at, "no timestamp");
        }
        assert_eq!(Net2phone.normalize(&raw(r#"{"id": "1", "event": "sms_received"}"#)), Ok(vec![]));
    }

    #[test]
    fn without_an_id_the_fields_are_hashed() {
        let body = r#"{"event": "call_answered", "call_id": "x", "timestamp": "2026-11-01T09:58:02Z"}"#;
        let first = one(body);
        assert!(first.event_id.as_str().starts_with("sha256:"));
        assert_eq!(first.event_id, one(body).event_id);
        let other = one(r#"{"event": "call_answered", "call_id": "x", "timestamp": "2026-11-01T09:58:09Z"}"#);
        assert_ne!(first.event_id, other.event_id);
    }

    #[test]
    fn bad_bodies_name_the_field() {
        for (body, field) in [
            (r#"{"id": "1", "call_id": "x"}"#, "event"),
            (r#"{"id": "1", "event": "call_ringing"}"#, "call_id"),
            (r#"{"id": "1", "event": "call_parked", "call_id": "x"}"#, "call_parked"),
            ("[1]", "not a JSON object"),
        ] {
            let error = Net2phone.normalize(&raw(body)).expect_err(body);
            assert!(error.0.contains(field), "{body}: {error}");
        }
    }

    #[test]
    fn ingress_check() {
        let check = |content_type: &str, body: &str| {
            Net2phone.check(&request("POST", None, Some(content_type), body.as_bytes()))
        };
        assert_eq!(check(JSON, r#"{"event": "call_ringing", "call_id": "c1"}"#), Ok(Some("c1".into())));
        assert_eq!(check(JSON, r#"{"event": "sms_received"}"#), Ok(None));
        assert!(matches!(check(JSON, r#"{"event": "call_ringing"}"#), Err(Rejection::Malformed(_))));
        assert!(matches!(check(JSON, r#"{"call_id": "c1"}"#), Err(Rejection::Malformed(_))));
        assert!(matches!(check(JSON, "nope"), Err(Rejection::Malformed(_))));
        assert!(matches!(check("text/plain", "{}"), Err(Rejection::UnsupportedMediaType(_))));
    }
}
