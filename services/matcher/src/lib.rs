//! matcher: finds the agent and the customer of each call event.
//!
//! Input: normalised call events (`<prefix>normalized`). Output: the same events on
//! `<prefix>matched`, keyed by call, with `agent_id`/`agent_match` (by extension, then number,
//! then email where the source allows it) and `contact_ids`/`contact_match`/
//! `responsible_agent_id` (the customer's E.164 number against every contact's numbers; several
//! contacts are reported as ambiguous with all of them, the company's own numbers never match).
//! Delivery: at least once, offsets stored after the produce is acknowledged; matching is a pure
//! function of the event and the directory snapshot, so a re-delivery re-matches the same way
//! unless the directory changed in between, in which case the newer answer is the better one.
//! Ordering: per call, as the input partition. The directory is held in memory
//! (`switchboard-directory`) and refreshed by PostgreSQL LISTEN/NOTIFY; no event is matched
//! before the first snapshot has loaded.

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::avro::Codecs;
use switchboard_core::config::{Service, Settings};
use switchboard_core::kafka::Outbound;
use switchboard_core::model::{AgentMatch, CallEvent, ContactMatch};
use switchboard_core::pg;
use switchboard_core::service::{self, ServiceError};
use switchboard_core::stage::{Inbound, Poison, PoisonClass, Processor};
use switchboard_directory::{Directory, SharedDirectory};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct Matcher {
    codecs: Arc<Codecs>,
    output_topic: String,
    directory: SharedDirectory,
    cancel: CancellationToken,
}

impl Matcher {
    /// Matches one event against `directory` and counts the outcome.
    pub fn enrich(directory: &Directory, event: &mut CallEvent) {
        directory.match_event(event);
        let agent = match event.agent_match {
            Some(AgentMatch::Extension) => "extension",
            Some(AgentMatch::Number) => "number",
            Some(AgentMatch::Email) => "email",
            Some(AgentMatch::Unknown) | None => "none",
        };
        let contact = match event.contact_match {
            Some(ContactMatch::Unique) => "unique",
            Some(ContactMatch::Ambiguous) => "ambiguous",
            Some(ContactMatch::OwnNumber) => "own_number",
            Some(ContactMatch::None | ContactMatch::Unknown) | None => "none",
        };
        metrics::MATCHES.with_label_values(&["agent", agent]).inc();
        metrics::MATCHES.with_label_values(&["contact", contact]).inc();
    }
}

impl Processor for Matcher {
    async fn process(&self, record: &Inbound) -> Result<Vec<Outbound>, Poison> {
        let mut event = self
            .codecs
            .call_event
            .decode(&record.payload)
            .map_err(|e| Poison::new(PoisonClass::Decode, e.to_string()))?;
        // Until the first snapshot loads (PostgreSQL down at start-up) records wait here, which
        // the stage's in-flight bound turns into backpressure; matching against nothing would
        // publish wrong "no match" answers.
        let Some(directory) = self.directory.wait_loaded(&self.cancel).await else {
            // Stopping: leave the record unfinished, so its offset is not stored and the next
            // run matches it; a poison answer would dead-letter a perfectly good event.
            return std::future::pending().await;
        };
        Self::enrich(&directory, &mut event);
        let payload = self
            .codecs
            .call_event
            .encode(&event)
            .map_err(|e| Poison::new(PoisonClass::Encode, e.to_string()))?;
        Ok(vec![Outbound {
            topic: self.output_topic.clone(),
            key: Some(event.partition_key().into_bytes()),
            payload,
        }])
    }
}

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    let directory = SharedDirectory::default();
    let loader = {
        let (settings, directory, cancel) = (settings.clone(), directory.clone(), cancel.clone());
        tokio::spawn(async move {
            match pg::connect_and_migrate(&settings.postgres, switchboard_schema::MIGRATIONS, &cancel).await {
                Ok(Some(pool)) => {
                    switchboard_directory::watch(
                        pool,
                        settings.postgres.url.clone(),
                        directory,
                        Duration::from_millis(50),
                        Duration::from_secs(60),
                        cancel,
                    )
                    .await;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "The matcher cannot use its database.");
                    cancel.cancel();
                }
            }
        })
    };
    let stage_cancel = cancel.clone();
    let outcome = service::run_stage(
        Service::Matcher,
        &settings,
        listener,
        |topics| &topics.normalized,
        |codecs, topics| Matcher {
            codecs,
            output_topic: topics.matched.clone(),
            directory: directory.clone(),
            cancel: stage_cancel,
        },
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    let _ = loader.await;
    outcome
}
