//! Writes batches of call events to PostgreSQL and keeps every affected call equal to the
//! [`fold`](crate::fold) of all its stored events, in one transaction per batch.
//!
//! A batch:
//! 1. inserts its events into `call_events` with one UNNEST statement, `ON CONFLICT DO NOTHING` on
//!    the dedupe key; only calls that gained an event go on (a replayed batch stops here);
//! 2. takes a transaction-scoped advisory lock per affected call, in one statement, in lock-key
//!    order, so that two writers, or a writer and the settle sweep or the publisher, never work on
//!    one call at once and never deadlock (a row lock would need the row to exist first: a new
//!    call would be written twice);
//! 3. folds each call in Rust from *all* its events (those another writer committed too): a call
//!    this replica wrote last has them in the [fold cache](crate::cache), and is folded before
//!    step 2, while the replica's previous batch may still be committing; for the others it reads
//!    what is stored of the call and every event of it; a call with no row yet has no other
//!    events than this batch's, since every transaction that stores an event writes its call;
//! 4. upserts the calls, the legs that changed and, for a complete call whose record changed, the
//!    new Avro record into `call_outbox`, which the publisher (`outbox`) produces after the
//!    commit. A call folded from the cache is updated only if its row still has the revision
//!    the cache holds; if another writer changed it since, the batch is rolled back and written
//!    again with those calls read back.
//!
//! The result is a pure function of the set of distinct events (plus the sweep's `settled` mark),
//! so any order, duplication or batching of the same events leaves the same rows; only `version`
//! counts how many distinct states the call went through. Updates leave every indexed column
//! alone unless it changed (migrations 0004 and 0007), so most are HOT.
//!
//! Here: the transactions. `prepare` folds the calls into rows, declared per table in `rows`;
//! the statements are in `sql/`, their column lists rendered from those declarations (`table`).

mod digest;
mod error;
mod prepare;
mod read;
mod rows;
mod sql;
mod table;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::CalllogSettings;
use crate::metrics;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use switchboard_core::avro::Codecs;
use switchboard_core::model::{CallEvent, Direction, Outcome};
use tokio_postgres::{self, types::ToSql};

use self::error::Attempt;
pub use self::error::WriteError;
use self::prepare::{Prepared, ToFold, new_revision};
use self::read::{load_events, stored_from_row};
pub(crate) use self::sql::LOCK_CALLS;
use self::table::{Rows, execute};
use crate::cache::{CallKey, FoldCache, Stored};
use crate::fold::Event;

/// A decoded event with where it was read from.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event: CallEvent,
    pub partition: i32,
    pub offset: i64,
}

/// What one transaction changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events stored for the first time.
    pub new_events: i64,
    /// Calls whose record changed (a new version); calls that only gained events that change
    /// nothing a CRM sees keep their version.
    pub calls: i64,
    /// Leg rows inserted or changed.
    pub legs: i64,
    /// Calls that became complete, with their direction and outcome.
    pub completed: Vec<(Direction, Outcome)>,
    /// Complete calls that changed again (a late event): each is published anew.
    pub late_updates: i64,
    /// Whether some complete call now has a version the calls topic has not seen.
    pub publishable: bool,
    /// Calls folded from the fold cache, without reading them back.
    pub from_cache: i64,
    /// Calls another writer had changed since this one cached them: the batch was rolled back
    /// and written again with them read back.
    pub stale: i64,
    /// Events not kept because their call already had `calllog.max_events_per_call` (source id,
    /// event id): for the dead-letter topic.
    pub over_cap: Vec<(String, String)>,
}

/// The call log: the database pool, the record codec and the fold cache of this replica.
#[derive(Debug)]
pub struct CallLog {
    pool: Pool,
    codecs: Codecs,
    cache: FoldCache,
    /// Most events one call keeps (`calllog.max_events_per_call`).
    max_events: usize,
}

impl CallLog {
    /// The call log writing to `pool` as `settings` say: its fold cache holds up to
    /// `fold_cache_calls` calls (0: none), and a call keeps at most `max_events_per_call` events.
    pub fn new(pool: Pool, settings: &CalllogSettings) -> Result<Self, WriteError> {
        let cache = FoldCache::new(settings.fold_cache_calls);
        Ok(Self { pool, codecs: Codecs::new()?, cache, max_events: settings.max_events_per_call.max(1) })
    }

