//! Click-to-call (#17) on the desk: a CRM back end (API token) or an agent's browser (session
//! token) asks for a call; the PBX rings the agent first, then the customer, through the vendor's
//! API (`switchboard-originate`).
//!
//! Idempotency: every request has a key (`Idempotency-Key`, or for an agent's click one derived
//! from the session, the number and a 10-second window), stored with a hash of the request
//! *before* the vendor is called, in one `INSERT … ON CONFLICT`. A second request with the same
//! key (a double click, a retried POST) gets the first request's answer and places nothing; the
//! same key with another request is a 422; a key is reusable after 24 hours. A vendor that does
//! not answer is a 502 stored like any answer: whether the call was placed cannot be known, so
//! the same key never tries again (a new key does).
//!
//! Linking: the row keeps the vendor's call id and command id; `GET /v1/desk/originate/{id}`
//! shows the call-log entry whose call id is one of them, once the call's webhooks arrive.

use std::time::Instant;

use crate::metrics;
use chrono::Utc;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_core::source_secrets::SourceSecrets;
use switchboard_model::{PhoneNumber, Region, Vendor};
use switchboard_originate::{AgentEndpoint, HangUpRequest, OriginateError, OriginateRequest, VendorSettings};

use crate::desk::{Desk, DeskError};
use crate::sessions::{Session, SessionError};

/// How long an idempotency key holds.
const KEY_HOURS: i32 = 24;

/// The body of `POST /v1/desk/originate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginateInput {
    pub source_id: String,
    pub agent: AgentInput,
    /// Any format; read in the source's region.
    pub destination: String,
    #[serde(default)]
    pub caller_id: Option<String>,
}

/// Who places the call: a directory agent, or an extension or number as the PBX knows it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInput {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub extension: Option<String>,
    #[serde(default)]
    pub number: Option<String>,
}

/// Who asked.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    Api,
    Desk(&'a Session),
}

/// An answer to give: status and body (stored, so that a repeat gets the same).
pub type Answer = (StatusCode, Value);

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    (status, json!({"error": code, "message": message.into()}))
}

pub(crate) struct Source {
    pub(crate) vendor: Vendor,
    pub(crate) region: Region,
    pub(crate) settings: VendorSettings,
}

pub(crate) async fn source(desk: &Desk, id: &str) -> Result<Option<Source>, DeskError> {
    let row = desk
        .pool
        .get()
        .await
        .map_err(SessionError::from)?
        .query_opt(
            "SELECT vendor, default_region, settings, signing_secret, secrets_sealed FROM sources
             WHERE id = $1 AND disabled_at IS NULL",
            &[&id],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (Ok(vendor), Ok(region)) =
        (row.get::<_, &str>(0).parse::<Vendor>(), row.get::<_, &str>(1).parse::<Region>())
    else {
        return Ok(None);
    };
    let mut settings: Value = row.get(2);
    // The secrets: sealed, or in plaintext in a row from before secrets were sealed.
    let secrets = match SourceSecrets::of_row(&desk.sealer, row.get(4), row.get(3), &mut settings) {
        Ok(secrets) => secrets,
        Err(error) => {
            tracing::error!(source = id, %error, "The source's secrets do not open (sources.secrets_key).");
            return Ok(None);
        }
    };
    if let (Some(map), Some(secret)) = (settings.as_object_mut(), &secrets.api_client_secret) {
        let _ = map.insert("api_client_secret".into(), Value::String(secret.expose().to_owned()));
    }
    // Settings the originate crate cannot read are a configuration problem of this source.
    let settings = VendorSettings::from_stored(&settings, secrets.signing_secret()).unwrap_or_default();
    Ok(Some(Source { vendor, region, settings }))
}

/// The agent's endpoint at `source_id`, and its directory id when it is a directory agent.
pub(crate) fn endpoint(
    desk: &Desk,
    source_id: &str,
    agent: &AgentInput,
    region: Region,
) -> Result<(AgentEndpoint, Option<String>), Answer> {
    let directory = desk.directory.snapshot();
    let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
    let (id, extension, number) = (text(&agent.id), text(&agent.extension), text(&agent.number));
    let number = match number {
        Some(n) => {
            Some(PhoneNumber::parse_lenient(&n, region).map(|p| p.as_str().to_owned()).ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("agent.number {n:?} is not a phone number"),
                )
            })?)
        }
        None => None,
    };
    let found = match (&id, &directory) {
        (Some(id), Some(d)) => Some(d.agent(id).ok_or_else(|| {
            refuse(StatusCode::NOT_FOUND, "no_such_agent", format!("no agent {id:?} in the directory"))
        })?),
        (None, Some(d)) => {
            d.find_agent(extension.as_deref(), number.as_deref(), None, region, false).map(|(a, _)| a)
        }
        (Some(_), None) => {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the directory is not loaded yet; retry",
            ));
        }
        (None, None) => None,
    };
    if id.is_none() && extension.is_none() && number.is_none() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "agent needs an id, an extension or a number",
        ));
    }
    let endpoint = AgentEndpoint {
        extension: extension.or_else(|| found.and_then(|a| a.extensions.first().cloned())),
        number: number.or_else(|| found.and_then(|a| a.phone_numbers.first().cloned())),
        vendor_id: found
            .and_then(|a| a.external_ids.get(source_id))
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    Ok((endpoint, found.map(|a| a.id.clone())))
}

