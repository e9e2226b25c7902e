//! Telphin (Телфин): the REST API's callback resource.
//!
//! Sources followed: Telphin's API documentation, "Callback (/callback/)"
//! (ucom4b.atlassian.net/wiki/spaces/RACD/pages/28279157, the English version of
//! ringme-confluence pageId=1901921362: every field, `src_num` an array, `dst_num` required), its
//! integration guide (seed 001, "Call Initiation": the PBX calls `src_num` first, then `dst_num`;
//! pass `caller_id_name` and `caller_id_number` equal to `dst_num` so that the agent's phone shows
//! whom they are calling and redial works), and, for the answer's and errors' shape, the Go client
//! xdimedrolx/telphin-go-sdk (`{"call_api_id", "call_id"}`; errors `{"message"}`).
//!
//! `POST {api}/extension/{extension_id}/callback/`, JSON, `Authorization: Bearer <token>`, the
//! token from OAuth2 client credentials at `api_token_url` (form `grant_type=client_credentials`,
//! `client_id`, `client_secret`), cached until shortly before `expires_in`. The extension id is the
//! agent's `vendor_id`, else the source's `telphin_extension_id`; `src_num` is the agent's
//! extension (else number). Retries: the callback is never sent twice, except after a `401` with
//! a cached token (a refused token places nothing), once with a fresh one.

use http::{Method, StatusCode, header};
use serde_json::json;
use switchboard_model::Secret;

use super::{base_url, caller_id, dialled, json_reason, not_accepted};
use crate::settings::{required, required_secret};
use crate::transport::{HttpRequest, Reply, Transport, segment};
use crate::{OriginateError, OriginateRequest, Originated, VendorSettings};

pub(crate) const API: &str = "https://apiproxy.telphin.ru/api/ver1.0";
pub(crate) const TOKEN_URL: &str = "https://apiproxy.telphin.ru/oauth/token";
const NAME: &str = "Telphin";

pub(crate) async fn originate(
    settings: &VendorSettings,
    request: &OriginateRequest,
    transport: &Transport,
) -> Result<Originated, OriginateError> {
    let client_id = required(settings.api_client_id.as_deref(), "api_client_id", NAME)?;
    let secret = required_secret(settings.api_client_secret.as_ref(), "api_client_secret", NAME)?;
    let extension_id = request
        .agent
        .vendor_id
        .as_deref()
        .or(settings.telphin_extension_id.as_deref())
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| {
            OriginateError::NotConfigured(
                "Telphin needs the agent's vendor_id (its extension id) or the source's telphin_extension_id"
                    .into(),
            )
        })?;
    let source = request.agent.extension.as_deref().or(request.agent.number.as_deref()).ok_or_else(|| {
        OriginateError::Invalid(
            "Telphin calls the agent's extension (or number) first: the agent has neither".into(),
        )
    })?;
    let destination = dialled(settings, &request.destination);
    // The caller-id rule: the agent's phone shows the number it is about to be connected to.
    let mut body = json!({
        "src_num": [source],
        "dst_num": destination,
        "caller_id_name": destination,
        "caller_id_number": destination,
    });
    if let Some(presented) = caller_id(request, settings) {
        body["dst_ani"] = json!(presented);
    }
    let base = base_url(settings, Some(API), NAME)?;
    let token_url = settings.api_token_url.as_deref().filter(|u| !u.trim().is_empty()).unwrap_or(TOKEN_URL);
    let url = format!("{base}/extension/{}/callback/", segment(extension_id));
    for second_try in [false, true] {
        let (token, cached) = token(transport, token_url, client_id, secret).await?;
        let call = HttpRequest::new(Method::POST, url.clone())
            .secret_header(header::AUTHORIZATION, &format!("Bearer {}", token.expose()))?
            .header(header::ACCEPT, "application/json")?
            .json(&body)?;
        let reply = transport.send(&call).await?;
        if reply.status == StatusCode::UNAUTHORIZED && cached && !second_try {
            transport.forget_token(token_url, client_id, &token);
            continue;
        }
        if !reply.status.is_success() {
            return Err(not_accepted(NAME, &reply, json_reason(&reply)));
        }
        let json = reply.json().unwrap_or_default();
        let id = |key: &str| match &json[key] {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        return Ok(Originated {
            vendor_call_id: id("call_id"),
            command_id: id("call_api_id"),
            raw: reply.summary(),
        });
    }
    // The second try returns whatever it gets; this is not reached.
    Err(OriginateError::Refused {
        status: Some(401),
        reason: "Telphin refused a freshly issued token".into(),
    })
}

/// The client's bearer token and whether it came from the cache.
async fn token(
    transport: &Transport,
    token_url: &str,
    client_id: &str,
    secret: &str,
) -> Result<(Secret, bool), OriginateError> {
    if let Some(token) = transport.cached_token(token_url, client_id) {
        return Ok((token, true));
    }
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", client_id)
        .append_pair("client_secret", secret)
        .finish();
    let request = HttpRequest::new(Method::POST, token_url.to_owned())
        .header(header::ACCEPT, "application/json")?
        .form(form)?;
    let reply = transport.send(&request).await?;
    if reply.status != StatusCode::OK {
        let reason =
            format!("Telphin's token endpoint refused the source's OAuth client: {}", token_reason(&reply));
        return Err(not_accepted(NAME, &reply, reason));
    }
    let json = reply.json().unwrap_or_default();
    let value = json["access_token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| {
        OriginateError::Unavailable("Telphin's token endpoint answered 200 without an access_token".into())
    })?;
    // `expires_in` in seconds, as a number or text; an hour (Telphin's lifetime) when absent.
    let expires_in = json["expires_in"]
        .as_u64()
        .or_else(|| json["expires_in"].as_str().and_then(|s| s.trim().parse().ok()))
        .unwrap_or(3600);
    let token = Secret::new(value);
    transport.keep_token(token_url, client_id, token.clone(), expires_in);
    Ok((token, false))
}

/// An OAuth error answer's reason (`error_description`, `error`), else the common one.
fn token_reason(reply: &Reply) -> String {
    let json = reply.json().unwrap_or_default();
    ["error_description", "error"]
        .iter()
        .find_map(|key| json[*key].as_str().filter(|s| !s.is_empty()).map(str::to_owned))
        .unwrap_or_else(|| json_reason(reply))
}
