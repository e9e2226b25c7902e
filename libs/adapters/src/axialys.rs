//! Axialys Voice Management "opening a customer file in your CRM": when a call is presented to an
//! operator, Axialys calls the URL configured for the account with the call's variables as
//! parameters, by GET (query string) or POST (form body). Parameters used: `id_call` (the call on
//! the platform), `action` (`in` for an incoming call), `e164_in` (the called service number),
//! `e164_out` (the presented number of an outgoing call), `caller_id_num` (the customer's number),
//! `id_op` (the operator), `id_group`/`id_groupe` (the group), `wait` (seconds the caller waited).
//! Numbers are E.164 without the `+` (`33170200200`). `id_session` (the operator's Voice
//! Management session token) is never copied into an event.
//!
//! Axialys signs nothing, so the source keeps the default proof: the secret as `?token=` in the
//! configured URL (or HTTP Basic). The URL is opened as a page, so the answer is a plain `200 OK`.
//!
//! Mapping: a presentation to an operator is a ringing event on leg `id_op`, with `id_op` as the
//! agent extension. Axialys documents only `action=in` (incoming call presented); its CRM API has
//! matching callbacks for outgoing calls (`e164_out`), the end of a call and a missed call, so these
//! actions are read as well, an assumption where the public guide is silent: `out` → ringing
//! outbound, `answer`/`answered`/`pickup` → answered, `end`/`endcall`/`hangup` → hangup,
//! `missed`/`missedcall` → hangup with disposition no answer. With no `action`, the presence of
//! `e164_out` says outgoing, else incoming. On an outgoing call `caller_id_num` is taken as the
//! customer being called (the variable Axialys keeps for the customer's number) and `e164_out` as
//! the number presented: also an assumption. The parameters carry no time, so events take the
//! receive time; the dedupe key is a hash of call, action, operator, group, numbers and `wait`
//! (which grows between two presentations of one call to one operator), so a reload of the same
//! page hashes the same.

use switchboard_model::{CallEvent, Direction, Disposition, EventKind, RawWebhook};

use crate::support::{self, Fields};
use crate::{Adapter, AdapterError, Rejection, Reply, Request};

#[derive(Debug)]
pub struct Axialys;

/// What an `action` says: the kind, the direction it implies, and a missed call.
fn action(action: &str) -> Option<(EventKind, Option<Direction>, bool)> {
    let read = match action.to_ascii_lowercase().as_str() {
        "in" => (EventKind::Ringing, Some(Direction::Inbound), false),
        "out" => (EventKind::Ringing, Some(Direction::Outbound), false),
        "answer" | "answered" | "pickup" => (EventKind::Answered, None, false),
        "end" | "endcall" | "end_call" | "hangup" => (EventKind::Hangup, None, false),
        "missed" | "missedcall" | "missed_call" => (EventKind::Hangup, None, true),
        _ => return None,
    };
    Some(read)
}

