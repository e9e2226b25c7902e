//! Router benchmark: IVR lookup latency at a fixed rate, and lookup throughput against a bare
//! hyper handler driven by the same load generator in the same run.
//!
//! Starts the real router (release binary, own process) on its own database filled with
//! 10,000 contacts and 200 agents, and a bare hyper server (this program, re-run as a child with
//! `--bare PORT`, so both servers are separate processes on loopback). Then, from this process:
//!
//! 1. **open loop**: `RATE` lookups per second for `SECONDS`, each sent at its scheduled instant
//!    on one of 64 keep-alive connections; latency is measured from the scheduled instant, so a
//!    stalled server cannot hide its queueing (no coordinated omission);
//! 2. **closed loop**: as many lookups as 64 in-flight requests allow for `SECONDS`, against the
//!    bare handler and then the router: the throughput ratio.
//!
//! Callers cycle through every contact's number in national format (so each lookup parses and
//! normalises a number), a tenth of them unknown (the fallback path).
//!
//! Usage: `bench-router [RATE] [SECONDS]` (defaults 5000 and 10). Build with
//! `cargo build --release -p switchboard -p switchboard-tests`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchboard_tests::*;

const CONTACTS: usize = 10_000;
const AGENTS: usize = 200;
const CONNECTIONS: usize = 64;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `n`-th caller: contact numbers in national format, every tenth one nobody's.
fn caller(n: usize) -> String {
    let contact = n % CONTACTS;
    if n % 10 == 9 {
        format!("8495{:07}", 9_000_000 + contact)
    } else {
        format!("8495{:07}", 1_000_000 + contact)
    }
}

/// `n`-th caller written in one of five other ways, so that none was seen before: every lookup
/// parses its number (the router's caller cache is cold).
fn fresh_caller(n: usize) -> String {
    let local = 1_000_000 + n % CONTACTS;
    let (a, b, c) = (local / 10_000, local / 100 % 100, local % 100);
    let text = match (n / CONTACTS) % 5 {
        0 => format!("+7 495 {local}"),
        1 => format!("7 (495) {a}-{b:02}-{c:02}"),
        2 => format!("8-495-{a}-{b:02}-{c:02}"),
        3 => format!("+7(495){local}"),
        _ => format!("8 495 {a} {b:02} {c:02}"),
    };
    text.replace(' ', "%20").replace('+', "%2B").replace('(', "%28").replace(')', "%29")
}

async fn bare_server(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    br#"{"destination":"101","agent_id":"agent-1","fallback":false,"reason":"agent"}"#,
                ))))
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// What an open-loop run measured: latency from sending each request to its answer (sorted,
/// ms), how many answers were fallbacks, and how many requests the generator itself started
/// more than a millisecond after their scheduled instant (tokio's timer has 1 ms ticks, so
/// the schedule is kept to within that; a late start would hide server queueing).
struct OpenLoop {
    latencies: Vec<f64>,
    fallbacks: usize,
    late_starts: usize,
}

/// `rate`/s for `seconds`, callers from `callers`.
async fn open_loop(
    client: &HttpClient,
    base: &str,
    rate: usize,
    seconds: u64,
    callers: fn(usize) -> String,
) -> anyhow::Result<OpenLoop> {
    let total = rate * seconds as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, base, next) = (client.clone(), base.to_owned(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut run = OpenLoop { latencies: Vec::new(), fallbacks: 0, late_starts: 0 };
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(run);
                }
                let due = start + interval * n as u32;
                tokio::time::sleep_until(due.into()).await;
                let url = format!("{base}/v1/route?caller={}", callers(n));
                let sent = Instant::now();
                run.late_starts += usize::from(sent.duration_since(due) > Duration::from_millis(1));
                let response = get(&client, &url).await?;
                let latency = sent.elapsed().as_secs_f64() * 1e3;
                anyhow::ensure!(response.status == 200, "status {}", response.status);
                run.fallbacks += usize::from(response.json()["fallback"] == true);
                run.latencies.push(latency);
            }
        }));
    }
    let mut all = OpenLoop { latencies: Vec::with_capacity(total), fallbacks: 0, late_starts: 0 };
    for worker in workers {
        let run = worker.await??;
        all.latencies.extend(run.latencies);
        all.fallbacks += run.fallbacks;
        all.late_starts += run.late_starts;
    }
    all.latencies.sort_by(f64::total_cmp);
    Ok(all)
}

