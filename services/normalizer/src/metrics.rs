//! The normalizer's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::IntCounterVec;
pub use switchboard_core::metrics::*;

pub static NORMALIZED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_normalizer_webhooks_total",
        "Raw webhooks the normalizer read, by vendor and result (events, no_events, parse_failure).",
        &["vendor", "result"],
    )
});

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[(&*NORMALIZED, "counter")])
}
