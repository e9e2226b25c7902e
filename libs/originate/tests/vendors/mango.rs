//! Mango Office's `commands/callback` and `commands/call/hangup`, faked as documented.

use serde_json::json;
use sha2::{Digest, Sha256};
use switchboard_model::{Secret, SourceSettings};
use switchboard_originate::{HangUpRequest, OriginateError, Vendor, VendorSettings, hang_up, originate};

use crate::common::{Answer, FakeApi, Seen, json, request, transport};

const CALLBACK_PATH: &str = "/vpbx/commands/callback";
const HANGUP_PATH: &str = "/vpbx/commands/call/hangup";
const KEY: &str = "vpbx-key";
const SALT: &str = "vpbx-salt";

/// Mango: a form of `vpbx_api_key`, `sign` = hex(sha256(key + json + salt)) and `json`; the
/// command's result code in the answer.
fn mango(seen: &Seen) -> Answer {
    let fields: Vec<String> = seen.form().into_iter().map(|(k, _)| k).collect();
    let json_text = seen.field("json").unwrap_or_default();
    let sign: String = Sha256::digest(format!("{KEY}{json_text}{SALT}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let signed = seen.method == "POST"
        && seen.header("content-type") == Some("application/x-www-form-urlencoded")
        && fields == ["vpbx_api_key", "sign", "json"]
        && seen.field("vpbx_api_key").as_deref() == Some(KEY)
        && seen.field("sign") == Some(sign);
    if !signed {
        return json(401, json!({"result": 3102, "message": "invalid sign"}));
    }
    let command: serde_json::Value = serde_json::from_str(&json_text).unwrap_or_default();
    match seen.path.as_str() {
        CALLBACK_PATH if command["from"]["extension"] == "666" => json(
            200,
            json!({"result": 4001, "command_id": command["command_id"], "message": "extension not found"}),
        ),
        CALLBACK_PATH if command["command_id"].is_string() && command["to_number"].is_string() => {
            json(200, json!({"result": 1000, "command_id": command["command_id"]}))
        }
        HANGUP_PATH if command["call_id"].is_string() => json(200, json!({"result": 1000})),
        _ => json(200, json!({"result": 3101, "message": "bad request"})),
    }
}

fn settings(api: &FakeApi) -> VendorSettings {
    VendorSettings {
        stored: SourceSettings {
            api_url: Some(format!("{}/vpbx", api.url())),
            api_key: Some(KEY.into()),
            originate_caller_id: Some("+74994725673".into()),
            ..SourceSettings::default()
        },
        signing_secret: Some(Secret::new(SALT)),
    }
}

#[tokio::test]
async fn sends_a_signed_callback_command_as_documented() {
    let api = FakeApi::start(mango).await;
    let placed = originate(Vendor::Mango, &settings(&api), &request(), &transport()).await.expect("placed");
    assert_eq!(placed.command_id.as_deref(), Some("c2c-0001"), "the call's events carry the command id");
    assert_eq!(placed.vendor_call_id, None);

    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", CALLBACK_PATH));
    let command: serde_json::Value =
        serde_json::from_str(&seen[0].field("json").expect("json")).expect("json");
    assert_eq!(
        command,
        json!({
            "command_id": "c2c-0001",
            "from": {"extension": "101", "number": "447700900123"},
            "to_number": "442079460000",
            "line_number": "74994725673",
        })
    );
}

#[tokio::test]
async fn a_result_code_other_than_1000_is_a_refusal_with_mangos_message() {
    let api = FakeApi::start(mango).await;
    let mut request = request();
    request.agent.extension = Some("666".into());
    let error = originate(Vendor::Mango, &settings(&api), &request, &transport()).await.expect_err("refused");
    assert_eq!(
        error,
        OriginateError::Refused { status: Some(200), reason: "result 4001: extension not found".into() }
    );
}

#[tokio::test]
async fn a_wrong_salt_is_refused() {
    let api = FakeApi::start(mango).await;
    let mut settings = settings(&api);
    settings.signing_secret = Some(Secret::new("other"));
    let error = originate(Vendor::Mango, &settings, &request(), &transport()).await.expect_err("refused");
    assert_eq!(
        error,
        OriginateError::Refused { status: Some(401), reason: "result 3102: invalid sign".into() }
    );
}

#[tokio::test]
async fn server_errors_are_unavailable_and_not_retried() {
    let api = FakeApi::start(|_| json(500, json!({"result": 5000, "message": "internal error"}))).await;
    let error = originate(Vendor::Mango, &settings(&api), &request(), &transport()).await.expect_err("down");
    assert!(matches!(&error, OriginateError::Unavailable(t) if t.contains("5000")), "{error:?}");
    assert_eq!(api.count(CALLBACK_PATH), 1, "Mango does not promise to ignore a repeated command_id");
}

#[tokio::test]
async fn hangs_up_by_mangos_call_id() {
    let api = FakeApi::start(mango).await;
    let request = HangUpRequest {
        vendor_call_id: "MToxMDA1NzU5Mzo1MDI6NjI1ODM4MzQ=".into(),
        agent: Default::default(),
        request_id: "hup-0001".into(),
    };
    hang_up(Vendor::Mango, &settings(&api), &request, &transport()).await.expect("hung up");
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, HANGUP_PATH);
    let command: serde_json::Value =
        serde_json::from_str(&seen[0].field("json").expect("json")).expect("json");
    assert_eq!(command, json!({"command_id": "hup-0001", "call_id": "MToxMDA1NzU5Mzo1MDI6NjI1ODM4MzQ="}));
}
