//! Zadarma virtual PBX notifications ("API → notifications of calls in the PBX").
//!
//! Zadarma POSTs one `application/x-www-form-urlencoded` form per call event, named by `event`:
//! `NOTIFY_START` (an external call reaches the PBX: `call_start`, `pbx_call_id`, `caller_id`,
//! `called_did`), `NOTIFY_INTERNAL` (the PBX rings an extension: the same plus `internal`),
//! `NOTIFY_ANSWER` (`caller_id`, `destination`, `call_start`, `pbx_call_id`, `internal`),
//! `NOTIFY_END` (the incoming call ends: plus `duration`, `disposition`, `status_code`,
//! `is_recorded`, `call_id_with_rec`), `NOTIFY_OUT_START` / `NOTIFY_OUT_END` (an extension calls
//! out: `internal`, `destination`, ...), `NOTIFY_RECORD` (`call_id_with_rec`, `pbx_call_id`) and
//! `NOTIFY_IVR`; `SMS` and `SPEECH_RECOGNITION` arrive on the same URL.
//!
//! **Authentication** is the official library's (`zadarma/user-api-v1`, `Api::getWebhookEvent`
//! and each `Notify*::getSignatureString`): header `Signature` =
//! `base64(hash_hmac('sha1', data, secret))` with the source's `signing_secret` (the API secret).
//! PHP's `hash_hmac` returns the *lowercase hex digest* by default, so the base64 is of those 40
//! hex characters, not of the 20 raw bytes. `data` is the concatenation of, per event:
//! START / INTERNAL / END / IVR (`NotifyIvr` extends `NotifyStart`): `caller_id`, `called_did`,
//! `call_start`; ANSWER: `caller_id`, `destination`, `call_start`; OUT_START / OUT_END:
//! `internal`, `destination`, `call_start`; RECORD: `pbx_call_id`, `call_id_with_rec`; SMS /
//! SPEECH_RECOGNITION: `result`. Absent fields concatenate as empty text, as PHP does. Values are
//! taken exactly as sent from the body (first occurrence of a name, the same one the mapping reads).
//! An unknown `event` cannot be verified and is refused. Zadarma signs only these few fields;
//! that is the vendor's scheme, and it means that one captured `NOTIFY_START` signs a
//! `NOTIFY_END` (or `NOTIFY_INTERNAL`, `NOTIFY_IVR`) of that call with any `pbx_call_id`,
//! `disposition` or `call_id_with_rec`. A source with `require_token: true` in its settings
//! also needs the source's secret as `?token=` in the notification URL (checked by
//! [`crate::decide`]), which a captured request does not reveal once ingress strips it; that is
//! the recommended set-up (`docs/vendors.md`). URL validation: a `GET` with `?zd_echo=X` is answered `200` with
//! body `X`, unauthenticated and never published, but only for a short value of safe characters
//! (letters, digits, `-`, `_`, `.`), so the endpoint never reflects arbitrary text.
//!
//! **Reply**: an empty `200` (a `NOTIFY_START` answer could reroute the call; Switchboard never does).
//!
//! **Mapping**: call id = `pbx_call_id` ("permanent ID of the external call to the PBX"). The PBX's
//! leg to an extension has leg id = the extension (`internal`, e.g. `101`), so the leg of `101` in
//! one call is the same leg for its ringing and its answer. START → call-level `Ringing`, inbound;
//! INTERNAL → `Ringing` of the extension's leg (`internal` required), inbound; ANSWER →
//! `Answered` of that leg (call-level when `internal` is absent; direction left unknown because the
//! documentation does not say it is sent for incoming calls only); END → call-level `Hangup`,
//! inbound; OUT_START → call-level `Ringing` and OUT_END → call-level `Hangup`, outbound (internal
//! when `destination` is an extension of at most 5 digits); RECORD → `Recording` with
//! recording id = `call_id_with_rec`; IVR, SMS and speech recognition → no events. On hangups
//! `disposition` maps answered → Answered, busy → Busy, cancel → Cancelled, no answer → NoAnswer,
//! failed / no money / unallocated number / no limit / no day limit / line limit → Failed (other
//! text → Unknown); the hangup cause keeps `disposition` and the Q.931 `status_code`;
//! `is_recorded=1` puts `call_id_with_rec` on the hangup as its recording id. The agent extension
//! is `internal`; outbound `from` is `caller_id`, else the extension.
//!
//! **Times**: `call_start` is the call's start in the account's local time (the source's
//! `timezone`), so it is the time of START and OUT_START only; the other notifications carry no
//! time of their own and are sent as they happen, so they take the receive time. Without a
//! configured source time zone `call_start` cannot be placed on the timeline and the receive time is
//! used instead (an assumption: an unconfigured zone would otherwise shift the call by hours).
//!
//! **Dedupe**: Zadarma sends no event id; the key hashes the event name with `pbx_call_id`,
//! `internal`, `destination`, `caller_id`, `called_did`, `call_start`, `disposition`,
//! `status_code`, `duration` and `call_id_with_rec`. A retry gives the same key. A limitation of the
//! format: ringing the same extension twice in one call sends identical notifications, which are
//! then counted once (the leg is ringing either way).

