//! The call-log writer against a real PostgreSQL, with every vendor fixture's events: the same
//! events in any order, duplicated, in any batch split, written by one writer or two at once, give
//! the same rows; replaying them changes nothing; calls without an end marker complete when the
//! settle sweep finds them due; a late event updates a complete call and makes a new version to
//! publish; concurrent sweeps and publishers share the work without doing any of it twice.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use deadpool_postgres::Pool;
use switchboard_calllog::CalllogSettings;
use switchboard_calllog::outbox;
use switchboard_calllog::writer::{CallLog, StoredEvent};
use switchboard_core::avro::Codecs;
use switchboard_core::model::*;

/// A fresh, migrated database of its own.
async fn fresh_pool(name: &str) -> (Pool, String) {
    switchboard_schema::scratch::database(&format!("sb_test_fold_{name}"), 4).await.expect("database")
}

/// A writer as the service makes it, with the default fold cache.
fn call_log(pool: &Pool) -> CallLog {
    CallLog::new(pool.clone(), &CalllogSettings::default()).expect("log")
}

async fn drop_database(database: &str) {
    let _ = switchboard_schema::scratch::drop(database).await;
}

/// Every fixture call's events, under source `source`, numbered as if read from one partition.
fn fixture_events(source: &str) -> Vec<StoredEvent> {
    let source_id = SourceId::parse(source).expect("source");
    common::fixture_calls("pbx")
        .into_iter()
        .flat_map(|call| call.events)
        .enumerate()
        .map(|(offset, mut event)| {
            event.source_id = source_id.clone();
            StoredEvent { event, partition: 0, offset: offset as i64 }
        })
        .collect()
}

/// A reproducible shuffle (a small LCG), so a failure can be replayed.
fn shuffled(mut items: Vec<StoredEvent>, seed: u64) -> Vec<StoredEvent> {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        items.swap(i, (state >> 33) as usize % (i + 1));
    }
    items
}

/// Everything the call log holds for one source, except what records when rather than what: write
/// times, the settle clock, versions (which count how many states the call went through, and so
/// depend on batching) and the completion time inside the Avro record, which waits in the outbox.
async fn snapshot(pool: &Pool, source: &str) -> Vec<String> {
    let client = pool.get().await.expect("client");
    client.batch_execute("SET TIME ZONE 'UTC'").await.expect("time zone");
    let mut rows = Vec::new();
    for query in [
        "SELECT concat_ws('|', call_id, vendor, direction, status, outcome, from_number, to_number,
                started_at, answered_at, ended_at, disposition, hangup_cause, agent_id, agent_match,
                agent_extension, agent_number, agent_email, array_to_string(contact_ids, ','), contact_match, responsible_agent_id, recording_url,
                recording_id, event_count, leg_count, first_received_at, settled, completion,
                completed_at IS NOT NULL)
         FROM calls WHERE source_id = $1 ORDER BY call_id",
        "SELECT concat_ws('|', call_id, leg_id, status, answered, agent_id, agent_extension,
                agent_number, agent_email, started_at, rang_at, answered_at, ended_at, disposition,
                hangup_cause, recording_url, recording_id, event_count, array_to_string(agents, ','))
         FROM call_legs WHERE source_id = $1 ORDER BY call_id, leg_id",
        "SELECT 'open|' || call_id FROM open_calls WHERE source_id = $1 ORDER BY call_id",
        "SELECT concat_ws('|', event_id, call_id, leg_id, kind, occurred_at, direction, from_e164,
                to_e164, agent_extension, disposition, recording_id)
         FROM call_events WHERE source_id = $1 ORDER BY event_id",
    ] {
        for row in client.query(query, &[&source]).await.expect("query") {
            rows.push(row.get::<_, String>(0));
        }
    }
    let codecs = Codecs::new().expect("codecs");
    for row in client
        .query("SELECT record FROM call_outbox WHERE source_id = $1 ORDER BY call_id", &[&source])
        .await
        .expect("records")
    {
        let mut record = codecs.call_record.decode(row.get::<_, &[u8]>(0)).expect("record decodes");
        (record.version, record.completed_at) = (0, None);
        record.source_id = SourceId::parse("any").expect("id");
        rows.push(format!("{record:?}"));
    }
    rows
}

