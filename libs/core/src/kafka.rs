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
//! - Each consumer is watched by a [`GroupProbe`], a second client of the same group that never
//!   joins it: it reads the group's membership (for readiness) and the group's committed offsets
//!   against the partitions' high watermarks (for `switchboard_kafka_consumer_lag`).
//!
//! Why lag is polled this way rather than taken from librdkafka's statistics callback: the
//! statistics report only the partitions assigned to this consumer, from its own fetch
//! position, so a partition nobody consumes (every replica down, or a stuck rebalance) would
//! vanish from the metric exactly when it matters; and the callback needs a custom client
//! context, a different consumer type for every stage. Committed offset against high watermark
//! is what `kafka-consumer-groups --describe` shows, counts only work that is durably done, and
//! covers every partition of the group. Each replica reports the whole group, so queries take
//! `max by (stage, topic, partition)`.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::metrics;
use crate::retry::Backoff;
use crate::topology::Service;

pub use rdkafka::consumer::CommitMode;

pub use crate::topology::MAX_RECORD_BYTES;

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
    /// The producer itself cannot go on (librdkafka's fatal error, say a fenced or unauthorised
    /// idempotent producer): nothing more will be acknowledged until the process restarts.
    #[error("the Kafka producer failed for good: {0}")]
    Fatal(String),
}

