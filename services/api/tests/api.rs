//! The query API in process against a real PostgreSQL: a call log written by the call-log writer
//! itself, a directory with agents and contacts, and every endpoint, filter, page and refusal.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use switchboard_calllog::CalllogSettings;
use switchboard_calllog::writer::{CallLog, StoredEvent};
use switchboard_core::config::{PostgresSettings, Settings};
use switchboard_core::model::*;
use switchboard_core::pg;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-0123456789-0123456789abcdef0123456789";

fn t(second: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).single().expect("time") + chrono::Duration::seconds(second)
}

/// A generic event; `agent` is (extension, email, directory id).
#[allow(clippy::too_many_arguments)]
fn event(
    source: &str,
    call: &str,
    n: usize,
    leg: Option<&str>,
    kind: EventKind,
    second: i64,
    direction: Direction,
    agent: Option<(&str, &str, &str)>,
) -> StoredEvent {
    let mut e = CallEvent::empty(
        SourceId::parse(source).expect("source"),
        Vendor::Generic,
        CallId::parse(call).expect("call"),
        EventId::parse(format!("{call}-{n}")).expect("id"),
        kind,
        t(second),
    );
    e.raw_id = format!("raw-{call}-{n}");
    e.leg_id = leg.map(|l| LegId::parse(l).expect("leg"));
    e.direction = direction;
    if let Some((extension, email, id)) = agent {
        e.agent_extension = Some(extension.into());
        e.agent_email = Some(email.into());
        e.agent_id = Some(id.into());
        e.agent_match = Some(AgentMatch::Extension);
    }
    StoredEvent { event: e, partition: 0, offset: n as i64 }
}

/// `e` to `to`, a number that parsed.
fn numbers_to(mut e: StoredEvent, to: &str) -> StoredEvent {
    e.event.to_raw = Some(to.into());
    e.event.to_e164 = PhoneNumber::from_e164(to).ok();
    e
}

fn numbers(mut e: StoredEvent, from: &str, to: &str) -> StoredEvent {
    e.event.from_raw = Some(from.into());
    e.event.from_e164 = PhoneNumber::from_e164(from).ok();
    e.event.to_raw = Some(to.into());
    e.event.to_e164 = PhoneNumber::from_e164(to).ok();
    e
}

const ANN: (&str, &str, &str) = ("101", "Ann@Example.com", "ann");
const BOB: (&str, &str, &str) = ("102", "bob@example.com", "bob");

/// Four calls of note and 30 more for paging.
fn call_log() -> Vec<StoredEvent> {
    use Direction::*;
    use EventKind::*;
    let mut events = Vec::new();
    // Answered by Ann, matched to contact c-1, recorded.
    let mut ring = numbers(
        event("pbx-gb", "answered", 0, None, Ringing, 0, Inbound, None),
        "+442079460000",
        "+442071234567",
    );
    ring.event.contact_ids = vec!["c-1".into()];
    ring.event.contact_match = Some(ContactMatch::Unique);
    ring.event.responsible_agent_id = Some("ann".into());
    events.push(ring);
    events.push(event("pbx-gb", "answered", 1, Some("answered-ann"), Ringing, 1, Inbound, Some(ANN)));
    events.push(event("pbx-gb", "answered", 2, Some("answered-ann"), Answered, 5, Inbound, Some(ANN)));
    events.push(event("pbx-gb", "answered", 3, Some("answered-ann"), Hangup, 65, Inbound, Some(ANN)));
    let mut end = event("pbx-gb", "answered", 4, None, Hangup, 66, Inbound, None);
    end.event.hangup_cause = Some("normal_clearing".into());
    events.push(end);
    let mut recording = event("pbx-gb", "answered", 5, None, Recording, 70, Inbound, None);
    recording.event.recording_url = Some("https://recordings.example/answered.mp3".into());
    events.push(recording);
    // Missed: Ann and Bob rang out.
    events.push(numbers(
        event("pbx-gb", "missed", 0, None, Ringing, 100, Inbound, None),
        "+442079460001",
        "+442071234567",
    ));
    for (n, (leg, agent)) in [("missed-ann", ANN), ("missed-bob", BOB)].into_iter().enumerate() {
        events.push(event("pbx-gb", "missed", 1 + n, Some(leg), Ringing, 101, Inbound, Some(agent)));
        let mut out = event("pbx-gb", "missed", 3 + n, Some(leg), Hangup, 120, Inbound, Some(agent));
        out.event.disposition = Some(Disposition::NoAnswer);
        events.push(out);
    }
    events.push(event("pbx-gb", "missed", 5, None, Hangup, 121, Inbound, None));
    // Outbound by Bob, answered; its call id needs encoding in a URL.
    let outbound = "out/1 x?";
    events.push(numbers(
        event("pbx-gb", outbound, 0, Some("bob-leg"), Ringing, 200, Outbound, Some(BOB)),
        "+442071234567",
        "+14155550100",
    ));
    events.push(event("pbx-gb", outbound, 1, Some("bob-leg"), Answered, 210, Outbound, Some(BOB)));
    events.push(event("pbx-gb", outbound, 2, None, Hangup, 300, Outbound, None));
    // Another source: abandoned in the voice menu.
    events.push(numbers(
        event("other", "ivr", 0, None, Ringing, 400, Inbound, None),
        "+14155550199",
        "+14155550100",
    ));
    events.push(event("other", "ivr", 1, None, Hangup, 410, Inbound, None));
    for n in 0..30 {
        let call = format!("bulk-{n:02}");
        events.push(event("bulk", &call, 0, None, Ringing, 1000 + n, Inbound, None));
    }
    events
}

