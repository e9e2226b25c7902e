//! Vendor adapters. Each PBX or contact-centre platform gets one module that knows two things:
//!
//! - at ingress, before anything is published: which content types the vendor sends and how to
//!   find the call id in a body cheaply, so that the raw record is keyed by call (and a body
//!   that is obviously broken is refused with a 4xx while the PBX is still listening);
//! - in the normalizer: how to read a raw webhook into zero or more [`CallEvent`]s.
//!
//! Adapters are pure functions of their input: no I/O, no clock (the ingress receive time is in
//! the raw record), so a replayed raw topic normalises to exactly the same events.
//!
//! Adding a vendor: add a variant to `Vendor` in `switchboard-core`, a module here implementing
//! [`Adapter`], an arm in [`adapter_for`], and fixtures under `tests/`.

use switchboard_core::model::{CallEvent, RawWebhook, Vendor};

pub mod generic;

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

pub trait Adapter: Send + Sync {
    /// Checks a request at ingress. Returns the vendor's call id when the body names one, which
    /// becomes the partition key.
    fn check(&self, content_type: Option<&str>, body: &[u8]) -> Result<Option<String>, Rejection>;

    /// Reads a raw webhook into call events.
    fn normalize(&self, raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError>;
}

/// The adapter that reads `vendor`'s webhooks.
pub fn adapter_for(vendor: Vendor) -> &'static dyn Adapter {
    match vendor {
        Vendor::Generic => &generic::GenericJson,
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
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    let mut id = String::with_capacity(7 + 32);
    id.push_str("sha256:");
    for byte in &digest[..16] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}
