//! ingress: the one HTTP endpoint PBXs post webhooks to.
//!
//! Input: `POST /v1/webhooks/{source_id}[/vendor/path]` (or GET, for vendors that send that),
//! authenticated the way the source's vendor does it (`switchboard_adapters::auth`: HTTP Basic or
//! a `token` query parameter with the source's secret, or the vendor's own signature). Output: one
//! Avro `RawWebhook` per accepted request on `<prefix>raw`, holding the body byte for byte with
//! its content type, selected headers, source, vendor, receive time and remote address (never
//! the credentials: no `Authorization`, no `token` parameter however its name is encoded, and
//! a credential inside the body redacted by the vendor's adapter, Aircall's `token`). Delivery:
//! the PBX gets its vendor's success answer (`202 {"id": ...}` by default, an empty 200 for
//! Telphin or Twilio, `{"success":true}` for Sipuni) only after Kafka
//! acknowledged the record (acks=all, idempotent producer); if Kafka does not acknowledge within
//! `kafka.produce_timeout_ms` the answer is 503 with `Retry-After`, so the PBX retries and nothing
//! is acknowledged that was not stored. A vendor's URL-validation handshake (Zadarma `zd_echo`)
//! is answered at once and never stored. A retry that duplicates a stored record is harmless: the event id downstream is
//! derived from the content. Ordering: records are keyed `source:call_id`, so one call's
//! webhooks share a partition and keep their arrival order through every stage.
//!
//! Refusals, each a short JSON error and a metric: unknown source 404, method the vendor never
//! uses 405, bad or missing credentials or signature 401, body over `ingress.max_body_bytes` 413,
//! content type the vendor never sends 415, body the vendor's adapter can tell is broken 400.
//!
//! Ops: `/metrics` is served only on the ops port (`http.ops_listen`, default 9100), never on the
//! webhook port that PBXs and the internet reach; `/healthz` and `/readyz` answer on both, for
//! load balancers that check the port they route to. Every answer on the webhook port but the
//! probes is counted in `switchboard_ingress_requests_total`, the "starting" 503 included.

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod metrics;
pub mod settings;
pub use settings::IngressSettings;
pub mod sources;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchboard_adapters::auth::query_without_token;
use switchboard_adapters::{
    AuthFailure, Decision, Rejection, Reply, WEBHOOK_PATH_PREFIX, adapter_for, authenticate_head, decide,
};
use switchboard_core::avro::Codecs;
use switchboard_core::config::{Service, Settings};
use switchboard_core::http::{self as ops, Body, Health};
use switchboard_core::http_service::{self, HttpService};
use switchboard_core::model::{RawWebhook, call_partition_key};
use switchboard_core::seal::Sealer;
use switchboard_core::service::{self, ServiceError};
use switchboard_core::{kafka, pg};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::sources::{Source, SourceCache};

/// Headers never copied into the raw record: credentials, and hop-by-hop framing.
const DROPPED_HEADERS: &[&str] =
    &["authorization", "proxy-authorization", "cookie", "connection", "content-length", "transfer-encoding"];
const MAX_KEPT_HEADERS: usize = 64;
/// Name plus value of one kept header.
const MAX_HEADER_BYTES: usize = 2048;
/// Longer query strings are refused (414); vendors that send data in the URL stay far below.
const MAX_QUERY_BYTES: usize = 8192;

/// Everything a request handler shares.
struct Ingress {
    sources: SourceCache,
    producer: FutureProducer,
    codecs: Codecs,
    raw_topic: String,
    max_body_bytes: usize,
    produce_timeout: Duration,
    retry_after_secs: u64,
    health: Arc<Health>,
}

