//! Vendor adapters: everything Switchboard knows about one PBX's or contact centre's webhooks.
//!
//! Inputs: an HTTP request as ingress received it ([`Request`]) and, later, the same request as a
//! stored [`RawWebhook`]. Outputs: at ingress, a yes/no on the vendor's own authentication, the
//! call id that keys the raw record, and the exact answer the vendor expects; in the normalizer,
//! zero or more [`CallEvent`]s in the vendor-neutral model. Adapters are pure functions of their
//! input, with no I/O and no clock (the receive time is in the raw record), so a replayed raw topic
//! normalises to exactly the same events with the same dedupe keys.
//!
//! Every adapter must be total: any bytes give events, a [`Rejection`] (4xx while the PBX is still
//! listening) or an [`AdapterError`] (a dead letter with the reason), never a panic. The fuzz
//! targets under `fuzz/` hold them to that.
//!
//! # Adding a vendor
//! 1. A variant in `Vendor` (`libs/model`), with its name in `Vendor::ALL` and `as_str`.
//! 2. A module here implementing [`Adapter`]: `check` and `normalize` at least; `methods`,
//!    `authenticate`, `handshake` and `reply` where the vendor differs from the defaults (POST,
//!    HTTP Basic or a `token` query parameter, no handshake, `202` with JSON). Its unit tests
//!    build their raw records and requests with `test_support`.
//! 3. An arm in [`adapter_for`], and a line in `fuzz/fuzz_targets/` (`fuzz/README.md`).
//! 4. Fixtures: `tests/fixtures/<vendor>/*.json` (format in `tests/fixtures/README.md`), whole
//!    calls with the events they must normalise to. They run here (`tests/fixtures.rs`) and end
//!    to end through the real pipeline (`tests/vendors.rs` in `switchboard-tests`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use switchboard_model::{CallEvent, RawWebhook, Vendor};

pub mod auth;
pub mod support;
#[cfg(test)]
pub(crate) mod test_support;

pub mod aircall;
pub mod asterisk;
pub mod axialys;
pub mod chronicall;
pub mod generic;
pub mod intermedia;
pub mod mango;
pub mod net2phone;
pub mod onlinepbx;
pub mod sipuni;
pub mod telphin;
pub mod twilio;
pub mod ucontact;
pub mod zadarma;

pub use auth::{AuthFailure, SourceAuth, SourceSettings};

/// Where sources post: `POST /v1/webhooks/{source_id}[/vendor/sub/path]`.
pub const WEBHOOK_PATH_PREFIX: &str = "/v1/webhooks/";

/// Why ingress refuses a request outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Answered with 415.
    #[error("unsupported content type {0:?}")]
    UnsupportedMediaType(String),
    /// Answered with 400.
    #[error("malformed body: {0}")]
    Malformed(String),
}

/// Why the normalizer could not read a raw webhook; it goes to the dead-letter topic with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AdapterError(pub String);

impl AdapterError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// One webhook request, as ingress sees it or as the raw record kept it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Upper-case HTTP method.
    pub method: &'a str,
    /// The path after `/v1/webhooks/{source_id}`: empty, or a vendor's own suffix such as Mango's
    /// `/events/call`.
    pub subpath: &'a str,
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// Lower-case header names. At ingress this includes `authorization`; a raw record never does.
    pub headers: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The request a raw record was made from.
    pub fn from_raw(raw: &'a RawWebhook) -> Self {
        let after_prefix = raw.path.strip_prefix(WEBHOOK_PATH_PREFIX).unwrap_or("");
        let subpath = after_prefix.strip_prefix(raw.source_id.as_str()).unwrap_or("");
        Self {
            method: &raw.method,
            subpath,
            query: raw.query.as_deref(),
            content_type: raw.content_type.as_deref(),
            headers: &raw.headers,
            body: &raw.body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The media type of the `Content-Type` header, lower-cased, without parameters.
    pub fn media_type(&self) -> String {
        media_type(self.content_type)
    }
}

/// What ingress answers once the record is stored: the vendor's expected reply, so that it never
/// decides the endpoint is broken and disables it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Reply {
    /// Switchboard's default: `202 {"id": ..., "status": "accepted"}`.
    pub fn accepted_json(raw_id: &str) -> Self {
        let body = serde_json::json!({ "id": raw_id, "status": "accepted" });
        Self { status: 202, content_type: Some("application/json"), body: body.to_string().into_bytes() }
    }

    /// `200` with no body, which vendors that ignore the answer (Telphin, Twilio) accept.
    pub fn empty_ok() -> Self {
        Self { status: 200, content_type: None, body: Vec::new() }
    }

    pub fn json_ok(value: &serde_json::Value) -> Self {
        Self { status: 200, content_type: Some("application/json"), body: value.to_string().into_bytes() }
    }

    pub fn text_ok(text: impl Into<String>) -> Self {
        Self { status: 200, content_type: Some("text/plain"), body: text.into().into_bytes() }
    }
}

