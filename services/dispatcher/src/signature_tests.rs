use super::*;

/// The published vector of the Standard Webhooks libraries' tests (standard-webhooks repository,
/// `libraries/go/webhook_test.go`, `TestWebhookSign`).
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: i64 = 1_614_265_330;
const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn spec_secret() -> SigningSecret {
    SigningSecret::parse(SPEC_SECRET).expect("the spec's secret")
}

#[test]
fn signing_reproduces_the_published_vector() {
    let headers = sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &[spec_secret()]).expect("signs");
    assert_eq!(headers.signature, SPEC_SIGNATURE);
    assert_eq!(headers.pairs()[1], ("webhook-timestamp", "1614265330".to_owned()));
    verify(&spec_secret(), SPEC_ID, "1614265330", SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP + 10, 300)
        .expect("verifies");
}

#[test]
fn rotation_signs_with_every_secret_and_either_verifies() {
    let new = SigningSecret::from_bytes(vec![7; 32]).expect("32 bytes");
    let headers = sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &[new.clone(), spec_secret()]).expect("signs");
    let parts: Vec<&str> = headers.signature.split(' ').collect();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1], SPEC_SIGNATURE);
    for secret in [&new, &spec_secret()] {
        verify(secret, SPEC_ID, "1614265330", &headers.signature, SPEC_BODY, SPEC_TIMESTAMP, 300)
            .expect("verifies");
    }
    let stranger = SigningSecret::from_bytes(vec![9; 24]).expect("24 bytes");
    let err = verify(&stranger, SPEC_ID, "1614265330", &headers.signature, SPEC_BODY, SPEC_TIMESTAMP, 300);
    assert_eq!(err, Err(VerifyError::NoMatch));
}

#[test]
fn verification_refuses_tampering_and_stale_timestamps() {
    let ok = |id: &str, ts: &str, sig: &str, body: &[u8], now: i64| {
        verify(&spec_secret(), id, ts, sig, body, now, 300)
    };
    assert_eq!(
        ok(SPEC_ID, "1614265330", SPEC_SIGNATURE, br#"{"test": 2432232315}"#, SPEC_TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        ok("msg_other", "1614265330", SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        ok(SPEC_ID, "1614265331", SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        ok(SPEC_ID, "1614265330", SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP + 301),
        Err(VerifyError::OutsideTolerance(301))
    );
    assert_eq!(ok(SPEC_ID, "soon", SPEC_SIGNATURE, SPEC_BODY, SPEC_TIMESTAMP), Err(VerifyError::Timestamp));
    // Only v1 entries count, and one good entry among bad ones is enough.
    let v1a = SPEC_SIGNATURE.replacen("v1,", "v1a,", 1);
    assert_eq!(ok(SPEC_ID, "1614265330", &v1a, SPEC_BODY, SPEC_TIMESTAMP), Err(VerifyError::NoMatch));
    let mixed = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,xx {SPEC_SIGNATURE}");
    assert_eq!(ok(SPEC_ID, "1614265330", &mixed, SPEC_BODY, SPEC_TIMESTAMP), Ok(()));
}

#[test]
fn secrets_and_ids_are_checked() {
    assert!(matches!(
        SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        Err(SignatureError::SecretFormat)
    ));
    assert!(matches!(SigningSecret::parse("whsec_!!!"), Err(SignatureError::SecretBase64(_))));
    assert!(matches!(SigningSecret::parse("whsec_c2hvcnQ="), Err(SignatureError::SecretLength(5))));
    assert!(SigningSecret::from_bytes(vec![0; 65]).is_err());
    assert_eq!(spec_secret().to_whsec(), SPEC_SECRET);
    assert_eq!(format!("{:?}", spec_secret()), "SigningSecret(***)");
    for id in ["", "a.b", "line\nbreak"] {
        assert!(matches!(sign(id, 1, b"", &[spec_secret()]), Err(SignatureError::MessageId)), "{id:?}");
    }
    assert!(matches!(sign("msg", 1, b"", &[]), Err(SignatureError::NoSecret)));
}
