//! Asterisk, through a small forwarder that relays the AMI event feed as JSON.
//!
//! Asterisk has no webhooks: its Manager Interface streams `Key: Value` events over TCP. A
//! forwarder logged in to AMI (with `timestampevents = yes`) posts each event as a JSON object
//! whose keys are the AMI header names (`{"Event": "DialBegin", "Linkedid": "...", ...}`), or a
//! JSON array of such objects as a batch, to the source URL (`application/json`). A batch gives
//! the events of all its members, in order; its first `Linkedid` keys the raw record. Header names
//! are matched case-insensitively (CEL spells `LinkedID`, `UniqueID`); values are AMI's strings.
//! **Authentication** is Switchboard's default (HTTP Basic or `?token=`), which the forwarder
//! sends; the reply is the default `202`.
//!
//! **Mapping**: call id = `Linkedid` (the `Uniqueid` of the oldest channel of the call, shared by
//! every channel bridged or dialled into it), leg id = the channel's `Uniqueid`.
//! `Newchannel` of the call's first channel (`Uniqueid` = `Linkedid`) → `Ringing` of that leg,
//! which marks the call's arrival (an IVR or queue call has no dial yet); the `Newchannel` of any
//! other channel gives nothing, because its `DialBegin` says more. `DialBegin` → `Ringing` of the
//! destination leg (`DestUniqueid`); `DialEnd` with `DialStatus` `ANSWER` → `Answered` of that
//! leg, `BUSY` → `Hangup` Busy, `NOANSWER` → NoAnswer, `CANCEL` → Cancelled (in a ring-all queue
//! the legs that lost), `CONGESTION` / `CHANUNAVAIL` / `ABORT` → Failed, `CONTINUE` / `GOTO` →
//! nothing (the dialplan carries on), anything else → Unknown. `BridgeEnter` → `Answered` of the
//! entering leg (not for holding bridges: parking and announcements), `Hangup` → `Hangup` of the
//! leg with `Cause-txt` (else `Cause`) as hangup cause, and CEL `LINKEDID_END` (`Event: CEL`,
//! `EventName: LINKEDID_END`), the end marker of the whole call, → a call-level `Hangup`. Every
//! other event (and every other CEL event) gives no events. Agent extension of a dialled leg: the
//! first of `DestExten`, `DestCallerIDNum` and the peer in `DestChannel` (`PJSIP/101-0000002a`)
//! that is an extension (1-6 digits); of an outbound dial, the caller's `CallerIDNum`; of other
//! events, the channel's own `CallerIDNum` when it is an extension. Times: `Timestamp` (Unix
//! seconds with microseconds), else CEL's `EventTime` in the source's time zone, else the receive
//! time.
//!
//! **Local channels** (`Local/...;1` and `;2`, used by queues, follow-me and originate) are two
//! halves of one internal proxy and double every leg: events whose subject channel is a Local one
//! (`Channel`, or `DestChannel` for dial events) are skipped, so a queue member's ringing, answer
//! and hangup come from the real device channel that the `;2` half dials. `LINKEDID_END` is never
//! skipped, even when the last channel was a Local one.
//!
//! **Direction** is a heuristic, since AMI does not state it: inbound when the call's first
//! channel is in a trunk context (`from-trunk`, `from-pstn`, `from-external`, or a context starting
//! with one of them); for a dial, outbound when the calling channel's context is an outbound-route
//! one (containing `dialout`, `outbound` or `outrt`) or an extension dials a public number (7+
//! digits), inbound when a public number reaches an extension, internal when an extension dials an
//! extension; otherwise unknown, left for the call log to take from the call's other events.
//!
//! **Dedupe**: AMI has no event id; the key hashes `Event`, `EventName`, `Linkedid`, `Uniqueid`,
//! `DestUniqueid`, `BridgeUniqueid`, `Timestamp`, `EventTime`, `DialStatus` and `Cause`, so the
//! same event relayed twice (alone or in two batches) is one event.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};
use switchboard_model::{CallEvent, Direction, Disposition, EventKind, RawWebhook, Region};

use crate::support;
use crate::{Adapter, AdapterError, Rejection, Request};

#[derive(Debug)]
pub struct Asterisk;

