//! What every request and stream of one desk replica shares: the database, the hub of streams,
//! the directory and screen-pop snapshots, the status producer. Also the two effects a session
//! can have: setting its agent's status, and reading its agent's recent calls.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};
use switchboard_core::avro::Codecs;
use switchboard_core::config::Settings;

use crate::DeskSettings;
use switchboard_core::kafka::{self, Outbound};
use switchboard_directory::SharedDirectory;
use switchboard_model::{AgentStatus, AgentStatusValue};

use crate::hub::Hub;
use crate::screen_pop::ScreenPops;
use crate::sessions::{Role, Session, SessionError};

pub struct Desk {
    pub pool: Pool,
    pub settings: Settings,
    /// The `[desk]` section.
    pub own: DeskSettings,
    pub hub: Hub,
    pub directory: SharedDirectory,
    pub pops: RwLock<Arc<ScreenPops>>,
    pub producer: FutureProducer,
    pub codecs: Arc<Codecs>,
    pub status_topic: String,
    /// Where wrap-ups go, as call events the call log folds (`wrap_up`).
    pub enriched_topic: String,
    pub keepalive: Duration,
    /// Click-to-call's client of the vendors' APIs.
    pub transport: switchboard_originate::Transport,
    /// Opens the sources' sealed secrets (their vendor API credentials).
    pub sealer: switchboard_core::seal::Sealer,
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk")
            .field("hub", &self.hub)
            .field("status_topic", &self.status_topic)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("Kafka did not acknowledge the record in time")]
    KafkaTimeout,
    #[error("Kafka refused the record: {0}")]
    Kafka(#[source] kafka::ProduceError),
    #[error("cannot encode the record: {0}")]
    Codec(#[from] switchboard_core::avro::CodecError),
    #[error("invalid value: {0}")]
    Invalid(String),
}

impl Desk {
    pub fn screen_pops(&self) -> Arc<ScreenPops> {
        self.pops.read().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn replace_screen_pops(&self, pops: ScreenPops) {
        if let Ok(mut current) = self.pops.write() {
            *current = Arc::new(pops);
        }
    }

    /// The groups whose agents `session` sees beyond its own: a supervisor's groups.
    pub fn supervised_groups(&self, session: &Session) -> Vec<String> {
        if session.role != Role::Supervisor {
            return Vec::new();
        }
        self.directory
            .snapshot()
            .and_then(|d| d.agent(&session.agent_id).map(|a| a.groups.clone()))
            .unwrap_or_default()
    }

    /// Sets the status of `session`'s agent: stored, then published on the agent-status topic
    /// (every replica tells the streams from there). Answers once Kafka acknowledged it.
    pub async fn set_status(&self, session: &Session, status: AgentStatusValue) -> Result<(), DeskError> {
        let changed_at = Utc::now();
        self.pool
            .get()
            .await
            .map_err(SessionError::from)?
            .execute(
                "INSERT INTO desk_agent_status (agent_id, status, changed_at) VALUES ($1, $2, $3)
                 ON CONFLICT (agent_id) DO UPDATE SET status = EXCLUDED.status, changed_at = EXCLUDED.changed_at",
                &[&session.agent_id, &status.as_str(), &changed_at],
            )
            .await?;
        let record = AgentStatus {
            agent_id: session.agent_id.clone(),
            status,
            session_id: Some(session.id.clone()),
            changed_at,
        };
        let outbound = Outbound {
            topic: self.status_topic.clone(),
            key: Some(record.agent_id.clone().into_bytes()),
            payload: self.codecs.agent_status.encode(&record)?,
        };
        self.produce(&outbound).await
    }

    /// Produces `outbound`, answering once Kafka acknowledged it (transient errors retried with
    /// back-off) or the produce deadline passed.
    pub async fn produce(&self, outbound: &Outbound) -> Result<(), DeskError> {
        let timeout = Duration::from_millis(self.settings.kafka.produce_timeout_ms);
        let produce = kafka::produce_until_acked(
            &self.producer,
            outbound,
            "desk",
            Duration::from_millis(self.settings.pipeline.max_backoff_ms),
        );
        match tokio::time::timeout(timeout, produce).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(DeskError::Kafka(error)),
            Err(_) => Err(DeskError::KafkaTimeout),
        }
    }

    /// The stored status of `agent_id` (`offline` when never set).
    pub async fn status_of(&self, agent_id: &str) -> Result<String, DeskError> {
        let row = self
            .pool
            .get()
            .await
            .map_err(SessionError::from)?
            .query_opt("SELECT status FROM desk_agent_status WHERE agent_id = $1", &[&agent_id])
            .await?;
        Ok(row.map_or_else(|| "offline".to_owned(), |r| r.get(0)))
    }

    /// Every agent `session` sees (itself; a supervisor also its groups' agents) and its status.
    pub async fn statuses(&self, session: &Session) -> Result<Value, DeskError> {
        let groups = self.supervised_groups(session);
        let directory = self.directory.snapshot();
        let mut agents: Vec<(String, Option<String>)> = vec![(
            session.agent_id.clone(),
            directory.as_ref().and_then(|d| d.agent(&session.agent_id).map(|a| a.name.clone())),
        )];
        if let Some(directory) = &directory
            && !groups.is_empty()
        {
            for agent in directory.agents() {
                if agent.id != session.agent_id && agent.groups.iter().any(|g| groups.contains(g)) {
                    agents.push((agent.id.clone(), Some(agent.name.clone())));
                }
            }
        }
        let ids: Vec<&str> = agents.iter().map(|(id, _)| id.as_str()).collect();
        let rows = self
            .pool
            .get()
            .await
            .map_err(SessionError::from)?
            .query(
                "SELECT agent_id, status, changed_at FROM desk_agent_status WHERE agent_id = ANY($1)",
                &[&ids],
            )
            .await?;
        let list: Vec<Value> = agents
            .iter()
            .map(|(id, name)| {
                let row = rows.iter().find(|r| r.get::<_, &str>(0) == id);
                json!({
                    "agent_id": id,
                    "name": name,
                    "status": row.map_or("offline", |r| r.get::<_, &str>(1)),
                    "changed_at": row.map(|r| r.get::<_, chrono::DateTime<Utc>>(2)),
                })
            })
            .collect();
        Ok(json!({ "agents": list }))
    }

    /// The latest `limit` calls of `agent_id` (rang or answered on any leg), newest first.
    pub async fn recent_calls(&self, agent_id: &str, limit: i64) -> Result<Value, DeskError> {
        let rows = self
            .pool
            .get()
            .await
            .map_err(SessionError::from)?
            .query(
                "SELECT c.source_id, c.call_id, c.direction, c.from_number, c.to_number, c.status,
                        c.outcome, c.started_at, c.answered_at, c.ended_at, c.contact_ids
                 FROM calls c
                 WHERE EXISTS (SELECT 1 FROM call_legs l
                               WHERE l.source_id = c.source_id AND l.call_id = c.call_id
                                 AND l.agents <> '{}' AND l.agents @> ARRAY[$1::text])
                 ORDER BY c.started_at DESC LIMIT $2",
                &[&agent_id, &limit],
            )
            .await?;
        let calls: Vec<Value> = rows
            .iter()
            .map(|r| {
                let direction: &str = r.get(2);
                let customer: Option<String> = if direction == "outbound" { r.get(4) } else { r.get(3) };
                let started: chrono::DateTime<Utc> = r.get(7);
                let answered: Option<chrono::DateTime<Utc>> = r.get(8);
                let ended: Option<chrono::DateTime<Utc>> = r.get(9);
                let contacts: Vec<String> = r.get(10);
                json!({
                    "source_id": r.get::<_, &str>(0),
                    "call_id": r.get::<_, &str>(1),
                    "direction": direction,
                    "customer": {
                        "raw": customer,
                        "e164": customer.as_deref().filter(|n| n.starts_with('+')),
                    },
                    "status": r.get::<_, &str>(5),
                    "outcome": r.get::<_, Option<&str>>(6),
                    "started_at": started,
                    "answered_at": answered,
                    "ended_at": ended,
                    "duration_seconds": ended.map(|e| e.signed_duration_since(answered.unwrap_or(started)).num_seconds().max(0)),
                    "contact_id": match contacts.as_slice() { [only] => Some(only.clone()), _ => None },
                })
            })
            .collect();
        Ok(json!({ "calls": calls }))
    }
}
