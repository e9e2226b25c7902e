//! `docs/openapi.yaml` is the truth about the HTTP servers: schemathesis, a property-based tester
//! nobody here wrote, reads the document and throws generated requests at the query API, at the
//! router and at the dispatcher, valid and invalid, and checks every answer against it.
//!
//! - one definition per name: the document has no duplicate key (a YAML parser keeps the last of
//!   two, silently) and every `$ref` names something that exists;
//! - the three servers, started with a token, a seeded directory, a few calls, a delivery profile
//!   and a few deliveries (so that lists return data whose shape is checked too), under every
//!   check schemathesis has: no 5xx; only documented statuses, content types and headers; bodies
//!   matching their schemas; valid requests accepted and invalid ones refused; 405 with `Allow`
//!   for a method a path does not serve (not for the dispatcher, which answers 404, as the
//!   document says); a protected operation refusing a request without its token; after a DELETE,
//!   the entry gone.
//!
//! The tester is `st` from `tests/interop/openapi/requirements.txt`, named by `SB_SCHEMATHESIS`
//! (`./test` installs it and sets it: `scripts/openapi-check.sh`). Its hooks
//! (`tests/interop/openapi/hooks.py`) generate the document's own formats, `phone-number` and
//! `cursor`; its settings (`tests/interop/openapi/schemathesis.toml`) hold what an operation may
//! answer that no schema keyword can express. Each run draws new examples; the seed it prints (also in
//! `target/test-logs/<test id>/schemathesis-<server>.txt`) replays one with
//! `SB_SCHEMATHESIS_SEED`. `SB_SCHEMATHESIS_EXAMPLES` sets the examples per operation.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use chrono::{TimeZone, Utc};
use switchboard_calllog::CalllogSettings;
use switchboard_calllog::writer::{CallLog, StoredEvent};
use switchboard_core::config::PostgresSettings;
use switchboard_core::model::*;
use switchboard_tests::*;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "openapi-test-token-0123456789abcdef0123456789";
/// Examples per operation and phase: enough to find what is wrong, few enough that the servers
/// are done in well under a minute or two on two cores.
const EXAMPLES: &str = "40";

fn repo() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

fn document() -> PathBuf {
    repo().join("docs/openapi.yaml")
}

/// The `st` executable; the test fails, rather than skips, without it.
fn schemathesis() -> PathBuf {
    match std::env::var_os("SB_SCHEMATHESIS") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "SB_SCHEMATHESIS is not set: it names schemathesis's `st` executable, which this test runs. \
             ./test installs it and sets it (scripts/openapi-check.sh); by hand: \
             `pip install -r tests/interop/openapi/requirements.txt` and \
             `export SB_SCHEMATHESIS=$(command -v st)`"
        ),
    }
}

#[test]
fn the_document_defines_each_name_once_and_every_reference_resolves() {
    let text = std::fs::read_to_string(document()).expect("docs/openapi.yaml");
    // serde_norway refuses a mapping with a duplicate key, where most parsers keep the last one.
    assert!(serde_norway::from_str::<serde_norway::Value>("a: 1\na: 2\n").is_err());
    let yaml: serde_norway::Value =
        serde_norway::from_str(&text).expect("docs/openapi.yaml: valid YAML without duplicate keys");
    let doc: serde_json::Value = serde_norway::from_value(yaml).expect("docs/openapi.yaml as JSON");
    let mut refs = BTreeSet::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "{refs:?}");
    for reference in refs {
        let pointer =
            reference.strip_prefix('#').unwrap_or_else(|| panic!("{reference}: not in the document"));
        assert!(doc.pointer(pointer).is_some(), "{reference} names nothing");
    }
    // The call log's agent and contact are not the directory's.
    let schemas = &doc["components"]["schemas"];
    for name in ["CallAgent", "CallContact", "DirectoryAgent", "DirectoryContact"] {
        assert!(schemas.get(name).is_some(), "{name}");
    }
    assert!(schemas.get("Agent").is_none() && schemas.get("Contact").is_none());
}

