//! Dispatcher benchmark: deliveries per second from the calls topic to a local receiver, against
//! the same load generator posting the same requests to that receiver directly, and call record →
//! delivered latency at a fixed arrival rate.
//!
//! Runs the dispatcher (release binary) on the local broker and PostgreSQL with one profile that
//! fires on every completed call record and posts a small JSON body to a bare hyper receiver on
//! loopback (answering 200 at once). Measurements, in one run:
//! 1. **direct**: the load generator posts `N` bodies to the receiver itself, `CONCURRENCY` in
//!    flight — the most a sender can get out of this receiver on this machine;
//! 2. **dispatcher**: `N` call records produced to `calls` as fast as the producer goes; time from
//!    the first produce to the `N`th request the receiver got (each record: consumed, scheduled in
//!    PostgreSQL in a batch transaction, claimed, rendered, signed, sent, marked delivered);
//! 3. **open loop**: records at a fixed rate for 10 s; per record, produce → received.
//!
//! Usage: `bench-dispatcher [RECORDS] [CONCURRENCY] [RATE]` (defaults 5000, 32, 500/s). Build with
//! `cargo build --release -p switchboard -p switchboard-tests`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use switchboard_core::avro::Codecs;
use switchboard_core::model::{
    CallId, CallRecord, CallStatus, Completion, Direction, Outcome, SourceId, Vendor,
};
use switchboard_tests::*;

const TOKEN: &str = "bench-dispatcher-token-0123456789abcdef0123456789";

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((p / 100.0) * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// A bare HTTP/1.1 receiver on its own runtime thread: notes when each body's `call` arrived and
/// answers 200.
fn start_receiver(seen: Seen) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
        let Ok(runtime) = runtime else { return };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let body =
                                req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let now = Instant::now();
                            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body)
                                && let Some(call) = value["call"].as_str()
                            {
                                let _ = seen.lock().expect("lock").entry(call.to_owned()).or_insert(now);
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"{}"))))
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
    });
    Ok(port)
}

fn record(call: &str) -> CallRecord {
    let now = Utc::now();
    CallRecord {
        source_id: SourceId::parse("bench-pbx").expect("source"),
        vendor: Vendor::Generic,
        call_id: CallId::parse(call).expect("call"),
        version: 1,
        status: CallStatus::Ended,
        outcome: Some(Outcome::Answered),
        completion: Some(Completion::EndMarker),
        completed_at: Some(now),
        direction: Direction::Inbound,
        from_number: Some("+442079460000".into()),
        to_number: Some("+442079460999".into()),
        started_at: now,
        answered_at: Some(now),
        ended_at: Some(now),
        duration_seconds: Some(65),
        talk_seconds: Some(60),
        disposition: None,
        hangup_cause: None,
        agent: None,
        contact_ids: Vec::new(),
        contact_match: None,
        responsible_agent_id: None,
        recording_url: None,
        recording_id: None,
        legs: Vec::new(),
        recording_status: None,
        recording_error: None,
        queue: None,
        wrap_up: None,
    }
}

