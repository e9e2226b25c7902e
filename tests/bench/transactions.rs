//! Kafka transactions or at-least-once with idempotent effects, for a consume → transform →
//! produce stage: the normalizer's own transform (`Normalizer::normalize`) over the same raw
//! records, measured both ways in one run against the same broker.
//!
//! 1. at least once: Switchboard's stage loop (`stage::run`: a bounded window in flight, each
//!    input offset stored once its outputs are acknowledged with `acks=all`, idempotent producer);
//! 2. exactly once: a transactional loop (`transactional.id`, read a batch, produce its outputs,
//!    `send_offsets_to_transaction`, commit), at several batch sizes.
//!
//! Both count a record as done when it is durably in the output topic with its input offset
//! committed: (1) by the output topic's high watermarks, (2) by committed transactions.
//!
//! Usage: `bench-transactions [WEBHOOKS]` (default 20000), with the broker and PostgreSQL of
//! `./test` (`SB_TEST_KAFKA`, `SB_TEST_POSTGRES`). Build with
//! `cargo build --release -p switchboard -p switchboard-tests`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use switchboard_core::avro::Codecs;
use switchboard_core::config::{KafkaSettings, Service};
use switchboard_core::stage::{self, StageContext};
use switchboard_normalizer::Normalizer;
use switchboard_tests::*;
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Sum of the high watermarks of every partition of `topic`.
fn watermark_total(client: &BaseConsumer, topic: &str) -> anyhow::Result<i64> {
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut total = 0;
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        total += client.fetch_watermarks(topic, partition.id(), Duration::from_secs(5))?.1;
    }
    Ok(total)
}

fn consumer_config(kafka: &KafkaSettings, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    let _ = config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("fetch.wait.max.ms", "100");
    config
}

