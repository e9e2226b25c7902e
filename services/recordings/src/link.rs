//! Stable recording links: `<public_url>/v1/recordings/<id>?token=<token>`.
//!
//! The id names one recording of one call (a hash of source, call and the vendor's reference, so
//! every event naming the recording, and every redelivery, gets the same id). The token is what
//! lets a CRM user who was never given an API token open it:
//!
//! ```text
//! v1.<expires, Unix seconds>.<base64url(HMAC-SHA256(link_key, "switchboard-recording-link\n" + id + "\n" + expires))>
//! ```
//!
//! Binding the id into the MAC makes a token good for that recording only; binding the expiry makes
//! it stop working at that time; the `v1` names the format so that a later one can be told apart.
//! Verification recomputes the MAC and compares in constant time (`Mac::verify_slice`), before
//! looking at the expiry, so a forged token learns nothing about either. The expiry is the time
//! the recording was first reported plus `recordings.link_ttl_secs`, so every event about one
//! recording carries the same link.
//!
//! Key rotation: links are signed with `recordings.link_key`; a token that does not match it is
//! checked against `recordings.previous_link_key` too, when one is set, so that the links already
//! in CRMs keep working after a rotation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use switchboard_core::model::{Secret, SourceId};

use crate::RecordingsSettings;

/// Everything before the MAC input's variable parts, so that a MAC made for anything else with
/// the same key can never pass as a link token.
const CONTEXT: &str = "switchboard-recording-link";
const VERSION: &str = "v1";

/// Why a token does not open a link; every reason is answered 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no token")]
    Missing,
    #[error("the token is not of the form v1.<expires>.<signature>")]
    Malformed,
    #[error("the token's signature does not match")]
    Forged,
    #[error("the token has expired")]
    Expired,
}

/// Signs and checks link tokens with the configured key.
#[derive(Clone)]
pub struct LinkSigner {
    key: Secret,
    /// The key before the last rotation: it verifies, never signs.
    previous: Option<Secret>,
    public_url: String,
    ttl_secs: i64,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("public_url", &self.public_url)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// The signer of the recordings settings `r`, or `None` when no link key is configured.
    pub fn from_settings(r: &RecordingsSettings) -> Option<Self> {
        (!r.link_key.is_empty()).then(|| {
            Self::new(
                r.link_key.clone(),
                Some(r.previous_link_key.clone()).filter(|k| !k.is_empty()),
                r.public_url(),
                i64::try_from(r.link_ttl_secs).unwrap_or(i64::MAX),
            )
        })
    }

    /// A signer with `key`, also accepting links signed with `previous` (a key rotation), whose
    /// links point at `public_url` and last `ttl_secs` from a recording's first report.
    pub fn new(key: Secret, previous: Option<Secret>, public_url: &str, ttl_secs: i64) -> Self {
        Self { key, previous, public_url: public_url.to_owned(), ttl_secs }
    }

    fn mac(&self, id: &str, expires: i64) -> Hmac<Sha256> {
        Self::mac_with(&self.key, id, expires)
    }

    fn mac_with(key: &Secret, id: &str, expires: i64) -> Hmac<Sha256> {
        // HMAC takes keys of any length; an error here cannot happen.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(format!("{CONTEXT}\n{id}\n{expires}").as_bytes());
        mac
    }

    /// The token of `id`, valid until `expires` (Unix seconds).
    pub fn token(&self, id: &str, expires: i64) -> String {
        let signature = URL_SAFE_NO_PAD.encode(self.mac(id, expires).finalize().into_bytes());
        format!("{VERSION}.{expires}.{signature}")
    }

    /// The link of recording `id`, first reported at `first_reported`.
    pub fn link(&self, id: &str, first_reported: DateTime<Utc>) -> String {
        let expires = first_reported.timestamp().saturating_add(self.ttl_secs);
        format!("{}/v1/recordings/{id}?token={}", self.public_url, self.token(id, expires))
    }

