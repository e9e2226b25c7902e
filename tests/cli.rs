//! The command line's call-control commands end to end, the real binary as an operator runs it:
//! `switchboard blacklist …` against PostgreSQL (normalised and stored as the router's admin API
//! does, and seen by a running router), and `switchboard call`, `hangup` and `disposition …`
//! against a running desk whose source points at a loopback fake of Twilio's API, with the API
//! token from the environment and the exit codes scripts rely on.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use switchboard_core::seal::Sealer;
use switchboard_core::source_secrets::SourceSecrets;
use switchboard_tests::fake_vendor::{self, FakeVendor, TWILIO_SID};
use switchboard_tests::{
    HttpClient, ServiceProcess, TestEnv, free_port, get, http_client, send, switchboard_bin, wait_until,
};
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "cli-test-api-token-0123456789abcdef0123456789";
const TOKEN_VAR: &str = "SWITCHBOARD_API_TOKEN";
const WAIT: Duration = Duration::from_secs(20);

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or(Value::Null)
    }
}

/// Runs `switchboard args…` with the test's settings, `vars` on top (the API token is only ever
/// there, never inherited), and `stdin` as its standard input.
async fn switchboard(
    env: &TestEnv,
    args: &[&str],
    vars: &[(&str, &str)],
    stdin: Option<&str>,
) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new(switchboard_bin());
    let _ = command
        .args(args)
        .envs(&env.settings)
        .env_remove(TOKEN_VAR)
        .envs(vars.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().context("spawn switchboard")?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).await?;
        drop(input);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .with_context(|| format!("switchboard {args:?} still running"))??;
    Ok(Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    })
}

/// Runs a command that must succeed; its standard output.
async fn ok(env: &TestEnv, args: &[&str]) -> anyhow::Result<Run> {
    let run = switchboard(env, args, &[], None).await?;
    ensure!(run.code == Some(0), "switchboard {args:?}: {run:?}");
    Ok(run)
}

async fn route_reason(client: &HttpClient, router: &ServiceProcess, caller: &str) -> anyhow::Result<String> {
    let response = get(client, &router.url(&format!("/v1/route?caller={caller}"))).await?;
    ensure!(response.status == 200, "route {caller}: {}", response.status);
    Ok(response.json()["reason"].as_str().unwrap_or_default().to_owned())
}

async fn blacklisted(client: &HttpClient, router: &ServiceProcess, caller: &str) -> anyhow::Result<bool> {
    Ok(route_reason(client, router, caller).await? == "blacklisted")
}