/// The at-least-once stage loop; returns the seconds until all `expected` outputs are durable.
async fn at_least_once(
    kafka: &KafkaSettings,
    input: &str,
    output: &str,
    expected: i64,
) -> anyhow::Result<f64> {
    let codecs = Arc::new(Codecs::new()?);
    let mut settings = kafka.clone();
    settings.group_prefix = format!("alo-{}-", uuid::Uuid::now_v7());
    let (consumer, _unwatched) = switchboard_core::kafka::consumer(&settings, Service::Normalizer, &[input])?;
    let producer = switchboard_core::kafka::producer(&settings, "bench-alo", Duration::from_secs(30))?;
    let ctx = StageContext {
        stage: "normalizer",
        consumer,
        producer,
        codecs: codecs.clone(),
        dead_letter_topic: format!("{output}-dead"),
        max_in_flight: 1000,
        max_backoff: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(10),
    };
    let processor = Arc::new(Normalizer::new(codecs, output.to_owned()));
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let stage = tokio::spawn(stage::run(ctx, processor, cancel.clone()));
    let watcher: BaseConsumer = consumer_config(kafka, "watermarks").create()?;
    let output_name = output.to_owned();
    loop {
        let total = {
            let output = output_name.clone();
            let watcher = &watcher;
            tokio::task::block_in_place(|| watermark_total(watcher, &output))?
        };
        if total >= expected {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "at-least-once run stalled at {total}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = stage.await?;
    Ok(seconds)
}

/// The transactional loop at `batch` records per transaction; returns the seconds until all
/// `expected` outputs are committed, and each commit's duration in ms.
async fn exactly_once(
    kafka: &KafkaSettings,
    input: &str,
    output: &str,
    expected: usize,
    batch: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let codecs = Arc::new(Codecs::new()?);
    let normalizer = Normalizer::new(codecs, output.to_owned());
    let consumer: StreamConsumer = consumer_config(kafka, &format!("eos-{}", uuid::Uuid::now_v7()))
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[input])?;
    // A BaseProducer, polled by the transaction calls themselves: a FutureProducer's poll thread
    // serves delivery reports every 100 ms, and `commit_transaction` waits for them.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("transactional.id", format!("bench-eos-{}", uuid::Uuid::now_v7()))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        // A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS until the
        // coordinator has written the previous markers; librdkafka retries after
        // `retry.backoff.ms` (100 ms by default), which would dominate every commit.
        .set("retry.backoff.ms", "5")
        .set("retry.backoff.max.ms", "50")
        .create()?;
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout)?;
    let started = Instant::now();
    let mut done = 0;
    let mut commits = Vec::new();
    while done < expected {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "transactional run stalled at {done}");
        // A batch: up to `batch` records, or what arrived within 20 ms of the first.
        let first = match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            Ok(message) => message?.detach(),
            Err(_) => continue,
        };
        let mut messages = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        while messages.len() < batch {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(message) => messages.push(message?.detach()),
                Err(_) => break,
            }
        }
        producer.begin_transaction()?;
        let mut offsets = TopicPartitionList::new();
        let mut outputs = 0;
        for message in &messages {
            let records = normalizer.normalize(message.payload().unwrap_or_default()).unwrap_or_default();
            for record in &records {
                let mut base = BaseRecord::<[u8], [u8]>::to(&record.topic).payload(&record.payload);
                if let Some(key) = &record.key {
                    base = base.key(key);
                }
                // The commit waits for every send of the transaction; a full queue waits here.
                loop {
                    match producer.send(base) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            base = back;
                            producer.poll(Duration::from_millis(5));
                        }
                        Err((error, _)) => return Err(error.into()),
                    }
                }
            }
            outputs += records.len();
            offsets.add_partition_offset(
                message.topic(),
                message.partition(),
                Offset::Offset(message.offset() + 1),
            )?;
        }
        let group = consumer.group_metadata().ok_or_else(|| anyhow::anyhow!("no group metadata"))?;
        let commit = Instant::now();
        producer.send_offsets_to_transaction(&offsets, &group, timeout)?;
        let offsets_ms = commit.elapsed().as_secs_f64() * 1e3;
        producer.commit_transaction(timeout)?;
        if std::env::var_os("SB_BENCH_TRACE").is_some() {
            eprintln!(
                "offsets {offsets_ms:.1} ms, commit {:.1} ms",
                commit.elapsed().as_secs_f64() * 1e3 - offsets_ms
            );
        }
        commits.push(commit.elapsed().as_secs_f64() * 1e3);
        done += outputs;
    }
    commits.sort_by(f64::total_cmp);
    Ok((started.elapsed().as_secs_f64(), commits))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let webhooks: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(20_000);
    let mut env = TestEnv::new("bench-txn");
    env.set("RUST_LOG", "warn");
    env.init().await?;
    let credentials = env.add_source("bench", "GB").await?;
    let ingress = env.start("ingress").await?;
    let bodies: Vec<String> =
        call_webhooks(&env.id, webhooks.div_ceil(4)).into_iter().take(webhooks).collect();
    let _ = post_all(&http_client(), &ingress.url(""), &credentials, &bodies, 64).await?;
    let topics = env.topics();
    let kafka = KafkaSettings { brokers: env.brokers.clone(), ..KafkaSettings::default() };
    let outputs: Vec<String> =
        (0..5).map(|n| format!("{}out-{n}", env.settings["SWITCHBOARD_KAFKA__TOPIC_PREFIX"])).collect();
    let cancel = CancellationToken::new();
    let names: Vec<&str> = outputs.iter().map(String::as_str).collect();
    anyhow::ensure!(switchboard_core::kafka::ensure_topics(&kafka, &names, &cancel).await);
    let n = bodies.len();

    println!("webhooks={n}, normalizer transform, 4 partitions in and out");
    println!("| mode | records/s | ratio to at-least-once | commit p50 / p99 ms |");
    println!("|---|---|---|---|");
    let alo = at_least_once(&kafka, &topics.raw, &outputs[0], n as i64).await?;
    let alo_rate = n as f64 / alo;
    println!("| at least once (stage loop, 1,000 in flight) | {alo_rate:.0} | 1.00 | – |");
    for (i, batch) in [100, 500, 2000].into_iter().enumerate() {
        let (seconds, commits) = exactly_once(&kafka, &topics.raw, &outputs[i + 1], n, batch).await?;
        let rate = n as f64 / seconds;
        println!(
            "| transactions, up to {batch} records or 20 ms per transaction | {rate:.0} | {:.2} | {:.1} / {:.1} |",
            rate / alo_rate,
            percentile(&commits, 50.0),
            percentile(&commits, 99.0)
        );
    }
    // The at-least-once loop again, last, so that a warming broker does not favour either side.
    let again = at_least_once(&kafka, &topics.raw, &outputs[4], n as i64).await?;
    println!("| at least once, again | {:.0} | {:.2} | – |", n as f64 / again, (n as f64 / again) / alo_rate);

    let mut ingress = ingress;
    let _ = ingress.terminate(Duration::from_secs(30)).await?;
    env.cleanup().await;
    Ok(())
}
