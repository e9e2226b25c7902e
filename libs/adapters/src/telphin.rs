//! Telphin (Телфин) extension events: the PBX calls the URL registered per extension with
//! `POST /extension/{id}/event/` (`event_type` dial-in, dial-out, answer, hangup, voicemail,
//! message-in, message-out), as an `application/x-www-form-urlencoded` POST body or, for
//! subscriptions registered with `method=GET`, the same fields in the query. Fields used:
//! `EventType`, `CallID` (the call; "does not change on forwarding"), `SubCallID` (the leg: one per
//! extension the call reaches, so a transfer between two agents gives two legs of one call),
//! `CallFlow` (`IN`/`OUT`, any case), `CallerIDNum`, `RemoteNumber` (dial-in only: the real external
//! number after a `#1`/`*2` transfer, preferred over `CallerIDNum`), `CalledDID` (the company number
//! the call came in on), `CalledNumber`, `CallerExtension`/`CalledExtension`
//! (`client_prefix*ext@pbx_domain`; the agent extension is the part between `*` and `@`),
//! `CallStatus`, `Bridged`, `RecID` and `EventTime`.
//!
//! Telphin signs nothing, so the source keeps the default proof: the secret as `?token=` in the
//! registered URL (or HTTP Basic). The PBX ignores the answer; it gets an empty `200`.
//!
//! Mapping: dial-in → ringing inbound, dial-out → ringing outbound, answer → answered, hangup →
//! hangup; `CallFlow` overrides the direction the event type implies, and a call between two
//! extensions with no external number anywhere is internal. On a hangup the disposition comes from
//! `Bridged` when present (`yes` → answered, `no` → no answer: Telphin's documented way to log calls
//! missed in an IVR or queue, whose own `CallStatus` is `ANSWER` because the IVR picked up), else
//! from `CallStatus` (ANSWER, BUSY, NOANSWER, CANCEL, CONGESTION/CHANUNAVAIL → failed). `Bridged`
//! is only sent by IVR and queue extensions, so such hangups name no agent. Those extensions are
//! reported by their hangup alone, whose `Duration` says how long the extension had the call: such
//! a hangup is preceded by a ringing event of its leg `Duration` seconds earlier, so that the leg,
//! and a call that never left the IVR, lasts as long as Telphin says. `RecID` becomes the
//! hangup's `recording_id` and an extra recording event for the recordings stage, which resolves
//! it through `/extension/{id}/record/{RecID}/storage_url/`. A `voicemail` event about a call is a
//! hangup with disposition voicemail; message and extension-status events are about no call.
//!
//! Time: `EventTime` is Unix time in microseconds in the public integrations; a local wall-clock
//! text (the account's zone, from the source's `timezone` setting) is read too, and a missing or
//! implausible time falls back to the receive time. The dedupe key is a hash of the fields that
//! tell one event from another (call, leg, event type, status, bridged, extensions, vendor time):
//! a retry, or the same event by GET and by POST, hashes the same.

use switchboard_model::{CallEvent, Direction, Disposition, EventKind, RawWebhook};

use crate::support::{self, Fields};
use crate::{Adapter, AdapterError, Rejection, Reply, Request};

#[derive(Debug)]
pub struct Telphin;

/// What an `EventType` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A call event, with the direction the event type implies (dial-in, dial-out).
    Call(EventKind, Option<Direction>),
    /// A voicemail left on an extension: a hangup when it names a call.
    Voicemail,
    /// Messages and extension or queue-agent states: valid, about no call.
    NotACall,
}

fn classify(event_type: &str) -> Option<Class> {
    let class = match event_type.to_ascii_lowercase().as_str() {
        "dial-in" => Class::Call(EventKind::Ringing, Some(Direction::Inbound)),
        "dial-out" => Class::Call(EventKind::Ringing, Some(Direction::Outbound)),
        "answer" => Class::Call(EventKind::Answered, None),
        "hangup" => Class::Call(EventKind::Hangup, None),
        "voicemail" => Class::Voicemail,
        "message-in" | "message-out" | "extension-call-status" | "available" | "logged_out" => {
            Class::NotACall
        }
        _ => return None,
    };
    Some(class)
}

