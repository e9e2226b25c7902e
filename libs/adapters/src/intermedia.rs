//! Intermedia Contact Center, as its IVR studio posts on "Agent Answers Call".
//!
//! Intermedia publishes no call webhook; what its contact center can do is run a "Rest WSCall"
//! step from an IVR studio page on the "Agent Answers Call" event. The documented setup (the one
//! HaloPSA's integration guide gives) sets the variables `CallID`, `AgentEmail`, `AgentNumber`,
//! `UserNumber` and `RecordingUrl` and posts, with HTTP Basic authentication, a body built by
//! string concatenation:
//!
//! ```text
//! { "CallID": "…", "AgentNumber": "…","AgentEmail": "…", "UserNumber": "…", "RecordingUrl": "…" }
//! ```
//!
//! Because the body is a template, any value may be an empty string or the text `null` (what
//! `.tostring()` gives for an unset variable); both are read as absent. The request format is
//! "Body JSON", but the WSCall step does not let the content type be configured, so besides
//! `application/json` a missing content type or `text/plain` is accepted when the body is a JSON
//! object; anything else (a form) is a 415. A value with a quote in it breaks the concatenated
//! JSON: that is a 400, as is a body without `CallID`.
//!
//! Authentication is Switchboard's default: the source id and secret as the WSCall's Basic user
//! and password (or `?token=`). The reply is the default; the studio only stores it in a variable.
//!
//! Mapping: every request is the `Answered` event of an inbound call (the studio page runs for
//! calls into the IVR): the caller is `UserNumber`, the agent `AgentNumber`/`AgentEmail`, and
//! each agent's answer is its own leg (`agent-<AgentNumber or AgentEmail>`), so a transfer answered
//! by a second agent is a second `Answered` event on the same call. `RecordingUrl` is set on the
//! event and, when it is an http(s) URL, also gives a `Recording` event (the URL names where the
//! recording will be; at answer time it is still being made). Intermedia sends no time: events
//! are dated by their receipt. It sends nothing for calls nobody answers, so missed calls never
//! reach this adapter.
//!
//! Dedupe key: a hash of (`CallID`, `AgentNumber`, `AgentEmail`): one agent answers one call once,
//! and a studio retry repeats the same values.

use serde_json::{Map, Value};
use switchboard_model::{CallEvent, Direction, EventKind, RawWebhook};

use crate::{Adapter, AdapterError, Rejection, Request, support};

#[derive(Debug)]
pub struct Intermedia;

/// A template value: text, trimmed, with `""` and `null` (the text or JSON null) as absent.
fn value<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    let text = match body.get(name)? {
        Value::String(s) => s.trim(),
        _ => return None,
    };
    (!text.is_empty() && !text.eq_ignore_ascii_case("null")).then_some(text)
}

/// The JSON object a request carries, when its content type can carry one.
fn body_object(content_type: Option<&str>, body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    let media = crate::media_type(content_type);
    let json = media == "application/json" || media.ends_with("+json");
    if !(json || media.is_empty() || media == "text/plain") {
        return Err(Rejection::UnsupportedMediaType(media));
    }
    support::json_object(body)
        .map_err(|e| Rejection::Malformed(format!("body is not the studio's JSON: {e}")))
}

/// Numbers as the studio writes them may also be JSON numbers if someone edits the template.
fn id_value(body: &Map<String, Value>, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::Number(n) => Some(n.to_string()),
        _ => value(body, name).map(str::to_owned),
    }
}

impl Adapter for Intermedia {
    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        let body = body_object(request.content_type, request.body)?;
        id_value(&body, "CallID").map(Some).ok_or_else(|| Rejection::Malformed("CallID is missing".into()))
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let body = body_object(raw.content_type.as_deref(), &raw.body)
            .map_err(|e| AdapterError::new(e.to_string()))?;
        let region = support::region(raw)?;
        let call_id = support::call_id(id_value(&body, "CallID").as_deref(), "CallID")?;
        let agent_number = id_value(&body, "AgentNumber");
        let agent_email = value(&body, "AgentEmail");
        let (agent, field) = match (agent_number.as_deref(), agent_email) {
            (Some(number), _) => (Some(number), "AgentNumber"),
            (None, email) => (email, "AgentEmail"),
        };
        let leg_id = support::leg_id(agent.map(|a| format!("agent-{a}")).as_deref(), field)?;
        let recording_url = support::url(value(&body, "RecordingUrl"));

        let base_id = support::stable_text_id(&[
            "intermedia",
            call_id.as_str(),
            agent_number.as_deref().unwrap_or(""),
            agent_email.unwrap_or(""),
        ]);
        let event = |kind: EventKind| -> Result<CallEvent, AdapterError> {
            let id = support::event_id(format!("{base_id}:{}", kind.as_str()))?;
            let mut event = CallEvent::new(raw, id, call_id.clone(), kind, raw.received_at);
            event.leg_id = leg_id.clone();
            event.direction = Direction::Inbound;
            support::set_numbers(&mut event, value(&body, "UserNumber"), None, region);
            event.agent_number = agent_number.as_deref().map(support::clip);
            event.agent_email = agent_email.map(support::clip);
            event.recording_url = recording_url.clone();
            Ok(event)
        };
        let mut events = vec![event(EventKind::Answered)?];
        if recording_url.is_some() {
            events.push(event(EventKind::Recording)?);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, FORM, JSON, request};

