//! The resolver: turns pending recordings into links through their vendors' APIs, on a schedule
//! kept in PostgreSQL, never by waiting inside the Kafka consumer.
//!
//! Why a table and not a retry topic: a recording can wait minutes (Zadarma uploads about 40 s
//! after the call, Chronicall reports PENDING, Telphin's storage lags), each with its own backoff.
//! On a retry topic, a consumer that pauses until the head record is due holds up every record
//! behind it on that partition, including other calls' recordings due sooner, unless there is one
//! topic per delay; and records not yet due must still be held somewhere. A table indexed by due
//! time has no head of line: every replica claims whatever is due (`FOR UPDATE SKIP LOCKED`, a
//! lease against crashes), in due order, however long any other recording waits, and operators
//! can see and requeue what waits (`SELECT * FROM recordings WHERE status = 'pending'`). The
//! stage needs PostgreSQL anyway, for the sources' API credentials and for the links.
//!
//! Each attempt: claim (counting it), ask the vendor, then
//! - a link: produce the recording's `ready` event to enriched, then mark the row ready;
//! - not there yet, or a transient failure, with attempts left: due again after
//!   `retry_initial_ms · 2^(attempts-1)`, at most `retry_max_ms`;
//! - the budget spent, or a failure retrying cannot fix: produce the `failed` event with the
//!   reason, then mark the row failed. The call log marks the call `recording_failed`.
//!
//! The event is produced before the row changes, and produced until Kafka acknowledges it: a
//! crash in between leaves the row pending, the lease lapses, and the attempt is made again,
//! producing the same event (same `event_id`, which the call log stores once). At most
//! `recordings.concurrency` attempts run at once per replica; a slow vendor occupies one slot per
//! attempt, bounded by `recordings.resolve_timeout_ms`, and nothing else waits for it.

use std::sync::Arc;
use std::time::Duration;

use crate::RecordingsSettings;
use crate::metrics;
use chrono::Utc;
use deadpool_postgres::Pool;
use rdkafka::producer::FutureProducer;
use switchboard_core::avro::Codecs;
use switchboard_core::kafka::{self, Outbound};
use switchboard_core::model::{CallEvent, EventId, EventKind, RecordingStatus};
use switchboard_core::schedule;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::link::LinkSigner;
use crate::store::{self, Recording};
use crate::vendors::{ResolveError, Resolver};

const STAGE: &str = "recordings";

/// The wait after a failed attempt `attempts` (1 for the first): doubling from `initial`, at most
/// `max`.
pub fn retry_delay(settings: &RecordingsSettings, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(32);
    let delay = settings.retry_initial_ms.saturating_mul(1u64 << doublings);
    Duration::from_millis(delay.min(settings.retry_max_ms))
}

/// The event announcing that recording `recording` is ready or failed. Its id derives from the
/// recording and the status, so an attempt made again after a crash announces it once.
pub fn recording_event(
    recording: &Recording,
    status: RecordingStatus,
    error: Option<String>,
    link: String,
) -> Result<CallEvent, String> {
    let event_id = EventId::parse(format!("recording:{}:{}", recording.id, status.as_str()))
        .map_err(|e| e.to_string())?;
    // The time the vendor's answer came: the event is about now, and it sorts after the call's
    // own events.
    let mut event = CallEvent::empty(
        recording.source_id.clone(),
        recording.vendor,
        recording.call_id.clone(),
        event_id,
        EventKind::Recording,
        Utc::now(),
    );
    event.raw_id = recording.raw_id.clone();
    // The leg of the event that first named the recording, so the event joins that leg.
    event.leg_id = recording.leg_id.clone();
    event.recording_url = Some(link);
    event.recording_id = recording.recording_id.clone();
    event.recording_status = Some(status);
    event.recording_error = error;
    Ok(event)
}

