//! uContact (Integra; Net2Phone Contact Center) outbound "webhooks for event notification": one
//! JSON `POST` (`application/json`) per event, each body with `event` (its type) and `date` (local
//! wall-clock time of the uContact server, `YYYY-MM-DD HH:MM:SS`, read in the source's time zone).
//! Authentication is Switchboard's default: HTTP Basic (user = source id, password = secret) in
//! the webhook URL's credentials, or `?token=secret` in the URL. The reply is the default `202`.
//!
//! Events and what they become:
//! - `AgentRingNoAnswer` (`agent`, `agentNumber`, `agentFullName`, `callerIdNum`, `campaign`): an
//!   agent let the call ring out (RONA). It is a `Hangup` of that agent's leg (leg id = the agent's
//!   user name, `agentNumber` as extension) with disposition `no_answer`; the call itself goes on
//!   (to the next agent, or to its end), so it is not a missed call.
//! - `FinishInteraction` (`guid`, `campaign`, `agent`, ...): an interaction ended, on any channel.
//!   One whose `channel` names a non-voice channel (chat, email, SMS, WhatsApp...) is about no
//!   call and gives nothing. A telephony one gives the call-level `Hangup`, disposition `answered`
//!   when an `agent` served it and `no_answer` when none did, plus, when an agent is named, a
//!   `Hangup` (disposition `answered`) of that agent's leg. A transfer is expected as one
//!   `FinishInteraction` per agent with the same `guid` (an assumption: each agent's part of the
//!   interaction finishes), so each agent's leg ends when its part does and the call's end is the
//!   latest of them.
//! - `InteractionDisposition` (an agent categorises the call), `AgentLog` (`isLogin`),
//!   `AgentBreak` (`motive`, `isBreak`) and any other event: no call state, `Ok(vec![])`. A
//!   disposition's categories are a CRM note, not a call outcome the model has.
//!
//! The campaign is the events' `queue` (a disposition pushed back to uContact names it).
//!
//! Call id: `guid`, the interaction's GUID, which uContact also uses as the call's id in its API
//! (the `guid` a click-to-call returns, the `guid` of `DispositionCall`). Direction comes from
//! the campaign's name, which uContact suffixes `<-` (inbound) and `->` (outbound), e.g.
//! `Sales<-`. The customer's number is `callerIdNum` (else `callerid`): `from` on inbound calls,
//! `to` on outbound ones.
//!
//! Assumptions where the public documentation is silent: its `AgentRingNoAnswer` sample has no
//! `guid`, and its `FinishInteraction` field list is cut short after `guid`, `campaign` and
//! `agent`. Switchboard expects `guid` on both (a RONA without it cannot be tied to a call: it is
//! dead-lettered, never guessed; a telephony `FinishInteraction` without it is refused with
//! 400), reads `agentNumber` and `callerIdNum`/`callerid` on `FinishInteraction` where present,
//! and treats a `FinishInteraction` whose `channel` field is absent, or names no non-voice medium,
//! as telephony. There is no answer time in any event, so no `Answered` event is made.
//!
//! Dates: the documented samples (`2023-48-13 06:48:51`) are written with minutes where the month
//! belongs (`yyyy-mm-dd`). When the month field equals the minutes, the month is taken from the
//! receive time (or the month before), if that puts the event within a day before receipt;
//! otherwise, and for any date that does not parse or is implausible, the event keeps the receive
//! time. A date never fails an event.
//!
//! Dedupe key: a hash of (event, `guid`, `agent`, the `date` text), and per emitted event the
//! part (call or agent leg); uContact sends no event id.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};
use switchboard_model::{CallEvent, CallId, Direction, Disposition, EventKind, LegId, RawWebhook, Region};

use crate::support;
use crate::{Adapter, AdapterError, Rejection, Request};

#[derive(Debug)]
pub struct Ucontact;

const TAG: &str = "ucontact";

const RING_NO_ANSWER: &str = "AgentRingNoAnswer";
const FINISH_INTERACTION: &str = "FinishInteraction";

