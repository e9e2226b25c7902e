//! Twilio Programmable Voice: the Calls resource, to place a call and to end it.
//!
//! Sources followed: Twilio's "Making Calls" (twilio.com/docs/voice/make-calls: `POST
//! /2010-04-01/Accounts/{AccountSid}/Calls`, `To` — a number in E.164, a SIP address or a client
//! identifier — and `From` required, the call's instructions as `Url` or inline `Twiml`), error
//! 21200 "Calls Resource" (twilio.com/docs/api/errors/21200: form-encoded,
//! `application/x-www-form-urlencoded`; `From` a Twilio number or verified caller id), "Modify
//! Calls In Progress" and the Call update's `Status` enum (`canceled`, `completed`: `completed`
//! ends a call in progress), and "Twilio API responses" (twilio.com/docs/usage/twilios-response:
//! the `.json` extension; errors as JSON `code`, `message`, `more_info`, `status`). HTTP Basic with
//! the Account SID and auth token.
//!
//! The first leg rings the agent (its `number`, or a `vendor_id` that is a `client:` or `sip:`
//! address); when it answers, the TwiML `<Dial>`s the destination with `callerId` = `From` (the
//! request's caller id, else `originate_caller_id`, a Twilio number). `twiml_url` replaces the
//! inline TwiML with a URL of the operator's. The answer's `sid` is the call id. No retries.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, header};

use super::{base_url, caller_id, json_reason, not_accepted};
use crate::settings::{required, required_secret};
use crate::transport::{HttpRequest, Reply, Transport, segment};
use crate::{HangUpRequest, OriginateError, OriginateRequest, Originated, VendorSettings};

pub(crate) const API: &str = "https://api.twilio.com";
const NAME: &str = "Twilio";

pub(crate) async fn originate(
    settings: &VendorSettings,
    request: &OriginateRequest,
    transport: &Transport,
) -> Result<Originated, OriginateError> {
    let (account, token) = credentials(settings)?;
    let from = caller_id(request, settings).ok_or_else(|| {
        OriginateError::NotConfigured(
            "Twilio needs a From number: the request's caller_id or the source's originate_caller_id".into(),
        )
    })?;
    let to = match (request.agent.number.as_deref(), request.agent.vendor_id.as_deref()) {
        (Some(number), _) => number,
        (None, Some(address)) if address.starts_with("client:") || address.starts_with("sip:") => address,
        _ => {
            return Err(OriginateError::Invalid(
                "Twilio rings the agent's number, or a vendor_id that is a client: or sip: address".into(),
            ));
        }
    };
    // Built in a block: the serializer holds a non-`Sync` encoder and must not live across the
    // await below (callers run this future on a multi-threaded runtime).
    let form = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", to).append_pair("From", from);
        match settings.twiml_url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(url) => form.append_pair("Url", url),
            None => form.append_pair("Twiml", &dial_twiml(from, &request.destination)),
        };
        form.finish()
    };
    let base = base_url(settings, Some(API), NAME)?;
    let url = format!("{base}/2010-04-01/Accounts/{}/Calls.json", segment(account));
    let reply = transport.send(&post(url, account, token, form)?).await?;
    if !reply.status.is_success() {
        return Err(not_accepted(NAME, &reply, reason(&reply)));
    }
    let sid = reply.json().and_then(|json| json["sid"].as_str().map(str::to_owned));
    Ok(Originated { vendor_call_id: sid, command_id: None, raw: summary(&reply) })
}

pub(crate) async fn hang_up(
    settings: &VendorSettings,
    request: &HangUpRequest,
    transport: &Transport,
) -> Result<(), OriginateError> {
    let (account, token) = credentials(settings)?;
    let base = base_url(settings, Some(API), NAME)?;
    let url = format!(
        "{base}/2010-04-01/Accounts/{}/Calls/{}.json",
        segment(account),
        segment(&request.vendor_call_id)
    );
    let form = form_urlencoded::Serializer::new(String::new()).append_pair("Status", "completed").finish();
    let reply = transport.send(&post(url, account, token, form)?).await?;
    if !reply.status.is_success() {
        return Err(not_accepted(NAME, &reply, reason(&reply)));
    }
    Ok(())
}

fn credentials(settings: &VendorSettings) -> Result<(&str, &str), OriginateError> {
    let account = required(settings.api_client_id.as_deref(), "api_client_id (the Account SID)", NAME)?;
    let token = required_secret(settings.secret_or_signing(), "api_client_secret (the auth token)", NAME)?;
    Ok((account, token))
}

fn post(url: String, account: &str, token: &str, form: String) -> Result<HttpRequest, OriginateError> {
    let basic = STANDARD.encode(format!("{account}:{token}"));
    HttpRequest::new(Method::POST, url)
        .secret_header(header::AUTHORIZATION, &format!("Basic {basic}"))?
        .header(header::ACCEPT, "application/json")?
        .form(form)
}

/// The TwiML that connects the answered agent leg to the destination.
fn dial_twiml(caller_id: &str, destination: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="{}"><Number>{}</Number></Dial></Response>"#,
        switchboard_model::escape_markup(caller_id),
        switchboard_model::escape_markup(destination)
    )
}

/// Twilio's error: `<code>: <message>`.
fn reason(reply: &Reply) -> String {
    let message = json_reason(reply);
    match reply.json().and_then(|json| json["code"].as_i64()) {
        Some(code) => format!("{code}: {message}"),
        None => message,
    }
}

/// The call's few fields worth keeping, not the whole resource.
fn summary(reply: &Reply) -> serde_json::Value {
    let json = reply.json().unwrap_or_default();
    let mut summary = serde_json::Map::new();
    for key in ["sid", "status", "to", "from", "direction"] {
        if let Some(value) = json.get(key) {
            summary.insert(key.to_owned(), value.clone());
        }
    }
    serde_json::Value::Object(summary)
}
