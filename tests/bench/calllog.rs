//! Call-log writer benchmark: events/s the writer folds into PostgreSQL (events, calls, legs and
//! the outbox of published records) against `psql \copy` of the same rows into the same empty,
//! indexed tables, measured in the same run on the same database server.
//!
//! Two baselines, both a single `psql` session:
//! - `\copy` of the event rows the writer receives (into `call_events`);
//! - `\copy` of every row the writer ends with (`call_events`, `calls`, `call_legs`,
//!   `call_outbox`), exported from a writer run: the same end state, bulk-loaded.
//!
//! The writer runs the way the service does, batch after batch (`calllog.batch_max` events), on:
//! - whole calls: each call's events in one batch (calls arriving one after another);
//! - a stream: calls start every 10 ms of simulated time and last one to five minutes, four events
//!   each (ringing, an agent answering, the agent hanging up, the call's end marker), sorted by
//!   time, so that nearly every call's events fall into three batches and each batch refolds calls
//!   from events committed before: the writer's worst case.
//!
//! Each runs with one replica, then two (the events split by call key, as Kafka partitions split
//! them between replicas), which is how the call log scales.
//!
//! Usage: `bench-calllog [CALLS] [BATCH] [RUNS] [ONLY]` (defaults 25000 calls = 100,000 events,
//! batches of 1000, best of 3 runs; `ONLY` runs just the writer cases whose name contains it, for
//! example `stream`). Needs `psql` on the PATH and the PostgreSQL of `SB_TEST_POSTGRES`.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use switchboard_calllog::CalllogSettings;
use switchboard_calllog::writer::{CallLog, StoredEvent};
use switchboard_core::model::*;
use switchboard_tests::{connect, postgres_admin_url};

fn at(millis: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 8, 0, 0).single().unwrap_or_default()
        + chrono::Duration::milliseconds(millis)
}

/// A small LCG: the same stream on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// The events of `calls` calls, call after call.
fn events(calls: usize) -> anyhow::Result<Vec<StoredEvent>> {
    let source = SourceId::parse("bench")?;
    let mut random = Lcg(7);
    let mut all = Vec::with_capacity(calls * 4);
    for n in 0..calls {
        let start = n as i64 * 10;
        let answer = start + 2_000 + random.next(8_000) as i64;
        let end = answer + 60_000 + random.next(240_000) as i64;
        let call = CallId::parse(format!("bench-{n}"))?;
        let leg = LegId::parse(format!("bench-{n}-agent"))?;
        let agent = format!("{}", 100 + n % 50);
        let steps = [
            (None, EventKind::Ringing, start),
            (Some(leg.clone()), EventKind::Answered, answer),
            (Some(leg), EventKind::Hangup, end),
            (None, EventKind::Hangup, end + 1_000),
        ];
        for (i, (leg_id, kind, time)) in steps.into_iter().enumerate() {
            let ringing = kind == EventKind::Ringing;
            let on_leg = leg_id.is_some();
            let mut event = CallEvent::empty(
                source.clone(),
                Vendor::Generic,
                call.clone(),
                EventId::parse(format!("bench-{n}-{i}"))?,
                kind,
                at(time),
            );
            event.raw_id = format!("raw-{n}-{i}");
            event.leg_id = leg_id;
            event.direction = if ringing { Direction::Inbound } else { Direction::Unknown };
            event.from_raw = ringing.then(|| format!("020 7946 {:04}", n % 10_000));
            event.from_e164 =
                ringing.then(|| PhoneNumber::from_e164(format!("+44207946{:04}", n % 10_000))).transpose()?;
            event.to_raw = ringing.then(|| "020 7123 4567".to_owned());
            event.to_e164 = ringing.then(|| PhoneNumber::from_e164("+442071234567")).transpose()?;
            event.agent_number = on_leg.then(|| agent.clone());
            event.agent_email = on_leg.then(|| format!("agent{}@example.com", n % 50));
            event.agent_extension = on_leg.then(|| agent.clone());
            event.received_at = at(time + 50);
            event.sequence = Some(i as i64);
            event.hangup_cause = (kind == EventKind::Hangup).then(|| "normal_clearing".to_owned());
            all.push(event);
        }
    }
    Ok(all
        .into_iter()
        .enumerate()
        .map(|(i, event)| StoredEvent { event, partition: 0, offset: i as i64 })
        .collect())
}

