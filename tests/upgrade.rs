//! Rolling upgrades (#18 item 12). Migrations are expand-then-contract across releases
//! (`libs/schema/README.md`), so that while a release rolls out, the replicas of the
//! release before it keep working on the new schema:
//! - the previous release's call log and query API (its binary built by `./test` from the commit
//!   in `deploy/previous-release`, named by `SB_PREVIOUS_RELEASE_BIN`) write a call and find it on
//!   this release's schema, fed by this release's upstream stages;
//! - every migration since the call log's first finishes on a database of five million legs
//!   (ignored by `cargo test`; `./test` runs it on its own after the suite, as it takes minutes).

use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_schema::scratch;
use switchboard_tests::*;

const TOKEN: &str = "upgrade-query-token-0123456789abcdef0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_writes_and_queries_calls_on_this_releases_schema() -> anyhow::Result<()> {
    let previous = match std::env::var("SB_PREVIOUS_RELEASE_BIN") {
        Ok(bin) if !bin.is_empty() => std::path::PathBuf::from(bin),
        _ => match std::env::var("SB_PREVIOUS_RELEASE_MISSING") {
            // ./test could not build it (a clone without the release's commit) and says so.
            Ok(why) => {
                eprintln!("SKIPPED: the previous release is not available: {why}");
                return Ok(());
            }
            Err(_) => {
                anyhow::bail!("SB_PREVIOUS_RELEASE_BIN: the previous release's binary (./test builds it)")
            }
        },
    };
    let mut env = TestEnv::new("upgrade");
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.set("SWITCHBOARD_CALLLOG__SETTLE_MS", "1500");
    // This release's migrations and topics, as `switchboard init` applies them before the roll.
    env.init().await?;
    let db = env.db().await?;
    let newest: i32 = db.query_one("SELECT max(version) FROM schema_migrations", &[]).await?.get(0);
    assert_eq!(newest, switchboard_schema::newest());

    // This release's ingress and enrichment; the previous release's writer and API.
    let ingress = env.start("ingress").await?;
    let normalizer = env.start("normalizer").await?;
    let matcher = env.start("matcher").await?;
    let recordings = env.start("recordings").await?;
    let calllog = env.start_binary(&previous, "calllog", &[]).await?;
    let api = env.start_binary(&previous, "api", &[]).await?;
    let credentials = env.add_source("pbx-up", "GB").await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let client = http_client();
    let bodies = call_webhooks(&env.id, 3);
    let _ = post_all(&client, &ingress.url(""), &credentials, &bodies, 4).await?;
    let auth = format!("Bearer {TOKEN}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let page = loop {
        let response = send(
            &client,
            "GET",
            &api.url("/v1/calls?source=pbx-up&complete=true"),
            &[("authorization", &auth)],
            "",
        )
        .await?;
        let page = response.json();
        if response.status == 200 && page["calls"].as_array().is_some_and(|calls| calls.len() == 3) {
            break page;
        }
        anyhow::ensure!(Instant::now() < deadline, "the previous release's API did not show 3 calls: {page}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for call in page["calls"].as_array().context("calls")? {
        assert_eq!(call["outcome"], "answered", "{call}");
        let id = call["call_id"].as_str().context("call_id")?;
        let one = send(
            &client,
            "GET",
            &api.url(&format!("/v1/calls/pbx-up/{id}")),
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert_eq!(one.status, 200);
        let legs = one.json()["legs"].as_array().map_or(0, Vec::len);
        assert!(legs >= 1, "the answering agent's leg: {}", one.json());
    }
    // The previous release migrated nothing back and nothing more.
    let after: i32 = db.query_one("SELECT max(version) FROM schema_migrations", &[]).await?.get(0);
    assert_eq!(after, newest);

    for mut service in [api, calllog, recordings, matcher, normalizer, ingress] {
        assert_eq!(service.terminate(Duration::from_secs(30)).await?, Some(0), "{}", service.name);
    }
    env.cleanup().await;
    Ok(())
}

/// The schema the seed is written in: the call log's as of migration 0006, before 0007 rebuilt how
/// calls find their agents.
const SEED_SCHEMA: i32 = 6;

/// Calls of two legs each, one with an agent; one call in a hundred still open.
fn seed_sql(legs: i64) -> [String; 2] {
    let calls = legs / 2;
    [
        format!(
            "INSERT INTO calls (source_id, call_id, vendor, direction, from_number, to_number,
                 agent_number, agent_email, started_at, answered_at, ended_at, event_count,
                 first_received_at, status, outcome, agents, completed_at, completion, version,
                 published_version)
             SELECT 'seed', 'call-' || n, 'generic', 'inbound',
                 CASE WHEN n % 10 = 0 THEN '07700 900' || lpad((n % 1000)::text, 3, '0')
                      ELSE '+4420794' || lpad((n % 100000)::text, 5, '0') END,
                 '+442071234567', '10' || (n % 10), 'agent' || (n % 10) || '@example.com',
                 t, t + interval '2 s', t + interval '60 s', 4, t, 'ended', 'answered',
                 ARRAY['10' || (n % 10)],
                 CASE WHEN n % 100 <> 0 THEN t + interval '61 s' END,
                 CASE WHEN n % 100 <> 0 THEN 'end_marker' END, 1, 1
             FROM generate_series(1, {calls}) n,
                  LATERAL (SELECT now() - n * interval '1 s' AS t) start"
        ),
        format!(
            "INSERT INTO call_legs (source_id, call_id, leg_id, agent_number, agent_email,
                 agent_extension, started_at, answered_at, ended_at, event_count, status, answered)
             SELECT 'seed', 'call-' || ((n + 1) / 2), 'leg-' || (n % 2),
                 CASE WHEN n % 2 = 0 THEN '10' || (n % 10) END,
                 CASE WHEN n % 2 = 0 THEN 'Agent' || (n % 10) || '@Example.com' END,
                 CASE WHEN n % 2 = 0 THEN '2' || (n % 10) END,
                 t, t + interval '2 s', t + interval '60 s', 2, 'ended', n % 2 = 0
             FROM generate_series(1, {}) n,
                  LATERAL (SELECT now() - ((n + 1) / 2) * interval '1 s' AS t) start",
            calls * 2
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes of PostgreSQL work: ./test runs it on its own after the suite"]
async fn every_migration_since_the_call_logs_first_finishes_on_five_million_legs() -> anyhow::Result<()> {
    let legs: i64 = std::env::var("SB_MIGRATION_LEGS").ok().and_then(|n| n.parse().ok()).unwrap_or(5_000_000);
    let (pool, name) = scratch::database_at("sb_migrate", SEED_SCHEMA).await?;
    // A connection of its own, without the services' statement timeout: the seed takes minutes.
    let db = connect(&scratch::url_of(&name)).await?;
    let seeding = Instant::now();
    for statement in seed_sql(legs) {
        let _ = db.execute(statement.as_str(), &[]).await?;
    }
    db.batch_execute("ANALYZE calls; ANALYZE call_legs").await?;
    let seeded = seeding.elapsed();

    let migrating = Instant::now();
    scratch::migrate(&pool).await?;
    let migrated = migrating.elapsed();
    println!(
        "migrations {}..{} on {legs} legs: seeded in {:.0} s, migrated in {:.0} s",
        SEED_SCHEMA + 1,
        switchboard_schema::newest(),
        seeded.as_secs_f64(),
        migrated.as_secs_f64()
    );

    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.map(|row| row.get::<_, i64>(0)) }
    };
    let newest: i32 = db.query_one("SELECT max(version) FROM schema_migrations", &[]).await?.get(0);
    assert_eq!(newest, switchboard_schema::newest());
    assert_eq!(count("SELECT count(*) FROM call_legs").await?, legs);
    // 0007: every leg with an agent lists its identifiers, lower-case email included.
    assert_eq!(count("SELECT count(*) FROM call_legs WHERE agents <> '{}'").await?, legs / 2);
    assert_eq!(
        count("SELECT count(*) FROM call_legs WHERE agents @> ARRAY['agent4@example.com', '104', '24']")
            .await?,
        legs / 10
    );
    // 0007: the open calls are listed.
    assert_eq!(count("SELECT count(*) FROM open_calls").await?, legs / 2 / 100);
    // 0008: a number that does not parse is found by its digits.
    assert_eq!(
        count(
            "SELECT count(*) FROM calls WHERE from_number !~ '^\\+[1-9][0-9]{6,14}$'
             AND regexp_replace(from_number, '[^0-9]', '', 'g') = '07700900010'"
        )
        .await?,
        legs / 2 / 1000
    );
    drop(pool);
    drop(db);
    scratch::drop(&name).await?;
    Ok(())
}
