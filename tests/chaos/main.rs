//! The chaos run (#18): webhooks of a realistic mix of call shapes go through the whole pipeline
//! while services are killed with SIGKILL at random moments, the broker is restarted once and
//! PostgreSQL is restarted once (as a crash: no checkpoint, every connection cut). The sender
//! behaves as a PBX does: a webhook is sent again until it gets its 202.
//!
//! Then the same webhooks go through a second pipeline without any fault, and the two call logs
//! are compared call by call, leg by leg. The run passes when:
//! - every webhook is in the call log exactly once (as many events as distinct webhooks; the
//!   resent copies and the PBX's own duplicates are stored once);
//! - every call and every leg equals the fault-free run's (everything but the bookkeeping of
//!   when and how often it was written);
//! - nothing is stuck: the outbox is empty, every call is complete, and each stage's consumer
//!   group has consumed its topic to the end.
//!
//! It prints what it injected and what it saw, and exits non-zero on any difference. The "PBX"
//! offers 250 webhooks a second, so that 10,000 take about 40 s and the faults fall among them.
//!
//! ```sh
//! ./test                                              # runs it with 10,000 webhooks
//! SB_TEST_KAFKA=127.0.0.1:19092 SB_TEST_POSTGRES=postgres://…/postgres SB_KAFKA_HOME=… \
//!   target/debug/chaos 100000 [seed]                  # the long form (BENCHMARKS.md)
//! ```
//!
//! Call shapes, in equal parts: answered by one agent; a ring-all queue (three agents ring, one
//! answers); a transfer (the first agent hands over to a second); an IVR abandon (no answer).
//! One webhook in thirty is sent twice by the "PBX" (an identical copy, as PBXs retry); events
//! are shuffled within windows of 64, so a call's events often arrive out of order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::StreamExt;
use switchboard_tests::*;
use tokio::sync::Mutex;

const STAGES: [&str; 5] = ["ingress", "normalizer", "matcher", "recordings", "calllog"];
const SETTLE: Duration = Duration::from_secs(600);
/// Requests in flight from the "PBX".
const CONCURRENCY: usize = 16;
/// Webhooks a second the "PBX" offers: a steady flow, so that the faults fall while it runs
/// (the pipeline takes several times more).
const RATE: f64 = 250.0;

/// splitmix64: a small, seedable generator, so that a run can be repeated exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

