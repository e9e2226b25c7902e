//! The directory end to end: the admin API (imports with per-row reports, upserts, deletes,
//! bearer tokens), the router's answers in each PBX's format and every fallback path, and the
//! matcher enriching events through the real pipeline — with directory changes reaching the
//! router and the matcher within a second.

use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_core::avro::Codecs;
use switchboard_core::model::{AgentMatch, CallEvent, ContactMatch};
use switchboard_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "admin-token-for-tests";

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