async fn wait_for(seen: &Seen, prefix: &str, count: usize, within: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let (got, last) = {
            let seen = seen.lock().expect("lock");
            let mine: Vec<&Instant> =
                seen.iter().filter(|(c, _)| c.starts_with(prefix)).map(|(_, t)| t).collect();
            (mine.len(), mine.into_iter().max().copied())
        };
        if got >= count {
            return last.context("no deliveries");
        }
        ensure!(Instant::now() < deadline, "{got} of {count} {prefix} deliveries within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(32);
    let rate: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(500.0);

    let seen: Seen = Arc::default();
    let port = start_receiver(seen.clone())?;
    let receiver = format!("http://127.0.0.1:{port}/calls");
    let client = http_client();

    // 1. Direct: the same bodies, straight to the receiver.
    let bodies: Vec<String> = (0..records).map(|n| json!({"call": format!("d-{n}")}).to_string()).collect();
    let started = Instant::now();
    let statuses: Vec<anyhow::Result<u16>> = futures_util::stream::iter(bodies)
        .map(|body| {
            let (client, url) = (&client, &receiver);
            async move {
                Ok(send(client, "POST", url, &[("content-type", "application/json")], body).await?.status)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    ensure!(statuses.iter().all(|s| matches!(s, Ok(200))), "direct posts failed");
    let direct = records as f64 / started.elapsed().as_secs_f64();
    println!("direct: {records} requests, {concurrency} in flight: {direct:.0}/s");

    let mut env = TestEnv::new("bench-dsp");
    env.set("RUST_LOG", "warn");
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.set("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", "[\"127.0.0.0/8\"]");
    env.set("SWITCHBOARD_DISPATCHER__CONCURRENCY", concurrency.to_string());
    env.set("SWITCHBOARD_POSTGRES__POOL_SIZE", "16");
    env.init().await?;
    let dispatcher = env.start("dispatcher").await?;
    let profile = json!({
        "name": "bench", "trigger": "call_record_completed",
        "steps": [{"name": "post", "request": {"method": "POST", "url": receiver, "json_body": "{\"call\": {{ report_call_id }}}"}}],
        "max_concurrency": concurrency,
    });
    let auth = format!("Bearer {TOKEN}");
    let put = send(
        &client,
        "PUT",
        &dispatcher.url("/v1/profiles/bench"),
        &[("authorization", auth.as_str()), ("content-type", "application/json")],
        profile.to_string(),
    )
    .await?;
    ensure!(put.status == 201, "profile: {} {:?}", put.status, put.json());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let codecs = Codecs::new()?;
    let topic = env.topics().calls;
    let produce = |call: String| {
        let (producer, topic, payload) =
            (producer.clone(), topic.clone(), codecs.call_record.encode(&record(&call)));
        async move {
            let payload = payload?;
            let key = format!("bench-pbx:{call}");
            producer
                .send(FutureRecord::to(&topic).key(&key).payload(&payload), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)?;
            anyhow::Ok(())
        }
    };

    // Warm-up, then 2. throughput.
    for n in 0..200 {
        produce(format!("w-{n}")).await?;
    }
    let _ = wait_for(&seen, "w-", 200, Duration::from_secs(60)).await?;
    let started = Instant::now();
    let produced: Vec<anyhow::Result<()>> =
        futures_util::stream::iter((0..records).map(|n| produce(format!("t-{n}"))))
            .buffer_unordered(256)
            .collect()
            .await;
    ensure!(produced.iter().all(Result::is_ok), "produce failed");
    let last = wait_for(&seen, "t-", records, Duration::from_secs(600)).await?;
    let through = records as f64 / last.duration_since(started).as_secs_f64();
    println!(
        "dispatcher: {records} records → {records} deliveries: {through:.0}/s = {:.2} × direct",
        through / direct
    );
    // Where the time went: how busy the consumer (one transaction per batch, one batch at a time) was.
    let metrics = get(&client, &dispatcher.ops_url("/metrics")).await?;
    let metrics = String::from_utf8_lossy(&metrics.body);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("stage=\"dispatcher\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let (batches, busy) =
        (value("switchboard_batch_size_count"), value("switchboard_processing_seconds_sum"));
    println!(
        "  consumer: {batches:.0} batches of {:.0} records on average, {:.1} ms each, {busy:.1} s busy in all",
        value("switchboard_batch_size_sum") / batches,
        busy * 1e3 / batches,
    );

    // 3. Open loop.
    let calls = (rate * 10.0) as usize;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let begin = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(calls);
    for n in 0..calls {
        tokio::time::sleep_until(begin + Duration::from_secs_f64(n as f64 / rate)).await;
        let call = format!("o-{n}");
        let _ = sent.lock().expect("lock").insert(call.clone(), Instant::now());
        tasks.push(tokio::spawn(produce(call)));
    }
    for task in tasks {
        task.await??;
    }
    let _ = wait_for(&seen, "o-", calls, Duration::from_secs(120)).await?;
    let mut latencies: Vec<f64> = {
        let (seen, sent) = (seen.lock().expect("lock"), sent.lock().expect("lock"));
        sent.iter()
            .filter_map(|(c, at)| seen.get(c).map(|got| got.duration_since(*at).as_secs_f64() * 1e3))
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    println!(
        "open loop {rate}/s for 10 s: {} delivered; record → delivered p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    drop(dispatcher);
    env.cleanup().await;
    Ok(())
}
