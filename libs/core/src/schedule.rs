//! Work kept in a PostgreSQL schedule and done by any replica: the loop that claims what is due
//! (with a lease, so that one replica at a time holds an item), runs a bounded number of attempts
//! at once, looks again when an attempt ends, when this replica scheduled something or every
//! poll interval, and on shutdown waits for the attempts in flight. An attempt cut short comes
//! back when its lease lapses, so nothing is lost, and an item may be attempted twice: attempts
//! must be idempotent. Used by the recordings stage and the dispatcher.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::retry::Backoff;

/// How often the loop runs its work's housekeeping (gauges of the backlog, say).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);
/// While most attempts are still in flight, how long the loop waits for more of them to end before
/// it claims the few free places: a claim per finished attempt made the claims, one query each,
/// the dispatcher's limit under load (BENCHMARKS.md, dispatcher).
const CLAIM_LINGER: Duration = Duration::from_millis(2);

/// One kind of scheduled work.
pub trait LeasedWork: Send + Sync + 'static {
    type Item: Send + 'static;
    type Error: Display;

    /// Claims up to `room` due items, leasing them to this replica.
    fn claim(&self, room: usize) -> impl Future<Output = Result<Vec<Self::Item>, Self::Error>> + Send;

    /// Attempts one claimed item, recording its outcome in the schedule.
    fn attempt(&self, item: Self::Item) -> impl Future<Output = ()> + Send;

    /// Runs every few seconds between claims.
    fn housekeeping(&self) -> impl Future<Output = ()> + Send;
}

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The stage label of the transient-retry metric, and the name in logs.
    pub stage: &'static str,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How often an idle loop looks for due items.
    pub poll: Duration,
    /// How long a stopping loop waits for the attempts in flight.
    pub drain_timeout: Duration,
}

/// Claims and attempts due items of `work` until `cancel` fires; `wake` makes it look at once.
pub async fn run<W: LeasedWork>(work: Arc<W>, limits: Limits, wake: Arc<Notify>, cancel: CancellationToken) {
    let fresh_backoff = || Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut attempts: JoinSet<()> = JoinSet::new();
    let mut db_backoff = fresh_backoff();
    let mut next_housekeeping = Instant::now();
    while !cancel.is_cancelled() {
        while attempts.try_join_next().is_some() {}
        if Instant::now() >= next_housekeeping {
            next_housekeeping = Instant::now() + HOUSEKEEPING_INTERVAL;
            work.housekeeping().await;
        }
        let mut room = limits.concurrency.saturating_sub(attempts.len());
        if room > 0 && room < limits.concurrency.div_ceil(4) {
            // Few places free: gather a few more (briefly) so that one claim fills them.
            let linger = tokio::time::sleep(CLAIM_LINGER);
            tokio::pin!(linger);
            while room < limits.concurrency.div_ceil(4) {
                tokio::select! {
                    _ = &mut linger => break,
                    Some(_) = attempts.join_next() => room += 1,
                }
            }
        }
        let mut full = false;
        if room > 0 {
            match work.claim(room).await {
                Ok(claimed) => {
                    db_backoff = fresh_backoff();
                    full = claimed.len() == room;
                    for item in claimed {
                        let work = work.clone();
                        attempts.spawn(async move { work.attempt(item).await });
                    }
                }
                Err(error) => {
                    metrics::TRANSIENT_RETRIES.with_label_values(&[limits.stage, "postgres"]).inc();
                    let delay = db_backoff.next_delay();
                    tracing::warn!(%error, ?delay, stage = limits.stage, "Cannot claim due work; retrying.");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            }
        }
        // A full claim may have left more due: look again at once.
        if full {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(limits.poll) => {}
        }
    }
    let drained =
        tokio::time::timeout(limits.drain_timeout, async { while attempts.join_next().await.is_some() {} })
            .await;
    if drained.is_err() {
        tracing::warn!(
            left = attempts.len(),
            stage = limits.stage,
            "Attempts cut short; their leases will lapse."
        );
        attempts.abort_all();
    }
}
