//! End-to-end benchmark: webhooks/s sustained from HTTP into the call log, and webhook → row
//! latency, against a baseline measured in the same run.
//!
//! Runs the real pipeline (release binary, one process per service) against the local broker and
//! PostgreSQL, exactly as the tests do (same environment variables). Measurements:
//!
//! 1. baselines, driven by the same load generator (same client, concurrency and bodies): a bare
//!    hyper handler that reads and discards the body, and a *durable* one that produces the body
//!    to Kafka with Switchboard's producer settings (`acks=all`, idempotent) and answers after
//!    the acknowledgement — the physical limit of a durable ingress on this broker;
//! 2. Switchboard: the same requests posted to ingress; throughput is counted until the last
//!    event is committed to the call log, and latency is `stored_at - received_at` per event,
//!    read back from PostgreSQL (one host, one clock);
//! 3. open loop: webhooks at a fixed arrival rate (not a closed loop, whose rate bends to the
//!    system's latency), webhook → call-log row latency.
//!
//! Usage: `bench-e2e [WEBHOOKS] [CONCURRENCY] [OPEN_LOOP_RATE]` (defaults 20000, 32 and 1000/s
//! for 10 s). Build it with `cargo build --release -p switchboard -p switchboard-tests` so that it
//! finds the release binary.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchboard_core::config::KafkaSettings;
use switchboard_tests::*;

#[derive(Debug)]
struct Run {
    seconds: f64,
    latencies_ms: Vec<f64>,
}