/// A refusal: status, a stable error code and a sentence for the PBX administrator.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    let own: IngressSettings = settings.own_section(Service::Ingress)?;
    let health = Health::new();
    let topics = settings.kafka.topics();
    let produce_timeout = Duration::from_millis(settings.kafka.produce_timeout_ms);
    let sources = SourceCache::default();
    let sealer = Arc::new(
        switchboard_core::source_secrets::sealer(&settings)
            .map_err(|e| ServiceError::Setup { what: "the sources' secrets key", source: Box::new(e) })?,
    );
    let ingress = Arc::new(Ingress {
        sources: sources.clone(),
        // Creating a producer needs no broker; it connects in the background.
        producer: kafka::producer(&settings.kafka, "ingress", produce_timeout)?,
        codecs: Codecs::new()?,
        raw_topic: topics.raw.clone(),
        max_body_bytes: own.max_body_bytes,
        produce_timeout,
        retry_after_secs: own.retry_after_secs,
        health: health.clone(),
    });
    let spec = HttpService {
        service: Service::Ingress,
        settings: &settings,
        listener,
        health: health.clone(),
        cancel: cancel.clone(),
    };
    // Webhooks get 503 until the database, the topics and the sources are there.
    let start = async {
        let Some(pool) =
            pg::connect_and_migrate(&settings.postgres, switchboard_schema::MIGRATIONS, &cancel).await?
        else {
            return Ok(None);
        };
        if !(kafka::ensure_topics(&settings.kafka, &topics.all(), &cancel).await
            && first_source_load(&sources, &pool, &sealer, &cancel).await)
        {
            return Ok(None);
        }
        let every = Duration::from_millis(own.sources_refresh_ms);
        Ok(Some(vec![tokio::spawn(keep_sources_fresh(
            sources.clone(),
            pool,
            sealer.clone(),
            every,
            cancel.clone(),
        ))]))
    };
    // A fatal producer error would otherwise leave ingress answering 503 for ever while it looks
    // alive: it fails the service and stops it instead.
    let fatal = service::watch_producer(Service::Ingress, &ingress.producer, health.clone(), cancel.clone());
    let outcome = http_service::run(spec, ingress.clone(), start).await;
    fatal.abort();
    // Every 202 already waited for its ack; this only settles records whose requests timed out.
    kafka::flush(&ingress.producer, Duration::from_secs(5));
    outcome
}

/// Loads the sources once, retrying until it works: serving before that would answer 404 to
/// every PBX, which most do not retry. Returns `false` when cancelled first.
async fn first_source_load(
    sources: &SourceCache,
    pool: &Pool,
    sealer: &Sealer,
    cancel: &CancellationToken,
) -> bool {
    let mut backoff =
        switchboard_core::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match sources.refresh(pool, sealer).await {
            Ok(count) => {
                tracing::info!(count, "Sources loaded.");
                return true;
            }
            Err(error) => tracing::warn!(%error, "Cannot load sources yet; retrying."),
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn refresh_sources(sources: &SourceCache, pool: &Pool, sealer: &Sealer) {
    match sources.refresh(pool, sealer).await {
        Ok(count) => tracing::debug!(count, "Sources loaded."),
        Err(error) => tracing::warn!(%error, "Cannot reload sources; keeping the ones loaded."),
    }
}

async fn keep_sources_fresh(
    sources: SourceCache,
    pool: Pool,
    sealer: Arc<Sealer>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => refresh_sources(&sources, &pool, &sealer).await,
        }
    }
}

