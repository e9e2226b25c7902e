//! The life of an HTTP service (ingress, the query API, the router, and those to come), written
//! once: serve at once (probes answer, requests get the service's own "starting" answer), bring
//! the dependencies up, mark ready, run until cancelled, then drain — not ready first, in-flight
//! requests finished, background tasks stopped — and return.
//!
//! The ops endpoints (`/metrics`, `/healthz`, `/readyz`) are served on a port of their own
//! (`http.ops_listen`), so that the public port shows no metrics; the handler answers the probes
//! there too (`http::probe_response`), for load balancers that check the port they route to.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::http::{self, Body, Health};
use crate::metrics;
use crate::service::ServiceError;
use crate::topology::Service;

/// What [`run`] needs besides the handler.
#[derive(Debug)]
pub struct HttpService<'a> {
    pub service: Service,
    pub settings: &'a Settings,
    /// The public port, bound by the caller before anything else (`service::bind`).
    pub listener: TcpListener,
    pub health: Arc<Health>,
    pub cancel: CancellationToken,
}

/// What serves a service's requests: its shared state, answering one request at a time.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Background work a started service runs until it stops (a cache refresher, a directory
/// watcher); aborted once the requests have drained, since none of it has anything to finish.
pub type Background = Vec<JoinHandle<()>>;

/// Serves `handler` until `cancel` fires. `start` brings the dependencies up and returns the
/// service's background tasks, or `None` when cancelled first; the service is ready once it has
/// returned. An error from `start` stops the server and is returned.
pub async fn run<H, S>(spec: HttpService<'_>, handler: Arc<H>, start: S) -> Result<(), ServiceError>
where
    H: Handler,
    S: Future<Output = Result<Option<Background>, ServiceError>>,
{
    let HttpService { service, settings, listener, health, cancel } = spec;
    metrics::init(service.name());
    let addr = listener
        .local_addr()
        .map_err(|source| ServiceError::Bind { addr: settings.listen_addr(service), source })?;

    // The ops port outlives the public port's drain, so that probes and metrics answer to the end.
    let ops_cancel = CancellationToken::new();
    let ops_listener = crate::service::bind_ops(settings, service).await?;
    let ops = tokio::spawn(http::serve_ops(ops_listener, health.clone(), ops_cancel.clone()));

    let drain = Duration::from_millis(settings.http.drain_timeout_ms.unwrap_or(10_000));
    let serve = move |req, remote| {
        let handler = handler.clone();
        async move { handler.handle(req, remote).await }
    };
    let server =
        tokio::spawn(http::serve_with(listener, settings.http.limits(), drain, cancel.clone(), serve));
    // Not ready from the moment shutdown begins, while requests still drain.
    let draining = tokio::spawn({
        let (health, cancel) = (health.clone(), cancel.clone());
        async move {
            cancel.cancelled().await;
            health.drain();
        }
    });

    let outcome = match start.await {
        Ok(Some(background)) => {
            health.set_ready(true);
            tracing::info!(service = service.name(), %addr, "Ready.");
            cancel.cancelled().await;
            Ok(background)
        }
        Ok(None) => Ok(Vec::new()),
        Err(error) => {
            cancel.cancel();
            Err(error)
        }
    };
    health.drain();
    let _ = server.await;
    draining.abort();
    ops_cancel.cancel();
    let _ = ops.await;
    let background = outcome?;
    for task in background {
        task.abort();
    }
    tracing::info!(service = service.name(), "Stopped.");
    crate::service::outcome_of(Ok(()), &health)
}
