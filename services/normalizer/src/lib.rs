//! normalizer: reads raw webhooks with their vendor's adapter and publishes call events.
//!
//! Input: `<prefix>raw` (Avro `RawWebhook`, keyed by source and call). Output: `<prefix>normalized`
//! (Avro `CallEvent`, keyed by source and call, so a call's events share a partition), or a dead
//! letter on `<prefix>deadletter` with the reason when no adapter can read the record.
//! Delivery: at least once; the raw record's offset is stored only after every event read from it
//! is acknowledged. Event ids are derived from the raw record's content, so re-processing after a
//! crash yields the same events, which the call log absorbs. Ordering: per input partition.
//!
//! Adapters are pure and total: whatever bytes arrive, the outcome is events, none (a valid
//! webhook about no call, counted), or a dead letter, never a panic (`fuzz/` holds them to it).

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod metrics;

use std::sync::Arc;

use switchboard_adapters::adapter_for;
use switchboard_core::avro::Codecs;
use switchboard_core::config::{Service, Settings};
use switchboard_core::kafka::Outbound;
use switchboard_core::service::{self, ServiceError};
use switchboard_core::stage::{Inbound, Poison, PoisonClass, Processor};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Normalizer {
    codecs: Arc<Codecs>,
    output_topic: String,
}

impl Normalizer {
    pub fn new(codecs: Arc<Codecs>, output_topic: String) -> Self {
        Self { codecs, output_topic }
    }

    /// Reads one raw record into encoded call events.
    pub fn normalize(&self, payload: &[u8]) -> Result<Vec<Outbound>, Poison> {
        let raw = self
            .codecs
            .raw_webhook
            .decode(payload)
            .map_err(|e| Poison::new(PoisonClass::Decode, e.to_string()))?;
        let vendor = raw.vendor.as_str();
        let events = adapter_for(raw.vendor).normalize(&raw).map_err(|e| {
            metrics::NORMALIZED.with_label_values(&[vendor, "parse_failure"]).inc();
            Poison::new(PoisonClass::Adapter, format!("{vendor} adapter: {e}"))
        })?;
        // A webhook about no call (an agent logging in, a tag added) is valid and yields nothing;
        // counting it keeps it from looking like a silent drop.
        let result = if events.is_empty() { "no_events" } else { "events" };
        metrics::NORMALIZED.with_label_values(&[vendor, result]).inc();
        events
            .iter()
            .map(|event| {
                Ok(Outbound {
                    topic: self.output_topic.clone(),
                    key: Some(event.partition_key().into_bytes()),
                    payload: self
                        .codecs
                        .call_event
                        .encode(event)
                        .map_err(|e| Poison::new(PoisonClass::Encode, e.to_string()))?,
                })
            })
            .collect()
    }
}

impl Processor for Normalizer {
    async fn process(&self, record: &Inbound) -> Result<Vec<Outbound>, Poison> {
        self.normalize(&record.payload)
    }
}

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    service::run_stage(
        Service::Normalizer,
        &settings,
        listener,
        |topics| &topics.raw,
        |codecs, topics| Normalizer::new(codecs, topics.normalized.clone()),
        cancel,
    )
    .await
}
