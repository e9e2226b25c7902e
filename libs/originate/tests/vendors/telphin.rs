//! Telphin's callback API and OAuth token endpoint, faked as documented.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use switchboard_model::{Secret, SourceSettings};
use switchboard_originate::{OriginateError, Vendor, VendorSettings, originate};

use crate::common::{Answer, FakeApi, Seen, json, quick_transport, request, slow, transport};

const TOKEN_PATH: &str = "/oauth/token";
const CALLBACK_PATH: &str = "/api/ver1.0/extension/42/callback/";

/// Telphin's token endpoint: client credentials as a form; tokens `tok-1`, `tok-2`... in turn.
fn token(seen: &Seen, issued: &AtomicUsize) -> Answer {
    let form = seen.form();
    let expected =
        [("grant_type", "client_credentials"), ("client_id", "app-id"), ("client_secret", "app-secret")];
    let ok = seen.method == "POST"
        && seen.header("content-type") == Some("application/x-www-form-urlencoded")
        && expected.iter().all(|(k, v)| form.iter().any(|(fk, fv)| fk == k && fv == v));
    if !ok {
        return json(401, json!({"error": "invalid_client", "error_description": "Bad client credentials"}));
    }
    let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
    json(200, json!({"access_token": format!("tok-{n}"), "token_type": "bearer", "expires_in": 3600}))
}

/// The callback resource: checks method, bearer token, content type and the JSON fields.
fn callback(seen: &Seen, valid_token: &str) -> Answer {
    if seen.header("authorization") != Some(&format!("Bearer {valid_token}")) {
        return json(401, json!({"message": "Token is invalid"}));
    }
    let body = seen.json();
    let fields_ok = seen.method == "POST"
        && seen.header("content-type") == Some("application/json")
        && body["src_num"].is_array()
        && body["dst_num"].is_string();
    if !fields_ok {
        return json(400, json!({"message": "dst_num is required"}));
    }
    json(
        200,
        json!({"call_api_id": "02abb9ee685a11ea94bfe17eb6eaecba", "call_id": "02abb9ee685a11ea94bfe17eb6eaecbb"}),
    )
}

fn settings(api: &FakeApi) -> VendorSettings {
    VendorSettings {
        stored: SourceSettings {
            api_url: Some(format!("{}/api/ver1.0/", api.url())),
            api_token_url: Some(format!("{}{TOKEN_PATH}", api.url())),
            api_client_id: Some("app-id".into()),
            api_client_secret: Some(Secret::new("app-secret")),
            telphin_extension_id: Some("42".into()),
            ..SourceSettings::default()
        },
        signing_secret: None,
    }
}

async fn fake(answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> FakeApi {
    let issued = Arc::new(AtomicUsize::new(0));
    FakeApi::start(move |seen| match seen.path.as_str() {
        TOKEN_PATH => token(seen, &issued),
        _ => answer(seen),
    })
    .await
}

#[tokio::test]
async fn places_a_callback_as_documented() {
    let api = fake(|seen| callback(seen, "tok-1")).await;
    let placed = originate(Vendor::Telphin, &settings(&api), &request(), &transport()).await.expect("placed");
    assert_eq!(placed.vendor_call_id.as_deref(), Some("02abb9ee685a11ea94bfe17eb6eaecbb"));
    assert_eq!(placed.command_id.as_deref(), Some("02abb9ee685a11ea94bfe17eb6eaecba"));

    let seen = api.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].path, TOKEN_PATH);
    let call = &seen[1];
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", CALLBACK_PATH));
    assert_eq!(call.header("authorization"), Some("Bearer tok-1"));
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(
        call.json(),
        json!({
            "src_num": ["101"],
            "dst_num": "442079460000",
            "caller_id_name": "442079460000",
            "caller_id_number": "442079460000",
        })
    );
}

#[tokio::test]
async fn the_agents_phone_shows_the_destination() {
    // Telphin's rule: caller_id_name and caller_id_number equal dst_num, whatever number the
    // destination is shown (dst_ani) and however the dialplan wants the number written.
    let api = fake(|seen| callback(seen, "tok-1")).await;
    let mut settings = settings(&api);
    settings.dial_prefix = Some("+".into());
    let mut request = request();
    request.destination = "+74951234567".into();
    request.caller_id = Some("+74950000000".into());
    originate(Vendor::Telphin, &settings, &request, &transport()).await.expect("placed");
    let body = api.seen()[1].json();
    assert_eq!(body["dst_num"], "+74951234567");
    assert_eq!(body["caller_id_name"], body["dst_num"]);
    assert_eq!(body["caller_id_number"], body["dst_num"]);
    assert_eq!(body["src_num"], json!(["101"]), "the agent's extension is called first");
    assert_eq!(body["dst_ani"], "+74950000000", "the customer sees the caller id");
}

