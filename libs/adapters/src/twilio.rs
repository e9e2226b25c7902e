//! Twilio Programmable Voice status callbacks and recording status callbacks.
//!
//! Twilio posts `application/x-www-form-urlencoded` forms (or, when a callback is configured with
//! `GET`, the same fields in the query). Call status callbacks carry `CallSid`, `ParentCallSid`
//! (on the child legs a `<Dial>` creates), `CallStatus` (`queued`, `initiated`, `ringing`,
//! `in-progress`, `completed`, `busy`, `failed`, `no-answer`, `canceled`), `Direction`
//! (`inbound`, `outbound-api`, `outbound-dial`), `From`, `To`, `SequenceNumber`, `Timestamp`
//! (RFC 2822) and `CallbackSource`; recording status callbacks carry `RecordingSid`,
//! `RecordingUrl`, `RecordingStatus` and the `CallSid` of the recorded call. Products that post
//! JSON put the hex SHA-256 of the body in a `bodySHA256` query parameter; such a body is read as
//! the same fields (its top-level string, number and boolean values).
//!
//! Authentication is Twilio's `X-Twilio-Signature`, checked the way Twilio's helper libraries
//! (twilio-python `RequestValidator`) check it: base64 of HMAC-SHA1, keyed with the account's
//! auth token (the source's `signing_secret`), over the URL Twilio was given followed by every
//! form parameter sorted by name, each name immediately followed by its value (repeated names:
//! their distinct values sorted). The URL is the source's `public_url` setting (what Twilio was
//! configured with; behind a proxy ingress cannot see it) plus the request's sub-path plus `?`
//! and the query as received; like the helper libraries, the URL is accepted with and without
//! its port (`:443` for https, `:80` for http, the default Twilio may or may not have included).
//! When the query has `bodySHA256` the signature covers the URL only and the hex SHA-256 of the
//! raw body must equal it; a body that is neither a form nor covered by `bodySHA256` is not
//! signed, so a JSON body without `bodySHA256` is refused. Twilio ignores the answer to a status
//! callback: it gets an empty `200`.
//!
//! Calls and legs: the call id is `ParentCallSid` when present, else `CallSid`, so every leg a
//! `<Dial>` creates belongs to the caller's call; a child leg's own `CallSid` is its leg id.
//! `queued`/`initiated`/`ringing` are `Ringing`, `in-progress` is `Answered`, and the final
//! statuses are a `Hangup` whose disposition is `completed` → answered, `busy`, `no-answer`,
//! `canceled` → cancelled, `failed`. One exception, a documented Twilio behaviour: the parent of
//! an *inbound* call goes `in-progress` as soon as Twilio starts executing the TwiML, before any
//! person answers, and ends `completed` even when no `<Dial>` child was answered. So for an
//! inbound parent `in-progress` is `Ringing` (the caller reached the IVR/queue) and `completed`
//! is a hangup with no disposition: whether a person answered is told by the child legs, and an
//! inbound call whose children all ended `no-answer` is a missed call. A child leg reports
//! `Direction=outbound-dial`, which says nothing about the call, so its events have an unknown
//! direction; its `To` (the phone, client or SIP user it rang: the agent in the usual inbound
//! pattern) is the event's agent number, and its numbers are not the call's, so `from`/`to` are
//! only set from parent callbacks. A status callback with `RecordingUrl` (calls created with
//! `Record=true`) also gives a `Recording` event; a recording status callback gives a
//! `Recording` event when `RecordingStatus=completed` and nothing otherwise (`in-progress`,
//! `absent`, `failed`).
//!
//! Dedupe key: a hash of `CallSid`, `CallStatus`, `SequenceNumber`, `CallbackSource` and
//! `RecordingSid`, with the kind appended, so the two events of one request differ. Only signed
//! content goes into it (the form body, the query of a GET, a JSON body through `bodySHA256`):
//! the `I-Twilio-Idempotency-Token` header is not signed, so an id taken from it would let a
//! replay with a new header value be stored as a new event.

use switchboard_model::{CallEvent, Direction, Disposition, EventKind, RawWebhook};

use crate::auth::{self, AuthFailure, SourceAuth};
use crate::support::{self, Fields};
use crate::{Adapter, AdapterError, Rejection, Reply, Request};

