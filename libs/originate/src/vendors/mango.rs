//! Mango Office (VPBX API): `commands/callback`, and `commands/call/hangup`.
//!
//! Sources followed: Mango Office's support page "Общие вопросы по API ВАТС MANGO OFFICE"
//! (retail.mango-office.ru/support/integratsiya-api/..., its PHP example of a call request: `POST
//! https://app.mango-office.ru/vpbx/commands/callback`, `command_id`, `from.extension` — the
//! employee's internal number the call is made from — optional `from.number`, `to_number`,
//! `line_number`), the research notes' §1.12 (form-encoded `vpbx_api_key`, `sign`, `json`;
//! `sign = sha256(vpbx_api_key + json + vpbx_api_salt)`, hex), and the open-source clients that
//! agree with them: dasshit/Python-Mango-Office-API (`mangoapi/__init__.py`: `callback`,
//! `hangup` with `{"command_id", "call_id"}` at `/commands/call/hangup`), TrashPony/
//! Mango-api-wrapper (the answer `{"command_id", "result", "name", "message"}`), flamedeluxe/
//! moldova `test_curl_call.sh`. Mango's signing is also `services/recordings/src/vendors.rs`'s.
//!
//! Mango answers a command at once and places the call asynchronously: the answer names no call
//! id, and the call's events carry our `command_id` (the request id). `result` `1000` is success
//! (the clients above and Mango's examples); other codes are refusals, except `5xxx`, read as
//! Mango's own failure. Numbers are sent as international digits (`74952129298`, as in Mango's
//! examples). The key is `api_key`, the salt the source's signing secret. Retries: none — Mango
//! does not document that a repeated `command_id` is ignored, so a retry could call twice.

use http::{Method, header};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{base_url, caller_id, digits, hex, json_reason, not_accepted};
use crate::settings::{required, required_secret};
use crate::transport::{HttpRequest, Reply, Transport};
use crate::{HangUpRequest, OriginateError, OriginateRequest, Originated, VendorSettings};

pub(crate) const API: &str = "https://app.mango-office.ru/vpbx";
const NAME: &str = "Mango";
/// Mango's "command accepted" result code.
const SUCCESS: i64 = 1000;

pub(crate) async fn originate(
    settings: &VendorSettings,
    request: &OriginateRequest,
    transport: &Transport,
) -> Result<Originated, OriginateError> {
    let extension = request.agent.extension.as_deref().ok_or_else(|| {
        OriginateError::Invalid(
            "Mango calls from the agent's extension (from.extension): the agent has none".into(),
        )
    })?;
    let mut from = json!({ "extension": extension });
    if let Some(number) = request.agent.number.as_deref() {
        from["number"] = json!(digits(number));
    }
    let mut command = json!({
        "command_id": request.request_id,
        "from": from,
        "to_number": digits(&request.destination),
    });
    if let Some(line) = caller_id(request, settings) {
        command["line_number"] = json!(digits(line));
    }
    let reply = send(settings, "commands/callback", &command, transport).await?;
    Ok(Originated {
        vendor_call_id: None,
        command_id: Some(request.request_id.clone()),
        raw: reply.summary(),
    })
}

pub(crate) async fn hang_up(
    settings: &VendorSettings,
    request: &HangUpRequest,
    transport: &Transport,
) -> Result<(), OriginateError> {
    let command = json!({ "command_id": request.request_id, "call_id": request.vendor_call_id });
    send(settings, "commands/call/hangup", &command, transport).await.map(|_| ())
}

/// Signs and posts one command; a success is `result` 1000.
async fn send(
    settings: &VendorSettings,
    path: &str,
    command: &serde_json::Value,
    transport: &Transport,
) -> Result<Reply, OriginateError> {
    let key = required(settings.api_key.as_deref(), "api_key (vpbx_api_key)", NAME)?;
    let salt = required_secret(settings.signing_secret.as_ref(), "signing secret (the API salt)", NAME)?;
    let base = base_url(settings, Some(API), NAME)?;
    let json = command.to_string();
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("vpbx_api_key", key)
        .append_pair("sign", &sign(key, &json, salt))
        .append_pair("json", &json)
        .finish();
    let request = HttpRequest::new(Method::POST, format!("{base}/{path}"))
        .header(header::ACCEPT, "application/json")?
        .form(form)?;
    let reply = transport.send(&request).await?;
    let result = reply.json().and_then(|json| json["result"].as_i64());
    match result {
        Some(SUCCESS) if reply.status.is_success() => Ok(reply),
        Some(code) => {
            let reason = format!("result {code}: {}", json_reason(&reply));
            if (5000..6000).contains(&code) || reply.status.is_server_error() {
                Err(OriginateError::Unavailable(format!("{NAME} {reason}")))
            } else {
                Err(OriginateError::Refused { status: Some(reply.status.as_u16()), reason })
            }
        }
        None if !reply.status.is_success() => Err(not_accepted(NAME, &reply, json_reason(&reply))),
        None => Err(OriginateError::Unavailable(format!(
            "Mango answered {} without a result code (the command may have been accepted): {}",
            reply.status.as_u16(),
            reply.snippet()
        ))),
    }
}

/// `hex(sha256(vpbx_api_key + json + salt))`.
pub(crate) fn sign(api_key: &str, json: &str, salt: &str) -> String {
    hex(&Sha256::digest(format!("{api_key}{json}{salt}").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_the_documented_formula() {
        // Computed independently: sha256("mango-key" + '{"a":1}' + "mango-salt").
        assert_eq!(
            sign("mango-key", r#"{"a":1}"#, "mango-salt"),
            "ab9e4d473c88ab17bb9e6cf51135c43c2f554bae5db0082bc37f34b9f1cb2980"
        );
    }
}
