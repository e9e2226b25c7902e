//! The `recordings` table (migration 0005): every recording the stage has seen, and the schedule
//! of the pending ones.
//!
//! A row is created (or found again) by the stage for each event that names a recording; the
//! resolver claims due pending rows with `FOR UPDATE SKIP LOCKED` and a lease, and settles each
//! attempt with one update: ready, failed, or pending again at a later `due_at`. Every statement
//! is idempotent: registering an event twice finds the same row, and settling an attempt whose
//! row is no longer pending (another replica won after a lapsed lease) changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use switchboard_core::model::SourceSettings;
use switchboard_core::model::{CallEvent, CallId, LegId, RecordingStatus, Secret, SourceId, Vendor};
use switchboard_core::seal::Sealer;
use switchboard_core::source_secrets::SourceSecrets;
use tokio_postgres::{self, Row};

use crate::link::recording_key;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or restarting: retry.
    #[error("PostgreSQL unavailable: {0}")]
    Transient(String),
    /// The row itself is refused (a constraint, a value out of range): retrying cannot help.
    #[error("refused by PostgreSQL: {0}")]
    Rejected(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.code().map(|code| &code.code()[..2]) {
            // 22: data exception; 23: integrity constraint violation.
            Some("22" | "23") => StoreError::Rejected(error.to_string()),
            _ => StoreError::Transient(error.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::Transient(error.to_string())
    }
}

/// One recording, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// The id its link names.
    pub id: String,
    pub source_id: SourceId,
    pub call_id: CallId,
    pub leg_id: Option<LegId>,
    pub vendor: Vendor,
    /// The vendor's recording id, when it sent one.
    pub recording_id: Option<String>,
    /// The URL the vendor sent, when it sent one.
    pub vendor_url: Option<String>,
    pub raw_id: String,
    pub first_received_at: DateTime<Utc>,
    pub status: RecordingStatus,
    /// Attempts claimed so far (this one included, for a claimed row).
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// A recording as an event names it, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecording {
    pub recording: Recording,
}

/// Whether `url` can be handed to a browser as a redirect: http(s), a valid URI with a host, and
/// only visible ASCII (what a `Location` header carries everywhere).
pub fn usable_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.parse::<http::Uri>().is_ok_and(|uri| uri.host().is_some())
        && url.bytes().all(|b| b.is_ascii_graphic())
}

impl NewRecording {
    /// The recording `event` names, if any: pending when only the vendor's id is known (it must
    /// be resolved through the vendor's API), ready when the vendor sent a usable URL, failed when
    /// all it sent is a URL nobody can open.
    pub fn from_event(event: &CallEvent) -> Option<Self> {
        let url = event.recording_url.as_deref();
        let recording_id = event.recording_id.clone();
        let reference = recording_id.as_deref().or(url)?;
        let usable = url.filter(|u| usable_url(u));
        let (status, last_error) = match (usable, &recording_id) {
            (Some(_), _) => (RecordingStatus::Ready, None),
            (None, Some(_)) => (RecordingStatus::Pending, None),
            (None, None) => (
                RecordingStatus::Failed,
                Some("the vendor's recording URL is not a usable http(s) URL".to_owned()),
            ),
        };
        Some(Self {
            recording: Recording {
                id: recording_key(&event.source_id, event.call_id.as_str(), reference),
                source_id: event.source_id.clone(),
                call_id: event.call_id.clone(),
                leg_id: event.leg_id.clone(),
                vendor: event.vendor,
                recording_id,
                vendor_url: usable.map(str::to_owned),
                raw_id: event.raw_id.clone(),
                first_received_at: event.received_at,
                status,
                attempts: 0,
                last_error,
            },
        })
    }
}

const COLUMNS: &str = "id, source_id, call_id, leg_id, vendor, recording_id, vendor_url, raw_id, \
                       first_received_at, status, attempts, last_error";

fn recording_from_row(row: &Row) -> Result<Recording, StoreError> {
    let id: String = row.get(0);
    let bad = |what: &str| StoreError::Rejected(format!("stored recording {id}: {what} does not parse"));
    let leg: Option<String> = row.get(3);
    let status: String = row.get(9);
    Ok(Recording {
        source_id: SourceId::parse(row.get::<_, String>(1)).map_err(|_| bad("source_id"))?,
        call_id: CallId::parse(row.get::<_, String>(2)).map_err(|_| bad("call_id"))?,
        leg_id: leg.map(LegId::parse).transpose().map_err(|_| bad("leg_id"))?,
        vendor: row.get::<_, String>(4).parse().map_err(|_| bad("vendor"))?,
        recording_id: row.get(5),
        vendor_url: row.get(6),
        raw_id: row.get(7),
        first_received_at: row.get(8),
        status: status.parse().map_err(|_| bad("status"))?,
        attempts: row.get(10),
        last_error: row.get(11),
        id,
    })
}