#[derive(Debug)]
pub struct Twilio;

const SIGNATURE_HEADER: &str = "x-twilio-signature";
const BODY_HASH_PARAM: &str = "bodySHA256";
const FORM: &str = "application/x-www-form-urlencoded";

/// How the request carries its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// A form body (POST) or none (GET, fields in the query).
    Form,
    Json,
    /// Anything else: refused with 415 at ingress.
    Other,
}

fn body_kind(method: &str, media: &str) -> Body {
    if method == "GET" || media == FORM {
        Body::Form
    } else if media == "application/json" || media.ends_with("+json") {
        Body::Json
    } else {
        Body::Other
    }
}

/// The callback's fields in order: the body's (form or JSON: unlike [`Fields::from_request`], a
/// JSON body's top-level values are fields too), then the query's (a GET callback's fields; the
/// `token` and `bodySHA256` parameters are not fields).
fn params(request: &Request<'_>) -> Result<Fields, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    match body_kind(request.method, &request.media_type()) {
        Body::Form if request.method != "GET" => {
            pairs.extend(form_urlencoded::parse(request.body).into_owned())
        }
        Body::Json => {
            for (name, value) in support::json_object(request.body)? {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    _ => continue,
                };
                pairs.push((name, text));
            }
        }
        _ => {}
    }
    if let Some(query) = request.query {
        pairs.extend(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .filter(|(k, _)| k != auth::TOKEN_PARAM && k != BODY_HASH_PARAM),
        );
    }
    Ok(Fields::from(pairs))
}

/// The text Twilio signs: the URL, then each parameter name followed by its value, names sorted,
/// each name's distinct values sorted (as twilio-python's `compute_signature` does).
fn signed_text(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut text = url.to_owned();
    for (name, value) in sorted {
        text.push_str(name);
        text.push_str(value);
    }
    text
}

/// The URL with its port and without it, the two forms Twilio's helper libraries accept: an
/// explicit port is removed, a missing one is added (443 for https, 80 otherwise).
fn url_variants(url: &str) -> [String; 2] {
    let Some((scheme, rest)) = url.split_once("://") else {
        return [url.to_owned(), url.to_owned()];
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    // An IPv6 literal's colons are inside its brackets.
    let port_colon = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].find(':').map(|i| bracket + i),
        None => host_port.rfind(':'),
    };
    let (host, has_port) = match port_colon {
        Some(colon) => (&host_port[..colon], true),
        None => (host_port, false),
    };
    let without = format!("{scheme}://{userinfo}{host}{tail}");
    let with = if has_port {
        url.to_owned()
    } else {
        let port = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
        format!("{scheme}://{userinfo}{host}:{port}{tail}")
    };
    [with, without]
}

fn signature_matches(secret: &str, text: &str, signature: &str) -> bool {
    let expected = auth::base64(&auth::hmac_sha1(secret.as_bytes(), text.as_bytes()));
    auth::ct_eq(expected.as_bytes(), signature.trim().as_bytes())
}

/// The child leg's status, or a parent's, as an event kind and a hangup disposition.
fn status_kind(status: &str, inbound_parent: bool) -> Result<(EventKind, Option<Disposition>), AdapterError> {
    Ok(match status.to_ascii_lowercase().as_str() {
        "queued" | "initiated" | "ringing" => (EventKind::Ringing, None),
        // An inbound parent is "in progress" once Twilio runs its TwiML, not once a person answers.
        "in-progress" if inbound_parent => (EventKind::Ringing, None),
        "in-progress" | "answered" => (EventKind::Answered, None),
        "completed" if inbound_parent => (EventKind::Hangup, None),
        "completed" => (EventKind::Hangup, Some(Disposition::Answered)),
        "busy" => (EventKind::Hangup, Some(Disposition::Busy)),
        "no-answer" => (EventKind::Hangup, Some(Disposition::NoAnswer)),
        "canceled" => (EventKind::Hangup, Some(Disposition::Cancelled)),
        "failed" => (EventKind::Hangup, Some(Disposition::Failed)),
        other => {
            return Err(AdapterError::new(format!(
                "CallStatus {other:?} is not one of queued, initiated, ringing, in-progress, completed, \
                 busy, no-answer, canceled, failed"
            )));
        }
    })
}

