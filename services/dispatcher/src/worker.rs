//! The attempt worker: claims due deliveries from PostgreSQL, renders and signs each request with
//! the library, sends it past the SSRF guard (on kept-alive connections to the checked addresses),
//! and hands the attempt's log and the library's verdict to the settler, which writes the outcomes
//! of attempts that end together in one transaction (`settle`) while the attempt's place goes to
//! the next delivery.
//!
//! Inputs: the deliveries this replica's consumer inserted claimed (handed over in memory, taken
//! first), then the `deliveries` table (due, pending, of enabled profiles, leased with `FOR
//! UPDATE SKIP LOCKED` so that any replica can work any delivery); the profiles. Outputs: HTTP requests;
//! rows of `delivery_attempts`; each delivery settled delivered, pending again at a later time,
//! or failed; a profile disabled on 410 Gone (or after failing for `disable_after_hours`).
//!
//! Delivery guarantee: at least once. An attempt is counted when claimed; a replica that dies
//! mid-attempt leaves the lease to lapse and the delivery is attempted again, with the same
//! `webhook-id` (the delivery id), which is the receiver's idempotency key. Ordering: a delivery is
//! claimed only once no earlier pending delivery of its profile and call exists; at most
//! `max_concurrency` requests of one profile (and `dispatcher.concurrency` in all) run at once,
//! and at most `rate_limit` start per window on one replica.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::DispatcherSettings;
use crate::metrics;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::{Value, json};
use switchboard_core::model::{CallEvent, CallRecord};
use switchboard_core::schedule;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::cache::ProfileCache;
use crate::flow::{DEFAULT_WAIT_LIMIT, FlowState, Next};
use crate::profile::Profile;
use crate::request::{RenderedRequest, render_step};
use crate::retry::{self, Attempt, Outcome, RetryPolicy, Verdict};
use crate::seal::Sealer;
use crate::send::{self, Answer, SendError};
use crate::settle::{self, Settler};
use crate::ssrf::EgressPolicy;
use crate::store::{self, AttemptLog, Claimed, Settle, State};
use crate::subject_json::SubjectJson;
use crate::tokens::{TokenContext, Tokens};
use crate::values::CallValues;

/// Deliveries handed over by the consumer that may wait, per place of `dispatcher.concurrency`.
const HANDOFF_PER_PLACE: usize = 32;
/// How long a handed delivery may wait for the worker; one that waited longer goes back to the
/// table rather than risk its short lease lapsing mid-attempt.
const HANDOFF_WAIT: Duration = Duration::from_secs(10);
/// What a handed delivery's lease leaves beyond its wait and its longest attempt: for the
/// outcome's write.
const HANDOFF_MARGIN: Duration = Duration::from_secs(10);

/// The timeout of each request of `profile`'s attempts: its own, else the worker's.
fn timeout_of(profile: &Profile, attempt_timeout: Duration) -> Duration {
    profile.retry.as_ref().and_then(|r| r.timeout_seconds).map_or(attempt_timeout, Duration::from_secs)
}

/// The longest an attempt of `profile` can take: each step's request at its timeout, and with an
/// OAuth client per step a wait for another attempt's token trade, a trade, the request, and the
/// same again when the CRM turns the token away.
fn longest_attempt(profile: &Profile, attempt_timeout: Duration) -> Duration {
    let per_step: u32 = if profile.oauth.is_some() { 6 } else { 1 };
    let requests = u32::try_from(profile.steps.len()).unwrap_or(u32::MAX).saturating_mul(per_step);
    timeout_of(profile, attempt_timeout).saturating_mul(requests)
}

/// The lease of a delivery the consumer inserted claimed and handed over: its wait for the worker,
/// its longest attempt and a margin. Made to measure (where the table's [`Worker::lease`] covers
/// every profile) because a replica killed with handed deliveries (not attempted yet, or not
/// settled) leaves them to their lease: 35 s for a one-step profile at the default 15 s timeout.
pub fn handoff_lease(profile: &Profile, attempt_timeout: Duration) -> Duration {
    HANDOFF_WAIT.saturating_add(longest_attempt(profile, attempt_timeout)).saturating_add(HANDOFF_MARGIN)
}

