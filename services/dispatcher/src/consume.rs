//! The dispatcher's consumer: reads call records (`<prefix>calls`) and enriched call events
//! (`<prefix>enriched`) in its own group, evaluates every profile's trigger and criteria on each,
//! and stores the due deliveries.
//!
//! Inputs: the two topics; the profiles ([`ProfileCache`]). Output: rows of `deliveries`, one per
//! (profile, event or record version), `pending` for an enabled profile and `discarded` (kept,
//! replayable) for a paused or disabled one. A newer record of a call also becomes the subject of
//! that call's pending deliveries whose next step waits for the recording (a Bitrix24-style
//! "attach the recording" step), which are then due at once. A new delivery that may be attempted
//! at once (nothing of its profile and call before it) is inserted claimed by this replica and
//! handed to its worker, which then needs no query to find it (`claim_at_once`).
//!
//! Delivery guarantee: at least once, with idempotent effects. Records are taken in batches; a
//! batch's deliveries (and the record versions seen) are written in one transaction, and only
//! after it commits are the batch's offsets stored. A crash re-reads the batch, whose deliveries
//! are already there (`ON CONFLICT DO NOTHING` on the derived id) and whose record versions are
//! already seen, so nothing is scheduled twice. Ordering: the order of each partition; the worker
//! keeps each (profile, call)'s deliveries in insertion order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::metrics;
use deadpool_postgres::Pool;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use switchboard_core::avro::Codecs;
use switchboard_core::model::{CallEvent, CallRecord};
use switchboard_core::retry::Backoff;
use switchboard_core::stage::{self, DeadLetterTarget, Poison, PoisonClass};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::cache::ProfileCache;
use crate::criteria::{self, Subject};
use crate::schedule_store::{self, CallKey};
use crate::store::{self, Claimed, NewDelivery, State};
use crate::subject_json::SubjectJson;
use crate::worker::{self, Handed};

const STAGE: &str = "dispatcher";
/// Records per transaction, and how long a batch waits to fill once it has one.
const BATCH_MAX: usize = 500;
const BATCH_LINGER: Duration = Duration::from_millis(20);

/// One consumed record, decoded.
#[derive(Debug)]
enum Input {
    Event(Box<CallEvent>),
    Record(Box<CallRecord>),
    /// Not readable (why): sent to the dead-letter topic with the reason before its offset is
    /// stored, and scheduled nothing.
    Unreadable(String),
}

pub struct Scheduler {
    pub consumer: StreamConsumer,
    /// Writes the dead letters of unreadable records.
    pub producer: FutureProducer,
    pub dead_letter_topic: String,
    pub pool: Pool,
    pub codecs: Arc<Codecs>,
    pub profiles: ProfileCache,
    pub calls_topic: String,
    pub max_backoff: Duration,
    /// Rung when a batch scheduled pending deliveries, so this replica's worker looks at once.
    pub scheduled: Arc<Notify>,
    /// This replica's worker, which takes the deliveries inserted claimed ([`Worker::handoff`]).
    pub handoff: mpsc::Sender<Handed>,
    /// The worker's attempt timeout (`dispatcher.attempt_timeout_ms`), of which a delivery inserted
    /// claimed gets its lease ([`worker::handoff_lease`]).
    pub attempt_timeout: Duration,
    /// The worker's attempts at once (`dispatcher.concurrency`).
    pub concurrency: usize,
}

/// The deliveries `input` makes for `profiles`, given the previous record version seen of its
/// call (records only). The subject is serialised once, and only when a profile fires.
pub fn deliveries_for(
    profiles: &[store::StoredProfile],
    event: Option<&CallEvent>,
    record: Option<(&CallRecord, Option<&CallRecord>)>,
) -> Vec<NewDelivery> {
    let subject = match (event, record) {
        (Some(e), _) => Subject::Event(e),
        (None, Some((record, previous))) => Subject::Record { record, previous },
        (None, None) => return Vec::new(),
    };
    let firing: Vec<&store::StoredProfile> = profiles
        .iter()
        .filter(|p| criteria::fires(p.profile.trigger, &p.profile.criteria, &subject))
        .collect();
    if firing.is_empty() {
        return Vec::new();
    }
    let (kind, json, source, call, subject_id) = match subject {
        Subject::Event(e) => (
            "event",
            SubjectJson::of(e),
            e.source_id.as_str(),
            e.call_id.as_str(),
            e.event_id.as_str().to_owned(),
        ),
        Subject::Record { record: r, .. } => (
            "record",
            SubjectJson::of(r),
            r.source_id.as_str(),
            r.call_id.as_str(),
            format!("record:{}", r.version),
        ),
    };
    firing
        .into_iter()
        .map(|p| NewDelivery {
            id: crate::delivery_id(&p.id, source, call, &subject_id),
            profile_id: p.id.clone(),
            source_id: source.to_owned(),
            call_id: call.to_owned(),
            subject_id: subject_id.clone(),
            trigger: serde_json::to_value(p.profile.trigger)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            subject_kind: kind,
            subject: json.clone(),
            status: if p.state == State::Enabled { "pending" } else { "discarded" },
            lease: None,
        })
        .collect()
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("calls_topic", &self.calls_topic).finish_non_exhaustive()
    }
}

