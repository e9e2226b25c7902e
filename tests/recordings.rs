//! Recordings end to end: Telphin webhooks naming recordings (`RecID`) posted to the real
//! ingress, through every stage, the recordings service asking a fake Telphin API (started here,
//! on loopback: OAuth client-credentials tokens and `storage_url` lookups, each scripted per
//! recording), the call log marking each call's recording, and the api opening the stable links.
//!
//! - a recording id becomes a stable link that redirects, on every opening, to a fresh vendor link
//!   (one OAuth token per process); a vendor URL becomes a stable link at once;
//! - forged, altered, foreign and expired tokens are refused with 403 (tokens computed here,
//!   independently, from the documented format);
//! - a recording late by several attempts, and a vendor answering 503, are retried until ready; a
//!   recording the vendor never has fails after the retry budget, and its call says why;
//! - a recording that waits (its vendor slow to answer, then its next attempt far away) holds up
//!   no other call;
//! - without a usable link key the recordings service exits 64 before binding its port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use switchboard_core::avro::Codecs;
use switchboard_core::model::{EventKind, RecordingStatus};
use switchboard_tests::*;

const WAIT: Duration = Duration::from_secs(90);
const API_TOKEN: &str = "recordings-test-token-0123456789abcdef0123456789";
const CLIENT_ID: &str = "switchboard-app";
const CLIENT_SECRET: &str = "telphin-app-secret";

/// What the fake Telphin saw and issued.
#[derive(Debug, Default)]
struct Counters {
    tokens_issued: Vec<String>,
    /// Lookups per RecID, in order.
    lookups: HashMap<String, usize>,
}

/// A fake Telphin API: `POST /oauth/token` (client credentials) and
/// `GET /api/ver1.0/client/@me/record/{RecID}/storage_url/`, answering by the RecID's name:
/// `ready-*` a link at once; `late<N>-*` 404 for N lookups, then a link; `flaky<N>-*` 503 for N
/// lookups, then a link; `never-*` always 404; `slow-*` a 404 after 15 s. Every link carries
/// the lookup's number, so a fresh one can be told from an old one.
struct FakeTelphin {
    addr: SocketAddr,
    counters: Arc<Mutex<Counters>>,
}

