//! The access tokens of profiles with `oauth` ([`crate::oauth`]): held in memory while valid,
//! stored sealed in `delivery_oauth_tokens` (migration 0017) with the newest refresh token, and
//! traded anew under that row's lock.
//!
//! Inputs: a profile's `oauth`, its token row, the token endpoint. Output: an access token, or
//! why there is none (the attempt then fails and is retried on the delivery's schedule, and a
//! profile whose trades keep failing is disabled like any failing profile). Guarantee: most
//! CRMs accept a refresh token once, so a trade happens only while holding the row's lock
//! (`FOR UPDATE`), and whoever waited for the lock first looks whether the token it found stale
//! was already replaced: replicas and concurrent attempts never spend the same refresh token
//! twice. The rotated refresh token is committed before its access token is used; what a crash
//! between the endpoint's answer and that commit loses is the rotated token, after which the
//! administrator saves the profile with a new one (operations.md says so).
//!
//! The row remembers which refresh token of the profile it started from (`seed`, a SHA-256):
//! saving the profile with a different refresh token starts again from that one, while saving it
//! with the same one (already spent) keeps the rotated token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_model::Secret;

use crate::oauth::{self, GrantError, OAuth};
use crate::request::RenderedRequest;
use crate::seal::{SealError, Sealer};
use crate::send::{self, Answer, Connections, SendError};
use crate::ssrf::EgressPolicy;
use crate::store::StoreError;

/// A token this close to its expiry is traded before use, not sent to be refused.
const MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// How much of the token endpoint's answer is read.
const GRANT_BYTES: usize = 64 * 1024;

/// What a trade needs.
#[derive(Debug, Clone, Copy)]
pub struct TokenContext<'a> {
    pub pool: &'a Pool,
    pub sealer: &'a Sealer,
    pub policy: &'a EgressPolicy,
    pub connections: &'a Connections,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("OAuth: {0}")]
    Grant(#[from] GrantError),
    #[error("OAuth: the stored tokens: {0}")]
    Store(#[from] StoreError),
    #[error("OAuth: the stored tokens cannot be sealed or opened")]
    Seal(#[source] SealError),
}

impl From<tokio_postgres::Error> for TokenError {
    fn from(error: tokio_postgres::Error) -> Self {
        TokenError::Store(StoreError::Db(error))
    }
}

impl From<deadpool_postgres::PoolError> for TokenError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        TokenError::Store(StoreError::Pool(error))
    }
}

/// The sealed content of a token row.
#[derive(Serialize, Deserialize)]
struct Stored {
    access_token: String,
    refresh_token: String,
}

#[derive(Debug, Clone)]
struct Cached {
    seed: Vec<u8>,
    access: Secret,
    expires_at: Option<DateTime<Utc>>,
}

impl Cached {
    fn usable(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|at| at > now.checked_add_signed(MARGIN).unwrap_or(now))
    }
}

/// The access tokens this process holds, per profile.
#[derive(Debug, Default)]
pub struct Tokens {
    cache: Mutex<HashMap<String, Cached>>,
}

/// Which refresh token of the profile a row started from.
fn seed_of(oauth: &OAuth) -> Vec<u8> {
    Sha256::digest(oauth.refresh_token.expose().as_bytes()).to_vec()
}