/// Words in a `channel` value that mean the interaction was not a phone call.
const NON_VOICE_CHANNELS: &[&str] = &[
    "chat",
    "mail",
    "correo",
    "sms",
    "text",
    "whatsapp",
    "messenger",
    "facebook",
    "instagram",
    "telegram",
    "twitter",
    "social",
    "mensaje",
    "message",
];

type Body = Map<String, Value>;

fn text(body: &Body, name: &str) -> Option<String> {
    support::json_text(body.get(name))
}

fn event_name(body: &Body) -> Result<&str, String> {
    support::json_str(body, "event").ok_or_else(|| "event is missing or not a string".to_owned())
}

fn is_event(event: &str, name: &str) -> bool {
    event.eq_ignore_ascii_case(name)
}

/// Whether a `FinishInteraction` was a phone call: yes unless its `channel` names another medium.
fn is_telephony(body: &Body) -> bool {
    match text(body, "channel") {
        None => true,
        Some(channel) => {
            let channel = channel.to_lowercase();
            !NON_VOICE_CHANNELS.iter().any(|word| channel.contains(word))
        }
    }
}

/// uContact campaign names end in `<-` (inbound) or `->` (outbound).
fn direction(campaign: Option<&str>) -> Direction {
    match campaign.map(str::trim) {
        Some(c) if c.ends_with("<-") => Direction::Inbound,
        Some(c) if c.ends_with("->") => Direction::Outbound,
        _ => Direction::Unknown,
    }
}

/// The fields of `YYYY-MM-DD HH:MM:SS` as written, without checking they form a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

fn written(text: &str) -> Option<Written> {
    let (date, time) = text.trim().split_once([' ', 'T'])?;
    let mut date = date.split('-').map(|p| p.trim().parse::<u32>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.split(':');
    let (hour, minute) = (time.next()?.trim().parse().ok()?, time.next()?.trim().parse().ok()?);
    let second = time.next()?.split('.').next()?.trim().parse().ok()?;
    if date.next().is_some() || time.next().is_some() {
        return None;
    }
    Some(Written { year: i32::try_from(year).ok()?, month, day, hour, minute, second })
}

/// A date written with minutes in the month's place, placed in the receive time's month or the
/// month before, when one of them falls within a day before receipt (ten minutes after, for a
/// clock that runs fast).
fn with_month_of_receipt(w: Written, tz: Tz, received_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = received_at.with_timezone(&tz);
    let this_month = local.month();
    let previous = if this_month == 1 { 12 } else { this_month - 1 };
    [this_month, previous].into_iter().find_map(|month| {
        let naive = NaiveDate::from_ymd_opt(w.year, month, w.day)?.and_hms_opt(w.hour, w.minute, w.second)?;
        let at = tz.from_local_datetime(&naive).earliest()?.with_timezone(&Utc);
        let earliest = received_at.checked_sub_signed(Duration::days(1))?;
        let latest = received_at.checked_add_signed(Duration::minutes(10))?;
        (earliest..=latest).contains(&at).then_some(at)
    })
}

/// The event's time from `date`; see the module documentation.
fn event_time(date: Option<&str>, tz: Tz, received_at: DateTime<Utc>) -> DateTime<Utc> {
    match date.and_then(written) {
        Some(w) if w.month == w.minute => with_month_of_receipt(w, tz, received_at).unwrap_or(received_at),
        _ => support::time_or_received(date, tz, received_at),
    }
}

/// What every event read from one webhook shares.
struct Context<'a> {
    raw: &'a RawWebhook,
    call_id: CallId,
    base_id: String,
    occurred_at: DateTime<Utc>,
    direction: Direction,
    campaign: Option<String>,
    customer: Option<String>,
    extension: Option<String>,
    region: Region,
}

