//! The process-wide Prometheus registry and the one catalogue of Switchboard's metrics.
//!
//! Every metric any service exposes is defined here, once, so that the catalogue in
//! `docs/metrics.md`, the alert rules in `deploy/prometheus/` and the Grafana dashboard can be
//! checked against it (`tests/deploy.rs`). Metrics with labels known only later (a vendor, a
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

fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    // Each metric is registered exactly once, by its own LazyLock, under a name unique in this
    // module; a failure here is a programming error caught by the unit tests below.
    REGISTRY.register(Box::new(collector.clone())).expect("metric registered twice");
    collector
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric"),
    )
}

/// Latency buckets from 0.5 ms to 30 s.
fn latency_buckets() -> Vec<f64> {
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
}

/// Buckets for answers that must come in milliseconds (the router's IVR lookups): 50 µs to 1 s.
fn fast_latency_buckets() -> Vec<f64> {
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

// ---- ingress ---------------------------------------------------------------------------------

pub static INGRESS_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_ingress_requests_total",
        "Webhook requests answered by ingress, by source (unknown for none configured), vendor and HTTP status.",
        &["source", "vendor", "status"],
    )
});

pub static INGRESS_AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_ingress_auth_failures_total",
        "Webhook requests refused for missing or wrong credentials or signature.",
        &["source", "vendor"],
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

// ---- normalizer ------------------------------------------------------------------------------

pub static NORMALIZED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_normalizer_webhooks_total",
        "Raw webhooks the normalizer read, by vendor and result (events, no_events, parse_failure).",
        &["vendor", "result"],
    )
});

// ---- matcher, router and their directory (issue #4) ------------------------------------------

/// `subject`: `agent` or `contact`. `result` for an agent: how it was matched (`extension`,
/// `number`, `email`) or `none`; for a contact: `unique`, `ambiguous` (several candidates, none
/// guessed), `own_number` (one of the company's own numbers, never a customer) or `none`.
pub static MATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_matcher_matches_total",
        "Agent and contact matching outcomes of call events, by subject and result.",
        &["subject", "result"],
    )
});

/// `format`: the answer's format (`telphin`, `zadarma`, `generic`). `outcome`: `agent` (the
/// responsible agent's extension), else the reason for the fallback: `fallback_unknown_caller`,
/// `fallback_no_agent`, `fallback_ambiguous` (expected in daily use), `fallback_not_loaded`
/// (directory not loaded: database down), `fallback_timeout`, `fallback_bad_request`.
pub static ROUTER_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_router_lookups_total",
        "IVR lookups the router answered, by answer format and outcome (agent, blacklisted or fallback_<reason>).",
        &["format", "outcome"],
    )
});

pub static ROUTER_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_router_lookup_seconds",
        "Time from the router receiving an IVR lookup to its answer being written.",
        &["format"],
        fast_latency_buckets(),
    )
});

/// `result`: `ok` (a full load of agents, contacts and own numbers) or `error` (the change feed
/// was lost; the service keeps its last directory and reconnects).
pub static DIRECTORY_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_directory_reloads_total",
        "Loads of the directory into a matcher or router's memory, by result.",
        &["result"],
    )
});

// ---- recordings (issue #5) -------------------------------------------------------------------

/// `result`: `direct` (the event carried a usable URL), `resolved` (a vendor recording id
/// resolved through the vendor's API), `retry` (not ready yet, scheduled again), `failed` (retry
/// budget spent or refused for good: the call is marked recording_failed).
pub static RECORDING_RESOLUTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_recordings_resolutions_total",
        "Recording link resolutions, by vendor and result (direct, resolved, retry, failed).",
        &["vendor", "result"],
    )
});

pub static RECORDING_RESOLVE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_recordings_resolve_seconds",
        "Time a vendor's API took to answer a recording lookup.",
        &["vendor"],
        latency_buckets(),
    )
});

/// `result`: `redirected`, `forbidden` (expired or forged token), `not_found`, `failed`.
pub static RECORDING_LINKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_recordings_link_requests_total",
        "Stable recording links opened, by result.",
        &["result"],
    )
});

/// Counted by every recordings replica every 10 s, over the whole table: replicas report the same
/// number, so aggregate with `max`.
pub static RECORDINGS_PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "switchboard_recordings_pending",
            "Recordings waiting to be resolved through their vendor's API (all replicas' work, as this replica last counted it).",
        )
        .expect("valid metric"),
    )
});

// ---- calllog ---------------------------------------------------------------------------------

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

pub static CALLLOG_FOLD_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_calllog_fold_cache_total",
        "Calls the call-log writer folded from the events it kept in memory (`hit`), read back from \
         PostgreSQL (`miss`), or had to read back after another writer changed them (`stale`).",
        &["result"],
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

