//! How ingress knows a request comes from the source it names, before anything is published.
//!
//! Every source has a generated secret (256 random bits, stored only as its SHA-256): the
//! default proof is that secret as the HTTP Basic password (user name = source id) or, for PBXs
//! that can only be given a URL (Telphin, Sipuni, OnlinePBX...), as a `token` query parameter.
//! Vendors that sign their requests are checked with the vendor's own scheme and the source's
//! `signing_secret` (Twilio auth token, Zadarma API secret, Mango salt, Aircall token), which
//! has to be stored as given because an HMAC needs the key itself.
//! Every comparison of secret material is constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
pub use switchboard_model::SourceSettings;

use crate::Request;

/// The query parameter that carries the source's secret for URL-only vendors. Ingress removes it
/// from the stored query.
pub const TOKEN_PARAM: &str = "token";

/// What ingress knows about the source a request names.
#[derive(Clone, Copy)]
pub struct SourceAuth<'a> {
    pub source_id: &'a str,
    /// SHA-256 of the source's generated secret.
    pub secret_sha256: &'a [u8; 32],
    pub signing_secret: Option<&'a str>,
    pub settings: &'a SourceSettings,
}

impl std::fmt::Debug for SourceAuth<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceAuth").field("source_id", &self.source_id).finish_non_exhaustive()
    }
}

impl SourceAuth<'_> {
    /// Whether `secret` is the source's generated secret, in time independent of the content.
    pub fn secret_matches(&self, secret: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(secret).into();
        digest.ct_eq(self.secret_sha256).into()
    }

    pub fn signing_secret(&self) -> Result<&str, AuthFailure> {
        self.signing_secret.filter(|s| !s.is_empty()).ok_or(AuthFailure::NotConfigured("signing_secret"))
    }
}

/// Why a request was not authenticated; every variant is answered 401 and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no credentials")]
    Missing,
    #[error("wrong credentials or signature")]
    Wrong,
    /// The source lacks a setting its vendor's scheme needs: an operator error, logged as such.
    #[error("the source has no {0} configured")]
    NotConfigured(&'static str),
}

/// The default scheme: HTTP Basic (user = source id, password = secret) or `?token=secret`.
pub fn basic_or_token(request: &Request<'_>, source: &SourceAuth<'_>) -> Result<(), AuthFailure> {
    if let Some(header) = request.header("authorization") {
        return basic(header, source);
    }
    url_token(request, source)
}

/// The source's secret as the `token` query parameter, found by its decoded name exactly as
/// [`query_without_token`] finds it, so that whatever authenticates is also what is removed.
pub fn url_token(request: &Request<'_>, source: &SourceAuth<'_>) -> Result<(), AuthFailure> {
    match query_param(request.query, TOKEN_PARAM) {
        Some(token) => source.secret_matches(token.as_bytes()).then_some(()).ok_or(AuthFailure::Wrong),
        None => Err(AuthFailure::Missing),
    }
}

/// The URL token a source with `require_token` demands on top of its vendor's own check; `Ok`
/// for every other source.
pub fn required_token(request: &Request<'_>, source: &SourceAuth<'_>) -> Result<(), AuthFailure> {
    match source.settings.require_token {
        Some(true) => url_token(request, source),
        _ => Ok(()),
    }
}

fn basic(header: &str, source: &SourceAuth<'_>) -> Result<(), AuthFailure> {
    let encoded =
        header.strip_prefix("Basic ").or_else(|| header.strip_prefix("basic ")).ok_or(AuthFailure::Wrong)?;
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| AuthFailure::Wrong)?;
    let colon = decoded.iter().position(|&b| b == b':').ok_or(AuthFailure::Wrong)?;
    let (user, secret) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both checks always run, so timing does not tell which one failed.
    let user_ok = user == source.source_id.as_bytes();
    let secret_ok = source.secret_matches(secret);
    (user_ok & secret_ok).then_some(()).ok_or(AuthFailure::Wrong)
}

