//! The life of a streaming service: serve probes and metrics, wait for Kafka, run the stage until
//! cancelled, drain; and, beside it, a monitor that watches the service's consumer groups for
//! readiness and lag.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
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
    /// Settings the service cannot run with (checked again by the service itself).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A setting that parses as the configuration but not as the value the service needs.
    #[error("setting {setting}: {source}")]
    Setting {
        setting: &'static str,
        #[source]
        source: crate::model::InvalidValue,
    },
    /// A task of the service's own panicked or was cancelled.
    #[error("{what} failed")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A part the service cannot work without failed for good (a Kafka producer's fatal error);
    /// the process exits so that its supervisor starts a new one.
    #[error("failed for good: {0}")]
    Fatal(String),
    /// A part of the service could not be set up; the source says why.
    #[error("{what}")]
    Setup {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Binds the service's HTTP port. Done before anything else so that probes answer (not ready)
/// while the service waits for its dependencies.
pub async fn bind(settings: &Settings, service: Service) -> Result<TcpListener, ServiceError> {
    let addr = settings.listen_addr(service);
    TcpListener::bind(addr).await.map_err(|source| ServiceError::Bind { addr, source })
}

/// Binds the service's ops port (`/metrics`, `/healthz`, `/readyz`), for the services that serve
/// them apart from their public port (ingress, the api, the router, the dispatcher, the desk).
pub async fn bind_ops(settings: &Settings, service: Service) -> Result<TcpListener, ServiceError> {
    let addr = settings.ops_listen_addr(service);
    let listener = TcpListener::bind(addr).await.map_err(|source| ServiceError::Bind { addr, source })?;
    tracing::info!(%addr, "Ops endpoints (/metrics, /healthz, /readyz) listening.");
    Ok(listener)
}

/// How often [`watch_producer`] asks the producer for a fatal error: well within the 10 s in
/// which a supervisor should hear of it.
const FATAL_POLL: Duration = Duration::from_millis(500);

/// Watches `producer` for a fatal error until `cancel` fires. On one, the service fails
/// (`/healthz` answers 503 with the reason) and is stopped through `cancel`; its runner then
/// returns [`ServiceError::Fatal`], so the process exits non-zero instead of answering 503 or
/// retrying forever while it looks alive.
pub fn watch_producer(
    service: Service,
    producer: &FutureProducer,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let producer = producer.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(FATAL_POLL) => {}
            }
            if let Some(reason) = kafka::fatal_error(&producer) {
                tracing::error!(%reason, "The Kafka producer failed for good; stopping the service.");
                metrics::PRODUCER_FATAL_ERRORS.with_label_values(&[service.name()]).inc();
                health.fail(format!("Kafka producer: {reason}"));
                cancel.cancel();
                return;
            }
        }
    })
}

/// What a runner returns once its work is done: the work's own error first, else the failure
/// the service's health recorded (see [`watch_producer`]).
pub(crate) fn outcome_of(outcome: Result<(), ServiceError>, health: &Health) -> Result<(), ServiceError> {
    match (outcome, health.failure()) {
        (Ok(()), Some(reason)) => Err(ServiceError::Fatal(reason.to_owned())),
        (outcome, _) => outcome,
    }
}

/// Hands the consumers a service creates to its monitor: each holds the service's readiness
/// until it has joined its group and owns partitions (or stands by), and the monitor reports its
/// group's lag. Given to the work of [`with_probes`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsumerWatcher {
    health: Arc<Health>,
    new: mpsc::UnboundedSender<kafka::ConsumerWatch>,
}

impl ConsumerWatcher {
    /// Watches the consumer `kafka::consumer` returned `watch` for.
    pub fn watch(&self, watch: kafka::ConsumerWatch) {
        // Held at once, before the service can say it is ready: the monitor releases it.
        self.health.hold();
        let _ = self.new.send(watch);
    }
}

