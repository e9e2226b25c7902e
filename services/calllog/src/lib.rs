//! calllog: the call log, one correct record per call and per leg, in PostgreSQL and on the calls
//! topic.
//!
//! Input: fully enriched call events (`<prefix>enriched`, Avro `CallEvent`, keyed by call).
//! Outputs: rows in `call_events`, `calls` and `call_legs` (see `writer`); a versioned Avro
//! `CallRecord` per complete call on `<prefix>calls`, keyed `source_id:call_id`, again whenever
//! it changes (see `outbox`); dead letters for records that cannot be decoded or that PostgreSQL
//! refuses.
//! Delivery: at least once from Kafka, exactly once in effect in PostgreSQL. A batch is written in
//! one transaction and its offsets are stored only after the commit; events are deduplicated on
//! their id, so a batch re-delivered after a crash changes nothing. Call records are published
//! after the commit that made them, at least once (an outbox), and consumers deduplicate on
//! (call, version). Transient database failures are retried with backoff, never skipped; a
//! batch whose statements keep running past `statement_timeout` is written one event at a time,
//! and an event that still times out is dead-lettered with the reason, so the partition flows.
//! A call keeps at most `calllog.max_events_per_call` events (each batch refolds a call from all of
//! them): what a batch brings beyond is taken out again and dead-lettered with the reason.
//! Ordering: relied on nowhere. Each call is refolded from the set of all its stored events
//! (`fold`), so any order, duplication or batching of its events gives the same record; a replica
//! keeps the events of the calls it is writing in memory (`cache`), checked against a revision on
//! each call row, so that Kafka's keying by call (one replica per call) makes this cheap. A call
//! completes on the vendor's end marker, or when the settle sweep finds no new event for
//! `calllog.settle_ms`; a later event updates it and publishes a new version.

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod metrics;
pub mod settings;
pub use settings::CalllogSettings;
pub mod cache;
pub mod codes;
pub mod fold;
pub mod outbox;
pub mod writer;

use std::collections::{HashMap, HashSet, VecDeque};

use futures_util::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use switchboard_core::avro::Codecs;
use switchboard_core::config::{Service, Settings};
use switchboard_core::kafka;
use switchboard_core::retry::Backoff;
use switchboard_core::service::{self, ServiceError};
use switchboard_core::stage::{self, DeadLetterTarget, Inbound, Poison, PoisonClass};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::outbox::Publisher;
use crate::writer::{BatchOutcome, CallLog, StoredEvent, WriteError};

const STAGE: &str = "calllog";
/// Writes of the same rows that may run past `statement_timeout` before they count as refused.
const TIMEOUT_ATTEMPTS: usize = 3;
/// Dead letters of one batch produced at once, and logged one by one (beyond: a count).
const DEAD_LETTERS_IN_FLIGHT: usize = 256;
const DEAD_LETTERS_LOGGED: usize = 10;