/// What registering an event's recording found.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub recording: Recording,
    /// The row was created by this call (the first event naming the recording).
    pub created: bool,
}

/// Creates the recording's row, or finds it: a later event may add the URL a first one lacked
/// (which makes a pending recording ready), never anything else, so that the link (its id and
/// first report time) stays what the first event got.
pub async fn register(pool: &Pool, new: &NewRecording) -> Result<Registered, StoreError> {
    let r = &new.recording;
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "INSERT INTO recordings (id, source_id, call_id, leg_id, vendor, recording_id, vendor_url,
                                     raw_id, first_received_at, status, last_error, due_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                     CASE WHEN $10 = 'pending' THEN now() END)
             ON CONFLICT (id) DO UPDATE SET
                 vendor_url = COALESCE(recordings.vendor_url, EXCLUDED.vendor_url),
                 recording_id = COALESCE(recordings.recording_id, EXCLUDED.recording_id),
                 status = CASE WHEN EXCLUDED.status = 'ready' THEN 'ready' ELSE recordings.status END,
                 due_at = CASE WHEN EXCLUDED.status = 'ready' THEN NULL ELSE recordings.due_at END,
                 last_error = CASE WHEN EXCLUDED.status = 'ready' THEN NULL ELSE recordings.last_error END,
                 updated_at = now()
             RETURNING {COLUMNS}, (xmax = 0) AS created"
        ))
        .await?;
    let row = client
        .query_one(
            &statement,
            &[
                &r.id,
                &r.source_id.as_str(),
                &r.call_id.as_str(),
                &r.leg_id.as_ref().map(LegId::as_str),
                &r.vendor.as_str(),
                &r.recording_id,
                &r.vendor_url,
                &r.raw_id,
                &r.first_received_at,
                &r.status.as_str(),
                &r.last_error,
            ],
        )
        .await?;
    Ok(Registered { recording: recording_from_row(&row)?, created: row.get(12) })
}

/// Claims up to `limit` pending recordings that are due, for `lease`: counts the attempt and
/// hides the rows from other replicas until the lease ends (a crashed replica's rows come back
/// then). Rows another replica is claiming right now are skipped, not waited for.
pub async fn claim_due(pool: &Pool, limit: usize, lease: Duration) -> Result<Vec<Recording>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "UPDATE recordings r
             SET attempts = r.attempts + 1, lease_until = now() + $2::int8 * interval '1 millisecond',
                 updated_at = now()
             FROM (SELECT id FROM recordings
                   WHERE status = 'pending' AND due_at <= now()
                     AND (lease_until IS NULL OR lease_until < now())
                   ORDER BY due_at
                   LIMIT $1
                   FOR UPDATE SKIP LOCKED) due
             WHERE r.id = due.id
             RETURNING {}",
            COLUMNS.split(", ").map(|c| format!("r.{}", c.trim())).collect::<Vec<_>>().join(", ")
        ))
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let lease = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    client.query(&statement, &[&limit, &lease]).await?.iter().map(recording_from_row).collect()
}

/// The attempt found the link: the recording is ready.
pub async fn mark_ready(pool: &Pool, id: &str) -> Result<(), StoreError> {
    settle(pool, id, "ready", None, None).await
}

/// The attempt failed and the budget is not spent: try again after `delay`.
pub async fn reschedule(pool: &Pool, id: &str, delay: Duration, reason: &str) -> Result<(), StoreError> {
    settle(pool, id, "pending", Some(delay), Some(reason)).await
}

/// Given up: the call is marked recording_failed with `reason`.
pub async fn mark_failed(pool: &Pool, id: &str, reason: &str) -> Result<(), StoreError> {
    settle(pool, id, "failed", None, Some(reason)).await
}

async fn settle(
    pool: &Pool,
    id: &str,
    status: &str,
    delay: Option<Duration>,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let delay = delay.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let statement = client
        .prepare_cached(
            "UPDATE recordings
             SET status = $2, last_error = $3, lease_until = NULL, updated_at = now(),
                 due_at = CASE WHEN $2 = 'pending' THEN now() + $4::int8 * interval '1 millisecond' END
             WHERE id = $1 AND status = 'pending'",
        )
        .await?;
    let _ = client.execute(&statement, &[&id, &status, &reason, &delay]).await?;
    Ok(())
}

/// What the resolver needs of a source: its vendor, the signing secret (Mango's salt, Zadarma's
/// secret) and the API settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceAccess {
    pub vendor: Vendor,
    pub signing_secret: Option<Secret>,
    pub settings: SourceSettings,
}