/// Runs `work` for a consumer service while its `/metrics`, `/healthz` and `/readyz` answer on
/// `listener`. `work` marks the service ready once its dependencies are up, and gives each
/// consumer it creates to the [`ConsumerWatcher`] (readiness then also waits for it); the service
/// is not ready from the moment `cancel` fires, and the probes stop when `work` returns.
pub async fn with_probes<Fut>(
    service: Service,
    listener: TcpListener,
    cancel: &CancellationToken,
    work: impl FnOnce(Arc<Health>, ConsumerWatcher) -> Fut,
) -> Result<(), ServiceError>
where
    Fut: Future<Output = Result<(), ServiceError>>,
{
    metrics::init(service.name());
    let health = Health::new();
    let ops_cancel = CancellationToken::new();
    let ops = tokio::spawn(http::serve_ops(listener, health.clone(), ops_cancel.clone()));
    let (new, consumers) = mpsc::unbounded_channel();
    let watcher = ConsumerWatcher { health: health.clone(), new };
    let monitor = tokio::spawn(monitor_consumers(health.clone(), consumers, ops_cancel.clone()));
    // Not ready from the moment shutdown begins, while the work still drains: a load balancer
    // or a rollout must not count a leaving replica as capacity.
    let draining = tokio::spawn({
        let (health, cancel) = (health.clone(), cancel.clone());
        async move {
            cancel.cancelled().await;
            health.drain();
        }
    });

    let outcome = work(health.clone(), watcher).await;

    health.drain();
    draining.abort();
    ops_cancel.cancel();
    let _ = ops.await;
    // The monitor may be inside a blocking Kafka call (bounded by its timeout); nothing of it
    // needs to finish.
    monitor.abort();
    outcome_of(outcome, &health)
}

/// How long one monitor call to the broker may block.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the monitor looks while a consumer has not joined yet: readiness follows quickly.
const MONITOR_JOIN_INTERVAL: Duration = Duration::from_millis(200);

