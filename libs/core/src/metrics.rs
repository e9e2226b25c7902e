//! The process-wide Prometheus registry, the metrics every service shares, and the helpers each
//! service crate defines its own metrics with (in its `metrics` module, which re-exports these).
//!
//! Each metric is defined once, here or in the one crate that observes it; the binary joins the
//! catalogues (`switchboard::catalogue`), so that `docs/metrics.md`, the alert rules in
//! `deploy/prometheus/` and the Grafana dashboard can be checked against it (`tests/deploy.rs`).
//! Metrics with labels known only later (a vendor, a
//! source) appear in `/metrics` from their first observation unless their service registers them
//! at start.
//!
//! This registry is the one global in Switchboard: metrics are observed from deep inside the
//! pipeline, and threading handles through every call would hide the logic.
//!
//! Labels are bounded, always: `stage`/`service` is a service name, `class`/`result`/`reason`/
//! `outcome` one of a few fixed words, `vendor` an adapter name (a fixed enum), `status` an HTTP
//! status code that Switchboard itself chose, `topic`/`partition` the pipeline's own topics and
//! their configured partitions, `source` a source id the operator created (or `unknown` for
//! anything else, so that a scanner cannot mint series). Never put a call id, a phone number,
//! a URL or free text in a label.

use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// The `source` label of a request whose source is not one the operator created.
pub const UNKNOWN: &str = "unknown";

pub fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    // Each metric is registered exactly once, by its own LazyLock, under a name unique in this
    // module; a failure here is a programming error caught by the unit tests below.
    REGISTRY.register(Box::new(collector.clone())).expect("metric registered twice");
    collector
}

pub fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

pub fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

pub fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric"),
    )
}

/// Latency buckets from 0.5 ms to 30 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
}

/// Buckets for answers that must come in milliseconds (the router's IVR lookups): 50 µs to 1 s.
pub fn fast_latency_buckets() -> Vec<f64> {
    vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]
}

// ---- Every service -------------------------------------------------------------------------

pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge("switchboard_build_info", "Always 1; labels name the running build.", &["service", "version"])
});

pub static READY: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new("switchboard_ready", "1 while the service answers /readyz with 200, else 0.")
            .expect("valid metric"),
    )
});

pub static HTTP_CONNECTIONS_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "switchboard_http_connections_refused_total",
            "HTTP connections answered 503 and closed because the server already served its maximum.",
        )
        .expect("valid metric"),
    )
});

// ---- Consumer stages (normalizer, matcher, recordings, calllog) ----------------------------

pub static EVENTS_IN: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("switchboard_events_in_total", "Records a stage received.", &["stage"]));

pub static EVENTS_OUT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_events_out_total",
        "Records a stage produced (or, for calllog, wrote), acknowledged.",
        &["stage"],
    )
});

/// Every class of dead letter (`stage::Poison::class`). Each consumer stage reports all of them
/// from the start, at zero: an alert on `increase()` cannot see a series that appears at 1, so
/// the first dead letter of a class would go unnoticed. A new class belongs here (the deploy test
/// checks every `Poison::new` of the services against this list).
use crate::poison::PoisonClass;

/// The dead-letter count: every record set aside goes to the dead-letter topic, with its class.
pub static EVENTS_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_events_failed_total",
        "Records a stage could not process and sent to the dead-letter topic, by error class.",
        &["stage", "class"],
    )
});

pub static TRANSIENT_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_transient_retries_total",
        "Retries of transient failures (broker or database unavailable), by what failed.",
        &["stage", "target"],
    )
});

pub static CONSUME_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("switchboard_kafka_consume_errors_total", "Errors returned by the Kafka consumer.", &["stage"])
});

pub static PROCESSING_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_processing_seconds",
        "Time from receiving a record to its effect being acknowledged (produce ack or commit).",
        &["stage"],
        latency_buckets(),
    )
});

pub static PRODUCE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_kafka_produce_seconds",
        "Time from handing a record to the producer until Kafka acknowledged it.",
        &["stage"],
        latency_buckets(),
    )
});

pub static BATCH_SIZE: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_batch_size",
        "Records per batch written by a batching stage.",
        &["stage"],
        vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
    )
});

/// The group's lag as every replica of the stage sees it (committed offset against the high
/// watermark, read by the replica's monitor): replicas report the same partitions, so aggregate
/// with `max by (stage, topic, partition)`.
pub static CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "switchboard_kafka_consumer_lag",
        "Records of an input partition not yet committed by the stage's consumer group (high watermark minus committed offset).",
        &["stage", "topic", "partition"],
    )
});

pub static ASSIGNED_PARTITIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "switchboard_kafka_assigned_partitions",
        "Input partitions assigned to this replica: 0 for an idle one when replicas outnumber partitions; absent where the broker does not report assignments.",
        &["stage"],
    )
});

pub static GROUP_MEMBERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "switchboard_kafka_group_members",
        "Members of the stage's consumer group, as this replica last saw them.",
        &["stage"],
    )
});

pub static MONITOR_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_kafka_monitor_errors_total",
        "Failed reads of the consumer group's membership or offsets (lag then keeps its last value).",
        &["stage"],
    )
});