/// A delivery the consumer inserted claimed, and when it handed it over.
#[derive(Debug)]
pub struct Handed {
    pub claimed: Claimed,
    pub at: Instant,
}

/// How long a step waiting for the call's recording waits before it is looked at again.
const WAIT_RECHECK: Duration = Duration::from_secs(60);
/// How much of an answer the attempt log keeps.
const LOGGED_BODY: usize = 4096;

#[derive(Debug)]
pub struct Worker {
    pub pool: Pool,
    pub profiles: ProfileCache,
    pub policy: EgressPolicy,
    pub settings: DispatcherSettings,
    pub sealer: Arc<Sealer>,
    pub drain_timeout: Duration,
    /// Rung by this replica's consumer when it scheduled deliveries.
    pub scheduled: Arc<Notify>,
    /// Writes the attempts' outcomes, in groups.
    settler: Settler,
    /// Kept-alive connections to the profiles' targets.
    connections: send::Connections,
    /// OAuth access tokens of the profiles that have a client.
    tokens: Tokens,
    /// Deliveries this replica's consumer inserted claimed, to attempt before looking in the
    /// table (which saves a claim query and a rewrite of the row per delivery), with when.
    handoff: mpsc::Sender<Handed>,
    handed: Mutex<mpsc::Receiver<Handed>>,
    /// Requests in flight per profile.
    in_flight: Mutex<HashMap<String, usize>>,
    /// When this replica started each profile's recent attempts, for its `rate_limit` (per
    /// replica: replicas share the deliveries, so the receiver sees at most replicas × the limit).
    started: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// The call values of a stored subject; with `location` when `locate` is set.
pub fn subject_values(kind: &str, subject: &SubjectJson, locate: bool) -> Result<CallValues, String> {
    let values = match kind {
        "event" => {
            serde_json::from_str::<CallEvent>(subject.get()).map(|e| CallValues::from_event_unlocated(&e))
        }
        _ => serde_json::from_str::<CallRecord>(subject.get()).map(|r| CallValues::from_record_unlocated(&r)),
    }
    .map_err(|e| format!("stored {kind} unreadable: {e}"))?;
    Ok(if locate { values.located() } else { values })
}

/// What the attempt log keeps of a request: no query (it may carry a token), no secret from the
/// path, no header values.
pub fn request_summary(request: &RenderedRequest) -> Value {
    let url = &request.shown_url;
    json!({
        "method": request.method.as_str(),
        "url": url.split_once('?').map_or(url.as_str(), |(path, _)| path),
        "headers": request.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        "body_bytes": request.body.len(),
        "webhook_id": request.headers.get("webhook-id").and_then(|v| v.to_str().ok()),
    })
}

/// Renders a step and signs it with the profile's secrets, as `message_id`.
pub fn prepare(
    profile: &Profile,
    step: &crate::profile::Step,
    values: &CallValues,
    flow: &FlowState,
    message_id: &str,
) -> Result<RenderedRequest, String> {
    let mut request = render_step(step, values, &flow.extracted).map_err(|e| e.to_string())?;
    let keys = profile.signing_keys();
    if !keys.is_empty() {
        request.sign(message_id, Utc::now().timestamp(), &keys).map_err(|e| e.to_string())?;
    }
    Ok(request)
}

impl Worker {
    pub fn new(
        pool: Pool,
        profiles: ProfileCache,
        policy: EgressPolicy,
        settings: DispatcherSettings,
        sealer: Arc<Sealer>,
        drain_timeout: Duration,
        scheduled: Arc<Notify>,
    ) -> Self {
        // Room for a few of the consumer's batches: with less, a burst is mostly claimed from the
        // table after all (BENCHMARKS.md, dispatcher).
        let (handoff, handed) = mpsc::channel(settings.concurrency.max(1).saturating_mul(HANDOFF_PER_PLACE));
        Self {
            handoff,
            handed: Mutex::new(handed),
            settler: Settler::start(pool.clone()),
            connections: send::Connections::default(),
            tokens: Tokens::default(),
            pool,
            profiles,
            policy,
            settings,
            sealer,
            drain_timeout,
            scheduled,
            in_flight: Mutex::new(HashMap::new()),
            started: Mutex::new(HashMap::new()),
        }
    }