    /// Writes one batch of events in one transaction.
    pub async fn write_batch(&self, events: &[StoredEvent]) -> Result<BatchOutcome, WriteError> {
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let keys: HashSet<CallKey> =
            events.iter().map(|e| (e.event.source_id.to_string(), e.event.call_id.to_string())).collect();
        let _reservation = self.cache.reserve(keys.iter().cloned().collect());
        let (mut use_cache, mut stale) = (true, 0);
        loop {
            let attempt = self.attempt(events, use_cache).await;
            if attempt.is_err() {
                // What this attempt put in the cache did not commit (evicted while the calls are
                // still reserved, so that no other batch takes it meanwhile).
                self.cache.evict(&keys);
            }
            match attempt {
                Ok(outcome) => return Ok(BatchOutcome { stale, ..outcome }),
                Err(Attempt::Failed(error)) => return Err(error),
                Err(Attempt::Stale(calls)) => {
                    stale = stale.saturating_add(calls as i64);
                    metrics::CALLLOG_FOLD_CACHE.with_label_values(&["stale"]).inc_by(calls as u64);
                    tracing::debug!(calls, "Calls changed by another writer; writing the batch again.");
                    if !use_cache {
                        // Under the calls' locks what was read cannot change; should it, the
                        // service retries the batch.
                        return Err(WriteError::Raced);
                    }
                    use_cache = false;
                }
            }
        }
    }

    /// One transaction for the batch; `use_cache`: fold the calls the cache holds from it.
    async fn attempt(&self, events: &[StoredEvent], use_cache: bool) -> Result<BatchOutcome, Attempt> {
        let kept = prepare::first_copies(events);
        let event_rows = prepare::event_rows(&kept);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let insert = tx.prepare_cached(&sql::INSERT_EVENTS).await?;
        let inserted = tx.query(&insert, &event_rows.params()).await?;
        let mut outcome = BatchOutcome { new_events: inserted.len() as i64, ..BatchOutcome::default() };
        let Some(now) = inserted.first().map(|row| row.get::<_, DateTime<Utc>>(2)) else {
            tx.commit().await?;
            return Ok(outcome);
        };

        // The events stored for the first time, grouped by call: all the events of a call that has
        // no row yet.
        let mut new_events: HashMap<CallKey, Vec<Event>> = HashMap::new();
        let mut vendors: HashMap<CallKey, String> = HashMap::new();
        for row in &inserted {
            let Some(stored) = kept.get(&(row.get::<_, &str>(0), row.get::<_, &str>(1))) else { continue };
            let event = &stored.event;
            let key = (event.source_id.to_string(), event.call_id.to_string());
            let _ = vendors.entry(key.clone()).or_insert_with(|| event.vendor.as_str().to_owned());
            new_events.entry(key).or_default().push(Event::from(event));
        }
        let all: Vec<CallKey> = vendors.keys().cloned().collect();
        let mut prepared = Prepared::default();
        let fresh: HashSet<(&str, &str)> = inserted.iter().map(|row| (row.get(0), row.get(1))).collect();
        let mut over_cap = Vec::new();

        // Before the locks, so that folding overlaps the previous batch's commit: the calls the
        // cache holds. A call an earlier batch of this replica is writing is not there (it took
        // the entry) and waits for the locks below; one another writer changes meanwhile fails
        // the revision check.
        let early = if use_cache { self.cache.take_unshared(&all) } else { HashMap::new() };
        let mut hits = early.len();
        for (key, cached) in early {
            let vendor = vendors.remove(&key).unwrap_or_default();
            let mut call = ToFold::cached(key, vendor, cached, &mut new_events);
            over_cap.extend(cap(&mut call, self.max_events, &fresh));
            prepared.add(call, now, false, &self.codecs, &mut outcome)?;
        }

        let (sources, calls): (Vec<&str>, Vec<&str>) =
            all.iter().map(|(s, c)| (s.as_str(), c.as_str())).unzip();
        let lock = tx.prepare_cached(LOCK_CALLS).await?;
        let _ = tx.query(&lock, &[&sources, &calls]).await?;

        // The others once locked: an earlier batch of this replica that shared a call has put its
        // entry back by the time it released the lock; the rest is read.
        let mut late = if use_cache { self.cache.take(vendors.keys()) } else { HashMap::new() };
        hits = hits.saturating_add(late.len());
        let (read_sources, read_calls): (Vec<&str>, Vec<&str>) = vendors
            .keys()
            .filter(|key| !late.contains_key(*key))
            .map(|(s, c)| (s.as_str(), c.as_str()))
            .unzip();
        let mut stored: HashMap<CallKey, Stored> = HashMap::new();
        if !read_calls.is_empty() {
            let read = tx.prepare_cached(sql::READ_CALLS).await?;
            stored.extend(tx.query(&read, &[&read_sources, &read_calls]).await?.iter().map(stored_from_row));
        }
        // Calls with a row get all their events read back (this batch's included); those without
        // have only this batch's.
        let mut loaded = load_events(&tx, stored.keys()).await?;
        metrics::CALLLOG_FOLD_CACHE.with_label_values(&["miss"]).inc_by(stored.len() as u64);
        metrics::CALLLOG_FOLD_CACHE.with_label_values(&["hit"]).inc_by(hits as u64);
        outcome.from_cache = hits as i64;
        for (key, vendor) in vendors {
            let mut call = if let Some(cached) = late.remove(&key) {
                ToFold::cached(key, vendor, cached, &mut new_events)
            } else if let Some(previous) = stored.remove(&key) {
                let events = loaded.remove(&key).unwrap_or_default();
                ToFold { key, vendor, previous: Some(previous), events }
            } else {
                let events = new_events.remove(&key).unwrap_or_default();
                ToFold { key, vendor, previous: None, events }
            };
            over_cap.extend(cap(&mut call, self.max_events, &fresh));
            prepared.add(call, now, false, &self.codecs, &mut outcome)?;
        }
        if !over_cap.is_empty() {
            // Stored above with the rest of the batch; taken out again in the same transaction.
            let (sources, ids): (Vec<&str>, Vec<&str>) =
                over_cap.iter().map(|(s, e)| (s.as_str(), e.as_str())).unzip();
            let delete = tx.prepare_cached(sql::DELETE_EVENTS).await?;
            let _ = tx.execute(&delete, &[&sources, &ids]).await?;
            outcome.new_events = outcome.new_events.saturating_sub(over_cap.len() as i64);
        }
        outcome.over_cap = over_cap;
        let written = match self.write(&tx, prepared, true, &mut outcome).await {
            // A leg or outbox row of a call without a row: the cache had an entry of a batch that
            // rolled back. Read it back like any call another writer changed.
            Err(WriteError::Rejected(error))
                if use_cache
                    && error.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
            {
                return Err(Attempt::Stale(1));
            }
            written => written?,
        };
        match written {
            0 => {
                tx.commit().await?;
                Ok(outcome)
            }
            stale => Err(Attempt::Stale(stale)),
        }
    }

