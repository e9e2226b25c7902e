//! Our Standard Webhooks signatures, checked by the official Python library (`standardwebhooks`,
//! pinned in tests/interop/python/requirements.txt) through tests/interop/python/verify_webhook.py:
//! an implementation that shares no code with ours accepts what we sign, during a secret rotation
//! too, and refuses what was tampered with.
//!
//! The interpreter is `SB_INTEROP_PYTHON`, which ./test exports (scripts/interop.sh). Without it
//! this test fails rather than pass having checked nothing.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use switchboard_dispatcher::signature::{SigningSecret, sign};

fn python() -> String {
    match std::env::var("SB_INTEROP_PYTHON") {
        Ok(python) if !python.is_empty() => python,
        _ => panic!(
            "SB_INTEROP_PYTHON is not set: it names a Python with tests/interop/python/requirements.txt \
             installed. ./test sets it; by hand: source scripts/common.sh; source scripts/interop.sh; \
             ensure_interop_tools"
        ),
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/python/verify_webhook.py")
}

/// Whether the official library accepts the request; its own words on stdout/stderr otherwise.
fn python_verifies(
    id: &str,
    timestamp: i64,
    secret: &str,
    signature: &str,
    body: &[u8],
) -> Result<(), String> {
    let mut child = Command::new(python())
        .arg(script())
        .args([id, &timestamp.to_string(), secret, signature])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python(), script().display()));
    child.stdin.take().expect("stdin is piped").write_all(body).expect("writes the body");
    let output = child.wait_with_output().expect("the verifier finishes");
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    match output.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(said),
        _ => panic!("verify_webhook.py failed to run ({}): {said}", output.status),
    }
}

fn now() -> i64 {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    i64::try_from(seconds).expect("fits")
}

const CURRENT: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn secret(text: &str) -> SigningSecret {
    SigningSecret::parse(text).expect("a valid secret")
}

#[test]
fn the_official_library_accepts_our_signatures() {
    let timestamp = now();
    let bodies: [&[u8]; 4] = [
        br#"{"type":"call.completed","data":{"call_id":"c75cdd2b-25e9-56ee-8603-7ba894adbf76"}}"#,
        "{\"caller\": \"Zoë O'Brien \\\"VIP\\\"\",\n  \"note\": \"звонок\"}".as_bytes(),
        b"USER_ID=42&PHONE_NUMBER=%2B442079460000&TYPE=2",
        b"",
    ];
    for (n, body) in bodies.iter().enumerate() {
        let id = format!("dlv_{n}");
        let headers = sign(&id, timestamp, body, &[secret(CURRENT)]).expect("signs");
        python_verifies(&id, timestamp, CURRENT, &headers.signature, body)
            .unwrap_or_else(|why| panic!("body {n} refused: {why}"));
    }
}

#[test]
fn during_a_rotation_either_secret_verifies() {
    let timestamp = now();
    let next = SigningSecret::from_bytes((0u8..32).collect()).expect("32 bytes").to_whsec();
    let body = br#"{"call_id":"c-1001","outcome":"answered"}"#;
    let headers = sign("dlv_rotation", timestamp, body, &[secret(&next), secret(CURRENT)]).expect("signs");
    assert_eq!(headers.signature.split(' ').count(), 2, "{}", headers.signature);
    for receiver in [CURRENT, next.as_str()] {
        python_verifies("dlv_rotation", timestamp, receiver, &headers.signature, body)
            .unwrap_or_else(|why| panic!("a receiver with {receiver} refused: {why}"));
    }
    let stranger = SigningSecret::from_bytes(vec![0x5a; 24]).expect("24 bytes").to_whsec();
    assert!(python_verifies("dlv_rotation", timestamp, &stranger, &headers.signature, body).is_err());
}

#[test]
fn the_official_library_refuses_tampering() {
    let timestamp = now();
    let body = br#"{"duration":95}"#;
    let headers = sign("dlv_t", timestamp, body, &[secret(CURRENT)]).expect("signs");
    assert!(python_verifies("dlv_t", timestamp, CURRENT, &headers.signature, br#"{"duration":96}"#).is_err());
    assert!(python_verifies("dlv_u", timestamp, CURRENT, &headers.signature, body).is_err());
    assert!(python_verifies("dlv_t", timestamp + 1, CURRENT, &headers.signature, body).is_err());
    // The library checks the timestamp too: an old signature is refused even when it matches.
    let old = timestamp - 3600;
    let stale = sign("dlv_t", old, body, &[secret(CURRENT)]).expect("signs");
    assert!(python_verifies("dlv_t", old, CURRENT, &stale.signature, body).is_err());
}
