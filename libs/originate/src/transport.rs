//! The one way out: an HTTP(S) client for the vendors' web APIs (AMI is in [`crate::ami`]).
//!
//! rustls with Mozilla's roots compiled in, as the recordings stage's client; plain `http://`
//! only to a loopback address (tests, a local proxy), since credentials travel with every
//! request. Each exchange (connection, request and the whole answer) has a deadline and the
//! answer a size cap; redirects are never followed. A request is sent again only when the
//! connection could not be made at all, so that it provably never reached the vendor: a call
//! placed twice is worse than one that failed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchboard_model::Secret;

use crate::OriginateError;
use crate::error::TransportError;

/// Limits of every exchange with a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportConfig {
    /// Deadline of one exchange: connection, request and the whole answer (AMI: each step).
    pub timeout: Duration,
    /// Largest answer read; vendors answer a click-to-call with a few hundred bytes.
    pub max_answer_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), max_answer_bytes: 64 * 1024 }
    }
}

/// Longest an OAuth token is reused, whatever `expires_in` says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// An OAuth2 bearer token and when to stop using it.
#[derive(Clone)]
struct CachedToken {
    value: Secret,
    use_until: Instant,
}

/// The shared HTTP client, AMI limits and the OAuth token cache (Telphin). Cheap to share by
/// reference; one per process.
pub struct Transport {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    config: TransportConfig,
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Default for Transport {
    fn default() -> Self {
        Self::new(TransportConfig::default())
    }
}

/// One HTTP request, kept so that it can be sent again.
#[derive(Debug, Clone)]
pub(crate) struct HttpRequest {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

impl HttpRequest {
    pub(crate) fn new(method: Method, url: String) -> Self {
        Self { method, url, headers: Vec::new(), body: Bytes::new() }
    }

    /// Adds a header; a value that is not a valid header (never the case for what vendors get
    /// here, all checked or encoded) is refused as an invalid request.
    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Result<Self, OriginateError> {
        let value = HeaderValue::from_str(value)
            .map_err(|_| OriginateError::Invalid(format!("a value of the {name} header is not valid")))?;
        self.headers.push((name, value));
        Ok(self)
    }

    /// Marks the header as sensitive (kept out of hyper's debug output).
    pub(crate) fn secret_header(self, name: HeaderName, value: &str) -> Result<Self, OriginateError> {
        let mut request = self.header(name, value)?;
        if let Some((_, value)) = request.headers.last_mut() {
            value.set_sensitive(true);
        }
        Ok(request)
    }

    pub(crate) fn form(self, form: String) -> Result<Self, OriginateError> {
        let mut request = self.header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")?;
        request.body = Bytes::from(form);
        Ok(request)
    }

    pub(crate) fn json(self, json: &serde_json::Value) -> Result<Self, OriginateError> {
        let mut request = self.header(http::header::CONTENT_TYPE, "application/json")?;
        request.body = Bytes::from(json.to_string());
        Ok(request)
    }

    fn build(&self) -> Result<Request<Full<Bytes>>, OriginateError> {
        let mut builder = Request::builder().method(self.method.clone()).uri(&self.url);
        for (name, value) in &self.headers {
            builder = builder.header(name, value.clone());
        }
        builder.body(Full::new(self.body.clone())).map_err(|e| {
            OriginateError::NotConfigured(format!("the vendor URL {:?} is not usable: {e}", self.url))
        })
    }
}

/// A vendor's answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The start of the body as one line of text, for reasons and summaries.
    pub(crate) fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect();
        text.trim().to_owned()
    }

    /// The answer as a short JSON summary: the JSON itself when it is small, else its start.
    pub(crate) fn summary(&self) -> serde_json::Value {
        match self.json() {
            Some(json) if json.to_string().len() <= 2048 => json,
            _ => serde_json::json!({ "status": self.status.as_u16(), "body": self.snippet() }),
        }
    }
}

