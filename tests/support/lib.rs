//! Test and benchmark harness: runs the real `switchboard` binary as separate processes against
//! Apache Kafka and a real PostgreSQL, each test on its own topics, consumer
//! groups and database so that tests run in parallel.
//!
//! Where things are (set by `./test`, defaults for a local run):
//! - `SB_TEST_KAFKA`: the broker, default `127.0.0.1:19092`;
//! - `SB_TEST_POSTGRES`: a PostgreSQL URL whose user may create databases, default
//!   `postgres://postgres@127.0.0.1:5432/postgres`;
//! - `SB_BIN`: the binary, default the `switchboard` built beside this test;
//! - `SB_KAFKA_HOME`: the Kafka jars (`libs/`) for tests that run a broker of their own.
//!
//! Service logs go to `target/test-logs/<test id>/<service>.log`.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::process::{Child, Command};

pub use switchboard_core;

pub mod fake_vendor;

pub const SERVICES: [&str; 5] = ["ingress", "normalizer", "matcher", "recordings", "calllog"];

pub fn kafka_brokers() -> String {
    std::env::var("SB_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

pub fn postgres_admin_url() -> String {
    switchboard_schema::scratch::admin_url()
}

/// The `switchboard` binary: `SB_BIN`, else the one cargo built next to this executable.
pub fn switchboard_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SB_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    // Test executables live in target/<profile>/deps, binaries in target/<profile>.
    if dir.ends_with("deps") {
        let _ = dir.pop();
    }
    let bin = dir.join("switchboard");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p switchboard`) or set SB_BIN",
        bin.display()
    );
    bin
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// One test's private world: topic and group prefixes, a database, a log folder.
#[derive(Debug)]
pub struct TestEnv {
    pub id: String,
    pub database: String,
    pub brokers: String,
    pub settings: BTreeMap<String, String>,
    pub log_dir: PathBuf,
}

impl TestEnv {
    pub fn new(name: &str) -> Self {
        let short = uuid::Uuid::now_v7().simple().to_string();
        let id = format!("{name}-{}", &short[short.len() - 8..]);
        let database = format!("sb_test_{}", id.replace('-', "_"));
        let brokers = kafka_brokers();
        let log_dir = target_dir().join("test-logs").join(&id);
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let mut settings = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            let _ = settings.insert(k.to_owned(), v);
        };
        set("SWITCHBOARD_KAFKA__BROKERS", brokers.clone());
        set("SWITCHBOARD_KAFKA__TOPIC_PREFIX", format!("t-{id}."));
        set("SWITCHBOARD_KAFKA__GROUP_PREFIX", format!("g-{id}."));
        set("SWITCHBOARD_KAFKA__PARTITIONS", "4".into());
        set("SWITCHBOARD_KAFKA__SESSION_TIMEOUT_MS", "6000".into());
        set("SWITCHBOARD_KAFKA__HEARTBEAT_INTERVAL_MS", "500".into());
        set("SWITCHBOARD_POSTGRES__URL", switchboard_schema::scratch::url_of(&database));
        set("SWITCHBOARD_POSTGRES__POOL_SIZE", "4".into());
        set("SWITCHBOARD_INGRESS__SOURCES_REFRESH_MS", "500".into());
        set("SWITCHBOARD_PIPELINE__DRAIN_TIMEOUT_MS", "5000".into());
        // The recordings service signs links with it (and refuses to start without one).
        set("SWITCHBOARD_RECORDINGS__LINK_KEY", format!("test-link-key-of-{id}-0123456789abcdef"));
        // The dispatcher seals profile secrets with it (and refuses to start without one).
        set("SWITCHBOARD_DISPATCHER__SECRETS_KEY", format!("test-secrets-key-of-{id}-0123456789abcdef"));
        // The desk derives session tokens with it (and refuses to start without one).
        set("SWITCHBOARD_DESK__TOKEN_KEY", format!("test-token-key-of-{id}-0123456789abcdef"));
        // The sources' signing and API secrets are sealed with it.
        set("SWITCHBOARD_SOURCES__SECRETS_KEY", format!("test-sources-key-of-{id}-0123456789abcdef"));
        // Lookups without tokens, as a router reachable only from the PBX would answer them; a
        // test of the tokens sets them.
        set("SWITCHBOARD_ROUTER__OPEN_LOOKUPS", "true".into());
        set("RUST_LOG", "info".into());
        Self { id, database, brokers, settings, log_dir }
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let _ = self.settings.insert(key.to_owned(), value.into());
    }

    pub fn topics(&self) -> switchboard_core::config::Topics {
        switchboard_core::config::Topics::with_prefix(&self.settings["SWITCHBOARD_KAFKA__TOPIC_PREFIX"])
    }

    pub fn database_url(&self) -> String {
        switchboard_schema::scratch::url_of(&self.database)
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_of(&switchboard_bin(), args)
    }

    /// `bin` (this release's binary, or another release's) with the test's settings.
    fn command_of(&self, bin: &std::path::Path, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        let _ = command.args(args).envs(&self.settings).kill_on_drop(true);
        command
    }

    /// Runs a one-shot CLI command and returns its standard output.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.command(args).stdin(Stdio::null()).output().await?;
        if !output.status.success() {
            bail!("switchboard {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// `switchboard init`: topics and migrations.
    pub async fn init(&self) -> anyhow::Result<()> {
        let _ = self.cli(&["init"]).await?;
        Ok(())
    }

    /// Creates a generic source and returns its HTTP Basic credentials.
    pub async fn add_source(&self, id: &str, region: &str) -> anyhow::Result<Credentials> {
        let out = self.cli(&["sources", "add", id, "--region", region, "--json"]).await?;
        let value: serde_json::Value = serde_json::from_str(out.trim())?;
        Ok(Credentials {
            user: value["id"].as_str().context("id")?.to_owned(),
            secret: value["secret"].as_str().context("secret")?.to_owned(),
        })
    }

    /// Starts one service on a free port and waits until it reports ready.
    pub async fn start(&self, service: &str) -> anyhow::Result<ServiceProcess> {
        self.start_with(service, &[]).await
    }

    /// Starts one service with extra settings on top of the test's own.
    pub async fn start_with(
        &self,
        service: &str,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        self.start_binary(&switchboard_bin(), service, overrides).await
    }

    /// Starts one service without waiting for it. The services with a public port get a second free
    /// port for their ops endpoints; the consumers serve them on their only port.
    pub fn spawn(&self, service: &str, overrides: &[(&str, &str)]) -> anyhow::Result<ServiceProcess> {
        self.spawn_binary(&switchboard_bin(), service, overrides)
    }

    /// Starts one service of another release's binary (`bin`) and waits until it reports ready.
    pub async fn start_binary(
        &self,
        bin: &std::path::Path,
        service: &str,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        let mut process = self.spawn_binary(bin, service, overrides)?;
        process.wait_ready(Duration::from_secs(60)).await?;
        Ok(process)
    }

    fn spawn_binary(
        &self,
        bin: &std::path::Path,
        service: &str,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        let port = free_port();
        let public = switchboard_core::config::Service::named(service)
            .is_some_and(switchboard_core::config::Service::has_public_port);
        let ops_port = if public { free_port() } else { port };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{service}.log")))?;
        let mut command = self.command_of(bin, &[service]);
        let _ = command.env("SWITCHBOARD_HTTP__LISTEN", format!("127.0.0.1:{port}"));
        if ops_port != port {
            let _ = command.env("SWITCHBOARD_HTTP__OPS_LISTEN", format!("127.0.0.1:{ops_port}"));
        }
        let child = command
            .envs(overrides.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {service}"))?;
        Ok(ServiceProcess { name: service.to_owned(), port, ops_port, child })
    }

    /// Starts every service of the pipeline.
    pub async fn start_pipeline(&self) -> anyhow::Result<Pipeline> {
        self.init().await?;
        let mut services = BTreeMap::new();
        for name in SERVICES {
            let _ = services.insert(name.to_owned(), self.start(name).await?);
        }
        Ok(Pipeline { services })
    }

    pub async fn db(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.database_url()).await
    }

    /// Drops the test database. Called at the end of a passing test; a failing test keeps its
    /// database for inspection.
    pub async fn cleanup(self) {
        if let Ok(admin) = connect(&postgres_admin_url()).await {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database))
                .await;
        }
    }
}

pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub secret: String,
}

impl Credentials {
    pub fn basic(&self) -> String {
        basic(&self.user, &self.secret)
    }
}

pub fn basic(user: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

/// A running service process.
#[derive(Debug)]
pub struct ServiceProcess {
    pub name: String,
    /// The service's HTTP port: ingress's webhooks, the consumers' ops endpoints.
    pub port: u16,
    /// Where `/metrics`, `/healthz` and `/readyz` answer (a port of its own for the services
    /// with a public port).
    pub ops_port: u16,
    child: Child,
}

impl ServiceProcess {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    pub async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let client = http_client();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited during start-up with {status}", self.name);
            }
            if let Ok(response) = get(&client, &self.url("/readyz")).await
                && response.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not ready within {within:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident memory of the process, from `/proc`, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .context("VmRSS in /proc/<pid>/status")?
            .parse()?;
        Ok(kib * 1024)
    }

    /// SIGKILL: no drain, no commit, no flush.
    pub async fn kill_hard(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Waits for the process to exit by itself; returns the exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        let exit = tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("{} still running after {within:?}", self.name))??;
        Ok(exit.code())
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        self.signal_term().await?;
        self.wait_exit(within).await
    }

    /// Sends SIGTERM without waiting: the service starts draining.
    pub async fn signal_term(&self) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(())
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = get(&http_client(), &self.ops_url("/metrics")).await?;
        anyhow::ensure!(response.status == 200, "{} /metrics answered {}", self.name, response.status);
        Ok(String::from_utf8(response.body.to_vec())?)
    }
}

/// Every service of a running pipeline, by name.
#[derive(Debug)]
pub struct Pipeline {
    pub services: BTreeMap<String, ServiceProcess>,
}

impl Pipeline {
    pub fn ingress_url(&self, path: &str) -> String {
        self.services["ingress"].url(path)
    }

    pub fn service(&mut self, name: &str) -> &mut ServiceProcess {
        self.services.get_mut(name).expect("service of the pipeline")
    }

    /// Stops everything with SIGTERM and checks each service drained and exited 0.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for name in SERVICES {
            let code = self.service(name).terminate(Duration::from_secs(30)).await?;
            anyhow::ensure!(code == Some(0), "{name} exited with {code:?} after SIGTERM");
        }
        Ok(())
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub async fn get(client: &HttpClient, url: &str) -> anyhow::Result<HttpResponse> {
    send(client, "GET", url, &[], Bytes::new()).await
}

pub async fn send(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> anyhow::Result<HttpResponse> {
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::new(body.into()))?).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(HttpResponse { status, headers, body })
}

/// Posts a JSON webhook with the source's credentials.
pub async fn post_webhook(
    client: &HttpClient,
    ingress_url: &str,
    credentials: &Credentials,
    body: &str,
) -> anyhow::Result<HttpResponse> {
    let url = format!("{ingress_url}/v1/webhooks/{}", credentials.user);
    let auth = credentials.basic();
    send(
        client,
        "POST",
        &url,
        &[("content-type", "application/json"), ("authorization", &auth)],
        body.to_owned(),
    )
    .await
}

/// Posts every request of a vendor fixture (`tests/fixtures/<vendor>/*.json`: its headers,
/// content type, subpath and body) to `ingress_url` (the source's webhook URL), in order; each
/// must be accepted.
pub async fn post_fixture_requests(
    client: &HttpClient,
    ingress_url: &str,
    fixture: &serde_json::Value,
) -> anyhow::Result<()> {
    for request in fixture["requests"].as_array().context("requests")? {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let mut headers: Vec<(String, String)> = request["headers"]
            .as_object()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default();
        headers.push(("content-type".into(), text(&request["content_type"])));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let url = format!("{ingress_url}{}", text(&request["subpath"]));
        let answer = send(client, "POST", &url, &headers, text(&request["body"])).await?;
        anyhow::ensure!(answer.status < 300, "webhook {}: {:?}", answer.status, answer.body);
    }
    Ok(())
}

/// The webhooks of `calls` complete calls, four events each: the call rings, an agent's leg is
/// answered, the leg hangs up, the call ends. Distinct bodies, so distinct events.
pub fn call_webhooks(run: &str, calls: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(calls * 4);
    for n in 0..calls {
        let call = format!("{run}-call-{n}");
        let from = format!("+4420794{:05}", n % 100_000);
        // Calls of the last day, ten seconds apart: adapters refuse times far from receipt.
        let base = chrono::Utc::now().timestamp() - 86_400 + (n % 8_000) as i64 * 10;
        let leg = format!("{call}-leg-a");
        bodies.push(format!(
            r#"{{"call_id":"{call}","event":"ringing","direction":"inbound","from":"{from}","to":"+442071234567","timestamp":{base}}}"#
        ));
        bodies.push(format!(
            r#"{{"call_id":"{call}","leg_id":"{leg}","event":"answered","agent":{{"number":"10{}","email":"agent{}@example.com"}},"timestamp":{}}}"#,
            n % 10,
            n % 10,
            base + 2
        ));
        bodies.push(format!(
            r#"{{"call_id":"{call}","leg_id":"{leg}","event":"hangup","timestamp":{}}}"#,
            base + 60
        ));
        bodies.push(format!(
            r#"{{"call_id":"{call}","event":"hangup","hangup_cause":"normal_clearing","timestamp":{}}}"#,
            base + 61
        ));
    }
    bodies
}

/// Posts every body with `concurrency` requests in flight; returns the 202 ids in order.
pub async fn post_all(
    client: &HttpClient,
    ingress_url: &str,
    credentials: &Credentials,
    bodies: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    use futures_util::StreamExt;
    // Owned bodies: borrowed stream items make this future not `Send` for `tokio::spawn`.
    futures_util::stream::iter(bodies.to_vec())
        .map(|body| async move {
            let response = post_webhook(client, ingress_url, credentials, &body).await?;
            anyhow::ensure!(
                response.status == 202,
                "got {} for {body}: {:?}",
                response.status,
                response.body
            );
            Ok(response.json()["id"].as_str().context("id in the 202 answer")?.to_owned())
        })
        .buffered(concurrency)
        .collect::<Vec<anyhow::Result<String>>>()
        .await
        .into_iter()
        .collect()
}

/// Waits until `query` (returning one bigint) reaches `expected`; returns the last value.
pub async fn wait_for_count(
    db: &tokio_postgres::Client,
    query: &str,
    expected: i64,
    within: Duration,
) -> anyhow::Result<i64> {
    poll_until(within, expected, async || Ok(db.query_one(query, &[]).await?.get(0))).await
}

/// Reads `probe` every 200 ms until it reaches `target` or `within` passes; returns the last
/// reading, so the caller's assertion shows how far it got.
async fn poll_until<T: PartialOrd>(
    within: Duration,
    target: T,
    mut probe: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        let value = probe().await?;
        if value >= target || Instant::now() > deadline {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads a topic from the beginning in a fresh group until `done` says so or `within` passes.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    within: Duration,
    mut done: impl FnMut(&[(Option<Vec<u8>>, Vec<u8>)]) -> bool,
) -> anyhow::Result<Vec<(Option<Vec<u8>>, Vec<u8>)>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + within;
    let mut records = Vec::new();
    while !done(&records) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match tokio::time::timeout(remaining, consumer.recv()).await {
            Ok(Ok(message)) => records.push((
                message.key().map(<[u8]>::to_vec),
                message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            )),
            Ok(Err(error)) => bail!("reading {topic}: {error}"),
            Err(_) => break,
        }
    }
    Ok(records)
}

/// The raw ids recorded in the call log.
pub async fn stored_raw_ids(db: &tokio_postgres::Client) -> anyhow::Result<HashSet<String>> {
    Ok(db.query("SELECT raw_id FROM call_events", &[]).await?.iter().map(|r| r.get(0)).collect())
}

/// The sum of every sample of metric `name` in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls a service's metric until it reaches `at_least`; returns the last value.
pub async fn wait_for_metric(
    service: &ServiceProcess,
    name: &str,
    at_least: f64,
    within: Duration,
) -> anyhow::Result<f64> {
    poll_until(within, at_least, async || Ok(metric_value(&service.metrics().await?, name))).await
}

/// A digest of the whole call log, `updated_at` included, to show that something wrote nothing.
pub async fn call_log_digest(db: &tokio_postgres::Client) -> anyhow::Result<String> {
    let row = db
        .query_one(
            "SELECT (SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY source_id, call_id), '')) FROM calls c),
                    (SELECT md5(coalesce(string_agg(l::text, '|' ORDER BY source_id, call_id, leg_id), '')) FROM call_legs l),
                    (SELECT count(*) FROM call_events)",
            &[],
        )
        .await?;
    let (calls, legs, events): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
    Ok(format!("{calls}/{legs}/{events}"))
}

/// An Apache Kafka broker of the test's own (one KRaft node in its own JVM, its data in the
/// test's log folder), to kill and start again without disturbing other tests. A restart keeps
/// topics, records and committed offsets, as a real cluster does.
///
/// It runs from the jars `./test` fetched (`SB_KAFKA_HOME`, the cache holding `libs/`) with the
/// repository's `deploy/kafka/server.properties`, like the test broker itself.
#[derive(Debug)]
pub struct PrivateBroker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    pub async fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let dir = env.log_dir.join("kafka");
        std::fs::create_dir_all(&dir)?;
        let port = free_port();
        let controller = free_port();
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kafka");
        let mut properties = std::fs::read_to_string(repo.join("server.properties"))?;
        properties.push_str(&format!(
            "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             log.dirs={}\n",
            dir.join("data").display()
        ));
        let config = dir.join("server.properties");
        std::fs::write(&config, properties)?;
        let cluster = kafka_java(&["kafka.tools.StorageTool", "random-uuid"], &dir).output().await?;
        anyhow::ensure!(cluster.status.success(), "kafka-storage random-uuid failed");
        let cluster = String::from_utf8(cluster.stdout)?.trim().to_owned();
        let config_arg = config.display().to_string();
        let format = kafka_java(
            &["kafka.tools.StorageTool", "format", "--standalone", "-t", &cluster, "-c", &config_arg],
            &dir,
        )
        .output()
        .await?;
        anyhow::ensure!(
            format.status.success(),
            "kafka-storage format failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        let mut broker = Self { port, dir, child: None };
        broker.restart().await?;
        Ok(broker)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) and waits until it answers a metadata request.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("stdout.log"))?;
        let log4j = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kafka/log4j2.properties");
        let config = self.dir.join("server.properties").display().to_string();
        let child = kafka_java(
            &[
                &format!("-Dlog4j2.configurationFile={}", log4j.display()),
                &format!("-Dkafka.logs.dir={}", self.dir.display()),
                "kafka.Kafka",
                &config,
            ],
            &self.dir,
        )
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("start Kafka (java on PATH and SB_KAFKA_HOME set? ./test does both)")?;
        self.child = Some(child);
        let address = self.address();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let probe = address.clone();
            let answered = tokio::task::spawn_blocking(move || {
                let client: rdkafka::consumer::BaseConsumer =
                    ClientConfig::new().set("bootstrap.servers", &probe).set("log_level", "0").create()?;
                client.fetch_metadata(None, Duration::from_secs(2)).map(|m| !m.brokers().is_empty())
            })
            .await?;
            if answered.unwrap_or(false) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("Kafka exited with {status}; see {}", self.dir.join("server.log").display());
            }
            anyhow::ensure!(Instant::now() < deadline, "Kafka did not answer on {address}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the broker at once (SIGKILL), as a crash or a network cut would.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    pub async fn cleanup(mut self) {
        let _ = self.stop().await;
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

/// A PostgreSQL server of the test's own (Debian's binaries, a fresh cluster in the test's log
/// folder, trusting local connections), to pause with SIGSTOP without stalling other tests.
#[derive(Debug)]
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub async fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")?
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .context("no /usr/lib/postgresql/*/bin/initdb (Debian's postgresql package)")?;
        let dir = env.log_dir.join("postgres");
        std::fs::create_dir_all(&dir)?;
        let port = free_port();
        let server = Self { port, dir: dir.clone(), bin };
        let as_owner = |program: &str| server.as_owner(program);
        if nix_is_root() {
            let status = Command::new("chown").args(["-R", "postgres"]).arg(&dir).status().await?;
            anyhow::ensure!(status.success(), "chown {} to postgres", dir.display());
        }
        let data = dir.join("data");
        let initdb = as_owner("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "switchboard", "--no-sync", "-E", "UTF8"])
            .output()
            .await?;
        anyhow::ensure!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        server.pg_ctl_start().await?;
        Ok(server)
    }

    /// PostgreSQL refuses to run as root: as root, run it as the postgres user.
    fn as_owner(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if nix_is_root() {
            let mut command = Command::new("runuser");
            let _ = command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    async fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let started = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-o", &options, "-w", "start"])
            .output()
            .await?;
        anyhow::ensure!(
            started.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        Ok(())
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, every
    /// connection cut), waits `down`, and starts it again on the same port and data.
    pub async fn restart(&self, down: Duration) -> anyhow::Result<()> {
        let stopped = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .await?;
        anyhow::ensure!(
            stopped.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&stopped.stderr)
        );
        tokio::time::sleep(down).await;
        self.pg_ctl_start().await
    }

    /// A URL of database `name` on this server (created by the services on first use).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://switchboard@127.0.0.1:{}/{name}", self.port)
    }

    /// The postmaster and every backend.
    async fn processes(&self) -> anyhow::Result<Vec<String>> {
        let pid_file = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))?;
        let postmaster = pid_file.lines().next().context("postmaster.pid")?.trim().to_owned();
        let children = Command::new("pgrep").args(["-P", &postmaster]).output().await?;
        let mut all = vec![postmaster];
        all.extend(String::from_utf8_lossy(&children.stdout).split_whitespace().map(str::to_owned));
        Ok(all)
    }

    async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let processes = self.processes().await?;
        let status = Command::new("kill").arg(signal).args(&processes).status().await?;
        anyhow::ensure!(status.success(), "kill {signal} {processes:?}");
        Ok(())
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub async fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP").await
    }

    pub async fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT").await
    }

    pub async fn stop(self) {
        let _ = self.resume().await;
        if let Ok(processes) = self.processes().await
            && let Some(postmaster) = processes.first()
        {
            let _ = Command::new("kill").args(["-QUIT", postmaster]).status().await;
        }
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find_map(|l| l.strip_prefix("Uid:")).map(str::to_owned))
        .and_then(|uids| uids.split_whitespace().next().map(|uid| uid == "0"))
        .unwrap_or(false)
}

/// `java` with the cached Kafka jars on the class path, in `dir`.
fn kafka_java(args: &[&str], dir: &std::path::Path) -> Command {
    let home = std::env::var("SB_KAFKA_HOME").unwrap_or_default();
    let mut command = Command::new("java");
    let _ = command
        .args(["-Xms256m", "-Xmx512m", "-cp", &format!("{home}/libs/*")])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

/// Polls `probe` every 50 ms until it says true; an error when `within` passes first.
pub async fn wait_until(
    within: Duration,
    mut probe: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if probe().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("condition not met within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series, written as Prometheus renders it (`name{a="x",b="y"}`, labels
/// sorted by name); 0 when absent.
pub fn metric_series(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .sum()
}