/// The producer's fatal error, if it has had one: an idempotent producer whose guarantees can no
/// longer hold (fenced, unauthorised, out of sequence) fails every later record with
/// `_FATAL`, so the only way on is a new process.
pub fn fatal_error(producer: &FutureProducer) -> Option<String> {
    producer.client().fatal_error().map(|(code, reason)| format!("{code:?}: {reason}"))
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

/// A consumer in the service's own group, subscribed to `topics`, and what its monitor needs to
/// watch it: a service gives the watch to its `service::ConsumerWatcher`, so that it is ready
/// only once this consumer owns its share of the partitions, and its group's lag is reported.
pub fn consumer(
    settings: &KafkaSettings,
    service: Service,
    topics: &[&str],
) -> Result<(StreamConsumer, ConsumerWatch), KafkaError> {
    consumer_in_group(settings, service, settings.group_id(service), "earliest", topics)
}

/// A consumer in a group of its own, which reads every partition of `topics` from the latest
/// record on: for a service whose every replica must see every record (the desk, whose replicas
/// each hold their own agents' connections). The group is named after the service and this
/// process (`<prefix><service>.<client id>`), so a restarted replica starts afresh.
pub fn broadcast_consumer(
    settings: &KafkaSettings,
    service: Service,
    topics: &[&str],
) -> Result<(StreamConsumer, ConsumerWatch), KafkaError> {
    let group = format!("{}.{}", settings.group_id(service), consumer_client_id(settings, service));
    consumer_in_group(settings, service, group, "latest", topics)
}

fn consumer_in_group(
    settings: &KafkaSettings,
    service: Service,
    group: String,
    offset_reset: &str,
    topics: &[&str],
) -> Result<(StreamConsumer, ConsumerWatch), KafkaError> {
    let client_id = consumer_client_id(settings, service);
    let mut config = base_config(settings, &client_id);
    let _ = config
        .set("group.id", &group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", offset_reset)
        .set("session.timeout.ms", settings.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", settings.heartbeat_interval_ms.to_string())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("fetch.wait.max.ms", "100");
    let consumer: StreamConsumer = create(config, settings)?;
    consumer.subscribe(topics)?;
    let watch = ConsumerWatch {
        stage: service.name(),
        group,
        client_id,
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        settings: settings.clone(),
    };
    Ok((consumer, watch))
}

/// The consumer's `client.id`: the service name, the host and the process id, so that the
/// monitor can tell this replica among the group's members (in Kubernetes the host is the pod,
/// in docker compose the container). An operator's own `client.id` property wins; replicas that
/// share one are then told apart less precisely (any member with that id counts as joined).
fn consumer_client_id(settings: &KafkaSettings, service: Service) -> String {
    if let Some(own) = settings.client.get("client.id") {
        return own.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    format!("{}-{}-{}", service.name(), host, std::process::id())
}

/// What the monitor needs to watch one consumer.
#[derive(Debug, Clone)]
pub struct ConsumerWatch {
    pub stage: &'static str,
    pub group: String,
    pub client_id: String,
    pub topics: Vec<String>,
    pub settings: KafkaSettings,
}

/// One reading of a consumer group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    /// The watched consumer is a member of the group, and the group is not rebalancing
    /// ([`GroupView::ready`] adds the ownership of partitions).
    pub joined: bool,
    pub members: usize,
    /// Input partitions assigned to the watched consumer, when its assignment could be read.
    pub assigned: Option<usize>,
    /// Partitions of the input topics.
    pub partitions: usize,
    /// `(topic, partition, lag)` for every partition of the input topics.
    pub lag: Vec<(String, i32, i64)>,
}

impl GroupView {
    /// Whether the watched consumer does its share of the work: a member of a stable group that
    /// owns input partitions, or a standby (a stable group has more members than partitions, so
    /// a member without any is spare capacity, ready to take over). A member that joined but was
    /// not assigned yet is not ready: it would take no traffic.
    pub fn ready(&self) -> bool {
        match self.assigned {
            Some(0) => self.joined && self.members > self.partitions,
            Some(_) => self.joined,
            // An assignment in a form other than the consumer protocol's: membership is all we know.
            None => self.joined,
        }
    }
}

/// A client of the watched consumer's group that never joins it (it never subscribes), used to
/// read the group's membership and committed offsets. Its calls block: run them off the async
/// threads.
pub struct GroupProbe {
    pub watch: ConsumerWatch,
    client: BaseConsumer,
}

impl std::fmt::Debug for GroupProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupProbe").field("watch", &self.watch).finish_non_exhaustive()
    }
}

impl GroupProbe {
    pub fn new(watch: ConsumerWatch) -> Result<Self, KafkaError> {
        let mut config = base_config(&watch.settings, &format!("{}-monitor", watch.client_id));
        let _ = config
            .set("group.id", &watch.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let client = create(config, &watch.settings)?;
        Ok(Self { watch, client })
    }

    /// Reads membership and lag; blocks for up to a few `timeout`s.
    pub fn poll(&self, timeout: Duration) -> Result<GroupView, KafkaError> {
        let mut view = GroupView::default();
        let groups = self.client.fetch_group_list(Some(&self.watch.group), timeout)?;
        if let Some(group) = groups.groups().iter().find(|g| g.name() == self.watch.group) {
            view.members = group.members().len();
            tracing::trace!(
                group = group.name(),
                state = group.state(),
                members = ?group.members().iter().map(|m| m.id()).collect::<Vec<_>>(),
                me = %self.watch.client_id,
                "Consumer group described."
            );
            // Kafka names a member `<client.id>-<uuid>` and reports its client id.
            let prefix = format!("{}-", self.watch.client_id);
            let me = group
                .members()
                .iter()
                .find(|m| m.client_id() == self.watch.client_id || m.id().starts_with(&prefix));
            view.joined = me.is_some() && group.state().eq_ignore_ascii_case("Stable");
            view.assigned = me.and_then(|m| m.assignment()).and_then(assigned_partitions).map(|assigned| {
                assigned.iter().filter(|(topic, _)| self.watch.topics.contains(topic)).count()
            });
        }

        let mut partitions = TopicPartitionList::new();
        for topic in &self.watch.topics {
            let metadata = self.client.fetch_metadata(Some(topic), timeout)?;
            for partition in
                metadata.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions())
            {
                let _ = partitions.add_partition(topic, partition.id());
            }
        }
        view.partitions = partitions.count();
        let committed = self.client.committed_offsets(partitions, timeout)?;
        for element in committed.elements() {
            let (low, high) = self.client.fetch_watermarks(element.topic(), element.partition(), timeout)?;
            // Nothing committed yet: the group starts from the earliest record still kept.
            let from = match element.offset() {
                Offset::Offset(offset) => offset.max(low),
                _ => low,
            };
            view.lag.push((element.topic().to_owned(), element.partition(), (high - from).max(0)));
        }
        Ok(view)
    }

    /// Sets the stage's group metrics from `view`.
    pub fn publish(&self, view: &GroupView) {
        let stage = self.watch.stage;
        metrics::GROUP_MEMBERS.with_label_values(&[stage]).set(view.members as i64);
        // An assignment that could not be read leaves the gauge absent, not a false 0.
        if let Some(assigned) = view.assigned {
            metrics::ASSIGNED_PARTITIONS.with_label_values(&[stage]).set(assigned as i64);
        }
        for (topic, partition, lag) in &view.lag {
            metrics::CONSUMER_LAG.with_label_values(&[stage, topic, &partition.to_string()]).set(*lag);
        }
    }
}

/// The `(topic, partition)` pairs of a consumer-protocol assignment (the `member_assignment` of
/// DescribeGroups: version, then topics with their partitions, then user data), or `None` when
/// the bytes are not one.
pub fn assigned_partitions(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.0.split_first_chunk::<N>()?;
            self.0 = rest;
            Some(*head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take::<2>().map(i16::from_be_bytes)
        }
        fn i32(&mut self) -> Option<i32> {
            self.take::<4>().map(i32::from_be_bytes)
        }
        fn string(&mut self) -> Option<String> {
            let len = usize::try_from(self.i16()?).ok()?;
            let bytes = self.0.get(..len)?;
            self.0 = &self.0[len..];
            String::from_utf8(bytes.to_vec()).ok()
        }
    }
    if bytes.is_empty() {
        // A member between rebalances has no assignment yet.
        return Some(Vec::new());
    }
    let mut reader = Reader(bytes);
    let _version = reader.i16()?;
    let topics = reader.i32()?;
    let mut assigned = Vec::new();
    // A negative count is a null array: no partitions.
    for _ in 0..topics.max(0) {
        let topic = reader.string()?;
        for _ in 0..reader.i32()?.max(0) {
            assigned.push((topic.clone(), reader.i32()?));
        }
    }
    Some(assigned)
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
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            return Err(ProduceError::Fatal(fatal_error(producer).unwrap_or_else(|| error.to_string())));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_decode() {
        // Version 1, topics "t.raw" [0, 3] and "x" [], no user data.
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        bytes.extend([0, 5]);
        bytes.extend(b"t.raw");
        bytes.extend([0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]);
        bytes.extend([0, 1, b'x', 0, 0, 0, 0]);
        bytes.extend([0xff, 0xff, 0xff, 0xff]);
        let assigned = assigned_partitions(&bytes).expect("decodes");
        assert_eq!(assigned, vec![("t.raw".to_owned(), 0), ("t.raw".to_owned(), 3)]);
        assert_eq!(assigned_partitions(&[]), Some(Vec::new()), "no assignment yet");
        assert_eq!(assigned_partitions(&bytes[..9]), None, "truncated");
    }

    #[test]
    fn ready_means_owning_partitions_or_standing_by() {
        let view = |joined, members, assigned, partitions| GroupView {
            joined,
            members,
            assigned,
            partitions,
            lag: Vec::new(),
        };
        assert!(view(true, 2, Some(2), 4).ready(), "owns partitions");
        assert!(!view(true, 2, Some(0), 4).ready(), "joined, nothing assigned yet");
        assert!(view(true, 5, Some(0), 4).ready(), "a standby beyond the partition count");
        assert!(!view(false, 2, Some(2), 4).ready(), "rebalancing");
        assert!(!view(false, 5, Some(0), 4).ready(), "a standby of a rebalancing group");
        assert!(view(true, 1, None, 4).ready(), "an unreadable assignment falls back to membership");
    }

    #[test]
    fn consumer_client_ids_tell_replicas_apart() {
        let settings = KafkaSettings::default();
        let id = consumer_client_id(&settings, Service::Matcher);
        assert!(id.starts_with("matcher-"), "{id}");
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        let mut own = KafkaSettings::default();
        let _ = own.client.insert("client.id".into(), "mine".into());
        assert_eq!(consumer_client_id(&own, Service::Matcher), "mine");
    }
}