/// A fresh, migrated database: its pool, URL and name.
async fn fresh(name: &str) -> anyhow::Result<(deadpool_postgres::Pool, String, String)> {
    let (pool, database) = switchboard_schema::scratch::database(&format!("sb_bench_{name}"), 4).await?;
    Ok((pool, switchboard_schema::scratch::url_of(&database), database))
}

async fn drop_database(database: &str) -> anyhow::Result<()> {
    Ok(switchboard_schema::scratch::drop(database).await?)
}

async fn psql(url: &str, command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", command])
        .status()
        .await
        .context("psql (postgresql-client) on the PATH")?;
    anyhow::ensure!(status.success(), "psql {command:?} failed");
    Ok(())
}

const EVENT_COLUMNS: &str = "source_id, event_id, call_id, leg_id, kind, occurred_at, received_at, raw_id, sequence, \
    kafka_partition, kafka_offset, vendor, direction, from_raw, from_e164, to_raw, to_e164, agent_extension, \
    agent_number, agent_email, agent_id, agent_match, contact_ids, contact_match, responsible_agent_id, \
    disposition, hangup_cause, recording_url, recording_id";

/// One CSV field: NULL is an empty unquoted field, text is quoted.
fn field(out: &mut String, value: Option<&str>) {
    if let Some(text) = value {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    }
    out.push(',');
}

/// The rows the writer inserts into `call_events`, as CSV for `\copy`.
fn csv(events: &[StoredEvent]) -> String {
    let mut out = String::with_capacity(events.len() * 400);
    for StoredEvent { event: e, partition, offset } in events {
        let time = |t: DateTime<Utc>| t.to_rfc3339();
        let fields: [Option<String>; 29] = [
            Some(e.source_id.to_string()),
            Some(e.event_id.to_string()),
            Some(e.call_id.to_string()),
            e.leg_id.as_ref().map(ToString::to_string),
            Some(e.kind.as_str().into()),
            Some(time(e.occurred_at)),
            Some(time(e.received_at)),
            Some(e.raw_id.clone()),
            e.sequence.map(|s| s.to_string()),
            Some(partition.to_string()),
            Some(offset.to_string()),
            Some(e.vendor.as_str().into()),
            Some(e.direction.as_str().into()),
            e.from_raw.clone(),
            e.from_e164.as_ref().map(ToString::to_string),
            e.to_raw.clone(),
            e.to_e164.as_ref().map(ToString::to_string),
            e.agent_extension.clone(),
            e.agent_number.clone(),
            e.agent_email.clone(),
            e.agent_id.clone(),
            None,
            Some("{}".into()),
            None,
            e.responsible_agent_id.clone(),
            e.disposition.map(|d| d.as_str().into()),
            e.hangup_cause.clone(),
            e.recording_url.clone(),
            e.recording_id.clone(),
        ];
        for value in &fields {
            field(&mut out, value.as_deref());
        }
        out.pop();
        out.push('\n');
    }
    out
}

/// `\copy` of each `(table, file)` into a fresh database, in order, in one `psql` session; returns
/// the time and the rows copied.
async fn copy_run(files: &[(&str, &std::path::Path)]) -> anyhow::Result<(Duration, i64)> {
    let (pool, url, database) = fresh("copy").await?;
    drop(pool);
    let commands: Vec<String> = files
        .iter()
        .map(|(table, path)| format!("\\copy {table} FROM '{}' WITH (FORMAT csv)", path.display()))
        .collect();
    let started = Instant::now();
    let status = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url])
        .args(commands.iter().flat_map(|c| ["-c", c.as_str()]))
        .status()
        .await
        .context("psql (postgresql-client) on the PATH")?;
    let elapsed = started.elapsed();
    anyhow::ensure!(status.success(), "psql \\copy failed");
    let db = connect(&url).await?;
    let mut rows = 0;
    for (table, _) in files {
        let name = table.split_whitespace().next().unwrap_or(table);
        rows += db.query_one(&format!("SELECT count(*) FROM {name}"), &[]).await?.get::<_, i64>(0);
    }
    drop_database(&database).await?;
    Ok((elapsed, rows))
}