/// The outcome of a vendor's answer: metric result, state, answer.
fn outcome(
    result: &Result<switchboard_originate::Originated, OriginateError>,
    base: &Value,
) -> (&'static str, &'static str, Answer) {
    let with = |status: StatusCode, extra: Value| {
        let mut body = base.clone();
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        (status, body)
    };
    match result {
        Ok(placed) => (
            "placed",
            "placed",
            with(
                StatusCode::CREATED,
                json!({"state": "placed", "vendor_call_id": placed.vendor_call_id, "command_id": placed.command_id, "vendor_answer": placed.raw}),
            ),
        ),
        Err(OriginateError::Refused { status, reason }) => (
            "refused",
            "refused",
            with(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"state": "refused", "error": "vendor_refused", "message": reason, "vendor_status": status}),
            ),
        ),
        Err(OriginateError::Unavailable(reason)) => (
            "unavailable",
            "failed",
            with(
                StatusCode::BAD_GATEWAY,
                json!({"state": "failed", "error": "vendor_unavailable", "message": reason}),
            ),
        ),
        Err(OriginateError::NotConfigured(reason)) => (
            "not_configured",
            "refused",
            with(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"state": "refused", "error": "not_configured", "message": reason}),
            ),
        ),
        Err(OriginateError::Invalid(reason)) => (
            "invalid",
            "refused",
            with(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"state": "refused", "error": "invalid", "message": reason}),
            ),
        ),
        Err(OriginateError::Unsupported(reason)) => (
            "unsupported",
            "refused",
            with(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "state": "refused",
                    "error": "not_supported",
                    "message": format!("click-to-call is not supported by this source: {reason}"),
                }),
            ),
        ),
    }
}