    /// The body exactly as the studio template concatenates it.
    fn studio(call: &str, agent_number: &str, agent_email: &str, user: &str, recording: &str) -> String {
        format!(
            r#"{{ "CallID": "{call}", "AgentNumber": "{agent_number}","AgentEmail": "{agent_email}", "UserNumber": "{user}", "RecordingUrl": "{recording}" }}"#
        )
    }

    fn raw(content_type: Option<&str>, body: &str) -> RawWebhook {
        RawWebhook {
            received_at: test_support::at(1_793_527_200),
            ..test_support::raw(Vendor::Intermedia, "POST", None, content_type, body)
        }
    }

    #[test]
    fn an_answer_with_a_recording() {
        let body = studio(
            "5f0c2a9e-77d1-4c1e-9a53-2b7d0c4e8a11",
            "+14155550142",
            "ann@example.com",
            "(415) 555-0187",
            "https://recordings.intermedia.net/r/5f0c2a9e.mp3",
        );
        let events = Intermedia.normalize(&raw(Some(JSON), &body)).expect("valid");
        assert_eq!(events.len(), 2);
        let answered = &events[0];
        assert_eq!(answered.kind, EventKind::Answered);
        assert_eq!(answered.call_id.as_str(), "5f0c2a9e-77d1-4c1e-9a53-2b7d0c4e8a11");
        assert_eq!(answered.leg_id.as_ref().map(|l| l.as_str()), Some("agent-+14155550142"));
        assert_eq!(answered.direction, Direction::Inbound);
        assert_eq!(answered.from_e164.as_ref().map(|n| n.as_str()), Some("+14155550187"));
        assert_eq!(answered.agent_number.as_deref(), Some("+14155550142"));
        assert_eq!(answered.agent_email.as_deref(), Some("ann@example.com"));
        assert_eq!(answered.occurred_at, answered.received_at, "the studio sends no time");
        assert_eq!(events[1].kind, EventKind::Recording);
        assert_eq!(
            events[1].recording_url.as_deref(),
            Some("https://recordings.intermedia.net/r/5f0c2a9e.mp3")
        );
        assert_ne!(events[0].event_id, events[1].event_id);
    }

    #[test]
    fn empty_and_null_values_are_absent() {
        let body = studio("c-1", "null", "", "NULL", " ");
        let events = Intermedia.normalize(&raw(None, &body)).expect("valid");
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!((event.agent_number.clone(), event.agent_email.clone()), (None, None));
        assert_eq!(
            (event.from_raw.clone(), event.recording_url.clone(), event.leg_id.clone()),
            (None, None, None)
        );
        let json_null = r#"{"CallID": "c-1", "AgentNumber": null, "AgentEmail": "bob@example.com"}"#;
        let event = &Intermedia.normalize(&raw(Some("text/plain"), json_null)).expect("valid")[0];
        assert_eq!(event.leg_id.as_ref().map(|l| l.as_str()), Some("agent-bob@example.com"));
    }

    #[test]
    fn each_agent_answer_is_one_event() {
        let first = studio("c-1", "+14155550142", "ann@example.com", "+14155550187", "");
        let second = studio("c-1", "+14155550143", "bob@example.com", "+14155550187", "");
        let a = Intermedia.normalize(&raw(None, &first)).expect("valid");
        let again = Intermedia.normalize(&raw(None, &first)).expect("valid");
        let b = Intermedia.normalize(&raw(None, &second)).expect("valid");
        assert_eq!(a[0].event_id, again[0].event_id);
        assert_ne!(a[0].event_id, b[0].event_id);
        assert_eq!(a[0].call_id, b[0].call_id);
    }

    #[test]
    fn bad_bodies() {
        for (content_type, body, reason) in [
            (Some(JSON), studio("", "1", "", "", ""), "CallID"),
            (Some(JSON), r#"{ "CallID": "null" }"#.to_owned(), "CallID"),
            (Some(JSON), r#"{ "CallID": "a"b" }"#.to_owned(), "not JSON"),
            (Some(FORM), "CallID=1".to_owned(), "content type"),
            (None, studio(&"x".repeat(300), "", "", "", ""), "CallID"),
            (None, studio("c-1", "", &"e".repeat(300), "", ""), "AgentEmail"),
        ] {
            let error = Intermedia.normalize(&raw(content_type, &body)).expect_err(&body);
            assert!(error.0.contains(reason), "{body}: {error}");
        }
    }

    #[test]
    fn ingress_check() {
        let check = |content_type: Option<&str>, body: &str| {
            Intermedia.check(&request("POST", None, content_type, body.as_bytes()))
        };
        let body = studio("c-9", "101", "", "", "");
        assert_eq!(check(Some(JSON), &body), Ok(Some("c-9".into())));
        assert_eq!(check(None, &body), Ok(Some("c-9".into())));
        assert_eq!(check(Some("text/plain; charset=utf-8"), &body), Ok(Some("c-9".into())));
        assert!(matches!(check(Some(FORM), &body), Err(Rejection::UnsupportedMediaType(_))));
        assert!(matches!(check(None, r#"{ "CallID": "a"b" }"#), Err(Rejection::Malformed(_))));
        assert!(matches!(check(None, &studio("", "", "", "", "")), Err(Rejection::Malformed(_))));
    }
}
