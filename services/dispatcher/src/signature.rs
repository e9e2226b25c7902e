//! Standard Webhooks signing (`spec/standard-webhooks.md`, symmetric scheme): the headers
//! `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`, a space-separated
//! list of `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret, so that a
//! receiver keeps verifying while its secret is rotated. Secrets are `whsec_<base64>`; the key is
//! the decoded bytes.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "whsec_";

/// The spec's bounds on a symmetric secret: at least 24 bytes (192 bits), at most 64 (512 bits).
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// How far a receiver lets a timestamp stray from its clock (the official libraries' default).
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 5 * 60;

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("a signing secret is whsec_ followed by base64")]
    SecretFormat,
    #[error("a signing secret is whsec_ followed by base64")]
    SecretBase64(#[source] base64::DecodeError),
    #[error("a signing secret decodes to 24 to 64 bytes, not {0}")]
    SecretLength(usize),
    #[error("a message id is 1 to 256 printable characters without '.' (it is part of the signed content)")]
    MessageId,
    #[error("no signing secret")]
    NoSecret,
    #[error("HMAC-SHA256 refused the key")]
    Key,
}

/// Why a request was not verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not unix seconds")]
    Timestamp,
    #[error("webhook-timestamp is {0} seconds away from now, more than the tolerance")]
    OutsideTolerance(i64),
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
}

/// A decoded `whsec_` secret. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text.strip_prefix(PREFIX).ok_or(SignatureError::SecretFormat)?;
        let key = STANDARD.decode(encoded).map_err(SignatureError::SecretBase64)?;
        Self::from_bytes(key)
    }

    pub fn from_bytes(key: Vec<u8>) -> Result<Self, SignatureError> {
        if !KEY_BYTES.contains(&key.len()) {
            return Err(SignatureError::SecretLength(key.len()));
        }
        Ok(Self(key))
    }

    /// The secret as a receiver configures it (`whsec_...`), to show once when it is created.
    pub fn to_whsec(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// HMAC takes keys of any length, so this fails only if the `hmac` crate changed its mind;
    /// then nothing is signed rather than something signed wrongly.
    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Result<[u8; 32], SignatureError> {
        let mut mac = HmacSha256::new_from_slice(&self.0).map_err(|_| SignatureError::Key)?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        Ok(mac.finalize().into_bytes().into())
    }

    /// One `v1,<base64>` signature.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
        Ok(format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)?)))
    }
}

/// The three headers of one signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHeaders {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
}

impl WebhookHeaders {
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            ("webhook-id", self.id.clone()),
            ("webhook-timestamp", self.timestamp.to_string()),
            ("webhook-signature", self.signature.clone()),
        ]
    }
}

/// Signs `body` with every secret. The id must not contain `.`, which delimits the signed
/// content; delivery ids never do.
pub fn sign(
    id: &str,
    timestamp: i64,
    body: &[u8],
    secrets: &[SigningSecret],
) -> Result<WebhookHeaders, SignatureError> {
    if id.is_empty() || id.len() > 256 || id.contains('.') || id.chars().any(char::is_control) {
        return Err(SignatureError::MessageId);
    }
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let signature =
        secrets.iter().map(|s| s.signature(id, timestamp, body)).collect::<Result<Vec<_>, _>>()?.join(" ");
    Ok(WebhookHeaders { id: id.to_owned(), timestamp, signature })
}

/// Verifies a request as a receiver does: the timestamp within `tolerance_seconds` of `now`
/// (unix seconds), and any `v1` signature of the list matching, compared in constant time.
pub fn verify(
    secret: &SigningSecret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), VerifyError> {
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Timestamp)?;
    let skew = now.saturating_sub(timestamp);
    if skew.abs() > tolerance_seconds {
        return Err(VerifyError::OutsideTolerance(skew));
    }
    let expected = secret.mac(id, timestamp, body).map_err(|_| VerifyError::NoMatch)?;
    let matched = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|candidate| bool::from(candidate.as_slice().ct_eq(&expected)));
    if matched { Ok(()) } else { Err(VerifyError::NoMatch) }
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
