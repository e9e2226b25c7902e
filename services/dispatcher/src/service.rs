//! The dispatcher service: `switchboard dispatcher`. One process runs three loops over the
//! library's rules:
//! - the consumer ([`crate::consume`]): `calls` and `enriched` in its own group → due deliveries in
//!   PostgreSQL, one transaction per batch, offsets stored after the commit;
//! - the worker ([`crate::worker`]): due deliveries → HTTP requests, from the table, so a slow or
//!   dead CRM never holds a partition;
//! - the API ([`crate::api`]) on its port (8083), with `/metrics`, `/healthz` and `/readyz` on the
//!   ops port (9105).
//!
//! Delivery guarantee: at least once per (profile, event or record version), each attempt with
//! the delivery's id as `webhook-id`. Ordering: per (profile, call). On SIGTERM the service stops
//! consuming, lets in-flight attempts finish (up to the drain timeout), commits its offsets and
//! exits; an attempt cut short is made again once its lease lapses.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics;
use switchboard_core::avro::Codecs;
use switchboard_core::config::{Service, Settings};
use switchboard_core::service::{self, ServiceError};
use switchboard_core::{http, kafka};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::DispatcherSettings;
use crate::api::Api;
use crate::cache::ProfileCache;
use crate::consume::Scheduler;
use crate::seal::Sealer;
use crate::ssrf::{Cidr, EgressPolicy};
use crate::worker::Worker;

/// Every `result` of `switchboard_dispatcher_deliveries_total`.
const RESULTS: [&str; 6] = ["scheduled", "discarded", "delivered", "retry", "failed", "gone"];

/// The egress policy of `settings`: public addresses and the allowed networks.
pub fn egress_policy(settings: &DispatcherSettings) -> Result<EgressPolicy, ServiceError> {
    let allow = settings
        .allow_networks
        .iter()
        .map(|n| {
            n.parse::<Cidr>()
                .map_err(|e| ServiceError::Setup { what: "dispatcher.allow_networks", source: Box::new(e) })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EgressPolicy { allow })
}

/// Runs the dispatcher: `listener` is its API port; the ops port is bound here.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    let own: DispatcherSettings = settings.own_section(Service::Dispatcher)?;
    let sealer = Arc::new(
        Sealer::new(own.secrets_key.expose())
            .map_err(|e| ServiceError::Setup { what: "dispatcher.secrets_key", source: Box::new(e) })?,
    );
    let policy = egress_policy(&own)?;
    let ops = service::bind_ops(&settings, Service::Dispatcher).await?;
    service::with_probes(Service::Dispatcher, ops, &cancel.clone(), |health, watcher| async move {
        // Every result and state from the start, at zero, so that rate() sees the first one.
        for result in RESULTS {
            let _ = metrics::DISPATCHER_DELIVERIES.with_label_values(&[result]);
        }
        for result in ["delivered", "failed"] {
            let _ = metrics::DISPATCHER_ATTEMPT_SECONDS.with_label_values(&[result]);
        }
        for state in ["enabled", "paused", "disabled"] {
            let _ = metrics::DISPATCHER_PROFILES.with_label_values(&[state]);
        }
        let _ = metrics::TRANSIENT_RETRIES.with_label_values(&[Service::Dispatcher.name(), "postgres"]);

        let Some(pool) =
            service::database_and_topics(&settings, switchboard_schema::MIGRATIONS, &cancel).await?
        else {
            return Ok(());
        };
        let topics = settings.kafka.topics();
        let codecs = Arc::new(Codecs::new()?);
        let profiles = ProfileCache::default();
        if let Err(error) = profiles.reload(&pool, &sealer).await {
            tracing::warn!(%error, "Cannot load the delivery profiles yet; the refresher retries.");
        }
        let background = cancel.child_token();
        let refresher = tokio::spawn(profiles.clone().refresh(
            pool.clone(),
            sealer.clone(),
            Duration::from_millis(own.profiles_refresh_ms),
            background.clone(),
        ));

        let api = Arc::new(Api {
            pool: pool.clone(),
            sealer: sealer.clone(),
            settings: settings.clone(),
            own: own.clone(),
            policy: policy.clone(),
            profiles: profiles.clone(),
            health: health.clone(),
            tokens: crate::tokens::Tokens::default(),
        });
        let drain = Duration::from_millis(settings.http.drain_timeout_ms.unwrap_or(10_000));
        let api_cancel = CancellationToken::new();
        let server = tokio::spawn(http::serve(listener, drain, api_cancel.clone(), move |req, remote| {
            api.clone().handle(req, remote)
        }));

        let scheduled = Arc::new(Notify::new());
        let worker = Arc::new(Worker::new(
            pool.clone(),
            profiles.clone(),
            policy,
            own.clone(),
            sealer.clone(),
            Duration::from_millis(settings.pipeline.drain_timeout_ms),
            scheduled.clone(),
        ));
        let handoff = worker.handoff();
        let working = tokio::spawn(worker.run(background.clone()));

        let (consumer, watch) =
            kafka::consumer(&settings.kafka, Service::Dispatcher, &[&topics.calls, &topics.enriched])?;
        watcher.watch(watch);
        let producer = kafka::producer(
            &settings.kafka,
            "switchboard-dispatcher",
            Duration::from_millis(settings.kafka.produce_timeout_ms),
        )?;
        // Fails and stops the service on the producer's fatal error (it runs until `cancel`).
        let _fatal = service::watch_producer(Service::Dispatcher, &producer, health.clone(), cancel.clone());
        let scheduler = Scheduler {
            consumer,
            producer: producer.clone(),
            dead_letter_topic: topics.dead_letter.clone(),
            pool,
            codecs,
            profiles,
            calls_topic: topics.calls.clone(),
            max_backoff: Duration::from_millis(settings.pipeline.max_backoff_ms),
            scheduled,
            handoff,
            attempt_timeout: Duration::from_millis(own.attempt_timeout_ms),
            concurrency: own.concurrency,
        };
        crate::values::load_numbering_plan();
        health.set_ready(true);
        tracing::info!(calls = %topics.calls, enriched = %topics.enriched, "Dispatcher running.");
        scheduler.run(cancel.clone()).await;
        kafka::flush(&producer, Duration::from_secs(5));

        background.cancel();
        let _ = working.await;
        api_cancel.cancel();
        let _ = server.await;
        let _ = refresher.await;
        tracing::info!("Dispatcher stopped; offsets committed.");
        Ok(())
    })
    .await
}
