//! The matcher's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::IntCounterVec;
pub use switchboard_core::metrics::*;

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

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[(&*MATCHES, "counter")])
}
