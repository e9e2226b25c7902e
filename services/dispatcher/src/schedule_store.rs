//! The consumer's writes: one batch of consumed records becomes a few statements in the batch's
//! transaction, whatever its size — the record versions seen so far of the batch's calls, the
//! newer versions marked seen, waiting deliveries given the newer records, and the new deliveries.
//! Each statement takes the whole batch as arrays (`unnest`) and is prepared once per connection:
//! a statement per record cost a few milliseconds of round trips each, which made the consumer
//! the dispatcher's bottleneck (BENCHMARKS.md, dispatcher).

use std::collections::HashMap;

use deadpool_postgres::GenericClient;

use crate::store::NewDelivery;
use crate::subject_json::SubjectJson;

/// A call, by source and call id.
pub type CallKey = (String, String);

/// The highest record version seen of each of `calls`, locking their rows until the caller's
/// transaction ends (so a replica that took over the partition mid-batch waits for this one).
pub async fn seen_versions(
    client: &impl GenericClient,
    calls: &[CallKey],
) -> Result<HashMap<CallKey, i64>, tokio_postgres::Error> {
    if calls.is_empty() {
        return Ok(HashMap::new());
    }
    let (sources, ids): (Vec<&str>, Vec<&str>) = calls.iter().map(|(s, c)| (s.as_str(), c.as_str())).unzip();
    let statement = client
        .prepare_cached(
            "SELECT s.source_id, s.call_id, s.version FROM dispatcher_seen_records s
             JOIN unnest($1::text[], $2::text[]) AS k(source_id, call_id)
               ON s.source_id = k.source_id AND s.call_id = k.call_id
             ORDER BY s.source_id, s.call_id
             FOR UPDATE OF s",
        )
        .await?;
    let rows = client.query(&statement, &[&sources, &ids]).await?;
    Ok(rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect())
}

/// Records each call's `version` as seen, keeping the highest (each call once).
pub async fn mark_seen(
    client: &impl GenericClient,
    seen: &HashMap<CallKey, i64>,
) -> Result<(), tokio_postgres::Error> {
    if seen.is_empty() {
        return Ok(());
    }
    let mut rows: Vec<(&CallKey, &i64)> = seen.iter().collect();
    // One order for every replica, so that two batches never wait for each other's rows crosswise.
    rows.sort();
    let sources: Vec<&str> = rows.iter().map(|((s, _), _)| s.as_str()).collect();
    let calls: Vec<&str> = rows.iter().map(|((_, c), _)| c.as_str()).collect();
    let versions: Vec<i64> = rows.iter().map(|(_, v)| **v).collect();
    let statement = client
        .prepare_cached(
            "INSERT INTO dispatcher_seen_records (source_id, call_id, version)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
             ON CONFLICT (source_id, call_id) DO UPDATE
                 SET version = GREATEST(dispatcher_seen_records.version, EXCLUDED.version)",
        )
        .await?;
    client.execute(&statement, &[&sources, &calls, &versions]).await?;
    Ok(())
}

/// For each call's newest record of the batch (`version`, as JSON): the call's pending
/// deliveries that have started (attempted at least once, or waiting for the recording) and whose
/// subject is an older record take it as their subject, so that their remaining steps see what the
/// newer record brings (a recording that became ready while an earlier step was still being
/// retried would otherwise never reach them). Those waiting for the recording are due at once;
/// those waiting for a retry keep their schedule. A delivery not attempted yet keeps the record
/// that triggered it: its first request says what happened at that version (the newer version
/// triggers deliveries of its own). Returns how many.
pub async fn refresh_waiting(
    client: &impl GenericClient,
    newest: &HashMap<CallKey, (i64, SubjectJson)>,
) -> Result<u64, tokio_postgres::Error> {
    if newest.is_empty() {
        return Ok(0);
    }
    let mut rows: Vec<(&CallKey, &(i64, SubjectJson))> = newest.iter().collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    let sources: Vec<&str> = rows.iter().map(|((s, _), _)| s.as_str()).collect();
    let calls: Vec<&str> = rows.iter().map(|((_, c), _)| c.as_str()).collect();
    let versions: Vec<i64> = rows.iter().map(|(_, (v, _))| *v).collect();
    let subjects: Vec<&SubjectJson> = rows.iter().map(|(_, (_, r))| r).collect();
    let statement = client
        .prepare_cached(
            "UPDATE deliveries d SET subject = u.subject,
                 next_attempt_at = CASE WHEN d.waiting THEN now() ELSE d.next_attempt_at END,
                 waiting = false, updated_at = now()
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::jsonb[]) AS u(source_id, call_id, version, subject)
             WHERE d.source_id = u.source_id AND d.call_id = u.call_id AND d.status = 'pending'
               AND (d.waiting OR d.attempts > 0) AND d.subject_kind = 'record'
               AND (d.subject->>'version')::int8 < u.version",
        )
        .await?;
    client.execute(&statement, &[&sources, &calls, &versions, &subjects]).await
}