/// The writer on `streams` (one per replica, the replicas at once), each replica with up to
/// `in_flight` batches in the database at once, as `calllog.batches_in_flight` does.
/// Returns the time, and the database's URL and name, kept for export when `keep`.
async fn writer_run(
    streams: &[Vec<StoredEvent>],
    batch: usize,
    in_flight: usize,
    keep: bool,
) -> anyhow::Result<WriterRun> {
    let (pool, url, database) = fresh("writer").await?;
    let total: usize = streams.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut replicas = Vec::new();
    for stream in streams {
        let (log, stream) =
            (std::sync::Arc::new(CallLog::new(pool.clone(), &CalllogSettings::default())?), stream.clone());
        replicas.push(tokio::spawn(async move {
            use futures_util::{StreamExt, TryStreamExt};
            futures_util::stream::iter(stream.chunks(batch).map(<[StoredEvent]>::to_vec))
                .map(|chunk| {
                    let log = log.clone();
                    async move { log.write_batch(&chunk).await }
                })
                .buffered(in_flight)
                .try_collect::<Vec<_>>()
                .await
        }));
    }
    let (mut from_cache, mut stale) = (0, 0);
    for replica in replicas {
        for outcome in replica.await?? {
            from_cache += outcome.from_cache;
            stale += outcome.stale;
        }
    }
    let elapsed = started.elapsed();
    let db = connect(&url).await?;
    let stored: i64 = db.query_one("SELECT count(*) FROM call_events", &[]).await?.get(0);
    anyhow::ensure!(stored == total as i64, "stored {stored} of {total}");
    let complete: i64 =
        db.query_one("SELECT count(*) FROM calls WHERE completion = 'end_marker'", &[]).await?.get(0);
    let calls: i64 = db.query_one("SELECT count(*) FROM calls", &[]).await?.get(0);
    anyhow::ensure!(complete == calls, "{complete} of {calls} calls complete");
    drop(pool);
    if !keep {
        drop_database(&database).await?;
    }
    Ok(WriterRun { elapsed, url, database, from_cache, stale })
}

struct WriterRun {
    elapsed: Duration,
    url: String,
    database: String,
    /// Calls folded from the writer's fold cache, and calls rolled back and read again because
    /// another batch had changed them.
    from_cache: i64,
    stale: i64,
}

/// Splits events between `replicas` by call key, keeping each replica's order.
fn split(events: &[StoredEvent], replicas: usize) -> Vec<Vec<StoredEvent>> {
    let mut streams = vec![Vec::new(); replicas];
    for event in events {
        let key = event
            .event
            .call_id
            .as_str()
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        streams[key % replicas].push(event.clone());
    }
    streams
}

