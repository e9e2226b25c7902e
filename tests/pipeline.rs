//! End to end through the real pipeline: HTTP → ingress → Kafka → normalizer → matcher →
//! recordings → calllog → PostgreSQL, every service its own process, a real broker and a real
//! database. Each test has its own topics, groups and database, so they run in parallel.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use switchboard_core::avro::Codecs;
use switchboard_tests::*;

const EVENTS: &str = "SELECT count(*) FROM call_events";
const SETTLE: Duration = Duration::from_secs(180);

/// Asserts the call log holds exactly the events behind `ids`, folded into complete calls.
async fn assert_call_log_exact(
    db: &tokio_postgres::Client,
    ids: &[String],
    calls: i64,
) -> anyhow::Result<()> {
    let stored = wait_for_count(db, EVENTS, ids.len() as i64, SETTLE).await?;
    assert_eq!(stored, ids.len() as i64, "every accepted webhook is one event in the call log");
    let expected: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(expected.len(), ids.len(), "ingress ids are unique");
    assert_eq!(stored_raw_ids(db).await?, expected, "the stored events are exactly the accepted webhooks");

    let row = db
        .query_one(
            "SELECT count(*), coalesce(sum(event_count), 0)::bigint,
                    count(*) FILTER (WHERE outcome = 'answered' AND status = 'ended'),
                    count(*) FILTER (WHERE agent_email LIKE 'agent%@example.com'
                                       AND from_number LIKE '+4420794%' AND direction = 'inbound'),
                    (SELECT count(*) FROM call_legs),
                    (SELECT count(*) FROM call_legs WHERE status = 'ended')
             FROM calls",
            &[],
        )
        .await?;
    let (call_rows, counted, answered, enriched, legs, ended_legs): (i64, i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
    assert_eq!(call_rows, calls, "one row per call");
    assert_eq!(counted, ids.len() as i64, "each event counted once in its call, none twice");
    assert_eq!(answered, calls, "every call was answered and ended");
    assert_eq!(enriched, calls, "direction, E.164 number and agent carried through every stage");
    assert_eq!(legs, calls * 2, "a main leg and an agent leg per call");
    assert_eq!(ended_legs, calls * 2, "every leg ended");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_webhooks_become_exactly_a_thousand_call_log_events() -> anyhow::Result<()> {
    let env = TestEnv::new("thousand");
    let pipeline = env.start_pipeline().await?;
    let credentials = env.add_source("pbx-1", "GB").await?;
    // Sources added while ingress runs are picked up by its refresh (500 ms in tests).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let client = http_client();
    let ingress = pipeline.ingress_url("");

    let bodies = call_webhooks(&env.id, 250);
    assert_eq!(bodies.len(), 1000);
    let ids = post_all(&client, &ingress, &credentials, &bodies, 16).await?;
    let db = env.db().await?;
    assert_call_log_exact(&db, &ids, 250).await?;

    // A PBX retrying 100 webhooks it already delivered: accepted again, stored once.
    let _ = post_all(&client, &ingress, &credentials, &bodies[..100], 8).await?;
    // The sentinel is as large as the default body cap allows: more than Kafka's 1 MB default
    // once wrapped in its raw record, so it proves the topics take it through every stage.
    let padding = "x".repeat(1024 * 1024 - 100);
    let sentinel = vec![format!(r#"{{"call_id":"sentinel","event":"ringing","padding":"{padding}"}}"#)];
    assert!(sentinel[0].len() > 1_048_000 && sentinel[0].len() <= 1024 * 1024);
    let _ = post_all(&client, &ingress, &credentials, &sentinel, 1).await?;
    let calllog = &pipeline.services["calllog"];
    let seen = wait_for_metric(calllog, "switchboard_events_in_total", 1101.0, SETTLE).await?;
    assert!(seen >= 1101.0, "the call log received the retries and the sentinel: {seen}");
    assert_eq!(wait_for_count(&db, EVENTS, 1001, SETTLE).await?, 1001, "retries are not stored twice");
    let duplicates = metric_value(&calllog.metrics().await?, "switchboard_calllog_duplicate_events_total");
    assert!(duplicates >= 100.0, "the retries were recognised as duplicates: {duplicates}");

    // Replaying the whole enriched topic through a second writer in a fresh group writes nothing.
    let before = call_log_digest(&db).await?;
    let replay_group = format!("replay-{}.", env.id);
    let replay =
        env.start_with("calllog", &[("SWITCHBOARD_KAFKA__GROUP_PREFIX", replay_group.as_str())]).await?;
    let replayed = wait_for_metric(&replay, "switchboard_events_in_total", 1101.0, SETTLE).await?;
    assert!(replayed >= 1101.0, "the replay read the whole topic: {replayed}");
    let replay_dupes =
        wait_for_metric(&replay, "switchboard_calllog_duplicate_events_total", 1101.0, SETTLE).await?;
    assert!(replay_dupes >= 1101.0, "every replayed event was recognised: {replay_dupes}");
    assert_eq!(call_log_digest(&db).await?, before, "replaying the topic changed nothing");

    let mut replay = replay;
    assert_eq!(replay.terminate(Duration::from_secs(30)).await?, Some(0));
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_killed_mid_stream_lose_nothing_and_duplicate_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new("sigkill");
    let credentials = {
        env.init().await?;
        env.add_source("pbx-k", "GB").await?
    };
    let mut pipeline = env.start_pipeline().await?;
    let client = http_client();
    let ingress = pipeline.ingress_url("");
    let db = env.db().await?;

    let bodies = call_webhooks(&env.id, 250);
    let poster = {
        let (client, ingress, credentials, bodies) =
            (client.clone(), ingress.clone(), credentials.clone(), bodies.clone());
        tokio::spawn(async move { post_all(&client, &ingress, &credentials, &bodies, 4).await })
    };

    // Each stage in turn is killed without warning while events are still flowing through it,
    // then restarted; its group resumes from the last committed offset.
    for (stage, after_events) in
        [("normalizer", 100), ("calllog", 300), ("matcher", 500), ("recordings", 700)]
    {
        let _ = wait_for_count(&db, EVENTS, after_events, SETTLE).await?;
        pipeline.service(stage).kill_hard().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let restarted = env.start(stage).await?;
        let _ = pipeline.services.insert(stage.to_owned(), restarted);
    }

    let ids = poster.await??;
    assert_call_log_exact(&db, &ids, 250).await?;
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_publish_nothing() -> anyhow::Result<()> {
    let mut env = TestEnv::new("badreq");
    // One partition, so the raw topic's order is the order of acknowledgement.
    env.set("SWITCHBOARD_KAFKA__PARTITIONS", "1");
    env.set("SWITCHBOARD_INGRESS__MAX_BODY_BYTES", "1024");
    env.init().await?;
    let credentials = env.add_source("pbx-b", "US").await?;
    let other = env.add_source("pbx-other", "US").await?;
    let ingress = env.start("ingress").await?;
    let client = http_client();
    let url = ingress.url(&format!("/v1/webhooks/{}", credentials.user));
    let auth = credentials.basic();
    let json = ("content-type", "application/json");
    let text = ("content-type", "text/plain");
    let good = r#"{"call_id":"c1","event":"ringing"}"#;

    let wrong_secret = basic(&credentials.user, "not-the-secret");
    let other_creds = other.basic();
    let big = format!(r#"{{"call_id":"c","event":"ringing","pad":"{}"}}"#, "x".repeat(2000));
    let refused = |what, url: &str, headers: Vec<(&'static str, &str)>, body: &str, status, code| Refused {
        what,
        url: url.to_owned(),
        headers: headers.into_iter().map(|(k, v)| (k, v.to_owned())).collect(),
        body: body.to_owned(),
        status,
        code,
    };
    let unknown = ingress.url("/v1/webhooks/nobody");
    let cases = [
        refused(
            "unknown source",
            &unknown,
            vec![json, ("authorization", &auth)],
            good,
            404,
            "unknown_source",
        ),
        refused("no credentials", &url, vec![json], good, 401, "unauthorized"),
        refused(
            "wrong secret",
            &url,
            vec![json, ("authorization", &wrong_secret)],
            good,
            401,
            "unauthorized",
        ),
        refused(
            "another source's",
            &url,
            vec![json, ("authorization", &other_creds)],
            good,
            401,
            "unauthorized",
        ),
        refused("not base64", &url, vec![json, ("authorization", "Basic %%%")], good, 401, "unauthorized"),
        refused(
            "bearer, not basic",
            &url,
            vec![json, ("authorization", "Bearer x")],
            good,
            401,
            "unauthorized",
        ),
        refused(
            "body over the cap",
            &url,
            vec![json, ("authorization", &auth)],
            &big,
            413,
            "payload_too_large",
        ),
        refused("text body", &url, vec![text, ("authorization", &auth)], good, 415, "unsupported_media_type"),
        refused("no content type", &url, vec![("authorization", &auth)], good, 415, "unsupported_media_type"),
        refused(
            "broken JSON",
            &url,
            vec![json, ("authorization", &auth)],
            "{\"call_id\":",
            400,
            "malformed_body",
        ),
        refused("JSON array", &url, vec![json, ("authorization", &auth)], "[1,2]", 400, "malformed_body"),
    ];
    for case in &cases {
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = send(&client, "POST", &case.url, &headers, case.body.clone()).await?;
        assert_eq!(response.status, case.status, "{}: {:?}", case.what, response.body);
        assert_eq!(response.json()["error"], case.code, "{}", case.what);
        if case.status == 401 {
            assert!(
                response.headers.contains_key("www-authenticate"),
                "{}: a 401 names the scheme",
                case.what
            );
        }
    }
    let get = send(&client, "GET", &url, &[("authorization", &auth)], "").await?;
    assert_eq!(get.status, 405);

    // A chunked body has no Content-Length to refuse early; the cap still holds while reading.
    let chunked =
        raw_chunked_post(ingress.port, &format!("/v1/webhooks/{}", credentials.user), &auth, 4096).await?;
    assert!(chunked.starts_with("HTTP/1.1 413"), "chunked over the cap: {chunked}");

    let metrics = ingress.metrics().await?;
    assert!(
        metric_value(&metrics, "switchboard_ingress_auth_failures_total") >= 5.0,
        "auth failures are counted"
    );
    assert!(metrics.contains("status=\"413\""), "refusals are counted by status");

    // Nothing refused reached Kafka: the first record on the raw topic is the one accepted later.
    let accepted = post_webhook(&client, &ingress.url(""), &credentials, good).await?;
    assert_eq!(accepted.status, 202);
    let codecs = Codecs::new()?;
    let raw =
        read_topic(&env.brokers, &env.topics().raw, Duration::from_secs(60), |records| !records.is_empty())
            .await?;
    assert_eq!(raw.len(), 1, "only the accepted webhook was published");
    let record = codecs.raw_webhook.decode(&raw[0].1)?;
    assert_eq!(record.id, accepted.json()["id"].as_str().unwrap_or_default());
    assert_eq!(record.body, good.as_bytes(), "the body is kept byte for byte");
    assert!(!record.headers.contains_key("authorization"), "credentials are never kept");
    assert_eq!(raw[0].0.as_deref(), Some(&b"pbx-b:c1"[..]), "keyed by source and call");

    // Bodies ingress cannot judge go through and end in the dead-letter topic with the reason.
    let normalizer = env.start("normalizer").await?;
    let poison = [
        (r#"{"call_id":"c2","event":"exploded"}"#, "exploded"),
        (r#"{"event":"ringing","from":"+15551234567"}"#, "call_id"),
    ];
    let mut poison_ids = Vec::new();
    for (body, _) in &poison {
        let response = post_webhook(&client, &ingress.url(""), &credentials, body).await?;
        assert_eq!(response.status, 202, "ingress accepts what only the adapter can judge");
        poison_ids.push(response.json()["id"].as_str().unwrap_or_default().to_owned());
    }
    let dead = read_topic(&env.brokers, &env.topics().dead_letter, Duration::from_secs(60), |r| r.len() >= 2)
        .await?;
    assert_eq!(dead.len(), 2, "each unreadable webhook is one dead letter");
    for ((body, reason), (id, (_, payload))) in poison.iter().zip(poison_ids.iter().zip(&dead)) {
        let letter = codecs.dead_letter.decode(payload)?;
        assert_eq!(letter.stage, "normalizer");
        assert_eq!(letter.error_class, "adapter");
        assert!(letter.reason.contains(reason), "reason {:?} names {reason}", letter.reason);
        assert_eq!(letter.topic, env.topics().raw);
        let original = codecs.raw_webhook.decode(&letter.payload)?;
        assert_eq!(&original.id, id, "the dead letter holds the original record");
        assert_eq!(original.body, body.as_bytes());
    }
    let failed =
        wait_for_metric(&normalizer, "switchboard_events_failed_total", 2.0, Duration::from_secs(10)).await?;
    assert_eq!(failed, 2.0);

    let (mut ingress, mut normalizer) = (ingress, normalizer);
    assert_eq!(ingress.terminate(Duration::from_secs(30)).await?, Some(0));
    assert_eq!(normalizer.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}

/// A request ingress must refuse, and how.
struct Refused {
    what: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: String,
    status: u16,
    code: &'static str,
}

/// POSTs `size` bytes with chunked transfer encoding over a raw socket; returns the status line.
async fn raw_chunked_post(port: u16, path: &str, auth: &str, size: usize) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         authorization: {auth}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let chunk = vec![b' '; 512];
    for _ in 0..size / chunk.len() {
        // The server may answer and close before the whole body is sent.
        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_exits_64_before_binding() -> anyhow::Result<()> {
    let mut env = TestEnv::new("badconfig");
    env.set("SWITCHBOARD_KAFKA__PARTITIONS", "0");
    let mut ingress = env.spawn("ingress", &[])?;
    assert_eq!(ingress.wait_exit(Duration::from_secs(10)).await?, Some(64));
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", ingress.port)).await.is_err(), "nothing was bound");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_answers_503_while_kafka_is_down_and_recovers() -> anyhow::Result<()> {
    let mut env = TestEnv::new("outage");
    let mut broker = PrivateBroker::start(&env).await?;
    env.set("SWITCHBOARD_KAFKA__BROKERS", broker.address());
    env.brokers = broker.address();
    env.set("SWITCHBOARD_KAFKA__PRODUCE_TIMEOUT_MS", "2000");
    env.set("SWITCHBOARD_INGRESS__RETRY_AFTER_SECS", "3");
    env.init().await?;
    let credentials = env.add_source("pbx-o", "US").await?;
    let ingress = env.start("ingress").await?;
    let client = http_client();
    let base = ingress.url("");
    let body = |n: usize| format!(r#"{{"call_id":"outage-{n}","event":"ringing"}}"#);

    let before = post_webhook(&client, &base, &credentials, &body(0)).await?;
    assert_eq!(before.status, 202);

    broker.stop().await?;
    let asked = std::time::Instant::now();
    let during = post_webhook(&client, &base, &credentials, &body(1)).await?;
    assert_eq!(during.status, 503, "never 2xx while Kafka cannot acknowledge: {:?}", during.body);
    assert_eq!(during.json()["error"], "kafka_unavailable");
    assert_eq!(during.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("3"));
    assert!(asked.elapsed() < Duration::from_secs(10), "answered within the produce timeout");

    broker.restart().await?;
    let mut accepted = vec![before.json()["id"].as_str().unwrap_or_default().to_owned()];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut n = 2;
    loop {
        let response = post_webhook(&client, &base, &credentials, &body(n)).await?;
        n += 1;
        match response.status {
            202 => {
                accepted.push(response.json()["id"].as_str().unwrap_or_default().to_owned());
                break;
            }
            503 => {}
            other => panic!("only 503 or 202 while the broker comes back, got {other}: {:?}", response.body),
        }
        assert!(std::time::Instant::now() < deadline, "ingress did not recover after the broker came back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And it keeps working.
    let after = post_webhook(&client, &base, &credentials, &body(n)).await?;
    assert_eq!(after.status, 202);
    accepted.push(after.json()["id"].as_str().unwrap_or_default().to_owned());

    // Everything acknowledged before and after the outage is in Kafka.
    let codecs = Codecs::new()?;
    let wanted: HashSet<String> = accepted.iter().cloned().collect();
    let records = read_topic(&broker.address(), &env.topics().raw, Duration::from_secs(60), |records| {
        let ids: HashSet<String> =
            records.iter().filter_map(|(_, v)| codecs.raw_webhook.decode(v).ok()).map(|r| r.id).collect();
        wanted.is_subset(&ids)
    })
    .await?;
    let ids: HashSet<String> =
        records.iter().filter_map(|(_, v)| codecs.raw_webhook.decode(v).ok()).map(|r| r.id).collect();
    assert!(wanted.is_subset(&ids), "every 202 is stored: wanted {wanted:?}, found {ids:?}");

    let mut ingress = ingress;
    assert_eq!(ingress.terminate(Duration::from_secs(30)).await?, Some(0));
    broker.cleanup().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_offsets_so_a_restarted_pipeline_reads_nothing_twice() -> anyhow::Result<()> {
    let mut env = TestEnv::new("sigterm");
    // Auto-commit only once an hour: the final commit on SIGTERM is the only one that can happen.
    env.set("SWITCHBOARD_KAFKA__CLIENT__AUTO_COMMIT_INTERVAL_MS", "3600000");
    env.init().await?;
    let credentials = env.add_source("pbx-t", "US").await?;
    let pipeline = env.start_pipeline().await?;
    let client = http_client();
    let bodies = call_webhooks(&env.id, 10);
    let _ = post_all(&client, &pipeline.ingress_url(""), &credentials, &bodies, 4).await?;
    let db = env.db().await?;
    assert_eq!(wait_for_count(&db, EVENTS, 40, SETTLE).await?, 40);
    pipeline.shutdown().await?;

    let pipeline = env.start_pipeline().await?;
    let sentinel = vec![r#"{"call_id":"after-restart","event":"ringing"}"#.to_owned()];
    let _ = post_all(&client, &pipeline.ingress_url(""), &credentials, &sentinel, 1).await?;
    assert_eq!(wait_for_count(&db, EVENTS, 41, SETTLE).await?, 41);
    for stage in ["normalizer", "matcher", "recordings", "calllog"] {
        let seen = metric_value(&pipeline.services[stage].metrics().await?, "switchboard_events_in_total");
        assert_eq!(seen, 1.0, "{stage} resumed after its committed offset and read only the new event");
    }
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

/// The call log holds exactly one event per distinct body and `calls` complete, answered calls.
/// (Raw ids are not compared: a webhook Kafka stored before ingress gave up waiting, and that the
/// PBX then sent again, keeps the id of its first copy.)
async fn assert_each_body_once(db: &tokio_postgres::Client, bodies: usize, calls: i64) -> anyhow::Result<()> {
    let stored = wait_for_count(db, EVENTS, bodies as i64, SETTLE).await?;
    assert_eq!(stored, bodies as i64, "every webhook is one event in the call log, none twice");
    let row = db
        .query_one(
            "SELECT count(*), coalesce(sum(event_count), 0)::bigint,
                    count(*) FILTER (WHERE outcome = 'answered' AND status = 'ended')
             FROM calls",
            &[],
        )
        .await?;
    let (rows, counted, answered): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((rows, counted, answered), (calls, bodies as i64, calls), "calls, events counted, answered");
    Ok(())
}

/// Readiness of a replica that has just started: once `/readyz` says 200, its group must have
/// given it partitions (two replicas share four, so each owns some).
async fn ready_with_partitions(process: &mut ServiceProcess, stage: &str) -> anyhow::Result<()> {
    process.wait_ready(Duration::from_secs(60)).await?;
    let metrics = process.metrics().await?;
    let assigned =
        metric_series(&metrics, &format!("switchboard_kafka_assigned_partitions{{stage=\"{stage}\"}}"));
    assert!(assigned >= 1.0, "{stage} said ready while owning {assigned} partitions");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_churn_of_two_replicas_per_stage_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new("churn");
    env.init().await?;
    let credentials = env.add_source("pbx-c", "GB").await?;
    let mut pipeline = env.start_pipeline().await?;
    let stages = ["normalizer", "matcher", "recordings", "calllog"];
    let mut second = BTreeMap::new();
    for stage in stages {
        let mut replica = env.spawn(stage, &[])?;
        ready_with_partitions(&mut replica, stage).await?;
        let _ = second.insert(stage, replica);
    }
    let client = http_client();
    let ingress = pipeline.ingress_url("");
    let db = env.db().await?;

    let bodies = call_webhooks(&env.id, 1250);
    assert_eq!(bodies.len(), 5000);
    let poster = {
        let (client, ingress, credentials, bodies) =
            (client.clone(), ingress.clone(), credentials.clone(), bodies.clone());
        tokio::spawn(async move { post_all(&client, &ingress, &credentials, &bodies, 8).await })
    };

    // One replica of each stage leaves and comes back while events flow: gracefully (SIGTERM:
    // drain, commit, leave the group) or not (SIGKILL: the group notices at the session timeout).
    for (n, stage) in stages.into_iter().enumerate() {
        let _ = wait_for_count(&db, EVENTS, 600 + 1000 * n as i64, SETTLE).await?;
        let leaving = if n % 2 == 0 {
            &mut pipeline.services.get_mut(stage).expect("stage")
        } else {
            second.get_mut(stage).expect("replica")
        };
        if n % 2 == 0 {
            leaving.signal_term().await?;
            // Draining: not ready once the signal is handled (a few ms), whatever it still
            // finishes.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let probe = http_client();
            loop {
                match get(&probe, &leaving.url("/readyz")).await {
                    Ok(response) => assert_ne!(response.status, 200, "{stage} ready while draining"),
                    Err(_) => break,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(leaving.wait_exit(Duration::from_secs(30)).await?, Some(0), "{stage} drained");
        } else {
            leaving.kill_hard().await?;
        }
        let mut back = env.spawn(stage, &[])?;
        ready_with_partitions(&mut back, stage).await?;
        *leaving = back;
    }

    let ids = poster.await??;
    assert_eq!(ids.len(), 5000);
    assert_call_log_exact(&db, &ids, 1250).await?;
    for (stage, mut replica) in second {
        assert_eq!(replica.terminate(Duration::from_secs(30)).await?, Some(0), "{stage}");
    }
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_no_acknowledged_webhook() -> anyhow::Result<()> {
    let mut env = TestEnv::new("brokerrestart");
    let mut broker = PrivateBroker::start(&env).await?;
    env.set("SWITCHBOARD_KAFKA__BROKERS", broker.address());
    env.brokers = broker.address();
    env.set("SWITCHBOARD_KAFKA__PRODUCE_TIMEOUT_MS", "2000");
    env.init().await?;
    let credentials = env.add_source("pbx-r", "GB").await?;
    let pipeline = env.start_pipeline().await?;
    let ingress = pipeline.ingress_url("");
    let db = env.db().await?;

    // A PBX's behaviour: each webhook is sent until it is acknowledged, a 503 waits for its
    // Retry-After. Anything but 202 or 503 + Retry-After fails the test.
    let bodies = call_webhooks(&env.id, 300);
    let sender = {
        let (ingress, credentials, bodies) = (ingress.clone(), credentials.clone(), bodies.clone());
        tokio::spawn(async move {
            let client = http_client();
            let mut refused = 0_usize;
            for body in &bodies {
                loop {
                    let response = post_webhook(&client, &ingress, &credentials, body).await?;
                    match response.status {
                        202 => break,
                        503 => {
                            anyhow::ensure!(
                                response.headers.contains_key("retry-after"),
                                "503 without Retry-After"
                            );
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        other => anyhow::bail!("only 202 or 503 while the broker restarts, got {other}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(refused)
        })
    };

    let _ = wait_for_count(&db, EVENTS, 300, SETTLE).await?;
    broker.stop().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart().await?;

    let refused = sender.await??;
    assert!(refused > 0, "the sender met the outage (503s while the broker was down)");
    assert_each_body_once(&db, bodies.len(), 300).await?;
    pipeline.shutdown().await?;
    broker.cleanup().await;
    env.cleanup().await;
    Ok(())
}

/// One client that sends a webhook's headers and then its body a byte every 2 s; returns how
/// long the server let it hold the connection.
async fn drip(port: u16, path: String, auth: String) -> anyhow::Result<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let started = std::time::Instant::now();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut buffer = [0_u8; 512];
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                // Answered (408) or closed: either way the server let go.
                Ok(0) | Err(_) => return Ok(started.elapsed()),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                if stream.write_all(b" ").await.is_err() {
                    return Ok(started.elapsed());
                }
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "a dripping client was held for a minute"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_dripping_clients_hold_nothing_and_a_webhook_still_gets_through() -> anyhow::Result<()>
{
    let env = TestEnv::new("drip");
    env.init().await?;
    let credentials = env.add_source("pbx-d", "GB").await?;
    let ingress = env.start("ingress").await?;
    let path = format!("/v1/webhooks/{}", credentials.user);

    let drippers: Vec<_> =
        (0..5000).map(|_| tokio::spawn(drip(ingress.port, path.clone(), credentials.basic()))).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A PBX's webhook meanwhile: answered at once.
    let asked = std::time::Instant::now();
    let response = post_webhook(
        &http_client(),
        &ingress.url(""),
        &credentials,
        r#"{"call_id":"drip-1","event":"ringing"}"#,
    )
    .await?;
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert!(asked.elapsed() < Duration::from_secs(1), "answered in {:?}", asked.elapsed());
    let rss = ingress.rss_bytes()?;
    assert!(rss < 512 * 1024 * 1024, "ingress holds {} MiB with 5,000 slow clients", rss / (1024 * 1024));

    let mut longest = Duration::ZERO;
    for dripper in drippers {
        longest = longest.max(dripper.await??);
    }
    // The request deadline is 10 s; the rest is 5,000 connections being closed on two cores
    // shared with the whole suite. Without the deadline they would be held until the test ends.
    assert!(longest < Duration::from_secs(20), "a dripping client was held {longest:?}");
    let mut ingress = ingress;
    assert_eq!(ingress.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_limit_gets_503_and_the_limit_frees_up() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let env = TestEnv::new("connlimit");
    env.init().await?;
    let credentials = env.add_source("pbx-l", "GB").await?;
    let ingress = env.start_with("ingress", &[("SWITCHBOARD_HTTP__MAX_CONNECTIONS", "8")]).await?;
    // Sixteen connections that send nothing: the first eight the server accepts take every slot
    // and wait for a request; the others are answered 503 at once, without a request, and closed.
    // (Counted rather than told apart by order: the server accepts in its own time.)
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", ingress.port)).await?);
    }
    let mut refused_now = 0;
    for connection in &mut idle {
        let mut answer = vec![0u8; 256];
        if let Ok(Ok(read)) =
            tokio::time::timeout(Duration::from_millis(500), connection.read(&mut answer)).await
            && answer.get(..read).is_some_and(|a| a.starts_with(b"HTTP/1.1 503"))
        {
            refused_now += 1;
        }
    }
    assert!((1..=8).contains(&refused_now), "beyond the limit, and only beyond it: {refused_now} refused");
    let refused = metric_value(&ingress.metrics().await?, "switchboard_http_connections_refused_total");
    assert!(refused >= 1.0, "counted: {refused}");

    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = post_webhook(
        &http_client(),
        &ingress.url(""),
        &credentials,
        r#"{"call_id":"l-1","event":"ringing"}"#,
    )
    .await?;
    assert_eq!(response.status, 202, "slots free again once the idle clients left");
    let mut ingress = ingress;
    assert_eq!(ingress.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}

/// A wrong credential in the headers is refused before the body is read (#18): a client that
/// announces a 1 MB body and sends none still gets its 401 at once, and holds no buffer; with
/// the right credential the body is awaited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_is_refused_before_the_body_is_read() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new("authfirst");
    env.init().await?;
    let credentials = env.add_source("pbx-a", "GB").await?;
    let mut ingress = env.start("ingress").await?;
    let port = ingress.port;
    let first_line = async |auth: String| -> anyhow::Result<Option<String>> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let head = format!(
            "POST /v1/webhooks/pbx-a HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             authorization: {auth}\r\ncontent-length: 1000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let mut answer = vec![0u8; 64];
        Ok(match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer)).await {
            Ok(Ok(read)) if read > 0 => answer
                .get(..read)
                .map(|a| String::from_utf8_lossy(a).lines().next().unwrap_or_default().to_owned()),
            _ => None,
        })
    };
    let refused = first_line(basic("pbx-a", "not-the-secret")).await?;
    assert_eq!(refused.as_deref(), Some("HTTP/1.1 401 Unauthorized"), "refused without the body");
    assert_eq!(first_line(credentials.basic()).await?, None, "the right credential waits for its body");
    let metrics = ingress.metrics().await?;
    assert!(metric_value(&metrics, "switchboard_ingress_auth_failures_total") >= 1.0, "counted");
    assert_eq!(ingress.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}
