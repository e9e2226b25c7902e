//! The consume → process → produce loop shared by the streaming stages (normalizer, matcher,
//! recordings), and the pieces of it that the batch stages (the call log, the dispatcher) use
//! in their own loops: [`next_batch`], [`consume_error`], [`store_offset`] and [`finish`].
//!
//! Delivery guarantee: at least once. A record's offset is stored only after everything it
//! produced (or its dead letter) was acknowledged by Kafka, and offsets are stored in the order
//! records were received, so a crash at any point re-delivers from the oldest unfinished record.
//! Downstream effects are keyed by event id, which makes the re-delivery harmless.
//!
//! Throughput: up to `max_in_flight` records are processed and produced concurrently (a
//! `FuturesOrdered` window); the loop never awaits one send before starting the next, and a full
//! window stops consumption, which is the backpressure.
//!
//! Ordering: records of one input partition are produced in input order, and the output key is
//! the call, so a call's events stay in order. Only a produce that fails and is retried can be
//! overtaken by a later record of the same partition; the call log does not depend on order.

pub use crate::poison::PoisonClass;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::avro::Codecs;
use crate::kafka::{self, Outbound, ProduceError};
use crate::metrics;
use crate::model::DeadLetter;

/// One record as consumed, owned so that it can outlive the consumer's buffer.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Inbound {
    pub fn from_message<M: Message>(message: &M) -> Self {
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

/// Why a record can never be processed. It goes to the dead-letter topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub class: PoisonClass,
    pub reason: String,
}

impl Poison {
    /// A poison with `reason`, less any PostgreSQL `DETAIL`/`HINT` lines (they quote row values,
    /// such as phone numbers, which a dead letter must not carry).
    pub fn new(class: PoisonClass, reason: impl Into<String>) -> Self {
        Self { class, reason: crate::errors::without_detail(&reason.into()) }
    }
}

/// What a streaming stage does to each record.
pub trait Processor: Send + Sync + 'static {
    /// Turns one input record into the records to produce (possibly none), or refuses it.
    /// Transient failures (a database that is down) must be retried inside, not returned.
    fn process(&self, record: &Inbound) -> impl Future<Output = Result<Vec<Outbound>, Poison>> + Send;
}

/// Everything a stage needs besides its processor.
pub struct StageContext {
    pub stage: &'static str,
    pub consumer: StreamConsumer,
    pub producer: FutureProducer,
    pub codecs: Arc<Codecs>,
    pub dead_letter_topic: String,
    pub max_in_flight: usize,
    pub max_backoff: Duration,
    pub drain_timeout: Duration,
}

impl std::fmt::Debug for StageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageContext")
            .field("stage", &self.stage)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// Builds the dead-letter record for `record`.
fn dead_letter(
    codecs: &Codecs,
    stage: &str,
    topic: &str,
    record: &Inbound,
    poison: &Poison,
) -> Result<Outbound, crate::avro::CodecError> {
    let letter = DeadLetter {
        stage: stage.to_owned(),
        reason: poison.reason.clone(),
        error_class: poison.class.as_str().to_owned(),
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        key: record.key.clone(),
        payload: record.payload.clone(),
        failed_at: Utc::now(),
    };
    Ok(Outbound {
        topic: topic.to_owned(),
        key: record.key.clone(),
        payload: codecs.dead_letter.encode(&letter)?,
    })
}

/// Where and how a stage sends its dead letters.
#[derive(Clone, Copy)]
pub struct DeadLetterTarget<'a> {
    pub producer: &'a FutureProducer,
    pub codecs: &'a Codecs,
    pub stage: &'static str,
    pub topic: &'a str,
    pub max_backoff: Duration,
}

impl std::fmt::Debug for DeadLetterTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterTarget").field("stage", &self.stage).field("topic", &self.topic).finish()
    }
}