fn collect_refs(value: &serde_json::Value, refs: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", serde_json::Value::String(target)) => {
                        let _ = refs.insert(target.clone());
                    }
                    _ => collect_refs(value, refs),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_answers_as_the_openapi_document_says() -> anyhow::Result<()> {
    let st = schemathesis();
    let mut env = TestEnv::new("openapi");
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.set("SWITCHBOARD_ROUTER__REGION", "GB");
    env.set("SWITCHBOARD_ROUTER__FALLBACK", "700");
    // A test send (`dry_run: false`) to a generated host must end well within the server's own
    // 10-second request limit (the default attempt timeout, 15 s, does not).
    env.set("SWITCHBOARD_DISPATCHER__ATTEMPT_TIMEOUT_MS", "3000");
    // The router migrates the database, which the seeding below writes to.
    let router = env.start("router").await?;
    let api = env.start("api").await?;
    let dispatcher = env.start("dispatcher").await?;
    seed_directory(&router).await?;
    seed_calls(&env).await?;
    seed_deliveries(&env, &dispatcher).await?;

    // Two at once: each is one Python process, mostly waiting for its server. A third at the same
    // time loads two cores enough for the query API's own query deadline (1.5 s) to be missed.
    // Every service serves `/metrics` on its ops port only.
    let no_metrics = ["--exclude-path", "/metrics"];
    let (api_run, router_run) = tokio::join!(
        run_schemathesis(&st, &env, "api", &api, "calls|recordings|operations", &no_metrics),
        run_schemathesis(&st, &env, "router", &router, "directory|routing|operations", &no_metrics),
    );
    let dispatcher_run = run_schemathesis(
        &st,
        &env,
        "dispatcher",
        &dispatcher,
        "profiles|deliveries|operations",
        &["--exclude-path", "/metrics"],
    )
    .await;
    drop(dispatcher);
    // The desk: its API-token endpoints and assets, then an agent's endpoints with a session
    // token (not logout, which would end the session under the run, nor the two streams, which
    // never end; tests/desk.rs covers those).
    let desk = env.start("desk").await?;
    env.db()
        .await?
        .batch_execute(
            "INSERT INTO agents (id, name, email, groups) VALUES ('desk-agent', 'Dee', 'dee@example.com', '{sales}')
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let desk_run = run_schemathesis(
        &st,
        &env,
        "desk",
        &desk,
        "desk|desk-assets|operations",
        &["--exclude-path", "/metrics"],
    )
    .await;
    let session = send(
        &http_client(),
        "POST",
        &desk.url("/v1/desk/sessions"),
        &[("authorization", &format!("Bearer {TOKEN}")), ("content-type", "application/json")],
        r#"{"agent_id": "desk-agent"}"#,
    )
    .await?;
    anyhow::ensure!(session.status == 201, "desk session: {} {:?}", session.status, session.json());
    let session_token = session.json()["token"].as_str().context("session token")?.to_owned();
    // No links among these operations: no stateful phase.
    let agent_phases = ["--phases", "examples,coverage,fuzzing"];
    let agent_run =
        run_schemathesis_as(&st, &env, "desk agent", &desk, "desk-agent", &agent_phases, &session_token)
            .await;
    let failures: Vec<String> =
        [api_run?, router_run?, dispatcher_run?, desk_run?, agent_run?].into_iter().flatten().collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    drop((api, router, desk));
    env.cleanup().await;
    Ok(())
}

/// Runs `st run` against one server, for the operations of `tags` (less those `extra` arguments
/// exclude); returns why it failed, if it did.
async fn run_schemathesis(
    st: &Path,
    env: &TestEnv,
    server: &str,
    process: &ServiceProcess,
    tags: &str,
    extra: &[&str],
) -> anyhow::Result<Option<String>> {
    run_schemathesis_as(st, env, server, process, tags, extra, TOKEN).await
}

/// [`run_schemathesis`] with another bearer token (the desk's agent endpoints take a session's).
async fn run_schemathesis_as(
    st: &Path,
    env: &TestEnv,
    server: &str,
    process: &ServiceProcess,
    tags: &str,
    extra: &[&str],
    token: &str,
) -> anyhow::Result<Option<String>> {
    let examples = std::env::var("SB_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| EXAMPLES.into());
    let url = process.url("");
    let auth = format!("Authorization: Bearer {token}");
    let tags = format!("^({tags})$");
    let config = repo().join("tests/interop/openapi/schemathesis.toml");
    let config = config.to_str().context("config path")?;
    let mut args: Vec<&str> = vec![
        // What an operation may answer that no schema keyword expresses, each with its reason.
        "--config-file",
        config,
        "run",
        "--url",
        &url,
        "--header",
        &auth,
        "--include-tag-regex",
        &tags,
        // Every check there is; the document's negative cases included (`negative_data_rejection`).
        "--checks",
        "all",
        // Valid and invalid data, through every phase: the document's examples, boundary values
        // and each kind of violation (coverage), random data (fuzzing), and sequences following
        // the links the tester infers (stateful).
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        &examples,
        // One worker: Python 3.11's parser is not thread-safe, and schemathesis compiles
        // patterns and hooks on its workers' threads.
        "--workers",
        "1",
        "--request-timeout",
        "10",
        // Examples found earlier would be replayed from a folder in the work tree.
        "--generation-database",
        "none",
        "--no-color",
    ];
    args.extend(extra);
    let seed = std::env::var("SB_SCHEMATHESIS_SEED").ok();
    if let Some(seed) = &seed {
        args.extend(["--seed", seed]);
    }
    let document = document();
    let document = document.to_str().context("document path")?;
    args.push(document);
    let hooks = repo().join("tests/interop/openapi/hooks.py");
    let output = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new(st)
            .args(&args)
            .env("SCHEMATHESIS_HOOKS", &hooks)
            // Where it keeps its crash cache (`.schemathesis/`), out of the work tree.
            .current_dir(&env.log_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("schemathesis against the {server} did not finish in 4 minutes"))?
    .with_context(|| format!("run {}", st.display()))?;
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let log = env.log_dir.join(format!("schemathesis-{server}.txt"));
    std::fs::write(&log, format!("st {}\n\n{report}", args.join(" ")))?;
    let tested = report.lines().any(|line| line.trim_start().starts_with("Tested:"));
    if output.status.success() && tested && !report.contains("Failures:") {
        return Ok(None);
    }
    // The summary is at the end, the failures before it: keep the end of a long report.
    let tail: String = {
        let chars: Vec<char> = report.chars().collect();
        chars[chars.len().saturating_sub(12_000)..].iter().collect()
    };
    Ok(Some(format!(
        "schemathesis found disagreements between docs/openapi.yaml and the {server} ({}; all of it in {}):\n{tail}",
        output.status,
        log.display()
    )))
}

/// A delivery profile, through the dispatcher's API, and deliveries of it (failed with two
/// attempts, delivered, pending), written as the dispatcher's consumer and worker write them.
async fn seed_deliveries(env: &TestEnv, dispatcher: &ServiceProcess) -> anyhow::Result<()> {
    let client = http_client();
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let profile = serde_json::json!({
        "name": "CRM call log",
        "trigger": "call_record_completed",
        "criteria": [{"type": "direction", "any_of": ["inbound"]}],
        "steps": [{"name": "post", "request": {
            "method": "POST",
            "url": "https://crm.example.com/api/calls",
            "headers": [{"name": "authorization", "secret": "Bearer t0ken"}],
            "json_body": "{\"call\": {{ call_id }}, \"from\": {{ from_number }}}",
        }}],
        "signing_secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    });
    let response =
        send(&client, "PUT", &dispatcher.url("/v1/profiles/crm"), &headers, profile.to_string()).await?;
    anyhow::ensure!(response.status == 201, "profile: {} {:?}", response.status, response.body);

    let record = serde_json::json!({
        "source_id": "pbx-gb", "vendor": "generic", "call_id": "c-123", "version": 3,
        "status": "ENDED", "outcome": "ANSWERED", "completion": "END_MARKER",
        "completed_at": 1_795_251_697_000_000_i64, "direction": "INBOUND",
        "from_number": "+442079460000", "to_number": "+442071234567",
        "started_at": 1_795_251_600_000_000_i64, "answered_at": 1_795_251_605_000_000_i64,
        "ended_at": 1_795_251_697_000_000_i64, "duration_seconds": 97, "talk_seconds": 92,
        "disposition": "ANSWERED",
        "agent": {"agent_id": "ann", "agent_match": "EXTENSION", "extension": "101"},
        "contact_ids": ["alice"], "contact_match": "UNIQUE", "responsible_agent_id": "ann",
        "legs": [{"leg_id": "c-123-ann", "status": "ENDED", "answered": true,
            "agent": {"agent_id": "ann", "extension": "101"},
            "started_at": 1_795_251_602_000_000_i64, "rang_at": 1_795_251_602_000_000_i64,
            "answered_at": 1_795_251_605_000_000_i64, "ended_at": 1_795_251_697_000_000_i64}],
    });
    let _: CallRecord = serde_json::from_value(record.clone()).context("the seeded record")?;
    let db = env.db().await?;
    for (version, status, attempts, error) in [
        (1, "failed", 2, Some("HTTP 500 Internal Server Error")),
        (2, "delivered", 1, None),
        (3, "pending", 0, None),
    ] {
        let subject_id = format!("record:{version}");
        let id = switchboard_dispatcher::delivery_id("crm", "pbx-gb", "c-123", &subject_id);
        let mut subject = record.clone();
        subject["version"] = serde_json::json!(version);
        let _ = db
            .execute(
                "INSERT INTO deliveries (id, profile_id, source_id, call_id, subject_id, trigger,
                     subject_kind, subject, status, attempts, last_error, delivered_at,
                     next_attempt_at)
                 VALUES ($1, 'crm', 'pbx-gb', 'c-123', $2, 'call_record_completed', 'record', $3,
                     $4, $5, $6, CASE WHEN $4 = 'delivered' THEN now() END,
                     now() + interval '1 day')",
                &[&id, &subject_id, &subject, &status, &attempts, &error],
            )
            .await?;
        for n in 1..=attempts {
            let request = serde_json::json!({
                "method": "POST", "url": "https://crm.example.com/api/calls",
                "headers": ["authorization", "content-type", "webhook-id", "webhook-timestamp", "webhook-signature"],
                "body_bytes": 42, "webhook_id": id,
            });
            let answer = if status == "failed" { 500 } else { 200 };
            let _ = db
                .execute(
                    "INSERT INTO delivery_attempts (delivery_id, n, step, started_at, request,
                         response_status, response_body, latency_ms, error)
                     VALUES ($1, $2, 'post', now(), $3, $4, '{\"ok\":false}', 12, $5)",
                    &[&id, &n, &request, &answer, &error],
                )
                .await?;
        }
    }
    Ok(())
}

/// Agents, contacts (one per kind of match), an own number and a blacklisted number (the callee of
/// the seeded outbound call, which the call log then marks), through the admin API.
async fn seed_directory(router: &ServiceProcess) -> anyhow::Result<()> {
    let client = http_client();
    let auth = format!("Bearer {TOKEN}");
    let post = async |path: &str, content_type: &str, body: &str| -> anyhow::Result<()> {
        let headers = [("authorization", auth.as_str()), ("content-type", content_type)];
        let response = send(&client, "POST", &router.url(path), &headers, body.to_owned()).await?;
        anyhow::ensure!(response.status == 200, "{path}: {} {:?}", response.status, response.body);
        anyhow::ensure!(response.json()["rejected"] == 0, "{path}: {}", response.json());
        Ok(())
    };
    post(
        "/v1/agents/import",
        "application/json",
        r#"[
            {"id": "ann", "name": "Ann", "email": "ann@example.com", "extensions": ["101"], "phone_numbers": ["+44 20 7946 0101"], "external_ids": {"pbx-gb": "5101"}},
            {"id": "bob", "name": "Bob", "extensions": ["102"]}
        ]"#,
    )
    .await?;
    post(
        "/v1/contacts/import",
        "text/csv",
        "id,name,company,phone_numbers,responsible_agent_id\n\
         alice,Alice,Acme,+44 20 7946 0000,ann\n\
         carol,Carol,,+44 7911 123456;+44 20 7946 0555,bob\n\
         dave,Dave,Initech,+44 20 7946 0666,\n",
    )
    .await?;
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let response = send(
        &client,
        "PUT",
        &router.url("/v1/own-numbers/%2B442071234567"),
        &headers,
        r#"{"label": "main"}"#,
    )
    .await?;
    anyhow::ensure!(response.status == 200, "own number: {} {:?}", response.status, response.body);
    let response = send(
        &client,
        "PUT",
        &router.url("/v1/blacklist/%2B33142685300"),
        &headers,
        r#"{"reason": "robocaller"}"#,
    )
    .await?;
    anyhow::ensure!(response.status == 200, "blacklist: {} {:?}", response.status, response.body);
    Ok(())
}

/// A few calls in the call log, written as the call-log stage writes them: answered and matched
/// with a recording, missed, outbound, still ringing, one whose id needs percent-encoding.
async fn seed_calls(env: &TestEnv) -> anyhow::Result<()> {
    let _ = env.add_source("pbx-gb", "GB").await?;
    let settings = PostgresSettings {
        url: env.database_url(),
        pool_size: 2,
        create_database: false,
        ..PostgresSettings::default()
    };
    let pool = switchboard_core::pg::connect_and_migrate(
        &settings,
        switchboard_schema::MIGRATIONS,
        &CancellationToken::new(),
    )
    .await?
    .context("cancelled")?;
    let source = SourceId::parse("pbx-gb")?;
    let start = Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).single().context("time")?;
    let event = |call: &str, n: usize, kind: EventKind, leg: Option<&str>, seconds: i64| {
        let mut event = CallEvent::empty(
            source.clone(),
            Vendor::Generic,
            CallId::parse(call).expect("call id"),
            EventId::parse(format!("{call}-{n}")).expect("event id"),
            kind,
            start + chrono::Duration::seconds(seconds),
        );
        event.raw_id = format!("raw-{call}-{n}");
        event.leg_id = leg.map(|l| LegId::parse(l).expect("leg id"));
        event.sequence = Some(n as i64);
        event
    };
    let e164 = |n: &str| PhoneNumber::from_e164(n).expect("E.164");
    let mut events = Vec::new();

    // Answered by Ann, Alice's responsible agent, with a recording ready.
    let mut ringing = event("answered-1", 0, EventKind::Ringing, None, 0);
    ringing.direction = Direction::Inbound;
    ringing.from_raw = Some("020 7946 0000".into());
    ringing.from_e164 = Some(e164("+442079460000"));
    ringing.to_raw = Some("020 7123 4567".into());
    ringing.to_e164 = Some(e164("+442071234567"));
    ringing.contact_ids = vec!["alice".into()];
    ringing.contact_match = Some(ContactMatch::Unique);
    ringing.responsible_agent_id = Some("ann".into());
    let mut answered = event("answered-1", 1, EventKind::Answered, Some("answered-1-ann"), 5);
    answered.agent_extension = Some("101".into());
    answered.agent_email = Some("ann@example.com".into());
    answered.agent_id = Some("ann".into());
    answered.agent_match = Some(AgentMatch::Extension);
    let leg_end = event("answered-1", 2, EventKind::Hangup, Some("answered-1-ann"), 95);
    let mut recording = event("answered-1", 3, EventKind::Recording, None, 96);
    recording.recording_id = Some("rec-1".into());
    recording.recording_url =
        Some("http://127.0.0.1:8081/v1/recordings/0123456789abcdef0123456789abcdef?token=v1.1.abc".into());
    recording.recording_status = Some(RecordingStatus::Ready);
    let mut end = event("answered-1", 4, EventKind::Hangup, None, 97);
    end.hangup_cause = Some("normal_clearing".into());
    end.disposition = Some(Disposition::Answered);
    events.extend([ringing, answered, leg_end, recording, end]);

    // Missed: offered to Bob, who did not answer; Carol calling.
    let mut ringing = event("missed-2", 0, EventKind::Ringing, None, 600);
    ringing.direction = Direction::Inbound;
    ringing.from_e164 = Some(e164("+447911123456"));
    ringing.from_raw = Some("07911 123456".into());
    ringing.contact_ids = vec!["carol".into()];
    ringing.contact_match = Some(ContactMatch::Unique);
    let mut leg = event("missed-2", 1, EventKind::Ringing, Some("missed-2-bob"), 602);
    leg.agent_extension = Some("102".into());
    leg.agent_id = Some("bob".into());
    leg.agent_match = Some(AgentMatch::Extension);
    let leg_end = event("missed-2", 2, EventKind::Hangup, Some("missed-2-bob"), 630);
    let end = event("missed-2", 3, EventKind::Hangup, None, 631);
    events.extend([ringing, leg, leg_end, end]);

    // Outbound, not answered, to an unknown number; the recording still being resolved.
    let mut ringing = event("outbound-3", 0, EventKind::Ringing, None, 1200);
    ringing.direction = Direction::Outbound;
    ringing.agent_extension = Some("101".into());
    ringing.to_raw = Some("+33 1 42 68 53 00".into());
    ringing.to_e164 = Some(e164("+33142685300"));
    ringing.contact_match = Some(ContactMatch::None);
    ringing.recording_id = Some("rec-3".into());
    ringing.recording_status = Some(RecordingStatus::Pending);
    let mut end = event("outbound-3", 1, EventKind::Hangup, None, 1230);
    end.disposition = Some(Disposition::NoAnswer);
    events.extend([ringing, end]);

    // Still ringing, and an id with a slash, a question mark and a space.
    let mut ringing = event("open/4? now", 0, EventKind::Ringing, None, 1800);
    ringing.direction = Direction::Inbound;
    ringing.from_raw = Some("101".into());
    events.push(ringing);

    let stored: Vec<StoredEvent> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| StoredEvent { event, partition: 0, offset: i as i64 })
        .collect();
    let outcome = CallLog::new(pool, &CalllogSettings::default())?.write_batch(&stored).await?;
    anyhow::ensure!(outcome.new_events == stored.len() as i64, "{outcome:?}");
    Ok(())
}
