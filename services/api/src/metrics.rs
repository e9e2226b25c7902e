//! The api's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec};
pub use switchboard_core::metrics::*;

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

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[(&*API_REQUESTS, "counter"), (&*API_SECONDS, "histogram")])
}