impl DeadLetterTarget<'_> {
    /// Produces the dead letter of `record` and waits for the acknowledgement. When Kafka refuses
    /// the dead letter itself for good (the original is too large), a second one goes without the
    /// payload: it still names the topic, partition and offset where the original can be read
    /// within the topic's retention.
    pub async fn send(&self, record: &Inbound, poison: &Poison) -> Result<(), StageError> {
        let letter = dead_letter(self.codecs, self.stage, self.topic, record, poison)?;
        match kafka::produce_until_acked(self.producer, &letter, self.stage, self.max_backoff).await {
            Ok(()) => Ok(()),
            Err(fatal @ ProduceError::Fatal(_)) => Err(fatal.into()),
            Err(ProduceError::Permanent(error)) => {
                tracing::warn!(%error, "Dead letter refused; sending it without the original payload.");
                let reason = format!(
                    "{} (original payload of {} bytes omitted, refused by Kafka: {error})",
                    poison.reason,
                    record.payload.len()
                );
                let stripped = Inbound { payload: Vec::new(), ..record.clone() };
                let letter = dead_letter(
                    self.codecs,
                    self.stage,
                    self.topic,
                    &stripped,
                    &Poison::new(poison.class, reason),
                )?;
                Ok(kafka::produce_until_acked(self.producer, &letter, self.stage, self.max_backoff).await?)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error("cannot encode a dead letter: {0}")]
    DeadLetter(#[from] crate::avro::CodecError),
}

/// Runs the stage until `cancel` fires, then drains in-flight records (up to the drain timeout),
/// commits stored offsets and flushes the producer.
pub async fn run<P: Processor>(
    ctx: StageContext,
    processor: Arc<P>,
    cancel: CancellationToken,
) -> Result<(), StageError> {
    let ctx = Arc::new(ctx);
    let mut in_flight = FuturesOrdered::new();
    let stage = ctx.stage;
    let outcome = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ok(()),
            Some(done) = in_flight.next() => {
                match done {
                    Ok(record) => store_offset(&ctx.consumer, &record),
                    Err(error) => break Err(error),
                }
            }
            received = ctx.consumer.recv(), if in_flight.len() < ctx.max_in_flight => {
                match received {
                    Ok(message) => {
                        metrics::EVENTS_IN.with_label_values(&[stage]).inc();
                        let record = Inbound::from_message(&message);
                        in_flight.push_back(handle(ctx.clone(), processor.clone(), record));
                    }
                    Err(error) => consume_error(stage, &error).await,
                }
            }
        }
    };

    // Offsets are stored in receive order and never past a record that failed: later records'
    // effects may exist, but their offsets stay unstored, so the failed record comes again after
    // the restart.
    let mut failed = outcome.is_err();
    let drained = tokio::time::timeout(ctx.drain_timeout, async {
        while let Some(done) = in_flight.next().await {
            match done {
                Ok(record) if !failed => store_offset(&ctx.consumer, &record),
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "Record failed while draining; no later offset is stored.");
                    failed = true;
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(left = in_flight.len(), "Drain timed out; those records will be re-delivered.");
    }
    finish(&ctx.consumer, &ctx.producer);
    outcome
}

/// Commits the stored offsets and flushes the producer: the last thing every stage does.
pub fn finish(consumer: &StreamConsumer, producer: &FutureProducer) {
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        // "No offset" simply means nothing new was stored since the last auto-commit.
        tracing::debug!(%error, "Final commit.");
    }
    kafka::flush(producer, Duration::from_secs(5));
}

/// Counts and logs a consume error, then waits a moment, so that a broker that is away is not
/// polled in a tight loop (the consumer reconnects on its own).
pub async fn consume_error(stage: &str, error: &rdkafka::error::KafkaError) {
    metrics::CONSUME_ERRORS.with_label_values(&[stage]).inc();
    tracing::warn!(%error, "Consumer error.");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The next batch for a stage that writes a batch at a time: waits for a first record, then
/// gathers more for up to `linger` or `max` records. `None` once cancelled with nothing
/// gathered; a batch begun is returned whole, so that it is written (or re-delivered) as one.
pub async fn next_batch(
    consumer: &StreamConsumer,
    stage: &str,
    max: usize,
    linger: Duration,
    cancel: &CancellationToken,
) -> Option<Vec<Inbound>> {
    let first = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            received = consumer.recv() => match received {
                Ok(message) => break Inbound::from_message(&message),
                Err(error) => consume_error(stage, &error).await,
            }
        }
    };
    let mut batch = vec![first];
    // Unlike `now + linger`, a sleep caps a deadline beyond the clock's range.
    let linger = tokio::time::sleep(linger);
    tokio::pin!(linger);
    while batch.len() < max {
        tokio::select! {
            _ = &mut linger => break,
            received = consumer.recv() => match received {
                Ok(message) => batch.push(Inbound::from_message(&message)),
                Err(error) => consume_error(stage, &error).await,
            }
        }
    }
    Some(batch)
}

