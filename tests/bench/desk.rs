//! Desk benchmark: webhook posted → notification received by a connected agent, and what 5,000
//! connected sessions cost, against a baseline measured in the same run.
//!
//! Runs ingress, normalizer, matcher and the desk (release binary, one process each) on the local
//! broker and PostgreSQL. The load: calls ringing at a fixed arrival rate (an open loop), each a
//! ringing webhook for one of 50 agents. For every call two clocks stop:
//! - **baseline**: a plain Kafka consumer of the `matched` topic in this process sees the call's
//!   event — the pipeline up to where the desk starts, with nothing of the desk;
//! - **desk**: the agent's WebSocket client (in this process) receives the `incoming` pop.
//!
//! So `desk / baseline` is what the desk adds on top of the pipeline it reads from. It runs twice:
//! with only the 50 agents connected, and with 5,000 sessions connected (4,950 idle), and reports
//! the desk's resident memory per connection (RSS before and after opening them).
//!
//! Usage: `bench-desk [RATE] [SECONDS] [SESSIONS]` (defaults 50 calls/s, 20 s, 5000). The load
//! generator opens that many sockets: raise the file limit first (`ulimit -n 20000`). Build with
//! `cargo build --release -p switchboard -p switchboard-tests`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures_util::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use serde_json::{Value, json};
use switchboard_core::avro::Codecs;
use switchboard_tests::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const TOKEN: &str = "bench-desk-token-0123456789abcdef0123456789";
const AGENTS: usize = 50;

/// When each call was posted, and when each clock saw it.
#[derive(Default)]
struct Clocks {
    posted: HashMap<String, Instant>,
    baseline: HashMap<String, Instant>,
    desk: HashMap<String, Instant>,
}

type Shared = Arc<Mutex<Clocks>>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((p / 100.0) * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

fn latencies(clocks: &Clocks, seen: &HashMap<String, Instant>, prefix: &str) -> Vec<f64> {
    let mut out: Vec<f64> = clocks
        .posted
        .iter()
        .filter(|(call, _)| call.starts_with(prefix))
        .filter_map(|(call, posted)| seen.get(call).map(|at| at.duration_since(*posted).as_secs_f64() * 1e3))
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

async fn session(client: &HttpClient, desk: &ServiceProcess, agent: &str) -> anyhow::Result<String> {
    let auth = format!("Bearer {TOKEN}");
    let body = json!({"agent_id": agent}).to_string();
    let response =
        send(client, "POST", &desk.url("/v1/desk/sessions"), &[("authorization", &auth)], body).await?;
    ensure!(response.status == 201, "session {}: {:?}", response.status, response.json());
    Ok(response.json()["token"].as_str().context("token")?.to_owned())
}

/// Opens a WebSocket stream and, when `clocks` is given, stops the desk clock of every pop.
async fn connect(
    port: u16,
    token: &str,
    clocks: Option<Shared>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let url = format!("ws://127.0.0.1:{port}/v1/desk/stream?token={token}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    // Wait for hello, so that the stream is registered before the load starts.
    let _ = ws.next().await;
    Ok(tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let (WsMessage::Text(text), Some(clocks)) = (message, &clocks) {
                let now = Instant::now();
                if let Ok(value) = serde_json::from_str::<Value>(text.as_str())
                    && value["type"] == "incoming"
                    && let Some(call) = value["call"]["call_id"].as_str()
                {
                    let _ = clocks.lock().expect("lock").desk.insert(call.to_owned(), now);
                }
            }
        }
    }))
}

