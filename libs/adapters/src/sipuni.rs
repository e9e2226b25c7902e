//! Sipuni "PBX events" (Settings › API › События на АТС): the PBX calls the configured URL with
//! URL-encoded parameters, by GET (query) or POST (form body). Fields used: `event` (1 = call
//! start, 2 = call hangup, 3 = answer, 4 = secondary hangup: one leg of the call ended while the
//! call goes on), `call_id`, `src_num`/`src_type`, `dst_num`/`dst_type`, `short_src_num`/
//! `short_dst_num` (an internal party's extension without the account prefix), `pbxdstnum` (the
//! number dialled at the PBX: the company number on an inbound call), `last_called` (the extension
//! the call reached last, on hangups), `status` (ANSWER, NOANSWER, BUSY...), `timestamp` (Unix
//! seconds of the event), `call_record_link`.
//!
//! Sipuni signs nothing, so the source keeps the default proof: the secret as `?token=` in the
//! configured URL (or HTTP Basic). The endpoint must answer exactly `{"success":true}`, or Sipuni
//! may suspend sending.
//!
//! Mapping: `src_type`/`dst_type` are 1 for an external number and 2 for an internal extension,
//! as public integrations read them (webasyst CRM's Sipuni plugin takes `src_type=1` as an incoming
//! call and `short_dst_num` as the user's extension); Sipuni's own page does not spell the values
//! out, so this is the assumption. External → internal is inbound, internal → external outbound,
//! internal → internal internal, and external → external inbound (the call reached the company
//! number and was forwarded). Sipuni has no leg id; the agent extension (the internal party, else
//! `last_called`) is used as the leg, so the legs of a transfer between two agents stay apart and
//! a secondary hangup (event 4) closes its own leg. Hangups take their disposition from `status`
//! only: `call_answer_timestamp` is not reliable (captured deliveries show it equal to the start
//! of unanswered calls), and the answer time is the `timestamp` of event 3. `call_record_link`
//! becomes the hangup's `recording_url` and an extra recording event. An internal party is shown
//! by its short extension; a `_id<digits>` suffix Sipuni appends to some numbers is not part of
//! the number.
//!
//! The dedupe key is a hash of call id, event code, `timestamp`, both parties and status, so a
//! retry hashes the same. Sipuni sometimes sends event 1 twice a second apart; those are kept as
//! two ringing events of the same leg, which changes nothing in the call.

use switchboard_model::{CallEvent, Direction, Disposition, EventKind, PhoneNumber, RawWebhook, Region};

use crate::support::{self, Fields};
use crate::{Adapter, AdapterError, Rejection, Reply, Request};

#[derive(Debug)]
pub struct Sipuni;

/// `src_type`/`dst_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    External,
    Internal,
}

fn party(value: Option<&str>) -> Option<Party> {
    match value? {
        "1" => Some(Party::External),
        "2" => Some(Party::Internal),
        _ => None,
    }
}

fn kind(event: &str) -> Option<EventKind> {
    match event {
        "1" => Some(EventKind::Ringing),
        "2" | "4" => Some(EventKind::Hangup),
        "3" => Some(EventKind::Answered),
        _ => None,
    }
}

fn disposition(status: &str) -> Disposition {
    match status.to_ascii_uppercase().as_str() {
        "ANSWER" | "ANSWERED" => Disposition::Answered,
        "NOANSWER" | "NO ANSWER" => Disposition::NoAnswer,
        "BUSY" => Disposition::Busy,
        "CANCEL" => Disposition::Cancelled,
        "CONGESTION" | "CHANUNAVAIL" | "FAILED" => Disposition::Failed,
        _ => Disposition::Unknown,
    }
}

