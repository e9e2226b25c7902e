//! The profiles every replica works from, held in memory and reloaded from PostgreSQL every
//! `dispatcher.profiles_refresh_ms`, so that evaluating a record asks the database nothing and a
//! change (a new profile, a pause, a 410) reaches every replica within that interval.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::seal::Sealer;
use crate::store::{self, StoreError, StoredProfile};

#[derive(Debug, Clone, Default)]
pub struct ProfileCache {
    profiles: Arc<RwLock<Arc<Vec<StoredProfile>>>>,
}

impl ProfileCache {
    /// Every profile as last loaded.
    pub fn all(&self) -> Arc<Vec<StoredProfile>> {
        self.profiles.read().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn get(&self, id: &str) -> Option<StoredProfile> {
        self.all().iter().find(|p| p.id == id).cloned()
    }

    pub async fn reload(&self, pool: &Pool, sealer: &Sealer) -> Result<(), StoreError> {
        let loaded = Arc::new(store::load_profiles(pool, sealer).await?);
        if let Ok(mut profiles) = self.profiles.write() {
            *profiles = loaded;
        }
        Ok(())
    }

    /// Reloads every `interval` until `cancel` fires; also refreshes the profile-state gauge.
    pub async fn refresh(
        self,
        pool: Pool,
        sealer: Arc<Sealer>,
        interval: Duration,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = self.reload(&pool, &sealer).await {
                tracing::warn!(%error, "Cannot reload the delivery profiles; keeping the last ones.");
                continue;
            }
            let mut counts: HashMap<&str, i64> = HashMap::new();
            for profile in self.all().iter() {
                let count = counts.entry(profile.state.as_str()).or_default();
                *count = count.saturating_add(1);
            }
            for state in ["enabled", "paused", "disabled"] {
                crate::metrics::DISPATCHER_PROFILES
                    .with_label_values(&[state])
                    .set(counts.get(state).copied().unwrap_or(0));
            }
        }
    }
}