impl Adapter for Axialys {
    fn methods(&self) -> &'static [&'static str] {
        &["GET", "POST"]
    }

    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        support::require_form(request)?;
        support::call_key(Fields::from_request(request).get("id_call"), "id_call")
    }

    fn reply(&self, _raw_id: &str) -> Reply {
        Reply::text_ok("OK")
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let fields = Fields::from_request(&Request::from_raw(raw));
        let e164_in = fields.get("e164_in");
        let e164_out = fields.get("e164_out");
        let action_text = fields.get("action").unwrap_or(if e164_out.is_some() { "out" } else { "in" });
        let (kind, implied, missed) = action(action_text).ok_or_else(|| {
            AdapterError::new(format!(
                "action {:?} is not one of in, out, answer, end, missed",
                support::clip(action_text)
            ))
        })?;
        let call_id = support::call_id(fields.get("id_call"), "id_call")?;
        let region = support::region(raw)?;
        let operator = fields.get("id_op");
        let leg_id = support::leg_id(operator, "id_op")?;

        let direction = implied.unwrap_or(match (e164_out, e164_in) {
            (Some(_), _) => Direction::Outbound,
            (None, Some(_)) => Direction::Inbound,
            (None, None) => Direction::Unknown,
        });
        let customer = fields.get("caller_id_num");
        let (from, to) = match direction {
            Direction::Outbound => (e164_out, customer),
            _ => (customer, e164_in),
        };

        let event_id = support::stable_text_id(&[
            "axialys",
            call_id.as_str(),
            &action_text.to_ascii_lowercase(),
            operator.unwrap_or(""),
            fields.get_any(&["id_group", "id_groupe"]).unwrap_or(""),
            e164_in.unwrap_or(""),
            e164_out.unwrap_or(""),
            customer.unwrap_or(""),
            fields.get("wait").unwrap_or(""),
        ]);

        let mut event = CallEvent::new(raw, support::event_id(event_id)?, call_id, kind, raw.received_at);
        event.leg_id = leg_id;
        event.direction = direction;
        support::set_numbers(&mut event, from, to, region);
        event.agent_extension = operator.map(support::clip);
        if missed {
            event.disposition = Some(Disposition::NoAnswer);
        }
        Ok(vec![event])
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, FORM, e164, request};

    fn raw(method: &str, query: Option<&str>, body: &str) -> RawWebhook {
        RawWebhook {
            default_region: "FR".into(),
            timezone: Some("Europe/Paris".into()),
            ..test_support::form_raw(Vendor::Axialys, method, query, body)
        }
    }

    fn get(query: &str) -> Vec<CallEvent> {
        Axialys.normalize(&raw("GET", Some(query), "")).expect("valid")
    }

    const PRESENTED: &str = "id_session=9f1c2b7a&e164_in=33170200200&id_call=4812345678\
        &caller_id_num=33612345678&action=in&id_op=1042&id_group=17&wait=12";

    #[test]
    fn an_incoming_presentation_rings_the_operator() {
        let events = get(PRESENTED);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.kind, e.direction), (EventKind::Ringing, Direction::Inbound));
        assert_eq!(e.call_id.as_str(), "4812345678");
        assert_eq!(e.leg_id.as_ref().map(|l| l.as_str()), Some("1042"));
        assert_eq!(e.agent_extension.as_deref(), Some("1042"));
        assert_eq!(e164(&e.from_e164), Some("+33612345678"));
        assert_eq!(e164(&e.to_e164), Some("+33170200200"));
        assert_eq!(e.occurred_at, e.received_at, "no vendor time");
        assert_eq!(e.disposition, None);
        let text = serde_json::to_string(e).expect("serialises");
        assert!(!text.contains("9f1c2b7a"), "the session token stays out of events");
    }

    #[test]
    fn outgoing_calls_present_the_service_number() {
        for query in [
            "id_call=4812345679&e164_out=33170200200&caller_id_num=33145420000&action=out&id_op=1042",
            "id_call=4812345679&e164_out=33170200200&caller_id_num=33145420000&id_op=1042",
        ] {
            let e = &get(query)[0];
            assert_eq!((e.kind, e.direction), (EventKind::Ringing, Direction::Outbound), "{query}");
            assert_eq!(e164(&e.from_e164), Some("+33170200200"));
            assert_eq!(e164(&e.to_e164), Some("+33145420000"));
        }
        let no_action = get("id_call=1&e164_in=33170200200&caller_id_num=33612345678&id_op=7");
        assert_eq!((no_action[0].kind, no_action[0].direction), (EventKind::Ringing, Direction::Inbound));
    }

    #[test]
    fn answer_end_and_missed() {
        let answered = get("id_call=1&action=answer&id_op=7&e164_in=33170200200&caller_id_num=33612345678");
        assert_eq!((answered[0].kind, answered[0].direction), (EventKind::Answered, Direction::Inbound));
        let ended = get("id_call=1&action=endCall&id_op=7&e164_in=33170200200");
        assert_eq!((ended[0].kind, ended[0].disposition), (EventKind::Hangup, None));
        let missed = get("id_call=1&action=missedCall&id_op=7&e164_in=33170200200");
        assert_eq!((missed[0].kind, missed[0].disposition), (EventKind::Hangup, Some(Disposition::NoAnswer)));
        let unknown_direction = get("id_call=1&action=end");
        assert_eq!(unknown_direction[0].direction, Direction::Unknown);
    }

    #[test]
    fn reloads_hash_the_same_and_new_presentations_differ() {
        let first = get(PRESENTED);
        let by_post = Axialys.normalize(&raw("POST", None, PRESENTED)).expect("valid");
        assert_eq!(first[0].event_id, by_post[0].event_id);
        let again = get(&PRESENTED.replace("wait=12", "wait=41"));
        assert_ne!(first[0].event_id, again[0].event_id);
        let other_op = get(&PRESENTED.replace("id_op=1042", "id_op=1043"));
        assert_ne!(first[0].event_id, other_op[0].event_id);
    }

    #[test]
    fn bad_requests_name_the_field_at_fault() {
        let cases = [
            ("action=in&id_op=7", "id_call is missing"),
            ("id_call=1&action=transfer", "action \"transfer\""),
            ("id_call=a%0Ab&action=in", "id_call"),
            ("id_call=1&action=in&id_op=a%0Ab", "id_op"),
        ];
        for (query, expected) in cases {
            let error = Axialys.normalize(&raw("GET", Some(query), "")).expect_err(query);
            assert!(error.0.contains(expected), "{query}: {error}");
        }
    }

    #[test]
    fn ingress_check_and_reply() {
        let check = |method: &str, content_type: Option<&str>, query: Option<&str>, body: &[u8]| {
            Axialys.check(&request(method, query, content_type, body))
        };
        let form = Some(FORM);
        assert_eq!(check("GET", None, Some("id_call=48&action=in&token=x"), b""), Ok(Some("48".into())));
        assert_eq!(check("POST", form, None, b"id_call=48&action=in"), Ok(Some("48".into())));
        assert!(matches!(check("GET", None, Some("action=in"), b""), Err(Rejection::Malformed(_))));
        assert!(matches!(
            check("POST", Some("application/json"), None, b"{}"),
            Err(Rejection::UnsupportedMediaType(_))
        ));
        assert_eq!(Axialys.reply("raw-1"), Reply::text_ok("OK"));
        assert_eq!(Axialys.methods(), &["GET", "POST"]);
    }
}
