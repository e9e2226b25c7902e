//! Mango Office virtual PBX (VPBX API "API Realtime" events).
//!
//! Mango POSTs an `application/x-www-form-urlencoded` form with three fields, `vpbx_api_key`,
//! `sign` and `json` (the event as JSON text), to the configured URL plus a suffix naming the
//! event, which ingress passes as the request's subpath: `/events/call` (a leg changes state),
//! `/events/summary` (the call is over), `/events/recording` (recording started / continued /
//! completed), `/events/record/added` (the recording is in cloud storage). The other documented
//! suffixes (`/events/record/tagged`, `/events/dtmf`, `/events/sms`, `/events/recognized/offline`,
//! `/result/...` answers to commands) are accepted and give no events; any other subpath is refused
//! at ingress as malformed.
//!
//! **Authentication** (VPBX API §1.3, the same scheme as API commands): `vpbx_api_key` must equal
//! the source's `api_key` setting and `sign` must equal lowercase hex
//! `sha256(vpbx_api_key + json + vpbx_api_salt)`, the salt being the source's `signing_secret`;
//! both are compared in constant time, and `json` is hashed exactly as received. **Reply**: an
//! empty `200`.
//!
//! **Mapping**, `/events/call`: call id = `entry_id` (the same for every leg of one call, through
//! IVR, queue, forwarding and transfers), leg id = `call_id`, `seq` → sequence (it counts per
//! leg), `timestamp` (Unix seconds) → occurred_at. `call_state`: `Appeared` → Ringing (the caller's
//! leg appearing in the IVR or a leg ringing an employee), `Connected` → Answered, `Disconnected` →
//! Hangup, `OnHold` → no event (holding changes no call state). A `Connected` while the leg is in
//! the `ivr` or `queue` location gives no event: a machine took the call, not a person (an
//! assumption; the documentation says `Connected` is "a conversation of two subscribers"). Agent
//! extension = `to.extension`, else `from.extension`; numbers = `from.number` / `to.number`
//! (extension when there is no number). Direction, which `/events/call` does not state: outbound
//! when `command_id` or `callback_initiator` is present (a callback), internal when both ends
//! have an extension, outbound when only the caller has one, inbound when the called end is an
//! extension or a line (`to.line_number`), else unknown. `disconnect_reason` → hangup cause
//! (`"1121 busy"`); a leg's disposition is set only for codes that say it without knowing whether
//! the leg was connected: 1111/1160/1163/1164 → NoAnswer, 1121 → Busy, 1122/1123/1150-1152 →
//! Rejected, 1182 (taken by another operator) → Cancelled, 1124/113x/1140/1161/1162/1171/119x and
//! 2xxx-5xxx → Failed; 1100/1110/1120 and the other 11xx codes end a talk as well as a ringing leg and
//! leave the disposition empty. The code table is the one published with the VPBX API; its reading
//! as dispositions is ours.
//!
//! `/events/summary` → a call-level Hangup at `end_time` with the call's disposition:
//! `entry_result` 1 → Answered (with `entry_result` absent: `talk_time` > 0); otherwise by
//! `disconnect_reason`: 1110 (the caller gave up) → Cancelled, 1121 → Busy, 1120/1122/1123/115x →
//! Rejected, the failure codes above → Failed, anything else → NoAnswer. `call_direction` 0/1/2 →
//! internal/inbound/outbound; `to` is the employee who answered (or first missed it); an inbound
//! call's `to` number is its `line_number`.
//!
//! `/events/recording` with `recording_state` `Completed` (and `completion_code` absent or 1000,
//! and not `recipient` `Mail`, which stores nothing an id can fetch) and `/events/record/added` →
//! a Recording event with the `recording_id` (leg = `call_id`, agent = `extension` when known).
//! Both notifications of one recording share a dedupe key, so the recording is announced once.
//!
//! **Dedupe**: Mango sends no event id. `/events/call`: hash of (subpath, `entry_id`, `call_id`,
//! `seq`, `call_state`, `location`, `timestamp`); summary: (`entry_id`, `create_time`,
//! `end_time`, `entry_result`, `disconnect_reason`); recordings: (`entry_id`, `recording_id`).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};
use switchboard_model::{CallEvent, Direction, Disposition, EventKind, RawWebhook, Region};

use crate::auth::{self, AuthFailure, SourceAuth};
use crate::support::{self, Fields};
use crate::{Adapter, AdapterError, Rejection, Reply, Request};