/// The first value of a query parameter, percent-decoded; names are compared decoded too, so
/// `%74oken` is `token`.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Whether one `name=value` pair of a query is the `token` parameter. The name is decoded by the
/// same parser [`query_param`] uses: comparing the raw text instead would let `?%74oken=<secret>`
/// authenticate and still be stored.
fn is_token_pair(pair: &str) -> bool {
    form_urlencoded::parse(pair.as_bytes()).next().is_some_and(|(name, _)| name == TOKEN_PARAM)
}

/// The query without the `token` parameter (every occurrence, however its name is encoded), so
/// the secret never reaches a raw record. Other parameters are kept byte for byte.
pub fn query_without_token(query: Option<&str>) -> Option<String> {
    let query = query?;
    if !query.split('&').any(is_token_pair) {
        return Some(query.to_owned());
    }
    let kept: Vec<&str> = query.split('&').filter(|pair| !pair.is_empty() && !is_token_pair(pair)).collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

pub fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchboard_model::Secret;

    use super::*;

    fn request<'a>(headers: &'a BTreeMap<String, String>, query: Option<&'a str>) -> Request<'a> {
        Request { method: "POST", subpath: "", query, content_type: None, headers, body: b"" }
    }

    #[test]
    fn header_and_query_credentials_are_checked_before_the_body_and_body_credentials_after() {
        let hash: [u8; 32] = Sha256::digest(b"s3cret").into();
        let settings = SourceSettings::default();
        let source =
            SourceAuth { source_id: "acme", secret_sha256: &hash, signing_secret: None, settings: &settings };
        let none = BTreeMap::new();
        let head = request(&none, Some("token=nope"));
        let generic = crate::adapter_for(crate::Vendor::Generic);
        assert_eq!(crate::authenticate_head(generic, &head, &source), Some(Err(AuthFailure::Wrong)));
        let right = request(&none, Some("token=s3cret"));
        assert_eq!(crate::authenticate_head(generic, &right, &source), Some(Ok(())));
        let get = Request { method: "GET", ..request(&none, Some("token=nope")) };
        assert_eq!(crate::authenticate_head(generic, &get, &source), None, "the 405 comes first");
        for signing in
            [crate::Vendor::Twilio, crate::Vendor::Aircall, crate::Vendor::Zadarma, crate::Vendor::Mango]
        {
            assert_eq!(
                crate::authenticate_head(crate::adapter_for(signing), &head, &source),
                None,
                "{signing:?}"
            );
        }
    }

    #[test]
    fn basic_and_token_accept_only_the_right_secret() {
        let hash: [u8; 32] = Sha256::digest(b"s3cret").into();
        let settings = SourceSettings::default();
        let source =
            SourceAuth { source_id: "acme", secret_sha256: &hash, signing_secret: None, settings: &settings };
        let none = BTreeMap::new();
        assert_eq!(basic_or_token(&request(&none, None), &source), Err(AuthFailure::Missing));
        assert_eq!(basic_or_token(&request(&none, Some("a=1&token=s3cret")), &source), Ok(()));
        assert_eq!(basic_or_token(&request(&none, Some("token=nope")), &source), Err(AuthFailure::Wrong));
        let mut headers = BTreeMap::new();
        let _ = headers.insert("authorization".into(), format!("Basic {}", base64(b"acme:s3cret")));
        assert_eq!(basic_or_token(&request(&headers, None), &source), Ok(()));
        let _ = headers.insert("authorization".into(), format!("Basic {}", base64(b"other:s3cret")));
        assert_eq!(basic_or_token(&request(&headers, None), &source), Err(AuthFailure::Wrong));
    }

    #[test]
    fn recording_api_settings_are_checked_and_the_secret_never_shown() {
        let settings: SourceSettings = serde_json::from_str(
            r#"{"recording_api_url": "https://apiproxy.telphin.ru/api/ver1.0", "api_client_id": "app-1",
                "api_client_secret": "0123456789abcdef"}"#,
        )
        .expect("parses");
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.api_client_secret.as_ref().map(Secret::expose), Some("0123456789abcdef"));
        assert!(!format!("{settings:?}").contains("0123456789abcdef"), "{settings:?}");
        let stored = serde_json::to_value(&settings).expect("serialises");
        assert_eq!(stored["api_client_secret"], "0123456789abcdef", "stored as given, like signing secrets");
        for bad in [
            r#"{"recording_api_url": "apiproxy.telphin.ru"}"#,
            r#"{"api_token_url": "ftp://x"}"#,
            r#"{"api_client_secret": ""}"#,
        ] {
            let settings: SourceSettings = serde_json::from_str(bad).expect("parses");
            assert!(settings.validate().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<SourceSettings>(r#"{"api_secret": "x"}"#).is_err(), "unknown key");
    }

    #[test]
    fn the_token_never_stays_in_the_query() {
        assert_eq!(query_without_token(Some("token=x")), None);
        assert_eq!(query_without_token(Some("a=1&token=x&b=2")).as_deref(), Some("a=1&b=2"));
        assert_eq!(query_without_token(Some("a=1")).as_deref(), Some("a=1"));
        assert_eq!(query_without_token(Some("a=%20&tokens=1")).as_deref(), Some("a=%20&tokens=1"));
        assert_eq!(query_without_token(None), None);
    }

    #[test]
    fn an_encoded_token_name_authenticates_only_if_it_is_also_removed() {
        let hash: [u8; 32] = Sha256::digest(b"S").into();
        let settings = SourceSettings::default();
        let source =
            SourceAuth { source_id: "acme", secret_sha256: &hash, signing_secret: None, settings: &settings };
        let none = BTreeMap::new();
        for query in ["%74oken=S", "a=1&%74%6F%6B%65%6E=S", "%74oken=S&token=S&b=2", "token=S&&"] {
            // Whatever the lookup accepts as the token...
            assert_eq!(basic_or_token(&request(&none, Some(query)), &source), Ok(()), "{query}");
            // ...is gone from what is stored.
            let stored = query_without_token(Some(query)).unwrap_or_default();
            assert!(!stored.contains('S'), "{query} kept as {stored}");
            assert_eq!(query_param(Some(&stored), TOKEN_PARAM), None, "{query} kept as {stored}");
        }
        assert_eq!(query_without_token(Some("a=1&%74oken=S&b=2")).as_deref(), Some("a=1&b=2"));
        // `+` decodes to a space: not the token, so neither accepted nor removed.
        assert_eq!(basic_or_token(&request(&none, Some("tok+en=S")), &source), Err(AuthFailure::Missing));
        assert_eq!(query_without_token(Some("tok+en=S")).as_deref(), Some("tok+en=S"));
    }

    #[test]
    fn require_token_demands_the_url_token_on_top() {
        let hash: [u8; 32] = Sha256::digest(b"S").into();
        let (default, required) = (
            SourceSettings::default(),
            SourceSettings { require_token: Some(true), ..SourceSettings::default() },
        );
        let source =
            |settings| SourceAuth { source_id: "acme", secret_sha256: &hash, signing_secret: None, settings };
        let none = BTreeMap::new();
        assert_eq!(required_token(&request(&none, None), &source(&default)), Ok(()));
        assert_eq!(required_token(&request(&none, None), &source(&required)), Err(AuthFailure::Missing));
        assert_eq!(
            required_token(&request(&none, Some("token=T")), &source(&required)),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(required_token(&request(&none, Some("token=S")), &source(&required)), Ok(()));
        let parsed: SourceSettings = serde_json::from_str(r#"{"require_token": true}"#).expect("parses");
        assert_eq!(parsed, required);
    }

    #[test]
    fn hmac_matches_rfc_2202_and_4231_vectors() {
        // RFC 2202 test case 2 and RFC 4231 test case 2 ("Jefe").
        let data = b"what do ya want for nothing?";
        assert_eq!(hex(&hmac_sha1(b"Jefe", data)), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", data)),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
