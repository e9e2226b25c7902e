//! The settlement writer against a real PostgreSQL (`SB_TEST_POSTGRES`): an outcome is written
//! only while no one has claimed the delivery since its attempt, and an outcome PostgreSQL refuses
//! holds up none of the others written with it.

use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use serde_json::json;
use switchboard_dispatcher::settle::{Outcome, Settler};
use switchboard_dispatcher::store::{AttemptLog, Settle};

async fn fresh_pool(name: &str) -> (Pool, String) {
    switchboard_schema::scratch::database(&format!("sb_test_dsp_{name}"), 4).await.expect("database")
}

/// A pending delivery `id`, claimed `attempts` times and leased.
async fn pending(pool: &Pool, id: &str, attempts: i32) {
    let client = pool.get().await.expect("client");
    client
        .execute(
            "INSERT INTO delivery_profiles (id, name, spec, sealed) VALUES ('crm', 'CRM', '{}', '')
             ON CONFLICT DO NOTHING",
            &[],
        )
        .await
        .expect("profile");
    client
        .execute(
            "INSERT INTO deliveries (id, profile_id, source_id, call_id, subject_id, trigger, subject_kind,
                 subject, status, attempts, lease_until)
             VALUES ($1, 'crm', 'pbx', $1, 'record:1', 'call_record_completed', 'record', '{}', 'pending', $2,
                 now() + interval '1 minute')",
            &[&id, &attempts],
        )
        .await
        .expect("delivery");
}

async fn state(pool: &Pool, id: &str) -> (String, i32, bool) {
    let client = pool.get().await.expect("client");
    let row = client
        .query_one("SELECT status, attempts, lease_until IS NOT NULL FROM deliveries WHERE id = $1", &[&id])
        .await
        .expect("row");
    (row.get(0), row.get(1), row.get(2))
}

fn outcome(id: &str, attempts: i32, settle: Settle, body: &str) -> Outcome {
    Outcome {
        delivery_id: id.into(),
        profile_id: "crm".into(),
        attempts,
        settle,
        flow: json!({}),
        logs: vec![AttemptLog {
            n: attempts,
            step: "post".into(),
            started_at: Utc::now(),
            request: json!({"method": "POST"}),
            status: Some(200),
            body: Some(body.into()),
            latency: Duration::from_millis(3),
            error: None,
        }],
    }
}

#[tokio::test]
async fn a_late_outcome_changes_nothing_once_the_delivery_was_claimed_again() {
    let (pool, database) = fresh_pool("settle_late").await;
    pending(&pool, "d1", 2).await;
    let settler = Settler::start(pool.clone());
    // Attempt 1's outcome, after its lease lapsed and another replica claimed attempt 2.
    settler.settle(outcome("d1", 1, Settle::Delivered, "ok")).await.expect("queued");
    settler.flush().await;
    assert_eq!(state(&pool, "d1").await, ("pending".into(), 2, true), "attempt 2 still holds it");
    settler.settle(outcome("d1", 2, Settle::Delivered, "ok")).await.expect("queued");
    settler.flush().await;
    assert_eq!(state(&pool, "d1").await, ("delivered".into(), 2, false));
    let _ = switchboard_schema::scratch::drop(&database).await;
}

#[tokio::test]
async fn an_answer_postgres_cannot_store_as_is_holds_up_no_other_outcome() {
    let (pool, database) = fresh_pool("settle_nul").await;
    for id in ["a", "b"] {
        pending(&pool, id, 1).await;
    }
    let settler = Settler::start(pool.clone());
    // A NUL in the CRM's answer: PostgreSQL's text refuses it as is.
    settler.settle(outcome("a", 1, Settle::Delivered, "bad\0body")).await.expect("queued");
    settler.settle(outcome("b", 1, Settle::Delivered, "fine")).await.expect("queued");
    settler.flush().await;
    for id in ["a", "b"] {
        assert_eq!(state(&pool, id).await.0, "delivered", "{id}");
    }
    let client = pool.get().await.expect("client");
    let body: String = client
        .query_one("SELECT response_body FROM delivery_attempts WHERE delivery_id = 'a'", &[])
        .await
        .expect("log")
        .get(0);
    assert_eq!(body, "bad\u{FFFD}body");
    let _ = switchboard_schema::scratch::drop(&database).await;
}