    /// Where the consumer hands the deliveries it inserted claimed.
    pub fn handoff(&self) -> mpsc::Sender<Handed> {
        self.handoff.clone()
    }

    /// Takes up to `room` of the deliveries handed over, and those that waited so long that their
    /// lease may lapse before their attempt ends (given back to the table: another replica may
    /// then claim them).
    fn take_handed(&self, room: usize) -> (Vec<Claimed>, Vec<Claimed>) {
        let (mut taken, mut stale) = (Vec::new(), Vec::new());
        if let Ok(mut handed) = self.handed.lock() {
            while taken.len() < room {
                match handed.try_recv() {
                    Ok(Handed { claimed, at }) if at.elapsed() < HANDOFF_WAIT => taken.push(claimed),
                    Ok(Handed { claimed, .. }) => stale.push(claimed),
                    Err(_) => break,
                }
            }
        }
        (taken, stale)
    }

    /// The lease of the deliveries claimed from the table: the longest attempt of any profile
    /// (three steps at the longest timeout at least, as before profiles could say more), and 30 s
    /// for the bookkeeping.
    fn lease(&self) -> Duration {
        let timeout = Duration::from_millis(self.settings.attempt_timeout_ms);
        let longest = self.profiles.all().iter().map(|p| longest_attempt(&p.profile, timeout)).max();
        timeout
            .max(Duration::from_secs(120))
            .saturating_mul(3)
            .max(longest.unwrap_or_default())
            .saturating_add(Duration::from_secs(30))
    }

    fn limit_of(profile: &Profile) -> usize {
        profile.max_concurrency.map_or(usize::MAX, |n| usize::try_from(n.max(1)).unwrap_or(usize::MAX))
    }

    /// Whether the profile has used its `rate_limit` within the last window (forgetting older
    /// starts), and, when it has not and `take` is set, counts one more start.
    fn rate_limited(&self, profile: &Profile, id: &str, take: bool) -> bool {
        let Some(limit) = profile.rate_limit else { return false };
        let Ok(mut started) = self.started.lock() else { return true };
        let window = Duration::from_secs(u64::from(limit.per_seconds.max(1)));
        let recent = started.entry(id.to_owned()).or_default();
        while recent.front().is_some_and(|t| t.elapsed() >= window) {
            recent.pop_front();
        }
        let limited = recent.len() >= usize::try_from(limit.requests.max(1)).unwrap_or(usize::MAX);
        if !limited && take {
            recent.push_back(Instant::now());
        }
        limited
    }

    /// Profiles at their concurrency or rate limit: claims skip them, so that their due
    /// deliveries wait in the table, not in this process.
    fn full(&self) -> Vec<String> {
        let in_flight = self.in_flight.lock().map(|m| m.clone()).unwrap_or_default();
        self.profiles
            .all()
            .iter()
            .filter(|p| {
                in_flight.get(&p.id).is_some_and(|n| *n >= Self::limit_of(&p.profile))
                    || self.rate_limited(&p.profile, &p.id, false)
            })
            .map(|p| p.id.clone())
            .collect()
    }

    /// Takes a slot of the profile, or `false` when it is at its concurrency or rate limit.
    fn take_slot(&self, profile: &Profile, id: &str) -> bool {
        let Ok(mut in_flight) = self.in_flight.lock() else { return false };
        let count = in_flight.entry(id.to_owned()).or_default();
        if *count >= Self::limit_of(profile) || self.rate_limited(profile, id, true) {
            return false;
        }
        *count = count.saturating_add(1);
        true
    }

    fn release_slot(&self, id: &str) {
        if let Ok(mut in_flight) = self.in_flight.lock()
            && let Some(count) = in_flight.get_mut(id)
        {
            *count = count.saturating_sub(1);
        }
    }