/// Everything the resolver loop needs.
pub struct Scheduler {
    pub pool: Pool,
    pub producer: FutureProducer,
    pub codecs: Arc<Codecs>,
    /// The enriched topic.
    pub topic: String,
    pub resolver: Arc<Resolver>,
    pub signer: LinkSigner,
    /// Opens the sources' sealed API secrets.
    pub sealer: Arc<switchboard_core::seal::Sealer>,
    pub settings: RecordingsSettings,
    /// Longest wait between produce retries (`pipeline.max_backoff_ms`).
    pub max_backoff: Duration,
    pub drain_timeout: Duration,
    /// Rung by this replica's stage when it registers a pending recording.
    pub pending: Arc<Notify>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Scheduler {
    /// How long a claimed recording is hidden from other replicas: a token fetch and a lookup,
    /// each bounded by the resolve timeout, then the produce and the update.
    fn lease(&self) -> Duration {
        Duration::from_millis(self.settings.resolve_timeout_ms)
            .saturating_mul(3)
            .saturating_add(Duration::from_secs(30))
    }

    /// Claims and attempts due work until `cancel` fires (`schedule::run`).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let limits = schedule::Limits {
            stage: STAGE,
            concurrency: self.settings.concurrency,
            poll: Duration::from_millis(self.settings.poll_interval_ms),
            drain_timeout: self.drain_timeout,
        };
        let wake = self.pending.clone();
        schedule::run(self, limits, wake, cancel).await;
    }

    /// One attempt at `recording` (already claimed and counted).
    async fn attempt(&self, recording: Recording) {
        let vendor = recording.vendor.as_str();
        let access = match store::sources(&self.pool, &self.sealer, &[recording.source_id.as_str()]).await {
            Ok(mut found) => found
                .remove(recording.source_id.as_str())
                .unwrap_or_else(|| Err("the recording's source is deleted or disabled".into())),
            Err(error) => {
                // The lease lapses and the attempt is made again.
                tracing::warn!(%error, recording = %recording.id, "Cannot read the recording's source.");
                return;
            }
        };
        let outcome = match access {
            Ok(access) => self.resolver.resolve(&recording, &access).await,
            Err(reason) => Err(ResolveError::Permanent(reason)),
        };
        let max = i32::try_from(self.settings.max_attempts).unwrap_or(i32::MAX);
        let settled = match outcome {
            Ok(_) => {
                if !self.publish(&recording, RecordingStatus::Ready, None).await {
                    return;
                }
                metrics::RECORDING_RESOLUTIONS.with_label_values(&[vendor, "resolved"]).inc();
                tracing::info!(
                    recording = %recording.id, source = %recording.source_id, call = %recording.call_id,
                    attempts = recording.attempts, "Recording resolved."
                );
                store::mark_ready(&self.pool, &recording.id).await
            }
            Err(error) if !error.is_permanent() && recording.attempts < max => {
                let delay = retry_delay(&self.settings, recording.attempts);
                metrics::RECORDING_RESOLUTIONS.with_label_values(&[vendor, "retry"]).inc();
                tracing::info!(
                    recording = %recording.id, source = %recording.source_id, attempt = recording.attempts,
                    ?delay, reason = %error, "Recording not resolved yet; trying again later."
                );
                store::reschedule(&self.pool, &recording.id, delay, &error.to_string()).await
            }
            Err(error) => {
                let reason = if error.is_permanent() {
                    error.to_string()
                } else {
                    format!("gave up after {} attempts: {error}", recording.attempts)
                };
                if !self.publish(&recording, RecordingStatus::Failed, Some(reason.clone())).await {
                    return;
                }
                metrics::RECORDING_RESOLUTIONS.with_label_values(&[vendor, "failed"]).inc();
                tracing::warn!(
                    recording = %recording.id, source = %recording.source_id, call = %recording.call_id,
                    %reason, "Recording failed; the call is marked recording_failed."
                );
                store::mark_failed(&self.pool, &recording.id, &reason).await
            }
        };
        if let Err(error) = settled {
            // The row stays pending under its lease, which lapses: the attempt is made again and
            // publishes the same event, which the call log stores once.
            tracing::warn!(%error, recording = %recording.id, "Cannot record the attempt's result.");
        }
    }

    /// Produces the recording's event until Kafka acknowledges it; `false` when Kafka refuses it
    /// for good (it is logged, and the row is left to be attempted again).
    async fn publish(&self, recording: &Recording, status: RecordingStatus, error: Option<String>) -> bool {
        let link = self.signer.link(&recording.id, recording.first_received_at);
        let encoded = recording_event(recording, status, error, link).and_then(|event| {
            Ok((event.partition_key(), self.codecs.call_event.encode(&event).map_err(|e| e.to_string())?))
        });
        let (key, payload) = match encoded {
            Ok(encoded) => encoded,
            Err(error) => {
                tracing::error!(%error, recording = %recording.id, "Cannot build the recording's event.");
                return false;
            }
        };
        let out = Outbound { topic: self.topic.clone(), key: Some(key.into_bytes()), payload };
        match kafka::produce_until_acked(&self.producer, &out, STAGE, self.max_backoff).await {
            Ok(()) => {
                metrics::EVENTS_OUT.with_label_values(&[STAGE]).inc();
                true
            }
            Err(error) => {
                tracing::error!(%error, recording = %recording.id, "Kafka refused the recording's event.");
                false
            }
        }
    }
}

impl schedule::LeasedWork for Scheduler {
    type Item = Recording;
    type Error = store::StoreError;

    async fn claim(&self, room: usize) -> Result<Vec<Self::Item>, Self::Error> {
        store::claim_due(&self.pool, room, self.lease()).await
    }

    async fn attempt(&self, item: Self::Item) {
        Scheduler::attempt(self, item).await;
    }

    async fn housekeeping(&self) {
        if let Ok(pending) = store::pending_count(&self.pool).await {
            metrics::RECORDINGS_PENDING.set(pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_the_cap() {
        let settings = RecordingsSettings {
            retry_initial_ms: 1000,
            retry_max_ms: 5000,
            ..RecordingsSettings::default()
        };
        let delays: Vec<u128> = (1..=6).map(|n| retry_delay(&settings, n).as_millis()).collect();
        assert_eq!(delays, [1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(retry_delay(&settings, 400).as_millis(), 5000, "no overflow");
        assert_eq!(retry_delay(&settings, 0).as_millis(), 1000);
    }
}
