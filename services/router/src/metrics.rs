//! The router's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec};
pub use switchboard_core::metrics::*;

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

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[(&*ROUTER_LOOKUPS, "counter"), (&*ROUTER_SECONDS, "histogram")])
}
