//! The dispatcher's tables (migration 0009): profiles, deliveries (the retry schedule) and the
//! attempt log.
//!
//! Inputs: what the consumer, the worker and the API ask for. Outputs: rows. Every write is
//! idempotent where a retry can repeat it: deliveries are inserted `ON CONFLICT DO NOTHING` on
//! their derived id, settling an attempt only changes a row no one claimed since, and an
//! attempt's log row is keyed by (delivery, attempt number). Ordering: a delivery is claimed only
//! when no earlier pending delivery of the same profile and call exists (`seq` order).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde_json::{Map, Value, json};
use tokio_postgres::{self, Row};

use crate::profile::{Profile, ProfileState};
use crate::seal::{SealError, Sealer};
use crate::subject_json::SubjectJson;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("PostgreSQL: {}", switchboard_core::pg::error_chain(.0))]
    Db(#[source] tokio_postgres::Error),
    #[error("PostgreSQL pool: {0}")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("profile {id}: {source}")]
    Seal {
        id: String,
        #[source]
        source: SealError,
    },
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Db(error)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(error)
    }
}

/// A profile's state as stored (the column, which the API and the 410 rule change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Enabled,
    Paused,
    Disabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Enabled => "enabled",
            State::Paused => "paused",
            State::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> State {
        match text {
            "enabled" => State::Enabled,
            "paused" => State::Paused,
            _ => State::Disabled,
        }
    }
}

/// A profile as the consumer and the worker use it.
#[derive(Debug, Clone)]
pub struct StoredProfile {
    pub id: String,
    pub profile: Profile,
    pub state: State,
    /// [`Profile::names_location`], worked out once rather than on every attempt.
    pub names_location: bool,
}

impl StoredProfile {
    pub fn new(id: String, profile: Profile, state: State) -> Self {
        let names_location = profile.names_location();
        Self { id, profile, state, names_location }
    }
}

/// The spec with every secret replaced by `***`, for the `spec` column and the API.
pub fn redacted(profile: &Profile) -> Value {
    let mut spec = serde_json::to_value(profile.spec()).unwrap_or(Value::Null);
    if let Some(secrets) = spec.get_mut("signing_secrets").and_then(Value::as_array_mut) {
        secrets.iter_mut().for_each(|s| *s = json!("***"));
    }
    if let Some(oauth) = spec.get_mut("oauth").and_then(Value::as_object_mut) {
        for field in ["client_secret", "refresh_token"] {
            if let Some(secret) = oauth.get_mut(field) {
                *secret = json!("***");
            }
        }
    }
    if let Some(steps) = spec.get_mut("steps").and_then(Value::as_array_mut) {
        for step in steps {
            if let Some(secret) = step.get_mut("request").and_then(|r| r.get_mut("url_secret")) {
                *secret = json!("***");
            }
            for field in ["headers", "url_params", "form_params"] {
                let params =
                    step.get_mut("request").and_then(|r| r.get_mut(field)).and_then(Value::as_array_mut);
                for param in params.into_iter().flatten() {
                    if let Some(secret) = param.get_mut("secret") {
                        *secret = json!("***");
                    }
                }
            }
        }
    }
    spec
}

/// Creates or replaces profile `id`; its state is the spec's. Returns whether it was created.
pub async fn put_profile(
    pool: &Pool,
    sealer: &Sealer,
    id: &str,
    profile: &Profile,
) -> Result<bool, StoreError> {
    let sealed = sealer
        .seal(profile.to_json().as_bytes())
        .map_err(|source| StoreError::Seal { id: id.to_owned(), source })?;
    let (state, reason) = match &profile.state {
        ProfileState::Enabled => (State::Enabled, None),
        ProfileState::Paused => (State::Paused, None),
        ProfileState::Disabled { reason } => (State::Disabled, reason.clone()),
    };
    let client = pool.get().await?;
    let row = client
        .query_one(
            "INSERT INTO delivery_profiles (id, name, spec, sealed, state, disabled_reason)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET name = $2, spec = $3, sealed = $4, state = $5,
                 disabled_reason = $6, failing_since = NULL, updated_at = now()
             RETURNING (xmax = 0) AS created",
            &[&id, &profile.name, &redacted(profile), &sealed, &state.as_str(), &reason],
        )
        .await?;
    Ok(row.get("created"))
}