/// Vendor tag in dedupe keys.
const TAG: &str = "asterisk";

/// Dialplan contexts inbound trunk calls start in (FreePBX and common hand-written dialplans).
const TRUNK_CONTEXTS: &[&str] = &["from-trunk", "from-pstn", "from-external"];

/// One AMI event as the forwarder relayed it.
#[derive(Debug, Clone, Copy)]
struct Ami<'a>(&'a Map<String, Value>);

impl Ami<'_> {
    /// A header's value, trimmed; `None` when absent, blank or AMI's `<unknown>`.
    fn get(&self, key: &str) -> Option<String> {
        let value = self
            .0
            .get(key)
            .or_else(|| self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v));
        support::json_id(value).filter(|v| v != "<unknown>")
    }

    fn is(&self, key: &str, expected: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case(expected))
    }

    fn required(&self, key: &str) -> Result<String, AdapterError> {
        self.get(key).ok_or_else(|| AdapterError::new(format!("{key} is missing")))
    }

    /// Whether this event is about the call's first channel.
    fn on_first_channel(&self) -> bool {
        matches!((self.get("Uniqueid"), self.get("Linkedid")), (Some(u), Some(l)) if u == l)
    }

    fn in_trunk_context(&self) -> bool {
        self.get("Context").is_some_and(|c| {
            let c = c.to_ascii_lowercase();
            TRUNK_CONTEXTS.iter().any(|t| c.starts_with(t))
        })
    }

    /// Inbound when the call's first channel came in on a trunk.
    fn first_channel_direction(&self) -> Direction {
        if self.on_first_channel() && self.in_trunk_context() {
            Direction::Inbound
        } else {
            Direction::Unknown
        }
    }

    fn dedupe_key(&self) -> String {
        let parts: Vec<String> = [
            "Event",
            "EventName",
            "Linkedid",
            "Uniqueid",
            "DestUniqueid",
            "BridgeUniqueid",
            "Timestamp",
            "EventTime",
            "DialStatus",
            "Cause",
        ]
        .iter()
        .map(|key| self.get(key).unwrap_or_default())
        .collect();
        let mut all: Vec<&str> = vec![TAG];
        all.extend(parts.iter().map(String::as_str));
        support::stable_text_id(&all)
    }

    fn occurred_at(&self, tz: Tz, received: DateTime<Utc>) -> DateTime<Utc> {
        let time = self.get("Timestamp").or_else(|| self.get("EventTime"));
        support::time_or_received(time.as_deref(), tz, received)
    }
}

fn is_local(channel: Option<&str>) -> bool {
    channel.is_some_and(|c| c.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("local/")))
}