use chrono::{DateTime, Utc};
use switchboard_model::{CallEvent, Direction, Disposition, EventKind, RawWebhook};

use crate::auth::{self, AuthFailure, SourceAuth};
use crate::support::{self, Fields};
use crate::{Adapter, AdapterError, Rejection, Reply, Request};

#[derive(Debug)]
pub struct Zadarma;

/// Vendor tag in dedupe keys.
const TAG: &str = "zadarma";

/// Longest `zd_echo` value echoed back.
const MAX_ECHO: usize = 128;

/// The notifications Zadarma posts to the PBX notification URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notify {
    Start,
    Internal,
    Answer,
    End,
    OutStart,
    OutEnd,
    Record,
    Ivr,
    Sms,
    SpeechRecognition,
}

impl Notify {
    fn parse(event: &str) -> Option<Self> {
        Some(match event {
            "NOTIFY_START" => Self::Start,
            "NOTIFY_INTERNAL" => Self::Internal,
            "NOTIFY_ANSWER" => Self::Answer,
            "NOTIFY_END" => Self::End,
            "NOTIFY_OUT_START" => Self::OutStart,
            "NOTIFY_OUT_END" => Self::OutEnd,
            "NOTIFY_RECORD" => Self::Record,
            "NOTIFY_IVR" => Self::Ivr,
            "SMS" => Self::Sms,
            "SPEECH_RECOGNITION" => Self::SpeechRecognition,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Start => "NOTIFY_START",
            Self::Internal => "NOTIFY_INTERNAL",
            Self::Answer => "NOTIFY_ANSWER",
            Self::End => "NOTIFY_END",
            Self::OutStart => "NOTIFY_OUT_START",
            Self::OutEnd => "NOTIFY_OUT_END",
            Self::Record => "NOTIFY_RECORD",
            Self::Ivr => "NOTIFY_IVR",
            Self::Sms => "SMS",
            Self::SpeechRecognition => "SPEECH_RECOGNITION",
        }
    }

    /// The fields whose values, concatenated in this order, the `Signature` signs.
    fn signed_fields(self) -> &'static [&'static str] {
        match self {
            Self::Start | Self::Internal | Self::End | Self::Ivr => {
                &["caller_id", "called_did", "call_start"]
            }
            Self::Answer => &["caller_id", "destination", "call_start"],
            Self::OutStart | Self::OutEnd => &["internal", "destination", "call_start"],
            Self::Record => &["pbx_call_id", "call_id_with_rec"],
            Self::Sms | Self::SpeechRecognition => &["result"],
        }
    }

    /// Whether the notification is about a PBX call (and so must name `pbx_call_id`).
    fn about_call(self) -> bool {
        !matches!(self, Self::Sms | Self::SpeechRecognition)
    }
}

/// The first value of `name`, trimmed; `None` when absent or blank. Deliberately the occurrence
/// the signature covers ([`Fields::first`]), not the first non-blank one.
fn first<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.first(name).map(str::trim).filter(|v| !v.is_empty())
}

/// `base64(hex(HMAC-SHA1(secret, data)))`, the official library's `encodeSignature`.
fn signature(secret: &str, data: &str) -> String {
    auth::base64(auth::hex(&auth::hmac_sha1(secret.as_bytes(), data.as_bytes())).as_bytes())
}

fn disposition(text: &str) -> Disposition {
    match text.trim().to_ascii_lowercase().as_str() {
        "answered" => Disposition::Answered,
        "busy" => Disposition::Busy,
        "cancel" | "cancelled" | "canceled" => Disposition::Cancelled,
        "no answer" | "noanswer" => Disposition::NoAnswer,
        "failed" | "no money" | "unallocated number" | "no limit" | "no day limit" | "line limit"
        | "no money, no limit" => Disposition::Failed,
        _ => Disposition::Unknown,
    }
}

