//! Aircall webhooks.
//!
//! Aircall posts `application/json` envelopes `{resource, event, timestamp, token, data}`:
//! `timestamp` is the Unix time of the event, `token` the webhook's token and `data` the object
//! the event is about. Only `resource: "call"` is about calls; everything else (`user`,
//! `contact`, `number`, `message`...) is valid and gives no event. The call object fields used:
//! `id` (the call id), `direction` (`inbound`/`outbound`), `raw_digits` (the external party,
//! formatted like `+33 6 12 34 56 78`, or `anonymous`), `number.digits` (the company line),
//! `user` (the agent: `id`, `email`; Aircall has no extensions), `answered_at`, `ended_at`,
//! `missed_call_reason`, `hangup_cause`, `voicemail` and `recording` (URLs, which expire),
//! and `transferred_by`/`transferred_to` (users).
//!
//! Authentication: Aircall does not sign its requests; the body's `token` must equal the
//! source's `signing_secret` (compared in constant time). Missing or different is a 401. The
//! reply is Switchboard's default; Aircall only needs a 2xx within 5 s. Once authenticated, the
//! token's value is replaced by `"[redacted]"` in the body the raw record keeps (every top-level
//! `token` member, the rest of the JSON byte for byte), so that the credential is never on the
//! raw or dead-letter topic; nothing below reads `token`, so event ids do not change.
//!
//! Mapping: `call.created` is the call ringing; `call.ringing_on_agent` is a `Ringing` leg per
//! agent (`user-<user.id>`); `call.agent_declined` ends that agent's leg as `Rejected`;
//! `call.answered` is `Answered` on the answering agent's leg for inbound calls (so that a
//! transfer shows who answered when), and on the call for outbound ones (the callee answered;
//! the user placed the call). `call.transferred` (our choice, Aircall does not define legs) ends
//! the leg of `transferred_by` (a `Hangup`, cause `transferred`, the leg having been answered)
//! and starts a `Ringing` leg for `transferred_to` when it is a user; `call.external_transferred`
//! ends the transferring agent's leg the same way (the external number is not an agent leg).
//! `call.hungup` (immediate) and `call.ended` (about 30 s later, with final data) are both call
//! `Hangup`s, the latter at `data.ended_at`; their disposition is `Voicemail` when a voicemail was
//! left, `Answered` when `answered_at` is set, else from `missed_call_reason`
//! (`agents_did_not_answer`, `no_available_agent`, `out_of_opening_hours` and other reasons →
//! `NoAnswer`; `abandoned_in_ivr`, `abandoned_in_classic`, `short_abandoned` → `Cancelled`).
//! `call.voicemail_left` is a `Hangup` with the `Voicemail` disposition. A `data.recording` URL
//! (and a `data.voicemail` URL) gives a `Recording` event, one per call and kind of recording
//! whichever event carries it first. Other call events (`call.hold`, `call.tagged`,
//! `call.commented`, `call.unsuccessful_transfer`...) give no event. Agent legs still open when
//! the call hangs up end with the call; the call log closes them.
//!
//! Dedupe key: Aircall retries deliver identical envelopes, so a hash of (`event`, `data.id`,
//! `timestamp`) plus the agent it concerns (`data.user.id`, `transferred_to.id`): a ring group
//! rings several agents in the same second, which without the agent would collide. Each event of
//! one envelope adds its kind and leg; recordings hash (call id, recording kind) only.

use std::borrow::Cow;
use std::ops::Range;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use switchboard_model::{CallEvent, Direction, Disposition, EventKind, LegId, RawWebhook};

use crate::auth::{self, AuthFailure, SourceAuth};
use crate::{Adapter, AdapterError, Rejection, Request, support};

#[derive(Debug)]
pub struct Aircall;

/// `data.<name>` as an object, when it is one.
fn object<'a>(data: &'a Map<String, Value>, name: &str) -> Option<&'a Map<String, Value>> {
    data.get(name).and_then(Value::as_object)
}

