//! The process-wide Prometheus registry and the metrics every stage shares.
//!
//! This registry is the one global in Switchboard: metrics are observed from deep inside the
//! pipeline, and threading handles through every call would hide the logic. Labels are bounded:
//! `stage` is a service name, `class` is one of a few fixed error kinds, `vendor` is an adapter
//! name and `status` an HTTP status code that Switchboard itself chose. Never put a source id,
//! call id or free text in a label.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    // Each metric is registered exactly once, by its own LazyLock, under a name unique in this
    // module; a failure here is a programming error caught by the unit test below.
    #[allow(clippy::expect_used)]
    REGISTRY.register(Box::new(collector.clone())).expect("metric registered twice");
    collector
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    #[allow(clippy::expect_used)]
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    #[allow(clippy::expect_used)]
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric"),
    )
}

/// Latency buckets from 0.5 ms to 30 s.
fn latency_buckets() -> Vec<f64> {
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
}

pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    register(
        IntGaugeVec::new(
            Opts::new("switchboard_build_info", "Always 1; labels name the running build."),
            &["service", "version"],
        )
        .expect("valid metric"),
    )
});

pub static EVENTS_IN: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("switchboard_events_in_total", "Records a stage received.", &["stage"]));

pub static EVENTS_OUT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_events_out_total",
        "Records a stage produced (or, for calllog, wrote), acknowledged.",
        &["stage"],
    )
});

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

pub static INGRESS_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_ingress_requests_total",
        "Webhook requests answered by ingress, by vendor and HTTP status.",
        &["vendor", "status"],
    )
});

pub static INGRESS_AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_ingress_auth_failures_total",
        "Webhook requests refused for missing or wrong credentials.",
        &["vendor"],
    )
});

pub static INGRESS_BODY_BYTES: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_ingress_body_bytes",
        "Size of accepted webhook bodies.",
        &["vendor"],
        vec![128.0, 512.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0],
    )
});

pub static NORMALIZED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_normalizer_webhooks_total",
        "Raw webhooks the normalizer read, by vendor and result (events, no_events, parse_failure).",
        &["vendor", "result"],
    )
});

pub static CALLLOG_ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_calllog_rows_total",
        "Rows the call-log writer inserted or updated, by table.",
        &["table"],
    )
});

pub static CALLLOG_DUPLICATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_calllog_duplicate_events_total",
        "Events the call log had already stored (PBX retries, redelivery after a crash).",
        &["stage"],
    )
});

pub static END_TO_END_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_end_to_end_seconds",
        "Time from ingress receiving a webhook to its event being committed to the call log.",
        &["stage"],
        latency_buckets(),
    )
});

/// Renders every registered metric in the Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec cannot fail for the text format.
    let _ = TextEncoder::new().encode(&REGISTRY.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Registers every metric so that `/metrics` lists them from the start, before the first event.
pub fn init(service: &str) {
    BUILD_INFO.with_label_values(&[service, env!("CARGO_PKG_VERSION")]).set(1);
    for vec in [&*EVENTS_IN, &*EVENTS_OUT, &*CONSUME_ERRORS] {
        let _ = vec.with_label_values(&[service]);
    }
    let _ = EVENTS_FAILED.with_label_values(&[service, "decode"]);
    let _ = TRANSIENT_RETRIES.with_label_values(&[service, "kafka"]);
    for vec in [&*PROCESSING_SECONDS, &*PRODUCE_SECONDS] {
        let _ = vec.with_label_values(&[service]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_registers_and_renders() {
        super::init("test");
        super::INGRESS_REQUESTS.with_label_values(&["generic", "202"]).inc();
        super::CALLLOG_ROWS.with_label_values(&["calls"]).inc();
        let text = super::render();
        assert!(text.contains("switchboard_build_info{service=\"test\""));
        assert!(text.contains("switchboard_ingress_requests_total{status=\"202\",vendor=\"generic\"} 1"));
    }
}
