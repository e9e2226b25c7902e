//! Avro consumers nobody here wrote read every record a real pipeline writes.
//!
//! `schemas/README.md` promises single-object encoding that any Avro library reads with nothing
//! but the `.avsc` files. Two independent decoders check it against a real run's topics: Apache
//! Avro's Java `BinaryMessageDecoder` through the Kafka Java client (`tests/interop/java`), and
//! fastavro through confluent-kafka (`tests/interop/python/decode.py`). Each computes the
//! fingerprints itself from the `.avsc` files; none is copied from Rust.
//!
//! `./test` builds and installs both (`scripts/interop.sh`) and sets `SB_INTEROP_JAVA_CP` and
//! `SB_INTEROP_PYTHON`; without them this test fails rather than pass having checked nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use switchboard_core::avro::{Codecs, EmbeddedSchema};
use switchboard_tests::*;

const SETTLE: Duration = Duration::from_secs(120);
const DECODER_TIMEOUT: Duration = Duration::from_secs(300);

/// A setting `./test` exports, or an error that says how to get it.
fn interop_setting(name: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => anyhow::bail!(
            "{name} is not set, so the independent Avro decoders cannot run. ./test sets it; by hand: \
             `bash -c 'source scripts/common.sh; source scripts/interop.sh; ensure_interop_tools; \
             env | grep SB_INTEROP_'` and export what it prints"
        ),
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Records in each topic now: the sum of its partitions' high minus low watermarks (the
/// producers are idempotent, not transactional, so every offset is a record).
async fn record_counts(brokers: &str, topics: &[String]) -> anyhow::Result<BTreeMap<String, i64>> {
    let (brokers, topics) = (brokers.to_owned(), topics.to_vec());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
        let timeout = Duration::from_secs(10);
        let mut counts = BTreeMap::new();
        for topic in topics {
            let metadata = client.fetch_metadata(Some(&topic), timeout)?;
            let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or_default();
            anyhow::ensure!(partitions > 0, "{topic} has no partitions");
            let mut total = 0;
            for partition in 0..partitions as i32 {
                let (low, high) = client.fetch_watermarks(&topic, partition, timeout)?;
                total += high - low;
            }
            let _ = counts.insert(topic, total);
        }
        Ok(counts)
    })
    .await?
}

/// What one decoder printed: per topic `(decoded, failed)`, per schema file its fingerprint.
#[derive(Debug, Default)]
struct Report {
    topics: BTreeMap<String, (i64, i64)>,
    fingerprints: BTreeMap<String, String>,
}

fn parse_report(stdout: &str) -> anyhow::Result<Report> {
    let mut report = Report::default();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["RESULT", topic, decoded, failed] => {
                let value = |word: &str, key: &str| -> anyhow::Result<i64> {
                    Ok(word.strip_prefix(key).with_context(|| format!("{key} in {line:?}"))?.parse()?)
                };
                let topic = topic.strip_prefix("topic=").with_context(|| format!("topic in {line:?}"))?;
                let counts = (value(decoded, "decoded=")?, value(failed, "failed=")?);
                let _ = report.topics.insert(topic.to_owned(), counts);
            }
            ["schema", file, _name, "fingerprint", hex, ..] => {
                let _ = report.fingerprints.insert((*file).to_owned(), (*hex).to_owned());
            }
            _ => {}
        }
    }
    Ok(report)
}

