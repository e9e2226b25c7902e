//! The life of a streaming service: serve probes and metrics, wait for Kafka, run the stage until
//! cancelled, drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::avro::Codecs;
use crate::config::{Service, Settings, Topics};
use crate::http::{self, Health};
use crate::stage::{self, Processor, StageContext};
use crate::{kafka, metrics};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("Kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Avro schemas: {0}")]
    Codec(#[from] crate::avro::CodecError),
    #[error("PostgreSQL: {0}")]
    Pg(#[from] crate::pg::PgError),
    #[error(transparent)]
    Stage(#[from] stage::StageError),
    #[error("{0}")]
    Other(String),
}

/// Binds the service's HTTP port. Done before anything else so that probes answer (not ready)
/// while the service waits for its dependencies.
pub async fn bind(settings: &Settings, service: Service) -> Result<TcpListener, ServiceError> {
    let addr = settings.listen_addr(service);
    TcpListener::bind(addr).await.map_err(|source| ServiceError::Bind { addr, source })
}

/// Runs `work` for a consumer service while its `/metrics`, `/healthz` and `/readyz` answer on
/// `listener`. `work` marks the service ready once its dependencies are up; it is marked not
/// ready again, and the probes stop, when `work` returns.
pub async fn with_probes<Fut>(
    service: Service,
    listener: TcpListener,
    work: impl FnOnce(Arc<Health>) -> Fut,
) -> Result<(), ServiceError>
where
    Fut: Future<Output = Result<(), ServiceError>>,
{
    metrics::init(service.name());
    let health = Health::new();
    let ops_cancel = CancellationToken::new();
    let ops = tokio::spawn(http::serve_ops(listener, health.clone(), ops_cancel.clone()));

    let outcome = work(health.clone()).await;

    health.set_ready(false);
    ops_cancel.cancel();
    let _ = ops.await;
    outcome
}

/// Runs a consume → process → produce stage reading `input` of the pipeline's topics.
pub async fn run_stage<P: Processor>(
    service: Service,
    settings: &Settings,
    listener: TcpListener,
    input: fn(&Topics) -> &str,
    make_processor: impl FnOnce(Arc<Codecs>, &Topics) -> P,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    with_probes(service, listener, |health| async move {
        run_stage_inner(service, settings, input, make_processor, &health, cancel).await
    })
    .await
}

async fn run_stage_inner<P: Processor>(
    service: Service,
    settings: &Settings,
    input: fn(&Topics) -> &str,
    make_processor: impl FnOnce(Arc<Codecs>, &Topics) -> P,
    health: &Health,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    let topics = settings.kafka.topics();
    if !kafka::ensure_topics(&settings.kafka, &topics.all(), &cancel).await {
        return Ok(());
    }
    let codecs = Arc::new(Codecs::new()?);
    let processor = Arc::new(make_processor(codecs.clone(), &topics));
    // Stages retry a failed produce themselves, so the producer's own timeout only decides how
    // often a stuck record is re-enqueued.
    let producer = kafka::producer(&settings.kafka, service.name(), Duration::from_secs(30))?;
    let consumer = kafka::consumer(&settings.kafka, service, &[input(&topics)])?;
    let ctx = StageContext {
        stage: service.name(),
        consumer,
        producer,
        codecs,
        dead_letter_topic: topics.dead_letter.clone(),
        max_in_flight: settings.pipeline.max_in_flight,
        max_backoff: Duration::from_millis(settings.pipeline.max_backoff_ms),
        drain_timeout: Duration::from_millis(settings.pipeline.drain_timeout_ms),
    };
    health.set_ready(true);
    tracing::info!(service = service.name(), input = input(&topics), "Stage running.");
    stage::run(ctx, processor, cancel).await?;
    tracing::info!(service = service.name(), "Stage stopped; offsets committed.");
    Ok(())
}
