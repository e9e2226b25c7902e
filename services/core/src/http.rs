//! A small HTTP/1.1 server (hyper) with graceful shutdown, and the operational endpoints every
//! service exposes: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (the service can do its work now; load balancers and Kubernetes route by it).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type Body = Full<Bytes>;

/// Whether a service is ready to take work. Starts not ready; a service marks itself ready once
/// its connections are up, and not ready again as soon as shutdown begins.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
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

/// Answers the operational endpoints; `None` for any other path.
pub fn ops_response<B>(req: &Request<B>, health: &Health) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    match req.uri().path() {
        "/metrics" => {
            Some(text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", crate::metrics::render()))
        }
        "/healthz" => Some(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        "/readyz" if health.is_ready() => Some(json(StatusCode::OK, &serde_json::json!({"status": "ready"}))),
        "/readyz" => Some(json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "not ready"}))),
        _ => None,
    }
}

/// Serves only the operational endpoints (the consumer services).
pub async fn serve_ops(listener: TcpListener, health: Arc<Health>, cancel: CancellationToken) {
    serve(listener, Duration::from_secs(2), cancel, move |req, _| {
        let health = health.clone();
        async move {
            ops_response(&req, &health)
                .unwrap_or_else(|| error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"))
        }
    })
    .await;
}

/// Accepts connections until `cancel` fires, then lets in-flight requests finish for up to
/// `drain` before returning.
pub async fn serve<F, Fut>(listener: TcpListener, drain: Duration, cancel: CancellationToken, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
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
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let response = handler(req, remote);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "Connection ended with an error.");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain, "Some HTTP connections did not finish in time.");
    }
}