#[tokio::test]
async fn the_token_is_reused_and_replaced_once_refused() {
    let valid = Arc::new(std::sync::Mutex::new("tok-1".to_owned()));
    let current = valid.clone();
    let api = fake(move |seen| callback(seen, &current.lock().expect("token"))).await;
    let (settings, transport) = (settings(&api), transport());
    for _ in 0..2 {
        originate(Vendor::Telphin, &settings, &request(), &transport).await.expect("placed");
    }
    assert_eq!(api.count(TOKEN_PATH), 1, "one token for both calls");
    // Telphin revokes tok-1: the 401 places nothing, so the call is sent once more, fresh token.
    *valid.lock().expect("token") = "tok-2".into();
    originate(Vendor::Telphin, &settings, &request(), &transport).await.expect("placed");
    assert_eq!(api.count(TOKEN_PATH), 2);
    assert_eq!(api.count(CALLBACK_PATH), 4);
    assert_eq!(
        api.seen().last().and_then(|s| s.header("authorization").map(str::to_owned)).as_deref(),
        Some("Bearer tok-2")
    );
}

#[tokio::test]
async fn a_refusal_passes_telphins_reason_on() {
    let api = fake(|_| json(400, json!({"message": "Extension 42 is blocked"}))).await;
    let error =
        originate(Vendor::Telphin, &settings(&api), &request(), &transport()).await.expect_err("refused");
    assert_eq!(
        error,
        OriginateError::Refused { status: Some(400), reason: "Extension 42 is blocked".into() }
    );
    assert_eq!(api.count(CALLBACK_PATH), 1);
}

#[tokio::test]
async fn wrong_client_credentials_are_refused_with_the_oauth_reason() {
    let api = fake(|seen| callback(seen, "tok-1")).await;
    let mut settings = settings(&api);
    settings.api_client_secret = Some(Secret::new("wrong"));
    let error = originate(Vendor::Telphin, &settings, &request(), &transport()).await.expect_err("refused");
    match error {
        OriginateError::Refused { status: Some(401), reason } => {
            assert!(reason.contains("Bad client credentials"), "{reason}");
            assert!(!reason.contains("wrong"), "no secret in errors: {reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(api.count(CALLBACK_PATH), 0);
}

#[tokio::test]
async fn a_server_error_is_unavailable_and_not_retried() {
    let api = fake(|_| json(502, json!({"message": "Bad gateway"}))).await;
    let error =
        originate(Vendor::Telphin, &settings(&api), &request(), &transport()).await.expect_err("down");
    assert!(matches!(&error, OriginateError::Unavailable(text) if text.contains("502")), "{error:?}");
    assert_eq!(api.count(CALLBACK_PATH), 1, "a callback is never sent twice");
}

#[tokio::test]
async fn no_answer_in_time_is_unavailable_and_not_retried() {
    let api = fake(|seen| slow(callback(seen, "tok-1"), Duration::from_secs(3))).await;
    let error =
        originate(Vendor::Telphin, &settings(&api), &request(), &quick_transport()).await.expect_err("slow");
    assert!(matches!(&error, OriginateError::Unavailable(text) if text.contains("no answer")), "{error:?}");
    assert_eq!(api.count(CALLBACK_PATH), 1);
}

#[tokio::test]
async fn missing_settings_are_named() {
    let api = fake(|seen| callback(seen, "tok-1")).await;
    let mut settings = settings(&api);
    settings.api_client_secret = None;
    let error =
        originate(Vendor::Telphin, &settings, &request(), &transport()).await.expect_err("unconfigured");
    assert!(
        matches!(&error, OriginateError::NotConfigured(text) if text.contains("api_client_secret")),
        "{error:?}"
    );
    let mut settings = self::settings(&api);
    settings.telphin_extension_id = None;
    let error =
        originate(Vendor::Telphin, &settings, &request(), &transport()).await.expect_err("unconfigured");
    assert!(
        matches!(&error, OriginateError::NotConfigured(text) if text.contains("telphin_extension_id")),
        "{error:?}"
    );
    assert!(api.seen().is_empty());
}
