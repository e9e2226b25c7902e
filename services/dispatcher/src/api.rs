//! The dispatcher's HTTP API (port 8083, bearer tokens of `api.tokens`): delivery profiles and
//! deliveries.
//!
//! - `GET /v1/profiles`, `GET|PUT|DELETE /v1/profiles/{id}`: a profile is validated by the library
//!   when saved (a bad template is a 400 with the reason and its line and column); secrets are
//!   never shown back (`***`).
//! - `PUT /v1/profiles/{id}/connector` with `{"connector": "hubspot", "settings": {...}}`: the
//!   built-in profile of that CRM (`GET /v1/connectors` names them), saved as any profile.
//! - `POST /v1/profiles/{id}/enable|pause|disable`.
//! - `POST /v1/profiles/{id}/test` with `{"call_id": ..., "dry_run": true}` (a call the dispatcher
//!   has seen) or `{"record": <a call record>}`: the rendered request, and with `dry_run: false`
//!   the receiver's answer (status, headers, first 4 KiB).
//! - `POST /v1/profiles/{id}/replay?from=&to=&status=failed|discarded`: queues those deliveries
//!   again from the start of their schedule.
//! - `GET /v1/deliveries?profile=&status=&limit=`, `GET /v1/deliveries/{id}` (with its attempt
//!   log), `POST /v1/deliveries/{id}/replay`.
//!
//! `/healthz` and `/readyz` answer here too, without a token.
//!
//! Inputs: requests. Outputs: JSON answers and rows. Nothing here sends a delivery except the
//! test endpoint with `dry_run: false`, which records nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::{Method, StatusCode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use switchboard_core::config::Settings;
use switchboard_core::http::{self, Body};
use switchboard_core::model::CallRecord;

use crate::DispatcherSettings;
use crate::cache::ProfileCache;
use crate::flow::{FlowState, Next};
use crate::profile::{Profile, ProfileError, valid_id};
use crate::seal::Sealer;
use crate::ssrf::{EgressPolicy, SsrfError};
use crate::store::{self, State, StoreError};
use crate::template::TemplateError;
use crate::values::CallValues;
use crate::worker::{self, subject_values};

/// Largest request body: a profile with templates is a few kilobytes.
const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// How much of a test answer is shown.
const TEST_BODY: usize = 4096;

#[derive(Debug)]
pub struct Api {
    pub pool: Pool,
    pub sealer: Arc<Sealer>,
    pub settings: Settings,
    /// The `[dispatcher]` section.
    pub own: DispatcherSettings,
    pub policy: EgressPolicy,
    pub profiles: ProfileCache,
    /// `/healthz` and `/readyz` answer on the API port too, as on ingress's, for load balancers
    /// that check the port they route to.
    pub health: Arc<http::Health>,
    /// OAuth access tokens for the test action's sends (the worker holds its own; both trade
    /// under the same row lock, so neither spends a refresh token the other rotated).
    pub tokens: crate::tokens::Tokens,
}

fn bad_request(message: impl Into<String>) -> Response<Body> {
    http::error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn not_found() -> Response<Body> {
    http::error(StatusCode::NOT_FOUND, "not_found", "no such object")
}

fn unavailable(error: &StoreError) -> Response<Body> {
    tracing::warn!(%error, "Dispatcher API: database error.");
    http::error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is unavailable; retry")
}

/// A refused profile, with the template position when the library gives one.
fn refused(error: &ProfileError) -> Response<Body> {
    let mut body = serde_json::Map::new();
    body.insert("error".to_owned(), json!("invalid_profile"));
    body.insert("message".to_owned(), json!(error.to_string()));
    if let ProfileError::Template { step, field, source } = error {
        body.insert("step".to_owned(), json!(step));
        body.insert("field".to_owned(), json!(field));
        if let TemplateError::Invalid { line, column, .. } = source {
            body.insert("position".to_owned(), json!({ "line": line, "column": column }));
        }
    }
    http::json(StatusCode::BAD_REQUEST, &Value::Object(body))
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// The body, or `None` when it is larger than [`MAX_REQUEST_BYTES`] or cut off.
async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), MAX_REQUEST_BYTES).collect().await.ok().map(|b| b.to_bytes())
}

/// Whether any text in `value` (keys included) holds a NUL, which PostgreSQL cannot store: such
/// a request is refused as bad, not failed as a database error.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(key, item)| key.contains('\0') || has_nul(item)),
        _ => false,
    }
}

fn too_large() -> Response<Body> {
    http::error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the body is too large")
}

