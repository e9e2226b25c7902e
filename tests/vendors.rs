//! Every vendor fixture (`tests/fixtures/<vendor>/*.json`) end to end: a source per fixture made
//! with the CLI (vendor, region, signing secret, settings), every request posted to the real
//! ingress with the vendor's own authentication, the answer checked, and the events read back from
//! the normalized topic, the dead letters from the dead-letter topic and the rows from the call
//! log. The adapter tests run the same fixtures without Kafka (`libs/adapters/tests`).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::fixture::{self, Fixture, FixtureAuth};
use anyhow::Context;
use switchboard_core::avro::Codecs;
use switchboard_core::model::CallEvent;
use switchboard_tests::*;

const SETTLE: Duration = Duration::from_secs(120);

struct Case {
    name: String,
    fixture: Fixture,
    source: String,
    secret: String,
}

impl Case {
    fn published(&self) -> usize {
        self.fixture.requests.iter().filter(|r| r.expect.published()).count()
    }

    fn dead_letters(&self) -> usize {
        self.fixture
            .requests
            .iter()
            .filter(|r| r.expect.published() && r.expect.dead_letter.is_some())
            .count()
    }
}

async fn create_source(env: &TestEnv, id: &str, fixture: &Fixture) -> anyhow::Result<String> {
    let settings =
        if fixture.source.settings.is_null() { "{}".to_owned() } else { fixture.source.settings.to_string() };
    let mut args = vec![
        "sources",
        "add",
        id,
        "--vendor",
        &fixture.source.vendor,
        "--region",
        &fixture.source.region,
        "--settings",
        &settings,
        "--json",
    ];
    if let Some(secret) = &fixture.source.signing_secret {
        args.extend(["--signing-secret", secret]);
    }
    let out = env.cli(&args).await?;
    let created: serde_json::Value = serde_json::from_str(out.trim())?;
    Ok(created["secret"].as_str().context("secret")?.to_owned())
}