    /// Whether `token` opens recording `id` at `now`.
    pub fn verify(&self, id: &str, token: Option<&str>, now: DateTime<Utc>) -> Result<(), Refusal> {
        let token = token.ok_or(Refusal::Missing)?;
        let mut parts = token.splitn(3, '.');
        let (Some(VERSION), Some(expires), Some(signature)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Malformed);
        };
        let expires: i64 = expires.parse().map_err(|_| Refusal::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| Refusal::Malformed)?;
        let signed_by = |key: &Secret| Self::mac_with(key, id, expires).verify_slice(&signature).is_ok();
        if !signed_by(&self.key) && !self.previous.as_ref().is_some_and(signed_by) {
            return Err(Refusal::Forged);
        }
        if now.timestamp() >= expires {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

/// The id of a recording: what its link names. A hash of the source, the call and the vendor's
/// reference (its recording id, else the URL it sent), 128 bits in hex.
pub fn recording_key(source: &SourceId, call_id: &str, reference: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [source.as_str(), call_id, reference] {
        hasher.update(part.as_bytes());
        // A separator no id holds, so that ("ab", "c") and ("a", "bc") differ.
        hasher.update([0u8]);
    }
    hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` has the shape of a recording id (what the link handler accepts in a path).
pub fn is_recording_key(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use switchboard_core::config::Settings;

    use super::*;

    fn signer() -> LinkSigner {
        let settings = Settings::section_from_vars([
            ("SWITCHBOARD_RECORDINGS__LINK_KEY", "a-link-key-of-at-least-thirty-two-bytes"),
            ("SWITCHBOARD_RECORDINGS__PUBLIC_URL", "https://sb.example.com/"),
            ("SWITCHBOARD_RECORDINGS__LINK_TTL_SECS", "3600"),
        ])
        .expect("settings");
        LinkSigner::from_settings(&settings).expect("a key")
    }

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + second, 0).single().expect("time")
    }

    fn token_of(link: &str) -> &str {
        link.split_once("?token=").map(|(_, t)| t).expect("a token")
    }

    #[test]
    fn a_link_opens_its_recording_until_it_expires() {
        let signer = signer();
        let id = recording_key(&SourceId::parse("pbx").expect("id"), "call-1", "200101-5A1C");
        assert!(is_recording_key(&id), "{id}");
        let link = signer.link(&id, at(0));
        assert!(link.starts_with(&format!("https://sb.example.com/v1/recordings/{id}?token=v1.1800003600.")));
        assert_eq!(link, signer.link(&id, at(0)), "the same recording and time give the same link");
        let token = token_of(&link);
        assert_eq!(signer.verify(&id, Some(token), at(10)), Ok(()));
        assert_eq!(signer.verify(&id, Some(token), at(3599)), Ok(()));
        assert_eq!(signer.verify(&id, Some(token), at(3600)), Err(Refusal::Expired));
    }

    #[test]
    fn after_a_rotation_links_of_the_previous_key_still_open_and_new_ones_use_the_new_key() {
        let old = signer();
        let id = recording_key(&SourceId::parse("pbx").expect("id"), "call-1", "R1");
        let pasted = old.token(&id, at(3600).timestamp());
        let rotated = |previous: Option<&str>| {
            let mut vars =
                vec![("SWITCHBOARD_RECORDINGS__LINK_KEY", "the-new-link-key-of-at-least-32-bytes")];
            vars.extend(previous.map(|p| ("SWITCHBOARD_RECORDINGS__PREVIOUS_LINK_KEY", p)));
            LinkSigner::from_settings(&Settings::section_from_vars(vars).expect("settings")).expect("a key")
        };
        let signer = rotated(Some("a-link-key-of-at-least-thirty-two-bytes"));
        assert_eq!(signer.verify(&id, Some(&pasted), at(0)), Ok(()), "a link already in a CRM");
        let fresh = signer.token(&id, at(3600).timestamp());
        assert_ne!(fresh, pasted, "new links are signed with the new key");
        assert_eq!(rotated(None).verify(&id, Some(&fresh), at(0)), Ok(()));
        assert_eq!(rotated(None).verify(&id, Some(&pasted), at(0)), Err(Refusal::Forged), "once unset");
        assert_eq!(signer.verify(&id, Some(&pasted), at(3600)), Err(Refusal::Expired));
        let short = Settings::section_from_vars::<RecordingsSettings, _, _>([
            ("SWITCHBOARD_RECORDINGS__LINK_KEY", "the-new-link-key-of-at-least-32-bytes"),
            ("SWITCHBOARD_RECORDINGS__PREVIOUS_LINK_KEY", "short"),
        ]);
        assert!(short.is_err(), "a previous key is held to the same length");
    }

    #[test]
    fn forged_altered_or_foreign_tokens_are_refused() {
        let signer = signer();
        let source = SourceId::parse("pbx").expect("id");
        let (id, other) = (recording_key(&source, "c", "R1"), recording_key(&source, "c", "R2"));
        let token = signer.token(&id, at(3600).timestamp());
        assert_eq!(signer.verify(&other, Some(&token), at(0)), Err(Refusal::Forged), "another recording");
        let later = token.replacen("1800003600", "1900003600", 1);
        assert_eq!(signer.verify(&id, Some(&later), at(0)), Err(Refusal::Forged), "a moved expiry");
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert_eq!(signer.verify(&id, Some(&flipped), at(0)), Err(Refusal::Forged));
        let settings = Settings::section_from_vars([(
            "SWITCHBOARD_RECORDINGS__LINK_KEY",
            "another-key-of-at-least-thirty-two-b",
        )])
        .expect("settings");
        let stranger = LinkSigner::from_settings(&settings).expect("a key");
        let foreign = stranger.token(&id, at(3600).timestamp());
        assert_eq!(signer.verify(&id, Some(&foreign), at(0)), Err(Refusal::Forged), "another key");
        // An expired token with a valid signature is refused as expired; a forged one never
        // reaches the expiry check.
        let expired = signer.token(&id, at(-1).timestamp());
        assert_eq!(signer.verify(&id, Some(&expired), at(0)), Err(Refusal::Expired));
        for malformed in ["", "v1", "v1.x.y", "v2.1800003600.abc", "v1.1800003600.not base64!"] {
            assert_eq!(signer.verify(&id, Some(malformed), at(0)), Err(Refusal::Malformed), "{malformed}");
        }
        assert_eq!(signer.verify(&id, None, at(0)), Err(Refusal::Missing));
        assert!(!format!("{signer:?}").contains("thirty-two"), "the key stays out of Debug output");
    }

    #[test]
    fn recording_keys_separate_their_parts() {
        let a = SourceId::parse("a").expect("id");
        let ab = SourceId::parse("ab").expect("id");
        assert_ne!(recording_key(&a, "bc", "r"), recording_key(&ab, "c", "r"));
        assert_eq!(recording_key(&a, "bc", "r"), recording_key(&a, "bc", "r"));
        assert!(!is_recording_key("../../etc/passwd"));
        assert!(!is_recording_key(&"A".repeat(32)), "lower-case hex only");
    }
}