impl Api {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, _remote: SocketAddr) -> Response<Body> {
        if let Some(probe) = http::probe_response(&req, &self.health) {
            return probe;
        }
        let authorization = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !self.settings.api.authorizes(authorization) {
            return http::error(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required");
        }
        let path = req.uri().path().to_owned();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // HEAD is GET without the body (hyper sends no body for it).
        let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
        match (method, parts.as_slice()) {
            (Method::GET, ["v1", "profiles"]) => match store::list_profiles(&self.pool).await {
                Ok(list) => http::json(StatusCode::OK, &json!({ "profiles": list })),
                Err(error) => unavailable(&error),
            },
            (Method::GET, ["v1", "profiles", id]) => match store::get_profile(&self.pool, id).await {
                Ok(Some(profile)) => http::json(StatusCode::OK, &profile),
                Ok(None) => not_found(),
                Err(error) => unavailable(&error),
            },
            (Method::PUT, ["v1", "profiles", id]) => {
                let id = (*id).to_owned();
                self.put(&id, req).await
            }
            (Method::PUT, ["v1", "profiles", id, "connector"]) => {
                let id = (*id).to_owned();
                self.put_connector(&id, req).await
            }
            (Method::GET, ["v1", "connectors"]) => {
                http::json(StatusCode::OK, &json!({ "connectors": crate::connectors::NAMES }))
            }
            (Method::DELETE, ["v1", "profiles", id]) => match store::delete_profile(&self.pool, id).await {
                Ok(true) => {
                    let _ = self.profiles.reload(&self.pool, &self.sealer).await;
                    Response::builder()
                        .status(StatusCode::NO_CONTENT)
                        .body(Body::default())
                        .unwrap_or_default()
                }
                Ok(false) => not_found(),
                Err(error) => unavailable(&error),
            },
            (Method::POST, ["v1", "profiles", id, action @ ("enable" | "pause" | "disable")]) => {
                let state = match *action {
                    "enable" => State::Enabled,
                    "pause" => State::Paused,
                    _ => State::Disabled,
                };
                let reason = (state == State::Disabled).then_some("disabled by an administrator");
                match store::set_state(&self.pool, id, state, reason).await {
                    Ok(true) => {
                        let _ = self.profiles.reload(&self.pool, &self.sealer).await;
                        http::json(StatusCode::OK, &json!({ "id": id, "state": state.as_str() }))
                    }
                    Ok(false) => not_found(),
                    Err(error) => unavailable(&error),
                }
            }
            (Method::POST, ["v1", "profiles", id, "replay"]) => {
                let q = query(&req);
                let time = |name: &str| -> Result<Option<DateTime<Utc>>, String> {
                    q.get(name)
                        .map(|t| {
                            DateTime::parse_from_rfc3339(t)
                                .map(|t| t.with_timezone(&Utc))
                                .map_err(|_| format!("{name} is not an RFC 3339 time"))
                        })
                        .transpose()
                };
                let (from, to) = match (time("from"), time("to")) {
                    (Ok(from), Ok(to)) => (from, to),
                    (Err(reason), _) | (_, Err(reason)) => return bad_request(reason),
                };
                let status = q.get("status").map_or("failed", String::as_str);
                if !matches!(status, "failed" | "discarded") {
                    return bad_request("status is failed or discarded");
                }
                match store::replay(&self.pool, None, Some(id), Some(status), from, to).await {
                    Ok(n) => http::json(StatusCode::OK, &json!({ "replayed": n })),
                    Err(error) => unavailable(&error),
                }
            }
            (Method::POST, ["v1", "profiles", id, "test"]) => {
                let id = (*id).to_owned();
                self.test(&id, req).await
            }
            (Method::GET, ["v1", "deliveries"]) => {
                let q = query(&req);
                let limit = match q.get("limit").map(|l| l.parse::<i64>()) {
                    None => 100,
                    Some(Ok(limit)) if (1..=1000).contains(&limit) => limit,
                    Some(_) => return bad_request("limit is an integer from 1 to 1000"),
                };
                let status = q.get("status").map(String::as_str);
                if status.is_some_and(|s| !matches!(s, "pending" | "delivered" | "failed" | "discarded")) {
                    return bad_request("status is pending, delivered, failed or discarded");
                }
                let profile = q.get("profile").map(String::as_str);
                if profile.is_some_and(|p| !valid_id(p)) {
                    return bad_request("a profile id is 1 to 64 of A-Z, a-z, 0-9, '-' and '_'");
                }
                match store::list_deliveries(&self.pool, profile, status, limit).await {
                    Ok(list) => http::json(StatusCode::OK, &json!({ "deliveries": list })),
                    Err(error) => unavailable(&error),
                }
            }
            (Method::GET, ["v1", "deliveries", id]) => match store::get_delivery(&self.pool, id).await {
                Ok(Some(delivery)) => http::json(StatusCode::OK, &delivery),
                Ok(None) => not_found(),
                Err(error) => unavailable(&error),
            },
            (Method::POST, ["v1", "deliveries", id, "replay"]) => {
                match store::replay(&self.pool, Some(id), None, None, None, None).await {
                    Ok(0) => http::error(
                        StatusCode::CONFLICT,
                        "not_replayable",
                        "no such delivery, or it is pending",
                    ),
                    Ok(n) => http::json(StatusCode::OK, &json!({ "replayed": n })),
                    Err(error) => unavailable(&error),
                }
            }
            // Known paths with another method: 405 and what they serve (RFC 9110).
            (
                _,
                ["v1", "profiles"] | ["v1", "deliveries"] | ["v1", "deliveries", _] | ["v1", "connectors"],
            ) => http::method_not_allowed("GET, HEAD"),
            (_, ["v1", "profiles", _]) => http::method_not_allowed("GET, HEAD, PUT, DELETE"),
            (_, ["v1", "profiles", _, "connector"]) => http::method_not_allowed("PUT"),
            (_, ["v1", "profiles", _, "enable" | "pause" | "disable" | "replay" | "test"])
            | (_, ["v1", "deliveries", _, "replay"]) => http::method_not_allowed("POST"),
            _ => not_found(),
        }
    }

