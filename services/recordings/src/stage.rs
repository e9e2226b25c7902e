//! The stage's processor: matched events in, the same events out on enriched, with every
//! recording they name registered and replaced by its stable link.
//!
//! For an event that names a recording (a `recording_url`, a `recording_id`, or both; recording
//! events and hangups alike), the recording's row is created or found (`store::register`), and
//! the event leaves with `recording_url` set to the recording's stable link and
//! `recording_status` set to the row's status: `ready` when the vendor sent a URL the link can
//! redirect to, `pending` when only the vendor's id is known and the resolver has to ask the
//! vendor, `failed` when what the vendor sent cannot be opened. Other events leave byte for byte
//! as they came. The vendor's own URL stays in the `recordings` table: nothing downstream hands
//! out a link that expires.
//!
//! Delivery: the row is written before the event is produced, and the stage stores the offset
//! only after the produce is acknowledged, so a crash re-delivers and finds the row again (the
//! same link, the same status). A database that is down is waited for with backoff; a row the
//! database refuses sends the event to the dead-letter topic (`rejected`).

use std::sync::Arc;
use std::time::Duration;

use crate::metrics;
use deadpool_postgres::Pool;
use switchboard_core::avro::Codecs;
use switchboard_core::kafka::Outbound;
use switchboard_core::model::{CallEvent, RecordingStatus};
use switchboard_core::retry::Backoff;
use switchboard_core::stage::{Inbound, Poison, PoisonClass, Processor};
use tokio::sync::Notify;

use crate::link::LinkSigner;
use crate::store::{self, NewRecording, Registered, StoreError};

/// The stage's name, as metrics and logs give it.
const STAGE: &str = "recordings";

#[derive(Debug)]
pub struct Registrar {
    pub codecs: Arc<Codecs>,
    pub output_topic: String,
    pub pool: Pool,
    pub signer: LinkSigner,
    pub max_backoff: Duration,
    /// Wakes this replica's resolver when a recording needs the vendor's API.
    pub pending: Arc<Notify>,
}

impl Registrar {
    async fn register(&self, new: &NewRecording) -> Result<Registered, Poison> {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        loop {
            match store::register(&self.pool, new).await {
                Ok(registered) => return Ok(registered),
                Err(StoreError::Rejected(reason)) => return Err(Poison::new(PoisonClass::Rejected, reason)),
                Err(StoreError::Transient(error)) => {
                    metrics::TRANSIENT_RETRIES.with_label_values(&[STAGE, "postgres"]).inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, ?delay, "Cannot register a recording; retrying.");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// `event` as it leaves the stage for the recording `registered`.
pub fn with_link(mut event: CallEvent, registered: &Registered, signer: &LinkSigner) -> CallEvent {
    let recording = &registered.recording;
    event.recording_url = Some(signer.link(&recording.id, recording.first_received_at));
    event.recording_status = Some(recording.status);
    event.recording_error = match recording.status {
        RecordingStatus::Failed => recording.last_error.clone(),
        _ => None,
    };
    event
}

impl Processor for Registrar {
    async fn process(&self, record: &Inbound) -> Result<Vec<Outbound>, Poison> {
        let event = self
            .codecs
            .call_event
            .decode(&record.payload)
            .map_err(|e| Poison::new(PoisonClass::Decode, e.to_string()))?;
        let key = Some(event.partition_key().into_bytes());
        let Some(new) = NewRecording::from_event(&event) else {
            return Ok(vec![Outbound {
                topic: self.output_topic.clone(),
                key,
                payload: record.payload.clone(),
            }]);
        };
        let registered = self.register(&new).await?;
        if registered.created {
            let vendor = event.vendor.as_str();
            match registered.recording.status {
                RecordingStatus::Ready => {
                    metrics::RECORDING_RESOLUTIONS.with_label_values(&[vendor, "direct"]).inc();
                }
                RecordingStatus::Failed => {
                    metrics::RECORDING_RESOLUTIONS.with_label_values(&[vendor, "failed"]).inc();
                    tracing::warn!(
                        recording = %registered.recording.id, source = %event.source_id, call = %event.call_id,
                        reason = registered.recording.last_error.as_deref().unwrap_or(""),
                        "Recording unusable as reported."
                    );
                }
                RecordingStatus::Pending | RecordingStatus::Unknown => self.pending.notify_one(),
            }
        }
        let event = with_link(event, &registered, &self.signer);
        let payload = self
            .codecs
            .call_event
            .encode(&event)
            .map_err(|e| Poison::new(PoisonClass::Encode, e.to_string()))?;
        Ok(vec![Outbound { topic: self.output_topic.clone(), key, payload }])
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use switchboard_core::config::Settings;
    use switchboard_core::model::{CallId, EventId, EventKind, SourceId, Vendor};

    use super::*;
    use crate::schedule::recording_event;

    fn hangup_naming(recording_id: &str) -> CallEvent {
        let mut event = CallEvent::empty(
            SourceId::parse("pbx").expect("id"),
            Vendor::Telphin,
            CallId::parse("c").expect("id"),
            EventId::parse("h").expect("id"),
            EventKind::Hangup,
            Utc.timestamp_opt(1_800_000_000, 0).single().expect("time"),
        );
        event.raw_id = "raw-9".into();
        event.recording_id = Some(recording_id.into());
        event
    }

    #[test]
    fn events_leave_with_the_stable_link_and_the_recordings_status() {
        let settings = Settings::section_from_vars([
            ("SWITCHBOARD_RECORDINGS__LINK_KEY", "a-link-key-of-at-least-thirty-two-bytes"),
            ("SWITCHBOARD_RECORDINGS__PUBLIC_URL", "https://sb.example.com"),
        ])
        .expect("settings");
        let signer = LinkSigner::from_settings(&settings).expect("a key");
        let event = hangup_naming("200101-5A1C");
        let new = NewRecording::from_event(&event).expect("a recording");
        let mut registered = Registered { recording: new.recording.clone(), created: true };

        let pending = with_link(event.clone(), &registered, &signer);
        let link = signer.link(&new.recording.id, event.received_at);
        assert_eq!(pending.recording_url.as_deref(), Some(link.as_str()));
        assert_eq!(
            (pending.recording_status, pending.recording_error.as_deref()),
            (Some(RecordingStatus::Pending), None)
        );
        assert_eq!(
            (pending.event_id.as_str(), pending.kind),
            ("h", EventKind::Hangup),
            "otherwise the same event"
        );

        registered.recording.status = RecordingStatus::Failed;
        registered.recording.last_error = Some("gave up after 12 attempts: 404".into());
        let failed = with_link(event, &registered, &signer);
        assert_eq!(failed.recording_error.as_deref(), Some("gave up after 12 attempts: 404"));

        // The resolver's own event: one id per recording and outcome, on the recording's leg.
        let ready = recording_event(&registered.recording, RecordingStatus::Ready, None, link.clone())
            .expect("event");
        assert_eq!(ready.event_id.as_str(), format!("recording:{}:ready", new.recording.id));
        assert_eq!(
            (ready.kind, ready.raw_id.as_str(), ready.recording_url.as_deref()),
            (EventKind::Recording, "raw-9", Some(link.as_str()))
        );
        assert_eq!(ready.partition_key(), "pbx:c", "keyed by its call");
    }
}