/// A number without the `_id<digits>` suffix Sipuni appends to some destinations.
fn without_id_suffix(text: &str) -> &str {
    match text.rsplit_once("_id") {
        Some((number, id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => number,
        _ => text,
    }
}

/// The raw text (clipped) and the E.164 form of a party.
fn number(text: Option<&str>, region: Region) -> (Option<String>, Option<PhoneNumber>) {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => (None, None),
        Some(text) => (Some(support::clip(text)), support::number(Some(without_id_suffix(text)), region).1),
    }
}

/// A party as the call log should show it: an extension by its short number.
fn party_number<'a>(fields: &'a Fields, kind: Option<Party>, num: &str, short: &str) -> Option<&'a str> {
    match kind {
        Some(Party::Internal) => fields.get(short).or(fields.get(num)),
        _ => fields.get(num),
    }
}

impl Adapter for Sipuni {
    fn methods(&self) -> &'static [&'static str] {
        &["GET", "POST"]
    }

    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        support::require_form(request)?;
        support::call_key(Fields::from_request(request).get("call_id"), "call_id")
    }

    fn reply(&self, _raw_id: &str) -> Reply {
        Reply::json_ok(&serde_json::json!({ "success": true }))
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let fields = Fields::from_request(&Request::from_raw(raw));
        let code = fields.get("event").ok_or_else(|| AdapterError::new("event is missing"))?;
        let kind = kind(code).ok_or_else(|| {
            AdapterError::new(format!(
                "event {:?} is not one of 1 (call start), 2 (hangup), 3 (answer), 4 (secondary hangup)",
                support::clip(code)
            ))
        })?;
        let call_id = support::call_id(fields.get("call_id"), "call_id")?;
        let region = support::region(raw)?;
        let vendor_time = fields.get("timestamp");
        let occurred_at = support::time_or_received(vendor_time, support::timezone(raw), raw.received_at);

        let (src, dst) = (party(fields.get("src_type")), party(fields.get("dst_type")));
        let direction = match (src, dst) {
            (Some(Party::External), Some(_)) => Direction::Inbound,
            (Some(Party::Internal), Some(Party::External)) => Direction::Outbound,
            (Some(Party::Internal), Some(Party::Internal)) => Direction::Internal,
            _ => Direction::Unknown,
        };
        let from = party_number(&fields, src, "src_num", "short_src_num");
        let dst_number = party_number(&fields, dst, "dst_num", "short_dst_num");
        let to = match dst {
            Some(Party::Internal) if direction == Direction::Internal => dst_number,
            _ => fields.get("pbxdstnum").or(dst_number),
        };
        let agent = match (src, dst) {
            (_, Some(Party::Internal)) => fields.get("short_dst_num").or(fields.get("dst_num")),
            (Some(Party::Internal), _) => fields.get("short_src_num").or(fields.get("src_num")),
            _ => None,
        }
        .or(fields.get("last_called"))
        .map(without_id_suffix)
        .map(support::clip);

        let status = fields.get("status");
        let event_id = support::stable_text_id(&[
            "sipuni",
            call_id.as_str(),
            code,
            vendor_time.unwrap_or(""),
            fields.get("src_num").unwrap_or(""),
            fields.get("dst_num").unwrap_or(""),
            status.unwrap_or(""),
        ]);

        let mut event = CallEvent::new(raw, support::event_id(event_id.clone())?, call_id, kind, occurred_at);
        event.leg_id = support::leg_id(agent.as_deref(), "agent extension")?;
        event.direction = direction;
        (event.from_raw, event.from_e164) = number(from, region);
        (event.to_raw, event.to_e164) = number(to, region);
        event.agent_extension = agent;
        if kind == EventKind::Hangup {
            event.disposition = status.map(disposition);
            event.hangup_cause = status.map(support::clip);
            event.recording_url = support::url(fields.get("call_record_link"));
        }
        support::with_recording(event, &event_id)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, FORM, e164, request};

    fn raw(method: &str, query: Option<&str>, body: &str) -> RawWebhook {
        RawWebhook {
            default_region: "RU".into(),
            ..test_support::form_raw(Vendor::Sipuni, method, query, body)
        }
    }

    fn get(query: &str) -> Vec<CallEvent> {
        Sipuni.normalize(&raw("GET", Some(query), "")).expect("valid")
    }

    const INBOUND_START: &str = "event=1&call_id=1793527200.533584&src_num=74951234567&src_type=1\
        &dst_num=070196201&short_dst_num=201&dst_type=2&pbxdstnum=74957775533&timestamp=1793527200\
        &treeName=%D0%92%D1%85%D0%BE%D0%B4%D1%8F%D1%89%D0%B0%D1%8F&channel=SIP%2F070196100003-000471cc";

    #[test]
    fn call_start_from_outside_rings_the_extension() {
        let events = get(INBOUND_START);
        let e = &events[0];
        assert_eq!((e.kind, e.direction), (EventKind::Ringing, Direction::Inbound));
        assert_eq!(e.call_id.as_str(), "1793527200.533584");
        assert_eq!(e.leg_id.as_ref().map(|l| l.as_str()), Some("201"));
        assert_eq!(e.agent_extension.as_deref(), Some("201"));
        assert_eq!(e164(&e.from_e164), Some("+74951234567"));
        assert_eq!(e164(&e.to_e164), Some("+74957775533"), "the company number, not the extension");
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-01T10:00:00+00:00");
    }

    #[test]
    fn outbound_and_internal_calls() {
        let out =
            get("event=1&call_id=c2&src_num=070196201&short_src_num=201&src_type=2&dst_num=79161234567\
             &dst_type=1&pbxdstnum=%2B79161234567&timestamp=1793527200");
        assert_eq!(out[0].direction, Direction::Outbound);
        assert_eq!(out[0].from_raw.as_deref(), Some("201"));
        assert_eq!(e164(&out[0].to_e164), Some("+79161234567"));
        assert_eq!(out[0].agent_extension.as_deref(), Some("201"));
        let internal =
            get("event=1&call_id=c3&src_num=070196201&short_src_num=201&src_type=2&dst_num=070196202\
             &short_dst_num=202&dst_type=2&timestamp=1793527200");
        assert_eq!(internal[0].direction, Direction::Internal);
        assert_eq!(
            (internal[0].from_raw.as_deref(), internal[0].to_raw.as_deref()),
            (Some("201"), Some("202"))
        );
        assert_eq!(internal[0].agent_extension.as_deref(), Some("202"));
    }

    #[test]
    fn answer_hangup_and_secondary_hangup() {
        let answer = get("event=3&call_id=c1&timestamp=1793527207&channel=SIP%2F070196201-000471cd");
        assert_eq!(answer[0].kind, EventKind::Answered);
        assert_eq!(answer[0].direction, Direction::Unknown);
        assert_eq!(answer[0].occurred_at.timestamp(), 1_793_527_207);
        for (status, disposition) in [
            ("ANSWER", Disposition::Answered),
            ("NOANSWER", Disposition::NoAnswer),
            ("BUSY", Disposition::Busy),
            ("CANCEL", Disposition::Cancelled),
            ("CHANUNAVAIL", Disposition::Failed),
            ("ODD", Disposition::Unknown),
        ] {
            for code in ["2", "4"] {
                let events = get(&format!("event={code}&call_id=c1&status={status}&last_called=201"));
                assert_eq!(events[0].kind, EventKind::Hangup);
                assert_eq!(events[0].disposition, Some(disposition), "{code} {status}");
                assert_eq!(events[0].hangup_cause.as_deref(), Some(status));
                assert_eq!(events[0].leg_id.as_ref().map(|l| l.as_str()), Some("201"));
            }
        }
    }

    #[test]
    fn missed_inbound_hangup_keeps_the_company_number() {
        let events =
            get("event=2&call_id=c4&src_num=74951234567&src_type=1&dst_num=74957775533_id265648&dst_type=1\
             &status=NOANSWER&call_start_timestamp=1793527200&call_answer_timestamp=1793527200\
             &timestamp=1793527219");
        let e = &events[0];
        assert_eq!(e.direction, Direction::Inbound);
        assert_eq!(e.disposition, Some(Disposition::NoAnswer), "the answer timestamp is not trusted");
        assert_eq!(e164(&e.to_e164), Some("+74957775533"));
        assert_eq!(e.to_raw.as_deref(), Some("74957775533_id265648"));
        assert_eq!(e.leg_id, None);
        assert_eq!(e.agent_extension, None);
    }

    #[test]
    fn a_record_link_adds_a_recording_event() {
        let events = get("event=2&call_id=c1&status=ANSWER&last_called=201&timestamp=1793527380\
             &call_record_link=https%3A%2F%2Fsipuni.com%2Fapi%2Fcrm%2Frecord%3Fid%3Dc1%26hash%3Dab12");
        assert_eq!(events.len(), 2);
        let url = Some("https://sipuni.com/api/crm/record?id=c1&hash=ab12");
        assert_eq!(events[0].recording_url.as_deref(), url);
        assert_eq!(events[1].kind, EventKind::Recording);
        assert_eq!(events[1].recording_url.as_deref(), url);
        assert_ne!(events[0].event_id, events[1].event_id);
        let not_a_link = get("event=2&call_id=c1&status=ANSWER&call_record_link=ftp%3A%2F%2Fx");
        assert_eq!(not_a_link.len(), 1);
    }

    #[test]
    fn retries_and_post_deliveries_hash_the_same() {
        let by_get = get(INBOUND_START);
        let by_post = Sipuni.normalize(&raw("POST", None, INBOUND_START)).expect("valid");
        assert_eq!(by_get[0].event_id, by_post[0].event_id);
        let later = get(&INBOUND_START.replace("timestamp=1793527200", "timestamp=1793527201"));
        assert_ne!(later[0].event_id, by_get[0].event_id);
    }

    #[test]
    fn bad_requests_name_the_field_at_fault() {
        let cases = [
            ("call_id=c1", "event is missing"),
            ("event=7&call_id=c1", "event \"7\""),
            ("event=1", "call_id is missing"),
            ("event=1&call_id=a%0Ab", "call_id"),
        ];
        for (query, expected) in cases {
            let error = Sipuni.normalize(&raw("GET", Some(query), "")).expect_err(query);
            assert!(error.0.contains(expected), "{query}: {error}");
        }
    }

    #[test]
    fn ingress_check_and_reply() {
        let check = |method: &str, content_type: Option<&str>, query: Option<&str>, body: &[u8]| {
            Sipuni.check(&request(method, query, content_type, body))
        };
        let form = Some(FORM);
        assert_eq!(check("GET", None, Some("event=1&call_id=c1&token=x"), b""), Ok(Some("c1".into())));
        assert_eq!(check("POST", form, None, b"event=1&call_id=c1"), Ok(Some("c1".into())));
        assert!(matches!(check("POST", form, None, b"event=1"), Err(Rejection::Malformed(_))));
        assert!(matches!(
            check("POST", Some("application/json"), None, b"{}"),
            Err(Rejection::UnsupportedMediaType(_))
        ));
        let reply = Sipuni.reply("raw-1");
        assert_eq!((reply.status, reply.body.as_slice()), (200, br#"{"success":true}"#.as_slice()));
        assert_eq!(reply.content_type, Some("application/json"));
    }

    #[test]
    fn id_suffixes_are_not_numbers() {
        assert_eq!(without_id_suffix("998783337125_id265648"), "998783337125");
        assert_eq!(without_id_suffix("201"), "201");
        assert_eq!(without_id_suffix("a_idx"), "a_idx");
        assert_eq!(without_id_suffix("_id"), "_id");
    }
}
