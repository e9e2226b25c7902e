//! The call log end to end: real vendor fixtures posted to the real ingress, through every stage,
//! folded by the call-log writer and published on the calls topic, then read back through the
//! query API (`switchboard api`), each service its own process.
//!
//! - a transfer between two agents (Telphin: no end marker, so the call completes when it settles)
//!   is one answered call with both agents' legs answered;
//! - a ring-all queue (Asterisk) is one answered call: the agent who answered and the one who only
//!   rang;
//! - a caller hanging up in the IVR (Asterisk, delivered twice) is one call, abandoned in the IVR;
//! - a recording that arrives after the call was published (Twilio) publishes a new version;
//! - the query API over that call log: filters, keyset pages, 400s and 401s.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::fixture::{self, Fixture, FixtureAuth, FixtureRequest};
use anyhow::Context;
use switchboard_core::avro::Codecs;
use switchboard_core::model::{CallRecord, CallStatus, Completion, Outcome};
use switchboard_tests::*;

const SETTLE: Duration = Duration::from_secs(120);
const TOKEN: &str = "calllog-query-token-0123456789abcdef0123456789";

/// A pipeline whose call log settles calls 1.5 s after their last event.
async fn pipeline(name: &str) -> anyhow::Result<(TestEnv, Pipeline)> {
    let mut env = TestEnv::new(name);
    env.set("SWITCHBOARD_CALLLOG__SETTLE_MS", "1500");
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    let pipeline = env.start_pipeline().await?;
    Ok((env, pipeline))
}

fn fixture_path(name: &str) -> std::path::PathBuf {
    fixture::fixture_files()
        .into_iter()
        .find(|path| path.ends_with(name))
        .unwrap_or_else(|| panic!("fixture {name} not found"))
}

/// A source made with the CLI for a fixture's vendor; returns its secret.
async fn create_source(env: &TestEnv, id: &str, fixture: &Fixture) -> anyhow::Result<String> {
    let settings =
        if fixture.source.settings.is_null() { "{}".to_owned() } else { fixture.source.settings.to_string() };
    let mut args =
        vec!["sources", "add", id, "--vendor", &fixture.source.vendor, "--region", &fixture.source.region];
    args.extend(["--settings", &settings, "--json"]);
    if let Some(secret) = &fixture.source.signing_secret {
        args.extend(["--signing-secret", secret]);
    }
    let created: serde_json::Value = serde_json::from_str(env.cli(&args).await?.trim())?;
    Ok(created["secret"].as_str().context("secret")?.to_owned())
}

/// Posts one fixture request as its vendor would.
async fn post(
    client: &HttpClient,
    ingress: &str,
    source: &str,
    secret: &str,
    request: &FixtureRequest,
) -> anyhow::Result<()> {
    let mut query = request.query.clone().unwrap_or_default();
    let mut headers: Vec<(String, String)> =
        request.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    match request.auth {
        FixtureAuth::Basic => headers.push(("authorization".into(), basic(source, secret))),
        FixtureAuth::Token => {
            query =
                if query.is_empty() { format!("token={secret}") } else { format!("{query}&token={secret}") }
        }
        FixtureAuth::None => {}
    }
    if let Some(content_type) = &request.content_type {
        headers.push(("content-type".into(), content_type.clone()));
    }
    let mut url = format!("{ingress}/v1/webhooks/{source}{}", request.subpath);
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let response = send(client, &request.method, &url, &refs, request.body.clone()).await?;
    anyhow::ensure!(response.status == request.expect.status, "{url}: answered {}", response.status);
    Ok(())
}

/// A fixture's source, ready to take its requests.
struct Source {
    id: String,
    secret: String,
    fixture: Fixture,
}

impl Source {
    async fn create(env: &TestEnv, id: &str, file: &str) -> anyhow::Result<Self> {
        let fixture = fixture::load(&fixture_path(file));
        let secret = create_source(env, id, &fixture).await?;
        Ok(Self { id: id.to_owned(), secret, fixture })
    }

