//! Agent sessions in PostgreSQL (`desk_sessions`): created for a directory agent by id or
//! email, found again by `keep`, authenticated by token hash, revoked. A revocation notifies
//! every replica (`switchboard_desk`, see the migration), which ends that session's streams.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::token;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Supervisor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
        }
    }

    /// Seed 003 calls a supervisor `admin`; both names are accepted.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "agent" => Some(Role::Agent),
            "supervisor" | "admin" => Some(Role::Supervisor),
            _ => None,
        }
    }
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    #[serde(rename = "session_id")]
    pub id: String,
    pub agent_id: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Which agent a new session is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Id(String),
    Email(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no agent of the directory has that id or email")]
    NoSuchAgent,
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

const COLUMNS: &str = "id, agent_id, role, created_at, expires_at";

fn from_row(row: &tokio_postgres::Row) -> Session {
    Session {
        id: row.get(0),
        agent_id: row.get(1),
        // The column's CHECK allows only these two.
        role: Role::parse(row.get::<_, &str>(2)).unwrap_or(Role::Agent),
        created_at: row.get(3),
        expires_at: row.get(4),
    }
}

/// What [`create`] gives back: the session, its token, and whether it is new (`false`: `keep`
/// found a live one).
#[derive(Debug)]
pub struct Created {
    pub session: Session,
    pub token: String,
    pub created: bool,
}

/// Creates a session for `who` as `role`, living `ttl_secs`; with `keep`, the agent's live
/// session of that role (with at least a minute left) and its token come back instead.
pub async fn create(
    pool: &Pool,
    key: &[u8],
    who: &Who,
    role: Role,
    keep: bool,
    ttl_secs: u64,
) -> Result<Created, SessionError> {
    let client = pool.get().await?;
    let agent = match who {
        Who::Id(id) => client.query_opt("SELECT id FROM agents WHERE id = $1", &[id]).await?,
        Who::Email(email) => {
            client.query_opt("SELECT id FROM agents WHERE lower(email) = lower($1)", &[email]).await?
        }
    };
    let agent_id: String = agent.ok_or(SessionError::NoSuchAgent)?.get(0);
    if keep {
        let live = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM desk_sessions
                     WHERE agent_id = $1 AND role = $2 AND revoked_at IS NULL
                       AND expires_at > now() + interval '60 seconds'
                     ORDER BY expires_at DESC LIMIT 1"
                ),
                &[&agent_id, &role.as_str()],
            )
            .await?;
        if let Some(row) = live {
            let session = from_row(&row);
            let token = token::derive(key, &session.id);
            return Ok(Created { session, token, created: false });
        }
    }
    let id = token::new_session_id();
    let token = token::derive(key, &id);
    let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX).min(30 * 86_400);
    let row = client
        .query_one(
            &format!(
                "INSERT INTO desk_sessions (id, token_hash, agent_id, role, expires_at)
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::bigint))
                 RETURNING {COLUMNS}"
            ),
            &[&id, &token::hash(&token), &agent_id, &role.as_str(), &ttl],
        )
        .await?;
    Ok(Created { session: from_row(&row), token, created: true })
}

/// The live session of `token`, if any: malformed, unknown, revoked and expired tokens are all
/// `None`. The lookup is by the token's hash, so its timing says nothing about the token.
pub async fn authenticate(pool: &Pool, token: &str) -> Result<Option<Session>, SessionError> {
    if !token::well_formed(token) {
        return Ok(None);
    }
    let hash = token::hash(token);
    let row = pool
        .get()
        .await?
        .query_opt(
            &format!(
                "SELECT {COLUMNS}, token_hash FROM desk_sessions
                 WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()"
            ),
            &[&hash],
        )
        .await?;
    Ok(row.filter(|r| bool::from(r.get::<_, &[u8]>(5).ct_eq(&hash))).map(|r| from_row(&r)))
}

/// The session `id`, live or not (`None`: no such session), and whether it is live.
pub async fn get(pool: &Pool, id: &str) -> Result<Option<(Session, bool)>, SessionError> {
    // A revoked session is gone for its readers, as after any DELETE; an expired one is still
    // shown (not live), so a CRM can tell "ran out" from "never existed".
    let row = pool
        .get()
        .await?
        .query_opt(
            &format!(
                "SELECT {COLUMNS}, expires_at > now() FROM desk_sessions WHERE id = $1 AND revoked_at IS NULL"
            ),
            &[&id],
        )
        .await?;
    Ok(row.map(|r| (from_row(&r), r.get(5))))
}

/// Revokes session `id`; `false` when there is no such session. Revoking twice is harmless.
pub async fn revoke(pool: &Pool, id: &str) -> Result<bool, SessionError> {
    let client = pool.get().await?;
    let updated = client
        .execute("UPDATE desk_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", &[&id])
        .await?;
    if updated > 0 {
        return Ok(true);
    }
    Ok(client.query_opt("SELECT 1 FROM desk_sessions WHERE id = $1", &[&id]).await?.is_some())
}
