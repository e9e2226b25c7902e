//! The `recordings` table against a real PostgreSQL (`SB_TEST_POSTGRES`): registering is
//! idempotent and keeps the first link's basis; due recordings are claimed by one replica at a
//! time, in due order, and come back when a lease lapses; settling an attempt only ever moves a
//! pending recording.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use deadpool_postgres::Pool;
use switchboard_core::model::{CallEvent, CallId, EventId, EventKind, RecordingStatus, SourceId, Vendor};
use switchboard_recordings::store::{self, NewRecording};

/// A fresh, migrated database of its own.
async fn fresh_pool(name: &str) -> (Pool, String) {
    switchboard_schema::scratch::database(&format!("sb_test_rec_{name}"), 4).await.expect("database")
}

async fn drop_database(database: &str) {
    let _ = switchboard_schema::scratch::drop(database).await;
}

/// An event of call `call` naming a recording by `id` and/or `url`, received at second `second`.
fn event(call: &str, id: Option<&str>, url: Option<&str>, second: i64) -> CallEvent {
    let mut event = CallEvent::empty(
        SourceId::parse("pbx").expect("id"),
        Vendor::Twilio,
        CallId::parse(call).expect("id"),
        EventId::parse(format!("e-{call}-{second}")).expect("id"),
        EventKind::Recording,
        Utc.timestamp_opt(1_800_000_000 + second, 0).single().expect("time"),
    );
    event.raw_id = format!("raw-{call}-{second}");
    event.recording_id = id.map(Into::into);
    event.recording_url = url.map(Into::into);
    event
}

fn new(event: &CallEvent) -> NewRecording {
    NewRecording::from_event(event).expect("names a recording")
}

#[tokio::test]
async fn registering_is_idempotent_and_a_later_url_makes_a_pending_recording_ready() {
    let (pool, database) = fresh_pool("register").await;
    let first = store::register(&pool, &new(&event("c1", Some("RE1"), None, 0))).await.expect("register");
    assert!(first.created);
    assert_eq!(first.recording.status, RecordingStatus::Pending);
    let again = store::register(&pool, &new(&event("c1", Some("RE1"), None, 0))).await.expect("register");
    assert!(!again.created, "a redelivery finds the row");
    assert_eq!(again.recording, first.recording);

    // A later event of the same recording brings its URL: ready, the first report time kept.
    let url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1";
    let later =
        store::register(&pool, &new(&event("c1", Some("RE1"), Some(url), 30))).await.expect("register");
    assert_eq!((later.created, later.recording.id.as_str()), (false, first.recording.id.as_str()));
    assert_eq!(later.recording.status, RecordingStatus::Ready);
    assert_eq!(later.recording.vendor_url.as_deref(), Some(url));
    assert_eq!(
        later.recording.first_received_at, first.recording.first_received_at,
        "the link stays the same"
    );
    let claimed = store::claim_due(&pool, 10, Duration::from_secs(30)).await.expect("claim");
    assert!(claimed.is_empty(), "a ready recording is never attempted");

    // A later event without the URL does not take readiness back.
    let after = store::register(&pool, &new(&event("c1", Some("RE1"), None, 60))).await.expect("register");
    assert_eq!(after.recording.status, RecordingStatus::Ready);
    drop_database(&database).await;
}

#[tokio::test]
async fn due_recordings_are_claimed_by_one_replica_and_come_back_when_a_lease_lapses() {
    let (pool, database) = fresh_pool("claim").await;
    for n in 0..30 {
        let _ = store::register(&pool, &new(&event(&format!("c{n}"), Some(&format!("R{n}")), None, n)))
            .await
            .expect("register");
    }
    let claimer = |pool: Pool| async move {
        let mut mine = Vec::new();
        loop {
            let claimed = store::claim_due(&pool, 4, Duration::from_secs(60)).await.expect("claim");
            if claimed.is_empty() {
                return mine;
            }
            mine.extend(claimed.into_iter().map(|r| (r.id, r.attempts)));
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(claimer(pool.clone())), tokio::spawn(claimer(pool.clone())));
    let (a, b) = (a.expect("claimer"), b.expect("claimer"));
    let ids: BTreeSet<&String> = a.iter().chain(&b).map(|(id, _)| id).collect();
    assert_eq!((a.len() + b.len(), ids.len()), (30, 30), "each recording claimed by one replica");
    assert!(a.iter().chain(&b).all(|(_, attempts)| *attempts == 1), "the claim counts the attempt");

    // Settled: one rescheduled far away, one ready, one failed; none of them is due.
    let all: Vec<&String> = ids.iter().copied().collect();
    store::reschedule(&pool, all[0], Duration::from_secs(3600), "404").await.expect("reschedule");
    store::mark_ready(&pool, all[1]).await.expect("ready");
    store::mark_failed(&pool, all[2], "gave up").await.expect("failed");
    store::mark_failed(&pool, all[1], "too late").await.expect("no-op");
    let client = pool.get().await.expect("client");
    let statuses: Vec<(String, Option<String>)> = client
        .query(
            "SELECT status, last_error FROM recordings WHERE id = ANY($1) ORDER BY id",
            &[&all[..3].to_vec()],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        [
            ("pending".into(), Some("404".into())),
            ("ready".into(), None),
            ("failed".into(), Some("gave up".into()))
        ],
        "a settled recording is not settled again"
    );

    // The other 27 are still leased: not due. A lapsed lease brings a recording back, once.
    assert!(store::claim_due(&pool, 100, Duration::from_secs(60)).await.expect("claim").is_empty());
    client
        .execute("UPDATE recordings SET lease_until = now() - interval '1 second' WHERE id = $1", &[all[3]])
        .await
        .expect("lapse");
    let back = store::claim_due(&pool, 100, Duration::from_secs(60)).await.expect("claim");
    assert_eq!(back.iter().map(|r| (r.id.as_str(), r.attempts)).collect::<Vec<_>>(), [(all[3].as_str(), 2)]);
    assert_eq!(store::pending_count(&pool).await.expect("count"), 28);
    drop_database(&database).await;
}

#[tokio::test]
async fn due_recordings_come_in_due_order() {
    let (pool, database) = fresh_pool("order").await;
    for n in 0..3 {
        let _ = store::register(&pool, &new(&event(&format!("c{n}"), Some(&format!("R{n}")), None, n)))
            .await
            .expect("register");
    }
    let client = pool.get().await.expect("client");
    // R2 is the most overdue, R0 due a little later, R1 not yet.
    client
        .batch_execute(
            "UPDATE recordings SET due_at = now() - interval '1 minute' WHERE recording_id = 'R2';
             UPDATE recordings SET due_at = now() - interval '1 second' WHERE recording_id = 'R0';
             UPDATE recordings SET due_at = now() + interval '1 hour' WHERE recording_id = 'R1';",
        )
        .await
        .expect("schedule");
    let first = store::claim_due(&pool, 1, Duration::from_secs(60)).await.expect("claim");
    let second = store::claim_due(&pool, 5, Duration::from_secs(60)).await.expect("claim");
    let ids = |rs: &[store::Recording]| rs.iter().filter_map(|r| r.recording_id.clone()).collect::<Vec<_>>();
    assert_eq!((ids(&first), ids(&second)), (vec!["R2".to_owned()], vec!["R0".to_owned()]));
    drop_database(&database).await;
}