async fn write_all(log: &CallLog, events: &[StoredEvent], batch: usize) {
    for chunk in events.chunks(batch) {
        let _ = log.write_batch(chunk).await.expect("write");
    }
}

#[tokio::test]
async fn any_order_duplication_or_batching_gives_the_same_call_log() {
    let (pool, database) = fresh_pool("order").await;
    let log = call_log(&pool);
    write_all(&log, &fixture_events("ref"), 1000).await;
    let reference = snapshot(&pool, "ref").await;
    let client = pool.get().await.expect("client");
    let calls: i64 = client.query_one("SELECT count(*) FROM calls", &[]).await.expect("count").get(0);
    let fixture_calls = common::fixture_calls("pbx")
        .iter()
        .map(|c| c.events[0].call_id.clone())
        .collect::<BTreeSet<_>>()
        .len() as i64;
    assert_eq!(calls, fixture_calls, "every fixture call is one row");
    assert!(reference.iter().any(|row| row.contains("|abandoned_in_ivr|")));
    assert!(reference.iter().any(|row| row.contains("|missed|")));

    let cases: Vec<(&str, Vec<StoredEvent>, usize)> = vec![
        ("reversed", fixture_events("reversed").into_iter().rev().collect(), 1000),
        ("one", shuffled(fixture_events("one"), 1), 1),
        ("seven", shuffled(fixture_events("seven"), 2), 7),
        (
            "doubled",
            {
                let mut doubled = fixture_events("doubled");
                doubled.extend(shuffled(fixture_events("doubled"), 3));
                shuffled(doubled, 4)
            },
            13,
        ),
    ];
    for (name, events, batch) in cases {
        write_all(&log, &events, batch).await;
        assert_eq!(snapshot(&pool, name).await, reference, "case {name}");
    }
    drop_database(&database).await;
}

#[tokio::test]
async fn two_writers_at_once_give_what_one_gives() {
    let (pool, database) = fresh_pool("race").await;
    let log = std::sync::Arc::new(call_log(&pool));
    write_all(&log, &fixture_events("ref"), 1000).await;
    let reference = snapshot(&pool, "ref").await;
    for round in 0..3u64 {
        let source = format!("race{round}");
        let events = shuffled(fixture_events(&source), 10 + round);
        // Two writers take alternate events, so that nearly every call is written by both, in
        // small overlapping transactions: the row locks must serialise their folds.
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for (i, event) in events.into_iter().enumerate() {
            if i % 2 == 0 { left.push(event) } else { right.push(event) }
        }
        let (a, b) = (log.clone(), log.clone());
        let first = tokio::spawn(async move { write_all(&a, &left, 3).await });
        let second = tokio::spawn(async move { write_all(&b, &right, 5).await });
        first.await.expect("writer");
        second.await.expect("writer");
        let got = snapshot(&pool, &source).await;
        let differs: Vec<(&String, &String)> = got.iter().zip(&reference).filter(|(a, b)| a != b).collect();
        assert!(differs.is_empty() && got.len() == reference.len(), "round {round}: {differs:#?}");
    }
    drop_database(&database).await;
}

/// Batch after batch, adding up what the writer reports.
async fn write_counting(log: &CallLog, events: &[StoredEvent], batch: usize) -> (i64, i64) {
    let (mut from_cache, mut stale) = (0, 0);
    for chunk in events.chunks(batch) {
        let outcome = log.write_batch(chunk).await.expect("write");
        from_cache += outcome.from_cache;
        stale += outcome.stale;
    }
    (from_cache, stale)
}