impl http_service::Handler for Ingress {
    async fn handle(&self, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
        if let Some(response) = ops::probe_response(&req, &self.health) {
            return response;
        }
        let unknown = |response: Response<Body>| {
            count_request(metrics::UNKNOWN, metrics::UNKNOWN, &response);
            response
        };
        let Some(source_id) = req
            .uri()
            .path()
            .strip_prefix(WEBHOOK_PATH_PREFIX)
            .map(|rest| rest.split('/').next().unwrap_or_default().to_owned())
        else {
            return unknown(ops::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"));
        };
        if !self.health.is_ready() {
            // Sources are not loaded yet: the id in the path cannot be told from a made-up one.
            let mut response = ops::error(StatusCode::SERVICE_UNAVAILABLE, "starting", "ingress is starting");
            let _ = response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return unknown(response);
        }
        let source = self.sources.get(&source_id);
        // Only a source the operator created names a series; made-up ids all count as `unknown`,
        // so a scanner cannot mint series.
        let (source_label, vendor_label) = match &source {
            Some(source) => {
                // At zero from the source's first request, so that rate() sees its first failure.
                let _ = metrics::INGRESS_AUTH_FAILURES
                    .with_label_values(&[source.id.as_str(), source.vendor.as_str()]);
                (source.id.as_str().to_owned(), source.vendor.as_str())
            }
            None => (metrics::UNKNOWN.to_owned(), metrics::UNKNOWN),
        };
        let response = match self.accept(req, source, &source_id, remote).await {
            Ok(reply) => vendor_response(reply),
            Err(refusal) => {
                let mut response = ops::error(refusal.status, refusal.code, refusal.message);
                if refusal.status == StatusCode::UNAUTHORIZED {
                    let _ = response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"switchboard\""),
                    );
                }
                if refusal.status == StatusCode::SERVICE_UNAVAILABLE
                    && let Ok(value) = HeaderValue::from_str(&self.retry_after_secs.to_string())
                {
                    let _ = response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
        };
        count_request(&source_label, vendor_label, &response);
        response
    }
}

impl Ingress {
    /// Runs every check, publishes, and returns the vendor's answer once Kafka has the record.
    async fn accept(
        &self,
        req: Request<Incoming>,
        source: Option<Source>,
        source_id: &str,
        remote: SocketAddr,
    ) -> Result<Reply, Refusal> {
        let Some(source) = source else {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "unknown_source",
                format!("no source {source_id:?}"),
            ));
        };
        if req.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
            return Err(Refusal::new(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!("query strings are limited to {MAX_QUERY_BYTES} bytes"),
            ));
        }
        let too_large = || {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("bodies are limited to {} bytes", self.max_body_bytes),
            )
        };
        let declared_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > self.max_body_bytes as u64) {
            return Err(too_large());
        }

        // A credential in the headers or the query is checked before the body is read: a client
        // without one holds no buffer. Signing vendors sign the body, so theirs is read (capped)
        // first.
        let (parts, body) = req.into_parts();
        let adapter = adapter_for(source.vendor);
        let headers = all_headers(&parts.headers);
        let head = switchboard_adapters::Request {
            method: parts.method.as_str(),
            // `source_id` is the path's segment after the prefix (`handle`).
            subpath: parts
                .uri
                .path()
                .strip_prefix(WEBHOOK_PATH_PREFIX)
                .and_then(|rest| rest.strip_prefix(source_id))
                .unwrap_or_default(),
            query: parts.uri.query(),
            content_type: parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            headers: &headers,
            body: &[],
        };
        if let Some(Err(failure)) = authenticate_head(adapter, &head, &source.auth()) {
            return Err(unauthorized(&source, failure));
        }
        let body: Bytes = match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Err(error) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read the body: {error}"),
                ));
            }
        };
        let request = switchboard_adapters::Request { body: &body, ..head };
        let call_id = match decide(adapter, &request, &source.auth()) {
            Decision::Publish { call_id } => call_id,
            Decision::Handshake(reply) => return Ok(reply),
            Decision::MethodNotAllowed => {
                return Err(Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{} webhooks are sent with {}", source.vendor, adapter.methods().join(" or ")),
                ));
            }
            Decision::Unauthorized(failure) => return Err(unauthorized(&source, failure)),
            Decision::Rejected(Rejection::UnsupportedMediaType(media)) => {
                return Err(Refusal::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("{} webhooks are not sent as {media:?}", source.vendor),
                ));
            }
            Decision::Rejected(Rejection::Malformed(reason)) => {
                return Err(Refusal::new(StatusCode::BAD_REQUEST, "malformed_body", reason));
            }
        };

        // Authenticated: a credential the vendor puts in the body (Aircall's token) goes now, so
        // that it is on no topic; the query loses its `token` the same way below.
        let stored_body = adapter.stored_body(&request).into_owned();
        let raw = RawWebhook {
            id: uuid::Uuid::now_v7().to_string(),
            source_id: source.id.clone(),
            vendor: source.vendor,
            default_region: source.default_region.clone(),
            timezone: source.settings.timezone.clone(),
            received_at: chrono::Utc::now(),
            remote_addr: Some(remote.to_string()),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: query_without_token(parts.uri.query()),
            content_type: request.content_type.map(str::to_owned),
            headers: kept_headers(headers),
            body: stored_body,
        };
        metrics::INGRESS_BODY_BYTES.with_label_values(&[source.vendor.as_str()]).observe(body.len() as f64);
        let key = match call_id {
            Some(call_id) => call_partition_key(&source.id, &call_id),
            // Without a call id the adapter will dead-letter the record; any stable key will do.
            None => source.id.to_string(),
        };
        let payload = self.codecs.raw_webhook.encode(&raw).map_err(|e| {
            tracing::error!(error = %e, "Cannot encode a raw webhook.");
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "cannot encode the record")
        })?;
        self.publish(key.as_bytes(), &payload).await?;
        Ok(adapter.reply(&raw.id))
    }

    async fn publish(&self, key: &[u8], payload: &[u8]) -> Result<(), Refusal> {
        let unavailable = |reason: String| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka_unavailable",
                format!("not stored, retry later: {reason}"),
            )
        };
        let record = FutureRecord::to(&self.raw_topic).key(key).payload(payload);
        let started = std::time::Instant::now();
        let delivery = match self.producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Err(unavailable("ingress is at capacity".into()));
            }
            Err((error, _)) if kafka::is_permanent(&error) => return Err(refused_for_good(&error)),
            Err((error, _)) => return Err(unavailable(error.to_string())),
        };
        // The producer's own message timeout answers first; this is a guard against a lost report.
        match tokio::time::timeout(self.produce_timeout.saturating_add(Duration::from_secs(1)), delivery)
            .await
        {
            Ok(Ok(Ok(_))) => {
                metrics::PRODUCE_SECONDS
                    .with_label_values(&[Service::Ingress.name()])
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Ok(Err((error, _)))) if kafka::is_permanent(&error) => Err(refused_for_good(&error)),
            Ok(Ok(Err((error, _)))) => {
                tracing::warn!(%error, "Kafka did not acknowledge a webhook; answered 503.");
                Err(unavailable(error.to_string()))
            }
            Ok(Err(_)) => Err(unavailable("producer shut down".into())),
            Err(_) => Err(unavailable("timed out waiting for Kafka".into())),
        }
    }
}