/// Every profile, opened. A profile that cannot be opened (another key) is logged and left out.
pub async fn load_profiles(pool: &Pool, sealer: &Sealer) -> Result<Vec<StoredProfile>, StoreError> {
    let client = pool.get().await?;
    let rows = client.query("SELECT id, sealed, state FROM delivery_profiles ORDER BY id", &[]).await?;
    let mut profiles = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get("id");
        let sealed: Vec<u8> = row.get("sealed");
        let opened = sealer
            .open(&sealed)
            .map_err(|e| e.to_string())
            .and_then(|plain| String::from_utf8(plain).map_err(|e| e.to_string()))
            .and_then(|json| Profile::from_json(&json).map_err(|e| e.to_string()));
        match opened {
            Ok(profile) => profiles.push(StoredProfile::new(id, profile, State::parse(row.get("state")))),
            Err(error) => {
                tracing::warn!(profile = %id, %error, "Cannot open a stored profile; it is skipped.")
            }
        }
    }
    Ok(profiles)
}

fn profile_json(row: &Row) -> Value {
    let created: DateTime<Utc> = row.get("created_at");
    let updated: DateTime<Utc> = row.get("updated_at");
    let failing: Option<DateTime<Utc>> = row.get("failing_since");
    json!({
        "id": row.get::<_, String>("id"),
        "name": row.get::<_, String>("name"),
        "state": row.get::<_, String>("state"),
        "disabled_reason": row.get::<_, Option<String>>("disabled_reason"),
        "failing_since": failing,
        "spec": row.get::<_, Value>("spec"),
        "created_at": created,
        "updated_at": updated,
    })
}

const PROFILE_COLUMNS: &str = "id, name, state, disabled_reason, failing_since, spec, created_at, updated_at";

pub async fn get_profile(pool: &Pool, id: &str) -> Result<Option<Value>, StoreError> {
    let client = pool.get().await?;
    let sql = format!("SELECT {PROFILE_COLUMNS} FROM delivery_profiles WHERE id = $1");
    Ok(client.query_opt(&sql, &[&id]).await?.map(|row| profile_json(&row)))
}

pub async fn list_profiles(pool: &Pool) -> Result<Vec<Value>, StoreError> {
    let client = pool.get().await?;
    let sql = format!("SELECT {PROFILE_COLUMNS} FROM delivery_profiles ORDER BY id");
    Ok(client.query(&sql, &[]).await?.iter().map(profile_json).collect())
}

/// Deletes the profile and (cascading) its deliveries and their attempts.
pub async fn delete_profile(pool: &Pool, id: &str) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    Ok(client.execute("DELETE FROM delivery_profiles WHERE id = $1", &[&id]).await? > 0)
}

/// Sets a profile's state; `reason` is kept for a disabled one. Returns whether it exists.
pub async fn set_state(
    pool: &Pool,
    id: &str,
    state: State,
    reason: Option<&str>,
) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let changed = client
        .execute(
            "UPDATE delivery_profiles SET state = $2, disabled_reason = $3,
                 failing_since = CASE WHEN $2 = 'enabled' THEN NULL ELSE failing_since END, updated_at = now()
             WHERE id = $1",
            &[&id, &state.as_str(), &reason],
        )
        .await?;
    Ok(changed > 0)
}

/// Profiles by state, for `switchboard_dispatcher_profiles`.
pub async fn profile_counts(pool: &Pool) -> Result<HashMap<String, i64>, StoreError> {
    let client = pool.get().await?;
    let rows = client.query("SELECT state, count(*) AS n FROM delivery_profiles GROUP BY state", &[]).await?;
    Ok(rows.iter().map(|r| (r.get("state"), r.get("n"))).collect())
}

