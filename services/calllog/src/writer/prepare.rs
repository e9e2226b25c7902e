//! Turning a batch into rows: which copy of each event is stored, and for each affected call, its
//! fold and the rows of it that changed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use switchboard_core::avro::Codecs;
use switchboard_core::model::{CallId, CallRecord, SourceId, Vendor};

use super::digest::{field_digest, leg_hash};
use super::rows::{CallRow, CallRows, EventRows, LegRows, OpenCalls, OutboxRows};
use super::{BatchOutcome, StoredEvent, WriteError};
use crate::cache::{CachedCall, CallKey, Stored};
use crate::fold::{Event, Folded, fold};

/// A batch's events by dedupe key (source, event id).
pub(super) type Kept<'a> = HashMap<(&'a str, &'a str), &'a StoredEvent>;

/// One copy of each event: two deliveries of one event can differ (a PBX retry without its own
/// timestamp), and the first received is kept, so which wins does not depend on batching.
pub(super) fn first_copies(events: &[StoredEvent]) -> Kept<'_> {
    let mut kept: Kept<'_> = HashMap::with_capacity(events.len());
    for stored in events {
        let event = &stored.event;
        let slot = kept.entry((event.source_id.as_str(), event.event_id.as_str())).or_insert(stored);
        if (event.received_at, &event.raw_id) < (slot.event.received_at, &slot.event.raw_id) {
            *slot = stored;
        }
    }
    kept
}

/// The `call_events` rows of the kept events, in key order, so that two transactions inserting
/// some of the same events (a PBX retry split over two batches in flight) queue on them instead
/// of deadlocking.
pub(super) fn event_rows<'a>(kept: &Kept<'a>) -> EventRows<'a> {
    let mut distinct: Vec<&StoredEvent> = kept.values().copied().collect();
    distinct.sort_unstable_by_key(|e| (e.event.source_id.as_str(), e.event.event_id.as_str()));
    let mut rows = EventRows::default();
    for stored in distinct {
        rows.push(&stored.event, stored.partition, stored.offset);
    }
    rows
}

/// A token for the next write of a call row (migration 0006): unique per write, never 0.
/// A random start per process, then a counter through the splitmix64 finaliser (a bijection): no
/// system call per write, distinct within a process, and unpredictable across processes.
pub(super) fn new_revision() -> i64 {
    static SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        let (high, low) = uuid::Uuid::now_v7().as_u64_pair();
        high ^ low
    });
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut z = SEED.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    match (z ^ (z >> 31)) as i64 {
        0 => 1,
        revision => revision,
    }
}

/// One call to fold: its key and vendor, what is stored of it (`None`: no row yet), and every
/// event it has.
pub(super) struct ToFold {
    pub(super) key: CallKey,
    pub(super) vendor: String,
    pub(super) previous: Option<Stored>,
    pub(super) events: Vec<Event>,
}

impl ToFold {
    /// A call from the fold cache, with the events this batch stored for it added.
    pub(super) fn cached(
        key: CallKey,
        vendor: String,
        CachedCall { stored, mut events }: CachedCall,
        new_events: &mut HashMap<CallKey, Vec<Event>>,
    ) -> Self {
        events.extend(new_events.remove(&key).unwrap_or_default());
        Self { key, vendor, previous: Some(stored), events }
    }
}

/// The rows a transaction writes, gathered call by call.
#[derive(Default)]
pub(super) struct Prepared {
    pub(super) new_calls: CallRows,
    pub(super) known_calls: CallRows,
    pub(super) new_legs: LegRows,
    pub(super) changed_legs: LegRows,
    pub(super) outbox: OutboxRows,
    pub(super) open: OpenCalls,
    /// Calls still in progress, for the fold cache.
    pub(super) in_progress: Vec<(CallKey, CachedCall)>,
    /// Calls the sweep completes that have no events to fold.
    pub(super) without_events: Vec<CallKey>,
}