#[derive(Debug)]
pub struct Mango;

/// Vendor tag in dedupe keys.
const TAG: &str = "mango";

/// The event a request's subpath names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Call,
    Summary,
    Recording,
    RecordAdded,
    /// Documented, but about no call state (DTMF, SMS, topics, command results).
    Other,
}

impl Endpoint {
    fn parse(subpath: &str) -> Option<Self> {
        let path = subpath.trim_end_matches('/');
        Some(match path {
            "/events/call" => Self::Call,
            "/events/summary" => Self::Summary,
            "/events/recording" => Self::Recording,
            "/events/record/added" => Self::RecordAdded,
            "/events/record/tagged" | "/events/dtmf" | "/events/sms" | "/events/recognized/offline" => {
                Self::Other
            }
            _ if path.starts_with("/result/") && path.len() > "/result/".len() => Self::Other,
            _ => return None,
        })
    }
}

/// The first value of `name` exactly as sent, when not empty; the signature covers this
/// occurrence ([`Fields::first`]), and the mapping reads the same one.
fn form_value<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.first(name).filter(|v| !v.is_empty())
}

/// A JSON string or number as text, trimmed; `None` when absent, blank or another type.
fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    support::json_id(map.get(key))
}

/// A JSON integer, also when sent as a string.
fn integer(map: &Map<String, Value>, key: &str) -> Option<i64> {
    match map.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn object<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    map.get(key).and_then(Value::as_object)
}

/// A Unix time in seconds as Mango sends it, or the receive time.
fn unix_or_received(map: &Map<String, Value>, key: &str, received: DateTime<Utc>) -> DateTime<Utc> {
    let value = text(map, key).filter(|t| t != "0");
    support::time_or_received(value.as_deref(), Tz::UTC, received)
}

/// What the published `disconnect_reason` codes say, in short.
fn reason_text(code: i64) -> Option<&'static str> {
    Some(match code {
        1100 => "normal call clearing",
        1110 => "ended by the caller",
        1111 => "not answered in time",
        1120 => "ended by the called party",
        1121 => "busy",
        1122 => "rejected by the called party",
        1123 => "do not disturb",
        1124 => "employee unavailable",
        1130 => "called number restricted",
        1131 => "called number unavailable",
        1132 => "called number not in service",
        1133 => "called number does not exist",
        1134 => "too many forwards",
        1140 => "calls to the region forbidden",
        1150 => "calling number restricted",
        1151 => "calling number blacklisted",
        1152 => "calling number not whitelisted",
        1160 => "group call failed",
        1161 => "hold forbidden",
        1162 => "queue full",
        1163 => "queue wait time exceeded",
        1164 => "all operators unavailable",
        1170 => "ended by the forwarding scheme",
        1171 => "forwarding scheme misconfigured",
        1180 => "ended by user command",
        1181 => "ended by an external system",
        1182 => "taken by another operator",
        1183 => "new operator assigned",
        1190..=1192 => "called number inactive",
        2000..=2999 => "billing restriction",
        3200..=3299 => "wrong number",
        4200..=4299 => "subscriber unreachable",
        5000..=5999 => "server error",
        _ => return None,
    })
}

fn hangup_cause(code: Option<i64>) -> Option<String> {
    let code = code?;
    Some(match reason_text(code) {
        Some(text) => format!("{code} {text}"),
        None => code.to_string(),
    })
}

/// Codes that mean the call or leg could not be put through at all.
fn is_failure(code: i64) -> bool {
    matches!(code, 1124 | 1130..=1134 | 1140 | 1161 | 1162 | 1171 | 1190..=1192 | 2000..=5999)
}

fn is_refusal(code: i64) -> bool {
    matches!(code, 1122 | 1123 | 1150..=1152)
}

/// A leg's disposition, where the code alone tells it.
fn leg_disposition(code: i64) -> Option<Disposition> {
    match code {
        1111 | 1160 | 1163 | 1164 => Some(Disposition::NoAnswer),
        1121 => Some(Disposition::Busy),
        1182 => Some(Disposition::Cancelled),
        c if is_refusal(c) => Some(Disposition::Rejected),
        c if is_failure(c) => Some(Disposition::Failed),
        _ => None,
    }
}

