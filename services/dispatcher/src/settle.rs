//! Settling attempts in groups: each finished attempt hands its outcome (the delivery's new state,
//! its flow, the log of its requests) to one writer task, which writes every outcome waiting at
//! that moment in one transaction.
//!
//! Why: a transaction per attempt (or two: the log, then the settlement) made PostgreSQL round
//! trips the dispatcher's bottleneck once the consumer wrote its batches in a few statements
//! (BENCHMARKS.md, dispatcher). Grouping costs an attempt nothing when it is alone (the writer
//! takes what is there, it does not wait to fill a group) and saves the most under load. And an
//! attempt does not wait for its outcome to be written: it frees its place of
//! `dispatcher.concurrency` as soon as the outcome is queued, so the requests in flight are not
//! held up by PostgreSQL's commits (which had cost 32 attempts in flight most of their time).
//! The queue is bounded: when the writer falls behind, attempts wait to queue (backpressure).
//!
//! Guarantees: until its outcome is written a delivery stays `pending` and leased in the table, so
//! a (profile, call)'s next delivery stays behind it, no replica claims it again, and a replica
//! that dies with outcomes unwritten leaves their leases to lapse: those deliveries are attempted
//! again with the same id (at least once). A group whose write fails is written again with backoff
//! until [`RETRY_FOR`] has passed, then left to the lease; a group PostgreSQL refuses for its data
//! is written one outcome at a time, so that one bad outcome holds up no other. An outcome is
//! written only while the delivery has not been claimed again since its attempt (same `attempts`):
//! one that comes after its lease lapsed and another replica took the delivery changes nothing
//! (that replica's outcome counts; the receiver saw the same id twice). The worker flushes the
//! queue on shutdown ([`Settler::flush`]). Ordering: outcomes are written in the order they
//! arrived; a group holds at most one per delivery (a delivery is leased to one attempt at a time).

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use switchboard_core::retry::Backoff;
use tokio::sync::{mpsc, oneshot};

use crate::metrics;
use crate::store::{AttemptLog, Settle, StoreError, WORKER_TRANSACTION};

/// Outcomes written in one transaction at most, and queued at most.
const GROUP_MAX: usize = 256;
/// How long a group whose write fails is tried again (each write included): less than what a lease
/// leaves beyond the longest attempt (10 s for a handed delivery, `worker::handoff_lease`; at
/// least 30 s for a claimed one), after which another replica may attempt the delivery again.
pub const RETRY_FOR: Duration = Duration::from_secs(8);

/// One attempt's outcome.
#[derive(Debug)]
pub struct Outcome {
    pub delivery_id: String,
    pub profile_id: String,
    /// The delivery's `attempts` as this attempt claimed it: the outcome is written only if no
    /// one has claimed it since.
    pub attempts: i32,
    pub settle: Settle,
    pub flow: Value,
    /// Each request the attempt made, in order.
    pub logs: Vec<AttemptLog>,
}

/// What the writer is given: an outcome to write, or a flush to answer once everything queued
/// before it was written (or given up on).
#[derive(Debug)]
enum Queued {
    Outcome(Outcome),
    Flush(oneshot::Sender<()>),
}

/// The handle attempts write through; the writer task ends once every handle is dropped.
#[derive(Debug, Clone)]
pub struct Settler {
    queue: mpsc::Sender<Queued>,
}

impl Settler {
    /// Starts the writer on the current runtime.
    pub fn start(pool: Pool) -> Self {
        let (queue, receiver) = mpsc::channel(GROUP_MAX);
        tokio::spawn(write_groups(pool, receiver));
        Self { queue }
    }

    /// Queues `outcome` for the writer; waits only while the queue is full.
    pub async fn settle(&self, outcome: Outcome) -> Result<(), String> {
        self.queue
            .send(Queued::Outcome(outcome))
            .await
            .map_err(|_| "the settlement writer has stopped".to_owned())
    }

