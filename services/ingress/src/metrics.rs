//! The ingress's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec};
pub use switchboard_core::metrics::*;

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

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[
        (&*INGRESS_REQUESTS, "counter"),
        (&*INGRESS_AUTH_FAILURES, "counter"),
        (&*INGRESS_BODY_BYTES, "histogram"),
    ])
}