struct Writer {
    store: Arc<CallLog>,
    consumer: StreamConsumer,
    producer: FutureProducer,
    codecs: Arc<Codecs>,
    dead_letter_topic: String,
    batch_max: usize,
    batch_linger: Duration,
    max_events_per_call: usize,
    batches_in_flight: usize,
    max_backoff: Duration,
    drain_timeout: Duration,
    /// Tells the publisher that a commit made a record publishable.
    publish: Arc<Notify>,
}

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    let own: CalllogSettings = settings.own_section(Service::Calllog)?;
    for table in ["call_events", "calls", "call_legs"] {
        let _ = metrics::CALLLOG_ROWS.with_label_values(&[table]);
    }
    let _ = metrics::END_TO_END_SECONDS.with_label_values(&[STAGE]);
    let _ = metrics::CALLLOG_DUPLICATES.with_label_values(&[STAGE]);
    let _ = metrics::CALLS_UPDATED_AFTER_COMPLETION.with_label_values(&[STAGE]);
    let _ = metrics::CALL_RECORDS_PUBLISHED.with_label_values(&[STAGE]);
    let _ = metrics::TRANSIENT_RETRIES.with_label_values(&[STAGE, "postgres"]);
    for result in ["hit", "miss", "stale"] {
        let _ = metrics::CALLLOG_FOLD_CACHE.with_label_values(&[result]);
    }
    service::with_probes(Service::Calllog, listener, &cancel.clone(), |health, watcher| async move {
        let Some(pool) =
            service::database_and_topics(&settings, switchboard_schema::MIGRATIONS, &cancel).await?
        else {
            return Ok(());
        };
        let topics = settings.kafka.topics();
        let store = Arc::new(
            CallLog::new(pool.clone(), &own)
                .map_err(|e| ServiceError::Setup { what: "the call-log writer", source: Box::new(e) })?,
        );
        let publish = Arc::new(Notify::new());
        let max_backoff = Duration::from_millis(settings.pipeline.max_backoff_ms);
        let drain_timeout = Duration::from_millis(settings.pipeline.drain_timeout_ms);
        let producer = kafka::producer(&settings.kafka, STAGE, Duration::from_secs(30))?;
        let codecs = Arc::new(Codecs::new()?);
        // Fails and stops the service on the producer's fatal error (it runs until `cancel`).
        let _fatal = service::watch_producer(Service::Calllog, &producer, health.clone(), cancel.clone());
        let writer = Writer {
            store: store.clone(),
            consumer: {
                let (consumer, watch) =
                    kafka::consumer(&settings.kafka, Service::Calllog, &[&topics.enriched])?;
                watcher.watch(watch);
                consumer
            },
            producer: producer.clone(),
            codecs: codecs.clone(),
            dead_letter_topic: topics.dead_letter.clone(),
            batch_max: own.batch_max,
            batch_linger: Duration::from_millis(own.batch_linger_ms),
            max_events_per_call: own.max_events_per_call,
            batches_in_flight: own.batches_in_flight,
            max_backoff,
            drain_timeout,
            publish: publish.clone(),
        };
        let publisher = Publisher {
            pool,
            producer,
            codecs,
            topic: topics.calls.clone(),
            dead_letter_topic: topics.dead_letter.clone(),
            wake: publish.clone(),
            max_backoff,
            drain_timeout,
        };
        let background = CancellationToken::new();
        let publisher = tokio::spawn(publisher.run(background.clone()));
        let sweeper = tokio::spawn(sweep(store, own.clone(), publish, background.clone()));
        health.set_ready(true);
        tracing::info!(input = %topics.enriched, output = %topics.calls, "Call-log writer running.");
        let outcome = Arc::new(writer).run(cancel).await;
        // The sweep and the publisher stop after the writer, so that what its last batch made
        // publishable still goes out (within the drain timeout).
        writer_done(&background, publisher, sweeper).await;
        outcome
    })
    .await
}

async fn writer_done(
    background: &CancellationToken,
    publisher: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
) {
    background.cancel();
    let _ = sweeper.await;
    let _ = publisher.await;
}

/// The settle sweep: completes calls that stopped receiving events without an end marker. Runs in
/// every replica; each due call is taken by the replica that gets its lock first, the others skip
/// it (`writer::CallLog::settle_due`).
async fn sweep(
    store: Arc<CallLog>,
    settings: CalllogSettings,
    publish: Arc<Notify>,
    cancel: CancellationToken,
) {
    const LIMIT: i64 = 500;
    let settle = Duration::from_millis(settings.settle_ms);
    let ringing = Duration::from_millis(settings.ringing_settle_ms);
    // Often enough that a call completes within a quarter of the settle time after it is due.
    let quarter = settle.checked_div(4).unwrap_or_default();
    let every = quarter.clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        loop {
            match store.settle_due(settle, ringing, LIMIT).await {
                Ok((found, outcome)) => {
                    record(&outcome);
                    if outcome.publishable {
                        publish.notify_one();
                    }
                    if found < LIMIT as usize {
                        break;
                    }
                }
                Err(error) => {
                    metrics::TRANSIENT_RETRIES.with_label_values(&[STAGE, "postgres"]).inc();
                    tracing::warn!(%error, "Settle sweep failed; trying again later.");
                    break;
                }
            }
        }
    }
}

/// Counts what a transaction changed.
fn record(outcome: &BatchOutcome) {
    metrics::CALLLOG_ROWS.with_label_values(&["calls"]).inc_by(outcome.calls as u64);
    metrics::CALLLOG_ROWS.with_label_values(&["call_legs"]).inc_by(outcome.legs as u64);
    metrics::CALLS_UPDATED_AFTER_COMPLETION.with_label_values(&[STAGE]).inc_by(outcome.late_updates as u64);
    for (direction, result) in &outcome.completed {
        metrics::CALLS_COMPLETED.with_label_values(&[direction.as_str(), result.as_str()]).inc();
    }
}

