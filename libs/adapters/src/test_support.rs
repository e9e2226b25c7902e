//! Inputs the adapters' unit tests build: raw records and ingress requests as ingress would make
//! them, so that each test states only what its vendor sends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use switchboard_model::{CallEvent, LegId, PhoneNumber, RawWebhook, SourceId, Vendor};

use crate::auth::SourceAuth;
use crate::{Request, SourceSettings, WEBHOOK_PATH_PREFIX};

/// The source every test record comes from.
pub(crate) const SOURCE: &str = "acme";

/// The default receive time, 2026-11-01T10:05:00Z.
pub(crate) const RECEIVED: i64 = 1_793_527_500;

pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

pub(crate) const JSON: &str = "application/json";

/// A `Request` borrows its headers; most tests send none.
static NO_HEADERS: BTreeMap<String, String> = BTreeMap::new();

/// Unix seconds as a time.
pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).expect("valid")
}

/// A raw record of [`SOURCE`] received at [`RECEIVED`], region `US`, no time zone and no
/// headers; a test sets its vendor's region, zone, time or path with struct update syntax.
pub(crate) fn raw(
    vendor: Vendor,
    method: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> RawWebhook {
    RawWebhook {
        id: "raw-1".into(),
        source_id: SourceId::parse(SOURCE).expect("valid"),
        vendor,
        default_region: "US".into(),
        timezone: None,
        received_at: at(RECEIVED),
        remote_addr: None,
        method: method.into(),
        path: format!("{WEBHOOK_PATH_PREFIX}{SOURCE}"),
        query: query.map(Into::into),
        content_type: content_type.map(Into::into),
        headers: BTreeMap::new(),
        body: body.as_bytes().to_vec(),
    }
}

/// A raw record of a vendor that sends its fields as a form: in the body of a POST, in the
/// query of a GET.
pub(crate) fn form_raw(vendor: Vendor, method: &str, query: Option<&str>, body: &str) -> RawWebhook {
    raw(vendor, method, query, (method == "POST").then_some(FORM), body)
}

/// A raw record of a vendor that POSTs a JSON body.
pub(crate) fn json_raw(vendor: Vendor, body: &str) -> RawWebhook {
    raw(vendor, "POST", None, Some(JSON), body)
}

/// A request to the source's own URL, without headers; a test adds a sub-path or headers with
/// struct update syntax.
pub(crate) fn request<'a>(
    method: &'a str,
    query: Option<&'a str>,
    content_type: Option<&'a str>,
    body: &'a [u8],
) -> Request<'a> {
    Request { method, subpath: "", query, content_type, headers: &NO_HEADERS, body }
}

/// What ingress knows of a source whose vendor signs its requests: the generated secret is never
/// looked at, only `signing_secret` and `settings`.
pub(crate) fn signed_source<'a>(
    signing_secret: Option<&'a str>,
    settings: &'a SourceSettings,
) -> SourceAuth<'a> {
    static UNUSED_SECRET_SHA256: [u8; 32] = [0; 32];
    SourceAuth { source_id: SOURCE, secret_sha256: &UNUSED_SECRET_SHA256, signing_secret, settings }
}

pub(crate) fn e164(number: &Option<PhoneNumber>) -> Option<&str> {
    number.as_ref().map(PhoneNumber::as_str)
}

pub(crate) fn leg(event: &CallEvent) -> Option<&str> {
    event.leg_id.as_ref().map(LegId::as_str)
}