#[tokio::test]
async fn calls_in_progress_fold_from_memory_and_another_replicas_writes_are_read_back() {
    let (pool, database) = fresh_pool("cache").await;
    let reference_log = call_log(&pool);
    write_all(&reference_log, &fixture_events("ref"), 1000).await;
    let reference = snapshot(&pool, "ref").await;

    // One replica, one event per batch: every call's next event finds the call in its cache.
    let log = call_log(&pool);
    let (from_cache, stale) = write_counting(&log, &fixture_events("one"), 1).await;
    assert!(from_cache > 100, "calls folded from memory: {from_cache}");
    assert_eq!(stale, 0);
    assert_eq!(snapshot(&pool, "one").await, reference);

    // Without a cache every call is read back, to the same rows.
    let uncached =
        CallLog::new(pool.clone(), &CalllogSettings { fold_cache_calls: 0, ..CalllogSettings::default() })
            .expect("log");
    let (from_cache, _) = write_counting(&uncached, &fixture_events("none"), 1).await;
    assert_eq!(from_cache, 0);
    assert_eq!(snapshot(&pool, "none").await, reference);

    // Two replicas taking turns on the same calls (as after a rebalance): each finds the calls
    // it cached changed by the other, and must fold them from the database, not from memory.
    let (a, b) = (call_log(&pool), call_log(&pool));
    let mut stale = 0;
    for (i, chunk) in fixture_events("turns").chunks(2).enumerate() {
        stale += if i % 2 == 0 { &a } else { &b }.write_batch(chunk).await.expect("write").stale;
    }
    assert!(stale > 20, "stale cache entries detected: {stale}");
    let got = snapshot(&pool, "turns").await;
    let differs: Vec<(&String, &String)> = got.iter().zip(&reference).filter(|(x, y)| x != y).collect();
    assert!(differs.is_empty() && got.len() == reference.len(), "{differs:#?}");
    drop_database(&database).await;
}

/// Full rows, write times and versions included: proof that nothing was written.
async fn digest(pool: &Pool) -> String {
    let client = pool.get().await.expect("client");
    let row = client
        .query_one(
            "SELECT (SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY source_id, call_id), '')) FROM calls c),
                    (SELECT md5(coalesce(string_agg(l::text, '|' ORDER BY source_id, call_id, leg_id), '')) FROM call_legs l),
                    (SELECT count(*) FROM call_events)",
            &[],
        )
        .await
        .expect("digest");
    format!("{}/{}/{}", row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, i64>(2))
}

#[tokio::test]
async fn writing_the_same_batch_again_changes_nothing() {
    let (pool, database) = fresh_pool("again").await;
    let log = call_log(&pool);
    let events = fixture_events("pbx");
    let first = log.write_batch(&events).await.expect("write");
    assert_eq!(first.new_events as usize, events.len());
    assert!(first.calls >= 40 && first.legs > first.calls);
    let before = digest(&pool).await;
    let again = log.write_batch(&events).await.expect("write");
    assert_eq!((again.new_events, again.calls, again.legs), (0, 0, 0), "nothing new, nothing touched");
    assert_eq!(digest(&pool).await, before);
    drop_database(&database).await;
}

/// The events of one fixture call, under source `pbx`.
fn call_events(name: &str) -> Vec<StoredEvent> {
    let call = common::fixture_calls("pbx").into_iter().find(|c| c.name.starts_with(name)).expect("fixture");
    call.events
        .into_iter()
        .enumerate()
        .map(|(i, event)| StoredEvent { event, partition: 0, offset: i as i64 })
        .collect()
}