impl Writer {
    /// Writes up to `batches_in_flight` batches at once: while PostgreSQL commits one, the next
    /// is folded and sent, which nearly doubles a replica's throughput (BENCHMARKS.md). Calls
    /// shared by two batches are serialised by the writer's per-call locks, and the fold does not
    /// depend on order. Offsets stay in order: a batch stores its offsets only after every
    /// earlier batch stored theirs, and not at all when one of them was cut short, so nothing is
    /// committed past a batch that is not in the database.
    async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), ServiceError> {
        let mut in_flight: VecDeque<JoinHandle<Result<bool, ServiceError>>> = VecDeque::new();
        // Resolves to whether every batch so far stored its offsets.
        let mut previous: Option<oneshot::Receiver<bool>> = None;
        let mut outcome = Ok(());
        'batches: while let Some(batch) = self.next_batch(&cancel).await {
            while in_flight.len() >= self.batches_in_flight.max(1)
                || in_flight.front().is_some_and(JoinHandle::is_finished)
            {
                let Some(oldest) = in_flight.pop_front() else { break };
                match oldest.await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => break 'batches,
                    Ok(Err(error)) => {
                        outcome = Err(error);
                        break 'batches;
                    }
                    Err(join) => {
                        outcome = Err(ServiceError::Task { what: "a call-log batch", source: join });
                        break 'batches;
                    }
                }
            }
            let (done, next) = oneshot::channel();
            let earlier = previous.replace(next);
            let (writer, cancel) = (self.clone(), cancel.clone());
            in_flight.push_back(tokio::spawn(async move {
                let written = writer.process(&batch, &cancel).await;
                let earlier_stored = match earlier {
                    Some(earlier) => earlier.await.unwrap_or(false),
                    None => true,
                };
                let stored = earlier_stored && matches!(written, Ok(true));
                if stored {
                    writer.store_offsets(&batch);
                }
                let _ = done.send(stored);
                written.map(|w| w && earlier_stored)
            }));
        }
        // Whatever is in flight finishes (or gives up within the drain timeout) before the
        // final commit.
        for batch in in_flight {
            match batch.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) if outcome.is_ok() => outcome = Err(error),
                Ok(Err(_)) => {}
                Err(join) if outcome.is_ok() => {
                    outcome = Err(ServiceError::Task { what: "a call-log batch", source: join });
                }
                Err(_) => {}
            }
        }
        outcome?;
        stage::finish(&self.consumer, &self.producer);
        tracing::info!("Call-log writer stopped; offsets committed.");
        Ok(())
    }

    async fn next_batch(&self, cancel: &CancellationToken) -> Option<Vec<Inbound>> {
        stage::next_batch(&self.consumer, STAGE, self.batch_max, self.batch_linger, cancel).await
    }

    /// Writes a batch (its offsets are stored by [`Writer::run`], in order). Returns `false` when
    /// shutdown cut the write short; the batch will then be delivered again.
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
                Err(error) => poisoned.push((record, Poison::new(PoisonClass::Decode, error.to_string()))),
            }
        }
        // Events beyond their call's most events (source id, event id).
        let mut over_cap: HashSet<(String, String)> = HashSet::new();
        match self.write_with_retry(&events, cancel).await {
            Some(Ok(over)) => over_cap.extend(over),
            Some(Err(error)) if !error.is_transient() => {
                // Something in the batch is refused; find it by writing events one at a time.
                tracing::warn!(%error, "Batch refused; writing its events one by one.");
                for (record, event) in sources.iter().zip(&events) {
                    match self.write_with_retry(std::slice::from_ref(event), cancel).await {
                        Some(Ok(over)) => over_cap.extend(over),
                        Some(Err(error)) => poisoned.push((
                            record,
                            Poison::new(PoisonClass::Rejected, switchboard_core::pg::error_chain(&error)),
                        )),
                        None => return Ok(false),
                    }
                }
            }
            Some(Err(_)) | None => return Ok(false),
        }
        if !over_cap.is_empty() {
            let reason = format!(
                "the call already has the most events calllog.max_events_per_call allows ({})",
                self.max_events_per_call
            );
            for (record, stored) in sources.iter().zip(&events) {
                let key = (stored.event.source_id.to_string(), stored.event.event_id.to_string());
                if over_cap.contains(&key) {
                    poisoned.push((record, Poison::new(PoisonClass::Rejected, reason.clone())));
                }
            }
        }

        let target = DeadLetterTarget {
            producer: &self.producer,
            codecs: &self.codecs,
            stage: STAGE,
            topic: &self.dead_letter_topic,
            max_backoff: self.max_backoff,
        };
        for (record, poison) in poisoned.iter().take(DEAD_LETTERS_LOGGED) {
            tracing::warn!(
                partition = record.partition, offset = record.offset, reason = %poison.reason,
                "Record sent to the dead-letter topic."
            );
        }
        if poisoned.len() > DEAD_LETTERS_LOGGED {
            tracing::warn!(count = poisoned.len(), "Records of the batch sent to the dead-letter topic.");
        }
        // Many at once, so that a batch of dead letters costs about one acknowledgement, not one
        // each. While Kafka is away they wait; a shutdown gives them `drain_timeout`, then leaves
        // the batch unstored, to be delivered again.
        let letters: Vec<_> = poisoned.iter().map(|(record, poison)| target.send(record, poison)).collect();
        let sends = futures_util::stream::iter(letters)
            .buffer_unordered(DEAD_LETTERS_IN_FLIGHT)
            .try_collect::<Vec<()>>();
        let give_up = async {
            cancel.cancelled().await;
            tokio::time::sleep(self.drain_timeout).await;
        };
        tokio::select! {
            sent = sends => { sent?; }
            _ = give_up => return Ok(false),
        }
        for (_, poison) in &poisoned {
            metrics::EVENTS_FAILED.with_label_values(&[STAGE, poison.class.as_str()]).inc();
        }

        let now = Utc::now();
        for stored in &events {
            let age = now.signed_duration_since(stored.event.received_at);
            let latency = age.num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::END_TO_END_SECONDS.with_label_values(&[STAGE]).observe(latency.max(0.0));
        }
        metrics::EVENTS_OUT.with_label_values(&[STAGE]).inc_by(events.len() as u64);
        metrics::PROCESSING_SECONDS.with_label_values(&[STAGE]).observe(started.elapsed().as_secs_f64());
        Ok(true)
    }

    /// Retries transient failures until success, or until shutdown has waited `drain_timeout`
    /// for the database (`None`: give up, the batch is re-delivered after restart). A statement
    /// timeout is retried [`TIMEOUT_ATTEMPTS`] times, then returned: the caller writes the batch
    /// one event at a time and dead-letters what still times out, rather than stall the partition.
    async fn write_with_retry(
        &self,
        events: &[StoredEvent],
        cancel: &CancellationToken,
    ) -> Option<Result<Vec<(String, String)>, WriteError>> {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        let mut cancelled_at: Option<tokio::time::Instant> = None;
        let mut timeouts: usize = 0;
        loop {
            match self.store.write_batch(events).await {
                Ok(outcome) => {
                    metrics::CALLLOG_ROWS
                        .with_label_values(&["call_events"])
                        .inc_by(outcome.new_events as u64);
                    record(&outcome);
                    let duplicates = (events.len() as i64).saturating_sub(outcome.new_events);
                    metrics::CALLLOG_DUPLICATES.with_label_values(&[STAGE]).inc_by(duplicates.max(0) as u64);
                    if outcome.publishable {
                        self.publish.notify_one();
                    }
                    return Some(Ok(outcome.over_cap));
                }
                Err(error) if error.is_timeout() && timeouts.saturating_add(1) >= TIMEOUT_ATTEMPTS => {
                    return Some(Err(error));
                }
                Err(error) if !error.is_transient() && !error.is_timeout() => return Some(Err(error)),
                Err(error) => {
                    timeouts = timeouts.saturating_add(usize::from(error.is_timeout()));
                    metrics::TRANSIENT_RETRIES.with_label_values(&[STAGE, "postgres"]).inc();
                    let delay = backoff.next_delay();
                    let reason = switchboard_core::pg::error_chain(&error);
                    tracing::warn!(%reason, ?delay, "Call-log write failed; retrying.");
                    if cancel.is_cancelled() {
                        let cancelled_at = *cancelled_at.get_or_insert_with(tokio::time::Instant::now);
                        if cancelled_at.elapsed() >= self.drain_timeout {
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