fn best(runs: &[Duration]) -> Duration {
    runs.iter().copied().min().unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(25_000);
    let batch: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let only = args.next().unwrap_or_default();

    let whole = events(calls)?;
    let mut streamed = whole.clone();
    streamed.sort_by_key(|e| (e.event.occurred_at, e.offset));
    let n = whole.len();
    let dir = std::env::temp_dir().join(format!("sb-bench-calllog-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let events_csv = dir.join("call_events.csv");
    std::fs::File::create(&events_csv)?.write_all(csv(&whole).as_bytes())?;

    // The writer's end state, exported for the second baseline (and a warm-up of everything).
    let WriterRun { url, database, .. } = writer_run(std::slice::from_ref(&whole), batch, 1, true).await?;
    let mut end_state = vec![(format!("call_events ({EVENT_COLUMNS})"), events_csv.clone())];
    for table in ["calls", "call_legs", "call_outbox"] {
        let path = dir.join(format!("{table}.csv"));
        psql(&url, &format!("\\copy {table} TO '{}' WITH (FORMAT csv)", path.display())).await?;
        end_state.push((table.to_owned(), path));
    }
    drop_database(&database).await?;
    let event_files = [(format!("call_events ({EVENT_COLUMNS})"), events_csv.clone())];
    let end_files = end_state;

    // Per case: its times, and its fold-cache use (calls from the cache, stale) in the last run.
    let mut measured: Vec<(String, Vec<Duration>, (i64, i64))> = Vec::new();
    let mut copy_events = Vec::new();
    let mut copy_all = Vec::new();
    let mut all_rows = 0;
    let mut cases = vec![
        ("writer, 1 replica, 1 batch at a time, whole calls", vec![whole.clone()], 1),
        ("writer, 1 replica, 1 batch at a time, stream (calls span batches)", vec![streamed.clone()], 1),
        ("writer, 1 replica, 2 batches in flight (default), whole calls", vec![whole.clone()], 2),
        ("writer, 1 replica, 2 batches in flight (default), stream", vec![streamed.clone()], 2),
        ("writer, 1 replica, 3 batches in flight, stream", vec![streamed.clone()], 3),
        ("writer, 2 replicas, 2 batches in flight, whole calls", split(&whole, 2), 2),
        ("writer, 2 replicas, 2 batches in flight, stream", split(&streamed, 2), 2),
    ];
    cases.retain(|(name, _, _)| name.contains(only.as_str()));
    for _ in 0..runs {
        let files: Vec<(&str, &std::path::Path)> =
            event_files.iter().map(|(t, p)| (t.as_str(), p.as_path())).collect();
        let (elapsed, rows) = copy_run(&files).await?;
        anyhow::ensure!(rows == n as i64, "copied {rows} of {n} events");
        copy_events.push(elapsed);
        let files: Vec<(&str, &std::path::Path)> =
            end_files.iter().map(|(t, p)| (t.as_str(), p.as_path())).collect();
        let (elapsed, rows) = copy_run(&files).await?;
        copy_all.push(elapsed);
        all_rows = rows;
        for (i, (name, streams, in_flight)) in cases.iter().enumerate() {
            let run = writer_run(streams, batch, *in_flight, false).await?;
            let cache_use = (run.from_cache, run.stale);
            match measured.get_mut(i) {
                Some((_, times, last)) => {
                    times.push(run.elapsed);
                    *last = cache_use;
                }
                None => measured.push(((*name).to_owned(), vec![run.elapsed], cache_use)),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let version: String =
        connect(&postgres_admin_url()).await?.query_one("SHOW server_version", &[]).await?.get(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("{} UTC, {cores} CPU {cpu}, PostgreSQL {version}", Utc::now().format("%Y-%m-%d %H:%M"));
    println!("events={n} calls={calls} batch={batch} best of {runs}; end state {all_rows} rows in 4 tables");
    println!(
        "| measurement | seconds | events/s | ratio to \\copy of the events | ratio to \\copy of the end state |"
    );
    println!("|---|---|---|---|---|");
    let (events_copy, all_copy) = (best(&copy_events).as_secs_f64(), best(&copy_all).as_secs_f64());
    let row = |name: &str, seconds: f64| {
        println!(
            "| {name} | {seconds:.2} | {:.0} | {:.2} | {:.2} |",
            n as f64 / seconds,
            events_copy / seconds,
            all_copy / seconds
        );
    };
    row("baseline: psql \\copy of the event rows", events_copy);
    row("baseline: psql \\copy of the end state (events, calls, legs, outbox)", all_copy);
    for (name, times, _) in &measured {
        row(name, best(times).as_secs_f64());
    }
    println!();
    println!(
        "| writer case (last run) | calls folded from the fold cache | calls rolled back and read again |"
    );
    println!("|---|---|---|");
    for (name, _, (from_cache, stale)) in &measured {
        println!("| {name} | {from_cache} | {stale} |");
    }
    Ok(())
}
