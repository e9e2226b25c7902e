//! PBX sources and their credentials.
//!
//! A source is created with a generated secret (HTTP Basic: the source id is the user name, the
//! secret the password; or `?token=` for PBXs that can only be given a URL), shown once and
//! stored only as its SHA-256. The secret is 256 random bits, so brute force is out of reach and
//! a fast hash keeps checking it cheap on every webhook. Vendors that sign their webhooks are
//! checked with the source's `signing_secret` instead (`switchboard_adapters::auth`); it and the
//! vendor API client secret are stored sealed (`switchboard_core::source_secrets`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use switchboard_adapters::{SourceAuth, SourceSettings};
use switchboard_core::model::{Region, SourceId, Vendor};
use switchboard_core::seal::{SealError, Sealer};
use switchboard_core::source_secrets::SourceSecrets;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("source {0} already exists")]
    Exists(String),
    #[error("no random numbers available: {0}")]
    Random(String),
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("cannot seal the source's secrets")]
    Seal(#[from] SealError),
}

/// What ingress needs to know about a source on every request. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct Source {
    pub id: SourceId,
    pub vendor: Vendor,
    pub default_region: String,
    pub settings: SourceSettings,
    secret_sha256: [u8; 32],
    signing_secret: Option<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("id", &self.id)
            .field("vendor", &self.vendor)
            .field("default_region", &self.default_region)
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Source {
    /// What the vendor's adapter checks a request against.
    pub fn auth(&self) -> SourceAuth<'_> {
        SourceAuth {
            source_id: self.id.as_str(),
            secret_sha256: &self.secret_sha256,
            signing_secret: self.signing_secret.as_deref(),
            settings: &self.settings,
        }
    }
}

/// The sources ingress knows, refreshed from the database in the background.
#[derive(Debug, Clone, Default)]
pub struct SourceCache {
    inner: Arc<RwLock<HashMap<String, Source>>>,
}

impl SourceCache {
    pub fn get(&self, id: &str) -> Option<Source> {
        self.inner.read().ok()?.get(id).cloned()
    }

    pub async fn refresh(&self, pool: &Pool, sealer: &Sealer) -> Result<usize, SourceError> {
        let sources = load_enabled(pool, sealer).await?;
        let count = sources.len();
        if let Ok(mut map) = self.inner.write() {
            *map = sources.into_iter().map(|s| (s.id.as_str().to_owned(), s)).collect();
        }
        Ok(count)
    }
}

async fn load_enabled(pool: &Pool, sealer: &Sealer) -> Result<Vec<Source>, SourceError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, vendor, default_region, secret_sha256, signing_secret, settings, secrets_sealed
             FROM sources WHERE disabled_at IS NULL",
            &[],
        )
        .await?;
    let mut sources = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        let vendor: String = row.get(1);
        let hash: Vec<u8> = row.get(3);
        let mut settings: serde_json::Value = row.get(5);
        let secrets = match SourceSecrets::of_row(sealer, row.get(6), row.get(4), &mut settings) {
            Ok(secrets) => secrets,
            Err(error) => {
                // Sealed with another key: sources.secrets_key changed without a reseal.
                tracing::error!(source = %id, %error, "Skipping a source whose secrets do not open.");
                continue;
            }
        };
        // A row written by a newer version (an unknown vendor or setting) is skipped, not fatal,
        // so an older ingress keeps serving every other source during a rolling upgrade.
        let (Ok(id), Ok(vendor), Ok(secret_sha256), Ok(mut settings)) = (
            SourceId::parse(id.clone()),
            vendor.parse::<Vendor>(),
            <[u8; 32]>::try_from(hash),
            serde_json::from_value::<SourceSettings>(settings),
        ) else {
            tracing::warn!(source = %id, "Skipping a source this version cannot serve.");
            continue;
        };
        settings.api_client_secret = secrets.api_client_secret.clone();
        sources.push(Source {
            id,
            vendor,
            default_region: row.get(2),
            settings,
            secret_sha256,
            signing_secret: secrets.signing_secret().map(str::to_owned),
        });
    }
    Ok(sources)
}

/// A newly created source with the only copy of its secret.
#[derive(Debug)]
pub struct NewSource {
    pub id: SourceId,
    pub vendor: Vendor,
    pub secret: String,
}

/// Creates a source with a freshly generated secret; its signing secret and API client secret are
/// stored sealed with `sealer`, never in plaintext.
pub async fn create(
    pool: &Pool,
    sealer: &Sealer,
    id: &SourceId,
    vendor: Vendor,
    region: Region,
    signing_secret: Option<&str>,
    settings: &SourceSettings,
) -> Result<NewSource, SourceError> {
    settings.validate().map_err(SourceError::Settings)?;
    let mut settings = settings.clone();
    let secrets = SourceSecrets {
        signing_secret: signing_secret.filter(|s| !s.is_empty()).map(switchboard_core::model::Secret::new),
        api_client_secret: settings.api_client_secret.take(),
    };
    let sealed = secrets.seal(sealer)?;
    let settings = serde_json::to_value(&settings).map_err(|e| SourceError::Settings(e.to_string()))?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| SourceError::Random(e.to_string()))?;
    let secret = URL_SAFE_NO_PAD.encode(random);
    let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let client = pool.get().await?;
    let inserted = client
        .execute(
            "INSERT INTO sources (id, vendor, default_region, secret_sha256, secrets_sealed, settings)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO NOTHING",
            &[&id.as_str(), &vendor.as_str(), &region.as_str(), &hash.as_slice(), &sealed, &settings],
        )
        .await?;
    if inserted == 0 {
        return Err(SourceError::Exists(id.to_string()));
    }
    Ok(NewSource { id: id.clone(), vendor, secret })
}

/// A source as the CLI lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    pub id: String,
    pub vendor: String,
    pub region: String,
    pub enabled: bool,
}

/// Every source, by id.
pub async fn list(pool: &Pool) -> Result<Vec<SourceSummary>, SourceError> {
    let client = pool.get().await?;
    let rows = client
        .query("SELECT id, vendor, default_region, disabled_at IS NULL FROM sources ORDER BY id", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| SourceSummary { id: r.get(0), vendor: r.get(1), region: r.get(2), enabled: r.get(3) })
        .collect())
}

/// Seals every source's secrets with the current key: the rows written before secrets were sealed
/// lose their plaintext, and those sealed with the previous key (a rotation) are sealed with the
/// new one. One transaction; returns how many sources were sealed. A source whose secrets open
/// with neither key stops it, unchanged.
pub async fn reseal(pool: &Pool, sealer: &Sealer) -> Result<usize, SourceError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query("SELECT id, signing_secret, settings, secrets_sealed FROM sources ORDER BY id FOR UPDATE", &[])
        .await?;
    for row in &rows {
        let id: &str = row.get(0);
        let mut settings: serde_json::Value = row.get(2);
        let secrets = SourceSecrets::of_row(sealer, row.get(3), row.get(1), &mut settings)?;
        let _ = tx
            .execute(
                "UPDATE sources SET secrets_sealed = $2, signing_secret = NULL, settings = $3 WHERE id = $1",
                &[&id, &secrets.seal(sealer)?, &settings],
            )
            .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}