    /// Completes calls that had no new event for `settle` (`ringing` for calls still ringing):
    /// marks up to `limit` of them settled and refolds them. Returns how many it found. Safe with
    /// several replicas running it at once: each call is taken by one.
    pub async fn settle_due(
        &self,
        settle: Duration,
        ringing: Duration,
        limit: i64,
    ) -> Result<(usize, BatchOutcome), WriteError> {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let (settle, ringing) = (millis(settle), millis(ringing));
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let due = tx.prepare_cached(sql::DUE_CALLS).await?;
        let locked = tx.query(&due, &[&settle, &ringing, &limit]).await?;
        let mut outcome = BatchOutcome::default();
        if locked.is_empty() {
            tx.commit().await?;
            return Ok((0, outcome));
        }
        let sources: Vec<String> = locked.iter().map(|row| row.get(0)).collect();
        let calls: Vec<String> = locked.iter().map(|row| row.get(1)).collect();
        let read = tx.prepare_cached(sql::READ_DUE).await?;
        let rows = tx.query(&read, &[&sources, &calls, &settle, &ringing]).await?;
        let now: DateTime<Utc> = rows.first().map_or_else(Utc::now, |row| row.get(9));
        let due: Vec<(CallKey, Stored)> = rows.iter().map(stored_from_row).collect();
        // The sweep rewrites these calls: this replica's cached copies would only be stale.
        self.cache.evict(due.iter().map(|(key, _)| key));
        let mut loaded = load_events(&tx, due.iter().map(|(key, _)| key)).await?;
        let mut prepared = Prepared::default();
        for ((key, previous), row) in due.into_iter().zip(&rows) {
            let events = loaded.remove(&key).unwrap_or_default();
            let call = ToFold { key, vendor: row.get(8), previous: Some(previous), events };
            prepared.add(call, now, true, &self.codecs, &mut outcome)?;
        }
        if self.write(&tx, prepared, false, &mut outcome).await? > 0 {
            // Read under the locks, so no other writer can have changed them.
            return Err(WriteError::Raced);
        }
        tx.commit().await?;
        Ok((locked.len(), outcome))
    }

