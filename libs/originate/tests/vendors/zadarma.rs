//! Zadarma's `/v1/request/callback/`, faked as its OpenAPI description and official client
//! document it, signature checked the way the server does.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde_json::json;
use switchboard_model::{Secret, SourceSettings};
use switchboard_originate::{
    HangUpRequest, OriginateError, Vendor, VendorSettings, can_hang_up, hang_up, originate,
};

use crate::common::{Answer, FakeApi, Seen, json, request, transport};

const PATH: &str = "/v1/request/callback/";
const KEY: &str = "key";
const SECRET: &str = "zadarma-secret";

/// PHP's `http_build_query` (RFC 1738) of the pairs, sorted by name.
fn php_query(mut pairs: Vec<(String, String)>) -> String {
    pairs.sort();
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

fn signature(query: &str) -> String {
    let md5: String = Md5::digest(query.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(SECRET.as_bytes()).expect("hmac");
    mac.update(format!("{PATH}{query}{md5}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    STANDARD.encode(hex)
}

/// Zadarma: `GET`, `Authorization: key:signature` over the sorted query; `from` and `to` are
/// required; a number it cannot call is an error with a message.
fn zadarma(seen: &Seen) -> Answer {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(seen.query.as_deref().unwrap_or_default().as_bytes()).into_owned().collect();
    let expected = format!("{KEY}:{}", signature(&php_query(pairs.clone())));
    if seen.method != "GET" || seen.path != PATH || seen.header("authorization") != Some(expected.as_str()) {
        return json(401, json!({"status": "error", "message": "Not authorized"}));
    }
    let value = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match (value("from"), value("to")) {
        (Some(from), Some(to)) if to.starts_with("44") => {
            json(200, json!({"status": "success", "from": from, "to": to, "time": 1435573082}))
        }
        _ => json(200, json!({"status": "error", "message": "Wrong parameters"})),
    }
}

fn settings(api: &FakeApi) -> VendorSettings {
    VendorSettings {
        stored: SourceSettings {
            api_url: Some(api.url()),
            api_client_id: Some(KEY.into()),
            api_client_secret: Some(Secret::new(SECRET)),
            ..SourceSettings::default()
        },
        signing_secret: None,
    }
}

#[tokio::test]
async fn requests_a_signed_callback_as_documented() {
    let api = FakeApi::start(zadarma).await;
    let placed = originate(Vendor::Zadarma, &settings(&api), &request(), &transport()).await.expect("placed");
    assert_eq!(placed.vendor_call_id, None, "Zadarma's answer names no call");
    assert_eq!(placed.raw["status"], "success");

    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", PATH));
    assert_eq!(seen[0].query.as_deref(), Some("format=json&from=101&to=442079460000"));
    // Computed independently of both implementations (Python hmac/hashlib/base64).
    assert_eq!(
        seen[0].header("authorization"),
        Some("key:MzU4NzNlYzgwMDk5OTkxNWI4MTUyYzg1NzFjM2I2MDhmZWQ0YWI4Mg==")
    );
    assert!(seen[0].body.is_empty());
}

#[tokio::test]
async fn the_signing_secret_stands_in_for_the_api_secret() {
    let api = FakeApi::start(zadarma).await;
    let mut settings = settings(&api);
    settings.api_client_secret = None;
    settings.signing_secret = Some(Secret::new(SECRET));
    originate(Vendor::Zadarma, &settings, &request(), &transport()).await.expect("placed");
}

#[tokio::test]
async fn an_error_status_passes_zadarmas_message_on() {
    let api = FakeApi::start(zadarma).await;
    let mut request = request();
    request.destination = "+74951234567".into();
    let error =
        originate(Vendor::Zadarma, &settings(&api), &request, &transport()).await.expect_err("refused");
    assert_eq!(error, OriginateError::Refused { status: Some(200), reason: "Wrong parameters".into() });
    assert_eq!(api.count(PATH), 1);
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let api = FakeApi::start(zadarma).await;
    let mut settings = settings(&api);
    settings.api_client_secret = Some(Secret::new("not-it"));
    let error = originate(Vendor::Zadarma, &settings, &request(), &transport()).await.expect_err("refused");
    assert_eq!(error, OriginateError::Refused { status: Some(401), reason: "Not authorized".into() });
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_unavailable_and_not_retried() {
    for status in [429, 500] {
        let api = FakeApi::start(move |_| json(status, json!({"status": "error", "message": "busy"}))).await;
        let error =
            originate(Vendor::Zadarma, &settings(&api), &request(), &transport()).await.expect_err("down");
        assert!(
            matches!(&error, OriginateError::Unavailable(t) if t.contains(&status.to_string())),
            "{error:?}"
        );
        assert_eq!(api.count(PATH), 1);
    }
}

#[tokio::test]
async fn zadarma_has_no_hang_up() {
    let api = FakeApi::start(zadarma).await;
    let request =
        HangUpRequest { vendor_call_id: "1".into(), agent: Default::default(), request_id: "h-1".into() };
    let error =
        hang_up(Vendor::Zadarma, &settings(&api), &request, &transport()).await.expect_err("unsupported");
    assert!(matches!(error, OriginateError::Unsupported(_)), "{error:?}");
    assert!(!can_hang_up(Vendor::Zadarma));
    assert!(api.seen().is_empty());
}
