//! A small HTTP/1.1 server (hyper) with graceful shutdown, and the operational endpoints every
//! service exposes: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (the service can do its work now; load balancers and Kubernetes route by it).
//!
//! Readiness of a consumer stage means more than "its connections are up": it is ready once each
//! of its Kafka consumers is a member of its stable consumer group and owns input partitions
//! (`switchboard_kafka_assigned_partitions` non-zero). A replica beyond the partition count
//! legitimately gets none and stands by to take over at the next rebalance; it is ready as a
//! standby, since calling it unready would stall every rolling update and page nobody usefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub type Body = Full<Bytes>;

/// Whether a service is ready to take work. Starts not ready; a service marks itself ready once
/// its connections are up, and not ready again as soon as shutdown begins. Something the service
/// waits for beyond its own start-up (a Kafka consumer joining its group, see the module
/// documentation) can [`hold`](Health::hold) readiness until it is [`released`](Health::release);
/// this type knows nothing of what that is. A part that can no longer work at all (a Kafka
/// producer's fatal error) [`fail`](Health::fail)s the service: `/healthz` answers 503 with the
/// reason, so that a supervisor restarts it even if the process could not exit.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    /// Set once shutdown begins; wins over everything else, for good.
    draining: AtomicBool,
    /// False while something the service waits for is held back.
    released: AtomicBool,
    /// Why the service cannot go on, once something said so; for good.
    failure: OnceLock<String>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            released: AtomicBool::new(true),
            failure: OnceLock::new(),
        }
    }
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
            && self.ready.load(Ordering::Relaxed)
            && self.released.load(Ordering::Relaxed)
            && self.failure.get().is_none()
    }

    /// The service cannot go on: not alive nor ready from now on. The first reason is kept.
    pub fn fail(&self, reason: impl Into<String>) {
        let _ = self.failure.set(reason.into());
    }

    /// Why the service failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Shutdown has begun: not ready from now on, whatever the service still reports.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Holds readiness back until [`Health::release`] says the awaited dependency is there.
    pub fn hold(&self) {
        self.released.store(false, Ordering::Relaxed);
    }

    /// Whether what readiness was held for is there now.
    pub fn release(&self, released: bool) {
        self.released.store(released, Ordering::Relaxed);
    }
}

/// A JSON response with the given status.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    let _ = response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A short JSON error body: `{"error": "...", "message": "..."}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": code, "message": message.into() }))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let _ = response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Answers the probes, `/healthz` and `/readyz`; `None` for any other path. Ingress answers
/// them on its webhook port too, for load balancers that check the port they route to.
pub fn probe_response<B>(req: &Request<B>, health: &Health) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return matches!(req.uri().path(), "/healthz" | "/readyz").then(|| method_not_allowed("GET, HEAD"));
    }
    match req.uri().path() {
        "/healthz" => Some(match health.failure() {
            None => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            Some(reason) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "failed", "reason": reason}),
            ),
        }),
        "/readyz" if health.is_ready() => Some(json(StatusCode::OK, &serde_json::json!({"status": "ready"}))),
        "/readyz" => Some(json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "not ready"}))),
        _ => None,
    }
}

/// `405 Method Not Allowed`, with the `Allow` header listing the methods the path serves
/// (RFC 9110 requires it).
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response =
        error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("this path serves {allow}"));
    let _ = response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Answers the operational endpoints, `/metrics` and the probes; `None` for any other path.
/// They serve GET and HEAD; any other method is a 405.
pub fn ops_response<B>(req: &Request<B>, health: &Health) -> Option<Response<Body>> {
    if req.method() != Method::GET
        && req.method() != Method::HEAD
        && matches!(req.uri().path(), "/metrics" | "/healthz" | "/readyz")
    {
        return Some(method_not_allowed("GET, HEAD"));
    }
    if (req.method() == Method::GET || req.method() == Method::HEAD) && req.uri().path() == "/metrics" {
        crate::metrics::READY.set(i64::from(health.is_ready()));
        return Some(text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render(),
        ));
    }
    probe_response(req, health)
}

/// A connection beyond the limit: a 503 without reading its request, and closed.
async fn refuse_connection(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\n\
                          content-length: 0\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
    let _ = stream.shutdown().await;
}

/// Serves only the operational endpoints (the consumer services).
pub async fn serve_ops(listener: TcpListener, health: Arc<Health>, cancel: CancellationToken) {
    serve_with(listener, Limits::OPS, Duration::from_secs(2), cancel, move |req, _| {
        let health = health.clone();
        async move {
            ops_response(&req, &health)
                .unwrap_or_else(|| error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"))
        }
    })
    .await;
}

/// What one HTTP server grants its clients, so that none can hold more than its share: a slow or
/// hostile client (headers, then a byte every few seconds) is cut off by the deadlines, and a
/// flood of connections beyond the limit gets an immediate 503 instead of a task and a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// How long one request may take from its headers to the end of its answer, reading the
    /// body included; past it the client gets 408 and the connection is closed.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The ops endpoints: a scraper and a few probes.
    pub const OPS: Limits = Limits {
        max_connections: 64,
        header_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
    };
}