/// Whether a request may come without a `CallID` (it is then about no call).
fn may_lack_call(event_type: Option<&str>) -> bool {
    matches!(event_type.and_then(classify), Some(Class::NotACall | Class::Voicemail))
}

/// The extension number in `client_prefix*ext@pbx_domain` (or `ext@domain`, or a bare `ext`).
fn extension(text: Option<&str>) -> Option<String> {
    let before_at = text?.split('@').next()?.trim();
    let ext = before_at.rsplit_once('*').map_or(before_at, |(_, ext)| ext).trim();
    (!ext.is_empty()).then(|| support::clip(ext))
}

fn is_public_number(text: Option<&str>, region: switchboard_model::Region) -> bool {
    support::number(text, region).1.is_some()
}

fn flow(fields: &Fields) -> Option<Direction> {
    match fields.get("CallFlow")?.to_ascii_lowercase().as_str() {
        "in" => Some(Direction::Inbound),
        "out" => Some(Direction::Outbound),
        _ => None,
    }
}

/// Longest `Duration` believed: a day. A larger one is a corrupt field, not a call.
const MAX_DURATION_SECONDS: i64 = 24 * 60 * 60;

/// `Duration`, whole seconds, when it is a plausible positive length.
fn duration(fields: &Fields) -> Option<chrono::Duration> {
    let seconds: i64 = fields.get("Duration")?.trim().parse().ok()?;
    (1..=MAX_DURATION_SECONDS).contains(&seconds).then(|| chrono::Duration::seconds(seconds))
}

/// The start of a leg that Telphin reports by its hangup alone (an IVR or a queue): a ringing
/// event of the same leg, `length` before the hangup, with a key of its own.
fn leg_start(
    hangup: &CallEvent,
    length: chrono::Duration,
    hangup_id: &str,
) -> Result<CallEvent, AdapterError> {
    let mut start = hangup.clone();
    start.event_id = support::event_id(support::stable_text_id(&[hangup_id, "start"]))?;
    start.kind = EventKind::Ringing;
    // Checked: a hangup dated at the start of time has no earlier instant (the leg then starts
    // with its hangup).
    start.occurred_at = hangup.occurred_at.checked_sub_signed(length).unwrap_or(hangup.occurred_at);
    (start.disposition, start.hangup_cause) = (None, None);
    (start.recording_id, start.recording_url) = (None, None);
    Ok(start)
}

fn disposition(fields: &Fields) -> Option<Disposition> {
    match fields.get("Bridged").map(str::to_ascii_lowercase).as_deref() {
        Some("yes") => return Some(Disposition::Answered),
        Some("no") => return Some(Disposition::NoAnswer),
        _ => {}
    }
    let status = fields.get("CallStatus")?.to_ascii_uppercase();
    Some(match status.as_str() {
        "ANSWER" | "ANSWERED" => Disposition::Answered,
        "BUSY" => Disposition::Busy,
        "NOANSWER" | "NO ANSWER" => Disposition::NoAnswer,
        "CANCEL" => Disposition::Cancelled,
        "CONGESTION" | "CHANUNAVAIL" => Disposition::Failed,
        _ => Disposition::Unknown,
    })
}