impl Scheduler {
    fn decode(&self, topic: &str, payload: &[u8]) -> Input {
        let decoded = if topic == self.calls_topic {
            self.codecs.call_record.decode(payload).map(|r| Input::Record(Box::new(r)))
        } else {
            self.codecs.call_event.decode(payload).map(|e| Input::Event(Box::new(e)))
        };
        decoded.unwrap_or_else(|error| {
            metrics::EVENTS_FAILED.with_label_values(&[STAGE, PoisonClass::Decode.as_str()]).inc();
            tracing::warn!(%error, topic, "Unreadable record; to the dead-letter topic.");
            Input::Unreadable(format!(
                "not a readable {} record: {error}",
                if topic == self.calls_topic { "call record" } else { "call event" }
            ))
        })
    }

    /// Writes one batch's deliveries in one transaction (a few statements, whatever the batch's
    /// size: `schedule_store`); returns the statuses inserted, and whether waiting deliveries
    /// became due.
    async fn write(&self, inputs: &[Input]) -> Result<(Vec<&'static str>, bool), String> {
        let profiles = self.profiles.all();
        let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
        let tx = client.transaction().await.map_err(|e| pg(&e))?;
        tx.batch_execute(store::CUSTOM_PLANS).await.map_err(|e| pg(&e))?;
        let mut calls: Vec<CallKey> = inputs
            .iter()
            .filter_map(|input| match input {
                Input::Record(r) => Some((r.source_id.as_str().to_owned(), r.call_id.as_str().to_owned())),
                _ => None,
            })
            .collect();
        calls.sort();
        calls.dedup();
        let mut seen = schedule_store::seen_versions(&tx, &calls).await.map_err(|e| pg(&e))?;
        // Each call's newest record of the batch, for the deliveries waiting on the call.
        let mut newest: HashMap<CallKey, &CallRecord> = HashMap::new();
        let mut deliveries: Vec<NewDelivery> = Vec::new();
        for input in inputs {
            match input {
                Input::Event(event) => deliveries.extend(deliveries_for(&profiles, Some(event), None)),
                Input::Record(record) => {
                    let key = (record.source_id.as_str().to_owned(), record.call_id.as_str().to_owned());
                    let previous = seen.get(&key).copied();
                    // Seen already (a re-read, or earlier in this batch), or older: nothing new.
                    if previous.is_some_and(|version| version >= record.version) {
                        continue;
                    }
                    newest.insert(key.clone(), record);
                    let _ = seen.insert(key, record.version);
                    deliveries.extend(match previous {
                        // Only the version of the previous record matters to the triggers.
                        Some(version) => {
                            let previous = CallRecord { version, ..(**record).clone() };
                            deliveries_for(&profiles, None, Some((record, Some(&previous))))
                        }
                        None => deliveries_for(&profiles, None, Some((record, None))),
                    });
                }
                Input::Unreadable(_) => {}
            }
        }
        let newer: HashMap<CallKey, i64> = newest.iter().map(|(k, r)| (k.clone(), r.version)).collect();
        schedule_store::mark_seen(&tx, &newer).await.map_err(|e| pg(&e))?;
        // The batch's calls that have pending deliveries: a new delivery of theirs waits behind
        // them, and only theirs can be refreshed with a newer record.
        let mut calls: Vec<CallKey> = newest
            .keys()
            .cloned()
            .chain(deliveries.iter().map(|d| (d.source_id.clone(), d.call_id.clone())))
            .collect();
        calls.sort();
        calls.dedup();
        let waiting = schedule_store::pending_keys(&tx, &calls).await.map_err(|e| pg(&e))?;
        let waiting_calls: HashSet<(&str, &str)> =
            waiting.iter().map(|(_, s, c)| (s.as_str(), c.as_str())).collect();
        let refresh: HashMap<CallKey, (i64, SubjectJson)> = newest
            .iter()
            .filter(|((s, c), _)| waiting_calls.contains(&(s.as_str(), c.as_str())))
            .map(|(key, record)| (key.clone(), (record.version, SubjectJson::of(*record))))
            .collect();
        // Before the inserts, as a record at a time did: what this batch inserts has not started.
        let refreshed = schedule_store::refresh_waiting(&tx, &refresh).await.map_err(|e| pg(&e))?;
        let mut permits = self.claim_at_once(&mut deliveries, &waiting);
        let inserted = schedule_store::insert_deliveries(&tx, &deliveries).await.map_err(|e| pg(&e))?;
        tx.commit().await.map_err(|e| pg(&e))?;
        // Committed: the worker attempts the claimed ones now (a crash from here leaves them leased,
        // and they are claimed again once the lease lapses: a short one, `worker::handoff_lease`).
        let by_id: HashMap<&str, &NewDelivery> = deliveries.iter().map(|d| (d.id.as_str(), d)).collect();
        for row in inserted.iter().filter(|row| row.leased) {
            let (Some(delivery), Some(permit)) = (by_id.get(row.id.as_str()), permits.pop()) else { break };
            let claimed = Claimed {
                id: delivery.id.clone(),
                profile_id: delivery.profile_id.clone(),
                subject_kind: delivery.subject_kind.to_owned(),
                subject: delivery.subject.clone(),
                attempts: 1,
                schedule_base: 0,
                flow: serde_json::json!({}),
                created_at: chrono::Utc::now(),
            };
            permit.send(Handed { claimed, at: std::time::Instant::now() });
        }
        Ok((inserted.iter().map(|row| row.status).collect(), refreshed > 0))
    }