/// A delivery to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub id: String,
    pub profile_id: String,
    pub source_id: String,
    pub call_id: String,
    pub subject_id: String,
    pub trigger: String,
    pub subject_kind: &'static str,
    pub subject: SubjectJson,
    /// `pending` for an enabled profile, `discarded` otherwise.
    pub status: &'static str,
    /// Inserted claimed by this replica for this long, for its worker to attempt at once
    /// (`consume`).
    pub lease: Option<std::time::Duration>,
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub profile_id: String,
    pub subject_kind: String,
    pub subject: SubjectJson,
    /// Attempts made, this one included.
    pub attempts: i32,
    /// Attempts made before the delivery was last queued (a replay): this attempt is number
    /// `attempts - schedule_base` of its schedule.
    pub schedule_base: i32,
    pub flow: Value,
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries of enabled profiles not in `full` (profiles at their
/// concurrency limit), counting the attempt and leasing each for `lease`.
pub async fn claim_due(
    pool: &Pool,
    limit: usize,
    lease: Duration,
    full: &[String],
) -> Result<Vec<Claimed>, StoreError> {
    let mut client = pool.get().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let tx = client.transaction().await?;
    // The claim must walk the due index in order and stop at the limit. On statistics that lag a
    // backlog which grew within seconds, the planner instead collected every due row and sorted
    // them (100 ms on 16,000, BENCHMARKS.md); without sorts as an option it keeps to the index.
    tx.batch_execute(&format!("{WORKER_TRANSACTION}; SET LOCAL enable_sort TO off")).await?;
    let statement = tx
        .prepare_cached(
            "WITH due AS (
                 SELECT d.id FROM deliveries d
                 JOIN delivery_profiles p ON p.id = d.profile_id AND p.state = 'enabled'
                 WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                   AND (d.lease_until IS NULL OR d.lease_until < now())
                   AND NOT (d.profile_id = ANY($3))
                   AND NOT EXISTS (
                       SELECT 1 FROM deliveries e
                       WHERE e.profile_id = d.profile_id AND e.source_id = d.source_id
                         AND e.call_id = d.call_id AND e.status = 'pending' AND e.seq < d.seq)
                 ORDER BY d.next_attempt_at
                 LIMIT $1
                 FOR UPDATE OF d SKIP LOCKED)
             UPDATE deliveries d
             SET attempts = d.attempts + 1, lease_until = now() + $2::int8 * interval '1 millisecond',
                 updated_at = now()
             FROM due WHERE d.id = due.id
             RETURNING d.id, d.profile_id, d.subject_kind, d.subject, d.attempts, d.schedule_base, d.flow,
                 d.created_at",
        )
        .await?;
    let rows = tx.query(&statement, &[&limit, &lease_ms, &full]).await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            id: r.get("id"),
            profile_id: r.get("profile_id"),
            subject_kind: r.get("subject_kind"),
            subject: r.get("subject"),
            attempts: r.get("attempts"),
            schedule_base: r.get("schedule_base"),
            flow: r.get("flow"),
            created_at: r.get("created_at"),
        })
        .collect())
}

/// Gives a claim back untried (its profile reached its concurrency limit meanwhile).
pub async fn unclaim(pool: &Pool, id: &str) -> Result<(), StoreError> {
    unclaim_all(pool, &[id]).await
}

/// [`unclaim`] of several deliveries, in one statement.
pub async fn unclaim_all(pool: &Pool, ids: &[&str]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE deliveries SET attempts = attempts - 1, lease_until = NULL
             WHERE id = ANY($1) AND status = 'pending'",
            &[&ids],
        )
        .await?;
    Ok(())
}

/// One attempt, for the log.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    pub n: i32,
    pub step: String,
    pub started_at: DateTime<Utc>,
    pub request: Value,
    pub status: Option<u16>,
    pub body: Option<String>,
    pub latency: Duration,
    pub error: Option<String>,
}

