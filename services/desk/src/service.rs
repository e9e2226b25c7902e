//! The desk service: `switchboard desk`. One process runs:
//! - the API and streams ([`crate::api`]) on its port (8084), with `/metrics`, `/healthz` and
//!   `/readyz` on the ops port (9106);
//! - the consumer: `matched` and `agent-status` in a group of this replica's own, from the latest
//!   record → the call tracker → notifications to the hub;
//! - the directory watcher, and a listener on `switchboard_desk` (revoked sessions, changed
//!   screen-pops).
//!
//! On SIGTERM the replica turns unready, ends its streams (clients reconnect to another replica
//! and resume), drains its requests and exits. It commits nothing that matters: its group is its
//! own, and a restarted replica starts from the latest record.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::metrics;
use futures_util::StreamExt;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use switchboard_core::avro::Codecs;
use switchboard_core::config::{Service, Settings};
use switchboard_core::retry::Backoff;
use switchboard_core::service::{self, ServiceError};
use switchboard_core::{http, kafka};
use switchboard_directory::SharedDirectory;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::DeskSettings;
use crate::api::Api;
use crate::desk::Desk;
use crate::hub::{CloseReason, Hub};
use crate::notify::Notification;
use crate::screen_pop;
use crate::track::Tracker;

/// Every notification type, registered at zero from the start.
const TYPES: [&str; 7] = ["incoming", "outgoing", "answered", "taken", "ended", "missed", "status"];

/// Runs the desk: `listener` is its public port; the ops port is bound here.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    let own: DeskSettings = settings.own_section(Service::Desk)?;
    let ops = service::bind_ops(&settings, Service::Desk).await?;
    service::with_probes(Service::Desk, ops, &cancel.clone(), |health, watcher| async move {
        for kind in TYPES {
            let _ = metrics::DESK_NOTIFICATIONS.with_label_values(&[kind]);
        }
        for transport in ["websocket", "sse"] {
            let _ = metrics::DESK_STREAMS.with_label_values(&[transport]);
            let _ = metrics::DESK_NOTIFICATION_SECONDS.with_label_values(&[transport]);
            let _ = metrics::DESK_RESUMES.with_label_values(&[transport]);
        }
        for vendor in switchboard_model::Vendor::ALL {
            let _ = metrics::ORIGINATE_SECONDS.with_label_values(&[vendor.as_str()]);
        }
        for reason in ["revoked", "expired", "slow", "shutdown"] {
            let _ = metrics::DESK_STREAMS_CLOSED.with_label_values(&[reason]);
        }

        let Some(pool) =
            service::database_and_topics(&settings, switchboard_schema::MIGRATIONS, &cancel).await?
        else {
            return Ok(());
        };
        let topics = settings.kafka.topics();
        let codecs = Arc::new(Codecs::new()?);
        let producer = kafka::producer(
            &settings.kafka,
            "switchboard-desk",
            Duration::from_millis(settings.kafka.produce_timeout_ms),
        )?;
        // Fails and stops the service on the producer's fatal error (it runs until `cancel`).
        let _fatal = service::watch_producer(Service::Desk, &producer, health.clone(), cancel.clone());
        let directory = SharedDirectory::default();
        let background = cancel.child_token();
        let directory_watch = tokio::spawn(switchboard_directory::watch(
            pool.clone(),
            settings.postgres.url.clone(),
            directory.clone(),
            Duration::from_millis(50),
            Duration::from_secs(60),
            background.clone(),
        ));
        let desk = Arc::new(Desk {
            pool: pool.clone(),
            settings: settings.clone(),
            own: own.clone(),
            hub: Hub::new(own.resume_window, own.stream_queue),
            directory: directory.clone(),
            pops: RwLock::default(),
            producer,
            codecs: codecs.clone(),
            status_topic: topics.agent_status.clone(),
            enriched_topic: topics.enriched.clone(),
            keepalive: Duration::from_secs(own.keepalive_secs),
            // Within the server's own request deadline, so that a silent vendor is a 502 with the
            // reason rather than a 408.
            transport: switchboard_originate::Transport::new(switchboard_originate::TransportConfig {
                timeout: Duration::from_millis(
                    (settings.http.limits().request_timeout.as_millis() as u64).saturating_mul(4) / 5,
                ),
                ..switchboard_originate::TransportConfig::default()
            }),
            sealer: switchboard_core::source_secrets::sealer(&settings)
                .map_err(|e| ServiceError::Setup { what: "the sources' secrets key", source: Box::new(e) })?,
        });
        let listening = tokio::spawn(listen(desk.clone(), background.clone()));

        let streams = CancellationToken::new();
        let api = Arc::new(Api {
            desk: desk.clone(),
            health: health.clone(),
            stream_slots: Arc::new(Semaphore::new(own.max_streams)),
            cancel: streams.clone(),
        });
        let drain = Duration::from_millis(settings.http.drain_timeout_ms.unwrap_or(10_000));
        let limits = settings.http.limits();
        let api_cancel = CancellationToken::new();
        let server = tokio::spawn(http::serve_with(
            listener,
            limits,
            drain,
            api_cancel.clone(),
            move |req, remote| api.clone().handle(req, remote),
        ));

        let (consumer, watch) = kafka::broadcast_consumer(
            &settings.kafka,
            Service::Desk,
            &[&topics.matched, &topics.agent_status],
        )?;
        watcher.watch(watch);
        if directory.wait_loaded(&cancel).await.is_none() {
            return Ok(());
        }
        health.set_ready(true);
        tracing::info!(matched = %topics.matched, status = %topics.agent_status, "Desk running.");
        consume(&consumer, &desk, &codecs, &topics.matched, own.max_tracked_calls, &cancel).await;

        // Streams first, so that clients reconnect elsewhere while the requests drain.
        streams.cancel();
        api_cancel.cancel();
        let _ = server.await;
        background.cancel();
        let _ = directory_watch.await;
        let _ = listening.await;
        kafka::flush(&desk.producer, Duration::from_secs(5));
        tracing::info!("Desk stopped.");
        Ok(())
    })
    .await
}