    async fn put(&self, id: &str, req: Request<Incoming>) -> Response<Body> {
        if !valid_id(id) {
            return bad_request("a profile id is 1 to 64 of A-Z, a-z, 0-9, '-' and '_'");
        }
        let Some(body) = read_body(req).await else { return too_large() };
        let profile = match std::str::from_utf8(&body).map_err(|_| "the body is not UTF-8") {
            Ok(text) if serde_json::from_str::<Value>(text).is_ok_and(|v| has_nul(&v)) => {
                return bad_request("the profile holds a NUL character (\\u0000), which no field may");
            }
            Ok(text) => match Profile::from_json(text) {
                Ok(profile) => profile,
                Err(error) => return refused(&error),
            },
            Err(reason) => return bad_request(reason),
        };
        self.save(id, profile).await
    }

    /// A connector's profile for the CRM settings in the body, saved as [`Api::put`] saves one.
    async fn put_connector(&self, id: &str, req: Request<Incoming>) -> Response<Body> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Choice {
            connector: String,
            #[serde(default)]
            settings: Value,
        }
        if !valid_id(id) {
            return bad_request("a profile id is 1 to 64 of A-Z, a-z, 0-9, '-' and '_'");
        }
        let Some(body) = read_body(req).await else { return too_large() };
        let choice: Choice = match serde_json::from_slice(&body) {
            Ok(choice) => choice,
            Err(error) => {
                return bad_request(format!(
                    "expected {{\"connector\": <name>, \"settings\": {{...}}}}: {error}"
                ));
            }
        };
        if has_nul(&choice.settings) || choice.connector.contains('\0') {
            return bad_request("the settings hold a NUL character (\\u0000), which no field may");
        }
        match crate::connectors::by_name(&choice.connector, choice.settings) {
            Ok(profile) => self.save(id, profile).await,
            Err(crate::connectors::ConnectorError::Profile { source, .. }) => refused(&source),
            Err(error) => http::error(
                StatusCode::BAD_REQUEST,
                "invalid_connector_settings",
                switchboard_core::errors::chain(&error),
            ),
        }
    }

    async fn save(&self, id: &str, profile: Profile) -> Response<Body> {
        // A target the guard refuses is refused now rather than on every call; one that does not
        // resolve yet (a CRM being set up) is let through, and checked on every attempt anyway.
        for step in &profile.steps {
            let url = step.request.url_shown();
            if let Err(error @ SsrfError::Blocked { .. }) = self.policy.resolve_url(&url).await {
                return bad_request(format!("step {:?}: {error}", step.name));
            }
        }
        if let Some(oauth) = &profile.oauth
            && let Err(error @ SsrfError::Blocked { .. }) = self.policy.resolve_url(&oauth.token_url).await
        {
            return bad_request(format!("oauth.token_url: {error}"));
        }
        match store::put_profile(&self.pool, &self.sealer, id, &profile).await {
            Ok(created) => {
                let _ = self.profiles.reload(&self.pool, &self.sealer).await;
                let status = if created { StatusCode::CREATED } else { StatusCode::OK };
                match store::get_profile(&self.pool, id).await {
                    Ok(Some(stored)) => http::json(status, &stored),
                    Ok(None) => not_found(),
                    Err(error) => unavailable(&error),
                }
            }
            Err(error) => unavailable(&error),
        }
    }

    async fn test(&self, id: &str, req: Request<Incoming>) -> Response<Body> {
        let Some(stored) = self.profiles.get(id) else {
            // Saved a moment ago on another replica: look once more.
            let _ = self.profiles.reload(&self.pool, &self.sealer).await;
            let Some(stored) = self.profiles.get(id) else { return not_found() };
            return Box::pin(self.test_with(id, stored.profile, req)).await;
        };
        self.test_with(id, stored.profile, req).await
    }

    async fn test_with(&self, id: &str, profile: Profile, req: Request<Incoming>) -> Response<Body> {
        let Some(body) = read_body(req).await else { return too_large() };
        let input: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(&body) {
                Ok(value) => value,
                Err(error) => return bad_request(format!("the body is not JSON: {error}")),
            }
        };
        if has_nul(&input) {
            return bad_request("the body holds a NUL character (\\u0000), which no field may");
        }
        let dry_run = match input.get("dry_run") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(dry_run)) => *dry_run,
            Some(_) => return bad_request("dry_run is true or false"),
        };
        let values: CallValues = if let Some(record) = input.get("record") {
            match serde_json::from_value::<CallRecord>(record.clone()) {
                Ok(record) => CallValues::from_record(&record),
                Err(error) => return bad_request(format!("record: {error}")),
            }
        } else if let Some(call_id) = input.get("call_id").and_then(Value::as_str) {
            match store::latest_subject(&self.pool, call_id).await {
                Ok(Some((kind, subject))) => match subject_values(&kind, &subject, true) {
                    Ok(values) => values,
                    Err(error) => return bad_request(error),
                },
                Ok(None) => return bad_request(format!("the dispatcher has seen no call {call_id:?}")),
                Err(error) => return unavailable(&error),
            }
        } else {
            return bad_request("give call_id (a call the dispatcher has seen) or record (a call record)");
        };
        let values = values.with_crm_user(&profile.users);
        let flow = FlowState::default();
        let step = match flow.next(&profile, &values, Utc::now(), Utc::now(), crate::flow::DEFAULT_WAIT_LIMIT)
        {
            Next::Run(step) | Next::Wait { step, .. } | Next::Skip(step) => step,
            Next::Finished => return bad_request("the profile has no step"),
        };
        let request = match worker::prepare(&profile, step, &values, &flow, "msg_test") {
            Ok(request) => request,
            Err(error) => return bad_request(format!("step {:?} cannot be rendered: {error}", step.name)),
        };
        let timeout = Duration::from_millis(self.own.attempt_timeout_ms);
        let connections = crate::send::Connections::default();
        // Sent as the worker sends (with the profile's access token, traded again once if the CRM
        // turns it away); a dry run trades for no token: the request shows where it goes, as `***`.
        let (request, sent) = match &profile.oauth {
            None if dry_run => (request, None),
            None => {
                let sent = crate::send::send(&self.policy, &connections, &request, timeout, TEST_BODY).await;
                (request, Some(sent.map_err(|e| e.to_string())))
            }
            Some(oauth) => {
                let cx = crate::tokens::TokenContext {
                    pool: &self.pool,
                    sealer: &self.sealer,
                    policy: &self.policy,
                    connections: &connections,
                    timeout,
                };
                let sent = if dry_run {
                    None
                } else {
                    Some(self.tokens.send(&cx, id, oauth, &request, TEST_BODY).await)
                };
                match sent {
                    Some(Ok((sent_as, answer))) => (sent_as, Some(answer.map_err(|e| e.to_string()))),
                    // No token (a dry run, or none could be had, which is the answer's error).
                    no_token => {
                        let mut shown = request;
                        if let Err(error) = crate::oauth::apply(&mut shown, &oauth.send_as, None) {
                            return bad_request(format!("step {:?}: {error}", step.name));
                        }
                        (shown, no_token.and_then(Result::err).map(Err))
                    }
                }
            }
        };
        let headers: serde_json::Map<String, Value> = request
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if value.is_sensitive() { "***" } else { value.to_str().unwrap_or("") };
                (name.as_str().to_owned(), json!(shown))
            })
            .collect();
        let mut answer = serde_json::Map::new();
        answer.insert("step".to_owned(), json!(step.name));
        answer.insert(
            "request".to_owned(),
            json!({
                "method": request.method.as_str(),
                "url": request.shown_url,
                "headers": headers,
                "body": request.body_text(),
            }),
        );
        if let Some(sent) = sent {
            match sent {
                Ok(response) => {
                    let headers: serde_json::Map<String, Value> = response
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), json!(v.to_str().unwrap_or(""))))
                        .collect();
                    answer.insert(
                        "response".to_owned(),
                        json!({
                            "status": response.status,
                            "headers": headers,
                            "body": String::from_utf8_lossy(&response.body),
                            "latency_ms": u64::try_from(response.elapsed.as_millis()).unwrap_or(u64::MAX),
                        }),
                    );
                }
                Err(error) => {
                    answer.insert("error".to_owned(), json!(error.to_string()));
                }
            }
        }
        http::json(StatusCode::OK, &Value::Object(answer))
    }
}
