//! calllog: the call log, one row per call and per leg, in PostgreSQL.
//!
//! Input: fully enriched call events (`<prefix>enriched`, Avro `CallEvent`, keyed by call).
//! Output: rows in `call_events`, `calls` and `call_legs` (see `writer`), and dead letters for
//! records that cannot be decoded or that PostgreSQL refuses.
//! Delivery: at least once from Kafka, exactly once in effect. A batch is written in one
//! transaction and its offsets are stored only after the commit; the writer is idempotent, so a
//! batch re-delivered after a crash changes nothing. Transient database failures are retried
//! with backoff, never skipped. Ordering: not relied on for times, counts, status, outcome and
//! hangup cause, which come out the same in any order; descriptive fields (numbers, agent,
//! recording link) keep the first value written (see `writer`).

pub mod writer;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use switchboard_core::avro::Codecs;
use switchboard_core::config::{Service, Settings};
use switchboard_core::deadpool_postgres::Pool;
use switchboard_core::kafka::{self, CommitMode};
use switchboard_core::rdkafka::consumer::{Consumer, StreamConsumer};
use switchboard_core::rdkafka::producer::FutureProducer;
use switchboard_core::retry::Backoff;
use switchboard_core::service::{self, ServiceError};
use switchboard_core::stage::{DeadLetterTarget, Inbound, Poison};
use switchboard_core::{metrics, pg};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::writer::{StoredEvent, WriteError, write_batch};

const STAGE: &str = "calllog";

struct Writer {
    pool: Pool,
    consumer: StreamConsumer,
    producer: FutureProducer,
    codecs: Codecs,
    dead_letter_topic: String,
    batch_max: usize,
    batch_linger: Duration,
    max_backoff: Duration,
    drain_timeout: Duration,
}

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    for table in ["call_events", "calls", "call_legs"] {
        let _ = metrics::CALLLOG_ROWS.with_label_values(&[table]);
    }
    let _ = metrics::END_TO_END_SECONDS.with_label_values(&[STAGE]);
    let _ = metrics::CALLLOG_DUPLICATES.with_label_values(&[STAGE]);
    service::with_probes(Service::Calllog, listener, |health| async move {
        let Some(pool) = pg::connect_and_migrate(&settings.postgres, &cancel).await? else {
            return Ok(());
        };
        let topics = settings.kafka.topics();
        if !kafka::ensure_topics(&settings.kafka, &topics.all(), &cancel).await {
            return Ok(());
        }
        let writer = Writer {
            pool,
            consumer: kafka::consumer(&settings.kafka, Service::Calllog, &[&topics.enriched])?,
            producer: kafka::producer(&settings.kafka, STAGE, Duration::from_secs(30))?,
            codecs: Codecs::new()?,
            dead_letter_topic: topics.dead_letter.clone(),
            batch_max: settings.calllog.batch_max,
            batch_linger: Duration::from_millis(settings.calllog.batch_linger_ms),
            max_backoff: Duration::from_millis(settings.pipeline.max_backoff_ms),
            drain_timeout: Duration::from_millis(settings.pipeline.drain_timeout_ms),
        };
        health.set_ready(true);
        tracing::info!(input = %topics.enriched, "Call-log writer running.");
        writer.run(cancel).await
    })
    .await
}