fn direction(text: Option<&str>) -> Direction {
    match text.map(str::to_ascii_lowercase).as_deref() {
        Some("inbound") => Direction::Inbound,
        Some(d) if d.starts_with("outbound-api") => Direction::Outbound,
        // `outbound-dial` is a child leg: its direction is not the call's.
        _ => Direction::Unknown,
    }
}

impl Adapter for Twilio {
    fn methods(&self) -> &'static [&'static str] {
        &["POST", "GET"]
    }

    /// The credential is in (or signs) the body.
    fn authenticates_without_body(&self) -> bool {
        false
    }

    fn authenticate(&self, request: &Request<'_>, source: &SourceAuth<'_>) -> Result<(), AuthFailure> {
        let secret = source.signing_secret()?;
        let public_url = source
            .settings
            .public_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or(AuthFailure::NotConfigured("public_url"))?;
        let signature = request.header(SIGNATURE_HEADER).ok_or(AuthFailure::Missing)?;
        let mut url = format!("{public_url}{}", request.subpath);
        if let Some(query) = request.query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(query);
        }
        let body_hash = auth::query_param(request.query, BODY_HASH_PARAM);
        let params: Vec<(String, String)> = match &body_hash {
            // The body is covered by its hash, the hash by the URL.
            Some(hash) => {
                let actual = auth::sha256_hex(request.body);
                if !auth::ct_eq(actual.as_bytes(), hash.trim().to_ascii_lowercase().as_bytes()) {
                    return Err(AuthFailure::Wrong);
                }
                Vec::new()
            }
            None if request.method != "GET" && request.media_type() == FORM => {
                form_urlencoded::parse(request.body).into_owned().collect()
            }
            // A JSON body is only authentic through `bodySHA256`.
            None if body_kind(request.method, &request.media_type()) == Body::Json => {
                return Err(AuthFailure::Wrong);
            }
            None => Vec::new(),
        };
        let valid = url_variants(&url).iter().fold(false, |ok, candidate| {
            ok | signature_matches(secret, &signed_text(candidate, &params), signature)
        });
        valid.then_some(()).ok_or(AuthFailure::Wrong)
    }

    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection> {
        let media = request.media_type();
        if body_kind(request.method, &media) == Body::Other {
            return Err(Rejection::UnsupportedMediaType(media));
        }
        let params = params(request).map_err(Rejection::Malformed)?;
        let call_sid =
            params.get("CallSid").ok_or_else(|| Rejection::Malformed("CallSid is missing".into()))?;
        Ok(Some(params.get("ParentCallSid").unwrap_or(call_sid).to_owned()))
    }

    fn reply(&self, _raw_id: &str) -> Reply {
        Reply::empty_ok()
    }

    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        let params = params(&Request::from_raw(raw))
            .map_err(|e| AdapterError::new(format!("body is not a Twilio callback: {e}")))?;
        let region = support::region(raw)?;
        let call_sid = params.get("CallSid");
        let parent_sid = params.get("ParentCallSid");
        let call_id = support::call_id(parent_sid.or(call_sid), "CallSid")?;
        let leg_id = match parent_sid {
            Some(_) => support::leg_id(call_sid, "CallSid")?,
            None => None,
        };
        let occurred_at = support::time_or_received(params.get("Timestamp"), chrono_tz::UTC, raw.received_at);
        let sequence = params.get("SequenceNumber").and_then(|s| s.parse::<i64>().ok());
        let recording_sid = params.get("RecordingSid");
        let recording_status = params.get("RecordingStatus");
        let call_status = params.get("CallStatus");

        // Signed fields only (the module doc says why the idempotency header is not one of them).
        let base_id = support::stable_text_id(&[
            "twilio",
            call_sid.unwrap_or(""),
            call_status.unwrap_or(""),
            params.get("SequenceNumber").unwrap_or(""),
            params.get("CallbackSource").unwrap_or(""),
            recording_sid.unwrap_or(""),
        ]);
        let event = |kind: EventKind| -> Result<CallEvent, AdapterError> {
            let id = support::event_id(format!("{base_id}:{}", kind.as_str()))?;
            let mut event = CallEvent::new(raw, id, call_id.clone(), kind, occurred_at);
            event.leg_id = leg_id.clone();
            event.sequence = sequence;
            Ok(event)
        };
        let recording = |event: &mut CallEvent| {
            event.recording_url = support::url(params.get("RecordingUrl"));
            event.recording_id = recording_sid.map(support::clip);
        };

        // A recording status callback.
        if let Some(status) = recording_status {
            if !status.eq_ignore_ascii_case("completed") {
                return Ok(vec![]);
            }
            let mut found = event(EventKind::Recording)?;
            recording(&mut found);
            if found.recording_url.is_none() && found.recording_id.is_none() {
                return Err(AdapterError::new("RecordingUrl and RecordingSid are missing"));
            }
            return Ok(vec![found]);
        }

        let status = call_status.ok_or_else(|| AdapterError::new("CallStatus is missing"))?;
        let direction_text = params.get("Direction");
        let inbound_parent = parent_sid.is_none() && direction(direction_text) == Direction::Inbound;
        let (kind, disposition) = status_kind(status, inbound_parent)?;
        let mut main = event(kind)?;
        main.direction = direction(direction_text);
        if parent_sid.is_some() {
            main.agent_number = params.get("To").map(support::clip);
        } else {
            support::set_numbers(&mut main, params.get("From"), params.get("To"), region);
        }
        if kind == EventKind::Hangup {
            main.disposition = disposition;
            main.hangup_cause = Some(support::clip(status));
        }
        let mut events = vec![main];
        // Calls created with `Record=true` report their recording with the final status.
        if kind == EventKind::Hangup && (params.get("RecordingUrl").is_some() || recording_sid.is_some()) {
            let mut found = event(EventKind::Recording)?;
            recording(&mut found);
            found.direction = direction(direction_text);
            events.push(found);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchboard_model::Vendor;

    use super::*;
    use crate::SourceSettings;
    use crate::test_support::{self, JSON, request, signed_source};

    const TOKEN: &str = "12345";

    /// The example of Twilio's "Webhooks security" page: the expected signature is the one Twilio
    /// documents for these parameters, URL and auth token.
    fn documented_params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn form(params: &[(String, String)]) -> String {
        form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish()
    }

    fn settings(url: &str) -> SourceSettings {
        SourceSettings { public_url: Some(url.into()), ..SourceSettings::default() }
    }

    fn authenticate(
        settings: &SourceSettings,
        secret: Option<&str>,
        subpath: &str,
        query: Option<&str>,
        content_type: &str,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<(), AuthFailure> {
        let request = Request { subpath, headers, ..request("POST", query, Some(content_type), body) };
        Twilio.authenticate(&request, &signed_source(secret, settings))
    }

    fn signed(signature: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(SIGNATURE_HEADER.to_owned(), signature.to_owned())])
    }

    #[test]
    fn accepts_the_documented_signature() {
        // Signature from Twilio's documentation; also
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"12345",
        //   b"https://mycompany.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+12349013030Digits1234From+12349013030To+18005551212",
        //   hashlib.sha1).digest()).decode())'
        let signature = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        let body = form(&documented_params());
        let settings = settings("https://mycompany.com/myapp.php");
        let query = Some("foo=1&bar=2");
        let ok = authenticate(&settings, Some(TOKEN), "", query, FORM, &signed(signature), body.as_bytes());
        assert_eq!(ok, Ok(()));
        // The helper libraries also accept the URL with its default port.
        let with_port = settings_with_port();
        let ok = authenticate(&with_port, Some(TOKEN), "", query, FORM, &signed(signature), body.as_bytes());
        assert_eq!(ok, Ok(()));
    }

    fn settings_with_port() -> SourceSettings {
        settings("https://mycompany.com:443/myapp.php")
    }

    #[test]
    fn a_signature_over_the_url_with_its_port_is_accepted_without_it() {
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"12345",
        //   b"https://mycompany.com:443/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+12349013030Digits1234From+12349013030To+18005551212",
        //   hashlib.sha1).digest()).decode())'
        let signature = "EpDEmp1PyjDYp77YxYU3GILBWzE=";
        let body = form(&documented_params());
        let settings = settings("https://mycompany.com/myapp.php");
        let ok = authenticate(
            &settings,
            Some(TOKEN),
            "",
            Some("foo=1&bar=2"),
            FORM,
            &signed(signature),
            body.as_bytes(),
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    fn refuses_tampering_and_missing_configuration() {
        let signature = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        let mut params = documented_params();
        let good = settings("https://mycompany.com/myapp.php");
        let query = Some("foo=1&bar=2");
        let headers = signed(signature);
        if let Some(digits) = params.iter_mut().find(|(k, _)| k == "Digits") {
            digits.1 = "9999".into();
        }
        let tampered = form(&params);
        assert_eq!(
            authenticate(&good, Some(TOKEN), "", query, FORM, &headers, tampered.as_bytes()),
            Err(AuthFailure::Wrong)
        );
        let body = form(&documented_params());
        let body = body.as_bytes();
        assert_eq!(
            authenticate(&good, Some("other"), "", query, FORM, &headers, body),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(
            authenticate(&good, Some(TOKEN), "/x", query, FORM, &headers, body),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(authenticate(&good, Some(TOKEN), "", None, FORM, &headers, body), Err(AuthFailure::Wrong));
        assert_eq!(
            authenticate(&good, Some(TOKEN), "", query, FORM, &BTreeMap::new(), body),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            authenticate(&good, None, "", query, FORM, &headers, body),
            Err(AuthFailure::NotConfigured("signing_secret"))
        );
        assert_eq!(
            authenticate(&SourceSettings::default(), Some(TOKEN), "", query, FORM, &headers, body),
            Err(AuthFailure::NotConfigured("public_url"))
        );
    }

    #[test]
    fn json_bodies_are_covered_by_body_sha256() {
        let body = br#"{"CallSid":"CA1","CallStatus":"completed"}"#;
        let actual = auth::sha256_hex(body);
        // python3 -c 'import hmac,hashlib,base64; u="https://example.com/hook?bodySHA256="+hashlib.sha256(b"{\"CallSid\":\"CA1\",\"CallStatus\":\"completed\"}").hexdigest();
        //   print(u, base64.b64encode(hmac.new(b"12345", u.encode(), hashlib.sha1).digest()).decode())'
        assert_eq!(actual, JSON_BODY_SHA256);
        let settings = settings("https://example.com/hook");
        let query = format!("bodySHA256={JSON_BODY_SHA256}");
        let headers = signed(JSON_SIGNATURE);
        assert_eq!(authenticate(&settings, Some(TOKEN), "", Some(&query), JSON, &headers, body), Ok(()));
        let other = br#"{"CallSid":"CA1","CallStatus":"ringing"}"#;
        assert_eq!(
            authenticate(&settings, Some(TOKEN), "", Some(&query), JSON, &headers, other),
            Err(AuthFailure::Wrong)
        );
        // Without the hash, a JSON body is not signed at all.
        let unsigned = signed("anything");
        assert_eq!(
            authenticate(&settings, Some(TOKEN), "", None, JSON, &unsigned, body),
            Err(AuthFailure::Wrong)
        );
    }

    /// python3 -c 'import hashlib; print(hashlib.sha256(b"{\"CallSid\":\"CA1\",\"CallStatus\":\"completed\"}").hexdigest())'
    const JSON_BODY_SHA256: &str = "a0a5adcb584e9811c4ee5f334feef749f008b3b108d62d5addee051f9731b526";
    const JSON_SIGNATURE: &str = "3nYeUXP1/nfoPCXVItYDRckyAL8=";

    #[test]
    fn url_variants_add_or_remove_the_port() {
        assert_eq!(
            url_variants("https://a.example/p?q=1"),
            ["https://a.example:443/p?q=1".to_owned(), "https://a.example/p?q=1".to_owned()]
        );
        assert_eq!(
            url_variants("http://a.example:8080/p"),
            ["http://a.example:8080/p".to_owned(), "http://a.example/p".to_owned()]
        );
        assert_eq!(
            url_variants("http://u:p@a.example"),
            ["http://u:p@a.example:80".to_owned(), "http://u:p@a.example".to_owned()]
        );
        assert_eq!(
            url_variants("https://[::1]/x"),
            ["https://[::1]:443/x".to_owned(), "https://[::1]/x".to_owned()]
        );
        assert_eq!(url_variants("not a url"), ["not a url".to_owned(), "not a url".to_owned()]);
    }

    fn raw(body: &str, headers: &[(&str, &str)]) -> RawWebhook {
        RawWebhook {
            received_at: test_support::at(1_793_527_200),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..test_support::raw(Vendor::Twilio, "POST", None, Some(FORM), body)
        }
    }

    fn one(body: &str) -> CallEvent {
        let mut events = Twilio.normalize(&raw(body, &[])).expect("valid");
        assert_eq!(events.len(), 1, "{body}");
        events.remove(0)
    }

    #[test]
    fn a_child_leg_belongs_to_the_parent_call() {
        let event = one(
            "CallSid=CAchild&ParentCallSid=CAparent&CallStatus=in-progress&Direction=outbound-dial\
             &From=%2B14155550100&To=%2B14155550199&SequenceNumber=2&Timestamp=Sun%2C+01+Nov+2026+09%3A58%3A10+%2B0000",
        );
        assert_eq!(event.call_id.as_str(), "CAparent");
        assert_eq!(event.leg_id.as_ref().map(|l| l.as_str()), Some("CAchild"));
        assert_eq!(event.kind, EventKind::Answered);
        assert_eq!(event.direction, Direction::Unknown);
        assert_eq!(event.agent_number.as_deref(), Some("+14155550199"));
        assert_eq!(event.from_raw, None, "a child leg's numbers are not the call's");
        assert_eq!(event.sequence, Some(2));
        assert_eq!(event.occurred_at.to_rfc3339(), "2026-11-01T09:58:10+00:00");
    }

    #[test]
    fn parent_statuses_map_by_direction() {
        let inbound = |status: &str| {
            one(&format!(
                "CallSid=CA1&CallStatus={status}&Direction=inbound&From=%2B14155550100&To=%2B14155550123"
            ))
        };
        let answered = inbound("in-progress");
        assert_eq!(answered.kind, EventKind::Ringing, "Twilio runs TwiML; nobody answered yet");
        assert_eq!(answered.direction, Direction::Inbound);
        assert_eq!(answered.from_e164.as_ref().map(|n| n.as_str()), Some("+14155550100"));
        assert_eq!(answered.to_e164.as_ref().map(|n| n.as_str()), Some("+14155550123"));
        assert_eq!(answered.leg_id, None);
        let ended = inbound("completed");
        assert_eq!((ended.kind, ended.disposition), (EventKind::Hangup, None));
        assert_eq!(ended.hangup_cause.as_deref(), Some("completed"));
        assert_eq!(inbound("canceled").disposition, Some(Disposition::Cancelled));

        let outbound = |status: &str| one(&format!("CallSid=CA2&CallStatus={status}&Direction=outbound-api"));
        for (status, kind, disposition) in [
            ("queued", EventKind::Ringing, None),
            ("initiated", EventKind::Ringing, None),
            ("ringing", EventKind::Ringing, None),
            ("in-progress", EventKind::Answered, None),
            ("completed", EventKind::Hangup, Some(Disposition::Answered)),
            ("busy", EventKind::Hangup, Some(Disposition::Busy)),
            ("no-answer", EventKind::Hangup, Some(Disposition::NoAnswer)),
            ("canceled", EventKind::Hangup, Some(Disposition::Cancelled)),
            ("failed", EventKind::Hangup, Some(Disposition::Failed)),
        ] {
            let event = outbound(status);
            assert_eq!((event.kind, event.disposition), (kind, disposition), "{status}");
            assert_eq!(event.direction, Direction::Outbound);
        }
    }

    #[test]
    fn recordings() {
        let event = one(
            "AccountSid=AC1&CallSid=CA1&RecordingSid=RE1&RecordingUrl=https%3A%2F%2Fapi.twilio.com%2Frec%2FRE1\
             &RecordingStatus=completed&RecordingDuration=42",
        );
        assert_eq!(event.kind, EventKind::Recording);
        assert_eq!(event.recording_id.as_deref(), Some("RE1"));
        assert_eq!(event.recording_url.as_deref(), Some("https://api.twilio.com/rec/RE1"));
        let pending = Twilio.normalize(&raw("CallSid=CA1&RecordingSid=RE1&RecordingStatus=in-progress", &[]));
        assert_eq!(pending, Ok(vec![]));
        let both = Twilio
            .normalize(&raw(
                "CallSid=CA1&CallStatus=completed&Direction=outbound-api&RecordingSid=RE2\
                 &RecordingUrl=https%3A%2F%2Fapi.twilio.com%2Frec%2FRE2",
                &[],
            ))
            .expect("valid");
        let kinds: Vec<EventKind> = both.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Hangup, EventKind::Recording]);
        assert_ne!(both[0].event_id, both[1].event_id);
    }

    #[test]
    fn dedupe_keys() {
        let body = "CallSid=CA1&CallStatus=ringing&SequenceNumber=1&CallbackSource=call-progress-events";
        // python3: "sha256:" + hashlib.sha256(b"\x1f".join([b"twilio", b"CA1", b"ringing", b"1",
        //   b"call-progress-events", b""])).hexdigest()[:32] + ":ringing"
        let first = Twilio.normalize(&raw(body, &[])).expect("valid");
        assert_eq!(first[0].event_id.as_str(), "sha256:e6eeca12338ab4b9a276a9c42c427f08:ringing");
        // The unsigned idempotency header is not part of the id: a replay under a new header
        // value is the same event.
        const IDEMPOTENCY_HEADER: &str = "i-twilio-idempotency-token";
        for token in ["0e9a8f2b-token", "replayed-with-another-token", &"t".repeat(300)] {
            let replayed = Twilio.normalize(&raw(body, &[(IDEMPOTENCY_HEADER, token)])).expect("valid");
            assert_eq!(replayed[0].event_id, first[0].event_id, "{token}");
        }
        let a = Twilio.normalize(&raw(body, &[])).expect("valid");
        let b = Twilio.normalize(&raw(body, &[])).expect("valid");
        assert_eq!(a[0].event_id, b[0].event_id);
        let next = Twilio
            .normalize(&raw(
                "CallSid=CA1&CallStatus=ringing&SequenceNumber=2&CallbackSource=call-progress-events",
                &[],
            ))
            .expect("valid");
        assert_ne!(a[0].event_id, next[0].event_id);
    }

    #[test]
    fn bad_callbacks_name_the_field() {
        for (body, field) in [
            ("CallStatus=ringing", "CallSid"),
            ("CallSid=CA1", "CallStatus"),
            ("CallSid=CA1&CallStatus=exploded", "exploded"),
            ("CallSid=CA1&RecordingStatus=completed", "RecordingUrl"),
        ] {
            let error = Twilio.normalize(&raw(body, &[])).expect_err(body);
            assert!(error.0.contains(field), "{body}: {error}");
        }
        let mut json = raw("{not json", &[]);
        json.content_type = Some(JSON.into());
        assert!(Twilio.normalize(&json).expect_err("bad json").0.contains("not JSON"));
    }

    #[test]
    fn ingress_check() {
        let check = |method: &str, content_type: Option<&str>, query: Option<&str>, body: &[u8]| {
            Twilio.check(&request(method, query, content_type, body))
        };
        assert_eq!(check("POST", Some(FORM), None, b"CallSid=CA2&ParentCallSid=CA1"), Ok(Some("CA1".into())));
        assert_eq!(check("GET", None, Some("CallSid=CA3&CallStatus=ringing"), b""), Ok(Some("CA3".into())));
        assert_eq!(check("POST", Some(JSON), None, br#"{"CallSid":"CA4"}"#), Ok(Some("CA4".into())));
        assert!(matches!(
            check("POST", Some(FORM), None, b"CallStatus=ringing"),
            Err(Rejection::Malformed(_))
        ));
        assert!(matches!(check("POST", Some(JSON), None, b"[1]"), Err(Rejection::Malformed(_))));
        assert!(matches!(
            check("POST", Some("text/plain"), None, b"CallSid=CA1"),
            Err(Rejection::UnsupportedMediaType(_))
        ));
        assert_eq!(Twilio.reply("r"), Reply::empty_ok());
    }
}
