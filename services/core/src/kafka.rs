//! Kafka clients configured the one way Switchboard uses them, with nothing broker-specific.
//!
//! - Producers: `acks=all` with the idempotent producer, so a retry inside librdkafka never
//!   duplicates or reorders a partition; murmur2 partitioning, so a key lands on the partition a
//!   Java client would choose.
//! - Consumers: commits are automatic but only of offsets the service *stored* after the
//!   record's effect was acknowledged (`enable.auto.offset.store=false`), the at-least-once
//!   discipline of rust-rdkafka's `at_least_once` example.
//! - Topics are created explicitly with configured partition counts; nothing relies on
//!   auto-creation.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaSettings, Service};
use crate::metrics;
use crate::retry::Backoff;

pub use rdkafka::consumer::CommitMode;

/// Largest record Switchboard writes. A raw webhook is the body (capped at 1 MiB by default) plus
/// its headers and metadata, which is more than Kafka's 1 MB default; topics are created with
/// a matching `max.message.bytes`.
pub const MAX_RECORD_BYTES: usize = 2 * 1024 * 1024;

/// A record to produce.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Retrying cannot help (the record is too large for the broker, say).
    #[error("Kafka refused the record for good: {0}")]
    Permanent(#[source] KafkaError),
}

fn base_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    let _ = config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", client_id)
        // librdkafka logs through its own callback; keep its noise at warning level.
        .set("log_level", "4");
    config
}

/// Applies the configured librdkafka properties last, so they override Switchboard's defaults,
/// and creates the client.
fn create<T: FromClientConfig>(mut config: ClientConfig, settings: &KafkaSettings) -> Result<T, KafkaError> {
    for (key, value) in &settings.client {
        let _ = config.set(key, value);
    }
    config.create()
}

/// A producer whose deliveries give up (and report an error) after `message_timeout`.
pub fn producer(
    settings: &KafkaSettings,
    client_id: &str,
    message_timeout: Duration,
) -> Result<FutureProducer, KafkaError> {
    let mut config = base_config(settings, client_id);
    let _ = config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        .set("message.max.bytes", MAX_RECORD_BYTES.to_string())
        .set("message.timeout.ms", message_timeout.as_millis().to_string());
    create(config, settings)
}

/// A consumer in the service's own group, subscribed to `topics`.
pub fn consumer(
    settings: &KafkaSettings,
    service: Service,
    topics: &[&str],
) -> Result<StreamConsumer, KafkaError> {
    let mut config = base_config(settings, service.name());
    let _ = config
        .set("group.id", settings.group_id(service))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", settings.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", settings.heartbeat_interval_ms.to_string())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("fetch.wait.max.ms", "100");
    let consumer: StreamConsumer = create(config, settings)?;
    consumer.subscribe(topics)?;
    Ok(consumer)
}

/// Creates the topics that do not exist yet, retrying until the broker answers or `cancel`
/// fires. Returns `false` when cancelled first.
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[&str], cancel: &CancellationToken) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match create_topics(settings, topics).await {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, brokers = %settings.brokers, "Cannot create topics yet; retrying.");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn create_topics(settings: &KafkaSettings, topics: &[&str]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> =
        create(base_config(settings, "switchboard-admin"), settings)?;
    let max_message_bytes = MAX_RECORD_BYTES.to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| {
            NewTopic::new(name, settings.partitions, TopicReplication::Fixed(settings.replication_factor))
                .set("max.message.bytes", &max_message_bytes)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, partitions = settings.partitions, "Created topic."),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::warn!(topic = %name, ?code, "Topic creation failed.");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// Whether retrying `error` can never help (the record is too large, or malformed).
pub fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// Produces `record` and waits for Kafka's acknowledgement, retrying transient failures with
/// backoff for as long as it takes: a stage must never skip a record because the broker is
/// briefly away. A full local queue is backpressure and waits without counting as a failure.
pub async fn produce_until_acked(
    producer: &FutureProducer,
    record: &Outbound,
    stage: &'static str,
    max_backoff: Duration,
) -> Result<(), ProduceError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), max_backoff);
    loop {
        let mut future_record = FutureRecord::to(&record.topic).payload(&record.payload);
        if let Some(key) = &record.key {
            future_record = future_record.key(key);
        }
        let started = Instant::now();
        let error = match producer.send_result(future_record) {
            Ok(delivery) => match delivery.await {
                Ok(Ok(_)) => {
                    metrics::PRODUCE_SECONDS
                        .with_label_values(&[stage])
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Ok(Err((error, _))) => error,
                // The producer was dropped under us; only happens during shutdown.
                Err(_) => KafkaError::Canceled,
            },
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err((error, _)) => error,
        };
        if is_permanent(&error) {
            return Err(ProduceError::Permanent(error));
        }
        metrics::TRANSIENT_RETRIES.with_label_values(&[stage, "kafka"]).inc();
        let delay = backoff.next_delay();
        tracing::warn!(%error, topic = %record.topic, ?delay, "Produce failed; retrying.");
        tokio::time::sleep(delay).await;
    }
}

/// Waits for every queued record to be delivered, up to `timeout`.
pub fn flush(producer: &FutureProducer, timeout: Duration) {
    if let Err(error) = producer.flush(timeout) {
        tracing::warn!(%error, "Producer flush did not complete; unacknowledged records will be retried by their source.");
    }
}