/// Watches every consumer registered with `health`: marks the service's consumers joined once
/// each has been seen in its stable group owning partitions, or as a standby (a latch: a later rebalance does not make a replica unready),
/// and publishes each group's lag every `kafka.monitor_interval_ms`.
async fn monitor_consumers(
    health: Arc<Health>,
    mut consumers: mpsc::UnboundedReceiver<kafka::ConsumerWatch>,
    cancel: CancellationToken,
) {
    let mut probes: Vec<(Arc<kafka::GroupProbe>, bool)> = Vec::new();
    let mut interval = Duration::MAX;
    loop {
        let mut unwatchable = false;
        while let Ok(watch) = consumers.try_recv() {
            interval = interval.min(Duration::from_millis(watch.settings.monitor_interval_ms));
            let stage = watch.stage;
            match kafka::GroupProbe::new(watch) {
                Ok(probe) => probes.push((Arc::new(probe), false)),
                Err(error) => {
                    // Creating a client needs no broker; this is a configuration problem, which
                    // the consumer itself would have hit first. Do not hold readiness on it.
                    metrics::MONITOR_ERRORS.with_label_values(&[stage]).inc();
                    tracing::warn!(%error, stage, "Cannot create the consumer group monitor.");
                    unwatchable = true;
                }
            }
        }
        for (probe, joined) in &mut probes {
            let polled = {
                let probe = probe.clone();
                tokio::task::spawn_blocking(move || probe.poll(MONITOR_TIMEOUT)).await
            };
            match polled {
                Ok(Ok(view)) => {
                    probe.publish(&view);
                    if view.ready() && !*joined {
                        tracing::info!(
                            stage = probe.watch.stage,
                            group = %probe.watch.group,
                            members = view.members,
                            assigned = ?view.assigned,
                            partitions = view.partitions,
                            "Consumer joined its group and owns its share."
                        );
                    }
                    *joined |= view.ready();
                }
                Ok(Err(error)) => {
                    metrics::MONITOR_ERRORS.with_label_values(&[probe.watch.stage]).inc();
                    tracing::debug!(%error, stage = probe.watch.stage, "Cannot read the consumer group.");
                }
                Err(error) => tracing::warn!(%error, "Consumer group monitor task failed."),
            }
        }
        let all_joined = probes.iter().all(|(_, joined)| *joined);
        // With no probe, only a failed one may release readiness: a consumer registered since
        // this round began is still waiting for its first look.
        if !probes.is_empty() {
            health.release(all_joined);
        } else if unwatchable {
            health.release(true);
        }
        // Until every consumer has joined (or before any exists), look often.
        let wait = if all_joined && !probes.is_empty() {
            interval.min(Duration::from_secs(3600))
        } else {
            MONITOR_JOIN_INTERVAL
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What a service that reads or writes both the database and the pipeline's topics waits for
/// before it is ready: the database, migrated to `migrations`, then every topic. `None` when
/// cancelled first.
pub async fn database_and_topics(
    settings: &Settings,
    migrations: &[crate::pg::Migration],
    cancel: &CancellationToken,
) -> Result<Option<deadpool_postgres::Pool>, ServiceError> {
    let Some(pool) = crate::pg::connect_and_migrate(&settings.postgres, migrations, cancel).await? else {
        return Ok(None);
    };
    let topics = settings.kafka.topics();
    Ok(kafka::ensure_topics(&settings.kafka, &topics.all(), cancel).await.then_some(pool))
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
    with_probes(service, listener, &cancel.clone(), |health, watcher| async move {
        run_stage_inner(service, settings, input, make_processor, health, &watcher, cancel).await
    })
    .await
}

async fn run_stage_inner<P: Processor>(
    service: Service,
    settings: &Settings,
    input: fn(&Topics) -> &str,
    make_processor: impl FnOnce(Arc<Codecs>, &Topics) -> P,
    health: Arc<Health>,
    watcher: &ConsumerWatcher,
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
    let fatal = watch_producer(service, &producer, health.clone(), cancel.clone());
    let (consumer, watch) = kafka::consumer(&settings.kafka, service, &[input(&topics)])?;
    watcher.watch(watch);
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
    let outcome = stage::run(ctx, processor, cancel).await;
    fatal.abort();
    outcome?;
    tracing::info!(service = service.name(), "Stage stopped; offsets committed.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;
    use crate::config::KafkaSettings;
    use crate::kafka::{Outbound, ProduceError};

    /// A fatal producer error, injected the way a real broker causes one: it refuses the
    /// idempotent producer its id (CLUSTER_AUTHORIZATION_FAILED, an unauthorised principal).
    /// librdkafka's own mock cluster answers so; a real broker would need ACLs and SASL users.
    #[tokio::test]
    async fn a_fatal_producer_error_fails_the_service_and_stops_it_within_10_s() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.request_errors(
            RDKafkaApiKey::InitProducerId,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
        );
        let settings = KafkaSettings { brokers: cluster.bootstrap_servers(), ..KafkaSettings::default() };
        let producer = kafka::producer(&settings, "fatal-test", Duration::from_secs(5)).expect("producer");
        let health = Health::new();
        health.set_ready(true);
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let watch = watch_producer(Service::Ingress, &producer, health.clone(), cancel.clone());

        tokio::time::timeout(Duration::from_secs(10), cancel.cancelled())
            .await
            .expect("the service is stopped within 10 s");
        let reason = health.failure().expect("the service failed").to_owned();
        assert!(reason.contains("Kafka producer"), "{reason}");
        let live = http::probe_response(&hyper::Request::get("/healthz").body(()).expect("request"), &health)
            .expect("an answer");
        assert_eq!(live.status(), hyper::StatusCode::SERVICE_UNAVAILABLE, "/healthz fails");
        assert!(!health.is_ready());
        assert!(
            matches!(outcome_of(Ok(()), &health), Err(ServiceError::Fatal(_))),
            "the runner returns an error, so the process exits non-zero"
        );
        watch.await.expect("the watch ends");
        let counted = metrics::PRODUCER_FATAL_ERRORS.with_label_values(&["ingress"]).get();
        assert!(counted >= 1, "counted: {counted}");

        // A stage's produce stops at once instead of retrying for ever.
        let record = Outbound { topic: "t".into(), key: None, payload: b"x".to_vec() };
        let produced = tokio::time::timeout(
            Duration::from_secs(10),
            kafka::produce_until_acked(&producer, &record, "test", Duration::from_secs(1)),
        )
        .await
        .expect("no endless retry");
        assert!(matches!(produced, Err(ProduceError::Fatal(_))), "{produced:?}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn a_healthy_producer_is_left_alone() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let settings = KafkaSettings { brokers: cluster.bootstrap_servers(), ..KafkaSettings::default() };
        let producer = kafka::producer(&settings, "healthy-test", Duration::from_secs(5)).expect("producer");
        let health = Health::new();
        let cancel = CancellationToken::new();
        let watch = watch_producer(Service::Ingress, &producer, health.clone(), cancel.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!cancel.is_cancelled() && health.failure().is_none());
        cancel.cancel();
        watch.await.expect("the watch ends on cancel");
        assert!(outcome_of(Ok(()), &health).is_ok());
    }
}
