//! Sends one rendered request to a profile's target: the host is resolved once and every address
//! checked by the SSRF guard, then the connection goes to exactly those addresses (a DNS answer
//! that changes between check and connect cannot move it); redirects are not followed; the answer
//! is read up to a cap; everything within a timeout.
//!
//! Input: a [`RenderedRequest`]. Output: the answer's status, headers and first bytes, or why
//! there was none. Connections are kept alive in [`Connections`], keyed by the origin *and* the
//! addresses the guard checked for it: every request is still resolved and checked, and reuses a
//! connection only when its host resolved to exactly the addresses that connection was opened
//! to. A new connection per request had cost the dispatcher a third of its time (BENCHMARKS.md).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::request::RenderedRequest;
use crate::ssrf::EgressPolicy;

/// What came back.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// At most the cap.
    pub body: Bytes,
    pub elapsed: Duration,
}

/// Why nothing came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The SSRF guard refused the target (or it did not resolve).
    Refused(String),
    Timeout,
    Failed(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Refused(reason) => write!(f, "refused by the SSRF guard: {reason}"),
            SendError::Timeout => f.write_str("no answer in time"),
            SendError::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Connects only to the addresses the guard checked, in order.
#[derive(Clone, Debug)]
struct Pinned(Vec<SocketAddr>);

impl tower_service::Service<Uri> for Pinned {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addrs = self.0.clone();
        Box::pin(async move {
            let stream = TcpStream::connect(addrs.as_slice()).await?;
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(stream))
        })
    }
}

/// The TLS client configuration: Mozilla's roots (compiled in) and ring, built once. Building
/// it per request (150 trust anchors copied each time) cost most of a delivery's CPU
/// (BENCHMARKS.md, dispatcher); a clone shares it.
static TLS: std::sync::LazyLock<rustls::ClientConfig> = std::sync::LazyLock::new(|| {
    use hyper_rustls::ConfigBuilderExt;
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions")
        .with_webpki_roots()
        .with_no_client_auth()
});

type PinnedClient = Client<HttpsConnector<Pinned>, Full<Bytes>>;

/// Clients at most; beyond, all are dropped (their idle connections close) and new ones made.
const MAX_CLIENTS: usize = 256;
/// Idle connections kept per client, and for how long.
const IDLE_PER_CLIENT: usize = 32;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Kept-alive connections, one client per (origin, checked addresses).
#[derive(Default)]
pub struct Connections {
    clients: Mutex<HashMap<(String, Vec<SocketAddr>), PinnedClient>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clients = self.clients.lock().map_or(0, |c| c.len());
        f.debug_struct("Connections").field("clients", &clients).finish()
    }
}

impl Connections {
    fn client(&self, origin: &str, addrs: Vec<SocketAddr>) -> PinnedClient {
        let key = (origin.to_owned(), addrs);
        let Ok(mut clients) = self.clients.lock() else { return Self::build(key.1) };
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let client = Self::build(key.1.clone());
        let _ = clients.insert(key, client.clone());
        client
    }

    fn build(addrs: Vec<SocketAddr>) -> PinnedClient {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(TLS.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(Pinned(addrs));
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_CLIENT)
            .build(connector)
    }
}

/// Sends `request` under `policy` on one of `connections`, reading at most `cap` bytes of the
/// answer, within `timeout`.
pub async fn send(
    policy: &EgressPolicy,
    connections: &Connections,
    request: &RenderedRequest,
    timeout: Duration,
    cap: usize,
) -> Result<Answer, SendError> {
    let started = Instant::now();
    let exchange = async {
        // Only the origin: the guard needs no more, and its errors then cannot quote a secret
        // from the path or the query.
        let origin = format!(
            "{}://{}",
            request.uri.scheme_str().unwrap_or("http"),
            request.uri.authority().map_or("", |a| a.as_str())
        );
        let addrs = policy.resolve_url(&origin).await.map_err(|e| SendError::Refused(e.to_string()))?;
        let client = connections.client(&origin, addrs);
        let mut builder = Request::builder().method(request.method.clone()).uri(request.uri.clone());
        if let Some(headers) = builder.headers_mut() {
            headers.extend(request.headers.clone());
        }
        let outgoing = builder
            .body(Full::new(Bytes::from(request.body.clone())))
            .map_err(|e| SendError::Failed(format!("cannot build the request: {e}")))?;
        let response = client
            .request(outgoing)
            .await
            // The error's causes, not the request (whose URL may carry a token).
            .map_err(|e| SendError::Failed(switchboard_core::errors::chain(&e)))?;
        let (parts, mut body) = response.into_parts();
        // Read up to the cap, then stop: what a receiver sends beyond it is not our business.
        let mut kept: Vec<u8> = Vec::new();
        while kept.len() < cap {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        // The loop runs while `kept` is shorter than the cap.
                        let room = cap.saturating_sub(kept.len());
                        kept.extend_from_slice(data.get(..room.min(data.len())).unwrap_or(&data));
                    }
                }
                Some(Err(error)) => return Err(SendError::Failed(format!("reading the answer: {error}"))),
                None => break,
            }
        }
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: Bytes::from(kept),
            elapsed: started.elapsed(),
        })
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(SendError::Timeout))
}

#[cfg(test)]
#[path = "send_tests.rs"]
mod tests;
