//! The HTTP(S) client the recordings stage calls vendor APIs with.
//!
//! rustls with Mozilla's root certificates compiled in (`webpki-roots`), so that certificate
//! checks do not depend on the host's CA bundle; plain `http://` is allowed too, for a vendor API
//! behind a local proxy (and for tests). Redirects are never followed: Mango answers a recording
//! request with `302` and the link in `Location`, which is the answer itself. Every call has a
//! deadline covering connection, request and the whole body, and bodies are capped, since a
//! vendor's answer here is a small JSON document.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest vendor answer read; a recording-link answer is a few hundred bytes.
const MAX_BODY: usize = 256 * 1024;

/// An answer from a vendor's API.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The start of the body as text, for error reasons (vendors explain refusals there).
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        text.trim().to_owned()
    }
}

/// Why a call got no answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// A shared, pooled client.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let inner =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Self { inner }
    }

    /// Sends `request` and reads the answer, all within `timeout`.
    pub async fn call(&self, request: Request<Full<Bytes>>, timeout: Duration) -> Result<Reply, CallError> {
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| CallError::Failed(switchboard_core::errors::chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError::Failed(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Reply { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(CallError::Timeout(timeout)))
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}
