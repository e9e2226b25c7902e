//! Publishes complete calls to the calls topic, after the commit that changed them, without losing
//! one on a crash: the transactional outbox.
//!
//! The writer puts a complete call's new Avro record in `call_outbox` in the same transaction as
//! the call itself. The publisher claims outbox rows (a short lease, `FOR UPDATE SKIP LOCKED`, so
//! replicas share the work), produces each record keyed `source_id:call_id` and waits for Kafka's
//! acknowledgement, and only then deletes the row (if its version is still the one produced) and
//! raises the call's `published_version`. A crash between the produce and the delete produces the
//! record again once the lease lapses: delivery is at least once, and consumers keep the highest
//! version per call (a version they have seen is a duplicate). The publisher runs when the writer
//! reports something publishable and every `POLL` besides, which catches what other replicas or a
//! crash left behind.
//!
//! A record Kafka refuses for good (larger than the broker takes) is not retried for ever: it goes
//! to the dead-letter topic with the reason (without its payload if that is what was too large),
//! is counted in `switchboard_events_failed_total{class="produce"}`, and its version counts as
//! published, so that the outbox keeps flowing. The call stays whole in PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use rdkafka::producer::FutureProducer;
use switchboard_core::avro::Codecs;
use switchboard_core::kafka::{self, Outbound, ProduceError};
use switchboard_core::retry::Backoff;
use switchboard_core::stage::{DeadLetterTarget, Inbound, Poison, PoisonClass};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::writer::WriteError;

/// How often the publisher looks for unpublished records without being told.
const POLL: Duration = Duration::from_millis(500);
/// How long a claim keeps other publishers off a record.
const LEASE: Duration = Duration::from_secs(30);
/// Records claimed at once; all are produced concurrently.
const CLAIM: i64 = 500;

const CLAIM_SQL: &str = r#"
UPDATE call_outbox o SET lease_until = now() + $2::int8 * interval '1 millisecond'
FROM (SELECT source_id, call_id FROM call_outbox
      WHERE lease_until IS NULL OR lease_until < now()
      LIMIT $1
      FOR UPDATE SKIP LOCKED) due
WHERE o.source_id = due.source_id AND o.call_id = due.call_id
RETURNING o.source_id, o.call_id, o.version, o.record
"#;

/// A row the writer replaced with a newer version meanwhile stays, to be produced in turn.
const DELETE_SQL: &str = r#"
DELETE FROM call_outbox o
USING UNNEST($1::text[], $2::text[], $3::int8[]) AS u(source_id, call_id, version)
WHERE o.source_id = u.source_id AND o.call_id = u.call_id AND o.version = u.version
"#;

const MARK_SQL: &str = r#"
UPDATE calls c SET published_version = GREATEST(c.published_version, u.version)
FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS u(source_id, call_id, version)
WHERE c.source_id = u.source_id AND c.call_id = u.call_id
"#;

/// A record waiting for the calls topic.
#[derive(Debug, Clone)]
pub struct Unpublished {
    pub source_id: String,
    pub call_id: String,
    pub version: i64,
    pub record: Vec<u8>,
}

/// Claims up to `limit` unpublished records for `lease`.
pub async fn claim(pool: &Pool, limit: i64, lease: Duration) -> Result<Vec<Unpublished>, WriteError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(CLAIM_SQL).await?;
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let rows = client.query(&statement, &[&limit, &lease_ms]).await?;
    Ok(rows
        .iter()
        .map(|row| Unpublished {
            source_id: row.get(0),
            call_id: row.get(1),
            version: row.get(2),
            record: row.get(3),
        })
        .collect())
}

/// Records that `published` reached the calls topic (each at its version).
pub async fn mark_published(pool: &Pool, published: &[Unpublished]) -> Result<(), WriteError> {
    if published.is_empty() {
        return Ok(());
    }
    let sources: Vec<&str> = published.iter().map(|p| p.source_id.as_str()).collect();
    let calls: Vec<&str> = published.iter().map(|p| p.call_id.as_str()).collect();
    let versions: Vec<i64> = published.iter().map(|p| p.version).collect();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // The calls' locks first, as the writer takes them before it touches the outbox: the two
    // never deadlock, and a version the writer is replacing is not deleted under it.
    let lock = tx.prepare_cached(crate::writer::LOCK_CALLS).await?;
    let _ = tx.query(&lock, &[&sources, &calls]).await?;
    let delete = tx.prepare_cached(DELETE_SQL).await?;
    let _ = tx.execute(&delete, &[&sources, &calls, &versions]).await?;
    let mark = tx.prepare_cached(MARK_SQL).await?;
    let _ = tx.execute(&mark, &[&sources, &calls, &versions]).await?;
    tx.commit().await?;
    Ok(())
}

