//! The agent's desk end to end: the real binary (ingress → normalizer → matcher → desk) on a
//! real broker and database, agents connected over WebSocket and Server-Sent Events as a
//! browser would, and the agent panel in a real headless Chromium (`tests/browser/desk.cjs`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard_tests::fake_vendor::{self, FakeVendor, Seen, TWILIO_SID};
use switchboard_tests::{Credentials, HttpClient, ServiceProcess, TestEnv, http_client, post_webhook, send};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "desk-test-api-token-0123456789abcdef0123456789";
const WAIT: Duration = Duration::from_secs(20);

/// A desk with its directory: Ann (101) and Bea (102) in `sales`, Sue supervising `sales`, Tom
/// (103) in `support`; Bob Smith calls from +44 20 7946 0001.
struct Desk {
    env: TestEnv,
    client: HttpClient,
    desk: ServiceProcess,
    ingress: Option<ServiceProcess>,
    others: Vec<ServiceProcess>,
    source: Option<Credentials>,
}

impl Desk {
    async fn start(name: &str, pipeline: &[&str]) -> anyhow::Result<Self> {
        let mut env = TestEnv::new(name);
        env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
        env.init().await?;
        let source = if pipeline.is_empty() { None } else { Some(env.add_source("pbx", "GB").await?) };
        env.db()
            .await?
            .batch_execute(
                "INSERT INTO agents (id, name, email, extensions, groups) VALUES
                   ('ann', 'Ann Lee', 'ann@example.com', '{101}', '{sales}'),
                   ('bea', 'Bea Ray', 'bea@example.com', '{102}', '{sales}'),
                   ('tom', 'Tom Fox', 'tom@example.com', '{103}', '{support}'),
                   ('sue', 'Sue Kim', 'sue@example.com', '{199}', '{sales}');
                 INSERT INTO contacts (id, name, company, phone_numbers) VALUES
                   ('bob', 'Bob Smith', 'Acme', '{+442079460001}');",
            )
            .await?;
        let mut others = Vec::new();
        let mut ingress = None;
        for service in pipeline {
            let process = env.start(service).await?;
            if *service == "ingress" { ingress = Some(process) } else { others.push(process) }
        }
        let desk = env.start("desk").await?;
        Ok(Self { env, client: http_client(), desk, ingress, others, source })
    }

    async fn api(&self, method: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let auth = format!("Bearer {TOKEN}");
        let response = send(
            &self.client,
            method,
            &self.desk.url(path),
            &[("authorization", &auth), ("content-type", "application/json")],
            if body.is_null() { String::new() } else { body.to_string() },
        )
        .await?;
        Ok((response.status, response.json()))
    }

    async fn session(&self, body: Value) -> anyhow::Result<Value> {
        let (status, value) = self.api("POST", "/v1/desk/sessions", body).await?;
        ensure!(status == 201 || status == 200, "session: {status} {value}");
        Ok(value)
    }

    async fn post(&self, body: Value) -> anyhow::Result<()> {
        let ingress = self.ingress.as_ref().context("no ingress")?;
        let source = self.source.as_ref().context("no source")?;
        let response = post_webhook(&self.client, &ingress.url(""), source, &body.to_string()).await?;
        ensure!(response.status == 202, "webhook answered {}", response.status);
        Ok(())
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.desk.terminate(WAIT).await?;
        if let Some(mut ingress) = self.ingress.take() {
            let _ = ingress.terminate(WAIT).await?;
        }
        for mut other in self.others.drain(..) {
            let _ = other.terminate(WAIT).await?;
        }
        self.env.cleanup().await;
        Ok(())
    }
}

/// A generic webhook of call `call`.
fn event(call: &str, kind: &str, leg: Option<&str>, agent: Option<&str>, extra: Value) -> Value {
    let mut body = json!({
        "call_id": call,
        "event": kind,
        "direction": "inbound",
        "from": "020 7946 0001",
        "to": "+442071234567",
        "timestamp": chrono::Utc::now().timestamp(),
    });
    if let Some(leg) = leg {
        body["leg_id"] = json!(leg);
    }
    if let Some(agent) = agent {
        body["agent"] = json!({"number": agent});
    }
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket stream of `token`, as the SDK opens it.
async fn websocket(desk: &ServiceProcess, token: &str, last: Option<&str>) -> anyhow::Result<Ws> {
    let stream = TcpStream::connect(("127.0.0.1", desk.port)).await?;
    let mut url = format!("ws://127.0.0.1:{}/v1/desk/stream?token={token}", desk.port);
    if let Some(last) = last {
        url.push_str(&format!("&last_event_id={last}"));
    }
    let (ws, response) = tokio_tungstenite::client_async(url, stream).await?;
    ensure!(response.status().as_u16() == 101);
    Ok(ws)
}

/// The next JSON message of `ws` (skipping pings), or `None` when it closed.
async fn next(ws: &mut Ws, within: Duration) -> anyhow::Result<Option<Value>> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await.context("no message in time")? {
            Some(Ok(Message::Text(text))) => return Ok(Some(serde_json::from_str(text.as_str())?)),
            Some(Ok(Message::Close(frame))) => {
                return Ok(Some(json!({"closed": frame.map(|f| (u16::from(f.code), f.reason.to_string()))})));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Ok(None),
        }
    }
}

/// The notification types `ws` receives until `want` of them arrived.
async fn collect(ws: &mut Ws, want: usize) -> anyhow::Result<Vec<Value>> {
    let mut got = Vec::new();
    while got.len() < want {
        match next(ws, WAIT).await? {
            Some(m) if m["type"] == "hello" => {}
            Some(m) => got.push(m),
            None => bail!("stream closed after {got:?}"),
        }
    }
    Ok(got)
}

fn types(messages: &[Value]) -> Vec<String> {
    messages.iter().map(|m| m["type"].as_str().unwrap_or("?").to_owned()).collect()
}

/// No message at all (other than keep-alives) for `quiet`.
async fn silent(ws: &mut Ws, quiet: Duration) -> anyhow::Result<()> {
    match tokio::time::timeout(quiet, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Some(text.to_string()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => return None,
            }
        }
    })
    .await
    {
        Ok(Some(text)) => bail!("expected nothing, got {text}"),
        _ => Ok(()),
    }
}

