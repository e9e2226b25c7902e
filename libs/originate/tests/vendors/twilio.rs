//! Twilio's Calls resource, faked as documented: create and update (`Status=completed`).

use serde_json::json;
use switchboard_model::{Secret, SourceSettings};
use switchboard_originate::{HangUpRequest, OriginateError, Vendor, VendorSettings, hang_up, originate};

use crate::common::{Answer, FakeApi, Seen, json, request, transport};

const ACCOUNT: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "auth-token";
const CALL_SID: &str = "CA11111111111111111111111111111111";

fn calls_path() -> String {
    format!("/2010-04-01/Accounts/{ACCOUNT}/Calls.json")
}

fn call_path(sid: &str) -> String {
    format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json")
}

fn error(status: u16, code: u32, message: &str) -> Answer {
    json(
        status,
        json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status}),
    )
}

/// Twilio: HTTP Basic (Account SID, auth token), form-encoded; `To`, `From` and `Url` or
/// `Twiml` to create, `Status` to update; errors as its JSON error object.
fn twilio(seen: &Seen) -> Answer {
    let basic = format!("Basic {}", base64_encode(&format!("{ACCOUNT}:{TOKEN}")));
    if seen.header("authorization") != Some(basic.as_str()) {
        return error(401, 20003, "Authenticate");
    }
    if seen.method != "POST" || seen.header("content-type") != Some("application/x-www-form-urlencoded") {
        return error(400, 20001, "Unsupported request");
    }
    if seen.path == calls_path() {
        let (to, from) = (seen.field("To"), seen.field("From"));
        let instructions = seen.field("Url").is_some() || seen.field("Twiml").is_some();
        return match (to, from) {
            (Some(to), Some(from)) if instructions && to.starts_with("+44") => json(
                201,
                json!({"sid": CALL_SID, "account_sid": ACCOUNT, "to": to, "from": from, "status": "queued",
                       "direction": "outbound-api", "api_version": "2010-04-01", "uri": call_path(CALL_SID)}),
            ),
            (Some(to), _) => error(400, 21211, &format!("The 'To' number {to} is not a valid phone number.")),
            _ => error(400, 21201, "No 'To' number is specified"),
        };
    }
    if seen.path == call_path(CALL_SID) && seen.field("Status").as_deref() == Some("completed") {
        return json(200, json!({"sid": CALL_SID, "status": "completed"}));
    }
    error(404, 20404, "The requested resource was not found")
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn settings(api: &FakeApi) -> VendorSettings {
    VendorSettings {
        stored: SourceSettings {
            api_url: Some(api.url()),
            api_client_id: Some(ACCOUNT.into()),
            api_client_secret: Some(Secret::new(TOKEN)),
            originate_caller_id: Some("+442071838750".into()),
            ..SourceSettings::default()
        },
        signing_secret: None,
    }
}

#[tokio::test]
async fn creates_a_call_to_the_agent_that_dials_the_destination() {
    let api = FakeApi::start(twilio).await;
    let placed = originate(Vendor::Twilio, &settings(&api), &request(), &transport()).await.expect("placed");
    assert_eq!(placed.vendor_call_id.as_deref(), Some(CALL_SID));
    assert_eq!(placed.raw["status"], "queued");

    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.clone()), ("POST", calls_path()));
    let twiml = concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        r#"<Response><Dial callerId="+442071838750"><Number>+442079460000</Number></Dial></Response>"#
    );
    let expected: Vec<(String, String)> =
        [("To", "+447700900123"), ("From", "+442071838750"), ("Twiml", twiml)]
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
    assert_eq!(seen[0].form(), expected);
    assert!(seen[0].body.contains("To=%2B447700900123"), "E.164 form-encoded: {}", seen[0].body);
}

#[tokio::test]
async fn a_twiml_url_replaces_the_inline_twiml() {
    let api = FakeApi::start(twilio).await;
    let mut settings = settings(&api);
    settings.twiml_url = Some("https://crm.example.com/twiml/dial".into());
    originate(Vendor::Twilio, &settings, &request(), &transport()).await.expect("placed");
    let seen = &api.seen()[0];
    assert_eq!(seen.field("Url").as_deref(), Some("https://crm.example.com/twiml/dial"));
    assert_eq!(seen.field("Twiml"), None);
}

#[tokio::test]
async fn twilios_error_is_passed_on() {
    let api = FakeApi::start(twilio).await;
    let mut request = request();
    request.agent.number = Some("+15005550001".into());
    let error =
        originate(Vendor::Twilio, &settings(&api), &request, &transport()).await.expect_err("refused");
    assert_eq!(
        error,
        OriginateError::Refused {
            status: Some(400),
            reason: "21211: The 'To' number +15005550001 is not a valid phone number.".into()
        }
    );
    let mut settings = settings(&api);
    settings.api_client_secret = Some(Secret::new("wrong"));
    let error =
        originate(Vendor::Twilio, &settings, &self::request(), &transport()).await.expect_err("refused");
    assert_eq!(error, OriginateError::Refused { status: Some(401), reason: "20003: Authenticate".into() });
}

#[tokio::test]
async fn a_server_error_is_unavailable_and_not_retried() {
    let api = FakeApi::start(|_| error(503, 20500, "Service unavailable")).await;
    let error = originate(Vendor::Twilio, &settings(&api), &request(), &transport()).await.expect_err("down");
    assert!(matches!(&error, OriginateError::Unavailable(t) if t.contains("503")), "{error:?}");
    assert_eq!(api.count(&calls_path()), 1);
}

#[tokio::test]
async fn without_a_from_number_it_is_not_configured() {
    let api = FakeApi::start(twilio).await;
    let mut settings = settings(&api);
    settings.originate_caller_id = None;
    let error =
        originate(Vendor::Twilio, &settings, &request(), &transport()).await.expect_err("unconfigured");
    assert!(
        matches!(&error, OriginateError::NotConfigured(t) if t.contains("originate_caller_id")),
        "{error:?}"
    );
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn hangs_up_by_updating_the_call_to_completed() {
    let api = FakeApi::start(twilio).await;
    let request = HangUpRequest {
        vendor_call_id: CALL_SID.into(),
        agent: Default::default(),
        request_id: "h-1".into(),
    };
    hang_up(Vendor::Twilio, &settings(&api), &request, &transport()).await.expect("hung up");
    let seen = api.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].path.clone()), ("POST", call_path(CALL_SID)));
    assert_eq!(seen[0].form(), vec![("Status".to_owned(), "completed".to_owned())]);

    let unknown = HangUpRequest { vendor_call_id: "CA404".into(), ..request };
    let error = hang_up(Vendor::Twilio, &settings(&api), &unknown, &transport()).await.expect_err("unknown");
    assert!(matches!(error, OriginateError::Refused { status: Some(404), .. }), "{error:?}");
}
