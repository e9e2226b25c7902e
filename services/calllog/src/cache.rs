//! The fold's input of the calls a writer replica is in the middle of, kept in memory so that a
//! batch that brings a call's next event folds it without reading back the call's row and every
//! event stored before.
//!
//! Nothing depends on an entry being right: each holds the `revision` the replica wrote with it,
//! and the writer updates the call only where the row still has that revision (migration 0006).
//! Another replica or a settle sweep that wrote the call since makes the update miss; the writer
//! then rolls the batch back and refolds those calls from the database. An entry is therefore
//! written as soon as its batch is folded, before the commit: the replica's next batch, waiting
//! for that call's lock, must find it, and a commit that then fails only leaves an entry whose
//! revision no row has.
//!
//! A batch takes its calls' entries out, and puts back the folded ones that are not complete
//! (late events after completion are rare; such a call is read back). Past its capacity the cache
//! drops arbitrary entries: a miss costs only a read.
//!
//! A batch [reserves](FoldCache::reserve) its calls while it is in flight. Before taking its locks
//! it folds only the calls no earlier batch in flight has reserved: an entry such a batch put
//! back is not final until that batch commits, and one it has yet to take must stay for it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::fold::Event;

/// A call's key: source id and call id.
pub type CallKey = (String, String);

/// What the database holds of a call, as the fold's next run needs it.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// The token of the last write; 0 for a call without a row.
    pub revision: i64,
    pub version: i64,
    pub content_hash: Option<Vec<u8>>,
    pub settled: bool,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Leg id → hash of the leg row as last written.
    pub leg_hashes: HashMap<String, String>,
}

/// One call as its replica last wrote it.
#[derive(Debug, Clone)]
pub struct CachedCall {
    pub stored: Stored,
    /// Every event stored of the call, de-duplicated: the fold's whole input.
    pub events: Vec<Event>,
}

#[derive(Debug)]
pub struct FoldCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    calls: HashMap<CallKey, CachedCall>,
    /// How many batches in flight hold each call.
    reserved: HashMap<CallKey, u32>,
}

/// A batch's hold on its calls, released when dropped.
#[derive(Debug)]
pub struct Reservation<'c> {
    cache: &'c FoldCache,
    keys: Vec<CallKey>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut inner = self.cache.inner();
        for key in &self.keys {
            if let Some(count) = inner.reserved.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    inner.reserved.remove(key);
                }
            }
        }
    }
}

impl FoldCache {
    /// A cache of up to `capacity` calls; 0 keeps nothing (every call is read back).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::new(Inner::default()) }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a stale entry, which the revision check
        // catches.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds `keys` (distinct) for a batch until the reservation is dropped.
    pub fn reserve(&self, keys: Vec<CallKey>) -> Reservation<'_> {
        let mut inner = self.inner();
        for key in &keys {
            let count = inner.reserved.entry(key.clone()).or_default();
            *count = count.saturating_add(1);
        }
        Reservation { cache: self, keys }
    }

    /// Removes and returns the entries of `keys` that are present.
    pub fn take<'a>(&self, keys: impl IntoIterator<Item = &'a CallKey>) -> HashMap<CallKey, CachedCall> {
        let mut inner = self.inner();
        keys.into_iter().filter_map(|key| inner.calls.remove_entry(key)).collect()
    }

    /// Like `take`, but only calls no other batch in flight holds (the caller holds `keys`).
    pub fn take_unshared<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a CallKey>,
    ) -> HashMap<CallKey, CachedCall> {
        let mut inner = self.inner();
        let mut taken = HashMap::new();
        for key in keys {
            if inner.reserved.get(key).copied().unwrap_or(0) <= 1
                && let Some((key, entry)) = inner.calls.remove_entry(key)
            {
                let _ = taken.insert(key, entry);
            }
        }
        taken
    }

    pub fn put(&self, entries: Vec<(CallKey, CachedCall)>) {
        if self.capacity == 0 {
            return;
        }
        let calls = &mut self.inner().calls;
        calls.extend(entries);
        if calls.len() > self.capacity {
            // Down to 90 %, so that eviction runs once per many batches, not on each.
            let mut excess = calls.len().saturating_sub(self.capacity.saturating_mul(9) / 10);
            calls.retain(|_, _| {
                let keep = excess == 0;
                excess = excess.saturating_sub(1);
                keep
            });
        }
    }

    pub fn evict<'a>(&self, keys: impl IntoIterator<Item = &'a CallKey>) {
        let mut inner = self.inner();
        for key in keys {
            inner.calls.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.inner().calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> CallKey {
        ("s".to_owned(), format!("c{n}"))
    }

    fn entry() -> CachedCall {
        CachedCall { stored: Stored::default(), events: Vec::new() }
    }

    #[test]
    fn take_removes_and_eviction_keeps_it_under_capacity() {
        let cache = FoldCache::new(10);
        cache.put((0..10).map(|n| (key(n), entry())).collect());
        assert_eq!(cache.len(), 10);
        let taken = cache.take([&key(1), &key(99)]);
        assert_eq!(taken.len(), 1);
        assert_eq!(cache.len(), 9);
        cache.put((10..15).map(|n| (key(n), entry())).collect());
        assert_eq!(cache.len(), 9, "14 entries over a capacity of 10 go down to 9");
        cache.evict([&key(10), &key(11), &key(12), &key(13), &key(14), &key(0)]);
        assert!(cache.len() <= 8);
        // A call another batch in flight holds is left for it.
        cache.put(vec![(key(20), entry()), (key(21), entry())]);
        let first = cache.reserve(vec![key(20)]);
        let second = cache.reserve(vec![key(20), key(21)]);
        let taken = cache.take_unshared([&key(20), &key(21)]);
        assert_eq!(taken.keys().collect::<Vec<_>>(), [&key(21)]);
        drop(first);
        assert_eq!(cache.take_unshared([&key(20)]).len(), 1, "free once the other batch is done");
        drop(second);
        assert!(cache.inner().reserved.is_empty());
        let off = FoldCache::new(0);
        off.put(vec![(key(1), entry())]);
        assert!(off.is_empty());
    }
}
