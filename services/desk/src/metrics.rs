//! The desk's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
pub use switchboard_core::metrics::*;

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

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[
        (&*DESK_STREAMS, "gauge"),
        (&*DESK_NOTIFICATIONS, "counter"),
        (&*DESK_NOTIFICATION_SECONDS, "histogram"),
        (&*DESK_RESUMES, "counter"),
        (&*DESK_STREAMS_CLOSED, "counter"),
        (&*ORIGINATE_REQUESTS, "counter"),
        (&*DESK_WRAP_UPS, "counter"),
        (&*DESK_DISPOSITION_PUSHES, "counter"),
        (&*ORIGINATE_SECONDS, "histogram"),
    ])
}