/// The whole call's disposition from `/events/summary`.
fn call_disposition(
    entry_result: Option<i64>,
    talk_time: Option<i64>,
    reason: Option<i64>,
) -> Option<Disposition> {
    let answered = match entry_result {
        Some(result) => result == 1,
        None => talk_time.is_some_and(|t| t > 0),
    };
    if answered {
        return Some(Disposition::Answered);
    }
    if entry_result.is_none() && reason.is_none() {
        return None;
    }
    Some(match reason {
        Some(1110) => Disposition::Cancelled,
        Some(1121) => Disposition::Busy,
        Some(c) if c == 1120 || is_refusal(c) => Disposition::Rejected,
        Some(c) if is_failure(c) => Disposition::Failed,
        _ => Disposition::NoAnswer,
    })
}

/// One end of a call as `/events/call` and `/events/summary` describe it.
#[derive(Debug, Default)]
struct End {
    extension: Option<String>,
    number: Option<String>,
    line_number: Option<String>,
}

impl End {
    fn read(map: &Map<String, Value>, key: &str) -> Self {
        match object(map, key) {
            Some(end) => Self {
                extension: text(end, "extension"),
                number: text(end, "number"),
                line_number: text(end, "line_number"),
            },
            None => Self::default(),
        }
    }

    /// The number to show for this end: its phone number, else its extension.
    fn shown(&self) -> Option<&str> {
        self.number.as_deref().or(self.extension.as_deref())
    }
}

/// The JSON of a request, read and checked once.
#[derive(Debug)]
struct Context<'a> {
    raw: &'a RawWebhook,
    json: Map<String, Value>,
    region: Region,
}