fn json_response(status: u16, body: String) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// The N in `late3-x`.
fn scripted(rec: &str, prefix: &str) -> Option<usize> {
    rec.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

impl FakeTelphin {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters: Arc<Mutex<Counters>> = Arc::default();
        let shared = counters.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counters = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let counters = counters.clone();
                        async move { Ok::<_, std::convert::Infallible>(Self::answer(req, &counters).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, counters })
    }

    async fn answer(req: http::Request<Incoming>, counters: &Mutex<Counters>) -> http::Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let authorization =
            req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let method = req.method().clone();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if path == "/oauth/token" && method == http::Method::POST {
            let form: HashMap<String, String> = form_urlencoded_pairs(&body);
            let valid = form.get("grant_type").map(String::as_str) == Some("client_credentials")
                && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
            if !valid {
                return json_response(401, r#"{"error":"invalid_client"}"#.into());
            }
            let mut counters = counters.lock().expect("counters");
            let token = format!("tok-{}", counters.tokens_issued.len() + 1);
            counters.tokens_issued.push(token.clone());
            return json_response(
                200,
                format!(r#"{{"access_token":"{token}","token_type":"bearer","expires_in":3600}}"#),
            );
        }
        let Some(rec) = path
            .strip_prefix("/api/ver1.0/client/@me/record/")
            .and_then(|rest| rest.strip_suffix("/storage_url/"))
            .map(str::to_owned)
        else {
            return json_response(404, r#"{"message":"no such endpoint"}"#.into());
        };
        let lookup = {
            let mut counters = counters.lock().expect("counters");
            let issued = authorization
                .strip_prefix("Bearer ")
                .is_some_and(|token| counters.tokens_issued.iter().any(|t| t == token));
            if !issued {
                return json_response(401, r#"{"message":"invalid token"}"#.into());
            }
            let count = counters.lookups.entry(rec.clone()).or_default();
            *count += 1;
            *count
        };
        let link = || {
            json_response(200, format!(r#"{{"record_url":"https://storage.example/{rec}?lookup={lookup}"}}"#))
        };
        if rec.starts_with("ready-") {
            return link();
        }
        if rec.starts_with("slow-") {
            tokio::time::sleep(Duration::from_secs(15)).await;
            return json_response(404, "{}".into());
        }
        if let Some(n) = scripted(&rec, "late") {
            return if lookup > n {
                link()
            } else {
                json_response(404, r#"{"message":"record not found"}"#.into())
            };
        }
        if let Some(n) = scripted(&rec, "flaky") {
            return if lookup > n { link() } else { json_response(503, "service unavailable".into()) };
        }
        json_response(404, r#"{"message":"record not found"}"#.into())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn lookups(&self, rec: &str) -> usize {
        self.counters.lock().expect("counters").lookups.get(rec).copied().unwrap_or(0)
    }

    fn tokens_issued(&self) -> usize {
        self.counters.lock().expect("counters").tokens_issued.len()
    }
}

fn form_urlencoded_pairs(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%40", "@").replace('+', " ")))
        .collect()
}

/// A pipeline plus the api, whose address is the links' public URL, with fast retries.
async fn world(name: &str, settings: &[(&str, &str)]) -> anyhow::Result<(TestEnv, Pipeline, ServiceProcess)> {
    let mut env = TestEnv::new(name);
    env.set("SWITCHBOARD_CALLLOG__SETTLE_MS", "1500");
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{API_TOKEN}\"]"));
    env.set("SWITCHBOARD_RECORDINGS__RETRY_INITIAL_MS", "200");
    env.set("SWITCHBOARD_RECORDINGS__RETRY_MAX_MS", "400");
    env.set("SWITCHBOARD_RECORDINGS__MAX_ATTEMPTS", "5");
    env.set("SWITCHBOARD_RECORDINGS__POLL_INTERVAL_MS", "100");
    env.set("SWITCHBOARD_RECORDINGS__RESOLVE_TIMEOUT_MS", "1000");
    for (key, value) in settings {
        env.set(key, *value);
    }
    env.init().await?;
    let api = env.start("api").await?;
    env.set("SWITCHBOARD_RECORDINGS__PUBLIC_URL", api.url(""));
    let pipeline = env.start_pipeline().await?;
    Ok((env, pipeline, api))
}

/// A Telphin source whose recordings API is `telphin`; returns its URL token.
async fn telphin_source(env: &TestEnv, id: &str, telphin: &FakeTelphin) -> anyhow::Result<String> {
    let settings = serde_json::json!({
        "recording_api_url": telphin.url("/api/ver1.0"),
        "api_token_url": telphin.url("/oauth/token"),
    })
    .to_string();
    let out = env
        .cli(&[
            "sources",
            "add",
            id,
            "--vendor",
            "telphin",
            "--region",
            "RU",
            "--settings",
            &settings,
            "--api-client-id",
            CLIENT_ID,
            "--api-client-secret",
            CLIENT_SECRET,
            "--json",
        ])
        .await?;
    let created: serde_json::Value = serde_json::from_str(out.trim())?;
    Ok(created["secret"].as_str().context("secret")?.to_owned())
}

/// Posts a whole Telphin call whose agent leg's hangup names recording `rec`.
async fn telphin_call(
    pipeline: &Pipeline,
    source: &str,
    secret: &str,
    call: &str,
    rec: &str,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_micros();
    let leg = format!("200101-{call}");
    let common = format!(
        "CallID={call}&SubCallID={leg}&CallerIDNum=74951234567&CalledDID=74957775533\
         &CalledExtension=3827%2A101%40sipproxy.telphin.ru&CallFlow=in"
    );
    let bodies = [
        format!("EventType=dial-in&{common}&CallStatus=CALLING&EventTime={}", now - 60_000_000),
        format!("EventType=answer&{common}&CallStatus=ANSWER&EventTime={}", now - 55_000_000),
        format!("EventType=hangup&{common}&CallStatus=ANSWER&EventTime={now}&Duration=55&RecID={rec}"),
    ];
    let url = format!("{}/v1/webhooks/{source}?token={secret}", pipeline.ingress_url(""));
    for body in bodies {
        let response = send(
            &http_client(),
            "POST",
            &url,
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await?;
        anyhow::ensure!(response.status == 200, "Telphin webhook answered {}", response.status);
    }
    Ok(())
}

/// `(recording_status, recording_error, recording_url)` of a call.
async fn call_recording(
    db: &tokio_postgres::Client,
    call: &str,
) -> anyhow::Result<(Option<String>, Option<String>, Option<String>)> {
    let row = db
        .query_opt(
            "SELECT recording_status, recording_error, recording_url FROM calls WHERE call_id = $1",
            &[&call],
        )
        .await?;
    Ok(row.map_or((None, None, None), |r| (r.get(0), r.get(1), r.get(2))))
}

/// Waits until the call's recording status is `status`; returns the row.
async fn wait_for_recording(
    db: &tokio_postgres::Client,
    call: &str,
    status: &str,
) -> anyhow::Result<(Option<String>, Option<String>, Option<String>)> {
    let mut last = (None, None, None);
    let found = wait_until(WAIT, async || {
        last = call_recording(db, call).await?;
        Ok(last.0.as_deref() == Some(status))
    })
    .await;
    found.with_context(|| format!("call {call}: recording still {last:?}"))?;
    Ok(last)
}

/// A token in the documented format, computed here rather than by Switchboard's code.
fn token(key: &str, id: &str, expires: i64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(format!("switchboard-recording-link\n{id}\n{expires}").as_bytes());
    format!("v1.{expires}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Opens `link` without any credentials but its own, as a CRM user's browser would.
async fn open(link: &str) -> anyhow::Result<HttpResponse> {
    get(&http_client(), link).await
}

fn location(response: &HttpResponse) -> Option<String> {
    response.headers.get("location").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_id_becomes_a_stable_link_that_redirects_to_a_fresh_vendor_link() -> anyhow::Result<()> {
    let telphin = FakeTelphin::start().await?;
    let (env, pipeline, api) = world("rec-link", &[]).await?;
    let secret = telphin_source(&env, "telphin-rec", &telphin).await?;
    let generic = env.add_source("pbx", "GB").await?;
    tokio::time::sleep(Duration::from_millis(1200)).await; // ingress picks the sources up

    telphin_call(&pipeline, "telphin-rec", &secret, "CALLREADY1", "ready-1").await?;
    let direct = r#"{"call_id":"direct-1","event":"hangup","direction":"inbound","from":"+442079460000",
                     "recording_url":"https://rec.example.com/direct-1.mp3?sig=abc"}"#;
    let response = post_webhook(&http_client(), &pipeline.ingress_url(""), &generic, direct).await?;
    assert_eq!(response.status, 202);

    let db = env.db().await?;
    let (_, error, link) = wait_for_recording(&db, "CALLREADY1", "ready").await?;
    assert_eq!(error, None);
    let link = link.context("a recording link")?;
    let prefix = format!("{}/v1/recordings/", api.url(""));
    assert!(link.starts_with(&prefix) && link.contains("?token=v1."), "{link}");
    let id = link[prefix.len()..].split('?').next().context("id")?.to_owned();

    // Each opening asks Telphin again: the resolver's lookup was the first.
    let first = open(&link).await?;
    assert_eq!(first.status, 302, "{:?}", first.body);
    assert_eq!(location(&first).as_deref(), Some("https://storage.example/ready-1?lookup=2"));
    assert_eq!(first.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let second = open(&link).await?;
    assert_eq!(location(&second).as_deref(), Some("https://storage.example/ready-1?lookup=3"));
    assert_eq!(telphin.tokens_issued(), 2, "one token for the resolver, one for the api, each reused");

    // A vendor URL is ready at once, and its link leads to it.
    let (_, _, direct_link) = wait_for_recording(&db, "direct-1", "ready").await?;
    let direct_link = direct_link.context("a link")?;
    assert!(direct_link.starts_with(&prefix), "the vendor's URL is replaced: {direct_link}");
    let opened = open(&direct_link).await?;
    assert_eq!(location(&opened).as_deref(), Some("https://rec.example.com/direct-1.mp3?sig=abc"));

    // Tokens: computed independently from the documented format, a valid one opens; expired,
    // altered, another recording's or a missing one are refused; an unknown recording is 404.
    let key = env.settings["SWITCHBOARD_RECORDINGS__LINK_KEY"].clone();
    let base = format!("{prefix}{id}");
    let later = chrono::Utc::now().timestamp() + 600;
    let valid = open(&format!("{base}?token={}", token(&key, &id, later))).await?;
    assert_eq!(valid.status, 302, "the documented token format");
    let expired =
        open(&format!("{base}?token={}", token(&key, &id, chrono::Utc::now().timestamp() - 1))).await?;
    assert_eq!(expired.status, 403, "expired");
    let forged_key =
        open(&format!("{base}?token={}", token("not-the-key-of-this-switchboard-0000", &id, later))).await?;
    assert_eq!(forged_key.status, 403, "signed with another key");
    let stretched = link.replacen("token=v1.", "token=v1.9", 1);
    assert_eq!(open(&stretched).await?.status, 403, "an expiry moved by hand");
    let direct_id = direct_link[prefix.len()..].split('?').next().context("id")?;
    let borrowed = format!("{prefix}{direct_id}?{}", link.split_once('?').context("query")?.1);
    assert_eq!(open(&borrowed).await?.status, 403, "another recording's token");
    assert_eq!(open(&base).await?.status, 403, "no token");
    let unknown = "0".repeat(32);
    let missing = open(&format!("{prefix}{unknown}?token={}", token(&key, &unknown, later))).await?;
    assert_eq!(missing.status, 404);
    let metrics = api.metrics().await?;
    assert_eq!(
        metric_series(&metrics, "switchboard_recordings_link_requests_total{result=\"forbidden\"}"),
        5.0
    );
    assert!(
        metric_series(&metrics, "switchboard_recordings_link_requests_total{result=\"redirected\"}") >= 4.0
    );

    // The call log, the calls topic and the enriched topic all carry the link and the status.
    let (status, call) = {
        let auth = format!("Bearer {API_TOKEN}");
        let response = send(
            &http_client(),
            "GET",
            &api.url("/v1/calls/telphin-rec/CALLREADY1"),
            &[("authorization", &auth)],
            "",
        )
        .await?;
        (response.status, response.json())
    };
    assert_eq!(status, 200);
    assert_eq!(call["recording"]["status"], "ready");
    assert_eq!(call["recording"]["url"], link.as_str());
    assert_eq!(call["recording"]["id"], "ready-1");
    let codecs = Codecs::new()?;
    let records = read_topic(&env.brokers, &env.topics().calls, WAIT, |records| {
        records.iter().any(|(_, payload)| {
            codecs.call_record.decode(payload).is_ok_and(|r| {
                r.call_id.as_str() == "CALLREADY1" && r.recording_status == Some(RecordingStatus::Ready)
            })
        })
    })
    .await?;
    let record = records
        .iter()
        .filter_map(|(_, payload)| codecs.call_record.decode(payload).ok())
        .rfind(|r| r.call_id.as_str() == "CALLREADY1")
        .context("a published record")?;
    assert_eq!(
        (record.recording_status, record.recording_url.as_deref()),
        (Some(RecordingStatus::Ready), Some(link.as_str()))
    );
    let ready_event = format!("recording:{id}:ready");
    let events = read_topic(&env.brokers, &env.topics().enriched, WAIT, |records| {
        records
            .iter()
            .any(|(_, p)| codecs.call_event.decode(p).is_ok_and(|e| e.event_id.as_str() == ready_event))
    })
    .await?;
    let events: Vec<_> = events.iter().filter_map(|(_, p)| codecs.call_event.decode(p).ok()).collect();
    let ready = events.iter().find(|e| e.event_id.as_str() == ready_event).context("the ready event")?;
    assert_eq!((ready.kind, ready.recording_url.as_deref()), (EventKind::Recording, Some(link.as_str())));
    assert!(
        events
            .iter()
            .filter(|e| e.call_id.as_str() == "CALLREADY1")
            .all(|e| e.recording_url.as_deref().is_none_or(|u| u == link)),
        "no vendor link travels downstream"
    );

    let recordings = &pipeline.services["recordings"];
    let metrics = recordings.metrics().await?;
    let series = |vendor: &str, result: &str| {
        metric_series(
            &metrics,
            &format!("switchboard_recordings_resolutions_total{{result=\"{result}\",vendor=\"{vendor}\"}}"),
        )
    };
    assert_eq!((series("telphin", "resolved"), series("generic", "direct")), (1.0, 1.0));
    assert_eq!(series("zadarma", "failed"), 0.0, "every series exists from the start");

    let mut api = api;
    assert_eq!(api.terminate(Duration::from_secs(30)).await?, Some(0));
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_flaky_recordings_are_retried_and_a_missing_one_fails_after_the_budget() -> anyhow::Result<()>
{
    let telphin = FakeTelphin::start().await?;
    let (env, pipeline, api) = world("rec-retry", &[]).await?;
    let secret = telphin_source(&env, "telphin-rec", &telphin).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (call, rec) in [("CALLLATE", "late3-a"), ("CALLFLAKY", "flaky2-b"), ("CALLNEVER", "never-c")] {
        telphin_call(&pipeline, "telphin-rec", &secret, call, rec).await?;
    }
    let db = env.db().await?;

    let (_, error, link) = wait_for_recording(&db, "CALLLATE", "ready").await?;
    assert_eq!((error, telphin.lookups("late3-a")), (None, 4), "three 404s, then the link");
    assert!(link.is_some());
    let (_, error, _) = wait_for_recording(&db, "CALLFLAKY", "ready").await?;
    assert_eq!((error, telphin.lookups("flaky2-b")), (None, 3), "two 503s, then the link");

    let (_, error, link) = wait_for_recording(&db, "CALLNEVER", "failed").await?;
    let error = error.context("a failure reason")?;
    assert!(error.contains("gave up after 5 attempts") && error.contains("404"), "{error}");
    assert_eq!(telphin.lookups("never-c"), 5, "exactly the retry budget");
    let row = db
        .query_one("SELECT status, attempts, last_error FROM recordings WHERE recording_id = 'never-c'", &[])
        .await?;
    assert_eq!((row.get::<_, String>(0), row.get::<_, i32>(1)), ("failed".to_owned(), 5));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some(error.as_str()));
    let attempts: Vec<(String, i32)> = db
        .query(
            "SELECT recording_id, attempts FROM recordings WHERE status = 'ready' ORDER BY recording_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(attempts, [("flaky2-b".to_owned(), 3), ("late3-a".to_owned(), 4)]);

    // The failed call's link still exists and still asks the vendor, which still has nothing.
    let opened = open(&link.context("a link")?).await?;
    assert_eq!(opened.status, 404);

    // Operators find the failures through the query API.
    let auth = format!("Bearer {API_TOKEN}");
    let page =
        send(&http_client(), "GET", &api.url("/v1/calls?recording=failed"), &[("authorization", &auth)], "")
            .await?
            .json();
    let failed: Vec<&str> =
        page["calls"].as_array().context("calls")?.iter().filter_map(|c| c["call_id"].as_str()).collect();
    assert_eq!(failed, ["CALLNEVER"], "{page}");
    assert_eq!(page["calls"][0]["recording_error"], error.as_str());

    let recordings = &pipeline.services["recordings"];
    let metrics = recordings.metrics().await?;
    let series = |result: &str| {
        metric_series(
            &metrics,
            &format!("switchboard_recordings_resolutions_total{{result=\"{result}\",vendor=\"telphin\"}}"),
        )
    };
    assert_eq!((series("resolved"), series("failed"), series("retry")), (2.0, 1.0, 9.0), "3 + 2 + 4 retries");

    let mut api = api;
    assert_eq!(api.terminate(Duration::from_secs(30)).await?, Some(0));
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_recording_holds_up_no_other_call() -> anyhow::Result<()> {
    let telphin = FakeTelphin::start().await?;
    // Telphin takes 15 s over the slow recording (within the 20 s timeout), then has nothing;
    // its next attempt is then a minute away.
    let (env, pipeline, api) = world(
        "rec-wait",
        &[
            ("SWITCHBOARD_RECORDINGS__RESOLVE_TIMEOUT_MS", "20000"),
            ("SWITCHBOARD_RECORDINGS__RETRY_INITIAL_MS", "60000"),
            ("SWITCHBOARD_RECORDINGS__RETRY_MAX_MS", "60000"),
        ],
    )
    .await?;
    let secret = telphin_source(&env, "telphin-rec", &telphin).await?;
    let generic = env.add_source("pbx", "GB").await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let db = env.db().await?;
    let slow = async || -> anyhow::Result<(String, i32, bool, bool)> {
        let row = db
            .query_one(
                "SELECT status, attempts, last_error IS NOT NULL, due_at > now() + interval '30 seconds'
                 FROM recordings WHERE recording_id = 'slow-1'",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1), row.get(2), row.get(3)))
    };
    let fast_ready = |from: usize, to: usize| {
        format!(
            "SELECT count(*) FROM calls WHERE recording_status = 'ready' AND call_id IN ({})",
            (from..to).map(|n| format!("'CALLFAST{n}'")).collect::<Vec<_>>().join(", ")
        )
    };

    telphin_call(&pipeline, "telphin-rec", &secret, "CALLSLOW", "slow-1").await?;
    wait_until(WAIT, async || Ok(telphin.lookups("slow-1") >= 1))
        .await
        .context("the slow attempt started")?;

    // While the slow recording's attempt hangs at Telphin, other calls' recordings resolve and
    // other calls reach the call log.
    let hanging = std::time::Instant::now();
    for n in 0..6 {
        telphin_call(&pipeline, "telphin-rec", &secret, &format!("CALLFAST{n}"), &format!("ready-fast{n}"))
            .await?;
    }
    let bodies = call_webhooks(&env.id, 6);
    let _ = post_all(&http_client(), &pipeline.ingress_url(""), &generic, &bodies, 4).await?;
    assert_eq!(wait_for_count(&db, &fast_ready(0, 6), 6, WAIT).await?, 6);
    assert_eq!(wait_for_count(&db, "SELECT count(*) FROM calls WHERE source_id = 'pbx'", 6, WAIT).await?, 6);
    let (status, attempts, finished, _) = slow().await?;
    assert!(
        hanging.elapsed() < Duration::from_secs(14) && !finished,
        "the others were done while the slow attempt still hung: {:?}, finished: {finished}",
        hanging.elapsed()
    );
    assert_eq!((status.as_str(), attempts), ("pending", 1));

    // Then, while it waits a minute for its next attempt, others still go straight through.
    wait_until(WAIT, async || Ok(slow().await?.3)).await.context("the slow recording rescheduled")?;
    let waiting = std::time::Instant::now();
    for n in 6..10 {
        telphin_call(&pipeline, "telphin-rec", &secret, &format!("CALLFAST{n}"), &format!("ready-fast{n}"))
            .await?;
    }
    assert_eq!(wait_for_count(&db, &fast_ready(6, 10), 4, WAIT).await?, 4);
    assert!(waiting.elapsed() < Duration::from_secs(30), "{:?}", waiting.elapsed());
    let (status, attempts, _, _) = slow().await?;
    assert_eq!((status.as_str(), attempts), ("pending", 1), "the slow recording still waits its turn");
    assert_eq!(call_recording(&db, "CALLSLOW").await?.0.as_deref(), Some("pending"));
    assert_eq!(telphin.lookups("slow-1"), 1);

    let mut api = api;
    assert_eq!(api.terminate(Duration::from_secs(30)).await?, Some(0));
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recordings_service_refuses_to_start_without_a_usable_link_key() -> anyhow::Result<()> {
    let env = TestEnv::new("rec-nokey");
    // None, too short, or the example files' placeholder (#18).
    for key in ["", "shorter-than-32-bytes", "change-me-recording-link-key-32-bytes-or-more"] {
        let mut recordings = env.spawn("recordings", &[("SWITCHBOARD_RECORDINGS__LINK_KEY", key)])?;
        assert_eq!(recordings.wait_exit(Duration::from_secs(10)).await?, Some(64), "key {key:?}");
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", recordings.port)).await.is_err(),
            "nothing was bound"
        );
    }
    Ok(())
}