    /// Claims and attempts due deliveries until `cancel` fires (`schedule::run`); attempts cut
    /// short by a shutdown come back when their lease lapses.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let limits = schedule::Limits {
            stage: "dispatcher",
            concurrency: self.settings.concurrency,
            poll: Duration::from_millis(self.settings.poll_interval_ms),
            drain_timeout: self.drain_timeout,
        };
        let wake = self.scheduled.clone();
        schedule::run(self.clone(), limits, wake, cancel).await;
        // The attempts have ended, but their outcomes may still be queued: written before exit
        // (each group gives up after `RETRY_FOR`, which bounds the wait).
        let flush = self.drain_timeout.min(settle::RETRY_FOR.saturating_add(Duration::from_secs(2)));
        if tokio::time::timeout(flush, self.settler.flush()).await.is_err() {
            tracing::warn!("Attempts' results not all recorded in time; their leases will lapse.");
        }
        // Handed over but not attempted: back to the table at once rather than when the lease lapses.
        let (left, stale) = self.take_handed(usize::MAX);
        let ids: Vec<&str> = left.iter().chain(&stale).map(|c| c.id.as_str()).collect();
        let _ = store::unclaim_all(&self.pool, &ids).await;
    }

    /// Counts the backlog for the metrics and disables profiles that have failed for too long.
    async fn housekeeping(&self) {
        if let Ok((pending, oldest)) = store::backlog(&self.pool).await {
            metrics::DISPATCHER_PENDING.set(pending);
            metrics::DISPATCHER_OLDEST_PENDING.set(oldest);
        }
        if self.settings.disable_after_hours > 0 {
            let after = Duration::from_secs(self.settings.disable_after_hours.saturating_mul(3600));
            match store::disable_failing(&self.pool, after).await {
                Ok(disabled) => {
                    for id in disabled {
                        tracing::warn!(profile = %id, hours = self.settings.disable_after_hours,
                            "Profile disabled: every delivery failed for too long.");
                    }
                }
                Err(error) => tracing::warn!(%error, "Cannot check for failing profiles."),
            }
        }
    }

    async fn attempt(&self, claimed: Claimed) {
        let Some(stored) = self.profiles.get(&claimed.profile_id).filter(|p| p.state == State::Enabled)
        else {
            // Paused or disabled since the claim (this replica's cache lags): hand it back.
            let _ = store::unclaim(&self.pool, &claimed.id).await;
            return;
        };
        if !self.take_slot(&stored.profile, &stored.id) {
            let _ = store::unclaim(&self.pool, &claimed.id).await;
            return;
        }
        self.attempt_with(&claimed, &stored.profile, stored.names_location).await;
        self.release_slot(&stored.id);
    }

    async fn attempt_with(&self, claimed: &Claimed, profile: &Profile, locate: bool) {
        let mut flow: FlowState = serde_json::from_value(claimed.flow.clone()).unwrap_or_default();
        let policy = profile.retry.clone().unwrap_or_default();
        let timeout = timeout_of(profile, Duration::from_millis(self.settings.attempt_timeout_ms));
        let number =
            usize::try_from(claimed.attempts.saturating_sub(claimed.schedule_base)).unwrap_or(1).max(1);
        let mut logs = Vec::new();
        let settle = match subject_values(&claimed.subject_kind, &claimed.subject, locate) {
            Ok(values) => {
                let values = values.with_crm_user(&profile.users);
                self.run_flow(claimed, profile, &policy, timeout, number, &values, &mut flow, &mut logs).await
            }
            Err(error) => Settle::Failed { error },
        };
        let flow_json = serde_json::to_value(&flow).unwrap_or(Value::Null);
        let result = match &settle {
            Settle::Delivered => "delivered",
            Settle::RetryAt { .. } => "retry",
            Settle::Wait { .. } => "waiting",
            Settle::Failed { .. } => "failed",
        };
        if result != "waiting" {
            metrics::DISPATCHER_DELIVERIES.with_label_values(&[result]).inc();
        }
        match &settle {
            Settle::Delivered => {
                tracing::info!(delivery = %claimed.id, profile = %claimed.profile_id, attempt = claimed.attempts, "Delivered.");
            }
            Settle::Wait { at, error } => {
                tracing::debug!(delivery = %claimed.id, profile = %claimed.profile_id, %at, %error, "Delivery waits.");
            }
            Settle::RetryAt { at, error } => {
                tracing::info!(delivery = %claimed.id, profile = %claimed.profile_id, attempt = claimed.attempts,
                    %at, %error, "Delivery attempt failed; trying again later.");
            }
            Settle::Failed { error } => {
                tracing::warn!(delivery = %claimed.id, profile = %claimed.profile_id, attempt = claimed.attempts,
                    %error, "Delivery failed for good.");
            }
        }
        let outcome = settle::Outcome {
            delivery_id: claimed.id.clone(),
            profile_id: claimed.profile_id.clone(),
            attempts: claimed.attempts,
            settle,
            flow: flow_json,
            logs,
        };
        // Queued, not yet written: the delivery stays leased (and its call's next one behind it)
        // until the settler writes it.
        if let Err(error) = self.settler.settle(outcome).await {
            // The lease lapses and the delivery is attempted again, with the same id.
            tracing::warn!(%error, delivery = %claimed.id, "Cannot record the attempt's result.");
        }
    }

    /// Runs the remaining steps in order; the first that fails decides what follows.
    #[allow(clippy::too_many_arguments)]
    async fn run_flow(
        &self,
        claimed: &Claimed,
        profile: &Profile,
        policy: &RetryPolicy,
        timeout: Duration,
        number: usize,
        values: &CallValues,
        flow: &mut FlowState,
        logs: &mut Vec<AttemptLog>,
    ) -> Settle {
        loop {
            let step = match flow.next(profile, values, claimed.created_at, Utc::now(), DEFAULT_WAIT_LIMIT) {
                Next::Finished => return Settle::Delivered,
                Next::Skip(step) => {
                    flow.skip(step);
                    continue;
                }
                Next::Wait { step, .. } => {
                    let at = Utc::now()
                        .checked_add_signed(chrono::Duration::from_std(WAIT_RECHECK).unwrap_or_default())
                        .unwrap_or(DateTime::<Utc>::MAX_UTC);
                    return Settle::Wait {
                        at,
                        error: format!("step {:?} waits for the recording", step.name),
                    };
                }
                Next::Run(step) => step,
            };
            // One step: the delivery id itself, as Standard Webhooks' idempotency key; several:
            // each step its own message.
            let message_id = if profile.steps.len() == 1 {
                claimed.id.clone()
            } else {
                crate::step_message_id(&claimed.id, &step.name)
            };
            let started_at = Utc::now();
            let prepared = match prepare(profile, step, values, flow, &message_id) {
                Ok(request) => request,
                Err(error) => {
                    let error = format!("step {:?} cannot be rendered: {error}", step.name);
                    logs.push(unsent_log(claimed, &step.name, started_at, Duration::ZERO, &error));
                    return Settle::Failed { error };
                }
            };
            let (request, sent) =
                match self.send_authorized(&claimed.profile_id, profile, prepared, timeout).await {
                    Ok(sent) => sent,
                    Err(error) => {
                        let latency =
                            Utc::now().signed_duration_since(started_at).to_std().unwrap_or_default();
                        logs.push(unsent_log(claimed, &step.name, started_at, latency, &error));
                        let failed = Outcome::Failed { reason: error, not_before: None };
                        return self.verdict(claimed, policy, number, failed).await;
                    }
                };
            let latency = Utc::now().signed_duration_since(started_at).to_std().unwrap_or_default();
            let summary = request_summary(&request);
            let (outcome, error) = match &sent {
                Ok(answer) => {
                    let attempt = attempt_of(answer);
                    (retry::classify(&attempt, timeout, SystemTime::now()), None)
                }
                Err(SendError::Timeout) => {
                    (retry::classify(&Attempt::Timeout, timeout, SystemTime::now()), None)
                }
                Err(error) => {
                    let text = error.to_string();
                    (retry::classify(&Attempt::Error(&text), timeout, SystemTime::now()), Some(text))
                }
            };
            let result = if outcome == Outcome::Delivered { "delivered" } else { "failed" };
            metrics::DISPATCHER_ATTEMPT_SECONDS.with_label_values(&[result]).observe(latency.as_secs_f64());
            let error = match (&outcome, error) {
                (_, Some(error)) => Some(error),
                (Outcome::Delivered, None) => None,
                (Outcome::Failed { reason, .. } | Outcome::Aborted { reason }, None) => Some(reason.clone()),
                (Outcome::Gone, None) => Some("HTTP 410 Gone".to_owned()),
            };
            let answer = sent.as_ref().ok();
            logs.push(attempt_log(
                claimed,
                &step.name,
                started_at,
                summary,
                answer,
                latency,
                error.as_deref(),
            ));
            if outcome == Outcome::Delivered {
                let body = answer.map(|a| a.body.as_ref()).unwrap_or_default();
                match flow.complete(step, body) {
                    Ok(()) => continue,
                    Err(extract) => {
                        let reason = extract.to_string();
                        return self
                            .verdict(claimed, policy, number, Outcome::Failed { reason, not_before: None })
                            .await;
                    }
                }
            }
            return self.verdict(claimed, policy, number, outcome).await;
        }
    }

    /// Sends `request`, with the profile's OAuth access token when it has a client. A token the CRM
    /// turns away (expired early, revoked) is traded for a new one and the request sent once
    /// more. Returns the request as sent and its answer, or why no token could be had.
    async fn send_authorized(
        &self,
        profile_id: &str,
        profile: &Profile,
        request: RenderedRequest,
        timeout: Duration,
    ) -> Result<(RenderedRequest, Result<Answer, SendError>), String> {
        let cap = self.settings.max_response_bytes;
        let Some(oauth) = &profile.oauth else {
            let sent = send::send(&self.policy, &self.connections, &request, timeout, cap).await;
            return Ok((request, sent));
        };
        let cx = TokenContext {
            pool: &self.pool,
            sealer: &self.sealer,
            policy: &self.policy,
            connections: &self.connections,
            timeout,
        };
        self.tokens.send(&cx, profile_id, oauth, &request, cap).await
    }

    async fn verdict(
        &self,
        claimed: &Claimed,
        policy: &RetryPolicy,
        number: usize,
        outcome: Outcome,
    ) -> Settle {
        let reason = match &outcome {
            Outcome::Failed { reason, .. } | Outcome::Aborted { reason } => reason.clone(),
            Outcome::Gone => "HTTP 410 Gone".to_owned(),
            Outcome::Delivered => String::new(),
        };
        match retry::next(policy, number, outcome, Utc::now(), self.sealer.random_u32()) {
            Verdict::Delivered => Settle::Delivered,
            Verdict::RetryAt(at) => Settle::RetryAt { at, error: reason },
            Verdict::GiveUp { reason } => Settle::Failed { error: reason },
            Verdict::DisableProfile => {
                let why = format!("the receiver answered 410 Gone to delivery {}", claimed.id);
                match store::set_state(&self.pool, &claimed.profile_id, State::Disabled, Some(&why)).await {
                    Ok(_) => {
                        metrics::DISPATCHER_DELIVERIES.with_label_values(&["gone"]).inc();
                        tracing::warn!(profile = %claimed.profile_id, delivery = %claimed.id,
                            "Profile disabled: the receiver answered 410 Gone.");
                    }
                    Err(error) => {
                        tracing::warn!(%error, profile = %claimed.profile_id, "Cannot disable the profile.")
                    }
                }
                // Reloaded at once, so that this replica schedules the next records as discarded.
                let _ = self.profiles.reload(&self.pool, &self.sealer).await;
                Settle::Failed { error: "HTTP 410 Gone: the profile is disabled".into() }
            }
        }
    }
}

