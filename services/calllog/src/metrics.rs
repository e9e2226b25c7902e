//! The calllog's own metrics. The metrics every service shares are re-exported from
//! `switchboard_core::metrics`, so that `crate::metrics` names every metric it observes; labels
//! stay bounded by the same rules (see there).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec};
pub use switchboard_core::metrics::*;

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

/// This crate's own metrics, for the catalogue (`switchboard::catalogue`).
pub fn catalogue() -> Vec<MetricInfo> {
    describe(&[
        (&*CALLLOG_ROWS, "counter"),
        (&*CALLLOG_DUPLICATES, "counter"),
        (&*CALLLOG_FOLD_CACHE, "counter"),
        (&*END_TO_END_SECONDS, "histogram"),
        (&*CALLS_COMPLETED, "counter"),
        (&*CALLS_UPDATED_AFTER_COMPLETION, "counter"),
        (&*CALL_RECORDS_PUBLISHED, "counter"),
    ])
}