impl Writer {
    async fn run(self, cancel: CancellationToken) -> Result<(), ServiceError> {
        while let Some(batch) = self.next_batch(&cancel).await {
            if !self.process(&batch, &cancel).await? {
                break;
            }
        }
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "Final commit.");
        }
        kafka::flush(&self.producer, Duration::from_secs(5));
        tracing::info!("Call-log writer stopped; offsets committed.");
        Ok(())
    }

    /// Waits for a first record, then gathers more for up to `batch_linger` or `batch_max`.
    /// `None` once cancelled with nothing gathered.
    async fn next_batch(&self, cancel: &CancellationToken) -> Option<Vec<Inbound>> {
        let mut batch = Vec::new();
        let first = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                received = self.consumer.recv() => match received {
                    Ok(message) => break Inbound::from_message(&message),
                    Err(error) => self.consume_error(error).await,
                }
            }
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + self.batch_linger;
        while batch.len() < self.batch_max {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                received = self.consumer.recv() => match received {
                    Ok(message) => batch.push(Inbound::from_message(&message)),
                    Err(error) => self.consume_error(error).await,
                }
            }
        }
        Some(batch)
    }

    async fn consume_error(&self, error: switchboard_core::rdkafka::error::KafkaError) {
        metrics::CONSUME_ERRORS.with_label_values(&[STAGE]).inc();
        tracing::warn!(%error, "Consumer error.");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Writes a batch and stores its offsets. Returns `false` when shutdown cut the write short,
    /// in which case no offset was stored and the batch will be delivered again.
    async fn process(&self, batch: &[Inbound], cancel: &CancellationToken) -> Result<bool, ServiceError> {
        let started = Instant::now();
        metrics::EVENTS_IN.with_label_values(&[STAGE]).inc_by(batch.len() as u64);
        metrics::BATCH_SIZE.with_label_values(&[STAGE]).observe(batch.len() as f64);

        // Decoded events, and beside each the record it came from (for its dead letter).
        let mut events = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        let mut poisoned = Vec::new();
        for record in batch {
            match self.codecs.call_event.decode(&record.payload) {
                Ok(event) => {
                    events.push(StoredEvent { event, partition: record.partition, offset: record.offset });
                    sources.push(record);
                }
                Err(error) => poisoned.push((record, Poison::new("decode", error.to_string()))),
            }
        }
        match self.write_with_retry(&events, cancel).await {
            Some(Ok(())) => {}
            Some(Err(WriteError::Rejected(error))) => {
                // Something in the batch is refused; find it by writing events one at a time.
                tracing::warn!(%error, "Batch refused; writing its events one by one.");
                for (record, event) in sources.iter().zip(&events) {
                    match self.write_with_retry(std::slice::from_ref(event), cancel).await {
                        Some(Ok(())) => {}
                        Some(Err(error)) => {
                            poisoned.push((record, Poison::new("rejected", error.to_string())))
                        }
                        None => return Ok(false),
                    }
                }
            }
            Some(Err(WriteError::Transient(_))) | None => return Ok(false),
        }

        let target = DeadLetterTarget {
            producer: &self.producer,
            codecs: &self.codecs,
            stage: STAGE,
            topic: &self.dead_letter_topic,
            max_backoff: self.max_backoff,
        };
        for (record, poison) in &poisoned {
            metrics::EVENTS_FAILED.with_label_values(&[STAGE, poison.class]).inc();
            tracing::warn!(
                partition = record.partition, offset = record.offset, reason = %poison.reason,
                "Record sent to the dead-letter topic."
            );
            // While Kafka is away a dead letter waits; a shutdown gives it `drain_timeout`, then
            // leaves the batch unstored, to be delivered again.
            let give_up = async {
                cancel.cancelled().await;
                tokio::time::sleep(self.drain_timeout).await;
            };
            tokio::select! {
                sent = target.send(record, poison) => sent?,
                _ = give_up => return Ok(false),
            }
        }

        let now = Utc::now();
        for stored in &events {
            let latency = (now - stored.event.received_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::END_TO_END_SECONDS.with_label_values(&[STAGE]).observe(latency.max(0.0));
        }
        self.store_offsets(batch);
        metrics::EVENTS_OUT.with_label_values(&[STAGE]).inc_by(events.len() as u64);
        metrics::PROCESSING_SECONDS.with_label_values(&[STAGE]).observe(started.elapsed().as_secs_f64());
        Ok(true)
    }

    /// Retries transient failures until success, or until shutdown has waited `drain_timeout`
    /// for the database (`None`: give up, the batch is re-delivered after restart).
    async fn write_with_retry(
        &self,
        events: &[StoredEvent],
        cancel: &CancellationToken,
    ) -> Option<Result<(), WriteError>> {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        let mut gave_up_at: Option<tokio::time::Instant> = None;
        loop {
            match write_batch(&self.pool, events).await {
                Ok(outcome) => {
                    metrics::CALLLOG_ROWS
                        .with_label_values(&["call_events"])
                        .inc_by(outcome.new_events as u64);
                    metrics::CALLLOG_ROWS.with_label_values(&["calls"]).inc_by(outcome.calls as u64);
                    metrics::CALLLOG_ROWS.with_label_values(&["call_legs"]).inc_by(outcome.legs as u64);
                    let duplicates = events.len() as i64 - outcome.new_events;
                    metrics::CALLLOG_DUPLICATES.with_label_values(&[STAGE]).inc_by(duplicates.max(0) as u64);
                    return Some(Ok(()));
                }
                Err(error @ WriteError::Rejected(_)) => return Some(Err(error)),
                Err(WriteError::Transient(reason)) => {
                    metrics::TRANSIENT_RETRIES.with_label_values(&[STAGE, "postgres"]).inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(%reason, ?delay, "Call-log write failed; retrying.");
                    if cancel.is_cancelled() {
                        let deadline = *gave_up_at
                            .get_or_insert_with(|| tokio::time::Instant::now() + self.drain_timeout);
                        if tokio::time::Instant::now() >= deadline {
                            return None;
                        }
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn store_offsets(&self, batch: &[Inbound]) {
        let mut highest: HashMap<(&str, i32), i64> = HashMap::new();
        for record in batch {
            let entry = highest.entry((&record.topic, record.partition)).or_insert(record.offset);
            *entry = (*entry).max(record.offset);
        }
        for ((topic, partition), offset) in highest {
            if let Err(error) = self.consumer.store_offset(topic, partition, offset) {
                tracing::debug!(%error, partition, "Offset not stored (partition revoked).");
            }
        }
    }
}