impl Adapter for Telphin {
    fn methods(&self) -> &'static [&'static str] {
        &["GET", "POST"]
    }

    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        support::require_form(request)?;
        let fields = Fields::from_request(request);
        if fields.is_empty() {
            return Err(Rejection::Malformed("no Telphin event fields in the body or query".into()));
        }
        match fields.get("CallID") {
            Some(call_id) => support::call_key(Some(call_id), "CallID"),
            None if may_lack_call(fields.get("EventType")) => Ok(None),
            None => Err(Rejection::Malformed("CallID is missing".into())),
        }
    }

    fn reply(&self, _raw_id: &str) -> Reply {
        Reply::empty_ok()
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let fields = Fields::from_request(&Request::from_raw(raw));
        let event_type = fields.get("EventType").ok_or_else(|| AdapterError::new("EventType is missing"))?;
        let class = classify(event_type).ok_or_else(|| {
            AdapterError::new(format!(
                "EventType {:?} is not one of dial-in, dial-out, answer, hangup, voicemail, \
                 message-in, message-out",
                support::clip(event_type)
            ))
        })?;
        let (kind, implied_direction) = match class {
            Class::NotACall => return Ok(vec![]),
            Class::Voicemail if fields.get("CallID").is_none() => return Ok(vec![]),
            Class::Voicemail => (EventKind::Hangup, None),
            Class::Call(kind, direction) => (kind, direction),
        };

        let call_id = support::call_id(fields.get("CallID"), "CallID")?;
        let leg_id = support::leg_id(fields.get("SubCallID"), "SubCallID")?;
        let region = support::region(raw)?;
        let vendor_time = fields.get_any(&["EventTime", "CallTime"]);
        let occurred_at = support::time_or_received(vendor_time, support::timezone(raw), raw.received_at);

        let caller_ext = fields.get("CallerExtension");
        let called_ext = fields.get("CalledExtension");
        let remote = fields.get("RemoteNumber");
        let did = fields.get("CalledDID");
        let (caller_short, called_short) = (extension(caller_ext), extension(called_ext));
        let flow = flow(&fields).or(implied_direction);
        let outbound = flow == Some(Direction::Outbound);
        let (from, to) = if outbound {
            (
                fields.get("CallerIDNum").or(caller_short.as_deref()),
                fields.get("CalledNumber").or(called_short.as_deref()),
            )
        } else {
            (
                remote.or(fields.get("CallerIDNum")).or(caller_short.as_deref()),
                did.or(fields.get("CalledNumber")).or(called_short.as_deref()),
            )
        };
        let external = if outbound { to } else { from };
        let internal = caller_ext.is_some()
            && called_ext.is_some()
            && remote.is_none()
            && did.is_none()
            && !is_public_number(external, region);
        let direction = if internal { Direction::Internal } else { flow.unwrap_or(Direction::Unknown) };
        // `Bridged` comes only from IVR and queue extensions, which are not agents.
        let agent_extension = match fields.get("Bridged") {
            Some(_) => None,
            None if outbound => caller_short.clone(),
            None => called_short.clone(),
        };

        let status = fields.get("CallStatus");
        let event_id = support::stable_text_id(&[
            "telphin",
            call_id.as_str(),
            leg_id.as_ref().map_or("", |l| l.as_str()),
            &event_type.to_ascii_lowercase(),
            status.unwrap_or(""),
            fields.get("Bridged").unwrap_or(""),
            caller_ext.unwrap_or(""),
            called_ext.unwrap_or(""),
            vendor_time.unwrap_or(""),
        ]);

        let mut event = CallEvent::new(raw, support::event_id(event_id.clone())?, call_id, kind, occurred_at);
        event.leg_id = leg_id;
        event.direction = direction;
        support::set_numbers(&mut event, from, to, region);
        event.agent_extension = agent_extension;
        if kind == EventKind::Hangup {
            event.disposition = match class {
                Class::Voicemail => Some(Disposition::Voicemail),
                _ => disposition(&fields),
            };
            event.hangup_cause = status.map(support::clip);
            event.recording_id = fields.text("RecID");
        }
        // Only IVR and queue extensions send `Bridged`, and only their hangup: without a start,
        // a caller who gave up in the IVR would have a call of no length.
        let start = match (class, fields.get("Bridged"), duration(&fields)) {
            (Class::Call(EventKind::Hangup, _), Some(_), Some(length)) => {
                Some(leg_start(&event, length, &event_id)?)
            }
            _ => None,
        };
        let mut events = support::with_recording(event, &event_id)?;
        if let Some(start) = start {
            events.insert(0, start);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, FORM, RECEIVED, e164, request};

    fn raw(method: &str, query: Option<&str>, body: &str) -> RawWebhook {
        RawWebhook {
            default_region: "RU".into(),
            timezone: Some("Europe/Moscow".into()),
            ..test_support::form_raw(Vendor::Telphin, method, query, body)
        }
    }

    fn post(body: &str) -> Vec<CallEvent> {
        Telphin.normalize(&raw("POST", None, body)).expect("valid")
    }

    const DIAL_IN: &str = "EventType=dial-in&CallID=5A1C0E7AB5D111F0A3C5D9B1E2F3A4B5\
        &SubCallID=200101-5A1C0E7AB5D111F0A3C5D9B1E2F3A4B5&CallFlow=in&CallerIDNum=74951234567\
        &CallerIDName=Ivanov&CalledDID=74957775533&CalledNumber=101\
        &CalledExtension=12345*101%40sipproxy.telphin.ru&CallStatus=CALLING\
        &EventTime=1793527200000000";

    #[test]
    fn dial_in_is_inbound_ringing_with_numbers_and_agent() {
        let events = post(DIAL_IN);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.kind, EventKind::Ringing);
        assert_eq!(e.direction, Direction::Inbound);
        assert_eq!(e.call_id.as_str(), "5A1C0E7AB5D111F0A3C5D9B1E2F3A4B5");
        assert_eq!(e.leg_id.as_ref().map(|l| l.as_str()), Some("200101-5A1C0E7AB5D111F0A3C5D9B1E2F3A4B5"));
        assert_eq!(e164(&e.from_e164), Some("+74951234567"));
        assert_eq!(e164(&e.to_e164), Some("+74957775533"));
        assert_eq!(e.agent_extension.as_deref(), Some("101"));
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-01T10:00:00+00:00");
        assert_eq!(e.disposition, None);
        assert!(e.event_id.as_str().starts_with("sha256:"));
    }

    #[test]
    fn remote_number_wins_over_caller_id() {
        let body = format!("{DIAL_IN}&RemoteNumber=74991112233");
        assert_eq!(e164(&post(&body)[0].from_e164), Some("+74991112233"));
    }

    #[test]
    fn dial_out_is_outbound_with_the_callers_extension() {
        let events = post(
            "EventType=dial-out&CallID=C1&SubCallID=200101-C1&CallFlow=out&CallerIDNum=74957775533\
             &CallerExtension=12345*101%40sipproxy.telphin.ru&CalledNumber=89161234567&CallStatus=CALLING",
        );
        let e = &events[0];
        assert_eq!((e.kind, e.direction), (EventKind::Ringing, Direction::Outbound));
        assert_eq!(e164(&e.to_e164), Some("+79161234567"));
        assert_eq!(e.agent_extension.as_deref(), Some("101"));
        assert_eq!(e.occurred_at, raw("POST", None, "").received_at, "no EventTime: receive time");
    }

    #[test]
    fn answer_and_hangup_map_their_kinds_and_dispositions() {
        let answer = post("EventType=answer&CallID=C1&SubCallID=L1&CallFlow=IN&CallStatus=ANSWER");
        assert_eq!((answer[0].kind, answer[0].direction), (EventKind::Answered, Direction::Inbound));
        assert_eq!(answer[0].disposition, None);
        for (status, disposition) in [
            ("ANSWER", Disposition::Answered),
            ("BUSY", Disposition::Busy),
            ("NOANSWER", Disposition::NoAnswer),
            ("CANCEL", Disposition::Cancelled),
            ("CONGESTION", Disposition::Failed),
            ("CHANUNAVAIL", Disposition::Failed),
            ("WHATEVER", Disposition::Unknown),
        ] {
            let events = post(&format!("EventType=hangup&CallID=C1&SubCallID=L1&CallStatus={status}"));
            assert_eq!(events[0].kind, EventKind::Hangup);
            assert_eq!(events[0].disposition, Some(disposition), "{status}");
            assert_eq!(events[0].hangup_cause.as_deref(), Some(status));
        }
    }

    #[test]
    fn bridged_decides_ivr_and_queue_hangups_and_names_no_agent() {
        let missed = post(
            "EventType=hangup&CallID=C1&SubCallID=300-C1&CallFlow=in&CallStatus=ANSWER&Bridged=no\
             &CalledExtension=12345*300%40sipproxy.telphin.ru&CallerIDNum=74951234567",
        );
        assert_eq!(missed[0].disposition, Some(Disposition::NoAnswer));
        assert_eq!(missed[0].agent_extension, None);
        let answered = post("EventType=hangup&CallID=C1&SubCallID=300-C1&CallStatus=ANSWER&Bridged=yes");
        assert_eq!(answered[0].disposition, Some(Disposition::Answered));
    }

    #[test]
    fn an_ivr_or_queue_hangup_starts_its_leg_duration_seconds_earlier() {
        let abandoned = "EventType=hangup&CallID=C1&SubCallID=200200-C1&CallFlow=in&CallStatus=ANSWER\
            &Bridged=no&CalledExtension=12345*200%40sipproxy.telphin.ru&CallerIDNum=74951234567\
            &EventTime=1793527225000000&Duration=25";
        let events = post(abandoned);
        assert_eq!(events.len(), 2);
        let (start, hangup) = (&events[0], &events[1]);
        assert_eq!((start.kind, hangup.kind), (EventKind::Ringing, EventKind::Hangup));
        assert_eq!(start.occurred_at.to_rfc3339(), "2026-11-01T10:00:00+00:00");
        assert_eq!(hangup.occurred_at.to_rfc3339(), "2026-11-01T10:00:25+00:00");
        assert_eq!(
            (&start.leg_id, start.direction, &start.from_e164),
            (&hangup.leg_id, hangup.direction, &hangup.from_e164)
        );
        assert_eq!((start.disposition, start.hangup_cause.as_deref()), (None, None));
        assert_ne!(start.event_id, hangup.event_id);
        assert_eq!(post(abandoned)[0].event_id, start.event_id, "a retry has the same start");
        // Phone extensions send their own dial-in; a length of nothing or nonsense starts nothing.
        for body in [
            "EventType=hangup&CallID=C1&SubCallID=L1&CallStatus=ANSWER&Duration=25",
            "EventType=hangup&CallID=C1&SubCallID=L1&CallStatus=ANSWER&Bridged=no&Duration=0",
            "EventType=hangup&CallID=C1&SubCallID=L1&CallStatus=ANSWER&Bridged=no&Duration=-5",
            "EventType=hangup&CallID=C1&SubCallID=L1&CallStatus=ANSWER&Bridged=no&Duration=9999999",
            "EventType=hangup&CallID=C1&SubCallID=L1&CallStatus=ANSWER&Bridged=no",
            "EventType=answer&CallID=C1&SubCallID=L1&CallStatus=ANSWER&Bridged=no&Duration=25",
        ] {
            assert!(post(body).iter().all(|e| e.kind != EventKind::Ringing), "{body}");
        }
    }

    #[test]
    fn a_recording_id_adds_a_recording_event() {
        let events = post(
            "EventType=hangup&CallID=C1&SubCallID=L1&CallFlow=in&CallStatus=ANSWER\
             &RecID=200101-5A1C0E7AB5D111F0A3C5D9B1E2F3A4B5&EventTime=1793527380000000",
        );
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].recording_id.as_deref(), Some("200101-5A1C0E7AB5D111F0A3C5D9B1E2F3A4B5"));
        let recording = &events[1];
        assert_eq!(recording.kind, EventKind::Recording);
        assert_eq!(recording.recording_id, events[0].recording_id);
        assert_eq!(recording.disposition, None);
        assert_eq!(recording.leg_id, events[0].leg_id);
        assert_ne!(recording.event_id, events[0].event_id);
    }

    #[test]
    fn internal_calls_between_extensions() {
        let events = post(
            "EventType=dial-in&CallID=C2&SubCallID=L2&CallFlow=in&CallerIDNum=101\
             &CallerExtension=12345*101%40sipproxy.telphin.ru&CalledExtension=12345*102%40sipproxy.telphin.ru",
        );
        assert_eq!(events[0].direction, Direction::Internal);
        assert_eq!(events[0].agent_extension.as_deref(), Some("102"));
    }

    #[test]
    fn get_and_post_deliveries_are_the_same_event() {
        let by_post = Telphin.normalize(&raw("POST", None, DIAL_IN)).expect("valid");
        let by_get = Telphin.normalize(&raw("GET", Some(DIAL_IN), "")).expect("valid");
        assert_eq!(by_post[0].event_id, by_get[0].event_id);
        assert_eq!(by_post[0].from_e164, by_get[0].from_e164);
        let other = post(&DIAL_IN.replace("200101-", "200102-"));
        assert_ne!(other[0].event_id, by_post[0].event_id);
    }

    #[test]
    fn local_event_times_use_the_source_time_zone() {
        let events = post("EventType=answer&CallID=C1&EventTime=2026-11-01%2013%3A00%3A05");
        assert_eq!(events[0].occurred_at.to_rfc3339(), "2026-11-01T10:00:05+00:00");
        let broken = post("EventType=answer&CallID=C1&EventTime=2026-48-13%2006%3A48%3A51");
        assert_eq!(broken[0].occurred_at, test_support::at(RECEIVED));
    }

    #[test]
    fn voicemail_and_messages() {
        let voicemail = post("EventType=voicemail&CallID=C1&SubCallID=L1&CallerIDNum=74951234567");
        assert_eq!(voicemail[0].kind, EventKind::Hangup);
        assert_eq!(voicemail[0].disposition, Some(Disposition::Voicemail));
        assert!(post("EventType=voicemail&CallerIDNum=74951234567").is_empty());
        assert!(post("EventType=message-in&CallerIDNum=74951234567").is_empty());
    }

    #[test]
    fn extensions_are_read_between_star_and_at() {
        assert_eq!(extension(Some("12345*101@sipproxy.telphin.ru")).as_deref(), Some("101"));
        assert_eq!(extension(Some("101@sipproxy.telphin.ru")).as_deref(), Some("101"));
        assert_eq!(extension(Some("101")).as_deref(), Some("101"));
        assert_eq!(extension(Some("*@x")), None);
        assert_eq!(extension(None), None);
    }

    #[test]
    fn bad_requests_name_the_field_at_fault() {
        let cases = [
            ("CallID=C1", "EventType is missing"),
            ("EventType=transfer&CallID=C1", "EventType \"transfer\""),
            ("EventType=hangup", "CallID is missing"),
            ("EventType=hangup&CallID=a%0Ab", "CallID"),
            ("EventType=hangup&CallID=C1&SubCallID=a%00b", "SubCallID"),
        ];
        for (body, expected) in cases {
            let error = Telphin.normalize(&raw("POST", None, body)).expect_err(body);
            assert!(error.0.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn ingress_check() {
        let check = |method: &str, content_type: Option<&str>, query: Option<&str>, body: &[u8]| {
            Telphin.check(&request(method, query, content_type, body))
        };
        let form = Some(FORM);
        assert_eq!(check("POST", form, None, b"EventType=answer&CallID=C1"), Ok(Some("C1".into())));
        assert_eq!(
            check("GET", None, Some("EventType=answer&CallID=C1&token=x"), b""),
            Ok(Some("C1".into()))
        );
        assert_eq!(check("POST", form, None, b"EventType=message-in&CallerIDNum=1"), Ok(None));
        assert!(matches!(check("POST", form, None, b"EventType=hangup"), Err(Rejection::Malformed(_))));
        assert!(matches!(check("POST", form, None, b""), Err(Rejection::Malformed(_))));
        assert!(matches!(
            check("POST", Some("application/json"), None, b"{}"),
            Err(Rejection::UnsupportedMediaType(_))
        ));
        assert_eq!(Telphin.methods(), &["GET", "POST"]);
        assert_eq!(Telphin.reply("r"), Reply::empty_ok());
    }
}