/// What the attempt log keeps of one request.
#[allow(clippy::too_many_arguments)]
fn attempt_log(
    claimed: &Claimed,
    step: &str,
    started_at: chrono::DateTime<Utc>,
    request: Value,
    answer: Option<&Answer>,
    latency: Duration,
    error: Option<&str>,
) -> AttemptLog {
    AttemptLog {
        n: claimed.attempts,
        step: step.to_owned(),
        started_at,
        request,
        status: answer.map(|a| a.status),
        body: answer.map(|a| {
            let end = a.body.len().min(LOGGED_BODY);
            String::from_utf8_lossy(a.body.get(..end).unwrap_or_default()).into_owned()
        }),
        latency,
        error: error.map(str::to_owned),
    }
}

/// The log of a step that sent nothing (it could not be rendered, or no access token was had).
fn unsent_log(
    claimed: &Claimed,
    step: &str,
    started_at: chrono::DateTime<Utc>,
    latency: Duration,
    error: &str,
) -> AttemptLog {
    attempt_log(claimed, step, started_at, json!({}), None, latency, Some(error))
}

/// The library's view of an answer.
pub fn attempt_of(answer: &Answer) -> Attempt<'_> {
    let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok());
    Attempt::Response {
        status: answer.status,
        retry_after: header("retry-after"),
        delivery_control: header("webhook-delivery"),
        elapsed: answer.elapsed,
    }
}

