//! What every vendor shares: request checks, unsupported vendors, URLs, limits.

use std::time::Duration;

use serde_json::json;
use switchboard_model::{Secret, SourceSettings};
use switchboard_originate::{
    OriginateError, Transport, TransportConfig, Vendor, VendorSettings, can_hang_up, can_originate, originate,
};

use crate::common::{FakeApi, json, request, transport};

fn twilio_settings(url: String) -> VendorSettings {
    VendorSettings {
        stored: SourceSettings {
            api_url: Some(url),
            api_client_id: Some("AC1".into()),
            api_client_secret: Some(Secret::new("token")),
            originate_caller_id: Some("+442071838750".into()),
            ..SourceSettings::default()
        },
        signing_secret: None,
    }
}

#[tokio::test]
async fn vendors_without_click_to_call_are_unsupported() {
    for vendor in [Vendor::Generic, Vendor::Sipuni, Vendor::Aircall, Vendor::Axialys] {
        let error =
            originate(vendor, &VendorSettings::default(), &request(), &transport()).await.expect_err("no");
        assert!(matches!(error, OriginateError::Unsupported(_)), "{vendor}: {error:?}");
        assert!(!can_originate(vendor) && !can_hang_up(vendor));
    }
    for vendor in
        [Vendor::Telphin, Vendor::Ucontact, Vendor::Zadarma, Vendor::Mango, Vendor::Twilio, Vendor::Asterisk]
    {
        assert!(can_originate(vendor), "{vendor}");
    }
}

#[tokio::test]
async fn an_invalid_request_reaches_no_vendor() {
    let api = FakeApi::start(|_| json(201, json!({"sid": "CA1"}))).await;
    let settings = twilio_settings(api.url());
    let mut bad = request();
    bad.destination = "020 7946 0000".into();
    let error = originate(Vendor::Twilio, &settings, &bad, &transport()).await.expect_err("invalid");
    assert!(matches!(&error, OriginateError::Invalid(t) if t.contains("E.164")), "{error:?}");
    let mut bad = request();
    bad.request_id = "a b".into();
    let error = originate(Vendor::Twilio, &settings, &bad, &transport()).await.expect_err("invalid");
    assert!(matches!(error, OriginateError::Invalid(_)), "{error:?}");
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn credentials_never_go_over_plain_http_to_another_host() {
    let settings = twilio_settings("http://api.twilio.example.com".into());
    let error = originate(Vendor::Twilio, &settings, &request(), &transport()).await.expect_err("refused");
    assert!(matches!(&error, OriginateError::NotConfigured(t) if t.contains("https")), "{error:?}");
}

#[tokio::test]
async fn an_answer_over_the_cap_is_unavailable() {
    let api = FakeApi::start(|_| json(201, json!({"sid": "CA1", "padding": "x".repeat(10_000)}))).await;
    let small = Transport::new(TransportConfig { timeout: Duration::from_secs(5), max_answer_bytes: 1024 });
    let error =
        originate(Vendor::Twilio, &twilio_settings(api.url()), &request(), &small).await.expect_err("big");
    assert!(
        matches!(&error, OriginateError::Unavailable(t) if t.contains("reading the answer")),
        "{error:?}"
    );
}

#[tokio::test]
async fn no_vendor_listening_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let settings = twilio_settings(format!("http://127.0.0.1:{port}"));
    let error = originate(Vendor::Twilio, &settings, &request(), &transport()).await.expect_err("down");
    assert!(matches!(&error, OriginateError::Unavailable(t) if t.contains("cannot connect")), "{error:?}");
}

#[test]
fn secrets_are_masked_in_debug() {
    let settings = VendorSettings {
        stored: SourceSettings {
            api_client_secret: Some(Secret::new("api-secret-value")),
            ami_secret: Some(Secret::new("ami-secret-value")),
            ..SourceSettings::default()
        },
        signing_secret: Some(Secret::new("salt-value")),
    };
    let shown = format!("{settings:?}");
    assert!(!shown.contains("secret-value") && !shown.contains("salt-value"), "{shown}");
}
