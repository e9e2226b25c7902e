//! The dispatcher end to end: the real binary against a real broker, a real database and real
//! HTTP receivers on loopback. Call events are produced on the `enriched` topic as the recordings
//! stage would (and records on `calls` as the call log would), so that each test drives exactly
//! the deliveries it checks.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use switchboard_core::avro::Codecs;
use switchboard_core::model::{
    CallEvent, CallId, CallRecord, CallStatus, Completion, Direction, EventId, EventKind, Outcome,
    PhoneNumber, Region, SourceId, Vendor,
};
use switchboard_dispatcher::signature::{SigningSecret, verify};
use switchboard_tests::{ServiceProcess, TestEnv, call_webhooks, http_client, post_all, send};
use tokio::net::TcpListener;

const TOKEN: &str = "dispatcher-test-token-0123456789abcdef0123456789";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(60);

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }
}

/// A scripted answer: status and headers.
type Answer = (u16, Vec<(&'static str, String)>);

/// A receiver that records every request and answers from a script (then 200).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    addr: Option<SocketAddr>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut receiver = Receiver { addr: Some(listener.local_addr()?), ..Receiver::default() };
        let server = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let server = server.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            server.got.lock().expect("lock").push(Received {
                                at: Instant::now(),
                                headers: parts.headers,
                                body,
                            });
                            let (status, headers) =
                                server.script.lock().expect("lock").pop_front().unwrap_or((200, Vec::new()));
                            let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                            *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
                            for (name, value) in headers {
                                let _ = response.headers_mut().insert(name, value.parse().expect("header"));
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        receiver.addr = receiver.addr.take();
        Ok(receiver)
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr.expect("bound"))
    }

    fn script(&self, answers: &[(u16, &[(&'static str, &str)])]) {
        let mut script = self.script.lock().expect("lock");
        for (status, headers) in answers {
            script.push_back((*status, headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect()));
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    async fn wait_for(&self, count: usize) -> anyhow::Result<Vec<Received>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.received();
            if got.len() >= count {
                return Ok(got);
            }
            ensure!(Instant::now() < deadline, "the receiver got {} requests, not {count}", got.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Setup {
    env: TestEnv,
    dispatcher: ServiceProcess,
    producer: FutureProducer,
    codecs: Codecs,
}

fn configure(env: &mut TestEnv) {
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.set("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", "[\"127.0.0.0/8\"]");
    env.set("SWITCHBOARD_DISPATCHER__POLL_INTERVAL_MS", "50");
    env.set("SWITCHBOARD_DISPATCHER__PROFILES_REFRESH_MS", "200");
}

async fn setup(name: &str) -> anyhow::Result<Setup> {
    let mut env = TestEnv::new(name);
    configure(&mut env);
    env.init().await?;
    let dispatcher = env.start("dispatcher").await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("acks", "all")
        .create()
        .context("producer")?;
    Ok(Setup { env, dispatcher, producer, codecs: Codecs::new()? })
}

impl Setup {
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let client = http_client();
        let auth = format!("Bearer {TOKEN}");
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let response = send(&client, method, &self.dispatcher.url(path), &headers, body).await?;
        Ok((response.status, response.json()))
    }

    async fn put_profile(&self, id: &str, spec: Value) -> anyhow::Result<()> {
        let (status, body) = self.api("PUT", &format!("/v1/profiles/{id}"), Some(spec)).await?;
        ensure!(status == 201 || status == 200, "PUT profile {id}: {status} {body}");
        // Every replica (this one included) uses it within the refresh interval.
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(())
    }

    async fn produce(&self, event: &CallEvent) -> anyhow::Result<()> {
        let payload = self.codecs.call_event.encode(event)?;
        let key = event.partition_key();
        self.producer
            .send(
                FutureRecord::to(&self.env.topics().enriched).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    async fn produce_record(&self, record: &CallRecord) -> anyhow::Result<()> {
        let payload = self.codecs.call_record.encode(record)?;
        let key = record.partition_key();
        self.producer
            .send(
                FutureRecord::to(&self.env.topics().calls).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    async fn delivery(&self, id: &str) -> anyhow::Result<Value> {
        let (status, body) = self.api("GET", &format!("/v1/deliveries/{id}"), None).await?;
        ensure!(status == 200, "GET delivery {id}: {status} {body}");
        Ok(body)
    }

    async fn wait_status(&self, id: &str, want: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(delivery) = self.delivery(id).await
                && delivery["status"] == want
            {
                return Ok(delivery);
            }
            ensure!(Instant::now() < deadline, "delivery {id} never became {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the dispatcher, which must drain and exit 0 on SIGTERM, and drops the database.
    async fn done(mut self) -> anyhow::Result<()> {
        let code = self.dispatcher.terminate(Duration::from_secs(15)).await?;
        ensure!(code == Some(0), "the dispatcher exited with {code:?} after SIGTERM");
        self.env.cleanup().await;
        Ok(())
    }
}

fn answered(call: &str, direction: Direction) -> CallEvent {
    let mut event = CallEvent::empty(
        SourceId::parse("acme-pbx").expect("source"),
        Vendor::Generic,
        CallId::parse(call).expect("call"),
        EventId::parse(format!("{call}-answered")).expect("event"),
        EventKind::Answered,
        Utc::now(),
    );
    event.direction = direction;
    event.from_raw = Some("+442079460000".into());
    event.from_e164 = PhoneNumber::parse_lenient("+442079460000", Region::default());
    event.to_raw = Some("101".into());
    event
}

/// A complete record of an answered inbound call, version `version`.
fn record(call: &str, version: i64) -> CallRecord {
    let now = Utc::now();
    CallRecord {
        source_id: SourceId::parse("acme-pbx").expect("source"),
        vendor: Vendor::Generic,
        call_id: CallId::parse(call).expect("call"),
        version,
        status: CallStatus::Ended,
        outcome: Some(Outcome::Answered),
        completion: Some(Completion::EndMarker),
        completed_at: Some(now),
        direction: Direction::Inbound,
        from_number: Some("+442079460000".into()),
        to_number: Some("+442079460999".into()),
        started_at: now,
        answered_at: Some(now),
        ended_at: Some(now),
        duration_seconds: Some(65),
        talk_seconds: Some(60),
        disposition: None,
        hangup_cause: None,
        agent: None,
        contact_ids: Vec::new(),
        contact_match: None,
        responsible_agent_id: None,
        recording_url: None,
        recording_id: None,
        legs: Vec::new(),
        recording_status: None,
        recording_error: None,
        queue: None,
        wrap_up: None,
    }
}

fn profile(url: &str, schedule: &[u64]) -> Value {
    json!({
        "name": "Test CRM",
        "trigger": "call_answered",
        "criteria": [{"type": "direction", "any_of": ["inbound"]}],
        "steps": [{
            "name": "notify",
            "request": {
                "method": "POST",
                "url": url,
                "headers": [{"name": "authorization", "secret": "Bearer crm-token"}],
                "json_body": "{\"call\": {{ report_call_id }}, \"from\": {{ from_number }}}"
            }
        }],
        "retry": {"schedule_seconds": schedule},
        "signing_secrets": [SECRET]
    })
}

fn id_of(profile: &str, call: &str) -> String {
    switchboard_dispatcher::delivery_id(profile, "acme-pbx", call, &format!("{call}-answered"))
}

#[tokio::test]
async fn a_matching_call_is_delivered_rendered_and_signed_and_a_non_matching_one_is_not() -> anyhow::Result<()>
{
    let setup = setup("dsp-deliver").await?;
    let receiver = Receiver::start().await?;
    setup.put_profile("crm", profile(&receiver.url(), &[0, 1, 1])).await?;

    // The profile as stored never shows its secrets.
    let (_, stored) = setup.api("GET", "/v1/profiles/crm", None).await?;
    ensure!(stored["spec"]["signing_secrets"] == json!(["***"]), "{stored}");
    ensure!(!stored.to_string().contains("crm-token"), "{stored}");

    setup.produce(&answered("out-1", Direction::Outbound)).await?;
    setup.produce(&answered("in-1", Direction::Inbound)).await?;
    let got = receiver.wait_for(1).await?;
    let request = &got[0];
    let body: Value = serde_json::from_slice(&request.body)?;
    ensure!(body == json!({"call": "in-1", "from": "+442079460000"}), "{body}");
    ensure!(request.header("authorization") == "Bearer crm-token");
    let id = id_of("crm", "in-1");
    ensure!(request.header("webhook-id") == id, "webhook-id {}", request.header("webhook-id"));
    let secret = SigningSecret::parse(SECRET)?;
    verify(
        &secret,
        &request.header("webhook-id"),
        &request.header("webhook-timestamp"),
        &request.header("webhook-signature"),
        &request.body,
        Utc::now().timestamp(),
        300,
    )
    .map_err(|e| anyhow::anyhow!("signature: {e}"))?;
    setup.wait_status(&id, "delivered").await?;

    // The outbound call matched no criterion: nothing was scheduled for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(receiver.received().len() == 1, "only the inbound call is delivered");
    let (_, list) = setup.api("GET", "/v1/deliveries?profile=crm", None).await?;
    ensure!(list["deliveries"].as_array().map(Vec::len) == Some(1), "{list}");

    // The test endpoint renders for a call the dispatcher has seen, and sends only when asked.
    let (status, dry) =
        setup.api("POST", "/v1/profiles/crm/test", Some(json!({"call_id": "in-1", "dry_run": true}))).await?;
    ensure!(
        status == 200 && dry["request"]["body"] == "{\"call\": \"in-1\", \"from\": \"+442079460000\"}",
        "{dry}"
    );
    ensure!(dry["request"]["headers"]["authorization"] == "***", "{dry}");
    ensure!(receiver.received().len() == 1, "a dry run sends nothing");
    let (status, sent) = setup
        .api("POST", "/v1/profiles/crm/test", Some(json!({"call_id": "in-1", "dry_run": false})))
        .await?;
    ensure!(status == 200 && sent["response"]["status"] == 200, "{sent}");
    ensure!(receiver.received().len() == 2);

    // The command line manages the same profiles.
    let file = std::env::temp_dir().join(format!("sb-profile-{}.json", setup.env.id));
    std::fs::write(&file, profile(&receiver.url(), &[0]).to_string())?;
    let put = setup.env.cli(&["profiles", "put", "cli-crm", file.to_str().context("path")?]).await?;
    let _ = std::fs::remove_file(&file);
    ensure!(put.contains("created"), "{put}");
    let listed = setup.env.cli(&["profiles", "list"]).await?;
    ensure!(listed.contains("cli-crm\tenabled\tTest CRM") && listed.contains("crm\tenabled"), "{listed}");
    let deleted = setup.env.cli(&["profiles", "delete", "cli-crm"]).await?;
    ensure!(deleted.contains("deleted"), "{deleted}");

    // A template error is refused with its position.
    let mut bad = profile(&receiver.url(), &[0]);
    bad["steps"][0]["request"]["json_body"] = json!("{\"call\": {{ report_call_id }");
    let (status, refused) = setup.api("PUT", "/v1/profiles/bad", Some(bad)).await?;
    ensure!(status == 400 && refused["position"]["line"] == 1, "{status} {refused}");
    setup.done().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_webhook_reaches_the_crm_through_the_whole_pipeline() -> anyhow::Result<()> {
    let mut env = TestEnv::new("dsp-pipeline");
    configure(&mut env);
    env.set("SWITCHBOARD_CALLLOG__SETTLE_MS", "1500");
    let pipeline = env.start_pipeline().await?;
    let credentials = env.add_source("acme-pbx", "GB").await?;
    let dispatcher = env.start("dispatcher").await?;
    let setup = Setup {
        producer: ClientConfig::new().set("bootstrap.servers", &env.brokers).create().context("producer")?,
        env,
        dispatcher,
        codecs: Codecs::new()?,
    };
    let receiver = Receiver::start().await?;
    let mut spec = profile(&receiver.url(), &[0, 1, 1]);
    spec["trigger"] = json!("call_record_completed");
    spec["steps"][0]["request"]["json_body"] = json!(
        "{\"call\": {{ report_call_id }}, \"outcome\": {{ outcome }}, \"from\": {{ external_number }}}"
    );
    setup.put_profile("crm", spec).await?;

    let bodies = call_webhooks(&setup.env.id, 1);
    let _ = post_all(&http_client(), &pipeline.ingress_url(""), &credentials, &bodies, 1).await?;
    let got = receiver.wait_for(1).await?;
    let body: Value = serde_json::from_slice(&got[0].body)?;
    let call = format!("{}-call-0", setup.env.id);
    ensure!(body == json!({"call": call, "outcome": "answered", "from": "+442079400000"}), "{body}");
    verify(
        &SigningSecret::parse(SECRET)?,
        &got[0].header("webhook-id"),
        &got[0].header("webhook-timestamp"),
        &got[0].header("webhook-signature"),
        &got[0].body,
        Utc::now().timestamp(),
        300,
    )
    .map_err(|e| anyhow::anyhow!("signature: {e}"))?;
    ensure!(got[0].header("webhook-id").starts_with("dlv_"));
    pipeline.shutdown().await?;
    setup.done().await?;
    Ok(())
}

#[tokio::test]
async fn records_fire_completed_once_then_changed_and_a_re_read_schedules_nothing() -> anyhow::Result<()> {
    let setup = setup("dsp-records").await?;
    let receiver = Receiver::start().await?;
    for (id, trigger) in [("completed", "call_record_completed"), ("changed", "call_record_changed")] {
        let mut spec = profile(&receiver.url(), &[0, 1]);
        spec["trigger"] = json!(trigger);
        spec["criteria"] = json!([{"type": "duration_at_least", "seconds": 30, "measure": "talk"}]);
        spec["steps"][0]["request"]["json_body"] = json!(
            "{\"profile\": \"ID\", \"talk\": {{ talk_seconds }}, \"v\": {{ version }}}".replace("ID", id)
        );
        setup.put_profile(id, spec).await?;
    }
    // Version 3 is the call's first record, 5 a change; 3 again (a re-read) and 4 (older than
    // what was seen) change nothing.
    for version in [3, 5, 3, 4] {
        setup.produce_record(&record("rec-1", version)).await?;
    }
    let got = receiver.wait_for(2).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut bodies: Vec<Value> =
        receiver.received().iter().map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null)).collect();
    bodies.sort_by_key(|b| b["v"].as_i64());
    ensure!(
        bodies
            == [
                json!({"profile": "completed", "talk": 60, "v": 3}),
                json!({"profile": "changed", "talk": 60, "v": 5})
            ],
        "{bodies:?}"
    );
    ensure!(got[0].header("webhook-id").starts_with("dlv_"));
    let completed = switchboard_dispatcher::delivery_id("completed", "acme-pbx", "rec-1", "record:3");
    setup.wait_status(&completed, "delivered").await?;
    setup.done().await?;
    Ok(())
}

#[tokio::test]
async fn a_step_waiting_for_the_recording_runs_when_a_newer_record_brings_it() -> anyhow::Result<()> {
    let setup = setup("dsp-wait").await?;
    let receiver = Receiver::start().await?;
    let mut spec = profile(&receiver.url(), &[0, 1]);
    spec["trigger"] = json!("call_record_completed");
    spec["criteria"] = json!([]);
    spec["steps"] = json!([
        {"name": "register", "request": {"method": "POST", "url": receiver.url(),
            "json_body": "{\"call\": {{ report_call_id }}}"}},
        {"name": "attach", "when": "recording_ready", "request": {"method": "POST", "url": receiver.url(),
            "json_body": "{\"recording\": {{ recording_url }}}"}},
    ]);
    setup.put_profile("crm", spec).await?;
    let mut first = record("w-1", 3);
    first.recording_status = Some(switchboard_core::model::RecordingStatus::Pending);
    setup.produce_record(&first).await?;
    let got = receiver.wait_for(1).await?;
    let id = switchboard_dispatcher::delivery_id("crm", "acme-pbx", "w-1", "record:3");
    ensure!(got[0].header("webhook-id") == format!("{id}_register"), "{}", got[0].header("webhook-id"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(receiver.received().len() == 1, "the second step waits for the recording");

    let mut ready = record("w-1", 4);
    ready.recording_status = Some(switchboard_core::model::RecordingStatus::Ready);
    ready.recording_url = Some("https://sb.example.com/v1/recordings/r1?token=t".into());
    setup.produce_record(&ready).await?;
    let got = receiver.wait_for(2).await?;
    ensure!(got[1].header("webhook-id") == format!("{id}_attach"), "{}", got[1].header("webhook-id"));
    let body: Value = serde_json::from_slice(&got[1].body)?;
    ensure!(body == json!({"recording": "https://sb.example.com/v1/recordings/r1?token=t"}), "{body}");
    setup.wait_status(&id, "delivered").await?;
    setup.done().await?;
    Ok(())
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_then_410_disables_and_replay_delivers() -> anyhow::Result<()> {
    let setup = setup("dsp-retry").await?;
    let receiver = Receiver::start().await?;
    setup.put_profile("crm", profile(&receiver.url(), &[0, 1, 1, 1, 1])).await?;
    receiver.script(&[(500, &[]), (500, &[])]);
    setup.produce(&answered("r-1", Direction::Inbound)).await?;
    let id = id_of("crm", "r-1");
    let delivery = setup.wait_status(&id, "delivered").await?;
    let got = receiver.wait_for(3).await?;
    ensure!(got.len() == 3, "delivered once, after two failures: {}", got.len());
    ensure!(got.iter().all(|r| r.header("webhook-id") == id), "the same webhook-id on every attempt");
    let log = delivery["attempt_log"].as_array().context("attempt log")?;
    let statuses: Vec<Value> = log.iter().map(|a| a["response_status"].clone()).collect();
    ensure!(statuses == [json!(500), json!(500), json!(200)], "{delivery}");
    ensure!(log[0]["error"] == "HTTP 500", "{delivery}");

    // 410 Gone: the profile is disabled, and what comes next is kept as discarded.
    receiver.script(&[(410, &[])]);
    setup.produce(&answered("r-2", Direction::Inbound)).await?;
    setup.wait_status(&id_of("crm", "r-2"), "failed").await?;
    let (_, profile) = setup.api("GET", "/v1/profiles/crm", None).await?;
    ensure!(profile["state"] == "disabled", "{profile}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    setup.produce(&answered("r-3", Direction::Inbound)).await?;
    setup.wait_status(&id_of("crm", "r-3"), "discarded").await?;
    ensure!(receiver.received().len() == 4, "nothing is sent to a disabled profile");

    // Fixed on the CRM's side: enable, replay, and both arrive.
    let (status, _) = setup.api("POST", "/v1/profiles/crm/enable", None).await?;
    ensure!(status == 200);
    for which in ["discarded", "failed"] {
        let (status, body) =
            setup.api("POST", &format!("/v1/profiles/crm/replay?status={which}"), None).await?;
        ensure!(status == 200 && body["replayed"] == 1, "{which}: {status} {body}");
    }
    setup.wait_status(&id_of("crm", "r-2"), "delivered").await?;
    setup.wait_status(&id_of("crm", "r-3"), "delivered").await?;
    setup.done().await?;
    Ok(())
}

#[tokio::test]
async fn a_calls_deliveries_to_one_profile_stay_in_order_through_retries() -> anyhow::Result<()> {
    let setup = setup("dsp-order").await?;
    let receiver = Receiver::start().await?;
    setup.put_profile("crm", profile(&receiver.url(), &[0, 1, 1])).await?;
    receiver.script(&[(500, &[])]);
    // Two answered events of one call (two legs answered): the second waits for the first.
    let first = answered("o-1", Direction::Inbound);
    let mut second = answered("o-1", Direction::Inbound);
    second.event_id = EventId::parse("o-1-answered-again").expect("event");
    setup.produce(&first).await?;
    setup.produce(&second).await?;
    let got = receiver.wait_for(3).await?;
    let ids: Vec<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    let second_id = switchboard_dispatcher::delivery_id("crm", "acme-pbx", "o-1", "o-1-answered-again");
    ensure!(ids == [id_of("crm", "o-1"), id_of("crm", "o-1"), second_id], "{ids:?}");
    setup.done().await?;
    Ok(())
}

#[tokio::test]
async fn a_profiles_rate_limit_spaces_its_requests() -> anyhow::Result<()> {
    let setup = setup("dsp-rate").await?;
    let receiver = Receiver::start().await?;
    let mut spec = profile(&receiver.url(), &[0]);
    spec["rate_limit"] = json!({"requests": 2, "per_seconds": 2});
    setup.put_profile("crm", spec).await?;
    for n in 0..4 {
        setup.produce(&answered(&format!("rl-{n}"), Direction::Inbound)).await?;
    }
    let got = receiver.wait_for(4).await?;
    let gap = got[2].at.duration_since(got[0].at);
    ensure!(gap >= Duration::from_millis(1900), "the third request waited for the window: {gap:?}");
    setup.done().await?;
    Ok(())
}

#[tokio::test]
async fn retry_after_of_a_429_is_honoured() -> anyhow::Result<()> {
    let setup = setup("dsp-429").await?;
    let receiver = Receiver::start().await?;
    setup.put_profile("crm", profile(&receiver.url(), &[0, 0, 0])).await?;
    receiver.script(&[(429, &[("retry-after", "2")])]);
    setup.produce(&answered("t-1", Direction::Inbound)).await?;
    setup.wait_status(&id_of("crm", "t-1"), "delivered").await?;
    let got = receiver.wait_for(2).await?;
    let gap = got[1].at.duration_since(got[0].at);
    ensure!(gap >= Duration::from_millis(1900), "the second attempt waited for Retry-After: {gap:?}");
    setup.done().await?;
    Ok(())
}

#[tokio::test]
async fn a_target_outside_the_allowed_networks_is_a_failed_attempt_with_the_reason() -> anyhow::Result<()> {
    let mut setup = setup("dsp-ssrf").await?;
    let receiver = Receiver::start().await?;
    setup.put_profile("crm", profile(&receiver.url(), &[0])).await?;
    // A private target is refused when saved, with the reason.
    let (status, body) =
        setup.api("PUT", "/v1/profiles/private", Some(profile("http://10.1.2.3/hook", &[0]))).await?;
    ensure!(status == 400 && body["message"].as_str().unwrap_or("").contains("private"), "{status} {body}");
    // The operator narrows the allowed networks: the loopback CRM is refused on the next attempt.
    setup.dispatcher.terminate(Duration::from_secs(15)).await?;
    setup.dispatcher =
        setup.env.start_with("dispatcher", &[("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", "[]")]).await?;
    setup.produce(&answered("s-1", Direction::Inbound)).await?;
    let delivery = setup.wait_status(&id_of("crm", "s-1"), "failed").await?;
    let error = delivery["attempt_log"][0]["error"].as_str().unwrap_or_default().to_owned();
    ensure!(error.contains("SSRF") && error.contains("loopback"), "{delivery}");
    ensure!(receiver.received().is_empty(), "nothing reached the receiver");
    setup.done().await?;
    Ok(())
}

#[tokio::test]
async fn a_dispatcher_killed_mid_stream_loses_nothing() -> anyhow::Result<()> {
    let mut setup = setup("dsp-kill").await?;
    let receiver = Receiver::start().await?;
    // A 2 s timeout: deliveries the killed replica was handed come back when their lease of
    // 10 + 2 + 10 s lapses (`worker::handoff_lease`), well within the wait.
    let mut spec = profile(&receiver.url(), &[0, 1, 1, 1, 1]);
    spec["retry"]["timeout_seconds"] = json!(2);
    setup.put_profile("crm", spec).await?;
    let calls: Vec<String> = (0..40).map(|i| format!("k-{i}")).collect();
    for (i, call) in calls.iter().enumerate() {
        setup.produce(&answered(call, Direction::Inbound)).await?;
        if i == 20 {
            setup.dispatcher.kill_hard().await?;
        }
    }
    setup.dispatcher = setup.env.start("dispatcher").await?;
    let expected: BTreeSet<String> = calls.iter().map(|c| id_of("crm", c)).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let seen: BTreeSet<String> = receiver.received().iter().map(|r| r.header("webhook-id")).collect();
        ensure!(seen.is_subset(&expected), "only expected ids arrive");
        if seen == expected {
            break;
        }
        ensure!(Instant::now() < deadline, "{} of {} deliveries arrived", seen.len(), expected.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    setup.done().await?;
    Ok(())
}

/// A record the dispatcher cannot read goes to the dead-letter topic with the reason, and the
/// records around it are delivered as usual.
#[tokio::test]
async fn an_unreadable_record_is_dead_lettered_with_the_reason() -> anyhow::Result<()> {
    let setup = setup("dsp-poison").await?;
    let receiver = Receiver::start().await?;
    setup.put_profile("crm", profile(&receiver.url(), &[0])).await?;
    let topics = setup.env.topics();
    setup
        .producer
        .send(
            FutureRecord::to(&topics.calls).key("acme-pbx:garbage").payload(&b"not avro at all"[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    setup.produce(&answered("after-poison", Direction::Inbound)).await?;
    let _ = receiver.wait_for(1).await?;
    let letters = switchboard_tests::read_topic(&setup.env.brokers, &topics.dead_letter, WAIT, |records| {
        !records.is_empty()
    })
    .await?;
    let (key, payload) = letters.first().context("a dead letter")?;
    let letter = setup.codecs.dead_letter.decode(payload)?;
    ensure!(letter.stage == "dispatcher" && letter.error_class == "decode", "{letter:?}");
    ensure!(letter.reason.contains("not a readable call record"), "{}", letter.reason);
    ensure!(letter.topic == topics.calls && letter.payload == b"not avro at all", "{letter:?}");
    ensure!(key.as_deref() == Some(&b"acme-pbx:garbage"[..]), "{key:?}");
    setup.done().await?;
    Ok(())
}

/// A user picks a CRM by name and gives its settings: the connector's profile is stored as if
/// written by hand, its secrets sealed and shown as `***`; an unknown name or bad settings are a
/// 400 that says why (#15).
#[tokio::test]
async fn a_profile_is_created_from_a_connector_by_name() -> anyhow::Result<()> {
    let setup = setup("dsp-connector").await?;
    let (status, body) = setup.api("GET", "/v1/connectors", None).await?;
    ensure!(
        status == 200 && body["connectors"] == json!(["hubspot", "pipedrive", "bitrix24", "amocrm"]),
        "{body}"
    );

    let settings = json!({"webhook_url": "https://acme.bitrix24.ru/rest/1/w3bh00kt0ken/",
        "users": {"users": {"101": "42"}, "default_user": "1"}});
    let choice = json!({"connector": "bitrix24", "settings": settings});
    let (status, stored) = setup.api("PUT", "/v1/profiles/bx/connector", Some(choice.clone())).await?;
    ensure!(status == 201, "{status} {stored}");
    let expected = switchboard_dispatcher::connectors::by_name("bitrix24", settings)?;
    ensure!(
        stored["spec"]["steps"] == switchboard_dispatcher::store::redacted(&expected)["steps"],
        "{stored}"
    );
    ensure!(stored["spec"]["name"] == "Bitrix24 telephony", "{stored}");
    let (status, shown) = setup.api("GET", "/v1/profiles/bx", None).await?;
    ensure!(status == 200 && !shown.to_string().contains("w3bh00kt0ken"), "{shown}");
    let (status, _) = setup.api("PUT", "/v1/profiles/bx/connector", Some(choice)).await?;
    ensure!(status == 200, "saved again: replaced, {status}");

    let (status, body) =
        setup.api("PUT", "/v1/profiles/x/connector", Some(json!({"connector": "salesforce"}))).await?;
    ensure!(status == 400 && body["message"].as_str().unwrap_or("").contains("hubspot"), "{body}");
    let no_user = json!({"connector": "bitrix24", "settings": {"webhook_url": "https://acme.bitrix24.ru/rest/1/t/", "users": {}}});
    let (status, body) = setup.api("PUT", "/v1/profiles/x/connector", Some(no_user)).await?;
    ensure!(status == 400 && body["message"].as_str().unwrap_or("").contains("default user"), "{body}");
    let plain = json!({"connector": "pipedrive", "settings": {"base_url": "http://acme.pipedrive.com", "api_token": "t"}});
    let (status, body) = setup.api("PUT", "/v1/profiles/x/connector", Some(plain)).await?;
    ensure!(status == 400 && body["message"].as_str().unwrap_or("").contains("https"), "{body}");
    let (status, _) = setup.api("GET", "/v1/profiles/x", None).await?;
    ensure!(status == 404, "nothing stored for a refused connector");
    setup.done().await?;
    Ok(())
}