    /// Returns once every outcome queued before the call has been written (or given up on).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

async fn write_groups(pool: Pool, mut receiver: mpsc::Receiver<Queued>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while receiver.recv_many(&mut group, GROUP_MAX).await > 0 {
        let mut outcomes = Vec::with_capacity(group.len());
        let mut flushes = Vec::new();
        for queued in group.drain(..) {
            match queued {
                Queued::Outcome(outcome) => outcomes.push(outcome),
                Queued::Flush(done) => flushes.push(done),
            }
        }
        if !outcomes.is_empty() {
            write_with_retries(&pool, &outcomes).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Writes a group, again with backoff while it fails, until [`RETRY_FOR`] has passed; one
/// outcome at a time when PostgreSQL refuses the group's data.
async fn write_with_retries(pool: &Pool, outcomes: &[Outcome]) {
    let since = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let remaining = RETRY_FOR.saturating_sub(since.elapsed());
        let error = match tokio::time::timeout(remaining, write(pool, outcomes)).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error,
            Err(_) => {
                tracing::warn!(
                    outcomes = outcomes.len(),
                    "Recording attempts' results took too long; left to their leases."
                );
                return;
            }
        };
        if refused_data(&error) {
            if let [one] = outcomes {
                tracing::error!(%error, delivery = %one.delivery_id, "PostgreSQL refuses the attempt's result; left to its lease.");
                return;
            }
            for one in outcomes {
                Box::pin(write_with_retries(pool, std::slice::from_ref(one))).await;
            }
            return;
        }
        let delay = backoff.next_delay();
        if since.elapsed().saturating_add(delay) >= RETRY_FOR {
            // Their leases lapse and they are attempted again, with the same ids.
            tracing::warn!(%error, outcomes = outcomes.len(), "Cannot record attempts' results; left to their leases.");
            return;
        }
        metrics::TRANSIENT_RETRIES.with_label_values(&["dispatcher", "postgres"]).inc();
        tracing::warn!(%error, ?delay, "Cannot record attempts' results; retrying.");
        tokio::time::sleep(delay).await;
    }
}

/// Whether PostgreSQL refused what was written (SQLSTATE class 22, data exception), which
/// writing it again cannot mend.
fn refused_data(error: &StoreError) -> bool {
    match error {
        StoreError::Db(error) => error.code().is_some_and(|code| code.code().starts_with("22")),
        _ => false,
    }
}

/// `text` as PostgreSQL's `text` takes it: it refuses NUL, which a CRM's answer may hold.
fn pg_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') { Cow::Owned(text.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(text) }
}

/// How each profile's failing streak ends or starts: by the last outcome of the profile that
/// said anything about its receiver (waiting for a recording does not).
fn streaks(outcomes: &[Outcome]) -> (Vec<&str>, Vec<bool>) {
    let mut last: HashMap<&str, bool> = HashMap::new();
    for o in outcomes {
        match o.settle {
            Settle::Wait { .. } => {}
            Settle::Delivered => {
                let _ = last.insert(&o.profile_id, true);
            }
            Settle::RetryAt { .. } | Settle::Failed { .. } => {
                let _ = last.insert(&o.profile_id, false);
            }
        }
    }
    let mut sorted: Vec<(&str, bool)> = last.into_iter().collect();
    // One lock order for every replica.
    sorted.sort();
    sorted.into_iter().unzip()
}

/// Writes a group in one transaction: the attempt logs, the deliveries' new state, and the
/// profiles' failing streaks.
async fn write(pool: &Pool, outcomes: &[Outcome]) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(WORKER_TRANSACTION).await?;