/// Issue #3. `direction`: `inbound`, `outbound`, `internal`, `unknown`. `outcome`: `answered`,
/// `missed`, `abandoned_in_ivr`, `abandoned_in_queue`, `busy`, `no_answer`, `rejected`,
/// `failed`, `voicemail`.
pub static CALLS_COMPLETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_calllog_calls_completed_total",
        "Calls the call log completed (end marker or settle time), by direction and outcome.",
        &["direction", "outcome"],
    )
});

pub static CALLS_UPDATED_AFTER_COMPLETION: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_calllog_late_updates_total",
        "Complete calls changed again by a late event (each is published as a new version).",
        &["stage"],
    )
});

pub static CALL_RECORDS_PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_calllog_records_published_total",
        "Call records (versions) the call log produced to the calls topic, acknowledged.",
        &["stage"],
    )
});

// ---- api ---------------------------------------------------------------------------------------

/// `endpoint`: `list_calls`, `get_call`, `recording_link`, `not_found`. `status`: the HTTP status the API chose.
pub static API_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_api_requests_total",
        "Query API requests, by endpoint and HTTP status.",
        &["endpoint", "status"],
    )
});

pub static API_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_api_request_seconds",
        "Time the query API took to answer, by endpoint.",
        &["endpoint"],
        latency_buckets(),
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

// ---- dispatcher (issue #15) --------------------------------------------------------------------

/// `result`: `scheduled` (a delivery stored for an enabled profile), `discarded` (stored for a
/// paused or disabled profile, kept for replay), `delivered`, `retry` (an attempt failed, another
/// is scheduled), `failed` (the schedule is spent or the receiver aborted), `gone` (410: the
/// profile is disabled).
pub static DISPATCHER_DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_dispatcher_deliveries_total",
        "Deliveries to CRMs, by result (scheduled, discarded, delivered, retry, failed, gone).",
        &["result"],
    )
});

/// `result`: `delivered` (a 2xx in time) or `failed` (anything else, the SSRF guard's refusals
/// included).
pub static DISPATCHER_ATTEMPT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_dispatcher_attempt_seconds",
        "Time one delivery attempt took, from connecting to the end of the answer, by result.",
        &["result"],
        latency_buckets(),
    )
});

/// Counted over the whole table by every dispatcher replica every 10 s: aggregate with `max`.
pub static DISPATCHER_PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "switchboard_dispatcher_pending",
            "Deliveries waiting for their next attempt (all replicas' work, as this replica last counted it).",
        )
        .expect("valid metric"),
    )
});

pub static DISPATCHER_OLDEST_PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "switchboard_dispatcher_oldest_pending_seconds",
            "Age of the oldest pending delivery, in seconds (0 when none waits).",
        )
        .expect("valid metric"),
    )
});

/// `state`: `enabled`, `paused`, `disabled`.
pub static DISPATCHER_PROFILES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "switchboard_dispatcher_profiles",
        "Delivery profiles, by state (enabled, paused, disabled).",
        &["state"],
    )
});

// ---- desk (issue #16) --------------------------------------------------------------------------

/// `transport`: `websocket` or `sse`.
pub static DESK_STREAMS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "switchboard_desk_streams",
        "Agent streams this replica holds now, by transport (websocket, sse).",
        &["transport"],
    )
});

/// `type`: the notification type (incoming, outgoing, answered, taken, ended, missed, status).
pub static DESK_NOTIFICATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_desk_notifications_total",
        "Notifications written to agents' streams, by type (incoming, outgoing, answered, taken, ended, missed, status).",
        &["type"],
    )
});

pub static DESK_NOTIFICATION_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_desk_notification_seconds",
        "Time from ingress receiving a call's webhook to its notification being handed to an agent's stream, by transport.",
        &["transport"],
        latency_buckets(),
    )
});

/// `transport`: `websocket` or `sse`.
pub static DESK_RESUMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_desk_resumes_total",
        "Streams opened with a last event id (a reconnect), by transport.",
        &["transport"],
    )
});

/// `reason`: `revoked`, `expired`, `slow` (the client did not keep up), `shutdown`.
pub static DESK_STREAMS_CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_desk_streams_closed_total",
        "Streams the desk closed itself, by reason (revoked, expired, slow, shutdown).",
        &["reason"],
    )
});

/// `vendor`: an adapter name; `result`: `placed`, `duplicate` (an idempotency key seen before:
/// the first answer again, no call), `refused` (the vendor said no), `unavailable` (no answer in
/// time, a 5xx), `not_configured`, `invalid`, `unsupported`.
pub static ORIGINATE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_originate_requests_total",
        "Click-to-call requests, by vendor and result (placed, duplicate, refused, unavailable, not_configured, invalid, unsupported).",
        &["vendor", "result"],
    )
});