/// The events of one call, as generic webhooks, in the PBX's order.
fn call(run: &str, n: usize, base: i64) -> Vec<String> {
    let id = format!("{run}-{n}");
    let from = format!("+4420794{:05}", n % 100_000);
    let event = |fields: &str, at: i64| format!(r#"{{"call_id":"{id}",{fields},"timestamp":{at}}}"#);
    let agent = |k: usize| format!(r#""agent":{{"number":"10{k}","email":"agent{k}@example.com"}}"#);
    let leg = |name: &str| format!("{id}-{name}");
    let ringing = event(
        &format!(r#""event":"ringing","direction":"inbound","from":"{from}","to":"+442071234567""#),
        base,
    );
    let end = |cause: &str, at: i64| event(&format!(r#""event":"hangup","hangup_cause":"{cause}""#), at);
    match n % 4 {
        // Answered by one agent, with a recording.
        0 => vec![
            ringing,
            event(&format!(r#""leg_id":"{}","event":"answered",{}"#, leg("a"), agent(n % 10)), base + 2),
            event(&format!(r#""leg_id":"{}","event":"hangup""#, leg("a")), base + 60),
            event(
                &format!(
                    r#""event":"hangup","hangup_cause":"normal_clearing","recording_url":"https://pbx.example.com/rec/{id}.mp3""#
                ),
                base + 61,
            ),
        ],
        // A ring-all queue: three agents ring, the second answers, the others stop ringing.
        1 => {
            let mut events = vec![ringing];
            for k in 0..3 {
                let ring = format!(
                    r#""leg_id":"{}","event":"ringing",{}"#,
                    leg(&k.to_string()),
                    agent((n + k) % 10)
                );
                events.push(event(&ring, base + 1));
            }
            events.push(event(&format!(r#""leg_id":"{}","event":"answered""#, leg("1")), base + 4));
            for k in [0, 2] {
                let stop = format!(
                    r#""leg_id":"{}","event":"hangup","hangup_cause":"no_answer""#,
                    leg(&k.to_string())
                );
                events.push(event(&stop, base + 4));
            }
            events.push(event(&format!(r#""leg_id":"{}","event":"hangup""#, leg("1")), base + 90));
            events.push(end("normal_clearing", base + 91));
            events
        }
        // A transfer: the first agent answers, a second one takes over.
        2 => vec![
            ringing,
            event(&format!(r#""leg_id":"{}","event":"answered",{}"#, leg("a"), agent(n % 10)), base + 3),
            event(
                &format!(r#""leg_id":"{}","event":"ringing",{}"#, leg("b"), agent((n + 5) % 10)),
                base + 30,
            ),
            event(&format!(r#""leg_id":"{}","event":"answered""#, leg("b")), base + 35),
            event(&format!(r#""leg_id":"{}","event":"hangup""#, leg("a")), base + 36),
            event(&format!(r#""leg_id":"{}","event":"hangup""#, leg("b")), base + 120),
            end("normal_clearing", base + 121),
        ],
        // An IVR abandon: the caller hangs up before anyone answers.
        _ => vec![ringing, end("caller_abandoned", base + 15)],
    }
}

/// At least `webhooks` webhooks (whole calls), with the PBX's duplicates, shuffled in windows.
fn workload(run: &str, webhooks: usize, rng: &mut Rng) -> (Vec<String>, usize) {
    let now = chrono::Utc::now().timestamp();
    let mut bodies = Vec::with_capacity(webhooks + webhooks / 20);
    let mut n = 0;
    while bodies.len() < webhooks {
        // Calls of the last day: adapters refuse times far from receipt.
        bodies.extend(call(run, n, now - 86_400 + (n % 8_000) as i64 * 10));
        n += 1;
    }
    let distinct = bodies.len();
    for i in 0..distinct {
        if rng.below(30) == 0 {
            let copy = bodies[i].clone();
            bodies.push(copy);
        }
    }
    for window in bodies.chunks_mut(64) {
        for i in (1..window.len()).rev() {
            window.swap(i, rng.below(i + 1));
        }
    }
    (bodies, distinct)
}

#[derive(Debug, Default)]
struct Seen {
    acked: AtomicUsize,
    unavailable: AtomicUsize,
    connection_errors: AtomicUsize,
}

/// Sends every body until it is acknowledged, as a PBX does: a 503 waits for its Retry-After, a
/// connection that fails (a killed ingress) is tried again. Anything else is an error.
async fn send_all(
    ingress: String,
    credentials: Credentials,
    bodies: Vec<String>,
    seen: Arc<Seen>,
) -> anyhow::Result<()> {
    let client = http_client();
    let begin = tokio::time::Instant::now();
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(bodies.into_iter().enumerate())
        .map(|(n, body)| {
            let (client, ingress, credentials, seen) =
                (client.clone(), ingress.clone(), credentials.clone(), seen.clone());
            async move {
                tokio::time::sleep_until(begin + Duration::from_secs_f64(n as f64 / RATE)).await;
                let started = Instant::now();
                loop {
                    match post_webhook(&client, &ingress, &credentials, &body).await {
                        Ok(response) if response.status == 202 => {
                            let _ = seen.acked.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        Ok(response) if response.status == 503 => {
                            ensure!(response.headers.contains_key("retry-after"), "503 without Retry-After");
                            let _ = seen.unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => bail!("{} for {body}: {:?}", response.status, response.body),
                        Err(_) => {
                            let _ = seen.connection_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ensure!(started.elapsed() < SETTLE, "a webhook was refused for {SETTLE:?}: {body}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Every fault injected, for the report.
#[derive(Debug, Default)]
struct Faults {
    killed: BTreeMap<&'static str, usize>,
    broker_restarts: usize,
    postgres_restarts: usize,
}

/// What the fault injector works on.
struct Target<'a> {
    env: &'a TestEnv,
    pipeline: &'a Mutex<Pipeline>,
    ingress_port: u16,
    broker: &'a mut PrivateBroker,
    postgres: &'a PrivatePostgres,
    seen: &'a Seen,
    total: usize,
}

/// Kills a random stage now and then until `done`; restarts the broker once a third of the way
/// and PostgreSQL once two thirds of the way.
async fn inject(target: Target<'_>, rng: &mut Rng, done: &tokio::sync::Notify) -> anyhow::Result<Faults> {
    let Target { env, pipeline, ingress_port, broker, postgres, seen, total } = target;
    let mut faults = Faults::default();
    let progress = || seen.acked.load(Ordering::Relaxed) * 3 / total.max(1);
    let mut next_kill = Instant::now() + Duration::from_secs(1);
    loop {
        // The restarts come before the check for the end: a kill that waited for its stage to be
        // ready again can outlast the sending, and the restarts must still happen (at the latest
        // as the sending ends, while the pipeline works through what it took).
        if faults.broker_restarts == 0 && progress() >= 1 {
            broker.stop().await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            broker.restart().await?;
            faults.broker_restarts += 1;
            continue;
        }
        if faults.postgres_restarts == 0 && progress() >= 2 {
            postgres.restart(Duration::from_secs(2)).await?;
            faults.postgres_restarts += 1;
            continue;
        }
        tokio::select! {
            _ = done.notified() => return Ok(faults),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if Instant::now() < next_kill {
            continue;
        }
        next_kill = Instant::now() + Duration::from_millis(1_000 + rng.below(3_000) as u64);
        let stage = STAGES[rng.below(STAGES.len())];
        let mut pipeline = pipeline.lock().await;
        pipeline.service(stage).kill_hard().await?;
        // Ingress comes back on its port: the PBX knows only that one.
        let listen = format!("127.0.0.1:{ingress_port}");
        let overrides: Vec<(&str, &str)> =
            if stage == "ingress" { vec![("SWITCHBOARD_HTTP__LISTEN", listen.as_str())] } else { Vec::new() };
        let mut back = env.spawn(stage, &overrides)?;
        back.port = if stage == "ingress" { ingress_port } else { back.port };
        back.wait_ready(Duration::from_secs(120)).await.with_context(|| format!("{stage} back"))?;
        *pipeline.service(stage) = back;
        *faults.killed.entry(stage).or_default() += 1;
    }
}

/// Waits until the call log holds `events` events in complete calls, the outbox is empty and
/// nothing changes any more.
async fn settled(db: &tokio_postgres::Client, events: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    let mut last = String::new();
    let mut quiet_since = Instant::now();
    loop {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM call_events),
                        (SELECT count(*) FROM call_outbox),
                        (SELECT count(*) FROM calls WHERE completion IS DISTINCT FROM 'end_marker'),
                        (SELECT count(*) FROM calls WHERE published_version < version)",
                &[],
            )
            .await?;
        let (stored, outbox, open, unpublished): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let now = format!(
            "events {stored}/{events}, outbox {outbox}, incomplete {open}, unpublished {unpublished}"
        );
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
        if stored == events
            && outbox == 0
            && open == 0
            && unpublished == 0
            && quiet_since.elapsed() > Duration::from_secs(3)
        {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "not settled after {SETTLE:?}: {last}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Each call and each leg without the bookkeeping of when and how often it was written, which
/// differs between any two runs; recording links without their token (its expiry counts from
/// when the event was received).
async fn call_log(db: &tokio_postgres::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let volatile = "ARRAY['first_received_at', 'updated_at', 'completed_at', 'last_event_at', 'version',
                          'published_version', 'content_hash', 'leg_hashes', 'revision', 'recording_id']";
    let shown = |row: &str| {
        format!(
            "(to_jsonb({row}) - {volatile}) || jsonb_build_object('recording_url', split_part(coalesce({row}.recording_url, ''), '?', 1))"
        )
    };
    let rows = db
        .query(
            &format!(
                "SELECT c.call_id, ({})::text,
                        coalesce((SELECT jsonb_agg({} ORDER BY l.leg_id)
                                  FROM call_legs l WHERE l.source_id = c.source_id AND l.call_id = c.call_id), '[]')::text
                 FROM calls c",
                shown("c"),
                shown("l")
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), format!("{} legs {}", r.get::<_, String>(1), r.get::<_, String>(2))))
        .collect())
}

/// Every stage's group has consumed its input to the end.
async fn no_lag(env: &TestEnv, pipeline: &Mutex<Pipeline>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut lag = 0.0;
        for stage in &STAGES[1..] {
            let text = pipeline.lock().await.service(stage).metrics().await?;
            lag += metric_value(&text, "switchboard_kafka_consumer_lag");
        }
        if lag == 0.0 {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "consumer lag {lag} after the run ({})", env.id);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The same bodies through a pipeline of the test broker and database, without any fault.
async fn fault_free(
    run: &str,
    bodies: &[String],
    distinct: usize,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = TestEnv::new(&format!("{run}-ref"));
    env.set("SWITCHBOARD_KAFKA__MONITOR_INTERVAL_MS", "500");
    env.init().await?;
    let credentials = env.add_source("pbx-chaos", "GB").await?;
    let pipeline = env.start_pipeline().await?;
    send_all(pipeline.ingress_url(""), credentials, bodies.to_vec(), Arc::new(Seen::default())).await?;
    let db = env.db().await?;
    settled(&db, distinct as i64).await?;
    let log = call_log(&db).await?;
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(log)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let webhooks: usize = args.first().map_or(Ok(10_000), |a| a.parse()).context("webhooks: a number")?;
    let seed: u64 = match args.get(1) {
        Some(seed) => seed.parse().context("seed: a number")?,
        None => u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1),
    };
    let started = Instant::now();
    let mut rng = Rng(seed);

    let mut env = TestEnv::new("chaos");
    let mut broker = PrivateBroker::start(&env).await?;
    let postgres = PrivatePostgres::start(&env).await?;
    env.set("SWITCHBOARD_KAFKA__BROKERS", broker.address());
    env.brokers = broker.address();
    env.set("SWITCHBOARD_POSTGRES__URL", postgres.url(&env.database));
    env.set("SWITCHBOARD_KAFKA__PRODUCE_TIMEOUT_MS", "2000");
    // Lag is read every half second, so that "consumed to the end" is seen soon after it is so.
    env.set("SWITCHBOARD_KAFKA__MONITOR_INTERVAL_MS", "500");
    let (bodies, distinct) = workload(&env.id, webhooks, &mut rng);
    println!(
        "chaos: {} webhooks ({distinct} distinct, {} sent twice by the PBX), seed {seed}",
        bodies.len(),
        bodies.len() - distinct
    );
    env.init().await?;
    let credentials = env.add_source("pbx-chaos", "GB").await?;
    let pipeline = env.start_pipeline().await?;
    let ingress_port = pipeline.services["ingress"].port;
    let pipeline = Mutex::new(pipeline);
    let seen = Arc::new(Seen::default());
    let sender = tokio::spawn(send_all(
        format!("http://127.0.0.1:{ingress_port}"),
        credentials,
        bodies.clone(),
        seen.clone(),
    ));
    let done = tokio::sync::Notify::new();
    let faults = {
        let target = Target {
            env: &env,
            pipeline: &pipeline,
            ingress_port,
            broker: &mut broker,
            postgres: &postgres,
            seen: &seen,
            total: bodies.len(),
        };
        let injecting = inject(target, &mut rng, &done);
        let sending = async {
            let sent = sender.await;
            done.notify_one();
            sent
        };
        let (faults, sent) = tokio::join!(injecting, sending);
        sent??;
        faults?
    };
    let db = connect(&postgres.url(&env.database)).await?;
    settled(&db, distinct as i64).await.context("the chaos run")?;
    no_lag(&env, &pipeline).await?;
    let chaotic = call_log(&db).await?;
    let sending = started.elapsed();
    println!(
        "chaos: faults: {} kills ({:?}), {} broker restart, {} PostgreSQL restart; the PBX met {} 503s and {} failed connections; settled in {:.0} s",
        faults.killed.values().sum::<usize>(),
        faults.killed,
        faults.broker_restarts,
        faults.postgres_restarts,
        seen.unavailable.load(Ordering::Relaxed),
        seen.connection_errors.load(Ordering::Relaxed),
        sending.as_secs_f64()
    );
    ensure!(
        faults.broker_restarts == 1 && faults.postgres_restarts == 1,
        "every fault was injected: {faults:?}"
    );
    pipeline.into_inner().shutdown().await?;

    let calm = Instant::now();
    let reference = fault_free(&env.id, &bodies, distinct).await?;
    let calm = calm.elapsed();
    let mut differences = 0;
    for (call, expected) in &reference {
        match chaotic.get(call) {
            Some(got) if got == expected => {}
            other => {
                differences += 1;
                if differences <= 5 {
                    println!(
                        "chaos: call {call} differs:\n  fault-free: {expected}\n  chaos:      {other:?}"
                    );
                }
            }
        }
    }
    let extra = chaotic.keys().filter(|call| !reference.contains_key(*call)).count();
    println!(
        "chaos: {} calls compared with the fault-free run: {differences} differ, {extra} only in the chaos run; \
         sent and settled in {:.0} s with faults, {:.0} s without ({:.2}x); {:.0} s in all",
        reference.len(),
        sending.as_secs_f64(),
        calm.as_secs_f64(),
        sending.as_secs_f64() / calm.as_secs_f64().max(0.001),
        started.elapsed().as_secs_f64()
    );
    ensure!(differences == 0 && extra == 0, "the chaos run's call log differs from the fault-free run's");
    broker.cleanup().await;
    postgres.stop().await;
    env.cleanup().await;
    println!("chaos: passed");
    Ok(())
}