    let mut logs: Vec<(&str, &AttemptLog)> =
        outcomes.iter().flat_map(|o| o.logs.iter().map(|l| (o.delivery_id.as_str(), l))).collect();
    // One row per key in one statement (PostgreSQL refuses to upsert a row twice): the last wins.
    let mut keys = std::collections::HashSet::new();
    logs.reverse();
    logs.retain(|(id, l)| keys.insert((*id, l.n, l.step.as_str())));
    logs.reverse();
    if !logs.is_empty() {
        let statement = tx
            .prepare_cached(
                "INSERT INTO delivery_attempts (delivery_id, n, step, started_at, request, response_status,
                     response_body, latency_ms, error)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::timestamptz[], $5::jsonb[],
                     $6::int4[], $7::text[], $8::int8[], $9::text[])
                 ON CONFLICT (delivery_id, n, step) DO UPDATE SET started_at = EXCLUDED.started_at,
                     request = EXCLUDED.request, response_status = EXCLUDED.response_status,
                     response_body = EXCLUDED.response_body, latency_ms = EXCLUDED.latency_ms,
                     error = EXCLUDED.error",
            )
            .await?;
        let ids: Vec<&str> = logs.iter().map(|(id, _)| *id).collect();
        let ns: Vec<i32> = logs.iter().map(|(_, l)| l.n).collect();
        let steps: Vec<&str> = logs.iter().map(|(_, l)| l.step.as_str()).collect();
        let started: Vec<DateTime<Utc>> = logs.iter().map(|(_, l)| l.started_at).collect();
        let requests: Vec<&Value> = logs.iter().map(|(_, l)| &l.request).collect();
        let statuses: Vec<Option<i32>> = logs.iter().map(|(_, l)| l.status.map(i32::from)).collect();
        let bodies: Vec<Option<Cow<'_, str>>> =
            logs.iter().map(|(_, l)| l.body.as_deref().map(pg_text)).collect();
        let latencies: Vec<i64> =
            logs.iter().map(|(_, l)| i64::try_from(l.latency.as_millis()).unwrap_or(i64::MAX)).collect();
        let errors: Vec<Option<Cow<'_, str>>> =
            logs.iter().map(|(_, l)| l.error.as_deref().map(pg_text)).collect();
        tx.execute(
            &statement,
            &[&ids, &ns, &steps, &started, &requests, &statuses, &bodies, &latencies, &errors],
        )
        .await?;
    }

    let statement = tx
        .prepare_cached(
            "UPDATE deliveries d SET status = u.status, next_attempt_at = COALESCE(u.at, d.next_attempt_at),
                 lease_until = NULL, last_error = u.error, flow = u.flow, updated_at = now(),
                 waiting = u.waiting,
                 attempts = CASE WHEN u.waiting THEN d.attempts - 1 ELSE d.attempts END,
                 delivered_at = CASE WHEN u.status = 'delivered' THEN now() END
             FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[], $6::bool[],
                         $7::int4[])
                  AS u(id, status, at, error, flow, waiting, attempts)
             WHERE d.id = u.id AND d.status = 'pending' AND d.attempts = u.attempts",
        )
        .await?;
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut ats: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut errors: Vec<Option<Cow<'_, str>>> = Vec::new();
    let mut attempts = Vec::new();
    let mut flows = Vec::new();
    let mut waiting = Vec::new();
    for o in outcomes {
        let (status, at, error) = match &o.settle {
            Settle::Delivered => ("delivered", None, None),
            Settle::RetryAt { at, error } | Settle::Wait { at, error } => {
                ("pending", Some(*at), Some(error.as_str()))
            }
            Settle::Failed { error } => ("failed", None, Some(error.as_str())),
        };
        ids.push(o.delivery_id.as_str());
        statuses.push(status);
        ats.push(at);
        errors.push(error.map(pg_text));
        attempts.push(o.attempts);
        flows.push(&o.flow);
        waiting.push(matches!(o.settle, Settle::Wait { .. }));
    }
    tx.execute(&statement, &[&ids, &statuses, &ats, &errors, &flows, &waiting, &attempts]).await?;

    let (profiles, delivered) = streaks(outcomes);
    if !profiles.is_empty() {
        let statement = tx
            .prepare_cached(
                "UPDATE delivery_profiles p
                 SET failing_since = CASE WHEN u.delivered THEN NULL ELSE now() END
                 FROM unnest($1::text[], $2::bool[]) AS u(id, delivered)
                 WHERE p.id = u.id AND (p.failing_since IS NULL) = NOT u.delivered",
            )
            .await?;
        tx.execute(&statement, &[&profiles, &delivered]).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(profile: &str, settle: Settle) -> Outcome {
        Outcome {
            delivery_id: "d".into(),
            profile_id: profile.into(),
            attempts: 1,
            settle,
            flow: Value::Null,
            logs: Vec::new(),
        }
    }

    #[test]
    fn text_postgres_refuses_is_mended_and_other_text_kept() {
        assert_eq!(pg_text("ok"), Cow::Borrowed("ok"));
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
    }

    #[test]
    fn a_profiles_last_word_on_its_receiver_decides_its_streak() {
        let later = Utc::now();
        let group = [
            outcome("b", Settle::Delivered),
            outcome("a", Settle::Failed { error: "500".into() }),
            outcome("b", Settle::RetryAt { at: later, error: "timeout".into() }),
            outcome("a", Settle::Delivered),
            outcome("a", Settle::Wait { at: later, error: "no recording yet".into() }),
            outcome("c", Settle::Wait { at: later, error: "no recording yet".into() }),
        ];
        let (profiles, delivered) = streaks(&group);
        assert_eq!(profiles, ["a", "b"], "sorted; a profile only waiting says nothing");
        assert_eq!(delivered, [true, false]);
    }
}