/// An extension rather than a phone number: Zadarma PBX extensions are 3 digits (up to 5 kept).
fn is_extension(text: &str) -> bool {
    (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// Everything a notification says, read once.
#[derive(Debug)]
struct Notification<'a> {
    notify: Notify,
    pbx_call_id: Option<&'a str>,
    call_start: Option<&'a str>,
    caller_id: Option<&'a str>,
    called_did: Option<&'a str>,
    internal: Option<&'a str>,
    destination: Option<&'a str>,
    duration: Option<&'a str>,
    disposition: Option<&'a str>,
    status_code: Option<&'a str>,
    is_recorded: Option<&'a str>,
    call_id_with_rec: Option<&'a str>,
}

impl<'a> Notification<'a> {
    fn read(fields: &'a Fields) -> Result<Self, AdapterError> {
        let event = first(fields, "event").ok_or_else(|| AdapterError::new("event is missing"))?;
        let notify = Notify::parse(event)
            .ok_or_else(|| AdapterError::new(format!("event {event:?} is not a Zadarma notification")))?;
        Ok(Self {
            notify,
            pbx_call_id: first(fields, "pbx_call_id"),
            call_start: first(fields, "call_start"),
            caller_id: first(fields, "caller_id"),
            called_did: first(fields, "called_did"),
            internal: first(fields, "internal"),
            destination: first(fields, "destination"),
            duration: first(fields, "duration"),
            disposition: first(fields, "disposition"),
            status_code: first(fields, "status_code"),
            is_recorded: first(fields, "is_recorded"),
            call_id_with_rec: first(fields, "call_id_with_rec"),
        })
    }

    fn dedupe_key(&self) -> String {
        fn part(v: Option<&str>) -> &str {
            v.unwrap_or("")
        }
        support::stable_text_id(&[
            TAG,
            self.notify.name(),
            part(self.pbx_call_id),
            part(self.internal),
            part(self.destination),
            part(self.caller_id),
            part(self.called_did),
            part(self.call_start),
            part(self.disposition),
            part(self.status_code),
            part(self.duration),
            part(self.call_id_with_rec),
        ])
    }

    /// `call_start` on the timeline, when the source says which zone it is in.
    fn start_time(&self, raw: &RawWebhook) -> DateTime<Utc> {
        match raw.timezone {
            Some(_) => support::time_or_received(self.call_start, support::timezone(raw), raw.received_at),
            None => raw.received_at,
        }
    }

    fn outbound_direction(&self) -> Direction {
        match self.destination {
            Some(d) if is_extension(d) => Direction::Internal,
            _ => Direction::Outbound,
        }
    }

    fn hangup_cause(&self) -> Option<String> {
        match (self.disposition, self.status_code) {
            (Some(d), Some(code)) => Some(support::clip(&format!("{d} (Q.931 {code})"))),
            (Some(d), None) => Some(support::clip(d)),
            (None, Some(code)) => Some(support::clip(&format!("Q.931 {code}"))),
            (None, None) => None,
        }
    }

    fn set_hangup_fields(&self, event: &mut CallEvent) {
        event.disposition = self.disposition.map(disposition);
        event.hangup_cause = self.hangup_cause();
        if self.is_recorded == Some("1") {
            event.recording_id = self.call_id_with_rec.map(support::clip);
        }
    }
}

impl Adapter for Zadarma {
    fn handshake(&self, request: &Request<'_>) -> Option<Reply> {
        if request.method != "GET" {
            return None;
        }
        let echo = auth::query_param(request.query, "zd_echo")?;
        let safe = !echo.is_empty()
            && echo.len() <= MAX_ECHO
            && echo.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        safe.then(|| Reply::text_ok(echo))
    }

    /// The credential is in (or signs) the body.
    fn authenticates_without_body(&self) -> bool {
        false
    }

    fn authenticate(&self, request: &Request<'_>, source: &SourceAuth<'_>) -> Result<(), AuthFailure> {
        let secret = source.signing_secret()?;
        let given = request.header("signature").map(str::trim).filter(|s| !s.is_empty());
        let given = given.ok_or(AuthFailure::Missing)?;
        // The form as PHP's `$_POST` reads it: the body's fields only.
        let fields = Fields::parse(request.body);
        let event = first(&fields, "event").ok_or(AuthFailure::Missing)?;
        let notify = Notify::parse(event).ok_or(AuthFailure::Wrong)?;
        let data: String =
            notify.signed_fields().iter().map(|name| fields.first(name).unwrap_or("")).collect();
        let expected = signature(secret, &data);
        auth::ct_eq(expected.as_bytes(), given.as_bytes()).then_some(()).ok_or(AuthFailure::Wrong)
    }

    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        support::require_form(request)?;
        let fields = Fields::parse(request.body);
        let event = first(&fields, "event").ok_or_else(|| Rejection::Malformed("event is missing".into()))?;
        let notify = Notify::parse(event).ok_or_else(|| {
            Rejection::Malformed(format!("event {:?} is not a Zadarma notification", support::clip(event)))
        })?;
        match first(&fields, "pbx_call_id") {
            Some(id) => Ok(Some(id.to_owned())),
            None if notify.about_call() => Err(Rejection::Malformed("pbx_call_id is missing".into())),
            None => Ok(None),
        }
    }

    fn reply(&self, _raw_id: &str) -> Reply {
        Reply::empty_ok()
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let fields = Fields::parse(&raw.body);
        let n = Notification::read(&fields)?;
        if matches!(n.notify, Notify::Ivr | Notify::Sms | Notify::SpeechRecognition) {
            return Ok(Vec::new());
        }
        let region = support::region(raw)?;
        let call_id = support::call_id(n.pbx_call_id, "pbx_call_id")?;
        let event_id = support::event_id(n.dedupe_key())?;
        let received = raw.received_at;

        let event = match n.notify {
            Notify::Start => {
                let mut e = CallEvent::new(raw, event_id, call_id, EventKind::Ringing, n.start_time(raw));
                e.direction = Direction::Inbound;
                support::set_numbers(&mut e, n.caller_id, n.called_did, region);
                e
            }
            Notify::Internal => {
                let internal = n.internal.ok_or_else(|| {
                    AdapterError::new("internal is missing (NOTIFY_INTERNAL rings an extension)")
                })?;
                let mut e = CallEvent::new(raw, event_id, call_id, EventKind::Ringing, received);
                e.leg_id = support::leg_id(Some(internal), "internal")?;
                e.direction = Direction::Inbound;
                e.agent_extension = Some(support::clip(internal));
                support::set_numbers(&mut e, n.caller_id, n.called_did, region);
                e
            }
            Notify::Answer => {
                let mut e = CallEvent::new(raw, event_id, call_id, EventKind::Answered, received);
                e.leg_id = support::leg_id(n.internal, "internal")?;
                e.agent_extension = n.internal.map(support::clip);
                support::set_numbers(&mut e, n.caller_id, n.destination, region);
                e
            }
            Notify::End => {
                let mut e = CallEvent::new(raw, event_id, call_id, EventKind::Hangup, received);
                e.direction = Direction::Inbound;
                e.agent_extension = n.internal.map(support::clip);
                support::set_numbers(&mut e, n.caller_id, n.called_did, region);
                n.set_hangup_fields(&mut e);
                e
            }
            Notify::OutStart => {
                let mut e = CallEvent::new(raw, event_id, call_id, EventKind::Ringing, n.start_time(raw));
                e.direction = n.outbound_direction();
                e.agent_extension = n.internal.map(support::clip);
                support::set_numbers(&mut e, n.caller_id.or(n.internal), n.destination, region);
                e
            }
            Notify::OutEnd => {
                let mut e = CallEvent::new(raw, event_id, call_id, EventKind::Hangup, received);
                e.direction = n.outbound_direction();
                e.agent_extension = n.internal.map(support::clip);
                support::set_numbers(&mut e, n.caller_id.or(n.internal), n.destination, region);
                n.set_hangup_fields(&mut e);
                e
            }
            Notify::Record => {
                let recording = n.call_id_with_rec.ok_or_else(|| {
                    AdapterError::new("call_id_with_rec is missing (NOTIFY_RECORD names the recording)")
                })?;
                let mut e = CallEvent::new(raw, event_id, call_id, EventKind::Recording, received);
                e.recording_id = Some(support::clip(recording));
                e
            }
            Notify::Ivr | Notify::Sms | Notify::SpeechRecognition => return Ok(Vec::new()),
        };
        Ok(vec![event])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchboard_model::Vendor;

    use super::*;
    use crate::SourceSettings;
    use crate::test_support::{self, FORM, JSON, e164, leg, request, signed_source};

    const SECRET: &str = "zd-secret";

    fn raw(body: &str, timezone: Option<&str>) -> RawWebhook {
        RawWebhook {
            default_region: "RU".into(),
            timezone: timezone.map(str::to_owned),
            received_at: test_support::at(1_793_532_830),
            ..test_support::raw(Vendor::Zadarma, "POST", None, Some(FORM), body)
        }
    }

    fn one(body: &str) -> CallEvent {
        let events = Zadarma.normalize(&raw(body, Some("Europe/Moscow"))).expect(body);
        assert_eq!(events.len(), 1, "{body}");
        events.into_iter().next().expect("one event")
    }

    #[test]
    fn signatures_match_the_official_library() {
        // python3: base64.b64encode(hmac.new(b"zd-secret", data, hashlib.sha1).hexdigest().encode())
        assert_eq!(
            signature(SECRET, "79161234567749512345672026-11-01 12:00:00"),
            "ZjBlMTcyODkwM2RkMTk1ZWI2NzYxY2FiNDE0M2VlNjUxMmI4NTRkYw=="
        );
        assert_eq!(
            signature(SECRET, "101791612345672026-11-01 12:00:00"),
            "NjEzNWE2OWQxOGIwYzc0YjIwZjE4M2M2YmJlZDFkZmJiYWIyMjIxMg=="
        );
        assert_eq!(
            signature(SECRET, "MTIzNDU2Nzg5MA==1762000000.12345"),
            "YmViOThlNzNjYWJmZjBkZmU1ODIxODE3ZTQ3ZGVlYjI2YWY5ZTYyNA=="
        );
    }

    fn authenticate(body: &str, signature: Option<&str>, secret: Option<&str>) -> Result<(), AuthFailure> {
        let mut headers = BTreeMap::new();
        if let Some(s) = signature {
            let _ = headers.insert("signature".to_owned(), s.to_owned());
        }
        let request = Request { headers: &headers, ..request("POST", None, Some(FORM), body.as_bytes()) };
        Zadarma.authenticate(&request, &signed_source(secret, &SourceSettings::default()))
    }

    #[test]
    fn authentication_signs_the_fields_each_event_names() {
        let start = "event=NOTIFY_START&call_start=2026-11-01+12%3A00%3A00&pbx_call_id=in_1\
                     &caller_id=79161234567&called_did=74951234567";
        let good = "ZjBlMTcyODkwM2RkMTk1ZWI2NzYxY2FiNDE0M2VlNjUxMmI4NTRkYw==";
        assert_eq!(authenticate(start, Some(good), Some(SECRET)), Ok(()));
        assert_eq!(authenticate(start, Some(good), Some("other")), Err(AuthFailure::Wrong));
        assert_eq!(authenticate(start, None, Some(SECRET)), Err(AuthFailure::Missing));
        assert_eq!(authenticate(start, Some(good), None), Err(AuthFailure::NotConfigured("signing_secret")));
        // INTERNAL and END sign the same fields as START.
        let internal = format!("{}&internal=101", start.replacen("NOTIFY_START", "NOTIFY_INTERNAL", 1));
        assert_eq!(authenticate(&internal, Some(good), Some(SECRET)), Ok(()));
        // A changed signed field breaks the signature.
        let forged = start.replacen("79161234567", "79160000000", 1);
        assert_eq!(authenticate(&forged, Some(good), Some(SECRET)), Err(AuthFailure::Wrong));
        // A second, blank-first caller_id cannot replace the signed one.
        let doubled = format!("caller_id=&{start}");
        assert_eq!(authenticate(&doubled, Some(good), Some(SECRET)), Err(AuthFailure::Wrong));
        // OUT_START signs internal + destination + call_start.
        let out = "event=NOTIFY_OUT_START&call_start=2026-11-01+12%3A00%3A00&pbx_call_id=out_1\
                   &internal=101&destination=79161234567";
        let out_sig = "NjEzNWE2OWQxOGIwYzc0YjIwZjE4M2M2YmJlZDFkZmJiYWIyMjIxMg==";
        assert_eq!(authenticate(out, Some(out_sig), Some(SECRET)), Ok(()));
        // RECORD signs pbx_call_id + call_id_with_rec.
        let record = "event=NOTIFY_RECORD&pbx_call_id=MTIzNDU2Nzg5MA%3D%3D&call_id_with_rec=1762000000.12345";
        let record_sig = "YmViOThlNzNjYWJmZjBkZmU1ODIxODE3ZTQ3ZGVlYjI2YWY5ZTYyNA==";
        assert_eq!(authenticate(record, Some(record_sig), Some(SECRET)), Ok(()));
        // Unknown events cannot be verified.
        assert_eq!(authenticate("event=NOTIFY_NEW", Some(good), Some(SECRET)), Err(AuthFailure::Wrong));
        assert_eq!(authenticate("caller_id=1", Some(good), Some(SECRET)), Err(AuthFailure::Missing));
    }

    #[test]
    fn require_token_stops_an_end_forged_from_a_start_signature() {
        use sha2::Digest;
        let start_signature = "ZjBlMTcyODkwM2RkMTk1ZWI2NzYxY2FiNDE0M2VlNjUxMmI4NTRkYw==";
        // The START's signed fields, with what a forger wants: the call ended, recorded.
        let forged_end = "event=NOTIFY_END&call_start=2026-11-01+12%3A00%3A00&pbx_call_id=in_1\
                          &caller_id=79161234567&called_did=74951234567&disposition=answered\
                          &is_recorded=1&call_id_with_rec=1762000000.99999";
        let headers = BTreeMap::from([("signature".to_owned(), start_signature.to_owned())]);
        let secret_sha256: [u8; 32] = sha2::Sha256::digest(b"url-secret").into();
        let decide = |settings: &SourceSettings, query: Option<&str>| {
            let request =
                Request { headers: &headers, ..request("POST", query, Some(FORM), forged_end.as_bytes()) };
            let source =
                SourceAuth { secret_sha256: &secret_sha256, ..signed_source(Some(SECRET), settings) };
            crate::decide(&Zadarma, &request, &source)
        };
        let published = crate::Decision::Publish { call_id: Some("in_1".into()) };
        // The vendor's scheme alone accepts the forgery: the signature covers none of what changed.
        assert_eq!(decide(&SourceSettings::default(), None), published);
        let required = SourceSettings { require_token: Some(true), ..SourceSettings::default() };
        assert_eq!(decide(&required, None), crate::Decision::Unauthorized(AuthFailure::Missing));
        assert_eq!(decide(&required, Some("token=guess")), crate::Decision::Unauthorized(AuthFailure::Wrong));
        // Zadarma itself, posting to the URL with the token, still gets through.
        assert_eq!(decide(&required, Some("token=url-secret")), published);
        // The token does not replace the signature.
        let unsigned = Request {
            headers: &BTreeMap::new(),
            ..request("POST", Some("token=url-secret"), Some(FORM), forged_end.as_bytes())
        };
        let source = SourceAuth { secret_sha256: &secret_sha256, ..signed_source(Some(SECRET), &required) };
        assert_eq!(
            crate::decide(&Zadarma, &unsigned, &source),
            crate::Decision::Unauthorized(AuthFailure::Missing)
        );
    }

    #[test]
    fn the_echo_handshake_answers_only_safe_values_on_get() {
        let handshake =
            |method: &str, query: &str| Zadarma.handshake(&request(method, Some(query), None, b""));
        assert_eq!(handshake("GET", "zd_echo=a1B2-c_3.d"), Some(Reply::text_ok("a1B2-c_3.d")));
        assert_eq!(handshake("GET", "zd_echo=%3Cscript%3E"), None);
        assert_eq!(handshake("GET", "zd_echo="), None);
        assert_eq!(handshake("GET", "other=1"), None);
        assert_eq!(handshake("POST", "zd_echo=abc"), None);
        let long = format!("zd_echo={}", "a".repeat(MAX_ECHO + 1));
        assert_eq!(handshake("GET", &long), None);
    }

    #[test]
    fn start_is_an_inbound_ringing_at_the_local_call_start() {
        let e = one("event=NOTIFY_START&call_start=2026-11-01+13%3A59%3A30&pbx_call_id=in_abc\
                     &caller_id=79161234567&called_did=74951234567");
        assert_eq!(e.call_id.as_str(), "in_abc");
        assert_eq!(e.kind, EventKind::Ringing);
        assert_eq!(e.leg_id, None);
        assert_eq!(e.direction, Direction::Inbound);
        assert_eq!(e164(&e.from_e164), Some("+79161234567"));
        assert_eq!(e164(&e.to_e164), Some("+74951234567"));
        // 13:59:30 in Moscow is 10:59:30 UTC.
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-01T10:59:30+00:00");
        assert!(e.event_id.as_str().starts_with("sha256:"));
    }

    #[test]
    fn without_a_source_time_zone_the_receive_time_is_used() {
        let body = "event=NOTIFY_START&call_start=2026-11-01+13%3A59%3A30&pbx_call_id=in_abc&caller_id=1";
        let raw = raw(body, None);
        let events = Zadarma.normalize(&raw).expect("valid");
        assert_eq!(events[0].occurred_at, raw.received_at);
    }

    #[test]
    fn internal_and_answer_are_the_extension_leg() {
        let ring = one("event=NOTIFY_INTERNAL&call_start=2026-11-01+13%3A59%3A30&pbx_call_id=in_abc\
                        &caller_id=79161234567&called_did=74951234567&internal=101");
        assert_eq!((ring.kind, leg(&ring)), (EventKind::Ringing, Some("101")));
        assert_eq!(ring.agent_extension.as_deref(), Some("101"));
        assert_eq!(ring.direction, Direction::Inbound);
        assert_eq!(
            ring.occurred_at, ring.received_at,
            "only call_start is sent, which is not this event's time"
        );
        let answer = one("event=NOTIFY_ANSWER&caller_id=79161234567&destination=101\
                          &call_start=2026-11-01+13%3A59%3A30&pbx_call_id=in_abc&internal=101");
        assert_eq!((answer.kind, leg(&answer)), (EventKind::Answered, Some("101")));
        assert_eq!(answer.agent_extension.as_deref(), Some("101"));
        assert_eq!(answer.to_raw.as_deref(), Some("101"));
        assert_ne!(ring.event_id, answer.event_id);
        let other_leg = one("event=NOTIFY_INTERNAL&call_start=2026-11-01+13%3A59%3A30&pbx_call_id=in_abc\
                             &caller_id=79161234567&called_did=74951234567&internal=102");
        assert_ne!(ring.event_id, other_leg.event_id);
    }

    #[test]
    fn end_carries_disposition_cause_and_recording() {
        let e = one("event=NOTIFY_END&call_start=2026-11-01+13%3A59%3A30&pbx_call_id=in_abc\
                     &caller_id=79161234567&called_did=74951234567&internal=101&duration=95\
                     &disposition=answered&status_code=16&is_recorded=1&call_id_with_rec=1762000000.12345");
        assert_eq!((e.kind, e.leg_id.as_ref()), (EventKind::Hangup, None));
        assert_eq!(e.disposition, Some(Disposition::Answered));
        assert_eq!(e.hangup_cause.as_deref(), Some("answered (Q.931 16)"));
        assert_eq!(e.recording_id.as_deref(), Some("1762000000.12345"));
        assert_eq!(e.agent_extension.as_deref(), Some("101"));
        let unrecorded = one("event=NOTIFY_END&pbx_call_id=in_abc&disposition=no+answer&is_recorded=0\
                              &call_id_with_rec=1762000000.12345");
        assert_eq!(unrecorded.recording_id, None);
        assert_eq!(unrecorded.disposition, Some(Disposition::NoAnswer));
    }

    #[test]
    fn every_disposition_text() {
        for (text, expected) in [
            ("answered", Disposition::Answered),
            ("busy", Disposition::Busy),
            ("cancel", Disposition::Cancelled),
            ("no answer", Disposition::NoAnswer),
            ("failed", Disposition::Failed),
            ("no money", Disposition::Failed),
            ("unallocated number", Disposition::Failed),
            ("no limit", Disposition::Failed),
            ("no day limit", Disposition::Failed),
            ("line limit", Disposition::Failed),
            ("no money, no limit", Disposition::Failed),
            ("something new", Disposition::Unknown),
        ] {
            assert_eq!(disposition(text), expected, "{text}");
        }
    }

    #[test]
    fn outbound_calls_and_internal_ones() {
        let start = one("event=NOTIFY_OUT_START&call_start=2026-11-01+14%3A10%3A00&pbx_call_id=out_1\
                         &internal=101&destination=79161234567");
        assert_eq!((start.kind, start.direction), (EventKind::Ringing, Direction::Outbound));
        assert_eq!(start.from_raw.as_deref(), Some("101"));
        assert_eq!(e164(&start.to_e164), Some("+79161234567"));
        assert_eq!(start.agent_extension.as_deref(), Some("101"));
        assert_eq!(start.occurred_at.to_rfc3339(), "2026-11-01T11:10:00+00:00");
        let end = one("event=NOTIFY_OUT_END&call_start=2026-11-01+14%3A10%3A00&pbx_call_id=out_1\
                       &caller_id=74951234567&internal=101&destination=79161234567&duration=0\
                       &disposition=busy&status_code=17&is_recorded=0");
        assert_eq!((end.kind, end.direction), (EventKind::Hangup, Direction::Outbound));
        assert_eq!(end.disposition, Some(Disposition::Busy));
        assert_eq!(e164(&end.from_e164), Some("+74951234567"));
        let internal = one("event=NOTIFY_OUT_START&call_start=2026-11-01+14%3A10%3A00&pbx_call_id=out_2\
                            &internal=101&destination=102");
        assert_eq!(internal.direction, Direction::Internal);
    }

    #[test]
    fn record_is_a_recording_event_and_ivr_sms_are_no_events() {
        let e = one("event=NOTIFY_RECORD&call_id_with_rec=1762000000.12345&pbx_call_id=in_abc");
        assert_eq!(e.kind, EventKind::Recording);
        assert_eq!(e.recording_id.as_deref(), Some("1762000000.12345"));
        for body in [
            "event=NOTIFY_IVR&pbx_call_id=in_abc&caller_id=79161234567&called_did=74951234567",
            "event=SMS&caller_id=79161234567&caller_did=74951234567&text=hi&result=x",
            "event=SPEECH_RECOGNITION&pbx_call_id=in_abc&result=x",
        ] {
            assert_eq!(Zadarma.normalize(&raw(body, None)).expect(body), Vec::new(), "{body}");
        }
    }

    #[test]
    fn a_retry_is_the_same_event() {
        let body =
            "event=NOTIFY_END&call_start=2026-11-01+13%3A59%3A30&pbx_call_id=in_abc&disposition=cancel";
        assert_eq!(one(body).event_id, one(body).event_id);
        assert_ne!(one(body).event_id, one(&body.replace("cancel", "busy")).event_id);
    }

    #[test]
    fn bad_input_names_the_field() {
        for (body, expected) in [
            ("pbx_call_id=in_abc", "event is missing"),
            ("event=NOTIFY_BOOM&pbx_call_id=in_abc", "NOTIFY_BOOM"),
            ("event=NOTIFY_START&caller_id=1", "pbx_call_id is missing"),
            ("event=NOTIFY_INTERNAL&pbx_call_id=in_abc", "internal is missing"),
            ("event=NOTIFY_RECORD&pbx_call_id=in_abc", "call_id_with_rec is missing"),
            ("event=NOTIFY_START&pbx_call_id=in%01abc", "pbx_call_id"),
        ] {
            let error = Zadarma.normalize(&raw(body, None)).expect_err(body);
            assert!(error.0.contains(expected), "{body}: {error}");
        }
        let long = format!("event=NOTIFY_ANSWER&pbx_call_id=in_abc&internal={}", "1".repeat(300));
        assert!(Zadarma.normalize(&raw(&long, None)).expect_err("long").0.contains("internal"));
    }

    #[test]
    fn ingress_check_wants_a_form_naming_the_call() {
        let check = |content_type: Option<&'static str>, body: &'static str| {
            Zadarma.check(&request("POST", None, content_type, body.as_bytes()))
        };
        let form = Some(FORM);
        assert_eq!(check(form, "event=NOTIFY_START&pbx_call_id=in_1"), Ok(Some("in_1".into())));
        assert_eq!(check(form, "event=SMS&result=x"), Ok(None));
        assert!(matches!(check(form, "event=NOTIFY_END"), Err(Rejection::Malformed(_))));
        assert!(matches!(check(form, "pbx_call_id=in_1"), Err(Rejection::Malformed(_))));
        assert!(matches!(check(form, "event=WHAT&pbx_call_id=in_1"), Err(Rejection::Malformed(_))));
        assert!(matches!(
            check(Some(JSON), "event=NOTIFY_START&pbx_call_id=in_1"),
            Err(Rejection::UnsupportedMediaType(_))
        ));
        assert_eq!(Zadarma.reply("raw-1"), Reply::empty_ok());
    }
}
