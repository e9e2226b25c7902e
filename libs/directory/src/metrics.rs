//! The directory's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::IntCounterVec;
pub use switchboard_core::metrics::*;

/// `result`: `ok` (a full load of agents, contacts and own numbers) or `error` (the change feed
/// was lost; the service keeps its last directory and reconnects).
pub static DIRECTORY_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "switchboard_directory_reloads_total",
        "Loads of the directory into a matcher or router's memory, by result.",
        &["result"],
    )
});

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[(&*DIRECTORY_RELOADS, "counter")])
}
