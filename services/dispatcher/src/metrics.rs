//! The dispatcher's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};
pub use switchboard_core::metrics::*;

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

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[
        (&*DISPATCHER_DELIVERIES, "counter"),
        (&*DISPATCHER_ATTEMPT_SECONDS, "histogram"),
        (&*DISPATCHER_PENDING, "gauge"),
        (&*DISPATCHER_OLDEST_PENDING, "gauge"),
        (&*DISPATCHER_PROFILES, "gauge"),
    ])
}