impl Context<'_> {
    fn entry_id(&self) -> Result<switchboard_model::CallId, AdapterError> {
        support::call_id(text(&self.json, "entry_id").as_deref(), "entry_id")
    }

    fn received(&self) -> DateTime<Utc> {
        self.raw.received_at
    }

    fn call(&self) -> Result<Vec<CallEvent>, AdapterError> {
        let json = &self.json;
        let call_id = self.entry_id()?;
        let leg = text(json, "call_id");
        let state = text(json, "call_state").ok_or_else(|| AdapterError::new("call_state is missing"))?;
        let location = text(json, "location");
        let kind = match state.as_str() {
            "Appeared" => EventKind::Ringing,
            "Connected" if matches!(location.as_deref(), Some("ivr" | "queue")) => return Ok(Vec::new()),
            "Connected" => EventKind::Answered,
            "Disconnected" => EventKind::Hangup,
            "OnHold" => return Ok(Vec::new()),
            other => {
                return Err(AdapterError::new(format!(
                    "call_state {:?} is not one of Appeared, Connected, OnHold, Disconnected",
                    support::clip(other)
                )));
            }
        };
        let seq = integer(json, "seq");
        let timestamp = text(json, "timestamp");
        let key = support::stable_text_id(&[
            TAG,
            "/events/call",
            call_id.as_str(),
            leg.as_deref().unwrap_or(""),
            &seq.map(|s| s.to_string()).unwrap_or_default(),
            &state,
            location.as_deref().unwrap_or(""),
            timestamp.as_deref().unwrap_or(""),
        ]);
        let from = End::read(json, "from");
        let to = End::read(json, "to");
        let callback = text(json, "command_id").is_some() || text(json, "callback_initiator").is_some();
        let direction = match (from.extension.is_some(), to.extension.is_some()) {
            _ if callback => Direction::Outbound,
            (true, true) => Direction::Internal,
            (true, false) => Direction::Outbound,
            (false, true) => Direction::Inbound,
            (false, false) if to.line_number.is_some() => Direction::Inbound,
            (false, false) => Direction::Unknown,
        };
        let occurred_at = unix_or_received(json, "timestamp", self.received());
        let mut event = CallEvent::new(self.raw, support::event_id(key)?, call_id, kind, occurred_at);
        event.leg_id = support::leg_id(leg.as_deref(), "call_id")?;
        event.direction = direction;
        event.sequence = seq;
        event.agent_extension = to.extension.as_deref().or(from.extension.as_deref()).map(support::clip);
        support::set_numbers(&mut event, from.shown(), to.shown(), self.region);
        if kind == EventKind::Hangup {
            let reason = integer(json, "disconnect_reason");
            event.hangup_cause = hangup_cause(reason);
            event.disposition = reason.and_then(leg_disposition);
        }
        Ok(vec![event])
    }

    fn summary(&self) -> Result<Vec<CallEvent>, AdapterError> {
        let json = &self.json;
        let call_id = self.entry_id()?;
        let entry_result = integer(json, "entry_result");
        let reason = integer(json, "disconnect_reason");
        let number_text = |key: &str| integer(json, key).map(|n| n.to_string()).unwrap_or_default();
        let key = support::stable_text_id(&[
            TAG,
            "/events/summary",
            call_id.as_str(),
            &number_text("create_time"),
            &number_text("end_time"),
            &number_text("entry_result"),
            &number_text("disconnect_reason"),
        ]);
        let direction = match integer(json, "call_direction") {
            Some(0) => Direction::Internal,
            Some(1) => Direction::Inbound,
            Some(2) => Direction::Outbound,
            _ => Direction::Unknown,
        };
        let from = End::read(json, "from");
        let to = End::read(json, "to");
        let line = text(json, "line_number");
        let to_shown = match direction {
            Direction::Inbound => line.as_deref().or(to.shown()),
            _ => to.shown(),
        };
        let occurred_at = unix_or_received(json, "end_time", self.received());
        let mut event =
            CallEvent::new(self.raw, support::event_id(key)?, call_id, EventKind::Hangup, occurred_at);
        event.direction = direction;
        event.agent_extension = match direction {
            Direction::Outbound => from.extension.as_deref().or(to.extension.as_deref()),
            _ => to.extension.as_deref().or(from.extension.as_deref()),
        }
        .map(support::clip);
        support::set_numbers(&mut event, from.shown(), to_shown, self.region);
        event.disposition = call_disposition(entry_result, integer(json, "talk_time"), reason);
        event.hangup_cause = hangup_cause(reason);
        Ok(vec![event])
    }

    /// A recording's event; `/events/recording` and `/events/record/added` share its dedupe key.
    fn recording(&self, endpoint: Endpoint) -> Result<Vec<CallEvent>, AdapterError> {
        let json = &self.json;
        if endpoint == Endpoint::Recording {
            let state = text(json, "recording_state")
                .ok_or_else(|| AdapterError::new("recording_state is missing"))?;
            let completed_ok = integer(json, "completion_code").is_none_or(|code| code == 1000);
            let stored = text(json, "recipient").as_deref() != Some("Mail");
            if state != "Completed" || !completed_ok || !stored {
                return Ok(Vec::new());
            }
        }
        let call_id = self.entry_id()?;
        let recording =
            text(json, "recording_id").ok_or_else(|| AdapterError::new("recording_id is missing"))?;
        let key = support::stable_text_id(&[TAG, "recording", call_id.as_str(), &recording]);
        let occurred_at = unix_or_received(json, "timestamp", self.received());
        let mut event =
            CallEvent::new(self.raw, support::event_id(key)?, call_id, EventKind::Recording, occurred_at);
        if endpoint == Endpoint::Recording {
            event.leg_id = support::leg_id(text(json, "call_id").as_deref(), "call_id")?;
            event.agent_extension = text(json, "extension").map(|e| support::clip(&e));
        }
        event.recording_id = Some(support::clip(&recording));
        Ok(vec![event])
    }
}

impl Adapter for Mango {
    /// The credential is in (or signs) the body.
    fn authenticates_without_body(&self) -> bool {
        false
    }