async fn blacklist_rows(env: &TestEnv) -> anyhow::Result<i64> {
    Ok(env.db().await?.query_one("SELECT count(*) FROM blacklist", &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklist_commands_store_what_the_api_would_and_reach_the_router() -> anyhow::Result<()> {
    let mut env = TestEnv::new("cli-blacklist");
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.set("SWITCHBOARD_ROUTER__REGION", "GB");
    env.init().await?;
    let router = env.start("router").await?;
    let client = http_client();
    wait_until(Duration::from_secs(10), async || {
        Ok(route_reason(&client, &router, "02079460000").await? == "fallback_unknown_caller")
    })
    .await
    .context("the router never loaded its directory")?;

    // One number, national in router.region: E.164 with its reason, refused by the router.
    let added = ok(&env, &["blacklist", "add", "020 7946 0000", "--reason", "robocaller"]).await?;
    assert_eq!(added.stdout, "+442079460000\tactive\tnever\trobocaller\n");
    wait_until(Duration::from_secs(5), async || blacklisted(&client, &router, "02079460000").await)
        .await
        .context("the router never refused the number the CLI added")?;

    // Many at once in another region, with a time to live; the same number twice is one entry.
    let before = chrono::Utc::now();
    let many = ok(
        &env,
        &[
            "blacklist",
            "add",
            "8 (495) 123-45-67",
            "+7 495 123 45 68",
            "84951234567",
            "--region",
            "RU",
            "--ttl-secs",
            "3600",
            "--reason",
            "spam wave",
            "--json",
        ],
    )
    .await?
    .json();
    let entries = many["blacklist"].as_array().context("entries")?;
    let numbers: Vec<&str> = entries.iter().filter_map(|e| e["number"].as_str()).collect();
    assert_eq!(numbers, ["+74951234567", "+74951234568"], "{many}");
    for entry in entries {
        assert_eq!((entry["reason"].as_str(), entry["active"].as_bool()), (Some("spam wave"), Some(true)));
        let expires: chrono::DateTime<chrono::Utc> =
            entry["expires_at"].as_str().context("expires_at")?.parse()?;
        let ttl = (expires - before).num_seconds();
        assert!((3590..=3610).contains(&ttl), "an hour from now: {entry}");
    }
    // An expiry already past is accepted, as by the API, and refuses nobody.
    let past = switchboard(
        &env,
        &["blacklist", "add", "07911 123456", "--expires-at", "2020-01-01T00:00:00Z"],
        &[],
        None,
    )
    .await?;
    assert_eq!(
        (past.code, past.stdout.as_str()),
        (Some(0), "+447911123456\texpired\t2020-01-01T00:00:00Z\t\n")
    );
    assert!(past.stderr.contains("refuse nobody"), "{past:?}");
    wait_until(Duration::from_secs(5), async || blacklisted(&client, &router, "%2B74951234568").await)
        .await?;
    assert!(blacklisted(&client, &router, "%2B74951234567").await?);
    assert!(!blacklisted(&client, &router, "07911123456").await?, "an expired entry refuses nobody");

    // The list is what the API lists, entry for entry.
    let listed = ok(&env, &["blacklist", "list", "--json"]).await?.json();
    let auth = format!("Bearer {TOKEN}");
    let api =
        send(&client, "GET", &router.url("/v1/blacklist"), &[("authorization", &auth)], "").await?.json();
    assert_eq!(listed["blacklist"], api["blacklist"], "the CLI lists what the API does");
    assert_eq!(listed["blacklist"].as_array().map(Vec::len), Some(4), "{listed}");
    let text = ok(&env, &["blacklist", "list"]).await?.stdout;
    let first_columns: Vec<String> =
        text.lines().map(|l| l.split('\t').take(2).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(
        first_columns,
        ["+442079460000 active", "+447911123456 expired", "+74951234567 active", "+74951234568 active"]
    );

    // An import: valid rows stored in one go, refused ones reported by line, exit 1.
    let file = "# callers of the night shift\nnumber,reason\n0113 496 0000,\"calls at night, daily\"\n+44 113 496 0001\n\nnot a number\n01134960000,again\n";
    let import =
        switchboard(&env, &["blacklist", "import", "-", "--reason", "imported", "--json"], &[], Some(file))
            .await?;
    assert_eq!(import.code, Some(1), "{import:?}");
    let report = import.json();
    assert_eq!((report["imported"].as_u64(), report["rejected"].as_u64()), (Some(2), Some(2)), "{report}");
    assert_eq!(
        (report["errors"][0]["line"].as_u64(), report["errors"][1]["line"].as_u64()),
        (Some(6), Some(7))
    );
    assert!(
        report["errors"][0]["error"].as_str().is_some_and(|e| e.contains("not a valid phone number")),
        "{report}"
    );
    assert!(report["errors"][1]["error"].as_str().is_some_and(|e| e.contains("duplicate")), "{report}");
    assert!(import.stderr.contains("line 6:") && import.stderr.contains("line 7:"), "{import:?}");
    let db = env.db().await?;
    let reasons: Vec<(String, Option<String>)> = db
        .query("SELECT number, reason FROM blacklist WHERE number LIKE '+44113%' ORDER BY number", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        reasons,
        [
            ("+441134960000".to_owned(), Some("calls at night, daily".to_owned())),
            ("+441134960001".to_owned(), Some("imported".to_owned()))
        ]
    );
    wait_until(Duration::from_secs(5), async || blacklisted(&client, &router, "01134960001").await).await?;
    let path = env.log_dir.join("numbers.txt");
    std::fs::write(&path, "+44 161 496 0000\n")?;
    let from_file = ok(&env, &["blacklist", "import", path.to_str().context("path")?]).await?;
    assert_eq!(from_file.stdout, "Imported 1 numbers; refused 0 rows.\n");

    // Remove many: those on the list go, in any notation; one that was not is named.
    let removed =
        ok(&env, &["blacklist", "remove", "020 7946 0000", "+44 113 496 0000", "020 7946 9999", "--json"])
            .await?
            .json();
    let gone: BTreeSet<&str> =
        removed["removed"].as_array().context("removed")?.iter().filter_map(Value::as_str).collect();
    assert_eq!(gone, BTreeSet::from(["+441134960000", "+442079460000"]), "{removed}");
    assert_eq!(removed["not_found"], json!(["+442079469999"]));
    wait_until(Duration::from_secs(5), async || Ok(!blacklisted(&client, &router, "02079460000").await?))
        .await
        .context("the router still refuses a number the CLI removed")?;
    assert!(blacklisted(&client, &router, "01134960001").await?, "the others stay");

    // A source's region reads national numbers.
    let _ = ok(&env, &["sources", "add", "ru-pbx", "--region", "RU"]).await?;
    let by_source = ok(&env, &["blacklist", "add", "8 495 111-00-00", "--source", "ru-pbx"]).await?;
    assert!(by_source.stdout.starts_with("+74951110000\tactive"), "{by_source:?}");

    // Command lines that cannot be carried out: exit 2, and nothing is written.
    let rows = blacklist_rows(&env).await?;
    for (args, says) in [
        (&["blacklist", "add", "020 7946 0001", "12"][..], "not a valid phone number"),
        (&["blacklist", "add", "020 7946 0001", "--source", "nope"], "no source nope"),
        (&["blacklist", "add", "020 7946 0001", "--expires-at", "2030-01-01"], "RFC 3339"),
        (
            &[
                "blacklist",
                "add",
                "020 7946 0001",
                "--ttl-secs",
                "60",
                "--expires-at",
                "2030-01-01T00:00:00Z",
            ],
            "cannot be used with",
        ),
        (&["blacklist", "add", "020 7946 0001", "--region", "Mars"], "ISO 3166"),
        (&["blacklist", "remove", "12"], "not a valid phone number"),
        (&["blacklist", "import", "/no/such/file"], "/no/such/file"),
        (&["blacklist", "add"], "NUMBER"),
    ] {
        let run = switchboard(&env, args, &[], None).await?;
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?} should say {says:?}: {}", run.stderr);
    }
    let header =
        switchboard(&env, &["blacklist", "import", "-"], &[], Some("number,until\n+442079460001,never\n"))
            .await?;
    assert_eq!(header.code, Some(2), "an unknown column: {header:?}");
    assert_eq!(blacklist_rows(&env).await?, rows, "nothing written by a refused command line");

    // The API token of the desk commands may be in the same environment.
    let with_token = switchboard(&env, &["blacklist", "list"], &[(TOKEN_VAR, TOKEN)], None).await?;
    assert_eq!(with_token.code, Some(0), "{with_token:?}");
    assert_eq!(with_token.stdout.lines().count(), 6, "{with_token:?}");
    let mut router = router;
    let _ = router.terminate(WAIT).await?;
    env.cleanup().await;
    Ok(())
}

const TWILIO_ACCOUNT: &str = "AC3f0a8c2e1b7d4e9f6a5b4c3d2e1f0a9b";

/// The key `switchboard call` generated, from the line it printed on standard error.
fn printed_key(stderr: &str) -> Option<String> {
    let rest = stderr.split("Idempotency-Key ").nth(1)?;
    Some(rest.split_whitespace().next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_hangup_and_disposition_go_through_the_desk_with_the_token_from_the_environment()
-> anyhow::Result<()> {
    let mut env = TestEnv::new("cli-desk");
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.init().await?;
    env.db()
        .await?
        .batch_execute(
            "INSERT INTO agents (id, name, email, extensions, phone_numbers)
             VALUES ('ann', 'Ann Lee', 'ann@example.com', '{101}', '{+14155550123}')",
        )
        .await?;
    let (twilio, port) = FakeVendor::start(fake_vendor::twilio).await?;
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/twilio/outbound-api.json"
    ))?)?;
    let mut settings = fixture["source"]["settings"].clone();
    settings["api_url"] = json!(format!("http://127.0.0.1:{port}"));
    settings["api_client_id"] = json!(TWILIO_ACCOUNT);
    settings["originate_caller_id"] = json!("+14155550100");
    let auth_token = fixture["source"]["signing_secret"].as_str().context("token")?;
    let settings = settings.to_string();
    let _ = ok(
        &env,
        &[
            "sources",
            "add",
            "acme-twilio",
            "--vendor",
            "twilio",
            "--region",
            "US",
            "--settings",
            &settings,
            "--signing-secret",
            auth_token,
        ],
    )
    .await?;
    let mut services = Vec::new();
    for service in switchboard_tests::SERVICES {
        services.push(env.start(service).await?);
    }
    let desk = env.start("desk").await?;
    let desk_url = desk.url("");
    let token = [(TOKEN_VAR, TOKEN)];
    let call = |extra: &[&str]| {
        let mut args =
            vec!["call", "--source", "acme-twilio", "--to", "(415) 555-0187", "--desk-url", &desk_url];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };

    // No key given: one is made, printed, and is the answer's; the vendor's call id comes back.
    let args = call(&["--agent-number", "+1 415 555 0123"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let placed = switchboard(&env, &args, &token, None).await?;
    assert_eq!(placed.code, Some(0), "{placed:?}");
    let key = printed_key(&placed.stderr).context("the generated key is printed")?;
    let answer = placed.json();
    assert_eq!(answer["vendor_call_id"], TWILIO_SID, "{answer}");
    assert_eq!(
        (answer["state"].as_str(), answer["destination"].as_str()),
        (Some("placed"), Some("+14155550187"))
    );
    assert_eq!(answer["idempotency_key"].as_str(), Some(key.as_str()));
    assert_eq!(twilio.requests().len(), 1);
    assert!(twilio.requests()[0].body.contains("To=%2B14155550123"), "{:?}", twilio.requests());

    // The same key again: the same answer, no second call.
    let mut again_args = args.clone();
    again_args.extend(["--idempotency-key", key.as_str()]);
    let again = switchboard(&env, &again_args, &token, None).await?;
    assert_eq!((again.code, again.json()), (Some(0), answer.clone()), "{again:?}");
    assert!(printed_key(&again.stderr).is_none(), "a given key is not announced again: {again:?}");
    assert_eq!(twilio.requests().len(), 1, "one call for one key");
    // The same key for another call: refused, with the desk's reason.
    let other = [
        "call",
        "--source",
        "acme-twilio",
        "--to",
        "+1 415 555 0111",
        "--desk-url",
        &desk_url,
        "--agent-number",
        "+1 415 555 0123",
        "--idempotency-key",
        &key,
    ];
    let reused = switchboard(&env, &other, &token, None).await?;
    assert_eq!(reused.code, Some(1), "{reused:?}");
    assert!(reused.stderr.contains("422") && reused.stderr.contains("idempotency_key_reused"), "{reused:?}");
    assert_eq!(reused.json()["error"], "idempotency_key_reused");

    // A directory agent by id (the desk may still be loading its directory: 503, same key again).
    let by_id =
        call(&["--agent-id", "ann", "--idempotency-key", "cli-test-ann", "--caller-id", "+14155550199"]);
    let by_id: Vec<&str> = by_id.iter().map(String::as_str).collect();
    let deadline = Instant::now() + WAIT;
    let ann = loop {
        let run = switchboard(&env, &by_id, &token, None).await?;
        if run.code == Some(1) && run.stderr.contains("503") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        break run;
    };
    assert_eq!(ann.code, Some(0), "{ann:?}");
    assert_eq!(
        (ann.json()["agent_id"].as_str(), ann.json()["vendor_call_id"].as_str()),
        (Some("ann"), Some(TWILIO_SID))
    );
    let sent = twilio.requests().last().cloned().context("second call")?.body;
    assert!(sent.contains("To=%2B14155550123") && sent.contains("From=%2B14155550199"), "{sent}");

    // No token in the environment: a usage error before anything is sent.
    let calls = twilio.requests().len();
    let fresh = call(&["--agent-id", "ann"]);
    let fresh: Vec<&str> = fresh.iter().map(String::as_str).collect();
    let no_token = switchboard(&env, &fresh, &[], None).await?;
    assert_eq!(no_token.code, Some(2), "{no_token:?}");
    assert!(no_token.stderr.contains("SWITCHBOARD_API_TOKEN is not set"), "{no_token:?}");
    assert_eq!(no_token.stdout, "");
    let empty = switchboard(&env, &fresh, &[(TOKEN_VAR, "")], None).await?;
    assert_eq!(empty.code, Some(2), "{empty:?}");
    // A wrong one: the desk's 401, exit 1.
    let wrong = switchboard(&env, &fresh, &[(TOKEN_VAR, "not-the-token")], None).await?;
    assert_eq!(wrong.code, Some(1), "{wrong:?}");
    assert!(wrong.stderr.contains("401") && wrong.stderr.contains(TOKEN_VAR), "{wrong:?}");
    assert!(!wrong.stderr.contains("not-the-token"), "the token is never printed");
    assert_eq!(twilio.requests().len(), calls, "nothing placed without a valid token");
    // Refusals: exit 1, the desk's answer on standard output and its message on standard error.
    let unknown = ["call", "--source", "nope", "--agent-id", "ann", "--to", "1", "--desk-url", &desk_url];
    let refused = switchboard(&env, &unknown, &token, None).await?;
    assert_eq!(
        (refused.code, refused.json()["error"].as_str()),
        (Some(1), Some("no_such_source")),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("404") && refused.stderr.contains("no enabled source"), "{refused:?}");
    twilio.set_down(true);
    let down = switchboard(&env, &fresh, &token, None).await?;
    assert_eq!(down.code, Some(1), "{down:?}");
    assert!(down.stderr.contains("502") && down.stderr.contains("vendor_unavailable"), "{down:?}");
    twilio.set_down(false);
    // No desk at all: 69, and the key to retry with.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let lost = switchboard(
        &env,
        &["call", "--source", "acme-twilio", "--agent-id", "ann", "--to", "1", "--desk-url", &nowhere],
        &token,
        None,
    )
    .await?;
    assert_eq!(lost.code, Some(69), "{lost:?}");
    let lost_key = printed_key(&lost.stderr).context("key")?;
    assert!(lost.stderr.contains(&format!("retry with --idempotency-key {lost_key}")), "{lost:?}");
    // Usage errors are clap's: exit 2.
    for bad in [
        &["call", "--source", "acme-twilio", "--to", "1"][..],
        &["call", "--source", "acme-twilio", "--agent-id", "a", "--extension", "1", "--to", "1"],
        &["call", "--source", "acme-twilio", "--agent-id", "a", "--to", "1", "--idempotency-key", "a b"],
        &["call", "--source", "acme-twilio", "--agent-id", "a", "--to", "1", "--desk-url", "ftp://x"],
        &["hangup"],
    ] {
        let run = switchboard(&env, bad, &token, None).await?;
        assert_eq!(run.code, Some(2), "{bad:?}: {run:?}");
    }

    // Hang-up of the first call: the desk's 204, through Twilio's API.
    let request_id = answer["request_id"].as_str().context("request_id")?;
    let hung = switchboard(&env, &["hangup", request_id, "--desk-url", &desk_url], &token, None).await?;
    assert_eq!(hung.code, Some(0), "{hung:?}");
    assert_eq!(hung.json(), json!({"request_id": request_id, "hung_up": true}));
    let hang_up = twilio.requests().last().cloned().context("hang-up")?;
    assert_eq!(
        (hang_up.path, hang_up.body.as_str()),
        (format!("/2010-04-01/Accounts/{TWILIO_ACCOUNT}/Calls/{TWILIO_SID}.json"), "Status=completed")
    );
    let missing = switchboard(&env, &["hangup", "sbc_nope", "--desk-url", &desk_url], &token, None).await?;
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(missing.stderr.contains("not_found"), "{missing:?}");

    dispositions(&env, &desk, &services[0], &fixture, &token).await?;

    let mut desk = desk;
    let _ = desk.terminate(WAIT).await?;
    for mut service in services {
        let _ = service.terminate(WAIT).await?;
    }
    env.cleanup().await;
    Ok(())
}

/// `disposition codes` and `disposition set` against the desk's wrap-up endpoints, on the call
/// the fixture's webhooks put in the call log.
async fn dispositions(
    env: &TestEnv,
    desk: &ServiceProcess,
    ingress: &ServiceProcess,
    fixture: &Value,
    token: &[(&str, &str)],
) -> anyhow::Result<()> {
    let client = http_client();
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let codes =
        json!({"codes": [{"code": "sale", "label": "Sale"}, {"code": "callback", "label": "Call back"}]});
    let put =
        send(&client, "PUT", &desk.url("/v1/desk/dispositions/acme-twilio"), &headers, codes.to_string())
            .await?;
    ensure!(put.status < 300, "PUT codes: {} {:?}", put.status, put.body);
    let desk_url = desk.url("");

    let listed =
        switchboard(env, &["disposition", "codes", "acme-twilio", "--desk-url", &desk_url], token, None)
            .await?;
    assert_eq!(listed.code, Some(0), "{listed:?}");
    let api = send(&client, "GET", &desk.url("/v1/desk/sources/acme-twilio/dispositions"), &headers, "")
        .await?
        .json();
    assert_eq!(listed.json(), api);
    let codes: Vec<&str> = api["codes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["code"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(codes, ["sale", "callback"], "{api}");
    let default =
        switchboard(env, &["disposition", "codes", "*", "--desk-url", &desk_url], token, None).await?;
    assert_eq!((default.code, default.json()["source_id"].as_str()), (Some(0), Some("*")), "{default:?}");

    // The call's webhooks: the call log has it, then its wrap-up can be set.
    assert_eq!(ingress.name, "ingress");
    let ingress = ingress.url("/v1/webhooks/acme-twilio");
    switchboard_tests::post_fixture_requests(&client, &ingress, fixture).await?;
    let db = env.db().await?;
    wait_until(Duration::from_secs(30), async || {
        let row = db
            .query_opt("SELECT 1 FROM calls WHERE source_id = 'acme-twilio' AND call_id = $1", &[&TWILIO_SID])
            .await?;
        Ok(row.is_some())
    })
    .await
    .context("the call never reached the call log")?;

    let set = [
        "disposition",
        "set",
        "--source",
        "acme-twilio",
        "--call",
        TWILIO_SID,
        "--code",
        "sale",
        "--note",
        "wants the blue one",
        "--tag",
        "vip",
        "--tag",
        "q4",
        "--desk-url",
        &desk_url,
    ];
    let wrapped = switchboard(env, &set, token, None).await?;
    assert_eq!(wrapped.code, Some(0), "{wrapped:?}");
    let wrap_up = &wrapped.json()["wrap_up"];
    assert_eq!(
        (wrap_up["code"].as_str(), wrap_up["label"].as_str(), wrap_up["note"].as_str()),
        (Some("sale"), Some("Sale"), Some("wants the blue one")),
        "{wrapped:?}"
    );
    assert_eq!(wrap_up["tags"], json!(["vip", "q4"]));
    let mut unknown = set;
    unknown[7] = "no-such-code";
    let refused = switchboard(env, &unknown, token, None).await?;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("unknown_code"), "{refused:?}");
    let no_call = [
        "disposition",
        "set",
        "--source",
        "acme-twilio",
        "--call",
        "CAnope",
        "--code",
        "sale",
        "--desk-url",
        &desk_url,
    ];
    let run = switchboard(env, &no_call, token, None).await?;
    assert_eq!((run.code, run.json()["error"].as_str()), (Some(1), Some("not_found")), "{run:?}");
    Ok(())
}

/// Secrets stay off the command line: `--signing-secret -` reads standard input and
/// `--api-client-secret @file` a file; they are stored as given, without the final new line, and
/// two arguments cannot both read standard input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_secrets_are_read_from_standard_input_or_a_file() -> anyhow::Result<()> {
    let env = TestEnv::new("cli-secrets");
    env.init().await?;
    let file = env.log_dir.join("api-secret.txt");
    std::fs::write(&file, "telphin-client-secret\n")?;
    let from_file = format!("@{}", file.display());
    let added = switchboard(
        &env,
        &[
            "sources",
            "add",
            "acme-tel",
            "--vendor",
            "telphin",
            "--region",
            "RU",
            "--signing-secret",
            "-",
            "--api-client-id",
            "client-1",
            "--api-client-secret",
            &from_file,
            "--json",
        ],
        &[],
        Some("webhook-signing-secret\n"),
    )
    .await?;
    assert_eq!(added.code, Some(0), "{added:?}");
    // Stored sealed, not in plaintext (#18): the sources' key opens them.
    let row = env
        .db()
        .await?
        .query_one(
            "SELECT signing_secret, settings->>'api_client_secret', secrets_sealed FROM sources WHERE id = 'acme-tel'",
            &[],
        )
        .await?;
    assert_eq!(
        (row.get::<_, Option<String>>(0), row.get::<_, Option<String>>(1)),
        (None, None),
        "no plaintext"
    );
    let sealed: Vec<u8> = row.get(2);
    assert!(!String::from_utf8_lossy(&sealed).contains("secret"), "nothing readable");
    let secrets = SourceSecrets::open(&sources_sealer(&env, None)?, &sealed)?;
    assert_eq!(secrets.signing_secret(), Some("webhook-signing-secret"));
    assert_eq!(secrets.api_client_secret.as_ref().map(|s| s.expose()), Some("telphin-client-secret"));
    let both = switchboard(
        &env,
        &["sources", "add", "acme-2", "--signing-secret", "-", "--api-client-secret", "-"],
        &[],
        Some("x\n"),
    )
    .await?;
    assert_ne!(both.code, Some(0), "{both:?}");
    assert!(both.stderr.contains("cannot both read standard input"), "{both:?}");
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_made_from_a_connector_with_its_settings_read_from_standard_input() -> anyhow::Result<()>
{
    let env = TestEnv::new("cli-connector");
    env.init().await?;
    let key = [("SWITCHBOARD_DISPATCHER__SECRETS_KEY", "cli-connector-secrets-key-of-32-bytes-or-more")];
    let settings = r#"{"webhook_url": "https://acme.bitrix24.ru/rest/1/cl1t0ken/",
        "users": {"users": {"101": "42"}, "default_user": "1"}}"#;
    let made = switchboard(
        &env,
        &["profiles", "connector", "bx", "bitrix24", "--settings", "-"],
        &key,
        Some(settings),
    )
    .await?;
    assert_eq!(made.code, Some(0), "{made:?}");
    assert!(made.stdout.contains("Profile bx created"), "{made:?}");
    let listed = switchboard(&env, &["profiles", "list"], &key, None).await?;
    assert!(listed.stdout.contains("bx\tenabled\tBitrix24 telephony"), "{listed:?}");
    let spec: Value =
        env.db().await?.query_one("SELECT spec FROM delivery_profiles WHERE id = 'bx'", &[]).await?.get(0);
    assert_eq!(spec["steps"][0]["request"]["url_secret"], "***");
    assert!(!spec.to_string().contains("cl1t0ken"), "the token is sealed: {spec}");

    let unknown =
        switchboard(&env, &["profiles", "connector", "x", "zoho", "--settings", "{}"], &key, None).await?;
    assert_ne!(unknown.code, Some(0), "{unknown:?}");
    assert!(unknown.stderr.contains("hubspot, pipedrive, bitrix24, amocrm"), "{unknown:?}");
    env.cleanup().await;
    Ok(())
}

/// A source row's plaintext signing secret, plaintext API secret and sealed secrets.
type StoredSecrets = (Option<String>, Option<String>, Option<Vec<u8>>);

/// The sealer of `env`'s sources, or of `key`.
fn sources_sealer(env: &TestEnv, key: Option<&str>) -> anyhow::Result<Sealer> {
    let key = key.unwrap_or(&env.settings["SWITCHBOARD_SOURCES__SECRETS_KEY"]);
    Ok(Sealer::new(key)?)
}

/// Sources stored before secrets were sealed (plaintext columns) are read as they are, and
/// `sources reseal` seals them; during a key rotation it seals every source again with the new
/// key, the previous one opening the old seals meanwhile (#18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_reseal_seals_old_plaintext_rows_and_rotates_the_key() -> anyhow::Result<()> {
    let env = TestEnv::new("cli-reseal");
    env.init().await?;
    let db = env.db().await?;
    // As a release from before sealing wrote it.
    db.execute(
        "INSERT INTO sources (id, vendor, default_region, secret_sha256, signing_secret, settings)
         VALUES ('old-tel', 'telphin', 'RU', decode(repeat('00', 32), 'hex'), 'old-signing-secret',
                 '{\"api_client_id\": \"c-1\", \"api_client_secret\": \"old-client-secret\"}')",
        &[],
    )
    .await?;
    let _ = ok(&env, &["sources", "add", "new-gen", "--signing-secret", "new-signing-secret"]).await?;
    let sealed_of = async |id: &str| -> anyhow::Result<StoredSecrets> {
        let row = db
            .query_one(
                "SELECT signing_secret, settings->>'api_client_secret', secrets_sealed FROM sources WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok((row.get(0), row.get(1), row.get(2)))
    };
    let resealed = ok(&env, &["sources", "reseal"]).await?;
    assert!(resealed.stdout.contains("2 sources sealed"), "{resealed:?}");
    let (plain, plain_api, sealed) = sealed_of("old-tel").await?;
    assert_eq!((plain, plain_api), (None, None), "the plaintext is gone");
    let secrets = SourceSecrets::open(&sources_sealer(&env, None)?, &sealed.context("sealed")?)?;
    assert_eq!(secrets.signing_secret(), Some("old-signing-secret"));
    assert_eq!(secrets.api_client_secret.as_ref().map(|s| s.expose()), Some("old-client-secret"));

    // A new key, the old one as the previous: everything is sealed again with the new key.
    let old_key = env.settings["SWITCHBOARD_SOURCES__SECRETS_KEY"].clone();
    let new_key = "the-rotated-sources-key-0123456789abcdef-0123";
    let rotate = [
        ("SWITCHBOARD_SOURCES__SECRETS_KEY", new_key),
        ("SWITCHBOARD_SOURCES__PREVIOUS_SECRETS_KEY", old_key.as_str()),
    ];
    let rotated = switchboard(&env, &["sources", "reseal"], &rotate, None).await?;
    assert_eq!(rotated.code, Some(0), "{rotated:?}");
    for (id, signing) in [("old-tel", "old-signing-secret"), ("new-gen", "new-signing-secret")] {
        let sealed = sealed_of(id).await?.2.context("sealed")?;
        assert!(
            SourceSecrets::open(&sources_sealer(&env, None)?, &sealed).is_err(),
            "{id}: not the old key any more"
        );
        let secrets = SourceSecrets::open(&sources_sealer(&env, Some(new_key))?, &sealed)?;
        assert_eq!(secrets.signing_secret(), Some(signing), "{id}");
    }
    // Without the previous key nothing opens the old seals: reseal refuses and changes nothing.
    let wrong = switchboard(
        &env,
        &["sources", "reseal"],
        &[("SWITCHBOARD_SOURCES__SECRETS_KEY", "yet-another-sources-key-0123456789abcdef")],
        None,
    )
    .await?;
    assert_ne!(wrong.code, Some(0), "{wrong:?}");
    assert!(
        SourceSecrets::open(
            &sources_sealer(&env, Some(new_key))?,
            &sealed_of("old-tel").await?.2.context("sealed")?
        )
        .is_ok()
    );
    env.cleanup().await;
    Ok(())
}
