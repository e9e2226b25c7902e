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
//! 4. **Kafka**: `N` more records produced, and every record of the topic read back;
//! 5. **floor**: PostgreSQL alone, with nothing else running, recording `N` delivered deliveries
//!    and their attempts in the dispatcher's batches.
//!
//! From the machine's busy CPU time in 1, 4 and 5 (`/proc/stat`), the least CPU a delivery can
//! cost — its request, its record's way through Kafka, its rows — and so the most deliveries per
//! second any design that keeps the attempt log can reach on this machine.
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
    let busy_before = busy_cpu_seconds();
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
    let direct_cpu = (busy_cpu_seconds() - busy_before) / records as f64;
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
    // `records` records, 256 in flight, their calls named `<prefix><n>`.
    let produce_all = |prefix: &'static str| {
        let produce = &produce;
        async move {
            let produced: Vec<anyhow::Result<()>> =
                futures_util::stream::iter((0..records).map(|n| produce(format!("{prefix}{n}"))))
                    .buffer_unordered(256)
                    .collect()
                    .await;
            ensure!(produced.iter().all(Result::is_ok), "produce failed");
            anyhow::Ok(())
        }
    };
    let started = Instant::now();
    produce_all("t-").await?;
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

    // 4. Kafka alone: N more records produced as above, then everything in `calls` read back.
    let busy_before = busy_cpu_seconds();
    produce_all("k-").await?;
    let produce_cpu = (busy_cpu_seconds() - busy_before) / records as f64;
    let busy_before = busy_cpu_seconds();
    let in_topic = 200 + 2 * records + calls;
    let read = read_topic(&env.brokers, &topic, Duration::from_secs(300), |r| r.len() >= in_topic).await?;
    ensure!(read.len() == in_topic, "read {} of {in_topic} records back", read.len());
    let kafka_cpu = produce_cpu + (busy_cpu_seconds() - busy_before) / in_topic as f64;

    // 5. Floor: what PostgreSQL alone takes to keep the least any delivery leaves behind (its row,
    // delivered, and its attempt's log), in the dispatcher's batches, two at once, nothing else
    // running. No design that keeps the attempt log delivers faster than this on this machine.
    let busy_before = busy_cpu_seconds();
    let floor = floor(&env.database_url(), records).await?;
    let floor_cpu = (busy_cpu_seconds() - busy_before) / records as f64;
    println!(
        "floor: PostgreSQL alone records {records} delivered deliveries with their attempt: {floor:.0}/s = {:.2} × direct",
        floor / direct
    );
    // Each delivery costs at least a request (as in `direct`), its rows (as in `floor`) and its
    // record's way through Kafka, in CPU time of this machine; rendering and signing come on top.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let bound = cores / (direct_cpu + floor_cpu + kafka_cpu);
    println!(
        "  CPU per delivery: request {:.0} µs, rows {:.0} µs, Kafka {:.0} µs; so at most {bound:.0}/s = {:.2} × direct on {cores} cores",
        direct_cpu * 1e6,
        floor_cpu * 1e6,
        kafka_cpu * 1e6,
        bound / direct
    );
    env.cleanup().await;
    Ok(())
}

/// CPU time this machine has spent busy (all processes, all cores: `/proc/stat`), in seconds.
fn busy_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait, in USER_HZ (100).
    let busy: f64 =
        ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    busy / 100.0
}

/// Deliveries per second PostgreSQL records (row and attempt log, one transaction per 500, two
/// connections) with nothing else to do.
async fn floor(url: &str, records: usize) -> anyhow::Result<f64> {
    const BATCH: usize = 500;
    let subject = serde_json::to_value(record("floor"))?;
    let request = json!({"method": "POST", "url": "http://127.0.0.1/calls", "headers": ["content-type"], "body_bytes": 20});
    let started = Instant::now();
    let lanes = (0..2).map(|lane| {
        let (subject, request) = (subject.clone(), request.clone());
        async move {
            let mut client = connect(url).await?;
            for first in (lane * BATCH..records).step_by(2 * BATCH) {
                let ids: Vec<String> = (first..(first + BATCH).min(records)).map(|n| format!("floor-{n}")).collect();
                let subjects = vec![&subject; ids.len()];
                let requests = vec![&request; ids.len()];
                let tx = client.transaction().await?;
                tx.execute(
                    "INSERT INTO deliveries (id, profile_id, source_id, call_id, subject_id, trigger, subject_kind,
                         subject, status, attempts, delivered_at)
                     SELECT id, 'bench', 'bench-pbx', id, 'record:1', 'call_record_completed', 'record', s,
                         'delivered', 1, now()
                     FROM unnest($1::text[], $2::jsonb[]) AS u(id, s)",
                    &[&ids, &subjects],
                )
                .await?;
                tx.execute(
                    "INSERT INTO delivery_attempts (delivery_id, n, step, started_at, request, response_status,
                         response_body, latency_ms)
                     SELECT id, 1, 'post', now(), r, 200, 'ok', 1 FROM unnest($1::text[], $2::jsonb[]) AS u(id, r)",
                    &[&ids, &requests],
                )
                .await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        }
    });
    for lane in futures_util::future::join_all(lanes).await {
        lane?;
    }
    Ok(records as f64 / started.elapsed().as_secs_f64())
}