    /// Posts the requests ingress publishes, those selected by `which` (by index).
    async fn post(&self, pipeline: &Pipeline, which: impl Fn(usize) -> bool) -> anyhow::Result<()> {
        let client = http_client();
        let ingress = pipeline.ingress_url("");
        for (i, request) in self.fixture.requests.iter().enumerate() {
            if which(i) && request.expect.published() {
                post(&client, ingress.trim_end_matches('/'), &self.id, &self.secret, request).await?;
            }
        }
        Ok(())
    }
}

/// The calls topic, read from the start until `done` holds for the records so far; returns, per
/// call key, every version seen (highest last).
async fn published(
    env: &TestEnv,
    mut done: impl FnMut(&BTreeMap<String, Vec<CallRecord>>) -> bool,
) -> anyhow::Result<BTreeMap<String, Vec<CallRecord>>> {
    let codecs = Codecs::new()?;
    let group = |records: &[(Option<Vec<u8>>, Vec<u8>)]| {
        let mut by_call: BTreeMap<String, Vec<CallRecord>> = BTreeMap::new();
        for (key, payload) in records {
            if let Ok(record) = codecs.call_record.decode(payload) {
                assert_eq!(key.as_deref(), Some(record.partition_key().as_bytes()), "keyed by call");
                by_call.entry(record.partition_key()).or_default().push(record);
            }
        }
        for versions in by_call.values_mut() {
            versions.sort_by_key(|r| r.version);
        }
        by_call
    };
    let records =
        read_topic(&env.brokers, &env.topics().calls, SETTLE, |records| done(&group(records))).await?;
    Ok(group(&records))
}

/// The latest published record of `source:call` once `ready` holds for it.
async fn latest(env: &TestEnv, key: &str, ready: impl Fn(&CallRecord) -> bool) -> anyhow::Result<CallRecord> {
    let by_call = published(env, |calls| calls.get(key).and_then(|v| v.last()).is_some_and(&ready)).await?;
    let record =
        by_call.get(key).and_then(|v| v.last()).cloned().with_context(|| format!("no record of {key}"))?;
    anyhow::ensure!(ready(&record), "{key}: the latest record is not the expected one: {record:#?}");
    Ok(record)
}

