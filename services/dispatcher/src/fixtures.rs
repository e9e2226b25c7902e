//! Sample calls for the unit tests: an answered inbound call whose recording is ready, a missed
//! inbound call, an answered outbound call, and events of them.

use chrono::{DateTime, TimeZone, Utc};
use switchboard_model::{
    AgentMatch, AgentRef, CallEvent, CallId, CallRecord, CallStatus, Completion, ContactMatch, Direction,
    Disposition, EventId, EventKind, Outcome, PhoneNumber, RecordingStatus, SourceId, Vendor,
};

pub(crate) fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, h, m, s).single().expect("a valid time")
}

fn agent() -> AgentRef {
    AgentRef {
        agent_id: Some("ag-7".into()),
        agent_match: Some(AgentMatch::Extension),
        extension: Some("101".into()),
        number: None,
        email: Some("ann@example.com".into()),
    }
}

/// Inbound from +44 20 7946 0000 to +44 20 7946 0999, answered by extension 101 after 10 s, 95 s
/// of talk, recording ready.
pub(crate) fn answered_inbound() -> CallRecord {
    CallRecord {
        source_id: SourceId::parse("acme-pbx").expect("a source id"),
        vendor: Vendor::Generic,
        call_id: CallId::parse("c-1001").expect("a call id"),
        version: 3,
        status: CallStatus::Ended,
        outcome: Some(Outcome::Answered),
        completion: Some(Completion::EndMarker),
        completed_at: Some(at(10, 1, 50)),
        direction: Direction::Inbound,
        from_number: Some("+442079460000".into()),
        to_number: Some("+442079460999".into()),
        started_at: at(10, 0, 0),
        answered_at: Some(at(10, 0, 10)),
        ended_at: Some(at(10, 1, 45)),
        duration_seconds: Some(105),
        talk_seconds: Some(95),
        disposition: Some(Disposition::Answered),
        hangup_cause: None,
        agent: Some(agent()),
        contact_ids: vec!["ct-1".into()],
        contact_match: Some(ContactMatch::Unique),
        responsible_agent_id: Some("ag-7".into()),
        recording_url: Some("https://sb.example.com/v1/recordings/r1?token=t".into()),
        recording_id: None,
        legs: Vec::new(),
        recording_status: Some(RecordingStatus::Ready),
        recording_error: None,
        queue: None,
        wrap_up: None,
    }
}

/// The same caller, nobody answered, no recording, no contact.
pub(crate) fn missed_inbound() -> CallRecord {
    CallRecord {
        call_id: CallId::parse("c-1002").expect("a call id"),
        version: 2,
        outcome: Some(Outcome::Missed),
        answered_at: None,
        ended_at: Some(at(10, 0, 30)),
        duration_seconds: Some(30),
        talk_seconds: None,
        disposition: Some(Disposition::NoAnswer),
        agent: None,
        contact_ids: Vec::new(),
        contact_match: Some(ContactMatch::None),
        responsible_agent_id: None,
        recording_url: None,
        recording_status: None,
        ..answered_inbound()
    }
}

/// Extension 101 calls +1 415 555 0123, 42 s of talk, recording still pending.
pub(crate) fn answered_outbound() -> CallRecord {
    CallRecord {
        call_id: CallId::parse("c-1003").expect("a call id"),
        version: 1,
        direction: Direction::Outbound,
        from_number: Some("101".into()),
        to_number: Some("+14155550123".into()),
        answered_at: Some(at(10, 0, 5)),
        ended_at: Some(at(10, 0, 47)),
        duration_seconds: Some(47),
        talk_seconds: Some(42),
        contact_ids: Vec::new(),
        recording_url: None,
        recording_status: Some(RecordingStatus::Pending),
        ..answered_inbound()
    }
}

pub(crate) fn event(kind: EventKind, direction: Direction) -> CallEvent {
    let mut event = CallEvent::empty(
        SourceId::parse("acme-pbx").expect("a source id"),
        Vendor::Generic,
        CallId::parse("c-1001").expect("a call id"),
        EventId::parse(format!("ev-{}", kind.as_str())).expect("an event id"),
        kind,
        at(10, 0, 0),
    );
    event.direction = direction;
    event.from_e164 = Some(PhoneNumber::from_e164("+442079460000").expect("E.164"));
    event.to_e164 = Some(PhoneNumber::from_e164("+442079460999").expect("E.164"));
    event.agent_extension = Some("101".into());
    event.agent_id = Some("ag-7".into());
    event
}