fn report(label: &str, run: &OpenLoop, seconds: u64) {
    let l = &run.latencies;
    println!(
        "  {label}: {} lookups ({:.0}/s), {} fallbacks, {} late starts; latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        l.len(),
        l.len() as f64 / seconds as f64,
        run.fallbacks,
        run.late_starts,
        percentile(l, 50.0),
        percentile(l, 99.0),
        percentile(l, 99.9),
        l.last().copied().unwrap_or(f64::NAN),
    );
}

/// Lookups per second with `CONNECTIONS` requests in flight for `seconds`.
async fn closed_loop(client: &HttpClient, base: &str, seconds: u64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, base, next) = (client.clone(), base.to_owned(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut done = 0usize;
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let response = get(&client, &format!("{base}/v1/route?caller={}", caller(n))).await?;
                let _ = response.body.len();
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn fill_directory(env: &TestEnv) -> anyhow::Result<()> {
    let db = env.db().await?;
    db.batch_execute(&format!(
        "INSERT INTO agents (id, name, extensions)
           SELECT 'agent-' || i, 'Agent ' || i, ARRAY[(100 + i)::text] FROM generate_series(1, {AGENTS}) i;
         INSERT INTO contacts (id, name, phone_numbers, responsible_agent_id)
           SELECT 'contact-' || i, 'Contact ' || i, ARRAY['+7495' || lpad((1000000 + i)::text, 7, '0')],
                  'agent-' || (1 + i % {AGENTS})
           FROM generate_series(0, {CONTACTS} - 1) i;"
    ))
    .await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--bare") {
        let port = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(18_090);
        return bare_server(port).await;
    }
    let rate: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);

    let mut env = TestEnv::new("bench-router");
    env.set("SWITCHBOARD_ROUTER__REGION", "RU");
    env.set("SWITCHBOARD_ROUTER__FALLBACK", "700");
    env.set("SWITCHBOARD_LOG__FILTER", "warn");
    env.set("RUST_LOG", "warn");
    env.init().await?;
    fill_directory(&env).await?;
    let router = env.start("router").await?;
    let bare_port = free_port();
    let mut bare_server_process = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--bare", &bare_port.to_string()])
        .kill_on_drop(true)
        .spawn()?;
    let bare_base = format!("http://127.0.0.1:{bare_port}");
    let client = http_client();
    wait_until(Duration::from_secs(10), async || Ok(get(&client, &format!("{bare_base}/x")).await.is_ok()))
        .await?;
    let router_base = router.url("");
    let router_base = router_base.trim_end_matches('/').to_owned();
    // The first snapshot must hold every contact before measuring.
    wait_until(Duration::from_secs(30), async || {
        Ok(get(&client, &format!("{router_base}/v1/route?caller={}", caller(CONTACTS - 2))).await?.json()["fallback"]
            == false)
    })
    .await?;

    println!("warm-up");
    let _ = closed_loop(&client, &router_base, 2).await?;
    let _ = closed_loop(&client, &bare_base, 2).await?;

    println!("open loop: {rate} lookups/s for {seconds} s");
    let warm = open_loop(&client, &router_base, rate, seconds, caller).await?;
    report("router, callers seen before", &warm, seconds);
    let cold = open_loop(&client, &router_base, rate, seconds, fresh_caller).await?;
    report("router, every caller new", &cold, seconds);
    let bare = open_loop(&client, &bare_base, rate, seconds, caller).await?;
    report("bare hyper handler", &bare, seconds);

    println!("closed loop: {CONNECTIONS} in flight for {seconds} s");
    let bare_rate = closed_loop(&client, &bare_base, seconds).await?;
    let router_rate = closed_loop(&client, &router_base, seconds).await?;
    println!(
        "  bare hyper {bare_rate:.0}/s, router {router_rate:.0}/s, ratio {:.2}",
        router_rate / bare_rate
    );
    let _ = bare_server_process.kill().await;
    drop(router);
    env.cleanup().await;
    Ok(())
}