/// The publisher loop of one calllog process.
pub struct Publisher {
    pub pool: Pool,
    pub producer: FutureProducer,
    pub codecs: Arc<Codecs>,
    pub topic: String,
    pub dead_letter_topic: String,
    pub wake: Arc<Notify>,
    pub max_backoff: Duration,
    pub drain_timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Publisher {
    /// Publishes until `cancel`; what is in flight then gets `drain_timeout` to be acknowledged
    /// and marked. Anything left is published by the next run (its lease lapses).
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            loop {
                match self.publish_once(&cancel).await {
                    Ok(0) => break,
                    Ok(_) => backoff = Backoff::new(Duration::from_millis(100), self.max_backoff),
                    Err(error) => {
                        metrics::TRANSIENT_RETRIES.with_label_values(&[crate::STAGE, "postgres"]).inc();
                        let delay = backoff.next_delay();
                        tracing::warn!(%error, ?delay, "Publishing call records failed; retrying.");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        break;
                    }
                }
            }
        }
        // A last round for what the writer's final batches made publishable, within the drain
        // timeout; anything left waits in the outbox for the next start or another replica.
        let last_round = async {
            while let Ok(published) = self.publish_once(&cancel).await {
                if published == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(self.drain_timeout, last_round).await;
    }

    /// Sends a record Kafka refused for good to the dead-letter topic; once that is acknowledged
    /// the record counts as published. `None` (retried after the lease) if even that fails.
    async fn dead_letter(
        &self,
        unpublished: Unpublished,
        record: Outbound,
        error: &rdkafka::error::KafkaError,
    ) -> Option<Unpublished> {
        let reason = format!(
            "call record version {} of {} bytes refused by Kafka for good: {error}",
            unpublished.version,
            record.payload.len()
        );
        tracing::error!(call = %unpublished.call_id, %reason, "Call record sent to the dead-letter topic.");
        // Never on the calls topic: no partition or offset to point at.
        let never_written = Inbound {
            topic: record.topic,
            partition: -1,
            offset: -1,
            key: record.key,
            payload: record.payload,
        };
        let target = DeadLetterTarget {
            producer: &self.producer,
            codecs: &self.codecs,
            stage: crate::STAGE,
            topic: &self.dead_letter_topic,
            max_backoff: self.max_backoff,
        };
        match target.send(&never_written, &Poison::new(PoisonClass::Produce, reason)).await {
            Ok(()) => {
                metrics::EVENTS_FAILED
                    .with_label_values(&[crate::STAGE, PoisonClass::Produce.as_str()])
                    .inc();
                Some(unpublished)
            }
            Err(error) => {
                tracing::error!(%error, call = %unpublished.call_id, "Dead letter of a call record not sent.");
                None
            }
        }
    }

    /// Claims, produces and marks one round; returns how many records were published.
    async fn publish_once(&self, cancel: &CancellationToken) -> Result<usize, WriteError> {
        let claimed = claim(&self.pool, CLAIM, LEASE).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let produce_all = futures_util::stream::iter(claimed)
            .map(|unpublished| async move {
                let record = Outbound {
                    topic: self.topic.clone(),
                    key: Some(format!("{}:{}", unpublished.source_id, unpublished.call_id).into_bytes()),
                    payload: unpublished.record.clone(),
                };
                match kafka::produce_until_acked(&self.producer, &record, crate::STAGE, self.max_backoff)
                    .await
                {
                    Ok(()) => Some(unpublished),
                    Err(ProduceError::Permanent(error)) => {
                        self.dead_letter(unpublished, record, &error).await
                    }
                    // The producer is gone; the service stops on it (`service::watch_producer`) and
                    // the record waits in the outbox for the next process.
                    Err(error @ ProduceError::Fatal(_)) => {
                        tracing::error!(%error, call = %unpublished.call_id, "Call record not published.");
                        None
                    }
                }
            })
            .buffer_unordered(64)
            .filter_map(|published| async move { published })
            .collect::<Vec<Unpublished>>();
        // On shutdown, records still unacknowledged after `drain_timeout` are left to the lease.
        let give_up = async {
            cancel.cancelled().await;
            tokio::time::sleep(self.drain_timeout).await;
        };
        let published = tokio::select! {
            published = produce_all => published,
            _ = give_up => return Ok(0),
        };
        mark_published(&self.pool, &published).await?;
        metrics::CALL_RECORDS_PUBLISHED.with_label_values(&[crate::STAGE]).inc_by(published.len() as u64);
        Ok(published.len())
    }
}
