//! Operations end to end, against the real binary, broker and database: what the people who run
//! Switchboard see. Every service's `/metrics` passes `promtool check metrics`; Debian's
//! Prometheus, given `deploy/prometheus/prometheus.yml` and its rules with the targets pointed
//! at a local pipeline, finds every target up, the key series present and the dead-letter alert
//! firing; ingress keeps its metrics off the webhook port and counts even its "starting" 503s;
//! consumer lag counts exactly the records the group has not committed; and a consumer replica
//! beyond the partition count is ready, standing by.
//!
//! Needs what the other end-to-end tests need (`SB_TEST_KAFKA`, `SB_TEST_POSTGRES`, the built
//! binary) plus `promtool` and `prometheus` (Debian's `prometheus` package; `./test` installs it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_norway::Value;
use switchboard_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const SETTLE: Duration = Duration::from_secs(120);
const CONSUMERS: [&str; 4] = ["normalizer", "matcher", "recordings", "calllog"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Calls `probe` every 200 ms until it returns `Some`, or fails after `within` with `what`.
async fn eventually<T>(
    within: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of one exact series (`name{a="x",b="y"}`, labels sorted) in a text exposition.
fn series(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of `name`'s samples whose labels include every `label="value"` of `having`.
fn sum_where(text: &str, name: &str, having: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter(|line| having.iter().all(|h| line.contains(h)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The services of the pipeline plus every other long-running service this build has (the
/// router), all started and ready.
async fn start_everything(env: &TestEnv) -> anyhow::Result<Pipeline> {
    let mut pipeline = env.start_pipeline().await?;
    for service in switchboard_core::config::Service::ALL {
        let name = service.name();
        if pipeline.services.contains_key(name) {
            continue;
        }
        let runs = std::process::Command::new(switchboard_bin()).args([name, "--help"]).output()?;
        if runs.status.success() {
            let _ = pipeline.services.insert(name.to_owned(), env.start(name).await?);
        }
    }
    Ok(pipeline)
}

/// Posts one complete call, one webhook only the adapter can refuse (a dead letter) and one
/// with a wrong password; returns how many call-log events to expect.
async fn traffic(
    env: &TestEnv,
    pipeline: &Pipeline,
    credentials: &Credentials,
    run: &str,
) -> anyhow::Result<i64> {
    let client = http_client();
    let ingress = pipeline.ingress_url("");
    let bodies = call_webhooks(run, 1);
    let _ = post_all(&client, &ingress, credentials, &bodies, 2).await?;
    let poison =
        post_webhook(&client, &ingress, credentials, r#"{"call_id":"p1","event":"exploded"}"#).await?;
    ensure!(poison.status == 202, "the adapter, not ingress, refuses an unknown event: {}", poison.status);
    let wrong = Credentials { user: credentials.user.clone(), secret: "wrong".into() };
    let refused = post_webhook(&client, &ingress, &wrong, &bodies[0]).await?;
    ensure!(refused.status == 401, "a wrong password is refused: {}", refused.status);
    let _ = env;
    Ok(bodies.len() as i64)
}

async fn promtool_check_metrics(text: &str) -> anyhow::Result<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("promtool not found: install Debian's `prometheus` package (./test does)")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}",
        out.status
    );
    Ok(said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exposes_metrics_that_pass_promtool_check_metrics() -> anyhow::Result<()> {
    let mut env = TestEnv::new("ops-promtool");
    env.set("SWITCHBOARD_KAFKA__MONITOR_INTERVAL_MS", "500");
    env.init().await?;
    let credentials = env.add_source("pbx-ops", "GB").await?;
    let pipeline = start_everything(&env).await?;
    let events = traffic(&env, &pipeline, &credentials, &env.id).await?;
    let db = env.db().await?;
    let stored = wait_for_count(&db, "SELECT count(*) FROM call_events", events, SETTLE).await?;
    assert_eq!(stored, events, "the call reached the call log");

    // Every consumer reports the lag of each of its input's partitions once its monitor looked.
    for stage in CONSUMERS {
        let service = &pipeline.services[stage];
        let partitions = eventually(SETTLE, &format!("{stage} lag series"), async || {
            let text = service.metrics().await?;
            let count = text
                .lines()
                .filter(|l| {
                    l.starts_with("switchboard_kafka_consumer_lag{")
                        && l.contains(&format!("stage=\"{stage}\""))
                })
                .count();
            Ok((count == 4).then_some(count))
        })
        .await?;
        assert_eq!(partitions, 4);
    }
    let normalizer = &pipeline.services["normalizer"];
    let _ = wait_for_metric(normalizer, "switchboard_events_failed_total", 1.0, SETTLE).await?;

    for (name, service) in &pipeline.services {
        let text = service.metrics().await?;
        assert!(
            text.contains(&format!("switchboard_build_info{{service=\"{name}\"")),
            "{name} names itself in its metrics"
        );
        assert_eq!(series(&text, "switchboard_ready"), Some(1.0), "{name} reports itself ready");
        promtool_check_metrics(&text).await.with_context(|| format!("{name}'s /metrics"))?;
    }
    let ingress = pipeline.services["ingress"].metrics().await?;
    assert_eq!(
        series(
            &ingress,
            r#"switchboard_ingress_requests_total{source="pbx-ops",status="202",vendor="generic"}"#
        ),
        Some(events as f64 + 1.0),
        "accepted webhooks are counted by source, vendor and status:\n{ingress}"
    );
    assert_eq!(
        series(&ingress, r#"switchboard_ingress_auth_failures_total{source="pbx-ops",vendor="generic"}"#),
        Some(1.0)
    );
    assert!(sum_where(&ingress, "switchboard_kafka_produce_seconds_count", &[r#"stage="ingress""#]) >= 1.0);
    assert!(sum_where(&ingress, "switchboard_ingress_body_bytes_count", &[r#"vendor="generic""#]) >= 1.0);
    let calllog = pipeline.services["calllog"].metrics().await?;
    assert!(sum_where(&calllog, "switchboard_end_to_end_seconds_count", &[]) >= events as f64);
    let normalized = normalizer.metrics().await?;
    assert_eq!(
        series(
            &normalized,
            r#"switchboard_normalizer_webhooks_total{result="parse_failure",vendor="generic"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series(&normalized, r#"switchboard_events_failed_total{class="adapter",stage="normalizer"}"#),
        Some(1.0),
        "the dead letter is counted by stage and class"
    );

    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

/// A Prometheus of the test's own: Debian's binary, a temporary config and storage, a free port.
struct Prometheus {
    url: String,
    dir: PathBuf,
    child: tokio::process::Child,
}

impl Prometheus {
    /// Starts Prometheus on `deploy/prometheus/prometheus.yml` and its rules, each job's DNS
    /// discovery replaced by the local address of its service, scraping and evaluating every
    /// second.
    async fn start(env: &TestEnv, ops_ports: &BTreeMap<String, u16>) -> anyhow::Result<Self> {
        let deploy = repo().join("deploy/prometheus");
        let mut config: Value =
            serde_norway::from_str(&std::fs::read_to_string(deploy.join("prometheus.yml"))?)?;
        config["global"]["scrape_interval"] = Value::from("1s");
        config["global"]["evaluation_interval"] = Value::from("1s");
        let rules: Vec<Value> = config["rule_files"]
            .as_sequence()
            .context("rule_files")?
            .iter()
            .filter_map(Value::as_str)
            .map(|glob| Value::from(deploy.join(glob).display().to_string()))
            .collect();
        ensure!(!rules.is_empty(), "the deploy config loads rules");
        config["rule_files"] = Value::Sequence(rules);
        for job in config["scrape_configs"].as_sequence_mut().context("scrape_configs")? {
            let service = job["relabel_configs"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|r| r["target_label"].as_str() == Some("service"))
                .and_then(|r| r["replacement"].as_str())
                .context("a job without a service label")?
                .to_owned();
            let port =
                ops_ports.get(&service).with_context(|| format!("no running {service} for its job"))?;
            let mapping = job.as_mapping_mut().context("job")?;
            let _ = mapping.remove("dns_sd_configs");
            let static_configs: Value =
                serde_norway::from_str(&format!("[{{targets: ['127.0.0.1:{port}']}}]"))?;
            let _ = mapping.insert(Value::from("static_configs"), static_configs);
            let _ = mapping.insert(Value::from("scrape_timeout"), Value::from("1s"));
        }
        let dir = env.log_dir.join("prometheus");
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("prometheus.yml"), serde_norway::to_string(&config)?)?;
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--log.level=warn", "--storage.tsdb.retention.time=1h"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("prometheus not found: install Debian's `prometheus` package (./test does)")?;
        let prometheus = Self { url: format!("http://127.0.0.1:{port}"), dir, child };
        let client = http_client();
        eventually(Duration::from_secs(60), "Prometheus ready", async || {
            Ok((get(&client, &prometheus.api("/-/ready")).await?.status == 200).then_some(()))
        })
        .await?;
        Ok(prometheus)
    }

    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = get(&http_client(), &self.api(path)).await?;
        ensure!(response.status == 200, "GET {path}: {} {:?}", response.status, response.body);
        let json = response.json();
        ensure!(json["status"] == "success", "GET {path}: {json}");
        Ok(json["data"].clone())
    }

    /// The result vector of an instant query.
    async fn query(&self, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let data = self.get(&format!("/api/v1/query?query={encoded}")).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of an instant query that must return one sample.
    async fn value(&self, promql: &str) -> anyhow::Result<Option<f64>> {
        let result = self.query(promql).await?;
        Ok(result.first().and_then(|s| s["value"][1].as_str()?.parse().ok()))
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_service_finds_the_key_series_and_fires_the_dead_letter_alert()
-> anyhow::Result<()> {
    let mut env = TestEnv::new("ops-prometheus");
    env.set("SWITCHBOARD_KAFKA__MONITOR_INTERVAL_MS", "500");
    env.init().await?;
    let credentials = env.add_source("pbx-prom", "US").await?;
    let pipeline = start_everything(&env).await?;
    let ops_ports: BTreeMap<String, u16> =
        pipeline.services.iter().map(|(name, service)| (name.clone(), service.ops_port)).collect();
    let prometheus = Prometheus::start(&env, &ops_ports).await?;

    // Every target up, one per service, each labelled with its service.
    let mut seen = BTreeMap::new();
    let targets = eventually(SETTLE, "every target up", async || {
        let data = prometheus.get("/api/v1/targets").await?;
        let active = data["activeTargets"].as_array().cloned().unwrap_or_default();
        seen = active
            .iter()
            .map(|t| {
                let service = t["labels"]["service"].as_str().unwrap_or_default().to_owned();
                let health = format!("{} {}", t["health"].as_str().unwrap_or_default(), t["lastError"]);
                (service, health)
            })
            .collect();
        let all_up = active.len() == ops_ports.len() && active.iter().all(|t| t["health"] == "up");
        Ok(all_up.then(|| seen.clone()))
    })
    .await
    .with_context(|| format!("targets: {seen:?}"))?;
    assert_eq!(targets.keys().cloned().collect::<Vec<_>>(), ops_ports.keys().cloned().collect::<Vec<_>>());
    // What PBXs, CRMs and browsers reach shows no metrics (#18): only the probes answer there.
    let client = http_client();
    for (name, service) in pipeline.services.iter().filter(|(_, s)| s.ops_port != s.port) {
        let metrics = get(&client, &service.url("/metrics")).await?;
        // 404, or 401 where every path but the probes needs a token (the dispatcher's API).
        assert!(metrics.status == 404 || metrics.status == 401, "{name}'s public port: {}", metrics.status);
        if ["ingress", "api", "router"].contains(&name.as_str()) {
            assert_eq!(metrics.status, 404, "{name}'s public port");
        }
        assert_eq!(get(&client, &service.url("/healthz")).await?.status, 200, "{name}'s public port");
    }
    for name in ["ingress", "api", "router"] {
        assert!(pipeline.services.get(name).is_some_and(|s| s.ops_port != s.port), "{name} has an ops port");
    }

    // Traffic once Prometheus watches, so that it sees the counters move (an alert on increase()
    // needs a sample before the dead letter).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = traffic(&env, &pipeline, &credentials, &env.id).await?;
    let db = env.db().await?;
    assert_eq!(wait_for_count(&db, "SELECT count(*) FROM call_events", events, SETTLE).await?, events);

    let services = ops_ports.len() as f64;
    // Every service reading topics: the pipeline's stages, the dispatcher, and the desk (in a
    // group of its own).
    let consumers = switchboard_core::config::Service::ALL
        .into_iter()
        .filter(|s| s.reads_topics() && ops_ports.contains_key(s.name()))
        .count() as f64;
    let key_series = [
        ("count(switchboard_build_info)", services),
        ("sum(switchboard_ready)", services),
        ("min(up{job=~\"switchboard.*\"})", 1.0),
        (r#"sum(switchboard_ingress_requests_total{source="pbx-prom",status="202"})"#, events as f64 + 1.0),
        (r#"sum(switchboard_ingress_auth_failures_total{source="pbx-prom"})"#, 1.0),
        (r#"sum(switchboard_kafka_produce_seconds_count{service="ingress"})"#, events as f64 + 1.0),
        ("sum(switchboard_end_to_end_seconds_count)", events as f64),
        (r#"sum(switchboard_events_failed_total{stage="normalizer",class="adapter"})"#, 1.0),
        (r#"sum(switchboard_normalizer_webhooks_total{result="events"})"#, events as f64),
        ("count(count by (stage) (switchboard_kafka_consumer_lag))", consumers),
        // The recording rules of deploy/prometheus/rules evaluate: every stage caught up.
        ("count(switchboard:stage_lag:sum == 0)", consumers),
    ];
    for (promql, expected) in key_series {
        let value = eventually(SETTLE, promql, async || {
            Ok(prometheus.value(promql).await?.filter(|v| (*v - expected).abs() < 1e-9))
        })
        .await?;
        assert_eq!(value, expected, "{promql}");
    }
    let groups = prometheus.get("/api/v1/rules").await?;
    let loaded: Vec<&str> = groups["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        loaded.contains(&"switchboard.pipeline") && loaded.contains(&"switchboard.ingress"),
        "{loaded:?}"
    );

    // The dead letter fires its alert, by stage and class; nothing else is wrong.
    let alerts = eventually(SETTLE, "SwitchboardDeadLetters firing", async || {
        let data = prometheus.get("/api/v1/alerts").await?;
        let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        let firing = alerts.iter().any(|a| {
            a["labels"]["alertname"] == "SwitchboardDeadLetters"
                && a["labels"]["stage"] == "normalizer"
                && a["labels"]["class"] == "adapter"
                && a["state"] == "firing"
        });
        Ok(firing.then_some(alerts))
    })
    .await?;
    let names: Vec<&str> = alerts.iter().filter_map(|a| a["labels"]["alertname"].as_str()).collect();
    assert!(
        names.iter().all(|n| *n == "SwitchboardDeadLetters" || *n == "SwitchboardIngressAuthFailures"),
        "only the dead letter alerts (pending alerts included): {names:?}"
    );

    prometheus.stop().await;
    pipeline.shutdown().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_keeps_metrics_off_the_webhook_port_and_counts_its_starting_503s() -> anyhow::Result<()> {
    let env = TestEnv::new("ops-ingress");
    // A database nobody listens on: ingress serves, but stays "starting".
    let nowhere = format!("postgres://switchboard@127.0.0.1:{}/nowhere", free_port());
    let mut ingress = env.spawn("ingress", &[("SWITCHBOARD_POSTGRES__URL", &nowhere)])?;
    let client = http_client();
    eventually(Duration::from_secs(30), "ingress answering", async || {
        Ok((get(&client, &ingress.ops_url("/healthz")).await?.status == 200).then_some(()))
    })
    .await?;
    assert_ne!(ingress.ops_port, ingress.port);

    assert_eq!(get(&client, &ingress.url("/metrics")).await?.status, 404, "no metrics on the webhook port");
    assert_eq!(get(&client, &ingress.url("/healthz")).await?.status, 200, "probes answer on both ports");
    assert_eq!(get(&client, &ingress.url("/readyz")).await?.status, 503);
    assert_eq!(get(&client, &ingress.ops_url("/readyz")).await?.status, 503);
    let credentials = Credentials { user: "pbx".into(), secret: "s".into() };
    let starting =
        post_webhook(&client, &ingress.url(""), &credentials, r#"{"call_id":"c","event":"ringing"}"#).await?;
    assert_eq!(starting.status, 503);
    assert_eq!(starting.json()["error"], "starting");
    assert!(starting.headers.contains_key("retry-after"));
    assert_eq!(get(&client, &ingress.url("/favicon.ico")).await?.status, 404);

    let metrics = ingress.metrics().await?;
    assert_eq!(
        series(
            &metrics,
            r#"switchboard_ingress_requests_total{source="unknown",status="503",vendor="unknown"}"#
        ),
        Some(1.0),
        "the starting 503 is counted:\n{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            r#"switchboard_ingress_requests_total{source="unknown",status="404",vendor="unknown"}"#
        ),
        Some(2.0),
        "requests for no webhook (/metrics, /favicon.ico on the webhook port) are counted, without their path"
    );
    assert_eq!(series(&metrics, "switchboard_ready"), Some(0.0));
    assert!(!metrics.contains("pbx"), "an unconfigured source id never becomes a label");
    promtool_check_metrics(&metrics).await?;

    assert_eq!(ingress.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}

/// The lag of `stage` over every partition, from its own metrics.
async fn lag(service: &ServiceProcess, stage: &str) -> anyhow::Result<f64> {
    Ok(sum_where(
        &service.metrics().await?,
        "switchboard_kafka_consumer_lag",
        &[&format!("stage=\"{stage}\"")],
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_counts_the_records_the_group_has_not_committed() -> anyhow::Result<()> {
    let mut env = TestEnv::new("ops-lag");
    env.set("SWITCHBOARD_KAFKA__MONITOR_INTERVAL_MS", "300");
    env.init().await?;
    let credentials = env.add_source("pbx-lag", "US").await?;
    let mut ingress = env.start("ingress").await?;
    // The normalizer processes everything but commits only when it stops: until then the
    // group's committed offsets stay where they were, and every record counts as lag.
    let mut normalizer = env
        .start_with("normalizer", &[("SWITCHBOARD_KAFKA__CLIENT__AUTO_COMMIT_INTERVAL_MS", "3600000")])
        .await?;
    let bodies = call_webhooks(&env.id, 2);
    let _ = post_all(&http_client(), &ingress.url(""), &credentials, &bodies, 4).await?;
    let read =
        wait_for_metric(&normalizer, "switchboard_events_in_total", bodies.len() as f64, SETTLE).await?;
    assert_eq!(read, bodies.len() as f64, "the normalizer read every webhook");
    let uncommitted = eventually(SETTLE, "lag of the uncommitted records", async || {
        let lag = lag(&normalizer, "normalizer").await?;
        Ok((lag == bodies.len() as f64).then_some(lag))
    })
    .await?;
    assert_eq!(uncommitted, bodies.len() as f64, "processed but not committed is still lag");

    // SIGTERM commits; the next replica starts with the group caught up.
    assert_eq!(normalizer.terminate(Duration::from_secs(30)).await?, Some(0));
    let normalizer = env.start("normalizer").await?;
    let caught_up = eventually(SETTLE, "lag 0 after the commit", async || {
        let text = normalizer.metrics().await?;
        let series = text.lines().filter(|l| l.starts_with("switchboard_kafka_consumer_lag{")).count();
        let lag = lag(&normalizer, "normalizer").await?;
        Ok((series == 4 && lag == 0.0).then_some(lag))
    })
    .await?;
    assert_eq!(caught_up, 0.0);
    assert_eq!(
        metric_value(&normalizer.metrics().await?, "switchboard_events_in_total"),
        0.0,
        "nothing was read twice"
    );

    let mut normalizer = normalizer;
    assert_eq!(normalizer.terminate(Duration::from_secs(30)).await?, Some(0));
    assert_eq!(ingress.terminate(Duration::from_secs(30)).await?, Some(0));
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_beyond_the_partition_count_are_ready_and_stand_by() -> anyhow::Result<()> {
    let mut env = TestEnv::new("ops-standby");
    env.set("SWITCHBOARD_KAFKA__PARTITIONS", "2");
    env.set("SWITCHBOARD_KAFKA__MONITOR_INTERVAL_MS", "300");
    env.init().await?;
    let mut matchers = Vec::new();
    for n in 0..3 {
        // `start` waits for /readyz: the third replica gets no partition and must be ready too.
        let matcher = env.start("matcher").await.with_context(|| format!("matcher {n}"))?;
        // Ready means the broker listed it in the group: its monitor saw at least itself.
        let members = metric_value(&matcher.metrics().await?, "switchboard_kafka_group_members");
        assert!(members >= 1.0, "matcher {n} was ready before it was in its group: {members} members");
        matchers.push(matcher);
    }
    for (n, matcher) in matchers.iter().enumerate() {
        let members = wait_for_metric(matcher, "switchboard_kafka_group_members", 3.0, SETTLE).await?;
        assert_eq!(members, 3.0, "matcher {n} sees the whole group");
        let text = matcher.metrics().await?;
        assert_eq!(series(&text, "switchboard_ready"), Some(1.0), "matcher {n} stays ready");
        let partitions = text.lines().filter(|l| l.starts_with("switchboard_kafka_consumer_lag{")).count();
        assert_eq!(partitions, 2, "matcher {n} reports the lag of both partitions");
    }
    for mut matcher in matchers {
        assert_eq!(matcher.terminate(Duration::from_secs(30)).await?, Some(0));
    }
    env.cleanup().await;
    Ok(())
}

/// Migrations run without the services' statement timeout (#18): a replica that waits for
/// another's migrations longer than its `statement_timeout` (300 ms here) keeps waiting in one
/// statement, rather than failing and retrying until it happens to find the lock free, and then
/// migrates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_wait_past_the_statement_timeout() -> anyhow::Result<()> {
    use switchboard_core::config::PostgresSettings;
    use switchboard_core::pg;

    let name = format!("sb_test_migrate_{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
    let admin = connect(&postgres_admin_url()).await?;
    admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await?;
    let url = switchboard_schema::scratch::url_of(&name);
    // Another replica migrating: it holds the migration lock.
    let other = connect(&url).await?;
    other.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({})", pg::MIGRATION_LOCK)).await?;

    let settings = PostgresSettings {
        url: format!("{url}?options=-c%20statement_timeout%3D300"),
        pool_size: 2,
        ..PostgresSettings::default()
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let migrating = tokio::spawn(async move {
        pg::connect_and_migrate(&settings, switchboard_schema::MIGRATIONS, &cancel).await
    });
    // Long enough that one wait outlasts the timeout several times over, on a slow machine too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waited: Option<f64> = admin
        .query_opt(
            "SELECT EXTRACT(EPOCH FROM now() - query_start)::float8 FROM pg_stat_activity
             WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'",
            &[&name],
        )
        .await?
        .map(|row| row.get(0));
    ensure!(!migrating.is_finished(), "migrated while another replica held the migration lock");
    let waited = waited.context("the replica is not waiting for the migration lock")?;
    ensure!(waited > 1.0, "the wait restarted after {waited:.2} s: the statement timeout cut it short");

    other.batch_execute("COMMIT").await?;
    let pool = tokio::time::timeout(Duration::from_secs(30), migrating).await???;
    ensure!(pool.is_some(), "migrated once the lock was free");
    drop(pool);
    drop(other);
    switchboard_schema::scratch::drop(&name).await?;
    Ok(())
}