/// Posts one ringing webhook per call at `rate` calls/s for `seconds`; call ids `<prefix><n>`.
async fn load(
    client: &HttpClient,
    url: &str,
    auth: &str,
    prefix: &str,
    rate: f64,
    seconds: f64,
    clocks: &Shared,
) -> anyhow::Result<()> {
    let calls = (rate * seconds) as usize;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(calls);
    for n in 0..calls {
        tokio::time::sleep_until(started + Duration::from_secs_f64(n as f64 / rate)).await;
        let call = format!("{prefix}{n}");
        let body = json!({
            "call_id": call, "event": "ringing", "direction": "inbound",
            "from": format!("+4420794{:05}", n % 100_000), "to": "+442071234567",
            "agent": {"number": format!("{}", 1000 + n % AGENTS)},
        })
        .to_string();
        let (client, url, auth, clocks) = (client.clone(), url.to_owned(), auth.to_owned(), clocks.clone());
        tasks.push(tokio::spawn(async move {
            let _ = clocks.lock().expect("lock").posted.insert(call, Instant::now());
            let response = send(
                &client,
                "POST",
                &url,
                &[("content-type", "application/json"), ("authorization", &auth)],
                body,
            )
            .await?;
            ensure!(response.status == 202, "status {}", response.status);
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    // Let the last pops arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

fn report(label: &str, clocks: &Clocks, prefix: &str) -> (f64, f64) {
    let base = latencies(clocks, &clocks.baseline, prefix);
    let desk = latencies(clocks, &clocks.desk, prefix);
    let posted = clocks.posted.keys().filter(|c| c.starts_with(prefix)).count();
    println!(
        "{label}: {posted} calls; baseline (matched topic) p50 {:.1} ms p99 {:.1} ms ({} seen); \
         desk pop p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} seen); p99 ratio {:.2}",
        percentile(&base, 50.0),
        percentile(&base, 99.0),
        base.len(),
        percentile(&desk, 50.0),
        percentile(&desk, 99.0),
        desk.last().copied().unwrap_or(f64::NAN),
        desk.len(),
        percentile(&desk, 99.0) / percentile(&base, 99.0),
    );
    (percentile(&desk, 99.0), desk.len() as f64 / posted.max(1) as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rate: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50.0);
    let seconds: f64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20.0);
    let sessions: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5000);

    let mut env = TestEnv::new("bench-desk");
    env.set("RUST_LOG", "warn");
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.set("SWITCHBOARD_POSTGRES__POOL_SIZE", "16");
    env.init().await?;
    let credentials = env.add_source("bench", "GB").await?;
    // 50 agents who take calls (extensions 1000–1049) and the idle rest, one session each.
    env.db()
        .await?
        .execute(
            "INSERT INTO agents (id, name, extensions, groups)
             SELECT 'a' || n, 'Agent ' || n, ARRAY[(1000 + n)::text], '{sales}' FROM generate_series(0, $1::int - 1) n",
            &[&(sessions.max(AGENTS) as i32)],
        )
        .await?;
    let mut services = Vec::new();
    for name in ["ingress", "normalizer", "matcher"] {
        services.push(env.start(name).await?);
    }
    let desk = env.start("desk").await?;
    let client = http_client();
    let ingress = format!("{}/v1/webhooks/bench", services[0].url(""));
    let auth = credentials.basic();
    let clocks: Shared = Arc::default();

    // The baseline clock: the matched topic, read as the desk reads it (latest, own group).
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("bench-baseline-{}", env.id))
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    consumer.subscribe(&[&env.topics().matched])?;
    let codecs = Codecs::new()?;
    let baseline_clocks = clocks.clone();
    let _baseline = tokio::spawn(async move {
        let mut stream = consumer.stream();
        while let Some(Ok(message)) = stream.next().await {
            let now = Instant::now();
            if let Ok(event) = codecs.call_event.decode(message.payload().unwrap_or_default()) {
                let _ = baseline_clocks
                    .lock()
                    .expect("lock")
                    .baseline
                    .entry(event.call_id.as_str().to_owned())
                    .or_insert(now);
            }
        }
    });

    let mut streams = Vec::new();
    for n in 0..AGENTS {
        let token = session(&client, &desk, &format!("a{n}")).await?;
        streams.push(connect(desk.port, &token, Some(clocks.clone())).await?);
    }
    // Warm-up, so that consumers have joined and connections are open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    load(&client, &ingress, &auth, "warm-", 10.0, 3.0, &clocks).await?;

    load(&client, &ingress, &auth, "few-", rate, seconds, &clocks).await?;
    let (few_p99, few_seen) =
        report(&format!("{AGENTS} sessions connected, {rate}/s"), &clocks.lock().expect("lock"), "few-");

    let rss_before = desk.rss_bytes()?;
    let opening = Instant::now();
    for n in AGENTS..sessions {
        let token = session(&client, &desk, &format!("a{n}")).await?;
        streams.push(connect(desk.port, &token, None).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = desk.rss_bytes()?;
    let added = sessions.saturating_sub(AGENTS);
    println!(
        "{added} more sessions opened in {:.1} s; desk RSS {:.1} MiB → {:.1} MiB: {:.1} KiB per connection",
        opening.elapsed().as_secs_f64(),
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        (rss_after.saturating_sub(rss_before)) as f64 / added.max(1) as f64 / 1024.0
    );
    load(&client, &ingress, &auth, "many-", rate, seconds, &clocks).await?;
    let (many_p99, many_seen) =
        report(&format!("{sessions} sessions connected, {rate}/s"), &clocks.lock().expect("lock"), "many-");
    println!(
        "pops delivered: {:.1}% and {:.1}%; p99 {:.1} ms and {:.1} ms",
        few_seen * 100.0,
        many_seen * 100.0,
        few_p99,
        many_p99
    );
    for stream in streams {
        stream.abort();
    }
    Ok(())
}