pub static PRODUCER_FATAL_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_kafka_producer_fatal_errors_total",
        "Fatal errors of a Kafka producer (fenced, unauthorised); the service then fails and exits.",
        &["stage"],
    )
});

/// One entry of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub help: String,
    pub labels: Vec<String>,
}

/// The metrics every service shares, whether or not this process has observed them yet; each
/// service crate lists its own (`catalogue()` in its `metrics` module) and the binary joins them
/// (`switchboard::catalogue`).
pub fn shared_catalogue() -> Vec<MetricInfo> {
    describe(&[
        (&*BUILD_INFO, "gauge"),
        (&*READY, "gauge"),
        (&*HTTP_CONNECTIONS_REFUSED, "counter"),
        (&*EVENTS_IN, "counter"),
        (&*EVENTS_OUT, "counter"),
        (&*EVENTS_FAILED, "counter"),
        (&*TRANSIENT_RETRIES, "counter"),
        (&*CONSUME_ERRORS, "counter"),
        (&*PROCESSING_SECONDS, "histogram"),
        (&*PRODUCE_SECONDS, "histogram"),
        (&*BATCH_SIZE, "histogram"),
        (&*CONSUMER_LAG, "gauge"),
        (&*ASSIGNED_PARTITIONS, "gauge"),
        (&*GROUP_MEMBERS, "gauge"),
        (&*MONITOR_ERRORS, "counter"),
        (&*PRODUCER_FATAL_ERRORS, "counter"),
    ])
}

/// The catalogue entries of `metrics`, each with its kind (`counter`, `gauge`, `histogram`).
pub fn describe(metrics: &[(&dyn Collector, &'static str)]) -> Vec<MetricInfo> {
    metrics
        .iter()
        .flat_map(|(collector, kind)| collector.desc().into_iter().map(move |desc| (desc, *kind)))
        .map(|(desc, kind)| MetricInfo {
            name: desc.fq_name.clone(),
            kind,
            help: desc.help.clone(),
            labels: desc.variable_labels.clone(),
        })
        .collect()
}

/// Why `catalogue` does not list each metric `source` (a metrics module's text) defines exactly
/// once, under the naming rules (the binary's unit test checks each crate's with it).
pub fn catalogue_problem(source: &str, catalogue: &[MetricInfo]) -> Option<String> {
    // Every `pub static NAME: LazyLock<...>` but the registry is a metric.
    let defined = source
        .lines()
        .filter(|line| line.starts_with("pub static ") && line.contains("LazyLock<"))
        .filter(|line| !line.starts_with("pub static REGISTRY"))
        .count();
    if catalogue.len() != defined {
        return Some(format!("{defined} metrics defined, {} in the catalogue", catalogue.len()));
    }
    let names: std::collections::BTreeSet<&str> = catalogue.iter().map(|m| m.name.as_str()).collect();
    if names.len() != catalogue.len() {
        return Some("a metric is listed twice".into());
    }
    catalogue.iter().find_map(|metric| {
        let bad = !metric.name.starts_with("switchboard_")
            || (metric.kind == "counter") != metric.name.ends_with("_total")
            || metric.labels.iter().any(|l| ["call_id", "number", "url"].contains(&l.as_str()));
        bad.then(|| format!("{} breaks the naming or label rules", metric.name))
    })
}

/// Renders every registered metric in the Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec cannot fail for the text format.
    let _ = TextEncoder::new().encode(&REGISTRY.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Registers the metrics of `service` (a service name; tests may pass another) with their fixed
/// labels, so that `/metrics` lists them (at zero) from the start and `rate()` sees the first
/// event. Metrics with labels only known later (a vendor, a source) appear with their first use.
pub fn init(service: &str) {
    BUILD_INFO.with_label_values(&[service, env!("CARGO_PKG_VERSION")]).set(1);
    READY.set(0);
    let kind = crate::topology::Service::named(service);
    if kind == Some(crate::topology::Service::Ingress) {
        // Ingress produces, but neither consumes nor dead-letters.
        let _ = PRODUCE_SECONDS.with_label_values(&[service]);
        let _ = PRODUCER_FATAL_ERRORS.with_label_values(&[service]);
    }
    if !kind.is_none_or(crate::topology::Service::is_consumer) {
        return;
    }
    for vec in [&*EVENTS_IN, &*EVENTS_OUT, &*CONSUME_ERRORS, &*MONITOR_ERRORS, &*PRODUCER_FATAL_ERRORS] {
        let _ = vec.with_label_values(&[service]);
    }
    // Not the assigned partitions: a broker that does not report assignments leaves that absent.
    let _ = GROUP_MEMBERS.with_label_values(&[service]);
    for class in PoisonClass::ALL.map(PoisonClass::as_str) {
        let _ = EVENTS_FAILED.with_label_values(&[service, class]);
    }
    let _ = TRANSIENT_RETRIES.with_label_values(&[service, "kafka"]);
    for vec in [&*PROCESSING_SECONDS, &*PRODUCE_SECONDS] {
        let _ = vec.with_label_values(&[service]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        init("test");
        EVENTS_IN.with_label_values(&["test"]).inc();
        let text = render();
        assert!(text.contains("switchboard_build_info{service=\"test\""));
        assert!(text.contains("switchboard_events_in_total{stage=\"test\"} 1"), "{text}");
    }
}