/// A delivery the batch inserted (one read before inserts nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    pub id: String,
    /// `pending` or `discarded`.
    pub status: &'static str,
    /// Leased to this replica as it was inserted, for its worker's first attempt at once.
    pub leased: bool,
}

/// Inserts the batch's deliveries in one statement, in the batch's order (`seq` follows it);
/// those with a `lease` are inserted claimed: their first attempt counted and leased for that
/// long from the insert (not from the transaction's start, so the batch's lock waits take none of
/// it). A delivery already there (the batch read again) is left as it is.
pub async fn insert_deliveries(
    client: &impl GenericClient,
    deliveries: &[NewDelivery],
) -> Result<Vec<Inserted>, tokio_postgres::Error> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&NewDelivery) -> &str| deliveries.iter().map(f).collect::<Vec<&str>>();
    let subjects: Vec<&SubjectJson> = deliveries.iter().map(|d| &d.subject).collect();
    let leases: Vec<Option<i64>> = deliveries
        .iter()
        .map(|d| d.lease.map(|l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX)))
        .collect();
    let statement = client
        .prepare_cached(
            "INSERT INTO deliveries (id, profile_id, source_id, call_id, subject_id, trigger,
                 subject_kind, subject, status, attempts, lease_until)
             SELECT id, profile_id, source_id, call_id, subject_id, trigger, subject_kind, subject, status,
                 CASE WHEN lease_ms IS NULL THEN 0 ELSE 1 END,
                 clock_timestamp() + lease_ms * interval '1 millisecond'
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::jsonb[], $9::text[], $10::int8[])
                  WITH ORDINALITY AS u(id, profile_id, source_id, call_id, subject_id, trigger,
                                       subject_kind, subject, status, lease_ms, n)
             ORDER BY n
             ON CONFLICT (id) DO NOTHING
             RETURNING id, status, lease_until IS NOT NULL AS leased",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &column(|d| &d.id),
                &column(|d| &d.profile_id),
                &column(|d| &d.source_id),
                &column(|d| &d.call_id),
                &column(|d| &d.subject_id),
                &column(|d| &d.trigger),
                &column(|d| d.subject_kind),
                &subjects,
                &column(|d| d.status),
                &leases,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Inserted {
            id: r.get("id"),
            status: if r.get::<_, &str>("status") == "pending" { "pending" } else { "discarded" },
            leased: r.get("leased"),
        })
        .collect())
}

/// The (profile, source, call)s among `calls` that have a pending delivery: a new delivery of
/// one of them waits behind it, so it is not attempted at once.
pub async fn pending_keys(
    client: &impl GenericClient,
    calls: &[CallKey],
) -> Result<std::collections::HashSet<(String, String, String)>, tokio_postgres::Error> {
    if calls.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let sources: Vec<&str> = calls.iter().map(|(s, _)| s.as_str()).collect();
    let ids: Vec<&str> = calls.iter().map(|(_, c)| c.as_str()).collect();
    let statement = client
        .prepare_cached(
            "SELECT DISTINCT d.profile_id, d.source_id, d.call_id
             FROM unnest($1::text[], $2::text[]) AS u(source_id, call_id)
             JOIN deliveries d ON d.source_id = u.source_id AND d.call_id = u.call_id AND d.status = 'pending'",
        )
        .await?;
    let rows = client.query(&statement, &[&sources, &ids]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}