async fn call_row(pool: &Pool, call_id: &str) -> (i64, i64, Option<String>, bool, String) {
    let client = pool.get().await.expect("client");
    let row = client
        .query_one(
            "SELECT version, published_version, completion,
                    EXISTS (SELECT 1 FROM call_outbox o WHERE o.call_id = c.call_id), status
             FROM calls c WHERE call_id = $1",
            &[&call_id],
        )
        .await
        .expect("call");
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

#[tokio::test]
async fn a_call_without_end_marker_settles_and_a_late_event_makes_a_new_version() {
    let (pool, database) = fresh_pool("settle").await;
    let log = call_log(&pool);
    let codecs = Codecs::new().expect("codecs");
    // Telphin sends no call-level hangup: the legs end, the call waits for the settle time.
    let events = call_events("telphin/transfer-between-agents.json");
    let call_id = events[0].event.call_id.to_string();
    let written = log.write_batch(&events).await.expect("write");
    assert!(!written.publishable && written.completed.is_empty());
    let (version, _, completion, record, status) = call_row(&pool, &call_id).await;
    assert_eq!((completion, record, status.as_str()), (None, false, "ended"), "ended, not yet complete");
    assert!(outbox::claim(&pool, 10, Duration::from_secs(30)).await.expect("claim").is_empty());
    let open_calls = || async {
        let client = pool.get().await.expect("client");
        client.query_one("SELECT count(*) FROM open_calls", &[]).await.expect("count").get::<_, i64>(0)
    };
    assert_eq!(open_calls().await, 1, "the sweep's list of open calls has it");

    // Not due while the settle time has not passed.
    let (found, _) =
        log.settle_due(Duration::from_secs(3600), Duration::from_secs(3600), 10).await.expect("sweep");
    assert_eq!(found, 0);
    let (found, settled) = log.settle_due(Duration::ZERO, Duration::ZERO, 10).await.expect("sweep");
    assert_eq!((found, settled.calls), (1, 1));
    assert_eq!(settled.completed, [(Direction::Inbound, Outcome::Answered)]);
    let (settled_version, published, completion, record, _) = call_row(&pool, &call_id).await;
    assert_eq!(
        (settled_version, published, completion.as_deref(), record),
        (version + 1, 0, Some("settled"), true)
    );
    let (found, _) = log.settle_due(Duration::ZERO, Duration::ZERO, 10).await.expect("sweep");
    assert_eq!(found, 0, "a complete call is never settled again");
    assert_eq!(open_calls().await, 0, "and has left the list of open calls");

    let claimed = outbox::claim(&pool, 10, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let first = codecs.call_record.decode(&claimed[0].record).expect("record");
    assert_eq!(
        (first.version, first.completion, first.recording_url.as_deref()),
        (settled_version, Some(Completion::Settled), None)
    );
    assert!(outbox::claim(&pool, 10, Duration::from_secs(30)).await.expect("claim").is_empty(), "leased");
    outbox::mark_published(&pool, &claimed).await.expect("mark");
    assert_eq!(call_row(&pool, &call_id).await.1, settled_version);

    // The recording's link arrives after the call was published.
    let mut late = events.last().expect("events").clone();
    late.event.event_id = EventId::parse("late-recording").expect("id");
    late.event.kind = EventKind::Recording;
    late.event.recording_url = Some("https://recordings.example/late.mp3".into());
    late.event.occurred_at += chrono::Duration::seconds(40);
    let updated = log.write_batch(&[late]).await.expect("write");
    assert_eq!((updated.new_events, updated.late_updates, updated.publishable), (1, 1, true));
    let claimed = outbox::claim(&pool, 10, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(claimed.len(), 1, "the new version waits for the calls topic");
    let second = codecs.call_record.decode(&claimed[0].record).expect("record");
    assert_eq!(second.version, settled_version + 1);
    assert_eq!(second.recording_url.as_deref(), Some("https://recordings.example/late.mp3"));
    assert_eq!((second.completion, second.completed_at), (Some(Completion::Settled), first.completed_at));
    drop_database(&database).await;
}

#[tokio::test]
async fn a_call_telphin_reports_only_by_its_ivr_hangup_lasts_the_vendors_duration() {
    let (pool, database) = fresh_pool("ivr").await;
    let log = call_log(&pool);
    let codecs = Codecs::new().expect("codecs");
    // The caller hung up in the voice menu: one hangup of the IVR extension, `Duration=25`.
    let abandoned = call_events("telphin/inbound-abandoned-in-ivr.json");
    // In a queue after the IVR: the IVR had the call for 40 s, the agent's leg rang from 15 s.
    let missed = call_events("telphin/inbound-missed-in-queue.json");
    let _ = log.write_batch(&[abandoned.clone(), missed.clone()].concat()).await.expect("write");
    let (found, settled) = log.settle_due(Duration::ZERO, Duration::ZERO, 10).await.expect("sweep");
    assert_eq!((found, settled.calls), (2, 2));

    let claimed = outbox::claim(&pool, 10, Duration::from_secs(30)).await.expect("claim");
    let record = |call: &StoredEvent| {
        let found = claimed.iter().find(|c| c.call_id == call.event.call_id.as_str()).expect("published");
        codecs.call_record.decode(&found.record).expect("record")
    };
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).expect("time").to_utc();
    let ivr = record(&abandoned[0]);
    assert_eq!(ivr.outcome, Some(Outcome::AbandonedInIvr));
    assert_eq!(
        (ivr.started_at, ivr.ended_at),
        (at("2026-11-01T10:00:00Z"), Some(at("2026-11-01T10:00:25Z")))
    );
    assert_eq!((ivr.duration_seconds, ivr.talk_seconds), (Some(25), None));
    let queue = record(&missed[0]);
    assert_eq!(queue.outcome, Some(Outcome::Missed));
    assert_eq!(queue.started_at, at("2026-11-01T10:00:00Z"), "when the IVR took the call");
    assert_eq!(queue.duration_seconds, Some(40));
    let legs: Vec<_> = queue.legs.iter().map(|l| (&l.leg_id[..6], l.started_at)).collect();
    assert_eq!(
        legs,
        [
            ("200200", at("2026-11-01T10:00:00Z")),
            ("200300", at("2026-11-01T10:00:10Z")),
            ("200101", at("2026-11-01T10:00:15Z")),
        ]
    );
    drop_database(&database).await;
}

#[tokio::test]
async fn an_end_marker_completes_at_once_and_a_ringing_call_waits_longer() {
    let (pool, database) = fresh_pool("marker").await;
    let log = call_log(&pool);
    let ring_all = call_events("asterisk/inbound-queue-ring-all.json");
    let written = log.write_batch(&ring_all).await.expect("write");
    assert!(written.publishable);
    assert_eq!(written.completed, [(Direction::Inbound, Outcome::Answered)]);
    let (_, _, completion, record, _) = call_row(&pool, ring_all[0].event.call_id.as_str()).await;
    assert_eq!((completion.as_deref(), record), (Some("end_marker"), true));

    // Only the ringing of a call: due after the ringing settle time, not the short one.
    let ringing: Vec<StoredEvent> = call_events("telphin/refusals.json");
    let _ = log.write_batch(&ringing).await.expect("write");
    let (found, _) = log.settle_due(Duration::ZERO, Duration::from_secs(3600), 10).await.expect("sweep");
    assert_eq!(found, 0, "a ringing call is not settled after the short settle time");
    let (found, settled) = log.settle_due(Duration::ZERO, Duration::ZERO, 10).await.expect("sweep");
    assert_eq!(found, 1);
    assert_eq!(settled.completed.len(), 1);
    drop_database(&database).await;
}

/// Generic calls whose agent leg rang and answered and then nothing: due for the settle sweep.
fn open_calls(count: usize) -> Vec<StoredEvent> {
    let source = SourceId::parse("pbx").expect("source");
    let mut events = Vec::new();
    for n in 0..count {
        for (i, kind) in [EventKind::Ringing, EventKind::Answered].into_iter().enumerate() {
            let mut event = CallEvent::empty(
                source.clone(),
                Vendor::Generic,
                CallId::parse(format!("open-{n}")).expect("id"),
                EventId::parse(format!("open-{n}-{i}")).expect("id"),
                kind,
                chrono::Utc::now(),
            );
            event.raw_id = format!("raw-{n}-{i}");
            event.leg_id = Some(LegId::parse(format!("open-{n}-leg")).expect("id"));
            event.direction = Direction::Inbound;
            event.agent_number = Some("101".into());
            events.push(StoredEvent { event, partition: 0, offset: (n * 2 + i) as i64 });
        }
    }
    events
}

#[tokio::test]
async fn concurrent_sweeps_and_publishers_share_the_work() {
    let (pool, database) = fresh_pool("share").await;
    let log = std::sync::Arc::new(call_log(&pool));
    let calls = 300;
    write_all(&log, &open_calls(calls), 100).await;

    // Counted by what each sweep completed: a call one sweep locked just after the other
    // completed it is found (locked) but no longer due, so `found` may count it twice.
    let sweep = |log: std::sync::Arc<CallLog>| async move {
        let mut total = 0;
        loop {
            let (found, settled) = log.settle_due(Duration::ZERO, Duration::ZERO, 40).await.expect("sweep");
            if found == 0 {
                return total;
            }
            total += settled.completed.len();
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(sweep(log.clone())), tokio::spawn(sweep(log.clone())));
    let (a, b) = (a.expect("sweep"), b.expect("sweep"));
    assert_eq!(a + b, calls, "every call settled exactly once ({a} + {b})");
    let client = pool.get().await.expect("client");
    let row = client
        .query_one("SELECT count(*), min(version), max(version) FROM calls WHERE completion = 'settled' AND outcome = 'answered'", &[])
        .await
        .expect("count");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (calls as i64, 2, 2));

    let claim = |pool: Pool| async move {
        let mut mine = Vec::new();
        loop {
            let claimed = outbox::claim(&pool, 25, Duration::from_secs(30)).await.expect("claim");
            if claimed.is_empty() {
                return mine;
            }
            outbox::mark_published(&pool, &claimed).await.expect("mark");
            mine.extend(claimed.into_iter().map(|c| c.call_id));
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(claim(pool.clone())), tokio::spawn(claim(pool.clone())));
    let (a, b) = (a.expect("claim"), b.expect("claim"));
    let union: BTreeSet<&String> = a.iter().chain(&b).collect();
    assert_eq!((a.len() + b.len(), union.len()), (calls, calls), "each record claimed by one publisher");
    let left = client
        .query_one("SELECT count(*) FROM calls WHERE published_version < version", &[])
        .await
        .expect("left");
    assert_eq!(left.get::<_, i64>(0), 0);
    drop_database(&database).await;
}

/// A recording's events as the recordings stage publishes them: the hangup naming it (pending),
/// the stage's failure of that recording, and a second recording that became ready.
fn recording_events() -> Vec<StoredEvent> {
    let source = SourceId::parse("rec").expect("source");
    let event = |id: &str, kind: EventKind, second: i64, status: RecordingStatus| {
        let mut event = open_calls(1).remove(0).event;
        event.event_id = EventId::parse(id).expect("id");
        event.source_id = source.clone();
        event.call_id = CallId::parse("recorded").expect("id");
        event.leg_id = None;
        event.kind = kind;
        event.occurred_at = chrono::DateTime::from_timestamp(1_800_000_000 + second, 0).expect("time");
        event.recording_id = Some(format!("R-{id}"));
        event.recording_url = Some(format!("https://sb.example/v1/recordings/{id}?token=9.x"));
        event.recording_status = Some(status);
        event
    };
    let mut failed = event("a-failed", EventKind::Recording, 600, RecordingStatus::Failed);
    failed.recording_error = Some("the vendor answered 404 after 5 attempts".into());
    let all = [
        event("hangup", EventKind::Hangup, 60, RecordingStatus::Pending),
        failed,
        event("b-ready", EventKind::Recording, 300, RecordingStatus::Ready),
    ];
    all.into_iter()
        .enumerate()
        .map(|(i, event)| StoredEvent { event, partition: 0, offset: i as i64 })
        .collect()
}

#[tokio::test]
async fn the_recording_status_and_its_link_reach_the_call_in_any_order() {
    let (pool, database) = fresh_pool("recording").await;
    let log = call_log(&pool);
    let client = pool.get().await.expect("client");
    let read = async || {
        let row = client
            .query_one("SELECT recording_status, recording_error, recording_url FROM calls", &[])
            .await
            .expect("call");
        (row.get::<_, Option<String>>(0), row.get::<_, Option<String>>(1), row.get::<_, Option<String>>(2))
    };

    let events = recording_events();
    write_all(&log, &events[..1], 1).await;
    let (status, error, _) = read().await;
    assert_eq!((status.as_deref(), error), (Some("pending"), None));
    write_all(&log, &events[1..2], 1).await;
    let (status, error, _) = read().await;
    assert_eq!(status.as_deref(), Some("failed"));
    assert_eq!(error.as_deref(), Some("the vendor answered 404 after 5 attempts"), "the reason is kept");
    write_all(&log, &events[2..], 1).await;
    let forward = read().await;
    assert_eq!(forward.0.as_deref(), Some("ready"), "a ready recording wins");
    assert_eq!(forward.1, None);
    assert_eq!(forward.2.as_deref(), Some("https://sb.example/v1/recordings/b-ready?token=9.x"));

    // The same events the other way round, in one batch, give the same row.
    client.batch_execute("TRUNCATE call_outbox, call_legs, call_events, calls").await.expect("truncate");
    write_all(&log, &events.into_iter().rev().collect::<Vec<_>>(), 3).await;
    assert_eq!(read().await, forward);
    drop_database(&database).await;
}
