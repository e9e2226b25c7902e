//! OAuth 2.0 access tokens for a profile whose CRM takes one instead of a fixed credential: the
//! refresh-token grant of RFC 6749 §6. Bitrix24 needs it (its telephony methods work only in an
//! application's context, not through an inbound webhook), and HubSpot's and amoCRM's public
//! integrations work the same way.
//!
//! A profile's `oauth` holds the token endpoint, the client's id and secret, and the refresh token
//! the administrator obtained once (by installing the application). The dispatcher trades it for
//! an access token, sends that with each request ([`Placement`]), and trades again when the token
//! expires or the CRM turns it away. Most CRMs rotate the refresh token on every trade (the one
//! used stops working), so the newest one is stored, sealed, in PostgreSQL ([`crate::tokens`]).
//!
//! This module is the pure half: the trade's request ([`refresh_request`]), reading its answer
//! ([`read_grant`]), putting a token into a request ([`apply`]) and telling a refused token from
//! other failures ([`token_refused`]).

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, Uri};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_model::Secret;

use crate::request::RenderedRequest;

/// A profile's OAuth client and its refresh token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth {
    /// The token endpoint (`https://oauth.bitrix.info/oauth/token/` for Bitrix24). Literal and
    /// checked by the SSRF guard like every step's URL.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The refresh token the dispatcher starts from. Once traded, the rotated one in the database
    /// is used instead, until the profile is saved with a different one.
    pub refresh_token: Secret,
    #[serde(default)]
    pub grant_request: GrantRequest,
    #[serde(default)]
    pub send_as: Placement,
}

/// How the token endpoint takes the trade's parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantRequest {
    /// RFC 6749 §6 with the client's credentials in the body (`client_secret_post`): a form POST.
    #[default]
    PostForm,
    /// Bitrix24's documented form: a GET with the parameters in the query.
    GetQuery,
}

/// Where a request carries the access token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    #[default]
    Bearer,
    /// A URL parameter of this name (Bitrix24: `auth`).
    UrlParam(String),
}

/// What the token endpoint granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub access_token: Secret,
    /// A rotated refresh token, when the endpoint issued one; otherwise the old one stays valid.
    pub refresh_token: Option<Secret>,
    /// Seconds the access token lives, when the endpoint says.
    pub expires_in: Option<u64>,
}

/// Why no access token was granted. Never quotes a token or the client's secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The endpoint refused the refresh token or the client (RFC 6749 §5.2: `invalid_grant`,
    /// `invalid_client`...): a person must install the application again or fix the profile.
    #[error("the token endpoint refused the grant: {error}{}", described(.description))]
    Refused { error: String, description: Option<String> },
    /// Any other answer: tried again on the delivery's schedule.
    #[error("the token endpoint answered HTTP {status} without an access token")]
    Unexpected { status: u16 },
    #[error("the token endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("the token request cannot be built: {0}")]
    Request(String),
}

fn described(text: &Option<String>) -> String {
    text.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

/// The trade of `refresh_token` for an access token.
pub fn refresh_request(oauth: &OAuth, refresh_token: &Secret) -> Result<RenderedRequest, GrantError> {
    let pairs = [
        ("grant_type", "refresh_token"),
        ("client_id", oauth.client_id.as_str()),
        ("client_secret", oauth.client_secret.expose()),
        ("refresh_token", refresh_token.expose()),
    ];
    let mut encoded = form_urlencoded::Serializer::new(String::new());
    encoded.extend_pairs(pairs);
    let encoded = encoded.finish();
    let mut headers = HeaderMap::new();
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
    let (method, url, body) = match oauth.grant_request {
        GrantRequest::PostForm => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
            (Method::POST, oauth.token_url.clone(), encoded.into_bytes())
        }
        GrantRequest::GetQuery => {
            let joint = if oauth.token_url.contains('?') { '&' } else { '?' };
            (Method::GET, format!("{}{joint}{encoded}", oauth.token_url), Vec::new())
        }
    };
    let uri: Uri = url.parse().map_err(|_| GrantError::Request("the token URL is not a valid URI".into()))?;
    Ok(RenderedRequest { method, uri, shown_url: oauth.token_url.clone(), headers, body })
}

/// Reads the token endpoint's answer (RFC 6749 §5.1 and §5.2).
pub fn read_grant(status: u16, body: &[u8]) -> Result<Grant, GrantError> {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| json.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    if (200..300).contains(&status)
        && let Some(access) = text("access_token")
    {
        // Some endpoints send the lifetime as a string.
        let expires_in = json
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
        return Ok(Grant {
            access_token: Secret::new(access),
            refresh_token: text("refresh_token").map(Secret::new),
            expires_in,
        });
    }
    match text("error") {
        Some(error) if (400..500).contains(&status) => Err(GrantError::Refused {
            error: error.chars().take(100).collect(),
            description: text("error_description").map(|d| d.chars().take(300).collect()),
        }),
        _ => Err(GrantError::Unexpected { status }),
    }
}

/// Puts `token` where `placement` says; `None` (a dry run, which trades nothing) puts `***`.
/// The shown URL and a header's `Debug` never carry the token.
pub fn apply(
    request: &mut RenderedRequest,
    placement: &Placement,
    token: Option<&Secret>,
) -> Result<(), String> {
    let value = token.map_or("***", Secret::expose);
    match placement {
        Placement::Bearer => {
            let mut header = HeaderValue::from_str(&format!("Bearer {value}"))
                .map_err(|_| "the access token is not a valid header value".to_owned())?;
            header.set_sensitive(true);
            request.headers.insert(AUTHORIZATION, header);
        }
        Placement::UrlParam(name) => {
            let pair = |v: &str| {
                let mut encoded = form_urlencoded::Serializer::new(String::new());
                encoded.append_pair(name, v);
                encoded.finish()
            };
            let mut url = request.uri.to_string();
            for (url, pair) in [(&mut url, pair(value)), (&mut request.shown_url, pair("***"))] {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&pair);
            }
            request.uri =
                url.parse().map_err(|_| "the URL with the access token is not a valid URI".to_owned())?;
        }
    }
    Ok(())
}

/// Whether an answer says the access token itself was refused (expired, revoked), so that a new
/// one is worth trading for: 401 (RFC 6750 §3.1 `invalid_token`), or the error codes Bitrix24
/// sends (`expired_token`, `invalid_token`, `NO_AUTH_FOUND`) whatever the status.
pub fn token_refused(status: u16, body: &[u8]) -> bool {
    if status == 401 {
        return true;
    }
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    json.get("error")
        .and_then(Value::as_str)
        .is_some_and(|e| ["expired_token", "invalid_token", "NO_AUTH_FOUND"].contains(&e))
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