pub static DESK_WRAP_UPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_desk_wrap_ups_total",
        "Wrap-ups (dispositions and tags) set on calls, by result (set, refused).",
        &["result"],
    )
});

pub static DESK_DISPOSITION_PUSHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_desk_disposition_pushes_total",
        "Dispositions pushed to a PBX that keeps its own (uContact), by vendor and result (pushed, failed).",
        &["vendor", "result"],
    )
});

pub static ORIGINATE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "switchboard_originate_seconds",
        "Time the vendor's API took to answer a click-to-call, by vendor.",
        &["vendor"],
        latency_buckets(),
    )
});

/// Every metric Switchboard defines, whether or not this process has observed it yet.
pub fn catalogue() -> Vec<MetricInfo> {
    let all: [(&dyn Collector, &'static str); 51] = [
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
        (&*INGRESS_REQUESTS, "counter"),
        (&*INGRESS_AUTH_FAILURES, "counter"),
        (&*INGRESS_BODY_BYTES, "histogram"),
        (&*NORMALIZED, "counter"),
        (&*MATCHES, "counter"),
        (&*ROUTER_LOOKUPS, "counter"),
        (&*ROUTER_SECONDS, "histogram"),
        (&*DIRECTORY_RELOADS, "counter"),
        (&*RECORDING_RESOLUTIONS, "counter"),
        (&*RECORDING_RESOLVE_SECONDS, "histogram"),
        (&*RECORDING_LINKS, "counter"),
        (&*RECORDINGS_PENDING, "gauge"),
        (&*CALLLOG_ROWS, "counter"),
        (&*CALLLOG_DUPLICATES, "counter"),
        (&*CALLLOG_FOLD_CACHE, "counter"),
        (&*END_TO_END_SECONDS, "histogram"),
        (&*CALLS_COMPLETED, "counter"),
        (&*CALLS_UPDATED_AFTER_COMPLETION, "counter"),
        (&*CALL_RECORDS_PUBLISHED, "counter"),
        (&*API_REQUESTS, "counter"),
        (&*API_SECONDS, "histogram"),
        (&*DISPATCHER_DELIVERIES, "counter"),
        (&*DISPATCHER_ATTEMPT_SECONDS, "histogram"),
        (&*DISPATCHER_PENDING, "gauge"),
        (&*DISPATCHER_OLDEST_PENDING, "gauge"),
        (&*DISPATCHER_PROFILES, "gauge"),
        (&*DESK_STREAMS, "gauge"),
        (&*DESK_NOTIFICATIONS, "counter"),
        (&*DESK_NOTIFICATION_SECONDS, "histogram"),
        (&*DESK_RESUMES, "counter"),
        (&*DESK_STREAMS_CLOSED, "counter"),
        (&*ORIGINATE_REQUESTS, "counter"),
        (&*ORIGINATE_SECONDS, "histogram"),
        (&*DESK_WRAP_UPS, "counter"),
        (&*DESK_DISPOSITION_PUSHES, "counter"),
    ];
    all.iter()
        .flat_map(|(collector, kind)| collector.desc().into_iter().map(move |desc| (desc, *kind)))
        .map(|(desc, kind)| MetricInfo {
            name: desc.fq_name.clone(),
            kind,
            help: desc.help.clone(),
            labels: desc.variable_labels.clone(),
        })
        .collect()
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
        INGRESS_REQUESTS.with_label_values(&["pbx-1", "generic", "202"]).inc();
        CALLLOG_ROWS.with_label_values(&["calls"]).inc();
        let text = render();
        assert!(text.contains("switchboard_build_info{service=\"test\""));
        assert!(text.contains(
            "switchboard_ingress_requests_total{source=\"pbx-1\",status=\"202\",vendor=\"generic\"} 1"
        ));
    }

    #[test]
    fn the_catalogue_lists_every_metric_defined_here_once() {
        let catalogue = catalogue();
        // Every `pub static NAME: LazyLock<...>` of this file but the registry is a metric.
        let source = include_str!("metrics.rs");
        let defined = source
            .lines()
            .filter(|line| line.starts_with("pub static ") && line.contains("LazyLock<"))
            .filter(|line| !line.starts_with("pub static REGISTRY"))
            .count();
        assert_eq!(catalogue.len(), defined, "catalogue() misses a metric defined in this file");
        let names: std::collections::BTreeSet<&str> = catalogue.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names.len(), catalogue.len(), "a metric is listed twice");
        for metric in &catalogue {
            assert!(metric.name.starts_with("switchboard_"), "{}", metric.name);
            assert_eq!(metric.kind == "counter", metric.name.ends_with("_total"), "{}", metric.name);
            assert!(!metric.labels.iter().any(|l| ["call_id", "number", "url"].contains(&l.as_str())));
        }
    }
}