#[tokio::test]
async fn sessions_by_id_and_email_keep_revoke_expire_and_refuse_bad_tokens() -> anyhow::Result<()> {
    let desk = Desk::start("desk-sessions", &[]).await?;
    // By id, and by email (any case) as a supervisor (seed 003's `admin` too).
    let ann = desk.session(json!({"agent_id": "ann"})).await?;
    assert_eq!(ann["role"], "agent");
    let token = ann["token"].as_str().context("token")?.to_owned();
    assert!(token.starts_with("sbd_") && token.len() == 47, "{token}");
    let sue = desk.session(json!({"email": "SUE@example.com", "role": "admin"})).await?;
    assert_eq!((sue["agent_id"].as_str(), sue["role"].as_str()), (Some("sue"), Some("supervisor")));
    // Keep: the same live token comes back (200); without keep a new one (201).
    let (status, kept) =
        desk.api("POST", "/v1/desk/sessions", json!({"agent_id": "ann", "keep": true})).await?;
    assert_eq!((status, kept["token"].as_str()), (200, Some(token.as_str())));
    let (status, fresh) = desk.api("POST", "/v1/desk/sessions", json!({"agent_id": "ann"})).await?;
    assert_eq!(status, 201);
    assert_ne!(fresh["token"], ann["token"]);
    // Refusals: nobody, both, a bad role or ttl, no API token.
    assert_eq!(desk.api("POST", "/v1/desk/sessions", json!({"agent_id": "nobody"})).await?.0, 404);
    assert_eq!(
        desk.api("POST", "/v1/desk/sessions", json!({"agent_id": "ann", "email": "a@b"})).await?.0,
        400
    );
    assert_eq!(
        desk.api("POST", "/v1/desk/sessions", json!({"agent_id": "ann", "role": "boss"})).await?.0,
        400
    );
    assert_eq!(
        desk.api("POST", "/v1/desk/sessions", json!({"agent_id": "ann", "ttl_secs": 5})).await?.0,
        400
    );
    let anonymous =
        send(&desk.client, "POST", &desk.desk.url("/v1/desk/sessions"), &[], r#"{"agent_id":"ann"}"#).await?;
    assert_eq!(anonymous.status, 401);

    // The session token opens the agent's endpoints; bad tokens are one 401 whatever they are.
    let status_of = |token: String| {
        let (client, url) = (desk.client.clone(), desk.desk.url("/v1/desk/status"));
        async move {
            let auth = format!("Bearer {token}");
            send(&client, "GET", &url, &[("authorization", &auth)], "").await
        }
    };
    let own = status_of(token.clone()).await?;
    assert_eq!(own.status, 200, "{:?}", own.json());
    assert_eq!(own.headers.get("access-control-allow-origin").map(|v| v.as_bytes()), Some(&b"*"[..]));
    let forged = format!("sbd_{}", "A".repeat(43));
    for bad in [String::new(), "junk".into(), forged, TOKEN.to_owned()] {
        let refused = status_of(bad.clone()).await?;
        assert_eq!((refused.status, refused.json()["error"].as_str()), (401, Some("auth_invalid")), "{bad}");
    }
    let refused = send(&desk.client, "GET", &desk.desk.url("/v1/desk/stream?token=junk"), &[], "").await?;
    assert_eq!(refused.status, 401);

    // Revoking ends the open stream with auth_invalid (close 4001), and the token is dead.
    let mut ws = websocket(&desk.desk, &token, None).await?;
    let hello = next(&mut ws, WAIT).await?.context("hello")?;
    assert_eq!((hello["type"].as_str(), hello["agent"]["name"].as_str()), (Some("hello"), Some("Ann Lee")));
    let session_id = ann["session_id"].as_str().context("id")?;
    assert_eq!(desk.api("DELETE", &format!("/v1/desk/sessions/{session_id}"), Value::Null).await?.0, 204);
    let invalid = next(&mut ws, WAIT).await?.context("auth_invalid")?;
    assert_eq!(invalid, json!({"type": "auth_invalid", "reason": "revoked"}));
    let closed = next(&mut ws, WAIT).await?.context("close")?;
    assert_eq!(closed["closed"][0], 4001, "{closed}");
    assert_eq!(status_of(token.clone()).await?.status, 401);
    // A revoked session is gone (404), and revoking it again is still a 204.
    let (status, info) = desk.api("GET", &format!("/v1/desk/sessions/{session_id}"), Value::Null).await?;
    assert_eq!(status, 404, "{info}");
    assert_eq!(desk.api("DELETE", &format!("/v1/desk/sessions/{session_id}"), Value::Null).await?.0, 204);
    // Keep never hands back a revoked token.
    let (status, after) =
        desk.api("POST", "/v1/desk/sessions", json!({"agent_id": "ann", "keep": true})).await?;
    assert!(status == 200 && after["token"] != json!(token), "{after}");

    // Expiry: a session that has run out ends its stream with auth_invalid (expired).
    let short = desk.session(json!({"agent_id": "tom", "ttl_secs": 60})).await?;
    let short_token = short["token"].as_str().context("token")?.to_owned();
    let mut ws = websocket(&desk.desk, &short_token, None).await?;
    let _ = next(&mut ws, WAIT).await?;
    desk.env
        .db()
        .await?
        .execute(
            "UPDATE desk_sessions SET expires_at = now() WHERE id = $1",
            &[&short["session_id"].as_str()],
        )
        .await?;
    assert_eq!(status_of(short_token.clone()).await?.status, 401, "expired in the database");
    // The open stream learns it at the expiry it was given (60 s): a new stream of a session
    // ending in a second shows the timer.
    let brief = desk.session(json!({"agent_id": "tom", "ttl_secs": 60})).await?;
    desk.env
        .db()
        .await?
        .execute(
            "UPDATE desk_sessions SET expires_at = now() + interval '2 seconds' WHERE id = $1",
            &[&brief["session_id"].as_str()],
        )
        .await?;
    let mut ws = websocket(&desk.desk, brief["token"].as_str().context("token")?, None).await?;
    let _ = next(&mut ws, WAIT).await?;
    assert_eq!(next(&mut ws, WAIT).await?, Some(json!({"type": "auth_invalid", "reason": "expired"})));
    desk.shutdown().await
}

#[tokio::test]
async fn a_ringing_call_pops_the_right_agents_and_supervisor_and_a_reconnect_loses_nothing()
-> anyhow::Result<()> {
    let desk = Desk::start("desk-stream", &["ingress", "normalizer", "matcher"]).await?;
    let (status, _) = desk
        .api(
            "PUT",
            "/v1/desk/screen-pop/*",
            json!({"url_template": "https://crm.example.com/pop?num={caller_id_num}&s={id_session}&op={id_op}&g={id_group}&a={action}&c={contact_id}", "mode": "open"}),
        )
        .await?;
    assert_eq!(status, 201);
    let (status, refused) = desk
        .api(
            "PUT",
            "/v1/desk/screen-pop/pbx",
            json!({"url_template": "https://crm/x?n={caller}", "mode": "open"}),
        )
        .await?;
    assert_eq!((status, refused["position"].as_u64()), (422, Some(17)), "{refused}");

    let ann = desk.session(json!({"agent_id": "ann"})).await?;
    let bea = desk.session(json!({"agent_id": "bea"})).await?;
    let tom = desk.session(json!({"agent_id": "tom"})).await?;
    let sue = desk.session(json!({"agent_id": "sue", "role": "supervisor"})).await?;
    let token = |s: &Value| s["token"].as_str().unwrap_or_default().to_owned();
    let mut ann_ws = websocket(&desk.desk, &token(&ann), None).await?;
    let mut bea_ws = websocket(&desk.desk, &token(&bea), None).await?;
    let mut tom_ws = websocket(&desk.desk, &token(&tom), None).await?;
    let mut sue_ws = websocket(&desk.desk, &token(&sue), None).await?;
    for ws in [&mut ann_ws, &mut bea_ws, &mut tom_ws, &mut sue_ws] {
        assert_eq!(next(ws, WAIT).await?.context("hello")?["type"], "hello");
    }

    // A ring-all call to Ann and Bea; Bea answers.
    let started = Instant::now();
    desk.post(event("c-1", "ringing", None, None, json!({}))).await?;
    desk.post(event("c-1", "ringing", Some("c-1-ann"), Some("101"), json!({}))).await?;
    let incoming = collect(&mut ann_ws, 1).await?;
    let popped = started.elapsed();
    let pop = &incoming[0];
    assert_eq!(pop["type"], "incoming", "{pop}");
    assert_eq!(pop["contact"]["match"], "unique");
    assert_eq!(pop["contact"]["candidates"][0]["name"], "Bob Smith");
    assert_eq!(pop["call"]["customer"]["e164"], "+442079460001");
    assert_eq!(pop["call"]["customer"]["raw"], "020 7946 0001");
    assert_eq!(pop["agent"]["groups"], json!(["sales"]));
    assert_eq!(
        pop["screen_pop"],
        json!({
            "url": format!("https://crm.example.com/pop?num=442079460001&s={}&op=ann&g=sales&a=in&c=bob", ann["session_id"].as_str().unwrap_or_default()),
            "mode": "open",
            "on": "ringing",
        })
    );
    desk.post(event("c-1", "ringing", Some("c-1-bea"), Some("102"), json!({}))).await?;
    desk.post(event("c-1", "answered", Some("c-1-bea"), Some("102"), json!({}))).await?;
    desk.post(event("c-1", "hangup", Some("c-1-ann"), Some("101"), json!({}))).await?;
    desk.post(event("c-1", "hangup", Some("c-1-bea"), Some("102"), json!({}))).await?;
    desk.post(event("c-1", "hangup", None, None, json!({}))).await?;

    let ann_rest = collect(&mut ann_ws, 1).await?;
    assert_eq!(types(&ann_rest), ["taken"]);
    assert_eq!(ann_rest[0]["taken_by"]["name"], "Bea Ray");
    assert_eq!(ann_rest[0]["screen_pop"], Value::Null);
    let bea_all = collect(&mut bea_ws, 3).await?;
    assert_eq!(types(&bea_all), ["incoming", "answered", "ended"]);
    // The supervisor of sales sees both agents' calls, never "taken", and no pop.
    let sue_all = collect(&mut sue_ws, 4).await?;
    assert_eq!(types(&sue_all), ["incoming", "incoming", "answered", "ended"]);
    assert!(sue_all.iter().all(|m| m["screen_pop"].is_null()));
    assert_eq!(sue_all[2]["agent"]["id"], "bea");

    // A call nobody answers: missed, once per agent it rang.
    desk.post(event("c-2", "ringing", Some("c-2-ann"), Some("101"), json!({}))).await?;
    desk.post(event("c-2", "hangup", Some("c-2-ann"), Some("101"), json!({"hangup_cause": "no_answer"})))
        .await?;
    desk.post(event("c-2", "hangup", None, None, json!({}))).await?;
    let missed = collect(&mut ann_ws, 2).await?;
    assert_eq!(types(&missed), ["incoming", "missed"]);
    // Tom (support) heard nothing of sales' calls.
    silent(&mut tom_ws, Duration::from_millis(500)).await?;

    // Ann's connection drops; a call comes meanwhile; she reconnects with the last id she saw.
    let last_seen = missed[0]["id"].as_str().context("id")?.to_owned();
    drop(ann_ws);
    desk.post(event("c-3", "ringing", Some("c-3-ann"), Some("101"), json!({}))).await?;
    // Bea's stream proves the event went through before Ann comes back.
    desk.post(event("c-3", "ringing", Some("c-3-bea"), Some("102"), json!({}))).await?;
    assert_eq!(types(&collect(&mut bea_ws, 1).await?), ["incoming"]);
    let mut ann_ws = websocket(&desk.desk, &token(&ann), Some(&last_seen)).await?;
    let hello = next(&mut ann_ws, WAIT).await?.context("hello")?;
    assert_eq!(hello["resumed"], true);
    let resumed = collect(&mut ann_ws, 2).await?;
    assert_eq!(types(&resumed), ["missed", "incoming"], "what she missed, in order, nothing twice");
    assert_eq!(resumed[1]["call"]["call_id"], "c-3");

    // Status: Ann takes a break through the stream; she and her supervisor are told.
    ann_ws.send(Message::text(json!({"type": "set_status", "status": "break"}).to_string())).await?;
    let told = collect(&mut ann_ws, 1).await?;
    assert_eq!((told[0]["type"].as_str(), told[0]["status"].as_str()), (Some("status"), Some("break")));
    let sue_told = collect(&mut sue_ws, 5).await?;
    assert_eq!(
        types(&sue_told),
        ["incoming", "missed", "incoming", "incoming", "status"],
        "c-2 rang Ann and was missed, c-3 rang both, then Ann's status"
    );
    let (code, list) = {
        let auth = format!("Bearer {}", token(&sue));
        let r = send(&desk.client, "GET", &desk.desk.url("/v1/desk/status"), &[("authorization", &auth)], "")
            .await?;
        (r.status, r.json())
    };
    assert_eq!(code, 200);
    let ann_status =
        list["agents"].as_array().context("agents")?.iter().find(|a| a["agent_id"] == "ann").cloned();
    assert_eq!(ann_status.context("ann listed")?["status"], "break");

    // The SSE fallback carries the same notifications, with ids for Last-Event-ID.
    let mut sse = Sse::open(&desk.desk, &token(&tom), None).await?;
    assert_eq!(sse.next().await?.0, "hello");
    let mut tom_call = event("c-4", "ringing", None, Some("103"), json!({}));
    tom_call["direction"] = json!("outbound");
    tom_call["from"] = json!("103");
    tom_call["to"] = json!("020 7946 0001");
    desk.post(tom_call).await?;
    let (kind, id, data) = sse.next().await?;
    assert_eq!(kind, "outgoing");
    assert!(id.as_deref().is_some_and(|id| id.starts_with('m')), "{id:?}");
    assert_eq!(data["call"]["customer"]["e164"], "+442079460001");
    assert_eq!(data["screen_pop"]["url"].as_str().map(|u| u.contains("a=out")), Some(true));

    let metrics = desk.desk.metrics().await?;
    assert!(
        switchboard_tests::metric_series(&metrics, r#"switchboard_desk_notifications_total{type="taken"}"#)
            >= 1.0
    );
    assert!(
        switchboard_tests::metric_series(&metrics, r#"switchboard_desk_streams{transport="sse"}"#) >= 1.0
    );
    println!("desk: webhook posted → pop received in {popped:?}");
    desk.shutdown().await
}

/// A Server-Sent Events stream, read as EventSource reads it.
struct Sse {
    body: hyper::body::Incoming,
    buffer: String,
}

impl Sse {
    async fn open(desk: &ServiceProcess, token: &str, last: Option<&str>) -> anyhow::Result<Self> {
        let client = http_client();
        let mut request = http::Request::get(desk.url(&format!("/v1/desk/events?token={token}")));
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        let response = client.request(request.body(http_body_util::Full::new(bytes::Bytes::new()))?).await?;
        ensure!(response.status() == 200, "SSE answered {}", response.status());
        ensure!(
            response.headers().get("content-type").map(|v| v.as_bytes()) == Some(&b"text/event-stream"[..])
        );
        Ok(Self { body: response.into_body(), buffer: String::new() })
    }

    /// The next event: its type, id and data.
    async fn next(&mut self) -> anyhow::Result<(String, Option<String>, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut kind, mut id, mut data) = (String::from("message"), None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        kind = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v)?);
                    }
                }
                match data {
                    Some(data) => return Ok((kind, id, data)),
                    None => continue, // retry: and keep-alive comments
                }
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame()).await.context("no SSE data in time")?;
            let frame = frame.context("the SSE stream ended")??;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data)?);
            }
        }
    }
}