struct Fixture {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    database: String,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start(name: &str) -> Self {
        let (pool, database) =
            switchboard_schema::scratch::database(&format!("sb_test_api_{name}"), 4).await.expect("database");
        let log = CallLog::new(pool.clone(), &CalllogSettings::default()).expect("log");
        let _ = log.write_batch(&call_log()).await.expect("write");
        let client = pool.get().await.expect("client");
        client
            .batch_execute(
                "INSERT INTO sources (id, vendor, secret_sha256, default_region)
                     VALUES ('pbx-gb', 'generic', decode(repeat('00', 32), 'hex'), 'GB');
                 INSERT INTO agents (id, name, email, extensions) VALUES
                     ('ann', 'Ann Smith', 'ann@example.com', '{101}'),
                     ('bob', 'Bob Jones', 'bob@example.com', '{102}');
                 INSERT INTO contacts (id, name, company, phone_numbers, responsible_agent_id)
                     VALUES ('c-1', 'Carol Client', 'Acme Ltd', '{+442079460000}', 'ann');",
            )
            .await
            .expect("directory");

        let mut settings = Settings::default();
        (settings.postgres, settings.api, settings.http) = (
            PostgresSettings {
                url: switchboard_schema::scratch::url_of(&database),
                pool_size: 4,
                create_database: false,
                ..PostgresSettings::default()
            },
            switchboard_core::config::ApiSettings {
                tokens: vec![switchboard_core::model::Secret::new(TOKEN)],
                ..Default::default()
            },
            // The ops port (metrics) on a free port of its own, apart from the public one.
            switchboard_core::config::HttpSettings {
                ops_listen: Some(([127, 0, 0, 1], 0).into()),
                ..Default::default()
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let cancel = CancellationToken::new();
        let server = tokio::spawn({
            let cancel = cancel.clone();
            async move { switchboard_api::run(settings, listener, cancel).await.expect("api runs") }
        });
        let fixture = Fixture {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
            database,
            cancel,
            server,
        };
        for _ in 0..100 {
            if fixture.get_with("/readyz", None).await.0 == 200 {
                return fixture;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the API did not become ready");
    }

    async fn get_with(&self, path: &str, token: Option<&str>) -> (u16, Value, http::HeaderMap) {
        let mut request = http::Request::get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = self
            .client
            .request(request.body(Full::new(Bytes::new())).expect("request"))
            .await
            .expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into())),
            headers,
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body, _) = self.get_with(path, Some(TOKEN)).await;
        (status, body)
    }