    fn authenticate(&self, request: &Request<'_>, source: &SourceAuth<'_>) -> Result<(), AuthFailure> {
        let salt = source.signing_secret()?;
        let api_key = source.settings.api_key.as_deref().filter(|k| !k.is_empty());
        let api_key = api_key.ok_or(AuthFailure::NotConfigured("api_key"))?;
        let fields = Fields::parse(request.body);
        let (Some(given_key), Some(sign), Some(json)) =
            (form_value(&fields, "vpbx_api_key"), form_value(&fields, "sign"), form_value(&fields, "json"))
        else {
            return Err(AuthFailure::Missing);
        };
        let expected = auth::sha256_hex(format!("{api_key}{json}{salt}").as_bytes());
        // Both checks always run, so timing does not tell which one failed.
        let key_ok = auth::ct_eq(given_key.as_bytes(), api_key.as_bytes());
        let sign_ok = auth::ct_eq(sign.trim().to_ascii_lowercase().as_bytes(), expected.as_bytes());
        (key_ok & sign_ok).then_some(()).ok_or(AuthFailure::Wrong)
    }

    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        let endpoint = Endpoint::parse(request.subpath).ok_or_else(|| {
            Rejection::Malformed(format!("{:?} is not a Mango event path", support::clip(request.subpath)))
        })?;
        support::require_form(request)?;
        let fields = Fields::parse(request.body);
        let json =
            form_value(&fields, "json").ok_or_else(|| Rejection::Malformed("json is missing".into()))?;
        let json =
            support::json_object(json.as_bytes()).map_err(|e| Rejection::Malformed(format!("json: {e}")))?;
        let entry = text(&json, "entry_id");
        match (endpoint, entry) {
            (Endpoint::Other, entry) => Ok(entry),
            (_, Some(entry)) => Ok(Some(entry)),
            (_, None) => Err(Rejection::Malformed("entry_id is missing".into())),
        }
    }

    fn reply(&self, _raw_id: &str) -> Reply {
        Reply::empty_ok()
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let request = Request::from_raw(raw);
        let endpoint = Endpoint::parse(request.subpath).ok_or_else(|| {
            AdapterError::new(format!("{:?} is not a Mango event path", support::clip(request.subpath)))
        })?;
        if endpoint == Endpoint::Other {
            return Ok(Vec::new());
        }
        let fields = Fields::parse(&raw.body);
        let json = form_value(&fields, "json").ok_or_else(|| AdapterError::new("json is missing"))?;
        let json =
            support::json_object(json.as_bytes()).map_err(|e| AdapterError::new(format!("json: {e}")))?;
        let context = Context { raw, json, region: support::region(raw)? };
        match endpoint {
            Endpoint::Call => context.call(),
            Endpoint::Summary => context.summary(),
            Endpoint::Recording | Endpoint::RecordAdded => context.recording(endpoint),
            Endpoint::Other => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::test_support::{self, FORM, JSON, SOURCE, e164, leg, request, signed_source};
    use crate::{SourceSettings, WEBHOOK_PATH_PREFIX};

    const KEY: &str = "k7mq2x9c4vb8n1z5";
    const SALT: &str = "s4lt-9f8e7d6c";
    const APPEARED: &str = r#"{"entry_id":"MTAxNjg5NDI1Mzg=","call_id":"MToxMDE1OTY4MDoyMjE6Mjg2NTY1MzQyOjE=","timestamp":1793530700,"seq":1,"call_state":"Appeared","location":"ivr","from":{"number":"79161234567"},"to":{"number":"74951234567","line_number":"74951234567"}}"#;
    /// python3: hashlib.sha256((KEY + APPEARED + SALT).encode()).hexdigest()
    const APPEARED_SIGN: &str = "e9126613e09a16065702e4a1b583769c5edc8af9e2b0089db99abd0222ed3988";

    fn form(json: &str, key: &str, sign: &str) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("vpbx_api_key", key)
            .append_pair("sign", sign)
            .append_pair("json", json)
            .finish()
    }

    fn raw(subpath: &str, json: &str) -> RawWebhook {
        let body = form(json, KEY, "unchecked-here");
        RawWebhook {
            default_region: "RU".into(),
            received_at: test_support::at(1_793_531_000),
            path: format!("{WEBHOOK_PATH_PREFIX}{SOURCE}{subpath}"),
            ..test_support::raw(Vendor::Mango, "POST", None, Some(FORM), &body)
        }
    }

    fn events(subpath: &str, json: &str) -> Vec<CallEvent> {
        Mango.normalize(&raw(subpath, json)).expect(json)
    }

    fn one(subpath: &str, json: &str) -> CallEvent {
        let mut found = events(subpath, json);
        assert_eq!(found.len(), 1, "{json}");
        found.remove(0)
    }

    fn authenticate(body: &str, api_key: Option<&str>, salt: Option<&str>) -> Result<(), AuthFailure> {
        let request =
            Request { subpath: "/events/call", ..request("POST", None, Some(FORM), body.as_bytes()) };
        let settings = SourceSettings { api_key: api_key.map(str::to_owned), ..SourceSettings::default() };
        Mango.authenticate(&request, &signed_source(salt, &settings))
    }

    #[test]
    fn the_sign_is_sha256_of_key_json_and_salt() {
        let good = form(APPEARED, KEY, APPEARED_SIGN);
        assert_eq!(authenticate(&good, Some(KEY), Some(SALT)), Ok(()));
        let upper = form(APPEARED, KEY, &APPEARED_SIGN.to_ascii_uppercase());
        assert_eq!(authenticate(&upper, Some(KEY), Some(SALT)), Ok(()));
        assert_eq!(authenticate(&good, Some(KEY), Some("other-salt")), Err(AuthFailure::Wrong));
        assert_eq!(authenticate(&good, Some("other-key"), Some(SALT)), Err(AuthFailure::Wrong));
        let wrong_key = form(APPEARED, "other-key", APPEARED_SIGN);
        assert_eq!(authenticate(&wrong_key, Some(KEY), Some(SALT)), Err(AuthFailure::Wrong));
        let tampered = form(&APPEARED.replace("Appeared", "Connected"), KEY, APPEARED_SIGN);
        assert_eq!(authenticate(&tampered, Some(KEY), Some(SALT)), Err(AuthFailure::Wrong));
        assert_eq!(
            authenticate("vpbx_api_key=k&json=%7B%7D", Some(KEY), Some(SALT)),
            Err(AuthFailure::Missing)
        );
        assert_eq!(authenticate(&good, None, Some(SALT)), Err(AuthFailure::NotConfigured("api_key")));
        assert_eq!(authenticate(&good, Some(KEY), None), Err(AuthFailure::NotConfigured("signing_secret")));
        // A json repeated after the signed one is not what gets read.
        let doubled = format!("{good}&json=%7B%7D");
        assert_eq!(authenticate(&doubled, Some(KEY), Some(SALT)), Ok(()));
    }

    #[test]
    fn appeared_in_the_ivr_is_the_callers_leg_ringing() {
        let e = one("/events/call", APPEARED);
        assert_eq!(e.call_id.as_str(), "MTAxNjg5NDI1Mzg=");
        assert_eq!(leg(&e), Some("MToxMDE1OTY4MDoyMjE6Mjg2NTY1MzQyOjE="));
        assert_eq!((e.kind, e.direction), (EventKind::Ringing, Direction::Inbound));
        assert_eq!(e.sequence, Some(1));
        assert_eq!(e.occurred_at.timestamp(), 1_793_530_700);
        assert_eq!(e164(&e.from_e164), Some("+79161234567"));
        assert_eq!(e164(&e.to_e164), Some("+74951234567"));
        assert_eq!(e.agent_extension, None);
    }

    #[test]
    fn every_call_state() {
        let agent = r#"{"entry_id":"E1","call_id":"L2","timestamp":1793530710,"seq":2,"call_state":"Connected","location":"abonent","from":{"number":"79161234567"},"to":{"extension":101,"number":"sip:101@vpbx400123456.mangosip.ru"}}"#;
        let e = one("/events/call", agent);
        assert_eq!((e.kind, leg(&e)), (EventKind::Answered, Some("L2")));
        assert_eq!(e.agent_extension.as_deref(), Some("101"));
        assert_eq!(e.direction, Direction::Inbound);
        assert_eq!(e.to_raw.as_deref(), Some("sip:101@vpbx400123456.mangosip.ru"));
        let down = agent
            .replace("Connected", "Disconnected")
            .replace("\"seq\":2", "\"seq\":3")
            .replace("\"to\"", "\"disconnect_reason\":1121,\"to\"");
        let e = one("/events/call", &down);
        assert_eq!(e.kind, EventKind::Hangup);
        assert_eq!(e.hangup_cause.as_deref(), Some("1121 busy"));
        assert_eq!(e.disposition, Some(Disposition::Busy));
        let normal = down.replace("1121", "1110");
        let e = one("/events/call", &normal);
        assert_eq!((e.hangup_cause.as_deref(), e.disposition), (Some("1110 ended by the caller"), None));
        assert!(events("/events/call", &agent.replace("Connected", "OnHold")).is_empty());
        let ivr = agent.replace("abonent", "ivr");
        assert!(events("/events/call", &ivr).is_empty(), "the IVR picking up is not an answer");
    }

    #[test]
    fn directions_of_legs() {
        let direction = |from: &str, to: &str, extra: &str| {
            let json = format!(
                r#"{{"entry_id":"E","call_id":"L","timestamp":1793530700,"seq":1,"call_state":"Appeared","from":{from},"to":{to}{extra}}}"#
            );
            one("/events/call", &json).direction
        };
        assert_eq!(direction(r#"{"extension":"101"}"#, r#"{"extension":"102"}"#, ""), Direction::Internal);
        assert_eq!(
            direction(r#"{"extension":"101"}"#, r#"{"number":"79161234567"}"#, ""),
            Direction::Outbound
        );
        assert_eq!(
            direction(r#"{"number":"79161234567"}"#, r#"{"extension":"101"}"#, ""),
            Direction::Inbound
        );
        assert_eq!(direction(r#"{"number":"7916"}"#, r#"{"number":"7495"}"#, ""), Direction::Unknown);
        let callback = r#","command_id":"cb-1""#;
        assert_eq!(
            direction(r#"{"extension":"101"}"#, r#"{"extension":"101"}"#, callback),
            Direction::Outbound
        );
    }

    #[test]
    fn leg_and_call_dispositions() {
        assert_eq!(leg_disposition(1111), Some(Disposition::NoAnswer));
        assert_eq!(leg_disposition(1122), Some(Disposition::Rejected));
        assert_eq!(leg_disposition(1182), Some(Disposition::Cancelled));
        assert_eq!(leg_disposition(2240), Some(Disposition::Failed));
        assert_eq!(leg_disposition(1100), None);
        assert_eq!(call_disposition(Some(1), None, Some(1110)), Some(Disposition::Answered));
        assert_eq!(call_disposition(None, Some(1_793_530_720), None), Some(Disposition::Answered));
        assert_eq!(call_disposition(Some(0), Some(0), Some(1110)), Some(Disposition::Cancelled));
        assert_eq!(call_disposition(Some(0), None, Some(1121)), Some(Disposition::Busy));
        assert_eq!(call_disposition(Some(0), None, Some(1120)), Some(Disposition::Rejected));
        assert_eq!(call_disposition(Some(0), None, Some(1163)), Some(Disposition::NoAnswer));
        assert_eq!(call_disposition(Some(0), None, Some(1131)), Some(Disposition::Failed));
        assert_eq!(call_disposition(Some(0), None, None), Some(Disposition::NoAnswer));
        assert_eq!(call_disposition(None, None, None), None);
        assert_eq!(hangup_cause(Some(9999)).as_deref(), Some("9999"));
    }

    #[test]
    fn summary_is_the_calls_final_hangup() {
        let json = r#"{"entry_id":"E1","call_direction":1,"from":{"number":"79161234567"},"to":{"extension":"101","number":"sip:101@vpbx400123456.mangosip.ru"},"line_number":"74951234567","create_time":1793530700,"forward_time":1793530705,"talk_time":1793530712,"end_time":1793530800,"entry_result":1,"disconnect_reason":1110}"#;
        let e = one("/events/summary", json);
        assert_eq!((e.kind, e.leg_id.as_ref()), (EventKind::Hangup, None));
        assert_eq!(e.direction, Direction::Inbound);
        assert_eq!(e.disposition, Some(Disposition::Answered));
        assert_eq!(e.agent_extension.as_deref(), Some("101"));
        assert_eq!(e164(&e.to_e164), Some("+74951234567"), "an inbound call's number is its line");
        assert_eq!(e.occurred_at.timestamp(), 1_793_530_800);
        assert_eq!(e.hangup_cause.as_deref(), Some("1110 ended by the caller"));
        let out = r#"{"entry_id":"E2","call_direction":2,"from":{"extension":"101","number":"74951234567"},"to":{"number":"79161234567"},"create_time":1793530700,"forward_time":1793530700,"talk_time":0,"end_time":1793530730,"entry_result":0,"disconnect_reason":1121}"#;
        let e = one("/events/summary", out);
        assert_eq!((e.direction, e.disposition), (Direction::Outbound, Some(Disposition::Busy)));
        assert_eq!(e.agent_extension.as_deref(), Some("101"));
        assert_eq!(e164(&e.to_e164), Some("+79161234567"));
    }

    #[test]
    fn recordings_are_announced_once() {
        let completed = r#"{"recording_id":"MToxMDA3MTYxNTo3NjQ0NDQ0NjE6MA==","recording_state":"Completed","seq":2,"entry_id":"E1","call_id":"L2","extension":"101","timestamp":1793530801,"completion_code":1000,"recipient":"Cloud"}"#;
        let e = one("/events/recording", completed);
        assert_eq!(e.kind, EventKind::Recording);
        assert_eq!(e.recording_id.as_deref(), Some("MToxMDA3MTYxNTo3NjQ0NDQ0NjE6MA=="));
        assert_eq!((leg(&e), e.agent_extension.as_deref()), (Some("L2"), Some("101")));
        let added = r#"{"entry_id":"E1","product_id":400123456,"user_id":100500,"recording_id":"MToxMDA3MTYxNTo3NjQ0NDQ0NjE6MA==","timestamp":1793530830}"#;
        let a = one("/events/record/added", added);
        assert_eq!((a.kind, a.leg_id.as_ref()), (EventKind::Recording, None));
        assert_eq!(a.event_id, e.event_id, "one recording, one event");
        for skipped in [
            completed.replace("Completed", "Started"),
            completed.replace("1000", "4002"),
            completed.replace("Cloud", "Mail"),
        ] {
            assert!(events("/events/recording", &skipped).is_empty(), "{skipped}");
        }
    }

    #[test]
    fn other_documented_events_are_valid_but_empty() {
        for path in
            ["/events/dtmf", "/events/sms", "/events/record/tagged", "/result/callback", "/result/stat"]
        {
            assert!(events(path, r#"{"entry_id":"E1","dtmf":"1"}"#).is_empty(), "{path}");
        }
    }

    #[test]
    fn retries_share_ids_and_different_events_do_not() {
        assert_eq!(one("/events/call", APPEARED).event_id, one("/events/call", APPEARED).event_id);
        let next = APPEARED.replace("\"seq\":1", "\"seq\":2").replace("\"ivr\"", "\"queue\"");
        assert_ne!(one("/events/call", APPEARED).event_id, one("/events/call", &next).event_id);
    }

    #[test]
    fn bad_input_names_the_field() {
        for (subpath, json, expected) in [
            ("/events/call", r#"{"call_id":"L","call_state":"Appeared"}"#, "entry_id"),
            ("/events/call", r#"{"entry_id":"E","call_id":"L"}"#, "call_state is missing"),
            ("/events/call", r#"{"entry_id":"E","call_state":"Exploded"}"#, "Exploded"),
            ("/events/call", r#"{"entry_id":"","call_state":"Appeared"}"#, "entry_id"),
            ("/events/summary", r#"{"end_time":1793530800}"#, "entry_id"),
            ("/events/recording", r#"{"entry_id":"E","recording_id":"R"}"#, "recording_state"),
            ("/events/record/added", r#"{"entry_id":"E"}"#, "recording_id"),
            ("/events/call", "[1]", "json: not a JSON object"),
            ("/events/call", "{oops", "json: not JSON"),
            ("/events/unknown", "{}", "not a Mango event path"),
        ] {
            let error = Mango.normalize(&raw(subpath, json)).expect_err(json);
            assert!(error.0.contains(expected), "{subpath} {json}: {error}");
        }
    }

    #[test]
    fn ingress_check_knows_the_paths_and_finds_the_entry() {
        let check = |subpath: &str, content_type: &str, body: &str| {
            Mango.check(&Request { subpath, ..request("POST", None, Some(content_type), body.as_bytes()) })
        };
        let body = form(APPEARED, KEY, APPEARED_SIGN);
        assert_eq!(check("/events/call", FORM, &body), Ok(Some("MTAxNjg5NDI1Mzg=".into())));
        assert_eq!(check("/events/call/", FORM, &body), Ok(Some("MTAxNjg5NDI1Mzg=".into())));
        assert!(matches!(check("/events/nothing", FORM, &body), Err(Rejection::Malformed(_))));
        assert!(matches!(check("", FORM, &body), Err(Rejection::Malformed(_))));
        assert!(matches!(check("/events/call", JSON, &body), Err(Rejection::UnsupportedMediaType(_))));
        assert!(matches!(check("/events/call", FORM, "sign=x"), Err(Rejection::Malformed(_))));
        assert!(matches!(check("/events/call", FORM, &form("{}", KEY, "x")), Err(Rejection::Malformed(_))));
        assert!(matches!(check("/events/call", FORM, &form("nope", KEY, "x")), Err(Rejection::Malformed(_))));
        assert_eq!(
            check("/result/callback", FORM, &form(r#"{"command_id":"c","result":1000}"#, KEY, "x")),
            Ok(None)
        );
        assert_eq!(Mango.reply("raw-1"), Reply::empty_ok());
    }
}