/// Processes one record and produces its outputs, returning it once all are acknowledged (or
/// once its dead letter is).
async fn handle<P: Processor>(
    ctx: Arc<StageContext>,
    processor: Arc<P>,
    record: Inbound,
) -> Result<Inbound, StageError> {
    let started = Instant::now();
    let poison = match processor.process(&record).await {
        Ok(outputs) => {
            let sends = outputs
                .iter()
                .map(|out| kafka::produce_until_acked(&ctx.producer, out, ctx.stage, ctx.max_backoff));
            match futures_util::future::join_all(sends).await.into_iter().find_map(Result::err) {
                None => {
                    metrics::EVENTS_OUT.with_label_values(&[ctx.stage]).inc_by(outputs.len() as u64);
                    metrics::PROCESSING_SECONDS
                        .with_label_values(&[ctx.stage])
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(record);
                }
                // Kafka will never take what this record became: set the input aside rather
                // than stop the stage on it forever. Outputs already written stay; they are
                // idempotent downstream.
                Some(ProduceError::Permanent(error)) => {
                    Poison::new(PoisonClass::Produce, format!("Kafka refused an output record: {error}"))
                }
                // The producer is gone for good: stop the stage without storing this offset; the
                // record is processed again by the next process.
                Some(fatal @ ProduceError::Fatal(_)) => return Err(fatal.into()),
            }
        }
        Err(poison) => poison,
    };
    metrics::EVENTS_FAILED.with_label_values(&[ctx.stage, poison.class.as_str()]).inc();
    tracing::warn!(
        topic = %record.topic, partition = record.partition, offset = record.offset,
        class = %poison.class, reason = %poison.reason,
        "Record sent to the dead-letter topic."
    );
    let letter = DeadLetterTarget {
        producer: &ctx.producer,
        codecs: &ctx.codecs,
        stage: ctx.stage,
        topic: &ctx.dead_letter_topic,
        max_backoff: ctx.max_backoff,
    };
    letter.send(&record, &poison).await?;
    Ok(record)
}

/// Stores `record`'s offset for the next commit, once everything it caused is durable.
pub fn store_offset(consumer: &StreamConsumer, record: &Inbound) {
    // Fails only when the partition was revoked meanwhile; its new owner re-processes the
    // record, which the idempotent downstream absorbs.
    if let Err(error) = consumer.store_offset(&record.topic, record.partition, record.offset) {
        tracing::debug!(%error, partition = record.partition, "Offset not stored (partition revoked).");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letters_reason_leaves_out_what_postgres_quotes_of_the_row() {
        let reason = "rows refused by PostgreSQL: db error: ERROR: duplicate key value violates unique constraint \"calls_pkey\"\nDETAIL: Key (source_id, call_id)=(pbx, +442079460000) already exists.";
        let poison = Poison::new(PoisonClass::Rejected, reason);
        assert_eq!(
            poison.reason,
            "rows refused by PostgreSQL: db error: ERROR: duplicate key value violates unique constraint \"calls_pkey\""
        );
    }
}
