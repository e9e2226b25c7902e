//! The call-log writer against a real PostgreSQL: the same events in any order, duplicated, in
//! any batch split, give the same call log; replaying them changes nothing.

use chrono::{DateTime, TimeZone, Utc};
use switchboard_calllog::writer::{StoredEvent, write_batch};
use switchboard_core::config::PostgresSettings;
use switchboard_core::deadpool_postgres::Pool;
use switchboard_core::model::*;
use switchboard_core::pg;
use tokio_util::sync::CancellationToken;

fn admin_url() -> String {
    std::env::var("SB_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, migrated database of its own.
async fn fresh_pool(name: &str) -> (Pool, String) {
    let database = format!("sb_test_fold_{name}_{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
    let url = admin_url().rsplit_once('/').map(|(server, _)| format!("{server}/{database}")).expect("url");
    let settings = PostgresSettings { url, pool_size: 2, create_database: true };
    let pool = pg::connect_and_migrate(&settings, &CancellationToken::new())
        .await
        .expect("database")
        .expect("not cancelled");
    (pool, database)
}

async fn drop_database(database: &str) {
    let (client, connection) =
        switchboard_core::tokio_postgres::connect(&admin_url(), switchboard_core::tokio_postgres::NoTls)
            .await
            .expect("admin");
    tokio::spawn(connection);
    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")).await;
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).single().expect("valid time")
}

fn event(call: &str, leg: Option<&str>, kind: EventKind, second: i64, n: usize) -> StoredEvent {
    let answered = kind == EventKind::Answered;
    StoredEvent {
        event: CallEvent {
            event_id: EventId::parse(format!("{call}-{n}")).expect("id"),
            raw_id: format!("raw-{call}-{n}"),
            source_id: SourceId::parse("pbx").expect("id"),
            vendor: Vendor::Generic,
            call_id: CallId::parse(call).expect("id"),
            leg_id: leg.map(|l| LegId::parse(l).expect("id")),
            kind,
            direction: if kind == EventKind::Ringing { Direction::Inbound } else { Direction::Unknown },
            from_raw: (kind == EventKind::Ringing).then(|| "020 7946 0000".into()),
            from_e164: (kind == EventKind::Ringing)
                .then(|| PhoneNumber::from_e164("+442079460000").expect("e164")),
            to_raw: None,
            to_e164: None,
            agent_number: answered.then(|| "101".into()),
            agent_email: answered.then(|| "ann@example.com".into()),
            occurred_at: at(second),
            received_at: at(second + 1),
            sequence: Some(n as i64),
            hangup_cause: (kind == EventKind::Hangup).then(|| "normal".into()),
            recording_url: None,
            agent_extension: None,
            disposition: None,
            recording_id: None,
        },
        partition: 0,
        offset: n as i64,
    }
}

/// Three calls: answered with a transfer to a second agent leg, missed, answered.
fn events() -> Vec<StoredEvent> {
    let mut all = Vec::new();
    let mut n = 0;
    let mut push = |call: &str, leg: Option<&str>, kind, second| {
        n += 1;
        all.push(event(call, leg, kind, second, n));
    };
    push("a", None, EventKind::Ringing, 0);
    push("a", Some("a-101"), EventKind::Answered, 5);
    push("a", Some("a-101"), EventKind::Hangup, 30);
    push("a", Some("a-102"), EventKind::Answered, 31);
    push("a", Some("a-102"), EventKind::Hangup, 90);
    push("a", None, EventKind::Hangup, 91);
    push("m", None, EventKind::Ringing, 10);
    push("m", None, EventKind::Hangup, 40);
    push("b", None, EventKind::Ringing, 20);
    push("b", None, EventKind::Answered, 22);
    push("b", None, EventKind::Hangup, 50);
    all
}

/// Everything in the call log except write times, which differ from run to run. NULLs are
/// skipped by `concat_ws`.
async fn snapshot(pool: &Pool) -> Vec<String> {
    let client = pool.get().await.expect("client");
    client.batch_execute("SET TIME ZONE 'UTC'").await.expect("time zone");
    let mut rows = Vec::new();
    for query in [
        "SELECT concat_ws('|', call_id, vendor, direction, from_number, to_number, agent_number, agent_email,
                started_at, answered_at, ended_at, recording_url, hangup_cause, event_count,
                first_received_at, status, outcome) FROM calls ORDER BY call_id",
        "SELECT concat_ws('|', call_id, leg_id, agent_number, agent_email, started_at, answered_at,
                ended_at, hangup_cause, event_count, status) FROM call_legs ORDER BY call_id, leg_id",
        "SELECT concat_ws('|', event_id, call_id, leg_id, kind, occurred_at) FROM call_events ORDER BY event_id",
    ] {
        for row in client.query(query, &[]).await.expect("query") {
            rows.push(row.get::<_, String>(0));
        }
    }
    rows
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

async fn fold(name: &str, events: &[StoredEvent], batch: usize) -> Vec<String> {
    let (pool, database) = fresh_pool(name).await;
    for chunk in events.chunks(batch) {
        let _ = write_batch(&pool, chunk).await.expect("write");
    }
    let rows = snapshot(&pool).await;
    drop_database(&database).await;
    rows
}

#[tokio::test]
async fn any_order_duplication_or_batching_gives_the_same_call_log() {
    let reference = fold("ref", &events(), 100).await;
    assert_eq!(reference.len(), 3 + 5 + 11, "three calls, five legs, eleven events");
    assert!(reference[0].starts_with("a|generic|inbound|+442079460000|101|ann@example.com|2027-01-15 08:00:00+00|2027-01-15 08:00:05+00|2027-01-15 08:01:31+00|normal|"), "{}", reference[0]);
    assert!(reference[0].ends_with("|6|2027-01-15 08:00:01+00|ended|answered"), "{}", reference[0]);
    assert!(reference[2].contains("|ended|missed"), "the unanswered call is missed: {}", reference[2]);

    let mut reversed = events();
    reversed.reverse();
    let mut doubled = events();
    doubled.extend(shuffled(events(), 7));
    let cases = [
        ("rev", reversed, 100),
        ("one", shuffled(events(), 1), 1),
        ("three", shuffled(events(), 2), 3),
        ("dup", doubled.clone(), 4),
        ("dupone", shuffled(doubled, 3), 1),
    ];
    for (name, events, batch) in cases {
        assert_eq!(fold(name, &events, batch).await, reference, "case {name}");
    }
}

#[tokio::test]
async fn writing_the_same_batch_again_changes_nothing() {
    let (pool, database) = fresh_pool("again").await;
    let first = write_batch(&pool, &events()).await.expect("write");
    assert_eq!(first.new_events, 11);
    let before = snapshot(&pool).await;
    let again = write_batch(&pool, &events()).await.expect("write");
    assert_eq!((again.new_events, again.calls, again.legs), (0, 0, 0), "nothing new, nothing touched");
    assert_eq!(snapshot(&pool).await, before);
    drop_database(&database).await;
}