impl Prepared {
    /// Folds one call from all its events and adds what changed: the call row, the legs that
    /// changed, and the record of a complete call that changed. The version grows only if the
    /// record changed. `settle`: the sweep is completing the call.
    pub(super) fn add(
        &mut self,
        call: ToFold,
        now: DateTime<Utc>,
        settle: bool,
        codecs: &Codecs,
        outcome: &mut BatchOutcome,
    ) -> Result<(), WriteError> {
        let ToFold { key, vendor, previous, events } = call;
        let is_new = previous.is_none();
        let previous = previous.unwrap_or_default();
        let settled = previous.settled || settle;
        let (source, call) = (&key.0, &key.1);
        let (Ok(source_id), Ok(call_id)) = (SourceId::parse(source), CallId::parse(call)) else {
            tracing::error!(%source, %call, "Stored call key does not parse.");
            return Ok(());
        };
        let vendor: Vendor = vendor.parse().unwrap_or(Vendor::Generic);
        let Some(folded) = fold(&source_id, vendor, &call_id, &events, settled) else {
            // Only a call from before migration 0004 whose events were removed by hand: there is
            // nothing to fold, and the sweep completes it as it stands.
            tracing::warn!(%source, %call, "Call without events.");
            if settle {
                self.open.completed(source, call);
                self.without_events.push(key);
            }
            return Ok(());
        };
        let Folded { mut record, event_count, leg_event_counts, first_received_at } = folded;
        let complete = record.completion.is_some();
        match (is_new, previous.completed_at.is_some(), complete) {
            (true, _, false) => self.open.opened(source, call),
            (false, false, true) => self.open.completed(source, call),
            _ => {}
        }
        record.completed_at = previous.completed_at.or(complete.then_some(now));
        // The version counts changes of what a CRM sees; event counts are bookkeeping and are
        // written without one.
        let hash = field_digest(&record).to_vec();
        record.version = previous.version;
        if previous.content_hash.as_deref() != Some(hash.as_slice()) {
            // One version per change, from 0: the saturation is out of reach.
            record.version = record.version.saturating_add(1);
            outcome.calls = outcome.calls.saturating_add(1);
            if complete && previous.completed_at.is_none() {
                if let Some(result) = record.outcome {
                    outcome.completed.push((record.direction, result));
                }
            } else if previous.completed_at.is_some() {
                outcome.late_updates = outcome.late_updates.saturating_add(1);
            }
            if complete {
                self.outbox.push(&record, codecs.call_record.encode(&record)?);
            }
        }
        let leg_hashes = self.push_legs(&record, &leg_event_counts, &previous.leg_hashes);
        let revision = new_revision();
        let rows = if is_new { &mut self.new_calls } else { &mut self.known_calls };
        rows.push(CallRow {
            record: &record,
            event_count,
            first_received_at,
            settled,
            content_hash: hash.clone(),
            leg_hashes: &leg_hashes,
            revision,
            expected_revision: previous.revision,
        });
        if !settle && !complete {
            let stored = Stored {
                revision,
                version: record.version,
                content_hash: Some(hash),
                settled,
                completed_at: record.completed_at,
                leg_hashes: leg_hashes.into_iter().map(|(leg, hash)| (leg.to_owned(), hash)).collect(),
            };
            self.in_progress.push((key, CachedCall { stored, events }));
        }
        Ok(())
    }

    /// Sorts a call's legs into those never written and those whose row changed, leaving out the
    /// unchanged; returns every leg's id and hash, for the call row.
    fn push_legs<'r>(
        &mut self,
        r: &'r CallRecord,
        event_counts: &[i32],
        previous: &HashMap<String, String>,
    ) -> Vec<(&'r str, String)> {
        let mut hashes = Vec::with_capacity(r.legs.len());
        for (leg, count) in r.legs.iter().zip(event_counts) {
            let hash = leg_hash(leg, *count);
            match previous.get(&leg.leg_id) {
                None => self.new_legs.push(r, leg, *count),
                Some(written) if *written != hash => self.changed_legs.push(r, leg, *count),
                Some(_) => {}
            }
            hashes.push((leg.leg_id.as_str(), hash));
        }
        hashes
    }
}
