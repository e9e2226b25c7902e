//! Session tokens. A token is `sbd_` and the unpadded base64url of HMAC-SHA256(`desk.token_key`,
//! session id): derived, never stored. The database keeps only the token's SHA-256, so a copy of
//! it opens no stream, and `keep` can still hand the same token back (derive it again).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Every token starts with it, so that a leaked one is recognisable (secret scanners).
pub const PREFIX: &str = "sbd_";
/// Characters after the prefix: 32 bytes in unpadded base64.
const ENCODED_LEN: usize = 43;

/// The token of session `session_id`.
pub fn derive(key: &[u8], session_id: &str) -> String {
    // HMAC accepts a key of any length; the settings require at least 32 bytes.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(session_id.as_bytes());
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// What the database stores of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether `token` has the form of a session token (checked before any lookup, so that junk
/// costs no query).
pub fn well_formed(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(|rest| {
        rest.len() == ENCODED_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A new session id: `ds_` and a UUID v7 (time-ordered, 74 random bits). It is not a secret: it
/// reaches the CRM as the screen-pop's `id_session`.
pub fn new_session_id() -> String {
    format!("ds_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_are_derived_and_stable() {
        let token = derive(KEY, "ds_1");
        assert!(well_formed(&token), "{token}");
        assert_eq!(token, derive(KEY, "ds_1"), "keep gives the same token back");
        assert_ne!(token, derive(KEY, "ds_2"));
        assert_ne!(token, derive(b"another key of thirty-two bytes!", "ds_1"));
        assert_eq!(hash(&token).len(), 32);
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_lookup() {
        for bad in [
            "",
            "sbd_",
            "Bearer x",
            "sbd_short",
            &format!("sbd_{}", "a".repeat(44)),
            &format!("xyz_{}", "a".repeat(43)),
            &format!("sbd_{}", "+".repeat(43)),
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