impl<'a> Context<'a> {
    fn new(raw: &'a RawWebhook, body: &Body, event: &str, guid: &str) -> Result<Self, AdapterError> {
        let call_id = support::call_id(Some(guid), "guid")?;
        let date = support::json_id(body.get("date"));
        let agent = text(body, "agent");
        let base_id = support::stable_text_id(&[
            TAG,
            event,
            call_id.as_str(),
            agent.as_deref().unwrap_or(""),
            date.as_deref().unwrap_or(""),
        ]);
        Ok(Self {
            raw,
            call_id,
            base_id,
            occurred_at: event_time(date.as_deref(), support::timezone(raw), raw.received_at),
            direction: direction(text(body, "campaign").as_deref()),
            campaign: text(body, "campaign"),
            customer: text(body, "callerIdNum").or_else(|| text(body, "callerid")),
            extension: text(body, "agentNumber"),
            region: support::region(raw)?,
        })
    }

    fn hangup(
        &self,
        part: &str,
        leg_id: Option<LegId>,
        disposition: Disposition,
    ) -> Result<CallEvent, AdapterError> {
        let event_id = support::event_id(support::stable_text_id(&[&self.base_id, part]))?;
        let mut event =
            CallEvent::new(self.raw, event_id, self.call_id.clone(), EventKind::Hangup, self.occurred_at);
        event.leg_id = leg_id;
        event.direction = self.direction;
        let customer = self.customer.as_deref();
        let (from, to) = match self.direction {
            Direction::Outbound => (None, customer),
            _ => (customer, None),
        };
        support::set_numbers(&mut event, from, to, self.region);
        event.agent_extension.clone_from(&self.extension);
        event.agent_number.clone_from(&self.extension);
        event.disposition = Some(disposition);
        event.queue.clone_from(&self.campaign);
        Ok(event)
    }
}

fn guid(body: &Body) -> Option<String> {
    support::json_id(body.get("guid"))
}

fn ring_no_answer(raw: &RawWebhook, body: &Body, event: &str) -> Result<Vec<CallEvent>, AdapterError> {
    let guid = guid(body).ok_or_else(|| {
        AdapterError::new("guid is missing: an AgentRingNoAnswer without it names no call to attach to")
    })?;
    let context = Context::new(raw, body, event, &guid)?;
    let agent = text(body, "agent").or_else(|| text(body, "agentNumber"));
    let leg_id = support::leg_id(agent.as_deref(), "agent")?
        .ok_or_else(|| AdapterError::new("agent is missing: an AgentRingNoAnswer names the agent it rang"))?;
    Ok(vec![context.hangup("agent-hangup", Some(leg_id), Disposition::NoAnswer)?])
}

fn finish_interaction(raw: &RawWebhook, body: &Body, event: &str) -> Result<Vec<CallEvent>, AdapterError> {
    if !is_telephony(body) {
        return Ok(vec![]);
    }
    let guid = guid(body).ok_or_else(|| AdapterError::new("guid is missing or not a string"))?;
    let context = Context::new(raw, body, event, &guid)?;
    let agent_leg = support::leg_id(text(body, "agent").as_deref(), "agent")?;
    let outcome = if agent_leg.is_some() { Disposition::Answered } else { Disposition::NoAnswer };
    let mut events = vec![context.hangup("call-hangup", None, outcome)?];
    if let Some(leg_id) = agent_leg {
        events.push(context.hangup("agent-hangup", Some(leg_id), Disposition::Answered)?);
    }
    Ok(events)
}

impl Adapter for Ucontact {
    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        let body = support::json_request(request)?;
        let event = event_name(&body).map_err(Rejection::Malformed)?;
        match guid(&body) {
            Some(guid) => support::call_key(Some(&guid), "guid"),
            None if is_event(event, FINISH_INTERACTION) && is_telephony(&body) => {
                Err(Rejection::Malformed("guid is missing: FinishInteraction names no interaction".into()))
            }
            None => Ok(None),
        }
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let body = support::json_object(&raw.body).map_err(|e| AdapterError::new(format!("body: {e}")))?;
        let event = event_name(&body).map_err(AdapterError::new)?;
        if is_event(event, RING_NO_ANSWER) {
            ring_no_answer(raw, &body, RING_NO_ANSWER)
        } else if is_event(event, FINISH_INTERACTION) {
            finish_interaction(raw, &body, FINISH_INTERACTION)
        } else {
            // AgentLog, AgentBreak, InteractionDisposition and events added later: no call state.
            Ok(vec![])
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, FORM, e164, request};