impl Run {
    fn per_second(&self, count: usize) -> f64 {
        count as f64 / self.seconds
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Posts every body with `concurrency` requests in flight, timing each request.
async fn drive(
    client: &HttpClient,
    url: &str,
    auth: &str,
    bodies: &[String],
    concurrency: usize,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut latencies: Vec<f64> = futures_util::stream::iter(bodies)
        .map(|body| async move {
            let sent = Instant::now();
            let response = send(
                client,
                "POST",
                url,
                &[("content-type", "application/json"), ("authorization", auth)],
                body.clone(),
            )
            .await?;
            anyhow::ensure!(response.status < 300, "status {}: {:?}", response.status, response.body);
            Ok(sent.elapsed().as_secs_f64() * 1e3)
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<anyhow::Result<f64>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    latencies.sort_by(f64::total_cmp);
    Ok(Run { seconds: started.elapsed().as_secs_f64(), latencies_ms: latencies })
}

/// Webhook → call-log row latency of every event whose call id matches `pattern`, sorted, in ms.
async fn webhook_to_row_ms(db: &tokio_postgres::Client, pattern: &str) -> anyhow::Result<Vec<f64>> {
    let mut latencies: Vec<f64> = db
        .query(
            "SELECT (extract(epoch FROM stored_at - received_at) * 1000)::float8 FROM call_events
             WHERE call_id LIKE $1",
            &[&pattern],
        )
        .await?
        .iter()
        .map(|row| row.get::<_, f64>(0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// A bare HTTP/1.1 server that reads each body and answers 202, on its own runtime thread.
fn start_bare_hyper() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        let Ok(runtime) = runtime else { return };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                        *response.status_mut() = hyper::StatusCode::ACCEPTED;
                        Ok::<_, Infallible>(response)
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
    });
    Ok(port)
}

/// A hyper handler that produces each body to `topic` and answers 202 once Kafka acknowledged
/// it, with the producer Switchboard's ingress uses; on its own runtime thread.
fn start_durable_hyper(settings: &KafkaSettings, topic: String) -> anyhow::Result<u16> {
    let producer: FutureProducer =
        switchboard_core::kafka::producer(settings, "bench-durable", Duration::from_secs(5))?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        let Ok(runtime) = runtime else { return };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            while let Ok((stream, _)) = listener.accept().await {
                let (producer, topic) = (producer.clone(), topic.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (producer, topic) = (producer.clone(), topic.clone());
                        async move {
                            let body =
                                req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let record = FutureRecord::<[u8], [u8]>::to(&topic)
                                .payload(&body[..])
                                .key(&body[..8.min(body.len())]);
                            let status = match producer.send(record, Duration::from_secs(5)).await {
                                Ok(_) => hyper::StatusCode::ACCEPTED,
                                Err(_) => hyper::StatusCode::SERVICE_UNAVAILABLE,
                            };
                            let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
    });
    Ok(port)
}

/// Posts `bodies` at a fixed arrival rate, each request on its own task whatever the answers'
/// latency (an open loop); returns the seconds it took to send them all.
async fn open_loop(
    client: &HttpClient,
    url: &str,
    auth: &str,
    bodies: Vec<String>,
    rate: f64,
) -> anyhow::Result<f64> {
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(bodies.len());
    for (n, body) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until(started + Duration::from_secs_f64(n as f64 / rate)).await;
        let (client, url, auth) = (client.clone(), url.to_owned(), auth.to_owned());
        tasks.push(tokio::spawn(async move {
            let response = send(
                &client,
                "POST",
                &url,
                &[("content-type", "application/json"), ("authorization", &auth)],
                body,
            )
            .await?;
            anyhow::ensure!(response.status == 202, "status {}", response.status);
            anyhow::Ok(())
        }));
    }
    let sent = started.elapsed().as_secs_f64();
    for task in tasks {
        task.await??;
    }
    Ok(sent)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let webhooks: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20_000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(32);
    let open_rate: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000.0);
    let calls = webhooks.div_ceil(4);

    let mut env = TestEnv::new("bench");
    env.set("RUST_LOG", "warn");
    let credentials = {
        env.init().await?;
        env.add_source("bench", "GB").await?
    };
    let pipeline = env.start_pipeline().await?;
    let client = http_client();
    let warmup = call_webhooks(&format!("{}-warm", env.id), 250);
    let bodies: Vec<String> = call_webhooks(&env.id, calls).into_iter().take(webhooks).collect();
    let auth = credentials.basic();

    // Baseline, same client and bodies.
    let bare = format!("http://127.0.0.1:{}/v1/webhooks/bench", start_bare_hyper()?);
    let _ = drive(&client, &bare, &auth, &warmup, concurrency).await?;
    let baseline = drive(&client, &bare, &auth, &bodies, concurrency).await?;
    let kafka = KafkaSettings { brokers: env.brokers.clone(), ..KafkaSettings::default() };
    let durable_topic = format!("t-{}.durable-baseline", env.id);
    let cancel = tokio_util::sync::CancellationToken::new();
    anyhow::ensure!(switchboard_core::kafka::ensure_topics(&kafka, &[durable_topic.as_str()], &cancel).await);
    let durable =
        format!("http://127.0.0.1:{}/v1/webhooks/bench", start_durable_hyper(&kafka, durable_topic)?);
    let _ = drive(&client, &durable, &auth, &warmup, concurrency).await?;
    let durable_run = drive(&client, &durable, &auth, &bodies, concurrency).await?;

    // Ingress alone, on topics of its own that nothing consumes: what ingress does with the two
    // cores to itself, as the durable baseline had them.
    let alone_env = TestEnv::new("bench-alone");
    alone_env.init().await?;
    let alone_credentials = alone_env.add_source("bench", "GB").await?;
    let mut alone = alone_env.start("ingress").await?;
    let alone_url = alone.url(&format!("/v1/webhooks/{}", alone_credentials.user));
    let alone_auth = alone_credentials.basic();
    let _ = drive(&client, &alone_url, &alone_auth, &warmup, concurrency).await?;
    let alone_run = drive(&client, &alone_url, &alone_auth, &bodies, concurrency).await?;
    let _ = alone.terminate(Duration::from_secs(30)).await?;
    alone_env.cleanup().await;

    // Warm the pipeline (connections, prepared statements, group assignment) before measuring.
    let db = env.db().await?;
    let ingress = pipeline.ingress_url(&format!("/v1/webhooks/{}", credentials.user));
    let _ = drive(&client, &ingress, &auth, &warmup, concurrency).await?;
    let warm_count = warmup.len() as i64;
    anyhow::ensure!(
        wait_for_count(&db, "SELECT count(*) FROM call_events", warm_count, Duration::from_secs(120)).await?
            == warm_count,
        "warm-up did not reach the call log"
    );

    let started = Instant::now();
    let t0 = chrono::Utc::now();
    let accepted = drive(&client, &ingress, &auth, &bodies, concurrency).await?;
    let total = warm_count + bodies.len() as i64;
    let stored =
        wait_for_count(&db, "SELECT count(*) FROM call_events", total, Duration::from_secs(600)).await?;
    anyhow::ensure!(stored == total, "only {stored} of {total} events reached the call log");
    // Measured events are those of this run's calls, not the warm-up's.
    let measured_calls = format!("{}-call-%", env.id);
    let last_stored: chrono::DateTime<chrono::Utc> = db
        .query_one("SELECT max(stored_at) FROM call_events WHERE call_id LIKE $1", &[&measured_calls])
        .await?
        .get(0);
    let sustained_seconds = (last_stored - t0).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let e2e = webhook_to_row_ms(&db, &measured_calls).await?;
    let wall = started.elapsed();

    // Latency at light load: few requests in flight, so queueing does not hide the pipeline's
    // own latency (batch lingers, fetch waits, commits).
    let light_run = format!("{}-light", env.id);
    let light_bodies = call_webhooks(&light_run, 250);
    let light = drive(&client, &ingress, &auth, &light_bodies, 2).await?;
    let light_total = total + light_bodies.len() as i64;
    anyhow::ensure!(
        wait_for_count(&db, "SELECT count(*) FROM call_events", light_total, Duration::from_secs(120))
            .await?
            == light_total,
        "light-load events did not all reach the call log"
    );
    let light_e2e = webhook_to_row_ms(&db, &format!("{light_run}%")).await?;

    // Open loop: a fixed arrival rate for 10 s.
    let open_run = format!("{}-open", env.id);
    let open_count = (open_rate * 10.0) as usize;
    let open_bodies: Vec<String> =
        call_webhooks(&open_run, open_count.div_ceil(4)).into_iter().take(open_count).collect();
    let open_seconds = open_loop(&client, &ingress, &auth, open_bodies, open_rate).await?;
    let open_total = light_total + open_count as i64;
    anyhow::ensure!(
        wait_for_count(&db, "SELECT count(*) FROM call_events", open_total, Duration::from_secs(300)).await?
            == open_total,
        "open-loop events did not all reach the call log"
    );
    let open_e2e = webhook_to_row_ms(&db, &format!("{open_run}%")).await?;

    let n = bodies.len();
    let bare_rate = baseline.per_second(n);
    let ingress_rate = accepted.per_second(n);
    let sustained_rate = n as f64 / sustained_seconds;
    println!("webhooks={n} concurrency={concurrency} calls={calls} wall={wall:.1?}");
    println!("| measurement | webhooks/s | ratio to bare hyper | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, rate: f64, lat: &[f64]| {
        println!(
            "| {name} | {rate:.0} | {:.2} | {:.2} | {:.2} |",
            rate / bare_rate,
            percentile(lat, 50.0),
            percentile(lat, 99.0)
        );
    };
    row("baseline: bare hyper handler (HTTP 202)", bare_rate, &baseline.latencies_ms);
    let durable_rate = durable_run.per_second(n);
    row("baseline: hyper + rdkafka, 202 after acks=all", durable_rate, &durable_run.latencies_ms);
    let alone_rate = alone_run.per_second(n);
    row("ingress alone (nothing consuming): HTTP 202 after Kafka ack", alone_rate, &alone_run.latencies_ms);
    row("ingress, whole pipeline running: HTTP 202 after Kafka ack", ingress_rate, &accepted.latencies_ms);
    row("end to end: webhook committed to call log", sustained_rate, &e2e);
    let light_rate = light.per_second(light_bodies.len());
    println!("\nlight load ({} webhooks, 2 in flight, {light_rate:.0}/s):", light_bodies.len());
    println!("| measurement | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (name, lat) in [("ingress 202", &light.latencies_ms), ("webhook → call-log row", &light_e2e)] {
        println!("| {name} | {:.2} | {:.2} |", percentile(lat, 50.0), percentile(lat, 99.0));
    }
    println!(
        "\nratios to the durable baseline: ingress alone {:.2}, ingress with the pipeline {:.2}; \
         sustained into the call log {:.2} of ingress",
        alone_rate / durable_rate,
        ingress_rate / durable_rate,
        sustained_rate / ingress_rate
    );
    println!(
        "open loop: {open_count} webhooks offered at {open_rate:.0}/s (sent in {open_seconds:.1} s): \
         webhook → call-log row p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&open_e2e, 50.0),
        percentile(&open_e2e, 99.0),
        open_e2e.last().copied().unwrap_or(f64::NAN)
    );

    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}
