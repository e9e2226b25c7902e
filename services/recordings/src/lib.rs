//! recordings: every recording a call names gets a stable Switchboard link that keeps working.
//!
//! Inputs: matched call events (`<prefix>matched`); the `recordings` table (the retry schedule);
//! the sources' API settings; the vendors' APIs. Outputs: on `<prefix>enriched`, every input
//! event, those naming a recording with `recording_url` replaced by the recording's stable link
//! (`<recordings.public_url>/v1/recordings/<id>?token=<signed, expiring>`) and a
//! `recording_status`; and, once a recording is resolved or given up, a recording event of its
//! own, `READY` or `FAILED` with the reason, which the call log folds into the call.
//!
//! Two loops in one process:
//! - the stage ([`stage`]): matched → enriched, registering each recording in PostgreSQL before
//!   producing (a vendor URL is ready at once; a vendor id is pending);
//! - the resolver ([`schedule`]): claims due pending recordings, asks the vendor ([`vendors`]),
//!   and retries with backoff, from the table, so that a recording that waits holds up nothing.
//!
//! The links themselves are opened on the api service ([`serve`]), which checks the token
//! ([`link`]) and redirects to a fresh vendor link each time.
//!
//! Delivery: at least once. The stage stores an offset only after its record's output is
//! acknowledged (the row is written before); the resolver produces an event before it settles the
//! row, and a row whose attempt was cut short is attempted again when its lease lapses. Every
//! event's id is derived from content, so the call log stores each once. Ordering: outputs are
//! keyed by call, so a call's events stay on one partition; the resolver's events come after the
//! events that named the recording, and the call log's fold does not depend on order anyway.

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod metrics;
pub mod settings;
pub use settings::RecordingsSettings;
pub mod client;
pub mod link;
pub mod schedule;
pub mod serve;
pub mod stage;
pub mod store;
pub mod vendors;

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::avro::Codecs;
use switchboard_core::config::{ConfigError, Service, Settings};
use switchboard_core::kafka;
use switchboard_core::model::Vendor;
use switchboard_core::service::{self, ServiceError};
use switchboard_core::stage::StageContext;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::HttpClient;
use crate::link::LinkSigner;
use crate::schedule::Scheduler;
use crate::stage::Registrar;
use crate::vendors::Resolver;

/// Every `result` of `switchboard_recordings_resolutions_total`.
const RESULTS: [&str; 4] = ["direct", "resolved", "retry", "failed"];

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    let own: RecordingsSettings = settings.own_section(Service::Recordings)?;
    // own_section refuses an empty key, so this is only a second line of defence.
    let Some(signer) = LinkSigner::from_settings(&own) else {
        return Err(ServiceError::Config(ConfigError::Invalid("recordings.link_key is not set".into())));
    };
    service::with_probes(Service::Recordings, listener, &cancel.clone(), |health, watcher| async move {
        // Every vendor and result from the start, at zero: the failure-ratio alert uses
        // `increase()`, which cannot see a series that appears at 1.
        for vendor in Vendor::ALL {
            for result in RESULTS {
                let _ = metrics::RECORDING_RESOLUTIONS.with_label_values(&[vendor.as_str(), result]);
            }
        }
        let _ = metrics::TRANSIENT_RETRIES.with_label_values(&[Service::Recordings.name(), "postgres"]);

        let Some(pool) = service::database_and_topics(&settings, switchboard_schema::MIGRATIONS, &cancel).await?
        else {
            return Ok(());
        };
        let topics = settings.kafka.topics();
        let codecs = Arc::new(Codecs::new()?);
        // The stage and the resolver share one producer (one connection set, one idempotent
        // sequence per partition); the stage retries failed produces itself.
        let producer = kafka::producer(&settings.kafka, Service::Recordings.name(), Duration::from_secs(30))?;
        // Fails and stops the service on the producer's fatal error (it runs until `cancel`).
        let _fatal = service::watch_producer(Service::Recordings, &producer, health.clone(), cancel.clone());
        let (consumer, watch) = kafka::consumer(&settings.kafka, Service::Recordings, &[&topics.matched])?;
        watcher.watch(watch);
        let max_backoff = Duration::from_millis(settings.pipeline.max_backoff_ms);
        let drain_timeout = Duration::from_millis(settings.pipeline.drain_timeout_ms);
        let pending = Arc::new(Notify::new());
        let resolver = Arc::new(Resolver::new(
            HttpClient::new(),
            Duration::from_millis(own.resolve_timeout_ms),
        ));

        let scheduler = Arc::new(Scheduler {
            pool: pool.clone(),
            producer: producer.clone(),
            codecs: codecs.clone(),
            topic: topics.enriched.clone(),
            resolver,
            signer: signer.clone(),
            sealer: Arc::new(
                switchboard_core::source_secrets::sealer(&settings)
                    .map_err(|e| ServiceError::Setup { what: "the sources' secrets key", source: Box::new(e) })?,
            ),
            settings: own.clone(),
            max_backoff,
            drain_timeout,
            pending: pending.clone(),
        });
        let resolver_cancel = cancel.child_token();
        let resolving = tokio::spawn(scheduler.run(resolver_cancel.clone()));

        let registrar = Registrar {
            codecs: codecs.clone(),
            output_topic: topics.enriched.clone(),
            pool,
            signer,
            max_backoff,
            pending,
        };
        let ctx = StageContext {
            stage: Service::Recordings.name(),
            consumer,
            producer,
            codecs,
            dead_letter_topic: topics.dead_letter.clone(),
            max_in_flight: settings.pipeline.max_in_flight,
            max_backoff,
            drain_timeout,
        };
        health.set_ready(true);
        tracing::info!(input = %topics.matched, output = %topics.enriched, "Recordings stage and resolver running.");
        let outcome = switchboard_core::stage::run(ctx, Arc::new(registrar), cancel).await;
        // The stage stops on cancellation or on an error; the resolver stops with it either way.
        resolver_cancel.cancel();
        let _ = resolving.await;
        outcome?;
        tracing::info!("Recordings stopped; offsets committed.");
        Ok(())
    })
    .await
}