/// Places the call of `input` (once per idempotency key).
pub async fn place(
    desk: &Desk,
    via: Via<'_>,
    key: Option<&str>,
    input: &OriginateInput,
) -> Result<Answer, DeskError> {
    let Some(source) = source(desk, &input.source_id).await? else {
        return Ok(refuse(
            StatusCode::NOT_FOUND,
            "no_such_source",
            format!("no enabled source {:?}", input.source_id),
        ));
    };
    let Some(destination) = PhoneNumber::parse_lenient(&input.destination, source.region) else {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("destination {:?} is not a phone number", input.destination),
        ));
    };
    let (agent, agent_id) = match endpoint(desk, &input.source_id, &input.agent, source.region) {
        Ok(found) => found,
        Err(answer) => return Ok(answer),
    };
    if let Some(Via::Desk(session)) = Some(via)
        && agent_id.as_deref() != Some(session.agent_id.as_str())
    {
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an agent places calls only from their own phone",
        ));
    }
    let request = OriginateRequest {
        agent,
        destination: destination.as_str().to_owned(),
        caller_id: input.caller_id.clone().filter(|c| !c.trim().is_empty()),
        request_id: format!("sbc_{}", uuid::Uuid::now_v7().simple()),
    };
    let (via_name, session_id) = match via {
        Via::Api => ("api", None),
        Via::Desk(session) => ("desk", Some(session.id.clone())),
    };
    let key = match key {
        Some(key) => key.to_owned(),
        // A double click: the same session, number and 10-second window.
        None if session_id.is_some() => format!(
            "desk:{}:{}:{}",
            session_id.as_deref().unwrap_or_default(),
            request.destination,
            Utc::now().timestamp() / 10
        ),
        None => format!("auto:{}", request.request_id),
    };
    let hash = Sha256::digest(
        json!([input.source_id, request.agent, request.destination, request.caller_id])
            .to_string()
            .as_bytes(),
    )
    .to_vec();
    let vendor = source.vendor;
    let client = desk.pool.get().await.map_err(SessionError::from)?;
    let fresh = client
        .query_opt(
            &format!(
                "INSERT INTO originate_requests (source_id, idempotency_key, request_hash, request_id, agent_id,
                     destination, via, session_id, state)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')
                 ON CONFLICT (source_id, idempotency_key) DO UPDATE SET
                     request_hash = EXCLUDED.request_hash, request_id = EXCLUDED.request_id,
                     agent_id = EXCLUDED.agent_id, destination = EXCLUDED.destination, via = EXCLUDED.via,
                     session_id = EXCLUDED.session_id, state = 'pending', http_status = NULL, answer = NULL,
                     vendor_call_id = NULL, command_id = NULL, created_at = now(), finished_at = NULL
                 WHERE originate_requests.created_at < now() - interval '{KEY_HOURS} hours'
                 RETURNING request_id"
            ),
            &[&input.source_id, &key, &hash, &request.request_id, &agent_id, &request.destination, &via_name, &session_id],
        )
        .await?;
    if fresh.is_none() {
        metrics::ORIGINATE_REQUESTS.with_label_values(&[vendor.as_str(), "duplicate"]).inc();
        // A double click arrives while the first is still with the vendor: wait for its answer
        // (within the vendor's own deadline) rather than refuse the second.
        let (started, timeout) = (Instant::now(), desk.transport.config().timeout);
        loop {
            let row = client
                .query_one(
                    "SELECT request_hash, state, http_status, answer FROM originate_requests
                     WHERE source_id = $1 AND idempotency_key = $2",
                    &[&input.source_id, &key],
                )
                .await?;
            if row.get::<_, &[u8]>(0) != hash.as_slice() {
                return Ok(refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for another request",
                ));
            }
            let (status, answer): (Option<i32>, Option<Value>) = (row.get(2), row.get(3));
            let status =
                status.and_then(|s| u16::try_from(s).ok()).and_then(|s| StatusCode::from_u16(s).ok());
            if let (Some(status), Some(answer)) = (status, answer) {
                return Ok((status, answer));
            }
            if started.elapsed() >= timeout {
                return Ok(refuse(
                    StatusCode::CONFLICT,
                    "in_progress",
                    "the first request with this Idempotency-Key is still being placed",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    drop(client);

    let started = Instant::now();
    let result = switchboard_originate::originate(vendor, &source.settings, &request, &desk.transport).await;
    metrics::ORIGINATE_SECONDS.with_label_values(&[vendor.as_str()]).observe(started.elapsed().as_secs_f64());
    let base = json!({
        "request_id": request.request_id,
        "idempotency_key": key,
        "source_id": input.source_id,
        "vendor": vendor.as_str(),
        "agent_id": agent_id,
        "destination": request.destination,
    });
    let (result_label, state, (status, body)) = outcome(&result, &base);
    metrics::ORIGINATE_REQUESTS.with_label_values(&[vendor.as_str(), result_label]).inc();
    let (vendor_call_id, command_id) = match &result {
        Ok(placed) => (placed.vendor_call_id.clone(), placed.command_id.clone()),
        Err(_) => (None, None),
    };
    desk.pool
        .get()
        .await
        .map_err(SessionError::from)?
        .execute(
            "UPDATE originate_requests SET state = $3, http_status = $4, answer = $5, vendor_call_id = $6,
                 command_id = $7, finished_at = now()
             WHERE source_id = $1 AND idempotency_key = $2",
            &[
                &input.source_id,
                &key,
                &state,
                &i32::from(status.as_u16()),
                &body,
                &vendor_call_id,
                &command_id,
            ],
        )
        .await?;
    tracing::info!(source = %input.source_id, vendor = vendor.as_str(), result = result_label, request = %request.request_id, "Click-to-call.");
    Ok((status, body))
}

/// A placed call's request, with its call-log entry once the call's webhooks have arrived.
pub async fn get(desk: &Desk, request_id: &str) -> Result<Option<Value>, DeskError> {
    let client = desk.pool.get().await.map_err(SessionError::from)?;
    let Some(row) = client
        .query_opt(
            "SELECT o.source_id, o.idempotency_key, o.agent_id, o.destination, o.via, o.session_id, o.state,
                    o.http_status, o.vendor_call_id, o.command_id, o.created_at, o.finished_at,
                    c.call_id, c.status, c.outcome, c.direction, c.started_at, c.answered_at, c.ended_at
             FROM originate_requests o
             LEFT JOIN LATERAL (
                 SELECT call_id, status, outcome, direction, started_at, answered_at, ended_at FROM calls
                 WHERE calls.source_id = o.source_id AND calls.call_id IN (o.vendor_call_id, o.command_id)
                 LIMIT 1) c ON true
             WHERE o.request_id = $1",
            &[&request_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let call_id: Option<String> = row.get(12);
    Ok(Some(json!({
        "request_id": request_id,
        "source_id": row.get::<_, &str>(0),
        "idempotency_key": row.get::<_, &str>(1),
        "agent_id": row.get::<_, Option<&str>>(2),
        "destination": row.get::<_, &str>(3),
        "via": row.get::<_, &str>(4),
        "session_id": row.get::<_, Option<&str>>(5),
        "state": row.get::<_, &str>(6),
        "http_status": row.get::<_, Option<i32>>(7),
        "vendor_call_id": row.get::<_, Option<&str>>(8),
        "command_id": row.get::<_, Option<&str>>(9),
        "created_at": row.get::<_, chrono::DateTime<Utc>>(10),
        "finished_at": row.get::<_, Option<chrono::DateTime<Utc>>>(11),
        "call": call_id.map(|id| json!({
            "call_id": id,
            "status": row.get::<_, Option<&str>>(13),
            "outcome": row.get::<_, Option<&str>>(14),
            "direction": row.get::<_, Option<&str>>(15),
            "started_at": row.get::<_, Option<chrono::DateTime<Utc>>>(16),
            "answered_at": row.get::<_, Option<chrono::DateTime<Utc>>>(17),
            "ended_at": row.get::<_, Option<chrono::DateTime<Utc>>>(18),
        })),
    })))
}

/// Hangs up the call of request `request_id` where the vendor can.
pub async fn hang_up(desk: &Desk, request_id: &str) -> Result<Answer, DeskError> {
    let row = desk
        .pool
        .get()
        .await
        .map_err(SessionError::from)?
        .query_opt(
            "SELECT source_id, agent_id, COALESCE(vendor_call_id, command_id) FROM originate_requests
             WHERE request_id = $1 AND state = 'placed'",
            &[&request_id],
        )
        .await?;
    let Some(row) = row else {
        return Ok(refuse(StatusCode::NOT_FOUND, "not_found", "no placed call with that request id"));
    };
    let (source_id, agent_id): (String, Option<String>) = (row.get(0), row.get(1));
    let Some(call) = row.get::<_, Option<String>>(2) else {
        return Ok(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_supported",
            "the vendor named no call id to hang up",
        ));
    };
    let Some(source) = source(desk, &source_id).await? else {
        return Ok(refuse(StatusCode::NOT_FOUND, "no_such_source", "the call's source is gone"));
    };
    let agent = match agent_id {
        Some(id) => match endpoint(
            desk,
            &source_id,
            &AgentInput { id: Some(id), extension: None, number: None },
            source.region,
        ) {
            Ok((agent, _)) => agent,
            Err(_) => AgentEndpoint::default(),
        },
        None => AgentEndpoint::default(),
    };
    let request = HangUpRequest {
        vendor_call_id: call,
        agent,
        request_id: format!("sbh_{}", uuid::Uuid::now_v7().simple()),
    };
    let result =
        switchboard_originate::hang_up(source.vendor, &source.settings, &request, &desk.transport).await;
    let base = json!({"request_id": request_id});
    Ok(match result {
        Ok(()) => (StatusCode::NO_CONTENT, Value::Null),
        Err(error) => outcome(&Err(error), &base).2,
    })
}