/// An extension: 1 to 6 digits.
fn is_extension(text: &str) -> bool {
    (1..=6).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// A public number: an optional `+` and at least 7 digits.
fn is_public_number(text: &str) -> bool {
    let digits = text.strip_prefix('+').unwrap_or(text);
    digits.len() >= 7 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The peer of a channel name: `PJSIP/101-0000002a` → `101`.
fn peer(channel: &str) -> Option<&str> {
    let (_, rest) = channel.split_once('/')?;
    Some(rest.rsplit_once('-').map_or(rest, |(peer, _)| peer))
}

/// The number a `DialString` dials: `101`, `14155550123@provider`, `provider/sip:+44...@host`.
fn dial_target(dial_string: &str) -> Option<String> {
    let tail = dial_string.rsplit('/').next()?;
    let tail = tail.strip_prefix("sip:").unwrap_or(tail);
    let user = tail.split(['@', ',']).next()?.trim();
    (is_extension(user) || is_public_number(user)).then(|| user.to_owned())
}

fn dial_disposition(status: &str) -> Option<Disposition> {
    Some(match status.to_ascii_uppercase().as_str() {
        "BUSY" => Disposition::Busy,
        "NOANSWER" => Disposition::NoAnswer,
        "CANCEL" => Disposition::Cancelled,
        "CONGESTION" | "CHANUNAVAIL" | "ABORT" => Disposition::Failed,
        "CONTINUE" | "GOTO" | "ANSWER" => return None,
        _ => Disposition::Unknown,
    })
}

/// The JSON body as AMI events: one object, or an array of objects.
fn members(body: &[u8]) -> Result<Vec<Map<String, Value>>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(vec![map]),
        Ok(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(map) => Ok(map),
                _ => Err(format!("batch member {i} is not a JSON object")),
            })
            .collect(),
        Ok(_) => Err("not a JSON object or an array of objects".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// What the normalizer needs for every member of a request.
#[derive(Debug, Clone, Copy)]
struct Context<'a> {
    raw: &'a RawWebhook,
    region: Region,
    tz: Tz,
}

impl Context<'_> {
    fn event(&self, ami: Ami<'_>, kind: EventKind) -> Result<CallEvent, AdapterError> {
        let call_id = ami.get("Linkedid").or_else(|| ami.get("DestLinkedid"));
        let call_id = support::call_id(call_id.as_deref(), "Linkedid")?;
        let event_id = support::event_id(ami.dedupe_key())?;
        Ok(CallEvent::new(self.raw, event_id, call_id, kind, ami.occurred_at(self.tz, self.raw.received_at)))
    }

    fn events_of(&self, ami: Ami<'_>) -> Result<Vec<CallEvent>, AdapterError> {
        let name = ami.required("Event")?.to_ascii_lowercase();
        match name.as_str() {
            "cel" => return self.cel(ami),
            "dialbegin" | "dialend" => {
                if is_local(ami.get("DestChannel").as_deref()) {
                    return Ok(Vec::new());
                }
            }
            "newchannel" | "bridgeenter" | "hangup" => {
                if is_local(ami.get("Channel").as_deref()) {
                    return Ok(Vec::new());
                }
            }
            _ => return Ok(Vec::new()),
        }
        match name.as_str() {
            "newchannel" => self.newchannel(ami),
            "dialbegin" => self.dial(ami, None),
            "dialend" => {
                let status = ami.required("DialStatus")?;
                self.dial(ami, Some(&status))
            }
            "bridgeenter" => self.bridge_enter(ami),
            _ => self.hangup(ami),
        }
    }

    fn newchannel(&self, ami: Ami<'_>) -> Result<Vec<CallEvent>, AdapterError> {
        let leg = ami.required("Uniqueid")?;
        if !ami.on_first_channel() {
            return Ok(Vec::new());
        }
        let mut event = self.event(ami, EventKind::Ringing)?;
        event.leg_id = support::leg_id(Some(&leg), "Uniqueid")?;
        event.direction = ami.first_channel_direction();
        let caller = ami.get("CallerIDNum");
        if !ami.in_trunk_context() {
            event.agent_extension = caller.clone().filter(|c| is_extension(c));
        }
        let exten = ami.get("Exten").filter(|e| e.bytes().any(|b| b.is_ascii_digit()));
        support::set_numbers(&mut event, caller.as_deref(), exten.as_deref(), self.region);
        Ok(vec![event])
    }

    /// `DialBegin` (no status) and `DialEnd`: the destination leg rings, answers or ends.
    fn dial(&self, ami: Ami<'_>, status: Option<&str>) -> Result<Vec<CallEvent>, AdapterError> {
        let leg = ami.required("DestUniqueid")?;
        let kind = match status {
            None => EventKind::Ringing,
            Some(s) if s.eq_ignore_ascii_case("ANSWER") => EventKind::Answered,
            Some(s) if s.eq_ignore_ascii_case("CONTINUE") || s.eq_ignore_ascii_case("GOTO") => {
                return Ok(Vec::new());
            }
            Some(_) => EventKind::Hangup,
        };
        let caller = ami.get("CallerIDNum");
        let target = ami
            .get("DialString")
            .and_then(|d| dial_target(&d))
            .or_else(|| ami.get("DestCallerIDNum").filter(|n| is_extension(n) || is_public_number(n)))
            .or_else(|| ami.get("DestExten").filter(|n| is_extension(n) || is_public_number(n)));
        let direction = dial_direction(ami, caller.as_deref(), target.as_deref());
        let mut event = self.event(ami, kind)?;
        event.leg_id = support::leg_id(Some(&leg), "DestUniqueid")?;
        event.direction = direction;
        event.agent_extension = if direction == Direction::Outbound {
            caller.clone().filter(|c| is_extension(c)).or_else(|| {
                ami.get("Channel").and_then(|c| peer(&c).filter(|p| is_extension(p)).map(str::to_owned))
            })
        } else {
            ami.get("DestExten")
                .filter(|e| is_extension(e))
                .or_else(|| ami.get("DestCallerIDNum").filter(|e| is_extension(e)))
                .or_else(|| {
                    ami.get("DestChannel")
                        .and_then(|c| peer(&c).filter(|p| is_extension(p)).map(str::to_owned))
                })
        };
        support::set_numbers(&mut event, caller.as_deref(), target.as_deref(), self.region);
        if let Some(status) = status.filter(|_| kind == EventKind::Hangup) {
            event.disposition = dial_disposition(status);
            event.hangup_cause = Some(support::clip(status));
        }
        Ok(vec![event])
    }

    fn bridge_enter(&self, ami: Ami<'_>) -> Result<Vec<CallEvent>, AdapterError> {
        if ami.is("BridgeType", "holding") || ami.is("BridgeTechnology", "holding_bridge") {
            return Ok(Vec::new());
        }
        let leg = ami.required("Uniqueid")?;
        let mut event = self.event(ami, EventKind::Answered)?;
        event.leg_id = support::leg_id(Some(&leg), "Uniqueid")?;
        event.direction = ami.first_channel_direction();
        event.agent_extension = ami.get("CallerIDNum").filter(|c| is_extension(c));
        Ok(vec![event])
    }

    fn hangup(&self, ami: Ami<'_>) -> Result<Vec<CallEvent>, AdapterError> {
        let leg = ami.required("Uniqueid")?;
        let mut event = self.event(ami, EventKind::Hangup)?;
        event.leg_id = support::leg_id(Some(&leg), "Uniqueid")?;
        event.direction = ami.first_channel_direction();
        event.agent_extension = ami.get("CallerIDNum").filter(|c| is_extension(c));
        event.hangup_cause = ami.get("Cause-txt").or_else(|| ami.get("Cause")).map(|c| support::clip(&c));
        Ok(vec![event])
    }

    /// CEL relayed over AMI: only `LINKEDID_END`, the end of the whole call, is an event.
    fn cel(&self, ami: Ami<'_>) -> Result<Vec<CallEvent>, AdapterError> {
        if !ami.is("EventName", "LINKEDID_END") {
            return Ok(Vec::new());
        }
        Ok(vec![self.event(ami, EventKind::Hangup)?])
    }
}