    /// Marks the deliveries to insert claimed, for this replica's worker to attempt at once rather
    /// than find with a query: each pending one that is the first of its (profile, call) in the
    /// batch and has no pending delivery before it (which it must wait for), of a profile without
    /// a rate limit or a concurrency limit below the worker's (for which the worker would turn
    /// back much of a burst), while the worker has room for it. Returns a place in the worker's
    /// queue for each.
    fn claim_at_once(
        &self,
        deliveries: &mut [NewDelivery],
        waiting: &HashSet<(String, String, String)>,
    ) -> Vec<mpsc::Permit<'_, Handed>> {
        let profiles = self.profiles.all();
        // The profile, when it has no rate limit and no concurrency limit below the worker's.
        let unlimited = |id: &str| {
            profiles.iter().find(|p| p.id == id).filter(|p| {
                p.profile.rate_limit.is_none()
                    && p.profile
                        .max_concurrency
                        .is_none_or(|n| usize::try_from(n).is_ok_and(|n| n >= self.concurrency))
            })
        };
        let mut seen = HashSet::new();
        let mut permits = Vec::new();
        for delivery in deliveries.iter_mut().filter(|d| d.status == "pending") {
            let key = (delivery.profile_id.clone(), delivery.source_id.clone(), delivery.call_id.clone());
            if !seen.insert(key.clone()) || waiting.contains(&key) {
                continue;
            }
            let Some(profile) = unlimited(&delivery.profile_id) else { continue };
            match self.handoff.try_reserve() {
                Ok(permit) => {
                    delivery.lease = Some(worker::handoff_lease(&profile.profile, self.attempt_timeout));
                    permits.push(permit);
                }
                // The worker is busy: the rest are claimed from the table as usual.
                Err(_) => break,
            }
        }
        // Handed out from the back, so that each leased delivery takes one.
        permits
    }

    /// Consumes until `cancel` fires, then commits the stored offsets.
    pub async fn run(self, cancel: CancellationToken) {
        while let Some(batch) =
            stage::next_batch(&self.consumer, STAGE, BATCH_MAX, BATCH_LINGER, &cancel).await
        {
            metrics::EVENTS_IN.with_label_values(&[STAGE]).inc_by(batch.len() as u64);
            let inputs: Vec<Input> = batch.iter().map(|m| self.decode(&m.topic, &m.payload)).collect();
            // Dead letters first: acknowledged before any offset of the batch is stored.
            let target = DeadLetterTarget {
                producer: &self.producer,
                codecs: &self.codecs,
                stage: STAGE,
                topic: &self.dead_letter_topic,
                max_backoff: self.max_backoff,
            };
            let mut unwritten = false;
            for (message, input) in batch.iter().zip(&inputs) {
                if let Input::Unreadable(reason) = input {
                    let poison = Poison::new(PoisonClass::Decode, reason.clone());
                    if let Err(error) = target.send(message, &poison).await {
                        tracing::error!(%error, topic = %message.topic, offset = message.offset, "Dead letter not written; the batch stays unconsumed.");
                        unwritten = true;
                        break;
                    }
                }
            }
            // Kafka will take no record from this producer (the service fails on it): store
            // nothing of this batch, so that it is read again after the restart.
            if unwritten {
                break;
            }
            let started = std::time::Instant::now();
            let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
            let inserted = loop {
                match self.write(&inputs).await {
                    Ok(inserted) => break Some(inserted),
                    Err(error) => {
                        metrics::TRANSIENT_RETRIES.with_label_values(&[STAGE, "postgres"]).inc();
                        let delay = backoff.next_delay();
                        tracing::warn!(%error, ?delay, "Cannot store the batch's deliveries; retrying.");
                        tokio::select! {
                            _ = cancel.cancelled() => break None,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            };
            // Cancelled before the batch was stored: its offsets stay unstored and it is read again.
            let Some((inserted, refreshed)) = inserted else { break };
            metrics::BATCH_SIZE.with_label_values(&[STAGE]).observe(batch.len() as f64);
            metrics::PROCESSING_SECONDS.with_label_values(&[STAGE]).observe(started.elapsed().as_secs_f64());
            for status in &inserted {
                let result = if *status == "pending" { "scheduled" } else { "discarded" };
                metrics::DISPATCHER_DELIVERIES.with_label_values(&[result]).inc();
            }
            if refreshed || inserted.contains(&"pending") {
                self.scheduled.notify_one();
            }
            metrics::EVENTS_OUT.with_label_values(&[STAGE]).inc_by(inserted.len() as u64);
            // A partition revoked meanwhile reads the record again, which schedules nothing new.
            for message in &batch {
                stage::store_offset(&self.consumer, message);
            }
        }
        stage::finish(&self.consumer, &self.producer);
    }
}

fn pg(error: &tokio_postgres::Error) -> String {
    switchboard_core::pg::error_chain(error)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_core::model::{Direction, EventKind};

    use super::*;
    use crate::fixtures;
    use crate::profile::Profile;
    use crate::store::StoredProfile;

    fn stored(id: &str, trigger: &str, state: State) -> StoredProfile {
        let spec = json!({
            "name": id,
            "trigger": trigger,
            "criteria": [{"type": "direction", "any_of": ["inbound"]}],
            "steps": [{"name": "post", "request": {"method": "POST", "url": "https://crm.example.com/calls"}}],
        });
        StoredProfile::new(id.into(), Profile::from_json(&spec.to_string()).expect("valid"), state)
    }

    #[test]
    fn each_firing_profile_gets_one_delivery_with_a_stable_id_and_its_state() {
        let profiles = [
            stored("answered", "call_answered", State::Enabled),
            stored("paused", "call_answered", State::Paused),
            stored("completed", "call_record_completed", State::Enabled),
        ];
        let event = fixtures::event(EventKind::Answered, Direction::Inbound);
        let made = deliveries_for(&profiles, Some(&event), None);
        let summary: Vec<(&str, &str, &str)> =
            made.iter().map(|d| (d.profile_id.as_str(), d.status, d.subject_kind)).collect();
        assert_eq!(summary, [("answered", "pending", "event"), ("paused", "discarded", "event")]);
        assert_eq!(made, deliveries_for(&profiles, Some(&event), None), "the same ids when read again");
        assert_eq!(made[0].trigger, "call_answered");

        let outbound = fixtures::event(EventKind::Answered, Direction::Outbound);
        assert!(deliveries_for(&profiles, Some(&outbound), None).is_empty(), "criteria filter");

        let record = fixtures::answered_inbound();
        let first = deliveries_for(&profiles, None, Some((&record, None)));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].subject_id, format!("record:{}", record.version));
        assert_eq!(
            first[0].id,
            crate::delivery_id("completed", "acme-pbx", "c-1001", &format!("record:{}", record.version))
        );
        let previous = CallRecord { version: record.version - 1, ..record.clone() };
        assert!(
            deliveries_for(&profiles, None, Some((&record, Some(&previous)))).is_empty(),
            "not the first"
        );
    }
}