impl Tokens {
    /// An access token for profile `id`. `refused` is a token the CRM just turned away: a
    /// different one is returned, traded for if need be.
    pub async fn access(
        &self,
        cx: &TokenContext<'_>,
        id: &str,
        oauth: &OAuth,
        refused: Option<&Secret>,
    ) -> Result<Secret, TokenError> {
        let seed = seed_of(oauth);
        if refused.is_none()
            && let Some(cached) = self.cache.lock().ok().and_then(|c| c.get(id).cloned())
            && cached.seed == seed
            && cached.usable(Utc::now())
        {
            return Ok(cached.access);
        }
        let fresh = fetch(cx, id, oauth, seed, refused).await?;
        let access = fresh.access.clone();
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(id.to_owned(), fresh);
        }
        Ok(access)
    }

    /// Sends `request` with profile `id`'s access token, placed where `oauth` says, reading up to
    /// `cap` bytes of the answer. A token the CRM turns away (expired early, revoked) is traded
    /// for a new one and the request sent once more. Returns the request as sent (its token
    /// sensitive, `***` in its shown URL) and the answer, or why no token could be had. The worker's
    /// attempts and the API's Test action both send this way.
    pub async fn send(
        &self,
        cx: &TokenContext<'_>,
        id: &str,
        oauth: &OAuth,
        request: &RenderedRequest,
        cap: usize,
    ) -> Result<(RenderedRequest, Result<Answer, SendError>), String> {
        let mut refused: Option<Secret> = None;
        loop {
            let token = self.access(cx, id, oauth, refused.as_ref()).await.map_err(|e| e.to_string())?;
            let mut authorized = request.clone();
            oauth::apply(&mut authorized, &oauth.send_as, Some(&token))?;
            let sent = send::send(cx.policy, cx.connections, &authorized, cx.timeout, cap).await;
            let turned_away = sent.as_ref().is_ok_and(|a| oauth::token_refused(a.status, &a.body));
            if !turned_away || refused.is_some() {
                return Ok((authorized, sent));
            }
            tracing::info!(profile = %id, "The CRM turned the access token away; trading for a new one.");
            refused = Some(token);
        }
    }
}

/// The stored token if it is still good (and not the refused one), else a trade, under the row's
/// lock.
async fn fetch(
    cx: &TokenContext<'_>,
    id: &str,
    oauth: &OAuth,
    seed: Vec<u8>,
    refused: Option<&Secret>,
) -> Result<Cached, TokenError> {
    let mut client = cx.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO delivery_oauth_tokens (profile_id, seed) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&id, &seed],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT seed, sealed, expires_at FROM delivery_oauth_tokens WHERE profile_id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
    let now = Utc::now();
    let stored_seed: Vec<u8> = row.get("seed");
    let sealed: Option<Vec<u8>> = row.get("sealed");
    let stored = match sealed.filter(|_| stored_seed == seed) {
        Some(sealed) => {
            let plain = cx.sealer.open(&sealed).map_err(TokenError::Seal)?;
            serde_json::from_slice::<Stored>(&plain).ok()
        }
        None => None,
    };
    if let Some(stored) = &stored {
        let cached = Cached {
            seed: seed.clone(),
            access: Secret::new(stored.access_token.clone()),
            expires_at: row.get("expires_at"),
        };
        if cached.usable(now) && refused.is_none_or(|r| r.expose() != stored.access_token) {
            tx.commit().await?;
            return Ok(cached);
        }
    }
    let refresh = stored.map_or_else(|| oauth.refresh_token.clone(), |s| Secret::new(s.refresh_token));
    let request = oauth::refresh_request(oauth, &refresh)?;
    let answer = send::send(cx.policy, cx.connections, &request, cx.timeout, GRANT_BYTES)
        .await
        .map_err(|e| GrantError::Unreachable(e.to_string()))?;
    let grant = oauth::read_grant(answer.status, &answer.body)?;
    // Most endpoints rotate the refresh token: the one just used is spent.
    let refresh = grant.refresh_token.unwrap_or(refresh);
    let expires_at = grant
        .expires_in
        .and_then(|s| chrono::TimeDelta::try_seconds(i64::try_from(s).unwrap_or(i64::MAX)))
        .and_then(|lifetime| now.checked_add_signed(lifetime));
    let plain = serde_json::to_vec(&Stored {
        access_token: grant.access_token.expose().to_owned(),
        refresh_token: refresh.expose().to_owned(),
    })
    .unwrap_or_default();
    let sealed = cx.sealer.seal(&plain).map_err(TokenError::Seal)?;
    tx.execute(
        "UPDATE delivery_oauth_tokens SET seed = $2, sealed = $3, expires_at = $4, updated_at = now()
         WHERE profile_id = $1",
        &[&id, &seed, &sealed, &expires_at],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(profile = %id, ?expires_at, "OAuth access token traded for.");
    Ok(Cached { seed, access: grant.access_token, expires_at })
}