fn dial_direction(ami: Ami<'_>, caller: Option<&str>, target: Option<&str>) -> Direction {
    if ami.on_first_channel() && ami.in_trunk_context() {
        return Direction::Inbound;
    }
    let outbound_route = ami.get("Context").is_some_and(|c| {
        let c = c.to_ascii_lowercase();
        c.contains("dialout") || c.contains("outbound") || c.contains("outrt")
    });
    let caller_ext = caller.is_some_and(is_extension);
    let caller_public = caller.is_some_and(is_public_number);
    let target_ext = target.is_some_and(is_extension);
    let target_public = target.is_some_and(is_public_number);
    if outbound_route || (caller_ext && target_public) {
        Direction::Outbound
    } else if caller_public && target_ext {
        Direction::Inbound
    } else if caller_ext && target_ext {
        Direction::Internal
    } else {
        Direction::Unknown
    }
}

impl Adapter for Asterisk {
    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        support::require_json(request)?;
        let members = members(request.body).map_err(Rejection::Malformed)?;
        Ok(members.iter().find_map(|m| Ami(m).get("Linkedid")))
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let members = members(&raw.body).map_err(|e| AdapterError::new(format!("body: {e}")))?;
        let context = Context { raw, region: support::region(raw)?, tz: support::timezone(raw) };
        let batch = members.len() > 1;
        let mut events = Vec::new();
        for (i, member) in members.iter().enumerate() {
            match context.events_of(Ami(member)) {
                Ok(found) => events.extend(found),
                Err(e) if batch => return Err(AdapterError::new(format!("batch member {i}: {e}"))),
                Err(e) => return Err(e),
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, JSON, e164, leg, request};

    const CALL: &str = "1793530680.101";

    fn raw(body: &str) -> RawWebhook {
        RawWebhook {
            default_region: "GB".into(),
            timezone: Some("Europe/London".into()),
            received_at: test_support::at(1_793_531_100),
            ..test_support::json_raw(Vendor::Asterisk, body)
        }
    }

    fn events(body: &str) -> Vec<CallEvent> {
        Asterisk.normalize(&raw(body)).expect(body)
    }

    fn one(body: &str) -> CallEvent {
        let mut found = events(body);
        assert_eq!(found.len(), 1, "{body}");
        found.remove(0)
    }

    fn trunk_newchannel() -> String {
        format!(
            r#"{{"Event":"Newchannel","Timestamp":"1793530680.123456","Channel":"PJSIP/trunk-0000001a","ChannelState":"4","ChannelStateDesc":"Ring","CallerIDNum":"+442079460123","CallerIDName":"<unknown>","ConnectedLineNum":"<unknown>","Context":"from-trunk","Exten":"02079460500","Priority":"1","Uniqueid":"{CALL}","Linkedid":"{CALL}"}}"#
        )
    }

    fn dial(event: &str, status: &str, dest: &str, dest_uid: &str, ext: &str) -> String {
        let status = if status.is_empty() { String::new() } else { format!(r#","DialStatus":"{status}""#) };
        format!(
            r#"{{"Event":"{event}","Timestamp":"1793530690.000100","Channel":"PJSIP/trunk-0000001a","CallerIDNum":"+442079460123","Context":"ext-queues","Exten":"400","Uniqueid":"{CALL}","Linkedid":"{CALL}","DestChannel":"{dest}","DestCallerIDNum":"{ext}","DestExten":"{ext}","DestContext":"from-internal","DestUniqueid":"{dest_uid}","DestLinkedid":"{CALL}","DialString":"{ext}"{status}}}"#
        )
    }

    #[test]
    fn the_first_channel_from_a_trunk_is_an_inbound_call_arriving() {
        let e = one(&trunk_newchannel());
        assert_eq!(e.call_id.as_str(), CALL);
        assert_eq!((e.kind, leg(&e)), (EventKind::Ringing, Some(CALL)));
        assert_eq!(e.direction, Direction::Inbound);
        assert_eq!(e164(&e.from_e164), Some("+442079460123"));
        assert_eq!(e164(&e.to_e164), Some("+442079460500"));
        assert_eq!(e.agent_extension, None);
        assert_eq!(e.occurred_at.timestamp_micros(), 1_793_530_680_123_456);
        let other =
            trunk_newchannel().replace(r#""Uniqueid":"1793530680.101""#, r#""Uniqueid":"1793530681.102""#);
        assert!(events(&other).is_empty(), "only the call's first channel announces it");
    }

    #[test]
    fn dials_ring_answer_and_end_the_destination_leg() {
        let begin = one(&dial("DialBegin", "", "PJSIP/101-0000001b", "1793530690.102", "101"));
        assert_eq!((begin.kind, leg(&begin)), (EventKind::Ringing, Some("1793530690.102")));
        assert_eq!(begin.agent_extension.as_deref(), Some("101"));
        assert_eq!(begin.direction, Direction::Inbound);
        assert_eq!(begin.to_raw.as_deref(), Some("101"));
        let answer = one(&dial("DialEnd", "ANSWER", "PJSIP/101-0000001b", "1793530690.102", "101"));
        assert_eq!((answer.kind, answer.disposition), (EventKind::Answered, None));
        for (status, disposition) in [
            ("BUSY", Disposition::Busy),
            ("NOANSWER", Disposition::NoAnswer),
            ("CANCEL", Disposition::Cancelled),
            ("CONGESTION", Disposition::Failed),
            ("CHANUNAVAIL", Disposition::Failed),
            ("SOMETHING", Disposition::Unknown),
        ] {
            let e = one(&dial("DialEnd", status, "PJSIP/102-0000001c", "1793530690.103", "102"));
            assert_eq!((e.kind, e.disposition), (EventKind::Hangup, Some(disposition)), "{status}");
            assert_eq!(e.hangup_cause.as_deref(), Some(status));
            assert_eq!(leg(&e), Some("1793530690.103"));
        }
        assert!(
            events(&dial("DialEnd", "CONTINUE", "PJSIP/102-0000001c", "1793530690.103", "102")).is_empty()
        );
        assert_ne!(begin.event_id, answer.event_id);
    }

    #[test]
    fn local_channels_are_skipped_but_the_device_they_dial_is_not() {
        let to_local = dial("DialBegin", "", "Local/101@from-queue-00000004;1", "1793530690.104", "101");
        assert!(events(&to_local).is_empty());
        let from_local = r#"{"Event":"DialBegin","Timestamp":"1793530690.2","Channel":"Local/101@from-queue-00000004;2","CallerIDNum":"+442079460123","Context":"from-queue","Exten":"101","Uniqueid":"1793530690.105","Linkedid":"1793530680.101","DestChannel":"PJSIP/101-0000001d","DestCallerIDNum":"101","DestUniqueid":"1793530690.106","DestLinkedid":"1793530680.101","DialString":"101"}"#;
        let e = one(from_local);
        assert_eq!((leg(&e), e.agent_extension.as_deref()), (Some("1793530690.106"), Some("101")));
        assert_eq!(e.direction, Direction::Inbound);
        let local_hangup = r#"{"Event":"Hangup","Channel":"Local/101@from-queue-00000004;2","Uniqueid":"1793530690.105","Linkedid":"1793530680.101","Cause":"16","Cause-txt":"Normal Clearing"}"#;
        assert!(events(local_hangup).is_empty());
    }

    #[test]
    fn bridges_hangups_and_the_end_of_the_call() {
        let bridge = r#"{"Event":"BridgeEnter","Timestamp":"1793530695.5","BridgeUniqueid":"0b1c2d3e","BridgeType":"basic","BridgeTechnology":"simple_bridge","Channel":"PJSIP/101-0000001b","CallerIDNum":"101","ConnectedLineNum":"+442079460123","Uniqueid":"1793530690.102","Linkedid":"1793530680.101"}"#;
        let e = one(bridge);
        assert_eq!(
            (e.kind, leg(&e), e.agent_extension.as_deref()),
            (EventKind::Answered, Some("1793530690.102"), Some("101"))
        );
        assert!(events(&bridge.replace("basic", "holding")).is_empty(), "parking is not an answer");
        let hangup = r#"{"Event":"Hangup","Timestamp":"1793530800.000001","Channel":"PJSIP/trunk-0000001a","CallerIDNum":"+442079460123","Context":"from-trunk","Uniqueid":"1793530680.101","Linkedid":"1793530680.101","Cause":"16","Cause-txt":"Normal Clearing"}"#;
        let e = one(hangup);
        assert_eq!((e.kind, leg(&e)), (EventKind::Hangup, Some(CALL)));
        assert_eq!(e.hangup_cause.as_deref(), Some("Normal Clearing"));
        assert_eq!(e.direction, Direction::Inbound);
        let cel = r#"{"Event":"CEL","EventName":"LINKEDID_END","AccountCode":"","CallerIDnum":"+442079460123","Exten":"","Context":"from-trunk","Channel":"Local/101@from-queue-00000004;1","EventTime":"2026-11-01 10:00:00.500000","UniqueID":"1793530690.104","LinkedID":"1793530680.101"}"#;
        let e = one(cel);
        assert_eq!((e.kind, e.leg_id.as_ref(), e.call_id.as_str()), (EventKind::Hangup, None, CALL));
        // 10:00 in London in November is 10:00 UTC.
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-01T10:00:00.500+00:00");
        assert!(events(&cel.replace("LINKEDID_END", "CHAN_END")).is_empty());
    }

    #[test]
    fn outbound_and_internal_dials() {
        let out = r#"{"Event":"DialBegin","Timestamp":"1793530700.1","Channel":"PJSIP/101-00000020","CallerIDNum":"101","Context":"from-internal","Exten":"02079460999","Uniqueid":"1793530700.110","Linkedid":"1793530700.110","DestChannel":"PJSIP/provider-00000021","DestCallerIDNum":"02079460999","DestExten":"02079460999","DestUniqueid":"1793530700.111","DestLinkedid":"1793530700.110","DialString":"02079460999@provider"}"#;
        let e = one(out);
        assert_eq!(e.direction, Direction::Outbound);
        assert_eq!(e.agent_extension.as_deref(), Some("101"));
        assert_eq!(e164(&e.to_e164), Some("+442079460999"));
        let internal = out
            .replace("02079460999@provider", "102")
            .replace("02079460999", "102")
            .replace("provider", "102");
        let e = one(&internal);
        assert_eq!((e.direction, e.agent_extension.as_deref()), (Direction::Internal, Some("102")));
        let route = out
            .replace(r#""CallerIDNum":"101""#, r#""CallerIDNum":"442079460000""#)
            .replace("from-internal", "macro-dialout-trunk");
        assert_eq!(one(&route).direction, Direction::Outbound);
    }

    #[test]
    fn helpers() {
        assert_eq!(peer("PJSIP/101-0000001b"), Some("101"));
        assert_eq!(peer("SIP/provider-trunk-00000001"), Some("provider-trunk"));
        assert_eq!(peer("nonsense"), None);
        assert_eq!(dial_target("101").as_deref(), Some("101"));
        assert_eq!(dial_target("14155550123@provider").as_deref(), Some("14155550123"));
        assert_eq!(dial_target("provider/sip:+442079460123@host").as_deref(), Some("+442079460123"));
        assert_eq!(dial_target("alice"), None);
        assert!(is_local(Some("local/x;1")) && !is_local(Some("PJSIP/1")) && !is_local(None));
    }

    #[test]
    fn a_batch_is_all_its_members_and_retries_share_ids() {
        let batch = format!(
            "[{}, {}, {{\"Event\":\"VarSet\",\"Variable\":\"X\"}}]",
            trunk_newchannel(),
            dial("DialBegin", "", "PJSIP/101-0000001b", "1793530690.102", "101")
        );
        let found = events(&batch);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].event_id,
            one(&trunk_newchannel()).event_id,
            "the same AMI event alone or batched"
        );
        assert!(events("[]").is_empty());
        assert!(events(r#"{"Event":"PeerStatus","Peer":"PJSIP/101"}"#).is_empty());
    }

    #[test]
    fn bad_input_names_the_field() {
        for (body, expected) in [
            (r#"{"Linkedid":"1"}"#, "Event is missing"),
            (r#"{"Event":"DialBegin","Linkedid":"1","DestChannel":"PJSIP/1-1"}"#, "DestUniqueid is missing"),
            (r#"{"Event":"DialEnd","Linkedid":"1","DestUniqueid":"2"}"#, "DialStatus is missing"),
            (r#"{"Event":"Hangup","Uniqueid":"1"}"#, "Linkedid"),
            (r#"{"Event":"BridgeEnter","Linkedid":"1"}"#, "Uniqueid is missing"),
            (
                r#"[{"Event":"VarSet"}, {"Event":"Hangup","Linkedid":"1"}]"#,
                "batch member 1: Uniqueid is missing",
            ),
            (r#"[{"Event":"VarSet"}, 3]"#, "batch member 1 is not a JSON object"),
            ("\"text\"", "not a JSON object"),
            ("{nope", "not JSON"),
        ] {
            let error = Asterisk.normalize(&raw(body)).expect_err(body);
            assert!(error.0.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn ingress_check_wants_json_events() {
        let check = |content_type: &str, body: &str| {
            Asterisk.check(&request("POST", None, Some(content_type), body.as_bytes()))
        };
        assert_eq!(check(JSON, &trunk_newchannel()), Ok(Some(CALL.into())));
        assert_eq!(
            check(JSON, &format!(r#"[{{"Event":"FullyBooted"}}, {}]"#, trunk_newchannel())),
            Ok(Some(CALL.into()))
        );
        assert_eq!(check(JSON, "[]"), Ok(None));
        assert!(matches!(check(JSON, "[1]"), Err(Rejection::Malformed(_))));
        assert!(matches!(check(JSON, "nope"), Err(Rejection::Malformed(_))));
        assert!(matches!(check("text/plain", "{}"), Err(Rejection::UnsupportedMediaType(_))));
    }
}