/// Reads both topics until cancelled, turning records into notifications.
async fn consume(
    consumer: &StreamConsumer,
    desk: &Desk,
    codecs: &Codecs,
    matched_topic: &str,
    max_calls: usize,
    cancel: &CancellationToken,
) {
    let mut tracker = Tracker::new(max_calls);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut records = consumer.stream();
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => return,
            message = records.next() => message,
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                metrics::CONSUME_ERRORS.with_label_values(&["desk"]).inc();
                tracing::warn!(%error, "Consume failed; retrying.");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            None => return,
        };
        backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        metrics::EVENTS_IN.with_label_values(&["desk"]).inc();
        let (partition, offset) = (message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default();
        let directory = desk.directory.snapshot();
        if message.topic() == matched_topic {
            match codecs.call_event.decode(payload) {
                Ok(event) => {
                    let pops = desk.screen_pops();
                    let now = chrono::Utc::now();
                    for (n, happening) in tracker.observe(&event).iter().enumerate() {
                        let note = Notification::of_call(
                            format!("m{partition}-{offset}-{n}"),
                            happening,
                            directory.as_deref(),
                            pops.of(event.source_id.as_str()),
                            event.received_at,
                            now,
                        );
                        desk.hub.publish(note);
                    }
                }
                // The matched topic's own consumer (recordings) dead-letters what it cannot
                // read; the desk only watches the topic, so it counts and says so.
                Err(error) => undecodable(message.topic(), partition, offset, &error),
            }
        } else {
            match codecs.agent_status.decode(payload) {
                Ok(status) => {
                    desk.hub.publish(Notification::of_status(
                        format!("s{partition}-{offset}"),
                        &status,
                        directory.as_deref(),
                    ));
                }
                Err(error) => undecodable(message.topic(), partition, offset, &error),
            }
        }
        metrics::EVENTS_OUT.with_label_values(&["desk"]).inc();
        if let Err(error) = consumer.store_offset(message.topic(), partition, offset) {
            tracing::debug!(%error, "Cannot store the offset (a rebalance); the lag figure lags.");
        }
    }
}

fn undecodable(topic: &str, partition: i32, offset: i64, error: &dyn std::error::Error) {
    metrics::EVENTS_FAILED.with_label_values(&["desk", "decode"]).inc();
    tracing::warn!(%error, topic, partition, offset, "Record not readable; no notification for it.");
}

/// LISTENs on `switchboard_desk` until cancelled: a revoked session's streams end on this
/// replica, and changed screen-pops are reloaded. Screen-pops are also loaded on every
/// (re)connect and every minute.
async fn listen(desk: Arc<Desk>, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !cancel.is_cancelled() {
        match listen_once(&desk, &cancel).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "Desk change feed lost; reconnecting."),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn listen_once(
    desk: &Desk,
    cancel: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (client, mut connection) = tokio_postgres::connect(&desk.settings.postgres.url, NoTls).await?;
    let (tx, mut notified) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "Desk listener connection failed.");
                    return;
                }
            }
        }
    });
    client.batch_execute("LISTEN switchboard_desk").await?;
    desk.replace_screen_pops(screen_pop::load(&desk.pool).await?);
    let mut periodic = tokio::time::interval(Duration::from_secs(60));
    let _ = periodic.tick().await;
    let outcome = loop {
        tokio::select! {
            () = cancel.cancelled() => break Ok(()),
            _ = periodic.tick() => desk.replace_screen_pops(screen_pop::load(&desk.pool).await?),
            payload = notified.recv() => match payload {
                None => break Err("the change feed closed".into()),
                Some(payload) => {
                    if let Some(session) = payload.strip_prefix("session:") {
                        desk.hub.close_session(session, CloseReason::Revoked);
                    } else if payload == "screen_pops" {
                        desk.replace_screen_pops(screen_pop::load(&desk.pool).await?);
                    }
                }
            },
        }
    };
    drop(client);
    driver.abort();
    outcome
}