impl Transport {
    pub fn new(config: TransportConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Self { http, config, tokens: Mutex::default() }
    }

    pub fn config(&self) -> TransportConfig {
        self.config
    }

    /// Sends `request` and reads the answer, again once only if no connection could be made.
    pub(crate) async fn send(&self, request: &HttpRequest) -> Result<Reply, OriginateError> {
        check_url(&request.url)?;
        match self.exchange(request.build()?, &request.url).await {
            Err(error) if error.is_connect() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(self.exchange(request.build()?, &request.url).await?)
            }
            reply => Ok(reply?),
        }
    }

    async fn exchange(&self, request: Request<Full<Bytes>>, url: &str) -> Result<Reply, TransportError> {
        let url = url.to_owned();
        let max = self.config.max_answer_bytes;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|source| {
                if source.is_connect() {
                    TransportError::Connect { url: url.clone(), source }
                } else {
                    TransportError::Exchange { url: url.clone(), source }
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max)
                .collect()
                .await
                .map_err(|source| TransportError::Body { url: url.clone(), source })?
                .to_bytes();
            Ok(Reply { status: parts.status, body })
        };
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(TransportError::Timeout { url: url.clone(), timeout }))
    }

    /// A cached OAuth token of `client_id` at `token_url`, if still usable.
    pub(crate) fn cached_token(&self, token_url: &str, client_id: &str) -> Option<Secret> {
        let tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens
            .get(&(token_url.to_owned(), client_id.to_owned()))
            .filter(|t| t.use_until > Instant::now())
            .map(|t| t.value.clone())
    }

    /// Keeps a token for reuse until shortly before `expires_in` seconds (capped) have passed.
    pub(crate) fn keep_token(&self, token_url: &str, client_id: &str, value: Secret, expires_in: u64) {
        let lifetime = Duration::from_secs(expires_in).min(MAX_TOKEN_LIFETIME);
        // A minute early (half the lifetime for short ones), so a token never expires in flight.
        let margin = (lifetime / 2).min(Duration::from_secs(60));
        let now = Instant::now();
        let use_until = now.checked_add(lifetime.saturating_sub(margin)).unwrap_or(now);
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens.insert((token_url.to_owned(), client_id.to_owned()), CachedToken { value, use_until });
    }

    /// Drops a token the API refused, unless another request replaced it meanwhile.
    pub(crate) fn forget_token(&self, token_url: &str, client_id: &str, refused: &Secret) {
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (token_url.to_owned(), client_id.to_owned());
        if tokens.get(&key).is_some_and(|t| t.value == *refused) {
            tokens.remove(&key);
        }
    }
}

/// `https://`, or `http://` to a loopback address; anything else is a configuration error.
pub(crate) fn check_url(url: &str) -> Result<(), OriginateError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| OriginateError::NotConfigured(format!("the vendor URL {url:?} is not a URL")))?;
    match uri.scheme_str() {
        Some("https") if uri.host().is_some() => Ok(()),
        Some("http") if uri.host().is_some_and(is_loopback) => Ok(()),
        Some("http") => Err(OriginateError::NotConfigured(format!(
            "the vendor URL {url:?} is plain http to a non-loopback host; credentials need https"
        ))),
        _ => Err(OriginateError::NotConfigured(format!("the vendor URL {url:?} is not an http(s) URL"))),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Percent-encodes one URL path segment.
pub(crate) fn segment(text: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url("https://apiproxy.telphin.ru/api/ver1.0").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://[::1]:8080/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(matches!(check_url("http://api.example.com/x"), Err(OriginateError::NotConfigured(_))));
        assert!(matches!(check_url("ftp://x/"), Err(OriginateError::NotConfigured(_))));
        assert!(matches!(check_url("not a url"), Err(OriginateError::NotConfigured(_))));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("CA1/../x y"), "CA1%2F..%2Fx%20y");
    }
}