/// Runs one decoder to its end and returns what it reported, failing on a non-zero exit.
async fn run_decoder(
    what: &str,
    program: &str,
    leading_args: &[String],
    brokers: &str,
    topics: &[(String, &str)],
) -> anyhow::Result<Report> {
    let schemas = repo().join("schemas");
    let mut command = tokio::process::Command::new(program);
    let _ = command
        .args(leading_args)
        .arg(brokers)
        .arg(&schemas)
        .args(topics.iter().map(|(topic, record)| format!("{topic}={record}")))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(DECODER_TIMEOUT, command.output())
        .await
        .with_context(|| format!("the {what} decoder ran longer than {DECODER_TIMEOUT:?}"))?
        .with_context(|| format!("starting the {what} decoder ({program})"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {what} decoder: {}\n{stdout}{stderr}", output.status);
    anyhow::ensure!(
        output.status.success(),
        "the {what} decoder failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    parse_report(&stdout)
}

/// The fingerprint a schema file's records carry, as the hex of the 8 bytes on the wire.
fn rust_fingerprints() -> anyhow::Result<BTreeMap<String, String>> {
    let mut fingerprints = BTreeMap::new();
    for entry in std::fs::read_dir(repo().join("schemas"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "avsc") {
            let schema = EmbeddedSchema::parse(&std::fs::read_to_string(&path)?)?;
            let hex = schema.fingerprint.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
            let _ = fingerprints.insert(file_name(&path), hex);
        }
    }
    Ok(fingerprints)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_and_python_avro_decoders_read_every_record_of_every_topic() -> anyhow::Result<()> {
    let java_class_path = interop_setting("SB_INTEROP_JAVA_CP")?;
    let python = interop_setting("SB_INTEROP_PYTHON")?;

    let mut env = TestEnv::new("interop");
    env.set("SWITCHBOARD_API__TOKENS", "[\"interop-token-0123456789abcdef0123456789\"]");
    // Calls are published once complete: by the end marker, or at the latest 1.5 s after.
    env.set("SWITCHBOARD_CALLLOG__SETTLE_MS", "1500");
    let pipeline = env.start_pipeline().await?;
    let credentials = env.add_source("pbx-interop", "GB").await?;
    // Sources added while ingress runs are picked up by its refresh (500 ms in tests).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let client = http_client();
    let ingress = pipeline.ingress_url("");

    // Two complete calls (ringing, an agent's leg answered and hung up, the end marker) make
    // records on raw, normalized, matched, enriched and calls; a body no adapter can read ends
    // in deadletter.
    let _ = post_all(&client, &ingress, &credentials, &call_webhooks(&env.id, 2), 4).await?;
    let poison =
        post_webhook(&client, &ingress, &credentials, r#"{"call_id":"c-bad","event":"exploded"}"#).await?;
    assert_eq!(poison.status, 202, "ingress accepts what only the adapter can judge");

    let topics = env.topics();
    let codecs = Codecs::new()?;
    let calls = read_topic(&env.brokers, &topics.calls, SETTLE, |records| {
        let mut keys: Vec<_> = records
            .iter()
            .filter_map(|(_, payload)| codecs.call_record.decode(payload).ok())
            .map(|record| record.partition_key())
            .collect();
        keys.sort();
        keys.dedup();
        keys.len() >= 2
    })
    .await?;
    assert!(!calls.is_empty(), "no call record was published within {SETTLE:?}");
    let dead = read_topic(&env.brokers, &topics.dead_letter, SETTLE, |records| !records.is_empty()).await?;
    assert!(!dead.is_empty(), "no dead letter was published within {SETTLE:?}");
    // An agent takes a break on the desk: a record on agent-status.
    env.db().await?.batch_execute("INSERT INTO agents (id, name) VALUES ('ann', 'Ann')").await?;
    let mut desk = env.start("desk").await?;
    let api = [
        ("authorization", "Bearer interop-token-0123456789abcdef0123456789"),
        ("content-type", "application/json"),
    ];
    let session =
        send(&client, "POST", &desk.url("/v1/desk/sessions"), &api, r#"{"agent_id":"ann"}"#).await?;
    let token = format!("Bearer {}", session.json()["token"].as_str().context("token")?);
    let status = [("authorization", token.as_str()), ("content-type", "application/json")];
    let set = send(&client, "PUT", &desk.url("/v1/desk/status"), &status, r#"{"status":"break"}"#).await?;
    assert_eq!(set.status, 200, "{:?}", set.json());
    let _ = desk.terminate(Duration::from_secs(20)).await?;
    // Stopped, the pipeline writes nothing more: the counts below are final.
    pipeline.shutdown().await?;

    let by_topic: Vec<(String, &str)> = vec![
        (topics.raw.clone(), "RawWebhook"),
        (topics.normalized.clone(), "CallEvent"),
        (topics.matched.clone(), "CallEvent"),
        (topics.enriched.clone(), "CallEvent"),
        (topics.calls.clone(), "CallRecord"),
        (topics.dead_letter.clone(), "DeadLetter"),
        (topics.agent_status.clone(), "AgentStatus"),
    ];
    let names: Vec<String> = by_topic.iter().map(|(topic, _)| topic.clone()).collect();
    let counts = record_counts(&env.brokers, &names).await?;
    for (topic, count) in &counts {
        assert!(*count > 0, "the run wrote nothing on {topic}: {counts:?}");
    }

    let java_args = ["-cp".to_owned(), java_class_path, "dev.switchboard.interop.Decode".to_owned()];
    let python_args = [repo().join("tests/interop/python/decode.py").display().to_string()];
    let rust = rust_fingerprints()?;
    for (what, program, args) in [
        ("Java (Apache Avro)", "java", &java_args[..]),
        ("Python (fastavro)", python.as_str(), &python_args[..]),
    ] {
        let report = run_decoder(what, program, args, &env.brokers, &by_topic).await?;
        for topic in &names {
            let expected = counts[topic];
            assert_eq!(
                report.topics.get(topic),
                Some(&(expected, 0)),
                "{what}: every one of the {expected} records on {topic} decoded, none failed"
            );
        }
        assert_eq!(
            report.fingerprints, rust,
            "{what} computes the fingerprint Switchboard writes, for every .avsc"
        );
    }

    env.cleanup().await;
    Ok(())
}
