//! Settling attempts in groups: each finished attempt hands its outcome (the delivery's new state,
//! its flow, the log of its requests) to one writer task, which writes every outcome waiting at
//! that moment in one transaction and then tells each attempt it is done.
//!
//! Why: a transaction per attempt (or two: the log, then the settlement) made PostgreSQL round
//! trips the dispatcher's bottleneck once the consumer wrote its batches in a few statements
//! (BENCHMARKS.md, dispatcher). Grouping costs an attempt nothing when it is alone (the writer
//! takes what is there, it does not wait to fill a group) and saves the most under load.
//!
//! Guarantees as before: an attempt returns only after its outcome was written (or the write
//! failed, when its lease lapses and the delivery is attempted again with the same id), so the
//! schedule's drain on shutdown also flushes the outcomes, and a (profile, call)'s next delivery
//! stays behind until the earlier one is settled. Ordering: outcomes are written in the order they
//! arrived; a group holds at most one per delivery (a delivery is leased to one attempt at a time).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::store::{AttemptLog, Settle, StoreError, WORKER_TRANSACTION};

/// Outcomes written in one transaction at most.
const GROUP_MAX: usize = 256;

/// One attempt's outcome.
#[derive(Debug)]
pub struct Outcome {
    pub delivery_id: String,
    pub profile_id: String,
    pub settle: Settle,
    pub flow: Value,
    /// Each request the attempt made, in order.
    pub logs: Vec<AttemptLog>,
}

type Waiting = (Outcome, oneshot::Sender<Result<(), String>>);

/// The handle attempts write through; the writer task ends once every handle is dropped.
#[derive(Debug, Clone)]
pub struct Settler {
    queue: mpsc::Sender<Waiting>,
}

impl Settler {
    /// Starts the writer on the current runtime.
    pub fn start(pool: Pool) -> Self {
        // Attempts in flight are bounded by the schedule's concurrency, so is this queue.
        let (queue, receiver) = mpsc::channel(GROUP_MAX);
        tokio::spawn(write_groups(pool, receiver));
        Self { queue }
    }

    /// Writes `outcome` (with whatever else is waiting) and returns once it is written.
    pub async fn settle(&self, outcome: Outcome) -> Result<(), String> {
        let (done, written) = oneshot::channel();
        self.queue.send((outcome, done)).await.map_err(|_| "the settlement writer has stopped".to_owned())?;
        written.await.map_err(|_| "the settlement writer has stopped".to_owned())?
    }
}

async fn write_groups(pool: Pool, mut receiver: mpsc::Receiver<Waiting>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while receiver.recv_many(&mut group, GROUP_MAX).await > 0 {
        let (outcomes, acks): (Vec<Outcome>, Vec<_>) = group.drain(..).unzip();
        let written = write(&pool, &outcomes).await.map_err(|e| e.to_string());
        for ack in acks {
            let _ = ack.send(written.clone());
        }
    }
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
        let bodies: Vec<Option<&str>> = logs.iter().map(|(_, l)| l.body.as_deref()).collect();
        let latencies: Vec<i64> =
            logs.iter().map(|(_, l)| i64::try_from(l.latency.as_millis()).unwrap_or(i64::MAX)).collect();
        let errors: Vec<Option<&str>> = logs.iter().map(|(_, l)| l.error.as_deref()).collect();
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
             FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[], $6::bool[])
                  AS u(id, status, at, error, flow, waiting)
             WHERE d.id = u.id AND d.status = 'pending'",
        )
        .await?;
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut ats: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut errors: Vec<Option<&str>> = Vec::new();
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
        errors.push(error);
        flows.push(&o.flow);
        waiting.push(matches!(o.settle, Settle::Wait { .. }));
    }
    tx.execute(&statement, &[&ids, &statuses, &ats, &errors, &flows, &waiting]).await?;

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
            settle,
            flow: Value::Null,
            logs: Vec::new(),
        }
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