/// Posts every request of a case as its vendor would and checks each answer.
async fn post_case(client: &HttpClient, ingress: &str, case: &Case) -> anyhow::Result<()> {
    for (i, request) in case.fixture.requests.iter().enumerate() {
        let mut query = request.query.clone().unwrap_or_default();
        let mut headers: Vec<(String, String)> =
            request.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        match request.auth {
            FixtureAuth::Basic => headers.push(("authorization".into(), basic(&case.source, &case.secret))),
            FixtureAuth::Token => {
                let token = format!("token={}", case.secret);
                query = if query.is_empty() { token } else { format!("{query}&{token}") };
            }
            FixtureAuth::None => {}
        }
        if let Some(content_type) = &request.content_type {
            headers.push(("content-type".into(), content_type.clone()));
        }
        let mut url = format!("{ingress}/v1/webhooks/{}{}", case.source, request.subpath);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let header_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let response = send(client, &request.method, &url, &header_refs, request.body.clone()).await?;
        let context = format!("{} request {i}", case.name);
        assert_eq!(
            response.status,
            request.expect.status,
            "{context}: answer {}",
            String::from_utf8_lossy(&response.body)
        );
        if let Some(body) = &request.expect.body {
            assert_eq!(String::from_utf8_lossy(&response.body), body.as_str(), "{context}: reply body");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vendor_fixture_runs_through_the_real_pipeline() -> anyhow::Result<()> {
    let env = TestEnv::new("vendors");
    env.init().await?;
    let mut cases = Vec::new();
    for (i, path) in fixture::fixture_files().iter().enumerate() {
        let fixture = fixture::load(path);
        let source = format!("f{i}");
        let secret = create_source(&env, &source, &fixture).await?;
        let name =
            path.strip_prefix(path.ancestors().nth(3).unwrap_or(path)).unwrap_or(path).display().to_string();
        cases.push(Case { name, fixture, source, secret });
    }
    let pipeline = env.start_pipeline().await?;
    let client = http_client();
    let ingress = pipeline.ingress_url("");
    for case in &cases {
        post_case(&client, ingress.trim_end_matches('/'), case).await?;
    }

    // The normalized topic: every case's distinct events, in order per call.
    let codecs = Codecs::new()?;
    let decode = |payload: &[u8]| codecs.call_event.decode(payload).ok();
    let expected_events: usize = cases.iter().map(|c| c.fixture.events.len()).sum();
    let records = read_topic(&env.brokers, &env.topics().normalized, SETTLE, |records| {
        let distinct: std::collections::HashSet<(String, String)> = records
            .iter()
            .filter_map(|(_, payload)| decode(payload))
            .map(|e| (e.source_id.to_string(), e.event_id.to_string()))
            .collect();
        distinct.len() >= expected_events
    })
    .await?;
    let mut by_source: BTreeMap<String, Vec<CallEvent>> = BTreeMap::new();
    for (_, payload) in &records {
        let event = decode(payload).context("a normalized record that does not decode")?;
        by_source.entry(event.source_id.to_string()).or_default().push(event);
    }
    let mut failures = Vec::new();
    for case in &cases {
        let events = fixture::distinct(by_source.remove(&case.source).unwrap_or_default());
        // Across partitions only each call's order is kept; compare call by call.
        let mut actual = events.clone();
        let mut expected = case.fixture.events.clone();
        let call_of = |e: &BTreeMap<String, serde_json::Value>| {
            e.get("call_id").and_then(|v| v.as_str()).unwrap_or_default().to_owned()
        };
        actual.sort_by_key(|e| e.call_id.to_string());
        expected.sort_by_key(call_of);
        if let Err(error) = fixture::compare(&actual, &expected, None) {
            failures.push(format!("{}: {error}", case.name));
        }
    }

    // Dead letters: the requests the adapter cannot read, with their reason.
    let expected_dead: usize = cases.iter().map(Case::dead_letters).sum();
    if expected_dead > 0 {
        let dead =
            read_topic(&env.brokers, &env.topics().dead_letter, SETTLE, |r| r.len() >= expected_dead).await?;
        for case in cases.iter().filter(|c| c.dead_letters() > 0) {
            let prefix = case.source.as_bytes();
            let reasons: Vec<String> = dead
                .iter()
                .filter(|(key, _)| {
                    key.as_deref().is_some_and(|k| k == prefix || k.starts_with(&[prefix, b":"].concat()))
                })
                .filter_map(|(_, payload)| codecs.dead_letter.decode(payload).ok())
                .map(|d| d.reason)
                .collect();
            for request in case.fixture.requests.iter().filter(|r| r.expect.published()) {
                if let Some(reason) = &request.expect.dead_letter
                    && !reasons.iter().any(|r| r.contains(reason.as_str()))
                {
                    failures
                        .push(format!("{}: no dead letter containing {reason:?} in {reasons:?}", case.name));
                }
            }
        }
    }

    // The call log holds exactly the distinct events of each case (besides the recordings stage's
    // own events about the recordings they name, `recording:<id>:ready|failed`).
    let db = env.db().await?;
    let vendor_events = "SELECT count(*) FROM call_events WHERE event_id NOT LIKE 'recording:%'";
    let stored = wait_for_count(&db, vendor_events, expected_events as i64, SETTLE).await?;
    assert_eq!(stored, expected_events as i64, "every distinct event reaches the call log once");
    for case in &cases {
        let row = db.query_one(&format!("{vendor_events} AND source_id = $1"), &[&case.source]).await?;
        let count: i64 = row.get(0);
        if count != case.fixture.events.len() as i64 {
            failures.push(format!(
                "{}: {count} call-log events, expected {}",
                case.name,
                case.fixture.events.len()
            ));
        }
    }
    let published: usize = cases.iter().map(Case::published).sum();
    assert!(published > 0, "the fixtures publish something");

    pipeline.shutdown().await?;
    env.cleanup().await;
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
    Ok(())
}

/// Whether `needle` occurs anywhere in `haystack` (an Avro record keeps strings and bytes as is).
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Credentials that authenticate a request reach no topic: Aircall's token inside the body is
/// redacted (raw and dead-letter topics), and a URL token whose name is percent-encoded
/// (`?%74oken=`) is removed from the stored query like a plain one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reach_no_topic() -> anyhow::Result<()> {
    const AIRCALL_TOKEN: &str = "45f1b7ac3c1e4a0bb3a9c2d7e8f60a12";
    const REDACTED: &str = "[redacted]";
    let env = TestEnv::new("credentials");
    env.init().await?;
    let args = ["sources", "add", "air", "--vendor", "aircall", "--region", "FR", "--json"];
    let _ = env.cli(&[&args[..], &["--signing-secret", AIRCALL_TOKEN]].concat()).await?;
    let generic = env.add_source("gen", "GB").await?;
    let mut ingress = env.start("ingress").await?;
    let mut normalizer = env.start("normalizer").await?;
    let client = http_client();
    let json = ("content-type", "application/json");

    // Aircall: a call event, and an envelope without `event` that the normalizer dead-letters.
    let now = chrono::Utc::now().timestamp();
    let call = format!(
        r#"{{"resource": "call", "event": "call.created", "timestamp": {now}, "token": "{AIRCALL_TOKEN}",
            "data": {{"id": 4242, "direction": "inbound", "raw_digits": "+33 6 12 34 56 78"}}}}"#
    );
    let poison = format!(r#"{{"resource": "call", "token": "{AIRCALL_TOKEN}", "data": {{"id": 4243}}}}"#);
    for body in [&call, &poison] {
        let response = send(&client, "POST", &ingress.url("/v1/webhooks/air"), &[json], body.clone()).await?;
        assert_eq!(response.status, 202, "{}", String::from_utf8_lossy(&response.body));
    }
    // The generic source's secret under an encoded parameter name: accepted, so it must go.
    let url = ingress.url(&format!("/v1/webhooks/gen?a=1&%74oken={}&b=2", generic.secret));
    let response = send(&client, "POST", &url, &[json], r#"{"call_id": "c1", "event": "ringing"}"#).await?;
    assert_eq!(response.status, 202, "{}", String::from_utf8_lossy(&response.body));

    let codecs = Codecs::new()?;
    let raw = read_topic(&env.brokers, &env.topics().raw, Duration::from_secs(60), |r| r.len() >= 3).await?;
    assert_eq!(raw.len(), 3);
    for (_, payload) in &raw {
        assert!(!contains(payload, AIRCALL_TOKEN), "Aircall's token on the raw topic");
        assert!(!contains(payload, &generic.secret), "the URL token on the raw topic");
        let record = codecs.raw_webhook.decode(payload)?;
        match record.source_id.as_str() {
            "gen" => {
                assert_eq!(record.query.as_deref(), Some("a=1&b=2"), "neither the secret nor the parameter")
            }
            _ => assert!(contains(&record.body, REDACTED), "{}", String::from_utf8_lossy(&record.body)),
        }
    }
    let stored_call = raw
        .iter()
        .filter_map(|(_, payload)| codecs.raw_webhook.decode(payload).ok())
        .find(|r| contains(&r.body, "call.created"))
        .context("the call's raw record")?;
    assert_eq!(stored_call.body, call.replace(AIRCALL_TOKEN, REDACTED).as_bytes(), "only the token changes");

    // The normalizer reads the redacted body, and dead-letters the poison without the token.
    let normalized =
        read_topic(&env.brokers, &env.topics().normalized, Duration::from_secs(60), |r| r.len() >= 2).await?;
    let calls: Vec<String> = normalized
        .iter()
        .filter_map(|(_, payload)| codecs.call_event.decode(payload).ok())
        .map(|e| e.call_id.to_string())
        .collect();
    assert!(calls.iter().any(|c| c == "4242"), "{calls:?}");
    let dead =
        read_topic(&env.brokers, &env.topics().dead_letter, Duration::from_secs(60), |r| !r.is_empty())
            .await?;
    assert_eq!(dead.len(), 1);
    let letter = codecs.dead_letter.decode(&dead[0].1)?;
    assert!(letter.reason.contains("event"), "{}", letter.reason);
    assert!(!contains(&dead[0].1, AIRCALL_TOKEN), "Aircall's token on the dead-letter topic");

    assert_eq!(ingress.terminate(Duration::from_secs(30)).await?, Some(0));
    assert_eq!(normalizer.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}
