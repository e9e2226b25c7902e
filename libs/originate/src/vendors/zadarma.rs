//! Zadarma: the callback request of API v1. Zadarma has no hang-up API.
//!
//! Sources followed: Zadarma's OpenAPI description (github.com/zadarma/openapi,
//! `spec/v1/openapi.json`, `/v1/request/callback`: `GET`, query `from` (required: "your phone
//! number, SIP number, PBX extension..."), `to` (required), optional `sip` and `predicted`; answer
//! `{"status", "from", "to", "time"}`, no call id; auth header `Authorization: userKey:signature`,
//! `signature = base64(HMAC-SHA1(method + queryString + md5(queryString), secret))`, the query
//! sorted by name and encoded like PHP's `http_build_query` (RFC 1738)), and Zadarma's official
//! PHP client (github.com/zadarma/user-api-v1, `lib/Client.php`: `format=json` is added to the
//! parameters before signing, and the HMAC is its hex digest before base64;
//! `examples/callback.php`: `status` is `success`, else `message` says why). The same signing
//! as `services/recordings/src/vendors.rs`, written again here.
//!
//! `from` is the agent's extension (else number); `to` the destination's international digits.
//! Zadarma presents the `from` extension's own caller id; `caller_id` is not passed. No retries.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::{Method, header};
use md5::{Digest, Md5};

use super::{base_url, digits, hex, json_reason, not_accepted};
use crate::settings::{required, required_secret};
use crate::transport::{HttpRequest, Transport};
use crate::{OriginateError, OriginateRequest, Originated, VendorSettings};

pub(crate) const API: &str = "https://api.zadarma.com";
const NAME: &str = "Zadarma";
const METHOD: &str = "/v1/request/callback/";

pub(crate) async fn originate(
    settings: &VendorSettings,
    request: &OriginateRequest,
    transport: &Transport,
) -> Result<Originated, OriginateError> {
    let key = required(settings.api_client_id.as_deref(), "api_client_id (the API key)", NAME)?;
    let secret = required_secret(settings.secret_or_signing(), "api_client_secret (the API secret)", NAME)?;
    let from = request.agent.extension.as_deref().or(request.agent.number.as_deref()).ok_or_else(|| {
        OriginateError::Invalid(
            "Zadarma calls the agent's extension (or number) first: the agent has neither".into(),
        )
    })?;
    let from = digits(from);
    let params = BTreeMap::from([("format", "json"), ("from", from), ("to", digits(&request.destination))]);
    let query = php_query(&params);
    let base = base_url(settings, Some(API), NAME)?;
    let call = HttpRequest::new(Method::GET, format!("{base}{METHOD}?{query}"))
        .secret_header(header::AUTHORIZATION, &authorization(key, secret, METHOD, &query))?
        .header(header::ACCEPT, "application/json")?;
    let reply = transport.send(&call).await?;
    if !reply.status.is_success() {
        return Err(not_accepted(NAME, &reply, json_reason(&reply)));
    }
    match reply.json().as_ref().and_then(|json| json["status"].as_str()) {
        Some("success") => Ok(Originated { vendor_call_id: None, command_id: None, raw: reply.summary() }),
        Some(_) => {
            Err(OriginateError::Refused { status: Some(reply.status.as_u16()), reason: json_reason(&reply) })
        }
        None => Err(OriginateError::Unavailable(format!(
            "Zadarma answered {} without a status (the call may have been placed): {}",
            reply.status.as_u16(),
            reply.snippet()
        ))),
    }
}

/// The query as PHP's `http_build_query(..., PHP_QUERY_RFC1738)` writes it, parameters in the
/// (sorted) order given: everything but `A-Z a-z 0-9 - _ .` percent-encoded, spaces as `+`.
pub(crate) fn php_query(params: &BTreeMap<&str, &str>) -> String {
    const RFC1738: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
    let encode =
        |text: &str| percent_encoding::utf8_percent_encode(text, RFC1738).to_string().replace("%20", "+");
    params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// `<key>:base64(hex(HMAC-SHA1(secret, method + query + hex(md5(query)))))`.
pub(crate) fn authorization(key: &str, secret: &str, method: &str, sorted_query: &str) -> String {
    let md5 = hex(&Md5::digest(sorted_query.as_bytes()));
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(format!("{method}{sorted_query}{md5}").as_bytes());
    format!("{key}:{}", STANDARD.encode(hex(&mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_official_algorithm() {
        // Computed independently (Python: hmac/hashlib/base64, as the PHP client does).
        let query = "format=json&from=101&to=442079460000";
        assert_eq!(
            authorization("key", "zadarma-secret", METHOD, query),
            "key:MzU4NzNlYzgwMDk5OTkxNWI4MTUyYzg1NzFjM2I2MDhmZWQ0YWI4Mg=="
        );
    }

    #[test]
    fn query_is_encoded_like_php() {
        let params = BTreeMap::from([("b", "a b*~"), ("a", "+1")]);
        assert_eq!(php_query(&params), "a=%2B1&b=a+b%2A%7E");
    }
}