/// An agent's leg id: `user-<id>`.
fn user_leg(user: Option<&Map<String, Value>>) -> Result<Option<LegId>, AdapterError> {
    match user.and_then(|u| support::json_id(u.get("id"))) {
        Some(id) => support::leg_id(Some(&format!("user-{id}")), "user.id"),
        None => Ok(None),
    }
}

fn missed_disposition(reason: &str) -> Disposition {
    match reason {
        "abandoned_in_ivr" | "abandoned_in_classic" | "short_abandoned" => Disposition::Cancelled,
        // agents_did_not_answer, no_available_agent, out_of_opening_hours and any new reason:
        // nobody took the call.
        _ => Disposition::NoAnswer,
    }
}

/// How the call ended, from the final data.
fn hangup_disposition(data: &Map<String, Value>) -> Disposition {
    if support::url(support::json_str(data, "voicemail")).is_some() {
        Disposition::Voicemail
    } else if data.get("answered_at").is_some_and(|v| !v.is_null()) {
        Disposition::Answered
    } else {
        support::json_str(data, "missed_call_reason").map_or(Disposition::NoAnswer, missed_disposition)
    }
}

/// A Unix time (seconds) in the envelope or the call object.
fn unix(value: Option<&Value>) -> Option<String> {
    support::json_id(value)
}

/// What one envelope is about, read once.
struct Envelope<'a> {
    raw: &'a RawWebhook,
    event: &'a str,
    data: &'a Map<String, Value>,
    call_id: switchboard_model::CallId,
    base_id: String,
    occurred_at: DateTime<Utc>,
    direction: Direction,
    region: switchboard_model::Region,
}

impl Envelope<'_> {
    /// An event with the call's numbers and direction; `tag` tells apart the events of one envelope.
    fn event(&self, kind: EventKind, tag: &str, leg: Option<LegId>) -> Result<CallEvent, AdapterError> {
        let id = support::event_id(format!("{}:{}:{tag}", self.base_id, kind.as_str()))?;
        let mut event = CallEvent::new(self.raw, id, self.call_id.clone(), kind, self.occurred_at);
        event.leg_id = leg;
        event.direction = self.direction;
        let external = support::json_str(self.data, "raw_digits");
        let line = object(self.data, "number").and_then(|n| support::json_str(n, "digits"));
        let (from, to) = match self.direction {
            Direction::Outbound => (line, external),
            _ => (external, line),
        };
        support::set_numbers(&mut event, from, to, self.region);
        Ok(event)
    }

    fn with_agent(mut event: CallEvent, user: Option<&Map<String, Value>>) -> CallEvent {
        event.agent_email = user.and_then(|u| support::json_str(u, "email")).map(support::clip);
        event
    }

    fn recordings(&self) -> Result<Vec<CallEvent>, AdapterError> {
        let mut events = Vec::new();
        for name in ["recording", "voicemail"] {
            if let Some(url) = support::url(support::json_str(self.data, name)) {
                let id = support::stable_text_id(&["aircall", self.call_id.as_str(), name]);
                let mut event = CallEvent::new(
                    self.raw,
                    support::event_id(id)?,
                    self.call_id.clone(),
                    EventKind::Recording,
                    self.occurred_at,
                );
                event.direction = self.direction;
                event.recording_url = Some(url);
                events.push(event);
            }
        }
        Ok(events)
    }

    fn hangup_cause(&self) -> Option<String> {
        support::json_str(self.data, "hangup_cause")
            .or_else(|| support::json_str(self.data, "missed_call_reason"))
            .map(support::clip)
    }

    fn events(&self) -> Result<Vec<CallEvent>, AdapterError> {
        let user = object(self.data, "user");
        let mut events = Vec::new();
        match self.event {
            "call.created" => {
                events.push(Self::with_agent(self.event(EventKind::Ringing, "call", None)?, user));
            }
            "call.ringing_on_agent" => {
                let leg = user_leg(user)?;
                events.push(Self::with_agent(self.event(EventKind::Ringing, "agent", leg)?, user));
            }
            "call.agent_declined" => {
                let mut event =
                    Self::with_agent(self.event(EventKind::Hangup, "agent", user_leg(user)?)?, user);
                event.disposition = Some(Disposition::Rejected);
                event.hangup_cause = Some("agent_declined".into());
                events.push(event);
            }
            "call.answered" => {
                let leg = if self.direction == Direction::Outbound { None } else { user_leg(user)? };
                events.push(Self::with_agent(self.event(EventKind::Answered, "call", leg)?, user));
            }
            "call.transferred" | "call.external_transferred" => {
                let by = object(self.data, "transferred_by").or(user);
                let mut ended = Self::with_agent(self.event(EventKind::Hangup, "from", user_leg(by)?)?, by);
                ended.disposition = Some(Disposition::Answered);
                ended.hangup_cause = Some(self.event.trim_start_matches("call.").to_owned());
                events.push(ended);
                let to = object(self.data, "transferred_to");
                if self.event == "call.transferred"
                    && let Some(leg) = user_leg(to)?
                {
                    events.push(Self::with_agent(self.event(EventKind::Ringing, "to", Some(leg))?, to));
                }
            }
            "call.hungup" | "call.ended" => {
                let mut event = Self::with_agent(self.event(EventKind::Hangup, "call", None)?, user);
                event.disposition = Some(hangup_disposition(self.data));
                event.hangup_cause = self.hangup_cause();
                events.push(event);
            }
            "call.voicemail_left" => {
                let mut event = Self::with_agent(self.event(EventKind::Hangup, "call", None)?, user);
                event.disposition = Some(Disposition::Voicemail);
                event.hangup_cause = Some("voicemail_left".into());
                event.recording_url = support::url(support::json_str(self.data, "voicemail"));
                events.push(event);
            }
            "call.comm_assets_generated" => {}
            // Holds, tags, comments, assignments, failed transfers: not a change of call state.
            _ => return Ok(vec![]),
        }
        events.extend(self.recordings()?);
        Ok(events)
    }
}