/// Serves the stand-in CRM: `/crm-page.html` (a CRM page that includes the SDK) and any other
/// path as a small page (where the screen-pop lands).
async fn crm_server() -> anyhow::Result<u16> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/browser/crm-page.html"))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let body = if req.uri().path() == "/crm-page.html" {
                        page.clone()
                    } else {
                        format!("<!doctype html><title>CRM record</title><p>{}</p>", req.uri())
                    };
                    async move {
                        let mut response =
                            http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                        let _ = response
                            .headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("text/html"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(port)
}

/// The agent panel in a real headless Chromium: it logs in with a token, shows the call card
/// with the contact as the call rings, is answered and ends, shows a missed call, pops the CRM
/// page itself (mode open) or offers it (mode notify), lists the agent's recent calls, and a CRM
/// page with the SDK pops the caller too. The screenshot stays in the test's log folder.
#[tokio::test]
async fn the_agent_panel_and_the_sdk_pop_the_caller_in_a_real_browser() -> anyhow::Result<()> {
    let Some(playwright) = std::env::var_os("SB_PLAYWRIGHT") else {
        bail!(
            "SB_PLAYWRIGHT is not set: run through ./test, which installs Chromium and playwright-core (scripts/browser.sh)"
        );
    };
    let desk = Desk::start("desk-browser", &switchboard_tests::SERVICES).await?;
    let crm = crm_server().await?;
    let pop_template =
        format!("http://127.0.0.1:{crm}/crm/contact?num={{caller_id_num}}&agent={{id_op}}&call={{id_call}}");
    let (status, _) = desk
        .api("PUT", "/v1/desk/screen-pop/pbx", json!({"url_template": pop_template, "mode": "open"}))
        .await?;
    ensure!(status == 201, "screen-pop: {status}");
    let codes =
        json!({"codes": [{"code": "sale", "label": "Sale"}, {"code": "callback", "label": "Call back"}]});
    ensure!(desk.api("PUT", "/v1/desk/dispositions/pbx", codes).await?.0 == 200, "disposition codes");
    let panel = desk.session(json!({"agent_id": "ann"})).await?;
    let sdk = desk.session(json!({"agent_id": "ann"})).await?;
    let token = |s: &Value| s["token"].as_str().unwrap_or_default().to_owned();
    let pop_url =
        |call: &str| format!("http://127.0.0.1:{crm}/crm/contact?num=442079460001&agent=ann&call={call}");

    let ingress = desk.ingress.as_ref().context("ingress")?.url("/v1/webhooks/pbx");
    let auth = desk.source.as_ref().context("source")?.basic();
    let post = |body: Value| json!({"url": ingress, "method": "POST", "headers": {"content-type": "application/json", "authorization": auth}, "body": body.to_string()});
    let notify = json!({
        "url": desk.desk.url("/v1/desk/screen-pop/pbx"), "method": "PUT",
        "headers": {"content-type": "application/json", "authorization": format!("Bearer {TOKEN}")},
        "body": json!({"url_template": pop_template, "mode": "notify"}).to_string(),
    });
    let screenshot = desk.env.log_dir.join("desk-panel.png");
    let plan = json!({
        "panel_url": desk.desk.url(&format!("/panel?token={}&fiche_num=%2B442079460001", token(&panel))),
        "screenshot_path": screenshot,
        "expect_dial_prefill": "+442079460001",
        "sdk_page": {
            "url": format!("http://127.0.0.1:{crm}/crm-page.html?desk={}&token={}", desk.desk.url(""), token(&sdk)),
            "expect_event": "incoming",
            "expect_contact_name": "Bob Smith",
            "after_step": "ringing",
        },
        "steps": [
            {"name": "ringing", "timeout_ms": 20000,
             "post": [post(event("b-1", "ringing", None, None, json!({}))), post(event("b-1", "ringing", Some("b-1-ann"), Some("101"), json!({})))],
             "expect": {"state": "ringing", "contact_name": "Bob Smith", "customer_number": "020 7946 0001", "popup_url": pop_url("b-1"), "agent_name": "Ann Lee"}},
            {"name": "answered", "timeout_ms": 10000,
             "post": post(event("b-1", "answered", Some("b-1-ann"), Some("101"), json!({}))),
             "expect": {"state": "answered", "contact_name": "Bob Smith", "popup_url": null}},
            {"name": "ended", "timeout_ms": 30000,
             "post": [post(event("b-1", "hangup", Some("b-1-ann"), Some("101"), json!({}))), post(event("b-1", "hangup", None, None, json!({})))],
             "expect": {"state": "ended", "recent_calls_min": 1}},
            {"name": "wrap-up", "timeout_ms": 10000,
             "fill": {"wrap-up-note": "wants two seats", "wrap-up-tags": "vip, renewal"},
             "select": {"wrap-up-code": "callback"}, "click": "wrap-up-save",
             "expect": {"state": "ended", "wrap_up_result": "Saved"}},
            {"name": "missed", "timeout_ms": 10000,
             "post": [post(event("b-2", "ringing", Some("b-2-ann"), Some("101"), json!({}))), post(event("b-2", "hangup", Some("b-2-ann"), Some("101"), json!({}))), post(event("b-2", "hangup", None, None, json!({})))],
             "expect": {"state": "missed", "contact_name": "Bob Smith"}},
            {"name": "notify mode", "timeout_ms": 10000,
             "post": [notify, post(event("b-3", "ringing", Some("b-3-ann"), Some("101"), json!({})))],
             "expect": {"state": "ringing", "pop_link": pop_url("b-3")}},
            {"name": "click-to-call", "timeout_ms": 10000, "click": "dial-button",
             "expect": {"dial_result": "not supported by this source"}},
        ],
    });
    let plan_path = desk.env.log_dir.join("browser-plan.json");
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan)?)?;
    // The screen-pop of a notify-mode setting reaches this replica through its listener.
    let output = tokio::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/browser/desk.cjs"))
        .arg(&plan_path)
        .env("SB_PLAYWRIGHT", playwright)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), output)
        .await
        .context("the browser run took over 180 s")??;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    ensure!(output.status.success(), "browser run failed ({}):\n{stdout}\n{stderr}", output.status);
    ensure!(stdout.contains("browser: 7 steps passed"), "{stdout}");
    // The wrap-up the agent saved in the panel reached the call log.
    let db = desk.env.db().await?;
    let deadline = Instant::now() + WAIT;
    loop {
        // As text, so that one comparison shows every field.
        let row = db
            .query_opt(
                "SELECT concat_ws('|', wrap_up_code, wrap_up_note, array_to_string(wrap_up_tags, ','), wrap_up_agent_id)
                 FROM calls WHERE call_id = 'b-1' AND wrap_up_code IS NOT NULL",
                &[],
            )
            .await?;
        if let Some(row) = row {
            assert_eq!(row.get::<_, String>(0), "callback|wants two seats|vip,renewal|ann");
            break;
        }
        ensure!(Instant::now() < deadline, "the panel's wrap-up never reached the call log");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(std::fs::metadata(&screenshot)?.len() > 1000, "no screenshot at {}", screenshot.display());
    println!("{}; screenshot: {}", stdout.trim(), screenshot.display());
    desk.shutdown().await
}