impl schedule::LeasedWork for Worker {
    type Item = Claimed;
    type Error = store::StoreError;

    async fn claim(&self, room: usize) -> Result<Vec<Claimed>, store::StoreError> {
        let (mut claimed, stale) = self.take_handed(room);
        let late: Vec<&str> = stale.iter().map(|c| c.id.as_str()).collect();
        let _ = store::unclaim_all(&self.pool, &late).await;
        let room = room.saturating_sub(claimed.len());
        if room > 0 {
            match store::claim_due(&self.pool, room, self.lease(), &self.full()).await {
                Ok(due) => claimed.extend(due),
                // What was handed over is attempted all the same.
                Err(error) if !claimed.is_empty() => {
                    tracing::warn!(%error, "Cannot claim due deliveries; attempting those handed over.")
                }
                Err(error) => return Err(error),
            }
        }
        Ok(claimed)
    }

    async fn attempt(&self, item: Claimed) {
        Worker::attempt(self, item).await;
    }

    async fn housekeeping(&self) {
        Worker::housekeeping(self).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn profile(steps: usize, timeout_seconds: Option<u64>, oauth: bool) -> Profile {
        let step = |n: usize| json!({"name": format!("s{n}"), "request": {"method": "POST", "url": "https://crm.example.com/calls"}});
        let mut spec = json!({"name": "p", "trigger": "call_record_completed", "steps": (0..steps).map(step).collect::<Vec<_>>()});
        if let Some(seconds) = timeout_seconds {
            spec["retry"] = json!({"schedule_seconds": [0], "timeout_seconds": seconds});
        }
        if oauth {
            spec["oauth"] = json!({"token_url": "https://crm.example.com/token", "client_id": "c",
                "client_secret": "s", "refresh_token": "r", "grant_request": "post_form", "send_as": "bearer"});
        }
        Profile::from_json(&spec.to_string()).expect("valid")
    }

    #[test]
    fn only_a_profile_that_names_the_location_gets_it() {
        let record = SubjectJson::of(&crate::fixtures::answered_inbound());
        let plain = profile(1, None, false);
        let mut spec: Value = serde_json::from_str(&plain.to_json()).expect("json");
        spec["steps"][0]["request"]["json_body"] = json!("{\"country\": {{ location | tojson }}}");
        let locating = Profile::from_json(&spec.to_string()).expect("valid");
        assert!(!plain.names_location() && locating.names_location());
        let values = |p: &Profile| subject_values("record", &record, p.names_location()).expect("readable");
        assert_eq!(values(&locating).location.as_deref(), Some("GB"));
        assert_eq!(values(&plain).location, None);
        let unreadable = subject_values("event", &SubjectJson::of(&json!({"x": 1})), true);
        assert!(unreadable.is_err_and(|e| e.starts_with("stored event unreadable")));
    }

    #[test]
    fn a_handed_deliverys_lease_covers_its_wait_its_longest_attempt_and_a_margin() {
        let default = Duration::from_secs(15);
        let lease = |p: &Profile| handoff_lease(p, default).as_secs();
        assert_eq!(lease(&profile(1, None, false)), 10 + 15 + 10, "the documented 35 s");
        assert_eq!(lease(&profile(3, None, false)), 10 + 3 * 15 + 10, "every step");
        assert_eq!(lease(&profile(1, Some(60), false)), 10 + 60 + 10, "the profile's own timeout");
        assert_eq!(lease(&profile(2, Some(2), true)), 10 + 2 * 6 * 2 + 10, "token trades and a resend");
    }
}
