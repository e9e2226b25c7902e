#![no_main]
//! Recording links (`/v1/recordings/{id}?token=…`): any id and token are let in or refused with a
//! reason, never a panic; a token the fuzzer wrote opens nothing, while the token the signer
//! issues for the same id and expiry opens it until it expires, also under the previous key of a
//! rotation.

use chrono::{DateTime, Utc};
use switchboard_core::model::Secret;
use switchboard_recordings::link::{LinkSigner, Refusal};

fn signer_of(key: &str, previous: Option<&str>) -> LinkSigner {
    LinkSigner::new(
        Secret::new(key.repeat(32)),
        previous.map(|p| Secret::new(p.repeat(32))),
        "https://x.test",
        3600,
    )
}

/// The signature part of a token (`v1.<expires>.<signature>`).
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or_default()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (id, token) = text.split_once('\n').unwrap_or((&text, ""));
    let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let signer = signer_of("k", Some("p"));
    let old = signer_of("p", None);
    let verdict = signer.verify(id, Some(token), now);
    // Forging would take the key: a token of the fuzzer's opens only if it is the issued one.
    if verdict.is_ok() {
        let expires: i64 = token.split('.').nth(1).and_then(|e| e.parse().ok()).unwrap_or_default();
        assert!(expires > now.timestamp());
        let issued = [signer.token(id, expires), old.token(id, expires)];
        assert!(issued.iter().any(|t| signature(t) == signature(token)), "{token:?} opened {id:?}");
    }
    // The issued tokens, for an expiry taken from the input, before and after it.
    let expires = i64::from(u32::from_le_bytes([0, 1, 2, 3].map(|i| data.get(i).copied().unwrap_or(0))));
    for issued in [signer.token(id, expires), old.token(id, expires)] {
        let verdict = signer.verify(id, Some(&issued), now);
        if expires > now.timestamp() {
            assert_eq!(verdict, Ok(()));
        } else {
            assert_eq!(verdict, Err(Refusal::Expired));
        }
    }
});