/// Every transaction of the dispatcher plans its prepared statements for the values at hand: the
/// deliveries table goes from empty to a backlog of thousands within seconds, and a generic plan
/// made while it was small (a sequential scan, then a sort) cost a claim 30 ms on a backlog of
/// 20,000 where the custom one took 1 ms (BENCHMARKS.md, dispatcher).
pub(crate) const CUSTOM_PLANS: &str = "SET LOCAL plan_cache_mode TO force_custom_plan";

/// The worker's writes (claims, attempt logs, settlements) commit without waiting for the WAL
/// to reach the disk: a flush per write made the disk's fsync the dispatcher's bottleneck
/// (BENCHMARKS.md). What a crash can lose is safe to lose: a lease (the delivery is claimed
/// again sooner), an attempt log row (history only), or a settlement (the delivery is pending
/// again and attempted once more with the same `webhook-id`: at least once still holds). The
/// consumer's scheduling transaction, after which offsets are committed, stays synchronous.
pub(crate) const WORKER_TRANSACTION: &str =
    "SET LOCAL synchronous_commit TO off; SET LOCAL plan_cache_mode TO force_custom_plan";

/// How an attempt settles its delivery.
#[derive(Debug, Clone)]
pub enum Settle {
    Delivered,
    RetryAt {
        at: DateTime<Utc>,
        error: String,
    },
    /// The next step waits for the call's recording: looked at again at `at`, or as soon as a
    /// newer record of the call arrives. A look is not an attempt: it is not counted.
    Wait {
        at: DateTime<Utc>,
        error: String,
    },
    Failed {
        error: String,
    },
}

/// Disables every enabled profile whose deliveries have all failed for longer than `after`;
/// returns the ids disabled.
pub async fn disable_failing(pool: &Pool, after: Duration) -> Result<Vec<String>, StoreError> {
    let client = pool.get().await?;
    let secs = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "UPDATE delivery_profiles
             SET state = 'disabled', updated_at = now(),
                 disabled_reason = 'every delivery failed for ' || ($1::int8 / 3600) || ' hours'
             WHERE state = 'enabled' AND failing_since < now() - $1::int8 * interval '1 second'
             RETURNING id",
            &[&secs],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get("id")).collect())
}

/// The number of pending deliveries and the age of the oldest, in seconds.
pub async fn backlog(pool: &Pool) -> Result<(i64, i64), StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) AS n,
                 COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::int8 AS oldest
             FROM deliveries WHERE status = 'pending'",
            &[],
        )
        .await?;
    Ok((row.get("n"), row.get("oldest")))
}