/// A 401 for `source`, counted; a source missing a setting its vendor's scheme needs is logged.
fn unauthorized(source: &Source, failure: AuthFailure) -> Refusal {
    metrics::INGRESS_AUTH_FAILURES.with_label_values(&[source.id.as_str(), source.vendor.as_str()]).inc();
    if let AuthFailure::NotConfigured(setting) = failure {
        tracing::warn!(source = %source.id, setting, "A source lacks a setting its vendor's authentication needs.");
    }
    Refusal::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong credentials or signature for this source",
    )
}

fn count_request(source: &str, vendor: &str, response: &Response<Body>) {
    metrics::INGRESS_REQUESTS.with_label_values(&[source, vendor, response.status().as_str()]).inc();
}

/// Kafka will never take this record (too large for the topic): a retry cannot help, so the
/// PBX hears 413 rather than 503.
fn refused_for_good(error: &KafkaError) -> Refusal {
    tracing::warn!(%error, "Kafka refused a webhook for good; answered 413.");
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "rejected_by_kafka",
        format!("Kafka refused the record: {error}"),
    )
}

/// The answer a vendor expects, as an HTTP response.
fn vendor_response(reply: Reply) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    if let Some(content_type) = reply.content_type {
        let _ = response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

/// Every header with a text value, by lower-case name (the first of repeated ones), for the
/// adapter's checks; credentials included, so this map itself is never stored.
fn all_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            let _ = map.entry(name.as_str().to_owned()).or_insert_with(|| value.to_owned());
        }
    }
    map
}

/// The headers worth keeping, bounded (at most 64 × 2 KiB) so that a raw record always fits in
/// Kafka next to a body at the cap.
fn kept_headers(headers: BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .filter(|(name, _)| !DROPPED_HEADERS.contains(&name.as_str()))
        .filter(|(name, value)| name.len().saturating_add(value.len()) <= MAX_HEADER_BYTES)
        .take(MAX_KEPT_HEADERS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_raw_record() {
        let mut headers = HeaderMap::new();
        let _ = headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic eDp5"));
        let _ = headers.insert(header::COOKIE, HeaderValue::from_static("s=1"));
        let _ = headers.insert("x-twilio-signature", HeaderValue::from_static("abc"));
        let kept = kept_headers(all_headers(&headers));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept.get("x-twilio-signature").map(String::as_str), Some("abc"));
    }
}