/// The envelope member that carries the webhook's token.
const TOKEN_FIELD: &str = "token";

/// What the stored body says in place of the token.
pub const REDACTED: &str = "[redacted]";

/// The envelope with the value of every top-level `token` member replaced by [`REDACTED`].
/// The rest keeps its bytes where the body can be scanned (always, for the JSON Aircall sends);
/// otherwise the parsed envelope is written out again. A body that is not a JSON object has no
/// token to hide and is kept as it is.
fn redact_token(body: &[u8]) -> Cow<'_, [u8]> {
    let Ok(mut envelope) = support::json_object(body) else {
        return Cow::Borrowed(body);
    };
    if !envelope.contains_key(TOKEN_FIELD) {
        return Cow::Borrowed(body);
    }
    let _ = envelope.insert(TOKEN_FIELD.into(), Value::String(REDACTED.into()));
    if let Some(spans) = member_values(body, TOKEN_FIELD) {
        let replacement = format!("\"{REDACTED}\"");
        let mut out = Vec::with_capacity(body.len());
        let mut copied = 0;
        for span in spans {
            out.extend_from_slice(body.get(copied..span.start).unwrap_or_default());
            out.extend_from_slice(replacement.as_bytes());
            copied = span.end;
        }
        out.extend_from_slice(body.get(copied..).unwrap_or_default());
        // The scan is checked against the parser: the normalizer must read exactly the envelope
        // it would have read, token aside.
        if support::json_object(&out).is_ok_and(|redacted| redacted == envelope) {
            return Cow::Owned(out);
        }
    }
    serde_json::to_vec(&Value::Object(envelope)).map_or(Cow::Borrowed(body), Cow::Owned)
}