pub trait Adapter: Send + Sync {
    /// The HTTP methods the vendor sends webhooks with; anything else is a 405.
    fn methods(&self) -> &'static [&'static str] {
        &["POST"]
    }

    /// Answers a vendor's URL-validation request (Zadarma's `zd_echo`) before authentication;
    /// such a request is never published.
    fn handshake(&self, _request: &Request<'_>) -> Option<Reply> {
        None
    }

    /// Checks the vendor's own proof that the request is genuine, in constant time. The default
    /// is the source's generated secret as an HTTP Basic password or a `token` query parameter.
    fn authenticate(&self, request: &Request<'_>, source: &SourceAuth<'_>) -> Result<(), AuthFailure> {
        auth::basic_or_token(request, source)
    }

    /// Whether [`Adapter::authenticate`] looks only at the headers and the query, so that ingress
    /// can refuse a wrong credential before it reads (and buffers) the body. True for the default
    /// scheme; a vendor that signs or carries its credential in the body says false.
    fn authenticates_without_body(&self) -> bool {
        true
    }

    /// Checks a request at ingress and returns the vendor's call id when it names one, which
    /// becomes the partition key. Must be cheap: it runs while the PBX waits.
    fn check(&self, request: &Request<'_>) -> Result<Option<String>, Rejection>;

    /// The body as the raw record keeps it, once the request is authenticated: byte for byte by
    /// default. A vendor whose credential travels inside the body (Aircall's `token`) redacts it
    /// here, so that the secret reaches neither the raw nor the dead-letter topic. Whatever is
    /// returned must normalise to the same events, with the same event ids, as the original.
    fn stored_body<'a>(&self, request: &Request<'a>) -> Cow<'a, [u8]> {
        Cow::Borrowed(request.body)
    }

    /// The answer once the raw record is stored.
    fn reply(&self, raw_id: &str) -> Reply {
        Reply::accepted_json(raw_id)
    }

    /// Reads a raw webhook into call events. `Ok(vec![])` means "valid, but about no call" (an
    /// agent logging in, a tag added): counted by the normalizer, not dead-lettered.
    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError>;
}

/// What ingress does with a request whose source is known and whose body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer at once (a vendor's URL validation); nothing is published.
    Handshake(Reply),
    /// Publish the request keyed by this call id (the source alone when `None`), then answer
    /// with the adapter's [`Adapter::reply`].
    Publish {
        call_id: Option<String>,
    },
    MethodNotAllowed,
    Unauthorized(AuthFailure),
    Rejected(Rejection),
}

/// The checks every webhook passes before it is published, in order: a handshake is answered
/// first (vendors send it unsigned), then the method, the vendor's authentication (plus the URL
/// token when the source sets `require_token`), and the adapter's cheap check of the body.
/// Ingress and the fixture tests both go through here.
pub fn decide(adapter: &dyn Adapter, request: &Request<'_>, source: &SourceAuth<'_>) -> Decision {
    if let Some(reply) = adapter.handshake(request) {
        return Decision::Handshake(reply);
    }
    if !adapter.methods().contains(&request.method) {
        return Decision::MethodNotAllowed;
    }
    // Both checks always run, so the answer's timing does not tell which one failed.
    let vendor = adapter.authenticate(request, source);
    let token = auth::required_token(request, source);
    if let Err(failure) = vendor.and(token) {
        return Decision::Unauthorized(failure);
    }
    match adapter.check(request) {
        Ok(call_id) => Decision::Publish { call_id },
        Err(rejection) => Decision::Rejected(rejection),
    }
}

/// The checks [`decide`] makes that need no body: for a vendor whose credential is in the headers
/// or the query, a request sent with an allowed method is authenticated before its body is read.
/// `None` when they cannot be made yet (the body is needed, or another answer comes first).
pub fn authenticate_head(
    adapter: &dyn Adapter,
    request: &Request<'_>,
    source: &SourceAuth<'_>,
) -> Option<Result<(), AuthFailure>> {
    if !adapter.authenticates_without_body() || !adapter.methods().contains(&request.method) {
        return None;
    }
    let vendor = adapter.authenticate(request, source);
    let token = auth::required_token(request, source);
    Some(vendor.and(token))
}

/// The adapter that reads `vendor`'s webhooks.
pub fn adapter_for(vendor: Vendor) -> &'static dyn Adapter {
    match vendor {
        Vendor::Generic => &generic::GenericJson,
        Vendor::Telphin => &telphin::Telphin,
        Vendor::Twilio => &twilio::Twilio,
        Vendor::Zadarma => &zadarma::Zadarma,
        Vendor::Aircall => &aircall::Aircall,
        Vendor::Intermedia => &intermedia::Intermedia,
        Vendor::Chronicall => &chronicall::Chronicall,
        Vendor::Axialys => &axialys::Axialys,
        Vendor::Ucontact => &ucontact::Ucontact,
        Vendor::Net2phone => &net2phone::Net2phone,
        Vendor::Mango => &mango::Mango,
        Vendor::Sipuni => &sipuni::Sipuni,
        Vendor::Onlinepbx => &onlinepbx::Onlinepbx,
        Vendor::Asterisk => &asterisk::Asterisk,
    }
}

/// The media type of a `Content-Type` header, lower-cased, without parameters.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A dedupe key for a webhook that carries no event id of its own: the same bytes from the same
/// source are the same event, which is exactly what a PBX retry sends.
pub fn body_hash_event_id(body: &[u8]) -> String {
    support::stable_id(&[body])
}