    /// The call ids a list answers with, in order.
    async fn ids(&self, query: &str) -> Vec<String> {
        let (status, body) = self.get(&format!("/v1/calls?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        body["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| c["call_id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// A pool of the fixture's database, for writing more calls.
    async fn pool(&self) -> deadpool_postgres::Pool {
        let settings = PostgresSettings {
            url: switchboard_schema::scratch::url_of(&self.database),
            pool_size: 1,
            create_database: false,
            ..PostgresSettings::default()
        };
        pg::connect_and_migrate(&settings, switchboard_schema::MIGRATIONS, &CancellationToken::new())
            .await
            .expect("db")
            .expect("pool")
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.server.await;
        let _ = switchboard_schema::scratch::drop(&self.database).await;
    }
}

#[tokio::test]
async fn filters_select_the_right_calls() {
    let api = Fixture::start("filters").await;
    let not_bulk = "source=pbx-gb";
    assert_eq!(api.ids(not_bulk).await, ["out/1 x?", "missed", "answered"], "newest first");
    // A number in any format: E.164, national with a region, national in the source's region,
    // digits without the plus.
    for number in ["%2B44%2020%207946%200000", "020+7946+0000&region=GB", "442079460000"] {
        assert_eq!(api.ids(&format!("number={number}")).await, ["answered"], "{number}");
    }
    assert_eq!(api.ids("number=020%207946%200001&source=pbx-gb").await, ["missed"]);
    assert_eq!(api.ids("number=%2B14155550100").await, ["ivr", "out/1 x?"], "from or to");
    // The agent by directory id, extension or email in any case; whoever rang counts.
    assert_eq!(api.ids(&format!("agent=bob&{not_bulk}")).await, ["out/1 x?", "missed"]);
    assert_eq!(api.ids("agent=101").await, ["missed", "answered"]);
    assert_eq!(api.ids("agent=ANN@example.COM").await, ["missed", "answered"]);
    assert_eq!(api.ids("outcome=missed,abandoned_in_ivr").await, ["ivr", "missed"]);
    assert_eq!(api.ids("direction=outbound").await, ["out/1 x?"]);
    assert_eq!(api.ids("contact=c-1").await, ["answered"]);
    assert_eq!(api.ids("source=other&status=ended&complete=true").await, ["ivr"]);
    assert_eq!(api.ids("complete=false&limit=3").await, ["bulk-29", "bulk-28", "bulk-27"], "open calls");
    assert_eq!(
        api.ids("from=2026-11-21T09:01:40Z&to=2026-11-21T09:06:41Z").await,
        ["ivr", "out/1 x?", "missed"]
    );
    assert_eq!(
        api.ids("from=2026-11-21T09:01:40Z&to=2026-11-21T09:06:40Z").await,
        ["out/1 x?", "missed"],
        "to is exclusive"
    );
    assert_eq!(
        api.ids("from=2026-11-21T10:01:40%2B01:00&to=2026-11-21T09:03:20Z").await,
        ["missed"],
        "offsets"
    );
    api.stop().await;
}

#[tokio::test]
async fn numbers_that_did_not_parse_are_found_by_their_digits() {
    let api = Fixture::start("unparsed").await;
    // Calls from numbers no adapter could read, kept as the PBX wrote them: a UK range reserved for
    // drama, spaced; and one in E.164 shape, as vendors that send E.164 write it.
    let unread = |call: &str, from: &str, second: i64| {
        let mut e = event("pbx-gb", call, 0, None, EventKind::Ringing, second, Direction::Inbound, None);
        e.event.from_raw = Some(from.into());
        numbers_to(e, "+442071234567")
    };
    let events = [unread("drama", "07700 900103", 500), unread("drama-intl", "+447700900104", 501)];
    let _ = CallLog::new(api.pool().await, &CalllogSettings::default())
        .expect("log")
        .write_batch(&events)
        .await
        .expect("write");

    for number in [
        "07700+900103",
        "07700900103",
        "07700-900-103",
        "%2807700%29%20900%20103",
        "07700+900103&region=GB",
        "07700+900103&source=pbx-gb",
    ] {
        assert_eq!(api.ids(&format!("number={number}")).await, ["drama"], "{number}");
    }
    for number in ["%2B447700900104", "%2B44+7700+900104", "447700900104"] {
        assert_eq!(api.ids(&format!("number={number}")).await, ["drama-intl"], "{number}");
    }
    let (_, page) = api.get("/v1/calls?number=07700900103").await;
    assert_eq!(page["calls"][0]["from_number"], "07700 900103", "shown as stored");
    // Digits match digits, not a part of them; parsed numbers are still matched in E.164.
    assert_eq!(api.ids("number=0770090010").await, Vec::<String>::new());
    assert_eq!(api.ids("number=%2B442071234567&source=pbx-gb&limit=2").await, ["drama-intl", "drama"]);
    api.stop().await;
}

#[tokio::test]
async fn keyset_pages_cover_every_call_once() {
    let api = Fixture::start("pages").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("/v1/calls?limit=7&cursor={c}"),
            None => "/v1/calls?limit=7".to_owned(),
        };
        let (status, body) = api.get(&query).await;
        assert_eq!(status, 200, "{body}");
        let calls = body["calls"].as_array().expect("calls");
        seen.extend(calls.iter().map(|c| c["call_id"].as_str().expect("id").to_owned()));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        // Calls arriving between pages land before the cursor and do not disturb it.
        if pages == 2 {
            let log_pool = pg::connect_and_migrate(
                &PostgresSettings {
                    url: switchboard_schema::scratch::url_of(&api.database),
                    pool_size: 1,
                    create_database: false,
                    ..PostgresSettings::default()
                },
                switchboard_schema::MIGRATIONS,
                &CancellationToken::new(),
            )
            .await
            .expect("db")
            .expect("pool");
            let newer = event("bulk", "newest", 0, None, EventKind::Ringing, 5000, Direction::Inbound, None);
            let _ = CallLog::new(log_pool, &CalllogSettings::default())
                .expect("log")
                .write_batch(&[newer])
                .await
                .expect("write");
        }
    }
    assert_eq!(pages, 5, "34 calls in pages of 7");
    assert_eq!(seen.len(), 34, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 34, "no call twice");
    assert!(!seen.contains(&"newest".to_owned()), "a call newer than the first page is on page one only");
    assert_eq!(api.ids("limit=1").await, ["newest"]);
    api.stop().await;
}

#[tokio::test]
async fn one_call_has_legs_events_agent_contact_and_recording() {
    let api = Fixture::start("detail").await;
    let (status, call) = api.get("/v1/calls/pbx-gb/answered").await;
    assert_eq!(status, 200, "{call}");
    assert_eq!((call["outcome"].as_str(), call["status"].as_str()), (Some("answered"), Some("ended")));
    assert_eq!(call["from_number"], "+442079460000");
    assert_eq!((call["talk_seconds"].as_i64(), call["duration_seconds"].as_i64()), (Some(61), Some(66)));
    let agent = &call["agent"];
    assert_eq!((agent["id"].as_str(), agent["name"].as_str()), (Some("ann"), Some("Ann Smith")));
    assert_eq!(
        (agent["extension"].as_str(), agent["email"].as_str()),
        (Some("101"), Some("Ann@Example.com"))
    );
    assert_eq!(call["contacts"][0]["name"], "Carol Client");
    assert_eq!(call["contacts"][0]["company"], "Acme Ltd");
    assert_eq!(call["contacts"][0]["responsible_agent"]["name"], "Ann Smith");
    assert_eq!(call["contact"]["match"], "unique");
    assert_eq!(call["recording"]["url"], "https://recordings.example/answered.mp3");
    assert_eq!(call["complete"], true);
    let legs = call["legs"].as_array().expect("legs");
    assert_eq!(legs.len(), 2, "the main leg and Ann's");
    assert_eq!(
        (legs[1]["leg_id"].as_str(), legs[1]["answered"].as_bool()),
        (Some("answered-ann"), Some(true))
    );
    let kinds: Vec<&str> =
        call["events"].as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["ringing", "ringing", "answered", "hangup", "hangup", "recording"]);

    let (status, missed) = api.get("/v1/calls/pbx-gb/missed").await;
    assert_eq!(status, 200);
    let rang: Vec<(&str, bool)> = missed["legs"]
        .as_array()
        .expect("legs")
        .iter()
        .filter_map(|l| Some((l["agent"]["name"].as_str()?, l["answered"].as_bool()?)))
        .collect();
    assert_eq!(rang, [("Ann Smith", false), ("Bob Jones", false)], "who rang, nobody answered");
    assert_eq!(missed["agent"], Value::Null);

    // A call id that needs encoding, found through the href the list gives.
    let (_, list) = api.get("/v1/calls?direction=outbound").await;
    let href = list["calls"][0]["href"].as_str().expect("href");
    assert_eq!(href, "/v1/calls/pbx-gb/out%2F1%20x%3F");
    let (status, outbound) = api.get(href).await;
    assert_eq!((status, outbound["call_id"].as_str()), (200, Some("out/1 x?")));
    assert_eq!(api.get("/v1/calls/pbx-gb/nope").await.0, 404);
    assert_eq!(api.get("/v1/calls/pbx-gb").await.0, 404);
    api.stop().await;
}

#[tokio::test]
async fn refusals_say_why() {
    let api = Fixture::start("refusals").await;
    for query in [
        "from=yesterday",
        "outcome=lost",
        "direction=up",
        "limit=1000",
        "cursor=xyz",
        "number=02-01",
        "number=hello",
        "region=ZZ&number=020",
        "sauce=pbx-gb",
    ] {
        let (status, body) = api.get(&format!("/v1/calls?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{query}: {body}");
    }
    for token in [None, Some("wrong-token"), Some("")] {
        let (status, body, headers) = api.get_with("/v1/calls", token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
        assert_eq!(api.get_with("/v1/calls/pbx-gb/answered", token).await.0, 401, "no call is disclosed");
    }
    assert_eq!(api.get("/v2/anything").await.0, 404);
    let post = http::Request::post(format!("{}/v1/calls", api.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(api.client.request(post).await.expect("response").status().as_u16(), 405);
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(api.get_with(probe, None).await.0, 200, "{probe} needs no token");
    }
    // The public port shows no metrics (#18): they are on the ops port, in this process's registry.
    assert_eq!(api.get_with("/metrics", None).await.0, 404, "no metrics on the public port");
    let text = &switchboard_core::metrics::render();
    assert!(
        text.contains("switchboard_api_requests_total{endpoint=\"list_calls\",status=\"400\"}"),
        "{text}"
    );
    assert!(text.contains("switchboard_api_requests_total{endpoint=\"list_calls\",status=\"401\"}"));
    api.stop().await;
}

#[tokio::test]
async fn calls_of_blacklisted_numbers_are_marked_when_read() {
    let api = Fixture::start("blacklist").await;
    let db = api.pool().await;
    let client = db.get().await.expect("client");
    // The missed call's caller and the outbound call's callee are blacklisted; the answered call's
    // caller was, until yesterday. The ivr call went *to* a blacklisted number, but inbound: its
    // caller is what counts.
    client
        .batch_execute(
            "INSERT INTO blacklist (number, reason, expires_at) VALUES
                 ('+442079460001', 'pest', NULL),
                 ('+14155550100', NULL, now() + interval '1 hour'),
                 ('+442079460000', 'was a pest', now() - interval '1 day');",
        )
        .await
        .expect("blacklist");
    let (status, page) = api.get("/v1/calls?limit=4").await;
    assert_eq!(status, 200, "{page}");
    let marked = |page: &Value| -> Vec<(String, bool)> {
        page["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| {
                (c["call_id"].as_str().expect("id").to_owned(), c["blacklisted"].as_bool().expect("flag"))
            })
            .collect()
    };
    assert_eq!(marked(&page)[..1], [("bulk-29".to_owned(), false)], "calls without numbers are not");
    assert_eq!(api.ids("blacklisted=true").await, ["out/1 x?", "missed"]);
    assert_eq!(api.ids("blacklisted=false&source=pbx-gb").await, ["answered"]);
    assert_eq!(api.ids("blacklisted=false&source=other").await, ["ivr"]);
    let (_, page) = api.get("/v1/calls?source=pbx-gb").await;
    assert_eq!(
        marked(&page),
        [("out/1 x?".to_owned(), true), ("missed".to_owned(), true), ("answered".to_owned(), false)]
    );
    let (status, missed) = api.get("/v1/calls/pbx-gb/missed").await;
    assert_eq!((status, missed["blacklisted"].as_bool()), (200, Some(true)));
    // At the time of the query: taken off the list, the call is no longer marked.
    let _ =
        client.execute("DELETE FROM blacklist WHERE number = '+442079460001'", &[]).await.expect("delete");
    assert_eq!(api.get("/v1/calls/pbx-gb/missed").await.1["blacklisted"], false);
    assert_eq!(api.ids("blacklisted=true").await, ["out/1 x?"]);
    let (status, body) = api.get("/v1/calls?blacklisted=yes").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("blacklisted")), "{body}");
    api.stop().await;
}