/// The byte ranges of the values of the top-level members of a JSON object named `name` (by
/// their decoded name, as the parser compares them), in order; `None` when `body` cannot be
/// scanned as one JSON object.
fn member_values(body: &[u8], name: &str) -> Option<Vec<Range<usize>>> {
    let mut at = skip_space(body, 0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(body, at + 1);
    let mut found = Vec::new();
    if body.get(at) == Some(&b'}') {
        return Some(found);
    }
    loop {
        let key_end = string_end(body, at)?;
        let key: String = serde_json::from_slice(body.get(at..key_end)?).ok()?;
        at = skip_space(body, key_end);
        if body.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_space(body, at + 1);
        let value_end = value_end(body, value_start)?;
        if key == name {
            found.push(value_start..value_end);
        }
        at = skip_space(body, value_end);
        match body.get(at) {
            Some(b',') => at = skip_space(body, at + 1),
            Some(b'}') => return Some(found),
            _ => return None,
        }
    }
}

fn skip_space(body: &[u8], mut at: usize) -> usize {
    while body.get(at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Where the JSON string starting at `at` (its opening quote) ends: just past its closing quote.
fn string_end(body: &[u8], at: usize) -> Option<usize> {
    if body.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match body.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Where the JSON value starting at `at` ends.
fn value_end(body: &[u8], at: usize) -> Option<usize> {
    match body.get(at)? {
        b'"' => string_end(body, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match body.get(i)? {
                    b'"' => {
                        i = string_end(body, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        // A number, `true`, `false` or `null`: up to the next delimiter.
        _ => {
            let rest = body.get(at..)?;
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(rest.len());
            (len > 0).then_some(at + len)
        }
    }
}

fn data_call_id(envelope: &Map<String, Value>) -> Option<String> {
    envelope.get("data").and_then(Value::as_object).and_then(|d| support::json_id(d.get("id")))
}

impl Adapter for Aircall {
    /// The credential is in (or signs) the body.
    fn authenticates_without_body(&self) -> bool {
        false
    }

    fn authenticate(&self, request: &Request<'_>, source: &SourceAuth<'_>) -> Result<(), AuthFailure> {
        let secret = source.signing_secret()?;
        let envelope = support::json_object(request.body).map_err(|_| AuthFailure::Missing)?;
        let token = envelope.get("token").and_then(Value::as_str).ok_or(AuthFailure::Missing)?;
        auth::ct_eq(token.as_bytes(), secret.as_bytes()).then_some(()).ok_or(AuthFailure::Wrong)
    }

    fn stored_body<'a>(&self, request: &Request<'a>) -> Cow<'a, [u8]> {
        redact_token(request.body)
    }

    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        let envelope = support::json_request(request)?;
        if envelope.get("resource").and_then(Value::as_str) != Some("call") {
            return Ok(None);
        }
        data_call_id(&envelope).map(Some).ok_or_else(|| Rejection::Malformed("data.id is missing".into()))
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let envelope = support::json_object(&raw.body)
            .map_err(|e| AdapterError::new(format!("body is not an Aircall webhook: {e}")))?;
        match envelope.get("resource").and_then(Value::as_str) {
            Some("call") => {}
            Some(_) => return Ok(vec![]),
            None => return Err(AdapterError::new("resource is missing")),
        }
        let event = envelope
            .get("event")
            .and_then(Value::as_str)
            .ok_or_else(|| AdapterError::new("event is missing"))?;
        let data = envelope
            .get("data")
            .and_then(Value::as_object)
            .ok_or_else(|| AdapterError::new("data is missing or not an object"))?;
        let call_id = support::call_id(support::json_id(data.get("id")).as_deref(), "data.id")?;
        let timestamp = unix(envelope.get("timestamp"));
        let tz = support::timezone(raw);
        let mut occurred_at = support::time_or_received(timestamp.as_deref(), tz, raw.received_at);
        if event == "call.ended"
            && let Some(ended) = unix(data.get("ended_at"))
        {
            occurred_at = support::time_or_received(Some(&ended), tz, occurred_at);
        }
        let direction = match support::json_str(data, "direction") {
            Some("inbound") => Direction::Inbound,
            Some("outbound") => Direction::Outbound,
            _ => Direction::Unknown,
        };
        let user_id = object(data, "user").and_then(|u| support::json_id(u.get("id"))).unwrap_or_default();
        let to_id =
            object(data, "transferred_to").and_then(|u| support::json_id(u.get("id"))).unwrap_or_default();
        let base_id = support::stable_text_id(&[
            "aircall",
            event,
            call_id.as_str(),
            timestamp.as_deref().unwrap_or(""),
            &user_id,
            &to_id,
        ]);
        let envelope = Envelope {
            raw,
            event,
            data,
            call_id,
            base_id,
            occurred_at,
            direction,
            region: support::region(raw)?,
        };
        envelope.events()
    }
}

#[cfg(test)]
mod tests {
    use switchboard_model::Vendor;

    use super::*;
    use crate::SourceSettings;
    use crate::test_support::{self, JSON, request, signed_source};

    const TOKEN: &str = "45f1b7ac3c1e4a0bb3a9c2d7e8f60a12";

    fn raw(body: &str) -> RawWebhook {
        RawWebhook {
            default_region: "FR".into(),
            received_at: test_support::at(1_793_527_200),
            ..test_support::json_raw(Vendor::Aircall, body)
        }
    }

    fn envelope(event: &str, data: &str) -> String {
        format!(
            r#"{{"resource": "call", "event": "{event}", "timestamp": 1793527100, "token": "{TOKEN}", "data": {data}}}"#
        )
    }

    const INBOUND: &str = r#""id": 812, "direction": "inbound", "raw_digits": "+33 6 12 34 56 78",
        "number": {"id": 1, "digits": "+33 1 86 95 00 00"}"#;

    fn events(event: &str, extra: &str) -> Vec<CallEvent> {
        let data = format!("{{{INBOUND}{extra}}}");
        Aircall.normalize(&raw(&envelope(event, &data))).expect("valid")
    }

    #[test]
    fn authenticates_with_the_body_token() {
        let settings = SourceSettings::default();
        let run = |secret: Option<&str>, body: &str| {
            let request = request("POST", None, Some(JSON), body.as_bytes());
            Aircall.authenticate(&request, &signed_source(secret, &settings))
        };
        let good = envelope("call.created", r#"{"id": 1}"#);
        assert_eq!(run(Some(TOKEN), &good), Ok(()));
        assert_eq!(run(Some("another-token"), &good), Err(AuthFailure::Wrong));
        assert_eq!(run(None, &good), Err(AuthFailure::NotConfigured("signing_secret")));
        assert_eq!(run(Some(TOKEN), r#"{"resource": "call", "data": {"id": 1}}"#), Err(AuthFailure::Missing));
        assert_eq!(run(Some(TOKEN), "not json"), Err(AuthFailure::Missing));
    }

    #[test]
    fn the_stored_body_hides_the_token_and_keeps_the_event_ids() {
        let data = format!(r#"{{{INBOUND}, "user": {{"id": 7}}, "recording": "https://rec.aircall.io/1"}}"#);
        let original = envelope("call.ended", &data);
        let stored = Aircall.stored_body(&request("POST", None, Some(JSON), original.as_bytes()));
        let stored = std::str::from_utf8(&stored).expect("text");
        assert!(!stored.contains(TOKEN), "{stored}");
        // Byte for byte but for the token's value.
        assert_eq!(stored, original.replace(TOKEN, REDACTED));
        let ids = |body: &str| -> Vec<String> {
            Aircall.normalize(&raw(body)).expect("valid").iter().map(|e| e.event_id.to_string()).collect()
        };
        assert_eq!(ids(stored), ids(&original), "a redacted delivery is the same events");
        assert_eq!(ids(stored).len(), 2);
    }

    #[test]
    fn redaction_finds_every_top_level_token_however_it_is_written() {
        let redact =
            |body: &str| String::from_utf8(redact_token(body.as_bytes()).into_owned()).expect("text");
        // Escaped names and values, nested `token`s (not the credential), duplicates, odd spacing.
        let body = "{ \"data\" : {\"token\": \"keep\", \"list\": [1, \"}\", {\"a\": null}]},\n\
                    \"t\\u006fken\":\"S\\\"1\", \"n\": -1.5e3 , \"token\" : true }";
        let redacted = redact(body);
        assert_eq!(
            redacted,
            body.replace("\"S\\\"1\"", "\"[redacted]\"").replace(": true }", ": \"[redacted]\" }")
        );
        assert!(redacted.contains(r#""token": "keep""#), "only the envelope's token goes");
        // Nothing to hide: the very same bytes.
        for body in [r#"{"resource": "user"}"#, "not json", "[]", ""] {
            assert!(matches!(redact_token(body.as_bytes()), Cow::Borrowed(_)), "{body}");
        }
    }

    #[test]
    fn maps_the_call_object() {
        let created = events("call.created", "");
        let event = &created[0];
        assert_eq!((event.kind, event.leg_id.clone()), (EventKind::Ringing, None));
        assert_eq!(event.call_id.as_str(), "812");
        assert_eq!(event.direction, Direction::Inbound);
        assert_eq!(event.from_e164.as_ref().map(|n| n.as_str()), Some("+33612345678"));
        assert_eq!(event.from_raw.as_deref(), Some("+33 6 12 34 56 78"));
        assert_eq!(event.to_e164.as_ref().map(|n| n.as_str()), Some("+33186950000"));
        assert_eq!(event.occurred_at.timestamp(), 1_793_527_100);

        let outbound = Aircall
            .normalize(&raw(&envelope(
                "call.answered",
                r#"{"id": 9, "direction": "outbound", "raw_digits": "+33 6 12 34 56 78",
                    "number": {"digits": "+33 1 86 95 00 00"}, "user": {"id": 7, "email": "ann@example.fr"}}"#,
            )))
            .expect("valid");
        assert_eq!(outbound[0].kind, EventKind::Answered);
        assert_eq!(outbound[0].leg_id, None, "the callee answered, not an agent leg");
        assert_eq!(outbound[0].from_e164.as_ref().map(|n| n.as_str()), Some("+33186950000"));
        assert_eq!(outbound[0].agent_email.as_deref(), Some("ann@example.fr"));
    }

    #[test]
    fn agent_legs_and_transfers() {
        let user = r#", "user": {"id": 7, "email": "ann@example.fr"}"#;
        let ringing = events("call.ringing_on_agent", user);
        assert_eq!(ringing[0].kind, EventKind::Ringing);
        assert_eq!(ringing[0].leg_id.as_ref().map(|l| l.as_str()), Some("user-7"));
        assert_eq!(ringing[0].agent_email.as_deref(), Some("ann@example.fr"));
        let declined = events("call.agent_declined", user);
        assert_eq!(
            (declined[0].kind, declined[0].disposition),
            (EventKind::Hangup, Some(Disposition::Rejected))
        );
        assert_eq!(declined[0].leg_id.as_ref().map(|l| l.as_str()), Some("user-7"));
        let answered = events("call.answered", user);
        assert_eq!(answered[0].leg_id.as_ref().map(|l| l.as_str()), Some("user-7"));

        let other = r#", "user": {"id": 8, "email": "bob@example.fr"}"#;
        assert_ne!(events("call.ringing_on_agent", other)[0].event_id, ringing[0].event_id, "same second");

        let transfer = events(
            "call.transferred",
            r#", "transferred_by": {"id": 7, "email": "ann@example.fr"},
               "transferred_to": {"id": 8, "email": "bob@example.fr"}"#,
        );
        assert_eq!(transfer.len(), 2);
        assert_eq!(
            (transfer[0].kind, transfer[0].hangup_cause.as_deref()),
            (EventKind::Hangup, Some("transferred"))
        );
        assert_eq!(transfer[0].leg_id.as_ref().map(|l| l.as_str()), Some("user-7"));
        assert_eq!(transfer[1].kind, EventKind::Ringing);
        assert_eq!(transfer[1].leg_id.as_ref().map(|l| l.as_str()), Some("user-8"));
        assert_eq!(transfer[1].agent_email.as_deref(), Some("bob@example.fr"));
    }

    #[test]
    fn hangup_dispositions() {
        let cases = [
            (r#", "answered_at": 1793527000"#, Disposition::Answered),
            (
                r#", "answered_at": null, "missed_call_reason": "agents_did_not_answer""#,
                Disposition::NoAnswer,
            ),
            (r#", "missed_call_reason": "no_available_agent""#, Disposition::NoAnswer),
            (r#", "missed_call_reason": "out_of_opening_hours""#, Disposition::NoAnswer),
            (r#", "missed_call_reason": "abandoned_in_ivr""#, Disposition::Cancelled),
            (r#", "missed_call_reason": "abandoned_in_classic""#, Disposition::Cancelled),
            (r#", "missed_call_reason": "short_abandoned""#, Disposition::Cancelled),
            (
                r#", "missed_call_reason": "agents_did_not_answer", "voicemail": "https://v.aircall.io/1""#,
                Disposition::Voicemail,
            ),
            ("", Disposition::NoAnswer),
        ];
        for (extra, disposition) in cases {
            let found = events("call.hungup", extra);
            assert_eq!(
                (found[0].kind, found[0].disposition),
                (EventKind::Hangup, Some(disposition)),
                "{extra}"
            );
        }
        let ended = events("call.ended", r#", "ended_at": 1793527090, "answered_at": 1793527000"#);
        assert_eq!(ended[0].occurred_at.timestamp(), 1_793_527_090, "call.ended is dated by ended_at");
        let voicemail = events("call.voicemail_left", r#", "voicemail": "https://v.aircall.io/1""#);
        assert_eq!(voicemail[0].disposition, Some(Disposition::Voicemail));
        assert_eq!(voicemail[1].kind, EventKind::Recording);
    }

    #[test]
    fn recordings_are_one_event_per_call() {
        let ended =
            events("call.ended", r#", "answered_at": 1, "recording": "https://rec.aircall.io/812?sig=a""#);
        assert_eq!(ended.len(), 2);
        assert_eq!(ended[1].kind, EventKind::Recording);
        assert_eq!(ended[1].recording_url.as_deref(), Some("https://rec.aircall.io/812?sig=a"));
        let again =
            events("call.comm_assets_generated", r#", "recording": "https://rec.aircall.io/812?sig=b""#);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].event_id, ended[1].event_id);
    }

    #[test]
    fn other_resources_and_events_give_nothing() {
        let user = r#"{"resource": "user", "event": "user.connected", "timestamp": 1, "token": "t", "data": {"id": 7}}"#;
        assert_eq!(Aircall.normalize(&raw(user)), Ok(vec![]));
        assert_eq!(events("call.tagged", ""), vec![]);
    }

    #[test]
    fn retries_have_the_same_ids() {
        assert_eq!(events("call.hungup", "")[0].event_id, events("call.hungup", "")[0].event_id);
        assert_ne!(events("call.hungup", "")[0].event_id, events("call.ended", "")[0].event_id);
    }

    #[test]
    fn bad_envelopes_name_the_field() {
        for (body, field) in [
            (r#"{"event": "call.created", "data": {"id": 1}}"#, "resource"),
            (r#"{"resource": "call", "data": {"id": 1}}"#, "event"),
            (r#"{"resource": "call", "event": "call.created"}"#, "data"),
            (r#"{"resource": "call", "event": "call.created", "data": {"direction": "inbound"}}"#, "data.id"),
            ("[]", "not a JSON object"),
        ] {
            let error = Aircall.normalize(&raw(body)).expect_err(body);
            assert!(error.0.contains(field), "{body}: {error}");
        }
    }

    #[test]
    fn ingress_check() {
        let check = |content_type: &str, body: &str| {
            Aircall.check(&request("POST", None, Some(content_type), body.as_bytes()))
        };
        assert_eq!(check(JSON, &envelope("call.created", r#"{"id": 812}"#)), Ok(Some("812".into())));
        assert_eq!(check(JSON, r#"{"resource": "contact", "data": {"id": 3}}"#), Ok(None));
        assert!(matches!(check(JSON, &envelope("call.created", "{}")), Err(Rejection::Malformed(_))));
        assert!(matches!(check(JSON, "{"), Err(Rejection::Malformed(_))));
        assert!(matches!(check("text/plain", "{}"), Err(Rejection::UnsupportedMediaType(_))));
    }
}