/// Accepts connections until `cancel` fires, then lets in-flight requests finish for up to
/// `drain` before returning. [`Limits::default`] applies; see [`serve_with`].
pub async fn serve<F, Fut, B>(listener: TcpListener, drain: Duration, cancel: CancellationToken, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + From<Body> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, Limits::default(), drain, cancel, handler).await;
}

/// A response body that is either whole or streamed (Server-Sent Events), for the services that
/// stream; every answer built with [`json`] or [`error`] converts into it.
#[derive(Debug)]
pub struct StreamingBody(http_body_util::combinators::BoxBody<Bytes, Infallible>);

impl StreamingBody {
    /// A body of the frames `body` yields, as they come.
    pub fn new<T>(body: T) -> Self
    where
        T: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
    {
        use http_body_util::BodyExt;
        Self(body.boxed())
    }
}

impl From<Body> for StreamingBody {
    fn from(body: Body) -> Self {
        Self::new(body)
    }
}

impl hyper::body::Body for StreamingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0.size_hint()
    }
}

/// [`serve`] with the given limits. The body type `B` is the handler's: [`Body`] for whole
/// answers, [`StreamingBody`] for a service that streams. Connections may be upgraded
/// (WebSocket): the handler answers 101 and takes the connection with `hyper::upgrade::on`; an
/// upgraded connection keeps its slot until it closes, and is the handler's to end on `cancel`.
pub async fn serve_with<F, Fut, B>(
    listener: TcpListener,
    limits: Limits,
    drain: Duration,
    cancel: CancellationToken,
    handler: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + From<Body> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::metrics::HTTP_CONNECTIONS_REFUSED.inc();
            tokio::spawn(refuse_connection(stream));
            continue;
        };
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let response = tokio::time::timeout(limits.request_timeout, handler(req, remote));
            async move {
                Ok::<_, Infallible>(response.await.unwrap_or_else(|_| {
                    let mut response = error(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        format!("the request took longer than {:?}", limits.request_timeout),
                    );
                    let _ =
                        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                    response.map(B::from)
                }))
            }
        });
        let connection = http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // On shutdown the connection finishes the request in flight (if any), then closes;
            // an idle keep-alive connection closes at once.
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "Connection ended with an error.");
            }
            drop(slot);
        });
    }
    drop(listener);
    // Every connection gives its slot back when it ends: all slots free means all drained.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(?drain, "Some HTTP connections did not finish in time.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).expect("request")
    }

    #[test]
    fn draining_wins_for_good() {
        let health = Health::new();
        health.set_ready(true);
        health.drain();
        assert!(!health.is_ready());
        health.set_ready(true);
        assert!(!health.is_ready(), "a late set_ready(true) does not undo a shutdown");
    }

    #[test]
    fn a_failure_fails_the_liveness_probe_for_good() {
        let health = Health::new();
        health.set_ready(true);
        health.fail("producer fenced");
        health.fail("a later reason");
        assert_eq!(health.failure(), Some("producer fenced"), "the first reason is kept");
        assert!(!health.is_ready());
        let live = probe_response(&get("/healthz"), &health).expect("an answer");
        assert_eq!(live.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(format!("{:?}", live.body()).contains("producer fenced"), "the reason is told");
        health.set_ready(true);
        assert_eq!(
            probe_response(&get("/readyz"), &health).map(|r| r.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
    }

    #[test]
    fn a_hold_keeps_readiness_until_released() {
        let health = Health::new();
        health.set_ready(true);
        assert!(health.is_ready(), "no consumer: ready when the service says so");
        health.hold();
        assert!(!health.is_ready(), "a dependency not there yet holds readiness");
        assert_eq!(
            probe_response(&get("/readyz"), &health).map(|r| r.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        health.release(true);
        assert_eq!(probe_response(&get("/readyz"), &health).map(|r| r.status()), Some(StatusCode::OK));
        health.set_ready(false);
        assert!(!health.is_ready(), "shutdown wins over a released hold");
    }

    #[test]
    fn metrics_are_only_on_the_ops_endpoints() {
        let health = Health::new();
        assert!(probe_response(&get("/metrics"), &health).is_none(), "the public port shows no metrics");
        assert_eq!(probe_response(&get("/healthz"), &health).map(|r| r.status()), Some(StatusCode::OK));
        let metrics = ops_response(&get("/metrics"), &health).expect("metrics on the ops port");
        assert_eq!(metrics.status(), StatusCode::OK);
        assert!(ops_response(&get("/v1/webhooks/x"), &health).is_none());
        let trace = Request::builder().method("TRACE").uri("/healthz").body(()).expect("request");
        let refused = ops_response(&trace, &health).expect("an answer");
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers().get(header::ALLOW).map(|v| v.as_bytes()), Some(&b"GET, HEAD"[..]));
    }
}