/// A source's access from its row: the vendor, the settings, and the secrets, sealed
/// (`sources.secrets_sealed`) or, in a row from before secrets were sealed, in plaintext.
fn access_from(
    sealer: &Sealer,
    vendor: String,
    signing_secret: Option<String>,
    mut settings: serde_json::Value,
    sealed: Option<&[u8]>,
) -> Result<SourceAccess, String> {
    let secrets = SourceSecrets::of_row(sealer, sealed, signing_secret, &mut settings)
        .map_err(|e| format!("the source's secrets: {e} (sources.secrets_key)"))?;
    let mut settings: SourceSettings = serde_json::from_value(settings)
        .map_err(|e| format!("the source's settings cannot be read by this version: {e}"))?;
    settings.api_client_secret = secrets.api_client_secret;
    Ok(SourceAccess {
        vendor: vendor
            .parse()
            .map_err(|_| format!("the source's vendor {vendor:?} is unknown to this version"))?,
        signing_secret: secrets.signing_secret,
        settings,
    })
}

/// The enabled sources among `ids`: each one's access, or why it cannot be used.
pub async fn sources(
    pool: &Pool,
    sealer: &Sealer,
    ids: &[&str],
) -> Result<HashMap<String, Result<SourceAccess, String>>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT id, vendor, signing_secret, settings, secrets_sealed FROM sources
             WHERE id = ANY($1) AND disabled_at IS NULL",
        )
        .await?;
    Ok(client
        .query(&statement, &[&ids])
        .await?
        .into_iter()
        .map(|row| (row.get(0), access_from(sealer, row.get(1), row.get(2), row.get(3), row.get(4))))
        .collect())
}

/// One recording and its source's access (`None` for a source deleted or disabled since), for
/// the link handler.
pub async fn lookup(
    pool: &Pool,
    sealer: &Sealer,
    id: &str,
) -> Result<Option<(Recording, Option<Result<SourceAccess, String>>)>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {}, s.vendor, s.signing_secret, s.settings, s.secrets_sealed
             FROM recordings r LEFT JOIN sources s ON s.id = r.source_id AND s.disabled_at IS NULL
             WHERE r.id = $1",
            COLUMNS.split(", ").map(|c| format!("r.{}", c.trim())).collect::<Vec<_>>().join(", ")
        ))
        .await?;
    let Some(row) = client.query_opt(&statement, &[&id]).await? else {
        return Ok(None);
    };
    let recording = recording_from_row(&row)?;
    let vendor: Option<String> = row.get(12);
    let access = vendor.map(|vendor| access_from(sealer, vendor, row.get(13), row.get(14), row.get(15)));
    Ok(Some((recording, access)))
}

/// Recordings still waiting to be resolved.
pub async fn pending_count(pool: &Pool) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    Ok(client.query_one("SELECT count(*) FROM recordings WHERE status = 'pending'", &[]).await?.get(0))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use switchboard_core::model::{EventId, EventKind};

    use super::*;

    fn event(url: Option<&str>, id: Option<&str>) -> CallEvent {
        let mut event = CallEvent::empty(
            SourceId::parse("pbx").expect("id"),
            Vendor::Telphin,
            CallId::parse("c").expect("id"),
            EventId::parse("e").expect("id"),
            EventKind::Recording,
            Utc.timestamp_opt(1_800_000_000, 0).single().expect("time"),
        );
        event.raw_id = "raw-1".into();
        event.recording_url = url.map(Into::into);
        event.recording_id = id.map(Into::into);
        event
    }

    #[test]
    fn events_name_pending_ready_or_unusable_recordings() {
        assert_eq!(NewRecording::from_event(&event(None, None)), None, "no recording");
        let pending = NewRecording::from_event(&event(None, Some("200101-5A1C"))).expect("a recording");
        assert_eq!(pending.recording.status, RecordingStatus::Pending);
        let url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1";
        let both = NewRecording::from_event(&event(Some(url), Some("RE1"))).expect("a recording");
        assert_eq!(
            (both.recording.status, both.recording.vendor_url.as_deref()),
            (RecordingStatus::Ready, Some(url))
        );
        let sid_only = NewRecording::from_event(&event(None, Some("RE1"))).expect("a recording");
        assert_eq!(
            both.recording.id, sid_only.recording.id,
            "the vendor's id names the recording, not the URL"
        );
        assert_eq!(
            both.recording.first_received_at,
            Utc.timestamp_opt(1_800_000_000, 0).single().expect("t")
        );
        let broken = NewRecording::from_event(&event(Some("https://rec.example/a file.mp3"), None))
            .expect("a recording");
        assert_eq!(broken.recording.status, RecordingStatus::Failed);
        assert!(broken.recording.last_error.as_deref().is_some_and(|e| e.contains("not a usable")));
    }

    #[test]
    fn only_http_urls_with_a_host_are_usable() {
        assert!(usable_url("https://storage.telphin.ru/r/abc==?x=1"));
        assert!(usable_url("http://10.0.0.5:8080/rec/1"));
        for bad in ["ftp://x/y", "https://", "https://a b", "javascript:alert(1)", "https://ex.com/\u{e9}"] {
            assert!(!usable_url(bad), "{bad}");
        }
    }
}