fn agent_of(record: &CallRecord) -> Option<String> {
    record.agent.as_ref().and_then(|a| a.extension.clone().or(a.number.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_between_two_agents_is_one_answered_call_with_both_legs() -> anyhow::Result<()> {
    let (env, pipeline) = pipeline("cl-transfer").await?;
    let telphin = Source::create(&env, "telphin-main", "telphin/transfer-between-agents.json").await?;
    tokio::time::sleep(Duration::from_millis(1200)).await; // ingress picks the source up
    telphin.post(&pipeline, |_| true).await?;

    let key = "telphin-main:8D4F31ADE80411F0D6F80CE415261708";
    // Telphin sends no end marker: the call is published once it has settled.
    let record = latest(&env, key, |r| r.completion.is_some()).await?;
    assert_eq!(record.completion, Some(Completion::Settled));
    assert_eq!((record.status, record.outcome), (CallStatus::Ended, Some(Outcome::Answered)));
    assert_eq!(agent_of(&record).as_deref(), Some("101"), "the first agent to answer");
    let agents: Vec<(Option<&str>, bool)> =
        record.legs.iter().map(|l| (l.agent.extension.as_deref(), l.answered)).collect();
    assert_eq!(agents, [(Some("101"), true), (Some("102"), true)], "both agents' legs, both answered");
    assert_eq!(record.from_number.as_deref(), Some("+74951234567"));

    let db = env.db().await?;
    let row = db
        .query_one("SELECT count(*), min(version), min(published_version) FROM calls WHERE source_id = 'telphin-main'", &[])
        .await?;
    let (calls, version, published): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(calls, 1, "one call, not one per leg");
    assert_eq!((record.version, published), (version, version), "the published version is the stored one");
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_all_queue_is_one_answered_call_not_a_missed_one_per_agent() -> anyhow::Result<()> {
    let (env, pipeline) = pipeline("cl-ringall").await?;
    let asterisk = Source::create(&env, "asterisk", "asterisk/inbound-queue-ring-all.json").await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    asterisk.post(&pipeline, |_| true).await?;

    // LINKEDID_END is Asterisk's end marker: no settle time needed.
    let record = latest(&env, "asterisk:1793530680.412", |r| r.completion.is_some()).await?;
    assert_eq!(record.completion, Some(Completion::EndMarker));
    assert_eq!(record.outcome, Some(Outcome::Answered));
    assert_eq!(agent_of(&record).as_deref(), Some("101"));
    let rang: Vec<(&str, bool)> =
        record.legs.iter().filter_map(|l| Some((l.agent.extension.as_deref()?, l.answered))).collect();
    assert_eq!(rang, [("101", true), ("102", false)], "102 rang and was not answered");
    let db = env.db().await?;
    let missed: i64 = db
        .query_one("SELECT count(*) FROM calls WHERE outcome <> 'answered' OR outcome IS NULL", &[])
        .await?
        .get(0);
    assert_eq!(missed, 0, "no missed call for the agent who did not answer");
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_in_the_ivr_is_one_call_abandoned_in_the_ivr() -> anyhow::Result<()> {
    let (env, pipeline) = pipeline("cl-ivr").await?;
    let asterisk = Source::create(&env, "asterisk", "asterisk/duplicate-delivery.json").await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Delivered twice over, as the fixture does and then once more.
    asterisk.post(&pipeline, |_| true).await?;
    asterisk.post(&pipeline, |_| true).await?;

    let record = latest(&env, "asterisk:1793530780.450", |r| r.completion.is_some()).await?;
    assert_eq!(record.outcome, Some(Outcome::AbandonedInIvr));
    assert_eq!(record.agent, None);
    let db = env.db().await?;
    let calllog = &pipeline.services["calllog"];
    let _ = wait_for_metric(calllog, "switchboard_calllog_duplicate_events_total", 3.0, SETTLE).await?;
    let row = db.query_one("SELECT count(*), sum(event_count)::bigint, min(outcome) FROM calls", &[]).await?;
    let (calls, events, outcome): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (calls, events, outcome.as_str()),
        (1, 3, "abandoned_in_ivr"),
        "one call of three distinct events"
    );
    let metrics = calllog.metrics().await?;
    assert!(
        metrics.contains(
            "switchboard_calllog_calls_completed_total{direction=\"inbound\",outcome=\"abandoned_in_ivr\"} 1"
        ),
        "completed calls are counted by outcome"
    );
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_recording_publishes_a_new_version_of_a_complete_call() -> anyhow::Result<()> {
    let (env, pipeline) = pipeline("cl-late").await?;
    let twilio = Source::create(&env, "twilio", "twilio/inbound-answered.json").await?;
    let last = twilio.fixture.requests.len() - 1;
    assert_eq!(
        twilio.fixture.requests[last].subpath, "/recording",
        "the fixture ends with the recording callback"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    twilio.post(&pipeline, |i| i < last).await?;

    let key = "twilio:CA1c4f7e2a9b3d4c5e6f708192a3b4c5d6";
    let first = latest(&env, key, |r| r.completion.is_some()).await?;
    assert_eq!((first.completion, first.outcome), (Some(Completion::EndMarker), Some(Outcome::Answered)));
    assert_eq!(first.recording_url, None, "no recording yet");
    let db = env.db().await?;
    wait_for_count(&db, "SELECT count(*) FROM calls WHERE published_version = version", 1, SETTLE).await?;

    twilio.post(&pipeline, |i| i == last).await?;
    let second = latest(&env, key, |r| r.recording_url.is_some()).await?;
    assert!(second.version > first.version, "a new version: {} after {}", second.version, first.version);
    // The recording's stable Switchboard link (the recordings stage keeps Twilio's URL behind it).
    assert_eq!(second.recording_id.as_deref(), Some("RE4e7a1b6c3d2e5f8a9b0c1d2e3f4a5b6c"));
    assert_eq!(second.recording_status, Some(switchboard_core::model::RecordingStatus::Ready));
    assert!(
        second
            .recording_url
            .as_deref()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:8081/v1/recordings/")),
        "{:?}",
        second.recording_url
    );
    assert_eq!((second.completion, second.completed_at), (first.completion, first.completed_at));
    let versions = published(&env, |calls| calls.get(key).is_some_and(|v| v.len() >= 2)).await?;
    let seen: Vec<i64> = versions[key].iter().map(|r| r.version).collect();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]) && seen.contains(&first.version), "{seen:?}");
    let late =
        wait_for_metric(&pipeline.services["calllog"], "switchboard_calllog_late_updates_total", 1.0, SETTLE)
            .await?;
    assert!(late >= 1.0);
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

/// `GET` against the API with the test token (or `token`).
async fn api_get(
    api: &ServiceProcess,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let auth = format!("Bearer {}", token.unwrap_or(TOKEN));
    let response = send(&http_client(), "GET", &api.url(path), &[("authorization", &auth)], "").await?;
    Ok((response.status, response.json()))
}

fn call_ids(page: &serde_json::Value) -> Vec<String> {
    page["calls"].as_array().map_or_else(Vec::new, |calls| {
        calls.iter().filter_map(|c| c["call_id"].as_str().map(str::to_owned)).collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_api_serves_the_pipelines_call_log() -> anyhow::Result<()> {
    let (env, pipeline) = pipeline("cl-api").await?;
    let api = env.start("api").await?;
    let telphin = Source::create(&env, "telphin-main", "telphin/transfer-between-agents.json").await?;
    let missed = Source::create(&env, "telphin-q", "telphin/inbound-missed-in-queue.json").await?;
    let generic = env.add_source("pbx-gb", "GB").await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    telphin.post(&pipeline, |_| true).await?;
    missed.post(&pipeline, |_| true).await?;
    let bodies = call_webhooks(&env.id, 12);
    let _ = post_all(&http_client(), &pipeline.ingress_url(""), &generic, &bodies, 4).await?;
    let db = env.db().await?;
    assert_eq!(
        wait_for_count(&db, "SELECT count(*) FROM calls WHERE completed_at IS NOT NULL", 14, SETTLE).await?,
        14
    );

    // HaloPSA's Calls tab: when, from which number, who answered with their number and email.
    let (status, page) = api_get(&api, "/v1/calls?source=pbx-gb&limit=5", None).await?;
    assert_eq!(status, 200, "{page}");
    let first = &page["calls"][0];
    assert_eq!(first["outcome"], "answered");
    assert!(first["agent"]["email"].as_str().is_some_and(|e| e.ends_with("@example.com")), "{first}");
    assert!(first["from_number"].as_str().is_some_and(|n| n.starts_with("+4420794")));

    // Every call once over keyset pages, newest first.
    let mut all = Vec::new();
    let mut path = "/v1/calls?source=pbx-gb&limit=5".to_owned();
    loop {
        let (status, page) = api_get(&api, &path, None).await?;
        assert_eq!(status, 200, "{page}");
        all.extend(call_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/calls?source=pbx-gb&limit=5&cursor={cursor}"),
            None => break,
        }
    }
    let mut distinct = all.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!((all.len(), distinct.len()), (12, 12), "{all:?}");

    // Filters on the vendor calls: a national-format number in the source's region, an agent,
    // an outcome.
    let (_, by_number) = api_get(&api, "/v1/calls?number=8%20(499)%20111-22-33&region=RU", None).await?;
    assert_eq!(call_ids(&by_number), ["6B2D1F8BC6E211F0B4D6EAC2F304B5C6"], "{by_number}");
    let (_, by_agent) = api_get(&api, "/v1/calls?agent=102&source=telphin-main", None).await?;
    assert_eq!(call_ids(&by_agent), ["8D4F31ADE80411F0D6F80CE415261708"]);
    let (_, by_outcome) =
        api_get(&api, "/v1/calls?outcome=missed,abandoned_in_queue&direction=inbound", None).await?;
    assert_eq!(call_ids(&by_outcome), ["6B2D1F8BC6E211F0B4D6EAC2F304B5C6"]);

    // One call: both agents' legs, the events behind them. Its recording (a Telphin RecID) cannot
    // be resolved, as the source has no API credentials: the recordings stage's failure is the
    // eighth event, and the call says why.
    let failed = "SELECT count(*) FROM calls WHERE call_id = '8D4F31ADE80411F0D6F80CE415261708' AND recording_status = 'failed'";
    assert_eq!(wait_for_count(&db, failed, 1, SETTLE).await?, 1);
    let (status, call) =
        api_get(&api, "/v1/calls/telphin-main/8D4F31ADE80411F0D6F80CE415261708", None).await?;
    assert_eq!(status, 200);
    let answered: Vec<bool> =
        call["legs"].as_array().context("legs")?.iter().filter_map(|l| l["answered"].as_bool()).collect();
    assert_eq!(answered, [true, true]);
    assert_eq!(call["events"].as_array().map(Vec::len), Some(8));
    assert_eq!(call["recording"]["status"], "failed");
    assert!(
        call["recording"]["error"].as_str().is_some_and(|e| e.contains("api_client_id")),
        "{}",
        call["recording"]
    );

    // Refusals.
    for bad in
        ["/v1/calls?outcome=lost", "/v1/calls?from=today", "/v1/calls?number=hello", "/v1/calls?limit=0"]
    {
        let (status, body) = api_get(&api, bad, None).await?;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, _) = api_get(&api, "/v1/calls", Some("not-the-token")).await?;
    assert_eq!(status, 401);
    let response = send(&http_client(), "GET", &api.url("/v1/calls"), &[], "").await?;
    assert_eq!(response.status, 401);

    let mut api = api;
    assert_eq!(api.terminate(Duration::from_secs(30)).await?, Some(0), "the API drains and exits 0");
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_gets_503_within_two_seconds_and_the_api_recovers() -> anyhow::Result<()> {
    let mut env = TestEnv::new("pgstall");
    let postgres = PrivatePostgres::start(&env).await?;
    env.set("SWITCHBOARD_POSTGRES__URL", postgres.url(&env.database));
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    let api = env.start("api").await?;
    let client = http_client();
    let auth = format!("Bearer {TOKEN}");
    let calls = api.url("/v1/calls");
    let before = send(&client, "GET", &calls, &[("authorization", &auth)], "").await?;
    assert_eq!(before.status, 200, "{:?}", before.body);

    postgres.pause().await?;
    // Several requests at once, as a CRM's users would send them: each answered promptly.
    let asked = std::time::Instant::now();
    let headers = [("authorization", auth.as_str())];
    let during = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all((0..8).map(|_| send(&client, "GET", &calls, &headers, ""))),
    )
    .await;
    let took = asked.elapsed();
    postgres.resume().await?;
    let during = during.map_err(|_| anyhow::anyhow!("requests hung while PostgreSQL was paused"))?;
    for response in during {
        let response = response?;
        assert_eq!(response.status, 503, "{:?}", response.body);
        assert!(response.headers.contains_key("retry-after"));
    }
    assert!(took < Duration::from_secs(2), "answered 503 in {took:?}");

    wait_until(Duration::from_secs(15), async || {
        Ok(send(&client, "GET", &calls, &[("authorization", &auth)], "").await?.status == 200)
    })
    .await?;
    let mut api = api;
    assert_eq!(api.terminate(Duration::from_secs(30)).await?, Some(0));
    postgres.stop().await;
    Ok(())
}

/// A call record larger than Kafka takes is dead-lettered with the reason and counted, once,
/// instead of being retried every lease for ever; the outbox keeps flowing (#18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_record_kafka_refuses_for_good_is_dead_lettered_and_the_outbox_flows_on() -> anyhow::Result<()>
{
    let env = TestEnv::new("cl-refused");
    env.init().await?;
    let _ = env.add_source("pbx-big", "GB").await?;
    let db = env.db().await?;
    // Two calls waiting in the outbox: one record beyond the 2 MiB Kafka takes, one ordinary.
    db.batch_execute(
        "INSERT INTO calls (source_id, call_id, vendor, direction, started_at, event_count, first_received_at)
         VALUES ('pbx-big', 'huge', 'generic', 'inbound', now(), 1, now()),
                ('pbx-big', 'small', 'generic', 'inbound', now(), 1, now())",
    )
    .await?;
    let huge = vec![7u8; 3 * 1024 * 1024];
    db.execute(
        "INSERT INTO call_outbox (source_id, call_id, version, record) VALUES ('pbx-big', 'huge', 3, $1), ('pbx-big', 'small', 1, $2)",
        &[&huge, &b"small record".to_vec()],
    )
    .await?;
    let mut calllog = env.start("calllog").await?;

    let topics = env.topics();
    let letters =
        read_topic(&env.brokers, &topics.dead_letter, SETTLE, |records| !records.is_empty()).await?;
    let codecs = Codecs::new()?;
    let [(key, payload)] = letters.as_slice() else { anyhow::bail!("one dead letter: {letters:?}") };
    let letter = codecs.dead_letter.decode(payload)?;
    assert_eq!(key.as_deref(), Some(&b"pbx-big:huge"[..]));
    assert_eq!((letter.stage.as_str(), letter.error_class.as_str()), ("calllog", "produce"));
    assert!(
        letter.reason.contains("version 3") && letter.reason.contains("refused by Kafka"),
        "{}",
        letter.reason
    );
    assert!(letter.payload.is_empty(), "the payload that was too large is left out");
    let published = read_topic(&env.brokers, &topics.calls, SETTLE, |records| !records.is_empty()).await?;
    assert_eq!(published.len(), 1, "the ordinary record is published");
    wait_until(SETTLE, async || {
        let left: i64 = db.query_one("SELECT count(*) FROM call_outbox", &[]).await?.get(0);
        let marked: i64 =
            db.query_one("SELECT count(*) FROM calls WHERE published_version > 0", &[]).await?.get(0);
        Ok(left == 0 && marked == 2)
    })
    .await
    .context("the outbox empty and both versions marked")?;
    let metrics = calllog.metrics().await?;
    assert_eq!(
        metric_series(&metrics, r#"switchboard_events_failed_total{class="produce",stage="calllog"}"#),
        1.0,
        "counted once"
    );
    assert_eq!(calllog.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}

/// Events whose writes keep running past `statement_timeout` (here a lock held elsewhere on
/// `call_events`) do not stall their partition: after a few tries the batch is written event by
/// event, and what still times out is dead-lettered with the reason; once the lock is gone, the
/// next events are written (#18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_always_time_out_are_dead_lettered_and_the_partition_flows_on() -> anyhow::Result<()> {
    let env = TestEnv::new("cl-timeout");
    env.init().await?;
    let credentials = env.add_source("pbx-t", "GB").await?;
    let mut services = Vec::new();
    for name in ["ingress", "normalizer", "matcher", "recordings"] {
        services.push(env.start(name).await?);
    }
    // The call log alone with a 300 ms statement timeout.
    let url = format!("{}?options=-c%20statement_timeout%3D300", env.database_url());
    let mut calllog = env.start_with("calllog", &[("SWITCHBOARD_POSTGRES__URL", url.as_str())]).await?;

    let mut locker = env.db().await?;
    let lock = locker.transaction().await?;
    lock.batch_execute("LOCK TABLE call_events IN ACCESS EXCLUSIVE MODE").await?;
    let client = http_client();
    let ingress = services[0].url("");
    let stuck = call_webhooks(&format!("{}-locked", env.id), 1);
    let _ = post_all(&client, &ingress, &credentials, &stuck, 1).await?;
    let letters =
        read_topic(&env.brokers, &env.topics().dead_letter, SETTLE, |r| r.len() >= stuck.len()).await?;
    let codecs = Codecs::new()?;
    assert_eq!(letters.len(), stuck.len(), "each event of the locked-out call is dead-lettered once");
    for (_, payload) in &letters {
        let letter = codecs.dead_letter.decode(payload)?;
        assert_eq!((letter.stage.as_str(), letter.error_class.as_str()), ("calllog", "rejected"));
        assert!(letter.reason.contains("statement timeout"), "{}", letter.reason);
    }
    lock.rollback().await?;

    // The partition flows on: the next call is written.
    let next = call_webhooks(&format!("{}-free", env.id), 1);
    let _ = post_all(&client, &ingress, &credentials, &next, 1).await?;
    let db = env.db().await?;
    let stored = wait_for_count(&db, "SELECT count(*) FROM call_events", next.len() as i64, SETTLE).await?;
    assert_eq!(stored, next.len() as i64, "only the call sent after the lock is in the call log");
    assert!(metric_value(&calllog.metrics().await?, "switchboard_events_failed_total") >= stuck.len() as f64);
    assert_eq!(calllog.terminate(Duration::from_secs(30)).await?, Some(0));
    for mut service in services {
        let _ = service.terminate(Duration::from_secs(30)).await?;
    }
    env.cleanup().await;
    Ok(())
}

/// A call cannot grow without bound: with `calllog.max_events_per_call` at 1,000, a call sent
/// 100,000 distinct events keeps 1,000, the other 99,000 go to the dead-letter topic with the
/// reason, a call sent after them on the same partition is written, and no batch takes a second
/// (#18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_100000_events_keeps_the_cap_and_its_partition_flows() -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use switchboard_core::model::{CallEvent, CallId, EventId, EventKind, LegId, SourceId, Vendor};

    const EVENTS: usize = 100_000;
    const CAP: usize = 1_000;
    let env = TestEnv::new("cl-cap");
    env.init().await?;
    let cap = CAP.to_string();
    let mut calllog =
        env.start_with("calllog", &[("SWITCHBOARD_CALLLOG__MAX_EVENTS_PER_CALL", &cap)]).await?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let codecs = Codecs::new()?;
    let event = |call: &str, n: usize| -> anyhow::Result<Vec<u8>> {
        let mut event = CallEvent::empty(
            SourceId::parse("pbx-cap")?,
            Vendor::Generic,
            CallId::parse(call)?,
            EventId::parse(format!("{call}-{n}"))?,
            if n == 0 { EventKind::Ringing } else { EventKind::Unknown },
            chrono::Utc::now(),
        );
        event.leg_id = Some(LegId::parse(format!("leg-{}", n % 7))?);
        Ok(codecs.call_event.encode(&event)?)
    };
    // Everything on partition 0: the small call comes after the big one on the same partition.
    let topic = env.topics().enriched;
    let mut payloads = Vec::with_capacity(EVENTS + 3);
    for n in 0..EVENTS {
        payloads.push(("big", event("big", n)?));
    }
    for n in 0..3 {
        payloads.push(("small", event("small", n)?));
    }
    let sent: Vec<_> = futures_util::stream::iter(payloads.iter())
        .map(|(key, payload)| {
            producer.send(
                FutureRecord::to(&topic).partition(0).key(*key).payload(payload),
                Duration::from_secs(60),
            )
        })
        .buffered(10_000)
        .collect()
        .await;
    anyhow::ensure!(sent.iter().all(Result::is_ok), "every event produced");

    let db = env.db().await?;
    let small = "SELECT count(*) FROM call_events WHERE call_id = 'small'";
    assert_eq!(wait_for_count(&db, small, 3, Duration::from_secs(300)).await?, 3, "the partition flows on");
    let big: i64 = db.query_one("SELECT count(*) FROM call_events WHERE call_id = 'big'", &[]).await?.get(0);
    assert_eq!(big, CAP as i64, "the call keeps its most events");
    let failed =
        wait_for_metric(&calllog, "switchboard_events_failed_total", (EVENTS - CAP) as f64, SETTLE).await?;
    assert_eq!(failed, (EVENTS - CAP) as f64, "every event beyond the cap is dead-lettered, once");
    let letters = read_topic(&env.brokers, &env.topics().dead_letter, SETTLE, |r| !r.is_empty()).await?;
    let letter = codecs.dead_letter.decode(&letters.first().context("a dead letter")?.1)?;
    assert_eq!((letter.stage.as_str(), letter.error_class.as_str()), ("calllog", "rejected"));
    assert!(letter.reason.contains("calllog.max_events_per_call"), "{}", letter.reason);

    let metrics = calllog.metrics().await?;
    let batches = metric_series(&metrics, "switchboard_processing_seconds_count{stage=\"calllog\"}");
    let within_a_second =
        metric_series(&metrics, "switchboard_processing_seconds_bucket{stage=\"calllog\",le=\"1\"}");
    assert!(
        batches > 0.0 && within_a_second == batches,
        "{within_a_second} of {batches} batches took under 1 s"
    );
    assert_eq!(calllog.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}
