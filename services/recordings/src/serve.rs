//! Opening a stable link: `GET /v1/recordings/{id}?token=...`, served by the api service (the
//! port CRMs already reach; the recordings service's own port is an ops port and stays private).
//!
//! The token is checked first (constant time, [`LinkSigner::verify`]): a forged, altered or
//! expired one is refused before anything is read. Then the recording is looked up and a fresh
//! link asked of its vendor, every time: vendor links expire (Telphin's `storage_url`, Aircall's)
//! or work once (Mango's), so a link kept by a CRM must never be one of theirs. The answer is a
//! `302` to that fresh link, never cached. Every opening counts in
//! `switchboard_recordings_link_requests_total` by result.

use crate::metrics;
use chrono::Utc;
use deadpool_postgres::Pool;
use switchboard_core::config::Settings;
use switchboard_core::model::RecordingStatus;

use crate::RecordingsSettings;
use crate::client::HttpClient;
use crate::link::{LinkSigner, Refusal};
use crate::store;
use crate::vendors::{ResolveError, Resolver};

/// What opening a link came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// `302` to this fresh vendor link.
    Redirect(String),
    /// `403`: the token does not open this recording.
    Refused(Refusal),
    /// `404`: no such recording, or the vendor does not have it (yet); `retry` when it is still
    /// being resolved, so that trying again later makes sense.
    NotFound { retry: bool },
    /// `502`: the vendor gave no link (unreachable, an error, missing credentials).
    VendorFailed,
    /// `503`: the database did not answer, or no link key is configured.
    Unavailable,
}

impl Opened {
    /// The `result` label of `switchboard_recordings_link_requests_total`.
    pub fn metric(&self) -> &'static str {
        match self {
            Opened::Redirect(_) => "redirected",
            Opened::Refused(_) => "forbidden",
            Opened::NotFound { .. } => "not_found",
            Opened::VendorFailed | Opened::Unavailable => "failed",
        }
    }
}

/// Opens links: the signer that checks tokens and the resolver that asks vendors.
#[derive(Debug)]
pub struct Links {
    signer: Option<LinkSigner>,
    resolver: Resolver,
    /// Opens the sources' sealed API secrets.
    sealer: switchboard_core::seal::Sealer,
}

impl Links {
    /// `own` is the recordings section (the link key), `settings` the rest (the sources' key).
    pub fn new(
        settings: &Settings,
        own: &RecordingsSettings,
    ) -> Result<Self, switchboard_core::seal::SealError> {
        let timeout = std::time::Duration::from_millis(own.resolve_timeout_ms);
        Ok(Self {
            signer: LinkSigner::from_settings(own),
            resolver: Resolver::new(HttpClient::new(), timeout),
            sealer: switchboard_core::source_secrets::sealer(settings)?,
        })
    }

    /// Whether links can be opened at all (a link key is configured).
    pub fn configured(&self) -> bool {
        self.signer.is_some()
    }

    /// Registers every result at zero, so that `increase()` sees the first of each.
    pub fn init_metrics() {
        for result in ["redirected", "forbidden", "not_found", "failed"] {
            let _ = metrics::RECORDING_LINKS.with_label_values(&[result]);
        }
    }

    /// Opens recording `id` with `token`; `pool` is `None` while the database is not reachable.
    pub async fn open(&self, pool: Option<&Pool>, id: &str, token: Option<&str>) -> Opened {
        let opened = self.open_inner(pool, id, token).await;
        metrics::RECORDING_LINKS.with_label_values(&[opened.metric()]).inc();
        opened
    }

    async fn open_inner(&self, pool: Option<&Pool>, id: &str, token: Option<&str>) -> Opened {
        let Some(signer) = &self.signer else {
            return Opened::Unavailable;
        };
        if let Err(refusal) = signer.verify(id, token, Utc::now()) {
            return Opened::Refused(refusal);
        }
        let Some(pool) = pool else {
            return Opened::Unavailable;
        };
        let (recording, access) = match store::lookup(pool, &self.sealer, id).await {
            Ok(Some(found)) => found,
            Ok(None) => return Opened::NotFound { retry: false },
            Err(error) => {
                tracing::warn!(%error, recording = id, "Cannot read a recording.");
                return Opened::Unavailable;
            }
        };
        let access = match access {
            Some(Ok(access)) => access,
            Some(Err(reason)) => {
                tracing::warn!(recording = id, %reason, "Recording link: the source cannot be used.");
                return Opened::VendorFailed;
            }
            None => return Opened::NotFound { retry: false },
        };
        match self.resolver.resolve(&recording, &access).await {
            Ok(url) => Opened::Redirect(url),
            Err(ResolveError::NotReady(reason)) => {
                tracing::info!(recording = id, %reason, "Recording link: not available from the vendor.");
                Opened::NotFound { retry: recording.status == RecordingStatus::Pending }
            }
            Err(error) => {
                tracing::warn!(recording = id, reason = %error, "Recording link: the vendor gave no link.");
                Opened::VendorFailed
            }
        }
    }
}