    /// 2026-11-01T13:05:00Z, 10:05 in Montevideo.
    const RECEIVED: i64 = 1_793_538_300;

    fn received() -> DateTime<Utc> {
        test_support::at(RECEIVED)
    }

    fn raw(body: &str) -> RawWebhook {
        RawWebhook {
            default_region: "UY".into(),
            timezone: Some("America/Montevideo".into()),
            received_at: received(),
            ..test_support::json_raw(Vendor::Ucontact, body)
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("valid").with_timezone(&Utc)
    }

    #[test]
    fn a_ring_no_answer_ends_the_agents_leg_not_the_call() {
        let events = Ucontact
            .normalize(&raw(
                r#"{"event":"AgentRingNoAnswer","date":"2026-11-01 10:01:20","agent":"ana.perez",
                    "agentNumber":"2101","agentFullName":"Ana Pérez","callerIdNum":"094123456",
                    "campaign":"Ventas<-","guid":"2f9c6f3e-5b1d-4c7a-9e0f-1a2b3c4d5e6f"}"#,
            ))
            .expect("valid");
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.call_id.as_str(), "2f9c6f3e-5b1d-4c7a-9e0f-1a2b3c4d5e6f");
        assert_eq!(event.leg_id.as_ref().map(LegId::as_str), Some("ana.perez"));
        assert_eq!(event.kind, EventKind::Hangup);
        assert_eq!(event.disposition, Some(Disposition::NoAnswer));
        assert_eq!(event.direction, Direction::Inbound);
        assert_eq!(e164(&event.from_e164), Some("+59894123456"));
        assert_eq!(event.agent_extension.as_deref(), Some("2101"));
        assert_eq!(event.agent_number.as_deref(), Some("2101"));
        assert_eq!(event.occurred_at, utc("2026-11-01T13:01:20Z"));
    }

    #[test]
    fn a_finished_call_ends_the_call_and_the_agents_leg() {
        let events = Ucontact
            .normalize(&raw(r#"{"event":"FinishInteraction","date":"2026-11-01 10:04:02","guid":"g-1",
                    "campaign":"Ventas<-","agent":"ana.perez","agentNumber":2101,"callerIdNum":"29153456",
                    "channel":"telephony"}"#))
            .expect("valid");
        assert_eq!(events.len(), 2);
        let (call, leg) = (&events[0], &events[1]);
        assert_eq!(call.leg_id, None);
        assert_eq!(call.disposition, Some(Disposition::Answered));
        assert_eq!(e164(&call.from_e164), Some("+59829153456"));
        assert_eq!(call.agent_extension.as_deref(), Some("2101"), "numbers are read as text");
        assert_eq!(leg.leg_id.as_ref().map(LegId::as_str), Some("ana.perez"));
        assert_eq!(leg.disposition, Some(Disposition::Answered));
        assert_ne!(call.event_id, leg.event_id);
        assert_eq!(call.occurred_at, utc("2026-11-01T13:04:02Z"));
    }

    #[test]
    fn an_interaction_no_agent_served_is_not_answered() {
        let events = Ucontact
            .normalize(&raw(r#"{"event":"FinishInteraction","date":"2026-11-01 10:04:02","guid":"g-2",
                    "campaign":"Ventas<-","agent":"","callerIdNum":"29153456"}"#))
            .expect("valid");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].disposition, Some(Disposition::NoAnswer));
        assert_eq!(events[0].leg_id, None);
    }

    #[test]
    fn outbound_campaigns_put_the_customer_on_the_to_side() {
        let events = Ucontact
            .normalize(&raw(r#"{"event":"FinishInteraction","date":"2026-11-01 10:04:02","guid":"g-3",
                    "campaign":"Cobranzas->","agent":"luis.gomez","callerid":"099 876 543"}"#))
            .expect("valid");
        assert_eq!(events[0].direction, Direction::Outbound);
        assert_eq!(events[0].from_raw, None);
        assert_eq!(e164(&events[0].to_e164), Some("+59899876543"));
        assert_eq!(direction(Some("Soporte")), Direction::Unknown);
    }

    #[test]
    fn events_about_no_call_give_nothing() {
        for body in [
            r#"{"event":"AgentLog","date":"2026-11-01 10:00:22","agent":"ana.perez","isLogin":true}"#,
            r#"{"event":"AgentBreak","date":"2026-11-01 10:02:57","agent":"ana.perez","motive":"Lunch","isBreak":true}"#,
            r#"{"event":"InteractionDisposition","date":"2026-11-01 10:04:40","guid":"g-1","agent":"ana.perez"}"#,
            r#"{"event":"FinishInteraction","date":"2026-11-01 10:04:02","guid":"g-4","channel":"webchat","agent":"ana.perez"}"#,
            r#"{"event":"FinishInteraction","date":"2026-11-01 10:04:02","guid":"g-4","channel":"Email"}"#,
            r#"{"event":"FinishInteraction","date":"2026-11-01 10:04:02","channel":"WhatsApp"}"#,
            r#"{"event":"SomethingNew","date":"2026-11-01 10:04:02"}"#,
        ] {
            assert_eq!(Ucontact.normalize(&raw(body)).expect(body), vec![], "{body}");
        }
    }

    #[test]
    fn a_retry_is_the_same_event_and_two_agents_are_not() {
        let ring = |agent: &str| {
            format!(
                r#"{{"event":"AgentRingNoAnswer","date":"2026-11-01 10:01:20","agent":"{agent}",
                    "agentNumber":"2101","callerIdNum":"094123456","campaign":"Ventas<-","guid":"g-5"}}"#
            )
        };
        let first = Ucontact.normalize(&raw(&ring("ana.perez"))).expect("valid");
        let mut retry = raw(&ring("ana.perez"));
        retry.received_at = received() + Duration::seconds(20);
        let again = Ucontact.normalize(&retry).expect("valid");
        assert_eq!(first[0].event_id, again[0].event_id);
        assert_eq!(first[0].occurred_at, again[0].occurred_at);
        let other = Ucontact.normalize(&raw(&ring("luis.gomez"))).expect("valid");
        assert_ne!(first[0].event_id, other[0].event_id);
    }

    #[test]
    fn dates_written_with_minutes_for_the_month() {
        let tz: Tz = "America/Montevideo".parse().expect("tz");
        let at = |text: &str| event_time(Some(text), tz, received());
        // The documented shape: 48 minutes in the month's place; the day (13) is not within a day
        // of receipt, so nothing can be recovered.
        assert_eq!(at("2026-48-13 06:48:51"), received());
        // Minutes 03 written as month 03: placed in November, the month of receipt.
        assert_eq!(at("2026-03-01 10:03:40"), utc("2026-11-01T13:03:40Z"));
        // Just after midnight on the 1st, an event of the evening before is in October.
        let early = utc("2026-11-01T03:20:00Z"); // 00:20 in Montevideo
        assert_eq!(event_time(Some("2026-59-31 23:59:10"), tz, early), utc("2026-11-01T02:59:10Z"));
        // A correct date whose month happens to equal its minutes is read the same.
        let at_11 = utc("2026-11-01T13:12:00Z");
        assert_eq!(event_time(Some("2026-11-01 10:11:30"), tz, at_11), utc("2026-11-01T13:11:30Z"));
        // Correct dates and garbage.
        assert_eq!(at("2026-11-01 10:02:15"), utc("2026-11-01T13:02:15Z"));
        assert_eq!(at("2026-13-01 10:02:15"), received());
        assert_eq!(at("not a date"), received());
        assert_eq!(at(""), received());
        assert_eq!(event_time(None, tz, received()), received());
        assert_eq!(written("2026-11-01 10:02:15.250").map(|w| w.second), Some(15));
        assert_eq!(written("2026-11-01 10:02"), None);
        assert_eq!(written("2026-11-01-02 10:02:15"), None);
        assert_eq!(written("99999999999-11-01 10:02:15"), None);
    }

    #[test]
    fn a_malformed_date_keeps_the_event() {
        let events = Ucontact
            .normalize(&raw(
                r#"{"event":"AgentRingNoAnswer","date":"2026-48-13 06:48:51","agent":"ana.perez",
                    "guid":"g-6","campaign":"Ventas<-"}"#,
            ))
            .expect("valid");
        assert_eq!(events[0].occurred_at, received());
        let numeric = Ucontact
            .normalize(&raw(r#"{"event":"AgentRingNoAnswer","date":false,"agent":"ana.perez","guid":"g-6"}"#))
            .expect("valid");
        assert_eq!(numeric[0].occurred_at, received());
    }

    #[test]
    fn bad_bodies_name_the_field_at_fault() {
        let cases = [
            (
                r#"{"event":"AgentRingNoAnswer","date":"2026-11-01 10:01:20","agent":"ana.perez"}"#,
                "guid is missing",
            ),
            (r#"{"event":"AgentRingNoAnswer","guid":"g","date":"2026-11-01 10:01:20"}"#, "agent is missing"),
            (r#"{"event":"FinishInteraction","date":"2026-11-01 10:01:20","agent":"ana.perez"}"#, "guid"),
            (r#"{"event":"FinishInteraction","guid":"","agent":"ana.perez"}"#, "guid"),
            (r#"{"event":"FinishInteraction","guid":{"id":1}}"#, "guid"),
            (r#"{"event":"FinishInteraction","guid":"g","agent":"a\u0001b"}"#, "agent"),
            (r#"{"date":"2026-11-01 10:01:20"}"#, "event is missing"),
            (r#"{"event":7}"#, "event is missing"),
            (r#"["AgentLog"]"#, "not a JSON object"),
            ("{", "not JSON"),
        ];
        for (body, expected) in cases {
            let error = Ucontact.normalize(&raw(body)).expect_err(body);
            assert!(error.0.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn ingress_check() {
        let check = |content_type: Option<&str>, body: &str| {
            Ucontact.check(&request("POST", None, content_type, body.as_bytes()))
        };
        let json = Some("application/json; charset=UTF-8");
        assert_eq!(check(json, r#"{"event":"FinishInteraction","guid":"g-1"}"#), Ok(Some("g-1".into())));
        assert_eq!(check(json, r#"{"event":"AgentLog","agent":"a","isLogin":true}"#), Ok(None));
        assert_eq!(check(json, r#"{"event":"AgentRingNoAnswer","agent":"a"}"#), Ok(None));
        assert_eq!(check(json, r#"{"event":"FinishInteraction","channel":"email"}"#), Ok(None));
        assert!(matches!(check(json, r#"{"event":"FinishInteraction"}"#), Err(Rejection::Malformed(_))));
        let long = format!(r#"{{"event":"FinishInteraction","guid":"{}"}}"#, "x".repeat(300));
        assert!(matches!(check(json, &long), Err(Rejection::Malformed(_))));
        assert!(matches!(check(json, r#"{"date":"x"}"#), Err(Rejection::Malformed(_))));
        assert!(matches!(check(json, "not json"), Err(Rejection::Malformed(_))));
        assert!(matches!(check(Some(FORM), "event=x"), Err(Rejection::UnsupportedMediaType(_))));
        assert!(matches!(check(None, "{}"), Err(Rejection::UnsupportedMediaType(_))));
    }
}
