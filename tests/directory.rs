//! The directory end to end: the admin API (imports with per-row reports, upserts, deletes,
//! bearer tokens), the router's answers in each PBX's format and every fallback path, and the
//! matcher enriching events through the real pipeline — with directory changes reaching the
//! router and the matcher within a second. The blacklist: numbers added and removed one by one
//! and in bulk, refused by the router in each PBX's format (or sent to a configured target) until
//! removed or expired, and the calls they make marked by the query API.

use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_core::avro::Codecs;
use switchboard_core::model::{AgentMatch, CallEvent, ContactMatch};
use switchboard_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "admin-token-for-tests-0123456789abcdef0123456789";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn admin(
    client: &HttpClient,
    router: &ServiceProcess,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> anyhow::Result<HttpResponse> {
    let auth = bearer();
    send(
        client,
        method,
        &router.url(path),
        &[("authorization", &auth), ("content-type", content_type)],
        body.to_owned(),
    )
    .await
}

fn router_env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name);
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.set("SWITCHBOARD_ROUTER__REGION", "RU");
    env.set("SWITCHBOARD_ROUTER__FALLBACK", "700");
    env
}

async fn text(client: &HttpClient, url: &str) -> anyhow::Result<(u16, String)> {
    let response = get(client, url).await?;
    Ok((response.status, String::from_utf8(response.body.to_vec())?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_answers_each_pbx_format_and_follows_changes_within_a_second() -> anyhow::Result<()> {
    let env = router_env("router");
    env.init().await?;
    let router = env.start("router").await?;
    let client = http_client();

    // No token, wrong token: 401 before anything else.
    let response = send(&client, "GET", &router.url("/v1/agents"), &[], "").await?;
    assert_eq!(response.status, 401);
    let response =
        send(&client, "GET", &router.url("/v1/agents"), &[("authorization", "Bearer nope")], "").await?;
    assert_eq!(response.status, 401);

    let agents = r#"[
        {"id": "ann", "name": "Ann", "email": "ann@example.com", "extensions": ["101"], "phone_numbers": ["8 495 111-11-11"]},
        {"id": "bob", "name": "Bob", "extensions": ["102"]},
        {"id": "bad", "name": ""},
        {"id": "ann", "name": "Ann again"}
    ]"#;
    let report =
        admin(&client, &router, "POST", "/v1/agents/import", "application/json", agents).await?.json();
    assert_eq!(report["imported"], 2, "{report}");
    assert_eq!(report["rejected"], 2, "{report}");
    assert_eq!(report["errors"][0]["row"], 3, "{report}");
    assert_eq!(report["errors"][1]["row"], 4, "{report}");
    assert!(report["errors"][1]["error"].as_str().unwrap_or_default().contains("duplicate"));

    let contacts = "id,name,company,phone_numbers,responsible_agent_id\n\
        alice,Alice,Acme,8 (495) 123-45-67;+7 916 123-45-67,ann\n\
        twin-1,Front desk,Initech,84957654321,ann\n\
        twin-2,Back office,Initech,+7 495 765-43-21,bob\n\
        orphan,Orphan,,84951112233,\n\
        ghost,Ghost,,84952223344,nobody\n\
        junk,Junk,,12,ann\n";
    let report = admin(&client, &router, "POST", "/v1/contacts/import", "text/csv", contacts).await?.json();
    assert_eq!(report["imported"], 4, "{report}");
    let errors = report["errors"].as_array().context("errors")?;
    assert_eq!(errors.len(), 2, "{report}");
    assert_eq!((errors[0]["row"].as_i64(), errors[1]["row"].as_i64()), (Some(5), Some(6)), "{report}");
    assert!(errors[0]["error"].as_str().unwrap_or_default().contains("nobody"), "{report}");

    let stored = admin(&client, &router, "GET", "/v1/contacts/alice", "application/json", "").await?.json();
    assert_eq!(stored["phone_numbers"], serde_json::json!(["+74951234567", "+79161234567"]));
    let by_number =
        admin(&client, &router, "GET", "/v1/contacts?number=%2B74957654321", "application/json", "").await?;
    assert_eq!(by_number.json()["contacts"].as_array().map(Vec::len), Some(2));
    let bad_page = admin(&client, &router, "GET", "/v1/contacts?limit=0", "application/json", "").await?;
    assert_eq!(bad_page.status, 400);
    // A parameter the endpoint does not take, and whitespace for a body, are refused: the
    // schemathesis run found both accepted (ST201).
    for (method, path, body) in [
        ("GET", "/v1/contacts?regoin=GB", ""),
        ("GET", "/v1/agents/ann?region=GB", ""),
        ("PUT", "/v1/own-numbers/%2B74950000000?x=1", ""),
        ("PUT", "/v1/own-numbers/%2B74950000000", " \n"),
        ("PUT", "/v1/blacklist/%2B74950000000", "\t"),
    ] {
        let response = admin(&client, &router, method, path, "application/json", body).await?;
        assert_eq!(response.status, 400, "{method} {path} {body:?}");
    }
    let empty =
        admin(&client, &router, "PUT", "/v1/own-numbers/%2B74950000000?region=RU", "application/json", "");
    assert_eq!(empty.await?.status, 200);

    // The change feed has to deliver the import before the first lookup.
    let telphin = router.url("/cid/807/getmanager/TLP55522?CallerIDNum=84951234567");
    let expected = "<Response><SetVar name=\"transferDestination\">101</SetVar></Response>";
    wait_until(Duration::from_secs(5), async || Ok(text(&client, &telphin).await?.1 == expected)).await?;

    // Telphin by POST form, Zadarma, its URL check, and JSON.
    let response = send(
        &client,
        "POST",
        &router.url("/cid/807/getmanager/TLP55522"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "CallID=1&CallerIDNum=%2B74951234567&CallFlow=IN",
    )
    .await?;
    assert_eq!(
        (response.status, String::from_utf8_lossy(&response.body).into_owned()),
        (200, expected.into())
    );
    let response = send(
        &client,
        "POST",
        &router.url("/v1/route/zadarma"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "event=NOTIFY_START&caller_id=74951234567&called_did=74950000000",
    )
    .await?;
    assert_eq!(response.json(), serde_json::json!({"redirect": "101"}));
    assert_eq!(text(&client, &router.url("/v1/route/zadarma?zd_echo=abc123")).await?, (200, "abc123".into()));
    let json = get(&client, &router.url("/v1/route?caller=%2B79161234567")).await?.json();
    assert_eq!((json["destination"].as_str(), json["agent_id"].as_str()), (Some("101"), Some("ann")));

    // Every fallback is a 200 with the configured destination and its reason.
    for (caller, reason) in [
        ("84959999999", "fallback_unknown_caller"),
        ("anonymous", "fallback_unknown_caller"),
        ("84957654321", "fallback_ambiguous"),
        ("84951112233", "fallback_no_agent"),
    ] {
        let json = get(&client, &router.url(&format!("/v1/route?caller={caller}"))).await?.json();
        assert_eq!(json["destination"], "700", "{caller}: {json}");
        assert_eq!(json["reason"], reason, "{caller}: {json}");
    }
    let (status, body) = text(&client, &router.url("/v1/route?caller=84951234567&format=nonsense")).await?;
    assert_eq!(status, 200);
    assert!(body.contains("fallback_bad_request"), "{body}");

    // A new responsible agent reaches the router within a second of the commit.
    let changed = Instant::now();
    let put = admin(
        &client,
        &router,
        "PUT",
        "/v1/contacts/alice",
        "application/json",
        r#"{"name": "Alice", "phone_numbers": ["+74951234567"], "responsible_agent_id": "bob"}"#,
    )
    .await?;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let json_url = router.url("/v1/route?caller=84951234567");
    wait_until(Duration::from_secs(1), async || {
        Ok(get(&client, &json_url).await?.json()["destination"] == "102")
    })
    .await
    .context("the change did not reach the router within a second")?;
    assert!(changed.elapsed() < Duration::from_secs(1));

    // Deleting the agent leaves the contact without one: the fallback again.
    let response = admin(&client, &router, "DELETE", "/v1/agents/bob", "application/json", "").await?;
    assert_eq!(response.status, 204);
    wait_until(Duration::from_secs(1), async || {
        Ok(get(&client, &json_url).await?.json()["reason"] == "fallback_no_agent")
    })
    .await?;
    let response = admin(&client, &router, "DELETE", "/v1/agents/bob", "application/json", "").await?;
    assert_eq!(response.status, 404);
    // A contact naming an unknown agent is refused with the reason.
    let response = admin(
        &client,
        &router,
        "PUT",
        "/v1/contacts/zed",
        "application/json",
        r#"{"name": "Zed", "responsible_agent_id": "nobody"}"#,
    )
    .await?;
    assert_eq!(response.status, 422, "{:?}", response.body);

    let metrics = router.metrics().await?;
    assert!(
        metric_series(&metrics, "switchboard_router_lookups_total{format=\"telphin\",outcome=\"agent\"}")
            >= 2.0
    );
    assert!(
        metric_series(
            &metrics,
            "switchboard_router_lookups_total{format=\"json\",outcome=\"fallback_ambiguous\"}"
        ) >= 1.0
    );
    drop(router);
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_falls_back_without_a_database_and_on_slow_requests() -> anyhow::Result<()> {
    let mut env = router_env("router-down");
    // Nothing listens there: the router must still answer every lookup.
    env.set("SWITCHBOARD_POSTGRES__URL", format!("postgres://postgres@127.0.0.1:{}/none", free_port()));
    env.set("SWITCHBOARD_ROUTER__LOOKUP_TIMEOUT_MS", "200");
    let router = env.spawn("router", &[])?;
    let client = http_client();
    wait_until(Duration::from_secs(20), async || Ok(get(&client, &router.url("/healthz")).await.is_ok()))
        .await?;
    let started = Instant::now();
    let (status, body) = text(&client, &router.url("/cid/1/getmanager/x?CallerIDNum=84951234567")).await?;
    assert_eq!(status, 200);
    assert_eq!(body, "<Response><SetVar name=\"transferDestination\">700</SetVar></Response>");
    assert!(started.elapsed() < Duration::from_millis(200), "answered at once, not after a timeout");
    let json = get(&client, &router.url("/v1/route?caller=84951234567")).await?.json();
    assert_eq!(json["reason"], "fallback_not_loaded");
    assert_eq!(get(&client, &router.url("/readyz")).await?.status, 503);
    let response =
        send(&client, "GET", &router.url("/v1/agents"), &[("authorization", &bearer())], "").await?;
    assert_eq!(response.status, 503, "the admin API says the database is not there");

    // A request whose body never arrives gets the fallback when the budget runs out.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", router.port)).await?;
    stream
        .write_all(
            b"POST /v1/route?format=zadarma HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 100\r\n\r\ncaller_id=7",
        )
        .await?;
    let started = Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"redirect":"700"}"#), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
    let metrics = router.metrics().await?;
    assert!(
        metric_series(
            &metrics,
            "switchboard_router_lookups_total{format=\"zadarma\",outcome=\"fallback_timeout\"}"
        ) >= 1.0
    );
    drop(router);
    env.cleanup().await;
    Ok(())
}

/// Reads matched events until `count` distinct ones arrived.
async fn matched_events(env: &TestEnv, count: usize) -> anyhow::Result<Vec<CallEvent>> {
    let codecs = Codecs::new()?;
    let records =
        read_topic(&env.brokers, &env.topics().matched, Duration::from_secs(120), |r| r.len() >= count)
            .await?;
    records.iter().map(|(_, payload)| Ok(codecs.call_event.decode(payload)?)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_matcher_enriches_events_and_follows_directory_changes() -> anyhow::Result<()> {
    let env = TestEnv::new("matcher");
    env.init().await?;
    let plain = env.add_source("plain", "GB").await?;
    let out = env
        .cli(&[
            "sources",
            "add",
            "by-email",
            "--region",
            "GB",
            "--settings",
            r#"{"match_agent_by_email": true}"#,
            "--json",
        ])
        .await?;
    let by_email: serde_json::Value = serde_json::from_str(out.trim())?;
    let by_email = Credentials {
        user: "by-email".into(),
        secret: by_email["secret"].as_str().context("secret")?.to_owned(),
    };
    let db = env.db().await?;
    db.batch_execute(
        "INSERT INTO agents (id, name, email, extensions, phone_numbers) VALUES
             ('ann', 'Ann', 'ann@example.com', '{101}', '{+442079460101}'),
             ('bob', 'Bob', 'bob@example.com', '{102}', '{}');
         INSERT INTO contacts (id, name, phone_numbers, responsible_agent_id) VALUES
             ('alice', 'Alice', '{+442079460000}', 'ann'),
             ('desk-1', 'Desk 1', '{+442079461111}', NULL),
             ('desk-2', 'Desk 2', '{+442079461111}', NULL);
         INSERT INTO own_numbers (number) VALUES ('+442079469999');",
    )
    .await?;
    let pipeline = env.start_pipeline().await?;
    let client = http_client();
    let ingress = pipeline.ingress_url("");
    let post = |credentials: &Credentials, body: String| {
        let (client, ingress, credentials) = (client.clone(), ingress.clone(), credentials.clone());
        async move {
            let response = post_webhook(&client, &ingress, &credentials, &body).await?;
            anyhow::ensure!(response.status == 202, "{:?}", response.body);
            anyhow::Ok(())
        }
    };
    let now = chrono::Utc::now().to_rfc3339();
    let body = |call: &str, extra: &str| {
        format!(
            r#"{{"call_id": "{call}", "event": "ringing", "timestamp": "{now}", "direction": "inbound", {extra}}}"#
        )
    };
    post(&plain, body("c1", r#""from": "020 7946 0000", "agent": {"number": "101"}"#)).await?;
    post(&plain, body("c2", r#""from": "+44 20 7946 1111", "agent": {"email": "bob@example.com"}"#)).await?;
    post(&by_email, body("c3", r#""from": "442079469999", "agent": {"email": "BOB@example.com"}"#)).await?;
    post(&plain, body("c4", r#""from": "+44 20 7946 5555", "agent": {"number": "020 7946 0101"}"#)).await?;

    let events = matched_events(&env, 4).await?;
    let by_call =
        |call: &str| events.iter().find(|e| e.call_id.as_str() == call).cloned().context(call.to_owned());
    let c1 = by_call("c1")?;
    assert_eq!((c1.agent_id.as_deref(), c1.agent_match), (Some("ann"), Some(AgentMatch::Extension)));
    assert_eq!(
        (c1.contact_match, c1.contact_ids.clone()),
        (Some(ContactMatch::Unique), vec!["alice".to_owned()])
    );
    assert_eq!(c1.responsible_agent_id.as_deref(), Some("ann"));
    let c2 = by_call("c2")?;
    assert_eq!(c2.agent_id, None, "email matching is off for this source");
    assert_eq!(c2.contact_match, Some(ContactMatch::Ambiguous));
    assert_eq!(c2.contact_ids, vec!["desk-1".to_owned(), "desk-2".to_owned()]);
    let c3 = by_call("c3")?;
    assert_eq!((c3.agent_id.as_deref(), c3.agent_match), (Some("bob"), Some(AgentMatch::Email)));
    assert_eq!(c3.contact_match, Some(ContactMatch::OwnNumber));
    let c4 = by_call("c4")?;
    assert_eq!((c4.agent_id.as_deref(), c4.agent_match), (Some("ann"), Some(AgentMatch::Number)));
    assert_eq!(c4.contact_match, Some(ContactMatch::None));

    // A directory change reaches the matcher within a second.
    db.execute("UPDATE contacts SET responsible_agent_id = 'bob' WHERE id = 'alice'", &[]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    post(&plain, body("c5", r#""from": "020 7946 0000""#)).await?;
    let events = matched_events(&env, 5).await?;
    let c5 = events.iter().find(|e| e.call_id.as_str() == "c5").context("c5")?;
    assert_eq!(c5.responsible_agent_id.as_deref(), Some("bob"));

    let metrics = pipeline.services["matcher"].metrics().await?;
    assert!(
        metric_series(
            &metrics,
            "switchboard_matcher_matches_total{result=\"ambiguous\",subject=\"contact\"}"
        ) >= 1.0
    );
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_need_a_token_unless_explicitly_open() -> anyhow::Result<()> {
    let mut env = router_env("lookuptokens");
    env.init().await?;
    // Neither tokens nor open lookups: refused before any port is bound.
    env.set("SWITCHBOARD_ROUTER__OPEN_LOOKUPS", "false");
    let mut refused = env.spawn("router", &[])?;
    assert_eq!(refused.wait_exit(Duration::from_secs(10)).await?, Some(64));

    env.set("SWITCHBOARD_ROUTER__LOOKUP_TOKENS", r#"["pbx-lookup-token-0123456789abcdef"]"#);
    let router = env.start("router").await?;
    let client = http_client();
    let agents = r#"[{"id": "ann", "name": "Ann", "extensions": ["101"]}]"#;
    let contacts = r#"[{"id": "alice", "name": "Alice", "phone_numbers": ["8 495 123-45-67"], "responsible_agent_id": "ann"}]"#;
    assert_eq!(
        admin(&client, &router, "POST", "/v1/agents/import", "application/json", agents).await?.status,
        200
    );
    assert_eq!(
        admin(&client, &router, "POST", "/v1/contacts/import", "application/json", contacts).await?.status,
        200
    );
    let lookup =
        |token: &str| router.url(&format!("/cid/807/getmanager/TLP55522?CallerIDNum=84951234567{token}"));
    let to = |extension: &str| {
        format!("<Response><SetVar name=\"transferDestination\">{extension}</SetVar></Response>")
    };
    let good = lookup("&token=pbx-lookup-token-0123456789abcdef");
    wait_until(Duration::from_secs(5), async || Ok(text(&client, &good).await?.1 == to("101"))).await?;
    // Without the token, or with another, a caller gets only the fallback: nothing of the directory.
    assert_eq!(text(&client, &lookup("")).await?.1, to("700"));
    assert_eq!(text(&client, &lookup("&token=guess")).await?.1, to("700"));
    let mut router = router;
    assert_eq!(router.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}

/// A JSON lookup's answer for `caller` (E.164 written with `%2B`, or national in the router's region).
async fn route_json(
    client: &HttpClient,
    router: &ServiceProcess,
    caller: &str,
) -> anyhow::Result<serde_json::Value> {
    Ok(get(client, &router.url(&format!("/v1/route?caller={caller}"))).await?.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blacklist_refuses_callers_in_each_pbx_format_until_removed_or_expired() -> anyhow::Result<()> {
    let env = router_env("blacklist");
    env.init().await?;
    let router = env.start("router").await?;
    // A second router, whose refused callers go to an extension that plays a message instead.
    let with_target = env.start_with("router", &[("SWITCHBOARD_ROUTER__BLACKLIST_TARGET", "800")]).await?;
    let client = http_client();
    let agents = r#"[{"id": "ann", "name": "Ann", "extensions": ["101"]}]"#;
    let contacts = r#"[{"id": "alice", "name": "Alice", "phone_numbers": ["8 495 123-45-67"], "responsible_agent_id": "ann"}]"#;
    assert_eq!(
        admin(&client, &router, "POST", "/v1/agents/import", "application/json", agents).await?.status,
        200
    );
    assert_eq!(
        admin(&client, &router, "POST", "/v1/contacts/import", "application/json", contacts).await?.status,
        200
    );
    let telphin =
        |router: &ServiceProcess| router.url("/cid/807/getmanager/TLP55522?CallerIDNum=84951234567");
    let to = |extension: &str| {
        format!("<Response><SetVar name=\"transferDestination\">{extension}</SetVar></Response>")
    };
    for r in [&router, &with_target] {
        wait_until(Duration::from_secs(5), async || Ok(text(&client, &telphin(r)).await?.1 == to("101")))
            .await?;
    }

    // One number, in any format: refused within a second, by every router, in each PBX's format.
    let added = Instant::now();
    let put = admin(
        &client,
        &router,
        "PUT",
        "/v1/blacklist/8%20(495)%20123-45-67",
        "application/json",
        r#"{"reason": "abusive caller"}"#,
    )
    .await?;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let entry = put.json();
    assert_eq!(entry["number"], "+74951234567", "{entry}");
    assert_eq!((entry["reason"].as_str(), entry["active"].as_bool()), (Some("abusive caller"), Some(true)));
    assert_eq!(entry["expires_at"], serde_json::Value::Null);
    let hangup = "<Response><Hangup/></Response>";
    wait_until(Duration::from_secs(1), async || Ok(text(&client, &telphin(&router)).await?.1 == hangup))
        .await
        .context("the blacklist did not reach the router within a second")?;
    wait_until(Duration::from_secs(1), async || {
        Ok(text(&client, &telphin(&with_target)).await?.1 == to("800"))
    })
    .await
    .context("the blacklist did not reach the second router within a second")?;
    assert!(added.elapsed() < Duration::from_secs(2), "{:?}", added.elapsed());
    // Telphin by POST form; Zadarma's NOTIFY_START; JSON.
    let form = "CallID=1&CallerIDNum=%2B74951234567&CallFlow=IN";
    let form_type = [("content-type", "application/x-www-form-urlencoded")];
    let response =
        send(&client, "POST", &router.url("/cid/807/getmanager/TLP55522"), &form_type, form).await?;
    assert_eq!((response.status, String::from_utf8_lossy(&response.body).into_owned()), (200, hangup.into()));
    let notify = "event=NOTIFY_START&caller_id=74951234567&called_did=74950000000";
    for (r, redirect) in [(&router, "blacklist"), (&with_target, "800")] {
        let response = send(&client, "POST", &r.url("/v1/route/zadarma"), &form_type, notify).await?;
        assert_eq!(response.json(), serde_json::json!({"redirect": redirect}));
    }
    assert_eq!(
        route_json(&client, &router, "84951234567").await?,
        serde_json::json!({
            "action": "reject", "destination": null, "agent_id": null, "fallback": false, "reason": "blacklisted",
        })
    );
    let json = route_json(&client, &with_target, "%2B74951234567").await?;
    assert_eq!(
        (json["action"].as_str(), json["destination"].as_str()),
        (Some("transfer"), Some("800")),
        "{json}"
    );
    assert_eq!(json["reason"], "blacklisted");

    // Many at once: valid rows stored, each refused row reported with why.
    let rows = r#"[
        {"number": "+7 916 000-00-01", "reason": "robocaller"},
        {"number": "89160000002"},
        {"number": "12"},
        {"number": "+79160000003", "reason": "a\u0000b"},
        {"number": "8 916 000-00-01", "reason": "again"},
        {"number": "+79160000004", "expires_at": "soon"},
        {"phone": "+79160000005"}
    ]"#;
    let report =
        admin(&client, &router, "POST", "/v1/blacklist/import", "application/json", rows).await?.json();
    assert_eq!((report["imported"].as_i64(), report["rejected"].as_i64()), (Some(2), Some(5)), "{report}");
    let errors = report["errors"].as_array().context("errors")?;
    let rows: Vec<i64> = errors.iter().filter_map(|e| e["row"].as_i64()).collect();
    assert_eq!(rows, [3, 4, 5, 6, 7], "{report}");
    for (error, says) in
        errors.iter().zip(["number", "reason: NUL", "duplicate number", "expires_at", "phone"])
    {
        assert!(error["error"].as_str().is_some_and(|e| e.contains(says)), "{says}: {report}");
    }
    let csv = "number,reason,expires_at\n+7 916 000-00-06,spam,\n";
    let report = admin(&client, &router, "POST", "/v1/blacklist/import", "text/csv", csv).await?.json();
    assert_eq!(report["imported"], 1, "{report}");
    for caller in ["%2B79160000001", "89160000002", "89160000006"] {
        wait_until(Duration::from_secs(1), async || {
            Ok(route_json(&client, &router, caller).await?["reason"] == "blacklisted")
        })
        .await
        .with_context(|| format!("{caller} was not refused within a second"))?;
    }
    assert_eq!(route_json(&client, &router, "89160000003").await?["reason"], "fallback_unknown_caller");

    // The list, in pages ordered by number; one entry.
    let page = admin(&client, &router, "GET", "/v1/blacklist?limit=2", "", "").await?.json();
    let numbers = |page: &serde_json::Value| -> Vec<String> {
        page["blacklist"].as_array().map_or_else(Vec::new, |e| {
            e.iter().filter_map(|e| e["number"].as_str().map(str::to_owned)).collect()
        })
    };
    assert_eq!(numbers(&page), ["+74951234567", "+79160000001"], "{page}");
    assert_eq!(page["next"], "+79160000001");
    // `after` as `next` gives it, its `+` unencoded (a space) or encoded.
    for after in ["+79160000001", "%2B79160000001"] {
        let page = admin(&client, &router, "GET", &format!("/v1/blacklist?limit=2&after={after}"), "", "")
            .await?
            .json();
        assert_eq!(numbers(&page), ["+79160000002", "+79160000006"], "{after}: {page}");
    }
    let one = admin(&client, &router, "GET", "/v1/blacklist/%2B79160000001", "", "").await?.json();
    assert_eq!((one["reason"].as_str(), one["active"].as_bool()), (Some("robocaller"), Some(true)), "{one}");

    // Refusals: 400 naming the field, 404, 401, 405, 415.
    for (method, path, body, says) in [
        ("PUT", "/v1/blacklist/12", "", "number"),
        ("PUT", "/v1/blacklist/%2B7916%000000007", "", "NUL"),
        ("PUT", "/v1/blacklist/%2B79160000007", r#"{"reason": "a\u0000"}"#, "NUL"),
        ("PUT", "/v1/blacklist/%2B79160000007", r#"{"reason": "x", "until": "never"}"#, "until"),
        ("PUT", "/v1/blacklist/%2B79160000007", r#"{"expires_at": "2030-01-01"}"#, "expires_at"),
        ("PUT", "/v1/blacklist/%2B79160000007", r#"[]"#, "object"),
        ("GET", "/v1/blacklist?after=abc", "", "after"),
        ("GET", "/v1/blacklist?limit=0", "", "limit"),
        ("DELETE", "/v1/blacklist/junk", "", "number"),
        ("POST", "/v1/blacklist/remove", "{}", "array"),
        ("PUT", "/v1/blacklist/%2B79160000007?region=Mars", "", "region"),
    ] {
        let response = admin(&client, &router, method, path, "application/json", body).await?;
        let json = response.json();
        assert_eq!(response.status, 400, "{method} {path} {body}: {json}");
        assert!(json["message"].as_str().is_some_and(|m| m.contains(says)), "{method} {path}: {json}");
    }
    for method in ["GET", "DELETE"] {
        let response = admin(&client, &router, method, "/v1/blacklist/%2B79169999999", "", "").await?;
        assert_eq!(response.status, 404, "{method}");
    }
    let response = send(&client, "GET", &router.url("/v1/blacklist"), &[], "").await?;
    assert_eq!(response.status, 401);
    let response =
        admin(&client, &router, "PATCH", "/v1/blacklist/%2B79160000001", "application/json", "{}").await?;
    assert_eq!(response.status, 405);
    assert_eq!(response.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, HEAD, PUT, DELETE"));
    for path in ["/v1/blacklist/import", "/v1/blacklist/remove"] {
        let response = admin(&client, &router, "POST", path, "text/plain", "+79160000001").await?;
        assert_eq!(response.status, 415, "{path}");
    }

    // A short expiry: refused until then, routed after, without any change to reload.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let body = serde_json::json!({"reason": "cooling off", "expires_at": expires.to_rfc3339()}).to_string();
    let put =
        admin(&client, &router, "PUT", "/v1/blacklist/%2B79160000010", "application/json", &body).await?;
    assert_eq!((put.status, put.json()["active"].as_bool()), (200, Some(true)), "{:?}", put.body);
    wait_until(Duration::from_secs(1), async || {
        Ok(route_json(&client, &router, "89160000010").await?["reason"] == "blacklisted")
    })
    .await?;
    wait_until(Duration::from_secs(5), async || {
        Ok(route_json(&client, &router, "89160000010").await?["reason"] == "fallback_unknown_caller")
    })
    .await
    .context("the entry did not expire")?;
    assert!(chrono::Utc::now() >= expires, "not before its expiry");
    let entry = admin(&client, &router, "GET", "/v1/blacklist/%2B79160000010", "", "").await?.json();
    assert_eq!(entry["active"], false, "kept, inactive: {entry}");
    // An expiry in the past is stored (a retried request does not fail) and refuses nobody.
    let past = r#"{"expires_at": "2001-01-01T00:00:00Z"}"#;
    let put = admin(&client, &router, "PUT", "/v1/blacklist/89160000011", "application/json", past).await?;
    assert_eq!((put.status, put.json()["active"].as_bool()), (200, Some(false)), "{:?}", put.body);
    assert_eq!(put.json()["expires_at"], "2001-01-01T00:00:00Z");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(route_json(&client, &router, "89160000011").await?["reason"], "fallback_unknown_caller");

    // Removing restores routing: one number, then many.
    let removed = Instant::now();
    let response = admin(&client, &router, "DELETE", "/v1/blacklist/8-495-123-45-67", "", "").await?;
    assert_eq!(response.status, 204);
    for r in [&router, &with_target] {
        wait_until(Duration::from_secs(1), async || Ok(text(&client, &telphin(r)).await?.1 == to("101")))
            .await
            .context("the removal did not reach a router within a second")?;
    }
    assert!(removed.elapsed() < Duration::from_secs(2));
    let many = r#"["+7 916 000-00-01", {"number": "89160000002", "reason": "ignored"}, "+79169999999", "junk", "+79160000001"]"#;
    let report =
        admin(&client, &router, "POST", "/v1/blacklist/remove", "application/json", many).await?.json();
    assert_eq!(report["removed"], 2, "{report}");
    assert_eq!(report["not_found"], serde_json::json!(["+79169999999"]), "{report}");
    assert_eq!(
        (report["rejected"].as_i64(), report["errors"][0]["row"].as_i64()),
        (Some(1), Some(4)),
        "{report}"
    );
    for caller in ["%2B79160000001", "89160000002"] {
        wait_until(Duration::from_secs(1), async || {
            Ok(route_json(&client, &router, caller).await?["reason"] == "fallback_unknown_caller")
        })
        .await?;
    }
    assert_eq!(route_json(&client, &router, "89160000006").await?["reason"], "blacklisted", "the rest stay");
    let page = admin(&client, &router, "GET", "/v1/blacklist", "", "").await?.json();
    assert_eq!(numbers(&page), ["+79160000006", "+79160000010", "+79160000011"], "{page}");
    assert_eq!(page["next"], serde_json::Value::Null);

    let metrics = router.metrics().await?;
    for format in ["telphin", "zadarma", "json"] {
        let series =
            format!("switchboard_router_lookups_total{{format=\"{format}\",outcome=\"blacklisted\"}}");
        assert!(metric_series(&metrics, &series) >= 1.0, "{series}");
    }
    drop((router, with_target));
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_blacklisted_numbers_are_marked_in_the_call_log() -> anyhow::Result<()> {
    let mut env = TestEnv::new("blacklist-log");
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.set("SWITCHBOARD_ROUTER__REGION", "GB");
    let pipeline = env.start_pipeline().await?;
    let router = env.start("router").await?;
    let api = env.start("api").await?;
    let source = env.add_source("plain", "GB").await?;
    let client = http_client();
    let pest = r#"[{"number": "020 7946 0000", "reason": "pest"}]"#;
    let report =
        admin(&client, &router, "POST", "/v1/blacklist/import", "application/json", pest).await?.json();
    assert_eq!(report["imported"], 1, "{report}");
    // The source is accepted once ingress has refreshed its list.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // The pest calls in and is called back; someone else calls in.
    let now = chrono::Utc::now().to_rfc3339();
    for (call, direction, numbers) in [
        ("from-pest", "inbound", r#""from": "020 7946 0000", "to": "+44 20 7946 9999""#),
        ("to-pest", "outbound", r#""from": "+44 20 7946 9999", "to": "+44 20 7946 0000""#),
        ("clean", "inbound", r#""from": "+44 20 7946 1111", "to": "+44 20 7946 9999""#),
    ] {
        let body = format!(
            r#"{{"call_id": "{call}", "event": "ringing", "timestamp": "{now}", "direction": "{direction}", {numbers}}}"#
        );
        let response = post_webhook(&client, &pipeline.ingress_url(""), &source, &body).await?;
        anyhow::ensure!(response.status == 202, "{:?}", response.body);
    }
    let auth = bearer();
    let calls = async |query: &str| -> anyhow::Result<Vec<(String, bool)>> {
        let response =
            send(&client, "GET", &api.url(&format!("/v1/calls?{query}")), &[("authorization", &auth)], "")
                .await?;
        anyhow::ensure!(response.status == 200, "{query}: {:?}", response.body);
        let mut calls: Vec<(String, bool)> = response.json()["calls"]
            .as_array()
            .context("calls")?
            .iter()
            .filter_map(|c| Some((c["call_id"].as_str()?.to_owned(), c["blacklisted"].as_bool()?)))
            .collect();
        calls.sort();
        Ok(calls)
    };
    wait_until(Duration::from_secs(60), async || Ok(calls("source=plain").await?.len() == 3)).await?;
    let marked =
        |calls: &[(&str, bool)]| calls.iter().map(|(c, b)| ((*c).to_owned(), *b)).collect::<Vec<_>>();
    assert_eq!(
        calls("source=plain").await?,
        marked(&[("clean", false), ("from-pest", true), ("to-pest", true)])
    );
    assert_eq!(calls("blacklisted=true").await?, marked(&[("from-pest", true), ("to-pest", true)]));
    assert_eq!(calls("blacklisted=false").await?, marked(&[("clean", false)]));
    let detail =
        send(&client, "GET", &api.url("/v1/calls/plain/from-pest"), &[("authorization", &auth)], "").await?;
    assert_eq!((detail.status, detail.json()["blacklisted"].as_bool()), (200, Some(true)));

    // Judged when the log is read: off the list, the calls are no longer marked.
    let response = admin(&client, &router, "DELETE", "/v1/blacklist/%2B442079460000", "", "").await?;
    assert_eq!(response.status, 204);
    assert_eq!(calls("blacklisted=true").await?, Vec::new());
    drop((router, api));
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}