/// Two replicas behind a load balancer: each delivers to the connections it holds, a session
/// revoked through one ends its stream on the other, and a client resumes on the other replica
/// by the same event id.
#[tokio::test]
async fn every_replica_delivers_to_its_own_connections_and_revocation_reaches_all() -> anyhow::Result<()> {
    let desk = Desk::start("desk-replicas", &["ingress", "normalizer", "matcher"]).await?;
    let mut second = desk.env.start("desk").await?;
    let ann = desk.session(json!({"agent_id": "ann"})).await?;
    let bea = desk.session(json!({"agent_id": "bea"})).await?;
    let token = |s: &Value| s["token"].as_str().unwrap_or_default().to_owned();
    let mut ann_ws = websocket(&second, &token(&ann), None).await?;
    let mut bea_ws = websocket(&desk.desk, &token(&bea), None).await?;
    for ws in [&mut ann_ws, &mut bea_ws] {
        assert_eq!(next(ws, WAIT).await?.context("hello")?["type"], "hello");
    }
    desk.post(event("r-1", "ringing", Some("r-1-ann"), Some("101"), json!({}))).await?;
    desk.post(event("r-1", "ringing", Some("r-1-bea"), Some("102"), json!({}))).await?;
    let on_second = collect(&mut ann_ws, 1).await?;
    let on_first = collect(&mut bea_ws, 1).await?;
    assert_eq!(
        (on_second[0]["call"]["call_id"].as_str(), on_first[0]["call"]["call_id"].as_str()),
        (Some("r-1"), Some("r-1"))
    );

    // Ann's replica goes away; she resumes on the first one from the id the second gave her.
    let seen = on_second[0]["id"].as_str().context("id")?.to_owned();
    let _ = second.terminate(WAIT).await?;
    let closed = next(&mut ann_ws, WAIT).await?;
    assert!(matches!(&closed, Some(m) if m["closed"][0] == 1001), "going away: {closed:?}");
    desk.post(event("r-1", "answered", Some("r-1-bea"), Some("102"), json!({}))).await?;
    assert_eq!(types(&collect(&mut bea_ws, 1).await?), ["answered"]);
    let mut ann_ws = websocket(&desk.desk, &token(&ann), Some(&seen)).await?;
    let _ = next(&mut ann_ws, WAIT).await?;
    assert_eq!(types(&collect(&mut ann_ws, 1).await?), ["taken"], "nothing twice, nothing lost");

    // Revoked through a replica that does not hold the stream: LISTEN/NOTIFY reaches the other.
    let mut third = desk.env.start("desk").await?;
    let mut bea_third = websocket(&third, &token(&bea), None).await?;
    let _ = next(&mut bea_third, WAIT).await?;
    let revoke = format!("/v1/desk/sessions/{}", bea["session_id"].as_str().unwrap_or_default());
    let auth = format!("Bearer {TOKEN}");
    let started = Instant::now();
    let revoked =
        send(&desk.client, "DELETE", &desk.desk.url(&revoke), &[("authorization", &auth)], "").await?;
    assert_eq!(revoked.status, 204);
    assert_eq!(next(&mut bea_third, WAIT).await?, Some(json!({"type": "auth_invalid", "reason": "revoked"})));
    assert!(started.elapsed() < Duration::from_secs(1), "within a second: {:?}", started.elapsed());
    assert_eq!(next(&mut bea_ws, WAIT).await?, Some(json!({"type": "auth_invalid", "reason": "revoked"})));
    let _ = third.terminate(WAIT).await?;
    desk.shutdown().await
}