    /// Writes what `prepare` gathered: the calls, their legs, the outbox and the open calls, in
    /// one pipeline on the transaction's connection. Calls still in progress go into the fold
    /// cache first. `new_events`: the calls gained events (which restarts their settle timer).
    /// Returns how many calls were not updated because their row no longer had the revision
    /// their fold started from (the caller rolls back).
    async fn write(
        &self,
        tx: &Transaction<'_>,
        prepared: Prepared,
        new_events: bool,
        outcome: &mut BatchOutcome,
    ) -> Result<usize, WriteError> {
        let Prepared {
            new_calls,
            known_calls,
            new_legs,
            changed_legs,
            outbox,
            open,
            in_progress,
            without_events,
        } = prepared;
        outcome.publishable |= outbox.len() > 0;
        outcome.legs = outcome.legs.saturating_add(new_legs.len().saturating_add(changed_legs.len()) as i64);
        for (source, call) in &without_events {
            let _ = tx.execute(sql::SETTLE_WITHOUT_EVENTS, &[source, call, &new_revision()]).await?;
        }
        // Before the commit, so that this replica's next batch finds them (see `cache`).
        self.cache.put(in_progress);
        // In order: the calls first, as legs and the outbox refer to them. Statements are
        // prepared before any runs, so that the executions go out in this order; empty ones are
        // skipped.
        let (insert_calls, update_calls, insert_legs, update_legs, enqueue, track) = tokio::try_join!(
            tx.prepare_cached(&sql::INSERT_CALLS),
            tx.prepare_cached(&sql::UPDATE_CALLS),
            tx.prepare_cached(&sql::INSERT_LEGS),
            tx.prepare_cached(&sql::UPDATE_LEGS),
            tx.prepare_cached(&sql::UPSERT_OUTBOX),
            tx.prepare_cached(sql::TRACK_OPEN_CALLS),
        )?;
        let gained_events: [&(dyn ToSql + Sync); 1] = [&new_events];
        let insert_calls = execute(tx, &insert_calls, &new_calls, &[]);
        let update_calls = execute(tx, &update_calls, &known_calls, &gained_events);
        let insert_legs = execute(tx, &insert_legs, &new_legs, &[]);
        let update_legs = execute(tx, &update_legs, &changed_legs, &[]);
        let enqueue = execute(tx, &enqueue, &outbox, &[]);
        let track = execute(tx, &track, &open, &[]);
        // Polled in statement order: once one statement fails, the later ones fail with "current
        // transaction is aborted", and the first error is the one that says what happened.
        let (_, updated, _, _, _, _) =
            tokio::try_join!(biased; insert_calls, update_calls, insert_legs, update_legs, enqueue, track)?;
        Ok(known_calls.len().saturating_sub(updated as usize))
    }
}

/// Keeps `call` within `max` events: when it has more, drops events this batch stored (`fresh`),
/// the last first, until it has `max` or none of this batch's are left (events kept before stay:
/// what a call had is never taken back). Returns the dropped events' (source id, event id).
fn cap(call: &mut ToFold, max: usize, fresh: &HashSet<(&str, &str)>) -> Vec<(String, String)> {
    let excess = call.events.len().saturating_sub(max);
    if excess == 0 {
        return Vec::new();
    }
    let source = call.key.0.as_str();
    let mut drop = HashSet::new();
    for (index, event) in call.events.iter().enumerate().rev() {
        if drop.len() == excess {
            break;
        }
        if fresh.contains(&(source, event.event_id.as_str())) {
            let _ = drop.insert(index);
        }
    }
    let (kept, taken): (Vec<_>, Vec<_>) = std::mem::take(&mut call.events)
        .into_iter()
        .enumerate()
        .partition(|(index, _)| !drop.contains(index));
    call.events = kept.into_iter().map(|(_, event)| event).collect();
    let dropped: Vec<(String, String)> =
        taken.into_iter().map(|(_, event)| (source.to_owned(), event.event_id)).collect();
    tracing::warn!(source, call = %call.key.1, max, dropped = dropped.len(),
        "Call has reached calllog.max_events_per_call; its newest events go to the dead-letter topic.");
    dropped
}
