//! The recordings's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGauge};
pub use switchboard_core::metrics::*;

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

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[
        (&*RECORDING_RESOLUTIONS, "counter"),
        (&*RECORDING_RESOLVE_SECONDS, "histogram"),
        (&*RECORDING_LINKS, "counter"),
        (&*RECORDINGS_PENDING, "gauge"),
    ])
}