/// A fake of Twilio's Calls API on loopback: records each request, answers 201 with the call's
/// `sid` (or 503 when told to be down), as Twilio does.
/// Click-to-call against a faithful fake of Twilio's API: one call per idempotency key (a
/// double click or a retried POST places one call), the same key with another request refused,
/// a vendor that is down a clear 502, and the call's own webhooks linked to the request.
#[tokio::test]
async fn click_to_call_places_one_call_per_key_and_links_the_calls_webhooks() -> anyhow::Result<()> {
    let desk = Desk::start("desk-originate", &switchboard_tests::SERVICES).await?;
    let (twilio, port) = FakeVendor::start(fake_vendor::twilio).await?;
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/twilio/outbound-api.json"
    ))?)?;
    let mut settings = fixture["source"]["settings"].clone();
    settings["api_url"] = json!(format!("http://127.0.0.1:{port}"));
    settings["api_client_id"] = json!("AC3f0a8c2e1b7d4e9f6a5b4c3d2e1f0a9b");
    settings["originate_caller_id"] = json!("+14155550100");
    let auth_token = fixture["source"]["signing_secret"].as_str().context("token")?;
    let _ = desk
        .env
        .cli(&[
            "sources",
            "add",
            "acme-twilio",
            "--vendor",
            "twilio",
            "--region",
            "US",
            "--settings",
            &settings.to_string(),
            "--signing-secret",
            auth_token,
            "--json",
        ])
        .await?;
    desk.env
        .db()
        .await?
        .batch_execute("UPDATE agents SET phone_numbers = '{+14155550123}' WHERE id = 'ann'")
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let originate = |key: &str, body: Value| {
        let (client, url, key) = (desk.client.clone(), desk.desk.url("/v1/desk/originate"), key.to_owned());
        async move {
            let auth = format!("Bearer {TOKEN}");
            let headers = [
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
                ("idempotency-key", key.as_str()),
            ];
            let response = send(&client, "POST", &url, &headers, body.to_string()).await?;
            anyhow::Ok((response.status, response.json()))
        }
    };
    let call = json!({"source_id": "acme-twilio", "agent": {"id": "ann"}, "destination": "(415) 555-0187"});
    let (status, placed) = originate("crm-click-1", call.clone()).await?;
    assert_eq!(status, 201, "{placed}");
    assert_eq!(
        (placed["vendor_call_id"].as_str(), placed["destination"].as_str()),
        (Some(TWILIO_SID), Some("+14155550187"))
    );
    let sent = twilio.requests();
    assert_eq!(sent.len(), 1);
    let Seen { path, authorization: auth, body: form } = &sent[0];
    assert_eq!(path, "/2010-04-01/Accounts/AC3f0a8c2e1b7d4e9f6a5b4c3d2e1f0a9b/Calls.json");
    let expected_auth = format!("Basic {}", base64_basic("AC3f0a8c2e1b7d4e9f6a5b4c3d2e1f0a9b", auth_token));
    assert_eq!(auth, &expected_auth, "HTTP Basic with the Account SID and auth token");
    let fields: std::collections::BTreeMap<String, String> = form_urlencoded_pairs(form);
    assert_eq!(
        fields.get("To").map(String::as_str),
        Some("+14155550123"),
        "the agent's phone rings first: {form}"
    );
    assert_eq!(fields.get("From").map(String::as_str), Some("+14155550100"));
    assert!(fields.get("Twiml").is_some_and(|t| t.contains("+14155550187")), "then the destination: {form}");

    // A double click, a retried POST: the first answer again, no second call.
    let (again_status, again) = originate("crm-click-1", call.clone()).await?;
    assert_eq!((again_status, &again), (201, &placed));
    assert_eq!(twilio.requests().len(), 1, "one call for one key");
    let mut other = call.clone();
    other["destination"] = json!("+14155550111");
    let (status, reused) = originate("crm-click-1", other).await?;
    assert_eq!((status, reused["error"].as_str()), (422, Some("idempotency_key_reused")));

    // Twilio down: a clear 502 after one attempt, stored as failed; nothing half-done.
    twilio.set_down(true);
    let (status, failed) = originate("crm-click-2", call.clone()).await?;
    assert_eq!((status, failed["error"].as_str()), (502, Some("vendor_unavailable")), "{failed}");
    assert_eq!(twilio.requests().len(), 2, "no retry of a call that may have been placed");
    let (status, shown) = desk
        .api(
            "GET",
            &format!("/v1/desk/originate/{}", failed["request_id"].as_str().unwrap_or_default()),
            Value::Null,
        )
        .await?;
    assert_eq!((status, shown["state"].as_str(), shown["call"].is_null()), (200, Some("failed"), true));
    twilio.set_down(false);

    // The call's own webhooks arrive: the call log has it, and the request links to it.
    let ingress = desk.ingress.as_ref().context("ingress")?.url("/v1/webhooks/acme-twilio");
    switchboard_tests::post_fixture_requests(&desk.client, &ingress, &fixture).await?;
    let request_id = placed["request_id"].as_str().context("request_id")?.to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let linked = loop {
        let (_, shown) = desk.api("GET", &format!("/v1/desk/originate/{request_id}"), Value::Null).await?;
        if shown["call"]["status"] == "ended" {
            break shown;
        }
        ensure!(Instant::now() < deadline, "the call never reached the call log: {shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(linked["call"]["call_id"], TWILIO_SID);
    assert_eq!(linked["call"]["direction"], "outbound");
    assert_eq!((linked["via"].as_str(), linked["agent_id"].as_str()), (Some("api"), Some("ann")));

    // Hang-up through Twilio's API (Status=completed on the call).
    let (status, _) =
        desk.api("POST", &format!("/v1/desk/originate/{request_id}/hangup"), Value::Null).await?;
    assert_eq!(status, 204);
    let hang_up = twilio.requests().last().cloned().context("hang-up")?;
    assert_eq!(
        hang_up.path,
        format!("/2010-04-01/Accounts/AC3f0a8c2e1b7d4e9f6a5b4c3d2e1f0a9b/Calls/{}.json", TWILIO_SID)
    );
    assert_eq!(hang_up.body, "Status=completed");

    // From the agent's browser: a double click places one call, from the agent's own phone.
    let ann = desk.session(json!({"agent_id": "ann"})).await?;
    let click = || {
        let (client, url) = (desk.client.clone(), desk.desk.url("/v1/desk/call"));
        let auth = format!("Bearer {}", ann["token"].as_str().unwrap_or_default());
        async move {
            let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
            let body = json!({"number": "+1 415 555 0199", "source_id": "acme-twilio"}).to_string();
            let response = send(&client, "POST", &url, &headers, body).await?;
            anyhow::Ok((response.status, response.json()))
        }
    };
    let before = twilio.requests().len();
    let (first, second) = tokio::join!(click(), click());
    let ((s1, b1), (s2, b2)) = (first?, second?);
    assert_eq!((s1, s2), (201, 201), "{b1} {b2}");
    assert_eq!(b1["request_id"], b2["request_id"]);
    assert_eq!(twilio.requests().len(), before + 1, "a double click is one call");
    let metrics = desk.desk.metrics().await?;
    assert!(
        switchboard_tests::metric_series(
            &metrics,
            r#"switchboard_originate_requests_total{result="duplicate",vendor="twilio"}"#
        ) >= 2.0,
        "{metrics}"
    );
    desk.shutdown().await
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn form_urlencoded_pairs(body: &str) -> std::collections::BTreeMap<String, String> {
    form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

/// The calls topic's records of `key`, decoded, in the order they were published.
async fn call_records(
    desk: &Desk,
    key: &str,
    done: impl Fn(&[switchboard_core::model::CallRecord]) -> bool,
) -> anyhow::Result<Vec<switchboard_core::model::CallRecord>> {
    let codecs = switchboard_core::avro::Codecs::new()?;
    let decode = |records: &[(Option<Vec<u8>>, Vec<u8>)]| -> Vec<switchboard_core::model::CallRecord> {
        records
            .iter()
            .filter(|(k, _)| k.as_deref() == Some(key.as_bytes()))
            .filter_map(|(_, v)| codecs.call_record.decode(v).ok())
            .collect()
    };
    let topic = desk.env.topics().calls;
    let records = switchboard_tests::read_topic(&desk.env.brokers, &topic, Duration::from_secs(60), |r| {
        done(&decode(r))
    })
    .await?;
    Ok(decode(&records))
}

/// Dispositions and tags: a code list per source, a wrap-up set by the CRM and then by the agent
/// who took the call (the last one wins), each a new version of the call on the calls topic and
/// shown by the query API; refusals for a code not on the list, a call the agent was not on, and
/// a call that does not exist.
#[tokio::test]
async fn a_wrap_up_sets_the_disposition_and_tags_and_publishes_a_new_version() -> anyhow::Result<()> {
    let mut pipeline = switchboard_tests::SERVICES.to_vec();
    pipeline.push("api");
    let desk = Desk::start("desk-wrap-up", &pipeline).await?;
    let codes =
        json!({"codes": [{"code": "sale", "label": "Sale"}, {"code": "callback", "label": "Call back"}]});
    let (status, list) = desk.api("PUT", "/v1/desk/dispositions/*", codes).await?;
    assert_eq!((status, list["inherited"].as_bool()), (200, Some(false)), "{list}");
    let (status, list) = desk.api("GET", "/v1/desk/sources/pbx/dispositions", Value::Null).await?;
    assert_eq!(
        (status, list["inherited"].as_bool(), list["codes"][1]["label"].as_str()),
        (200, Some(true), Some("Call back"))
    );
    // The source's own list is a resource of its own: none yet, then an empty one (its agents
    // choose no code rather than the default's), then deleted (gone, and the default again).
    let own = "/v1/desk/dispositions/pbx";
    assert_eq!(desk.api("GET", own, Value::Null).await?.0, 404, "no list of its own yet");
    let (status, list) = desk.api("PUT", own, json!({"codes": []})).await?;
    assert_eq!((status, list["codes"].as_array().map(Vec::len)), (200, Some(0)), "{list}");
    let (status, list) = desk.api("GET", own, Value::Null).await?;
    assert_eq!((status, list["inherited"].as_bool()), (200, Some(false)), "{list}");
    let (status, list) = desk.api("GET", "/v1/desk/sources/pbx/dispositions", Value::Null).await?;
    assert_eq!(
        (status, list["inherited"].as_bool(), list["codes"].as_array().map(Vec::len)),
        (200, Some(false), Some(0)),
        "an empty list of its own hides the default: {list}"
    );
    assert_eq!(desk.api("DELETE", own, Value::Null).await?.0, 204);
    assert_eq!(desk.api("GET", own, Value::Null).await?.0, 404, "a deleted list is gone");
    assert_eq!(desk.api("DELETE", own, Value::Null).await?.0, 404, "nothing left to delete");
    let (status, list) = desk.api("GET", "/v1/desk/sources/pbx/dispositions", Value::Null).await?;
    assert_eq!((status, list["inherited"].as_bool()), (200, Some(true)), "{list}");
    let (status, refused) = desk
        .api(
            "PUT",
            "/v1/desk/dispositions/pbx",
            json!({"codes": [{"code": "a", "label": "A"}, {"code": "a", "label": "B"}]}),
        )
        .await?;
    assert_eq!((status, refused["error"].as_str()), (422, Some("invalid_codes")));

    // Ann answers a call and hangs up.
    desk.post(event("c-wrap", "ringing", None, None, json!({}))).await?;
    desk.post(event("c-wrap", "ringing", Some("c-wrap-ann"), Some("101"), json!({}))).await?;
    desk.post(event("c-wrap", "answered", Some("c-wrap-ann"), Some("101"), json!({}))).await?;
    desk.post(event("c-wrap", "hangup", Some("c-wrap-ann"), Some("101"), json!({}))).await?;
    desk.post(event("c-wrap", "hangup", None, None, json!({}))).await?;
    let first = call_records(&desk, "pbx:c-wrap", |r| !r.is_empty()).await?;
    ensure!(!first.is_empty(), "the call was never published");
    assert_eq!(first[0].wrap_up, None);

    let path = "/v1/desk/calls/pbx/c-wrap/disposition";
    let (status, set) = desk
        .api("PUT", path, json!({"code": "callback", "note": "call back Tuesday", "tags": ["vip"]}))
        .await?;
    assert_eq!(status, 202, "{set}");
    assert_eq!((set["wrap_up"]["label"].as_str(), set["pbx"].is_null()), (Some("Call back"), true), "{set}");
    // Published before the next change, so that the call log cannot fold both changes into one
    // batch, and one version, on a loaded machine.
    let _ = call_records(&desk, "pbx:c-wrap", |r| {
        r.last().and_then(|c| c.wrap_up.as_ref()).is_some_and(|w| w.code.as_deref() == Some("callback"))
    })
    .await?;

    // The agent who took the call changes it from her session; a colleague who was not on it
    // cannot; a code not on the list and an unknown call are refused.
    let ann = desk.session(json!({"agent_id": "ann"})).await?;
    let tom = desk.session(json!({"agent_id": "tom"})).await?;
    let as_agent = |session: &Value, body: Value, path: &str| {
        let (client, url) = (desk.client.clone(), desk.desk.url(path));
        let auth = format!("Bearer {}", session["token"].as_str().unwrap_or_default());
        async move {
            let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
            let response = send(&client, "PUT", &url, &headers, body.to_string()).await?;
            anyhow::Ok((response.status, response.json()))
        }
    };
    let (status, refused) = as_agent(&tom, json!({"code": "sale"}), path).await?;
    assert_eq!((status, refused["error"].as_str()), (403, Some("forbidden")));
    let (status, refused) = as_agent(&ann, json!({"code": "won"}), path).await?;
    assert_eq!((status, refused["error"].as_str()), (422, Some("unknown_code")));
    let (status, _) =
        as_agent(&ann, json!({"code": "sale"}), "/v1/desk/calls/pbx/no-such-call/disposition").await?;
    assert_eq!(status, 404);
    let (status, refused) = as_agent(&ann, json!({"tags": ["ok", " "]}), path).await?;
    assert_eq!((status, refused["error"].as_str()), (400, Some("bad_request")));
    let (status, set) =
        as_agent(&ann, json!({"code": "sale", "note": "two seats", "tags": ["vip", "renewal", "vip"]}), path)
            .await?;
    assert_eq!((status, set["wrap_up"]["agent_id"].as_str()), (202, Some("ann")), "{set}");

    // Two more versions on the calls topic, the last one the agent's.
    let records = call_records(&desk, "pbx:c-wrap", |r| {
        r.last().and_then(|c| c.wrap_up.as_ref()).is_some_and(|w| w.code.as_deref() == Some("sale"))
    })
    .await?;
    let codes: Vec<Option<&str>> =
        records.iter().map(|r| r.wrap_up.as_ref().and_then(|w| w.code.as_deref())).collect();
    assert_eq!(codes, [None, Some("callback"), Some("sale")], "one version per change");
    assert!(records.windows(2).all(|w| w[0].version < w[1].version), "versions grow");
    let last = records.last().and_then(|r| r.wrap_up.clone()).context("wrap-up")?;
    assert_eq!(
        (last.label.as_deref(), last.note.as_deref(), last.tags.clone(), last.agent_id.as_deref()),
        (Some("Sale"), Some("two seats"), vec!["vip".to_owned(), "renewal".to_owned()], Some("ann"))
    );
    assert_eq!(records.last().map(|r| r.outcome), records.first().map(|r| r.outcome), "nothing else changed");

    // The query API shows it and filters by tag and disposition.
    // `api` was started last.
    let api_url = |path: &str| desk.others.last().map(|p| p.url(path)).unwrap_or_default();
    let auth = format!("Bearer {TOKEN}");
    let shown =
        send(&desk.client, "GET", &api_url("/v1/calls/pbx/c-wrap"), &[("authorization", &auth)], "").await?;
    assert_eq!(shown.json()["wrap_up"]["code"], "sale", "{:?}", shown.json());
    for (query, found) in
        [("tag=renewal", 1), ("tag=nope", 0), ("disposition=sale,callback", 1), ("disposition=callback", 0)]
    {
        let page = send(
            &desk.client,
            "GET",
            &api_url(&format!("/v1/calls?{query}")),
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert_eq!(page.json()["calls"].as_array().map(Vec::len), Some(found), "{query}: {:?}", page.json());
    }
    let metrics = desk.desk.metrics().await?;
    assert_eq!(
        switchboard_tests::metric_series(&metrics, r#"switchboard_desk_wrap_ups_total{result="set"}"#),
        2.0
    );
    desk.shutdown().await
}

const UCONTACT_GUID: &str = "6b1f3e2a-9c4d-4e8f-a7b1-2c3d4e5f6a7b";

/// uContact's `DispositionCall` (Clever Ideas' reference): `200` with an empty body for an
/// interaction it knows, `0` for one it does not.
fn ucontact_dispositions(seen: &Seen) -> (u16, String) {
    match seen.path.as_str() {
        "/Integra/resources/api/DispositionCall"
            if seen.form().iter().any(|(k, v)| k == "guid" && v == UCONTACT_GUID) =>
        {
            (200, String::new())
        }
        "/Integra/resources/api/DispositionCall" => (200, "0".into()),
        _ => (404, "Not Found".into()),
    }
}

/// A uContact call's wrap-up is filed with uContact too (`DispositionCall`: the campaign, the
/// agent's uContact name, the customer's number as uContact wrote it, the interaction, the label
/// as `l1`, the note and the tags); uContact down is reported in the answer, the wrap-up kept.
#[tokio::test]
async fn a_wrap_up_of_a_ucontact_call_is_filed_with_ucontact() -> anyhow::Result<()> {
    let desk = Desk::start("desk-wrap-ucx", &switchboard_tests::SERVICES).await?;
    let (ucontact, port) = FakeVendor::start(ucontact_dispositions).await?;
    let settings = json!({"timezone": "America/Montevideo", "api_url": format!("http://127.0.0.1:{port}")});
    let added = desk
        .env
        .cli(&[
            "sources",
            "add",
            "acme-ucx",
            "--vendor",
            "ucontact",
            "--region",
            "UY",
            "--settings",
            &settings.to_string(),
            "--api-client-secret",
            "QWRtaW46OTgzNWM1MjU=",
            "--json",
        ])
        .await?;
    let added: Value = serde_json::from_str(added.trim())?;
    let credentials = Credentials {
        user: "acme-ucx".into(),
        secret: added["secret"].as_str().context("secret")?.to_owned(),
    };
    desk.env
        .db()
        .await?
        .batch_execute(
            r#"INSERT INTO agents (id, name, email, extensions, groups, external_ids) VALUES
                 ('ana', 'Ana Pérez', 'ana@example.com', '{2101}', '{ventas}', '{"acme-ucx": "ana.perez"}')"#,
        )
        .await?;
    let codes = json!({"codes": [{"code": "sale", "label": "Venta"}]});
    assert_eq!(desk.api("PUT", "/v1/desk/dispositions/acme-ucx", codes).await?.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await; // the matcher's directory reload

    let finished = format!(
        r#"{{"event":"FinishInteraction","date":"2026-11-01 10:04:02","guid":"{UCONTACT_GUID}","campaign":"Ventas<-","agent":"ana.perez","agentNumber":"2101","callerIdNum":"29153456","channel":"telephony"}}"#
    );
    let ingress = desk.ingress.as_ref().context("ingress")?.url("");
    let posted = post_webhook(&desk.client, &ingress, &credentials, &finished).await?;
    ensure!(posted.status == 202, "webhook: {}", posted.status);
    let key = format!("acme-ucx:{UCONTACT_GUID}");
    let published = call_records(&desk, &key, |r| !r.is_empty()).await?;
    assert_eq!(published.first().and_then(|r| r.queue.as_deref()), Some("Ventas<-"), "the campaign");

    let path = format!("/v1/desk/calls/acme-ucx/{UCONTACT_GUID}/disposition");
    let body = json!({"code": "sale", "note": "Plan hogar & fibra", "tags": ["vip", "renovación"]});
    let (status, set) = desk.api("PUT", &path, body.clone()).await?;
    assert_eq!((status, &set["pbx"]), (202, &json!({"pushed": true})), "{set}");
    let filed = ucontact.requests();
    assert_eq!(filed.len(), 1);
    assert_eq!(filed[0].authorization, "Basic QWRtaW46OTgzNWM1MjU=");
    let fields: std::collections::BTreeMap<String, String> = filed[0].form().into_iter().collect();
    let field = |name: &str| fields.get(name).map(String::as_str);
    assert_eq!(
        [field("campaign"), field("agent"), field("callerid"), field("guid"), field("l1")],
        [Some("Ventas<-"), Some("ana.perez"), Some("29153456"), Some(UCONTACT_GUID), Some("Venta")]
    );
    assert_eq!((field("comment"), field("tag")), (Some("Plan hogar & fibra"), Some("vip,renovación")));

    // uContact down: the wrap-up is still recorded, and the answer says the push failed.
    ucontact.set_down(true);
    let (status, set) = desk.api("PUT", &path, body).await?;
    assert_eq!((status, set["pbx"]["pushed"].as_bool()), (202, Some(false)), "{set}");
    assert!(set["pbx"]["error"].as_str().is_some_and(|e| e.contains("503")), "{set}");
    assert_eq!(ucontact.requests().len(), 2, "one attempt, not retried");
    let metrics = desk.desk.metrics().await?;
    for (result, count) in [("pushed", 1.0), ("failed", 1.0)] {
        let series =
            format!(r#"switchboard_desk_disposition_pushes_total{{result="{result}",vendor="ucontact"}}"#);
        assert_eq!(switchboard_tests::metric_series(&metrics, &series), count, "{series}");
    }
    desk.shutdown().await
}