/// A delivery's columns as a JSON object; a map, so that [`get_delivery`] can add to it.
fn delivery_json(row: &Row) -> Map<String, Value> {
    let ts = |name: &str| json!(row.get::<_, Option<DateTime<Utc>>>(name));
    [
        ("id", json!(row.get::<_, String>("id"))),
        ("profile_id", json!(row.get::<_, String>("profile_id"))),
        ("source_id", json!(row.get::<_, String>("source_id"))),
        ("call_id", json!(row.get::<_, String>("call_id"))),
        ("subject_id", json!(row.get::<_, String>("subject_id"))),
        ("trigger", json!(row.get::<_, String>("trigger"))),
        ("status", json!(row.get::<_, String>("status"))),
        ("attempts", json!(row.get::<_, i32>("attempts"))),
        ("next_attempt_at", ts("next_attempt_at")),
        ("last_error", json!(row.get::<_, Option<String>>("last_error"))),
        ("created_at", ts("created_at")),
        ("delivered_at", ts("delivered_at")),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

const DELIVERY_COLUMNS: &str = "id, profile_id, source_id, call_id, subject_id, trigger, status, attempts, \
     next_attempt_at, last_error, created_at, delivered_at";

/// Deliveries, newest first, filtered by profile and status.
pub async fn list_deliveries(
    pool: &Pool,
    profile: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries
         WHERE ($1::text IS NULL OR profile_id = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC, seq DESC LIMIT $3"
    );
    Ok(client
        .query(&sql, &[&profile, &status, &limit])
        .await?
        .iter()
        .map(|row| Value::Object(delivery_json(row)))
        .collect())
}

/// One delivery with its subject and attempt log.
pub async fn get_delivery(pool: &Pool, id: &str) -> Result<Option<Value>, StoreError> {
    let client = pool.get().await?;
    let sql = format!("SELECT {DELIVERY_COLUMNS}, subject_kind, subject FROM deliveries WHERE id = $1");
    let Some(row) = client.query_opt(&sql, &[&id]).await? else { return Ok(None) };
    let mut delivery = delivery_json(&row);
    delivery.insert("subject_kind".to_owned(), json!(row.get::<_, String>("subject_kind")));
    delivery.insert("subject".to_owned(), row.get("subject"));
    let attempts = client
        .query(
            "SELECT n, step, started_at, request, response_status, response_body, latency_ms, error
             FROM delivery_attempts WHERE delivery_id = $1 ORDER BY n, started_at",
            &[&id],
        )
        .await?;
    let attempt_log = attempts
        .iter()
        .map(|a| {
            json!({
                "n": a.get::<_, i32>("n"),
                "step": a.get::<_, String>("step"),
                "started_at": a.get::<_, DateTime<Utc>>("started_at"),
                "request": a.get::<_, Value>("request"),
                "response_status": a.get::<_, Option<i32>>("response_status"),
                "response_body": a.get::<_, Option<String>>("response_body"),
                "latency_ms": a.get::<_, i64>("latency_ms"),
                "error": a.get::<_, Option<String>>("error"),
            })
        })
        .collect();
    delivery.insert("attempt_log".to_owned(), attempt_log);
    Ok(Some(Value::Object(delivery)))
}

/// The delivery's subject, for a test send of a stored call.
pub async fn latest_subject(pool: &Pool, call_id: &str) -> Result<Option<(String, SubjectJson)>, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .query_opt(
            "SELECT subject_kind, subject FROM deliveries WHERE call_id = $1 ORDER BY seq DESC LIMIT 1",
            &[&call_id],
        )
        .await?
        .map(|r| (r.get("subject_kind"), r.get("subject"))))
}

/// Queues deliveries again from the start of their schedule and their flow: `id` alone, or every
/// delivery of `profile` created in `[from, to)` with `status` (failed or discarded). Returns how
/// many were queued.
pub async fn replay(
    pool: &Pool,
    id: Option<&str>,
    profile: Option<&str>,
    status: Option<&str>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<u64, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .execute(
            "UPDATE deliveries SET status = 'pending', schedule_base = attempts, next_attempt_at = now(),
                 lease_until = NULL, flow = '{}', last_error = NULL, delivered_at = NULL, updated_at = now()
             WHERE ($1::text IS NULL OR id = $1) AND ($2::text IS NULL OR profile_id = $2)
               AND status <> 'pending'
               AND ($3::text IS NULL OR status = $3)
               AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5)",
            &[&id, &profile, &status, &from, &to],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_every_secret_and_keeps_the_rest() {
        let spec = json!({
            "name": "CRM",
            "trigger": "call_answered",
            "steps": [{"name": "post", "request": {
                "method": "POST", "url": "https://crm.example.com/calls",
                "headers": [{"name": "authorization", "secret": "Bearer t0ken"}, {"name": "x-src", "text": "sb"}],
                "url_params": [{"name": "key", "secret": "k3y"}],
            }}],
            "signing_secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "oauth": {"token_url": "https://oauth.example.com/token", "client_id": "app.1",
                "client_secret": "cl1entS", "refresh_token": "r3fresh", "send_as": {"url_param": "auth"}},
        });
        let profile = Profile::from_json(&spec.to_string()).expect("valid");
        let shown = redacted(&profile);
        let text = shown.to_string();
        assert_eq!(shown["oauth"]["client_id"], "app.1");
        for secret in ["t0ken", "k3y", "MfKQ9r8", "cl1entS", "r3fresh"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(shown["signing_secrets"], json!(["***"]));
        assert_eq!(shown["steps"][0]["request"]["headers"][1]["text"], "sb");
        assert_eq!(shown["name"], "CRM");
    }
}
