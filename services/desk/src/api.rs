//! The desk's HTTP surface (port 8084), documented in `docs/desk.md` and `docs/openapi.yaml`:
//! - with an API token (`api.tokens`, the CRM back end's): sessions and screen-pop settings;
//! - with a session token (the agent's browser): the streams, status, recent calls,
//!   click-to-call, logout. These allow any origin (CORS), since a CRM page on its own origin
//!   calls them with a bearer token and no cookie;
//! - public: the SDK (`/sdk/switchboard-desk.js`), the panel (`/panel`), `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;

use ::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_core::http::{self, Body, Health, StreamingBody};
use switchboard_model::AgentStatusValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::desk::{Desk, DeskError};
use crate::originate;
use crate::screen_pop::{self, ScreenPopInput};
use crate::sessions::{self, Role, Session, Who};
use crate::stream;

const SDK: &str = include_str!("../assets/switchboard-desk.js");
const PANEL: &str = include_str!("../assets/panel.html");
/// Largest request body (a session or screen-pop request is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

pub(crate) type Answer = Response<StreamingBody>;

/// The request handler, shared by every connection.
#[derive(Debug)]
pub struct Api {
    pub desk: Arc<Desk>,
    pub health: Arc<Health>,
    /// Streams this replica may still open (`desk.max_streams`).
    pub stream_slots: Arc<Semaphore>,
    /// Ends the streams on shutdown.
    pub cancel: CancellationToken,
}

fn answer(response: Response<Body>) -> Answer {
    response.map(StreamingBody::from)
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    answer(http::error(status, code, message))
}

pub(crate) fn json(status: StatusCode, value: &Value) -> Answer {
    answer(http::json(status, value))
}

pub(crate) fn unavailable(failure: &dyn std::error::Error) -> Answer {
    tracing::warn!(error = %switchboard_core::pg::error_chain(failure), "Desk request failed on a dependency.");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the desk cannot reach its database or Kafka; retry",
    )
}

pub(crate) fn auth_invalid() -> Answer {
    error(
        StatusCode::UNAUTHORIZED,
        "auth_invalid",
        "the session token is missing, unknown, expired or revoked",
    )
}

/// Adds the CORS headers of a session-token endpoint: any origin, no credentials.
pub(crate) fn cors(mut response: Answer) -> Answer {
    let headers = response.headers_mut();
    let _ = headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

fn preflight() -> Answer {
    let mut response = Response::new(StreamingBody::from(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    let _ = headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    let _ = headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT"));
    let _ = headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, last-event-id"),
    );
    let _ = headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

pub(crate) async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Answer> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body is over {MAX_BODY} bytes"))
        })?
        .to_bytes();
    let bad = |message: String| error(StatusCode::BAD_REQUEST, "bad_request", message);
    // An object, whose fields are present or absent: serde would also read a struct from an
    // array of its values, and an optional field from `null`.
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let Some(object) = value.as_object() else { return Err(bad("the body must be a JSON object".into())) };
    if let Some((name, _)) = object.iter().find(|(_, v)| v.is_null()) {
        return Err(bad(format!("{name}: null is not a value; leave the field out")));
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

fn static_file(
    content_type: &'static str,
    body: &'static str,
    extra: &[(header::HeaderName, String)],
) -> Answer {
    let mut response = Response::new(StreamingBody::from(Full::new(Bytes::from_static(body.as_bytes()))));
    let headers = response.headers_mut();
    let _ = headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let _ = headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            let _ = headers.insert(name.clone(), value);
        }
    }
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    keep: bool,
    /// A JSON number with no fraction (`3600` or `3600.0`, both integers to JSON Schema).
    #[serde(default)]
    ttl_secs: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    status: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    number: String,
    /// Which source's PBX places it; may be left out when the agent has an id at only one
    /// source, or there is only one source.
    #[serde(default)]
    source_id: Option<String>,
    #[serde(default)]
    caller_id: Option<String>,
}

impl Api {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, _remote: SocketAddr) -> Answer {
        if let Some(probe) = http::probe_response(&req, &self.health) {
            return answer(probe);
        }
        // Each segment percent-decoded (`%2A` is the default screen-pop's `*`); one that does not
        // decode to UTF-8 matches no route.
        let segments: Vec<String> = req
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .map(|segment| percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned())
            .collect();
        if segments.iter().any(|s| s.contains('\0')) {
            return error(StatusCode::NOT_FOUND, "not_found", "no such path");
        }
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        // HEAD is GET without the body (hyper sends none for it).
        let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
        let preflight_request =
            method == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        match (method, segments.as_slice()) {
            (Method::GET, ["sdk", "switchboard-desk.js"]) => static_file(
                "application/javascript; charset=utf-8",
                SDK,
                &[
                    (header::CACHE_CONTROL, "public, max-age=300".into()),
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".into()),
                ],
            ),
            (Method::GET, ["panel"]) => {
                let csp = format!(
                    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors {}",
                    self.desk.own.frame_ancestors
                );
                static_file(
                    "text/html; charset=utf-8",
                    PANEL,
                    &[
                        (header::CONTENT_SECURITY_POLICY, csp),
                        // The panel's URL carries the token: never send it on as a referrer.
                        (header::REFERRER_POLICY, "no-referrer".into()),
                        (header::CACHE_CONTROL, "no-store".into()),
                    ],
                )
            }
            (_, ["sdk", "switchboard-desk.js"] | ["panel"]) => answer(http::method_not_allowed("GET, HEAD")),
            // A browser's CORS preflight of a session-token request from a CRM page.
            (Method::OPTIONS, ["v1", "desk", ..]) if preflight_request => preflight(),
            (Method::POST, ["v1", "desk", "sessions"]) => self.api_token(req, Self::create_session).await,
            (Method::GET, ["v1", "desk", "sessions", id]) => {
                let id = (*id).to_owned();
                self.api_token(req, move |api, _| async move { api.get_session(&id).await }).await
            }
            (Method::DELETE, ["v1", "desk", "sessions", id]) => {
                let id = (*id).to_owned();
                self.api_token(req, move |api, _| async move { api.revoke(&id).await }).await
            }
            (_, ["v1", "desk", "sessions"]) => answer(http::method_not_allowed("POST")),
            (_, ["v1", "desk", "sessions", _]) => answer(http::method_not_allowed("GET, HEAD, DELETE")),
            (Method::GET, ["v1", "desk", "screen-pop", source]) => {
                let source = (*source).to_owned();
                self.api_token(req, move |api, _| async move { api.get_pop(&source) }).await
            }
            (Method::PUT, ["v1", "desk", "screen-pop", source]) => {
                let source = (*source).to_owned();
                self.api_token(req, move |api, req| async move { api.put_pop(&source, req).await }).await
            }
            (Method::DELETE, ["v1", "desk", "screen-pop", source]) => {
                let source = (*source).to_owned();
                self.api_token(req, move |api, _| async move { api.delete_pop(&source).await }).await
            }
            (_, ["v1", "desk", "screen-pop", _]) => {
                answer(http::method_not_allowed("GET, HEAD, PUT, DELETE"))
            }
            (Method::POST, ["v1", "desk", "originate"]) => self.api_token(req, Self::originate).await,
            (Method::GET, ["v1", "desk", "originate", id]) => {
                let id = (*id).to_owned();
                self.api_token(req, move |api, _| async move { api.originated(&id).await }).await
            }
            (Method::POST, ["v1", "desk", "originate", id, "hangup"]) => {
                let id = (*id).to_owned();
                self.api_token(req, move |api, _| async move { api.hang_up(&id).await }).await
            }
            (_, ["v1", "desk", "originate"] | ["v1", "desk", "originate", _, "hangup"]) => {
                answer(http::method_not_allowed("POST"))
            }
            (_, ["v1", "desk", "originate", _]) => answer(http::method_not_allowed("GET, HEAD")),
            (Method::GET, ["v1", "desk", "dispositions", source]) => {
                let source = (*source).to_owned();
                cors(
                    self.api_or_session(req, move |api, _, _| async move { api.get_codes(&source).await })
                        .await,
                )
            }
            (Method::PUT, ["v1", "desk", "dispositions", source]) => {
                let source = (*source).to_owned();
                self.api_token(req, move |api, req| async move { api.put_codes(&source, req).await }).await
            }
            (Method::DELETE, ["v1", "desk", "dispositions", source]) => {
                let source = (*source).to_owned();
                self.api_token(req, move |api, _| async move { api.delete_codes(&source).await }).await
            }
            (_, ["v1", "desk", "dispositions", _]) => {
                cors(answer(http::method_not_allowed("GET, HEAD, PUT, DELETE")))
            }
            (Method::GET, ["v1", "desk", "sources", source, "dispositions"]) => {
                let source = (*source).to_owned();
                cors(
                    self.api_or_session(
                        req,
                        move |api, _, _| async move { api.effective_codes(&source).await },
                    )
                    .await,
                )
            }
            (_, ["v1", "desk", "sources", _, "dispositions"]) => {
                cors(answer(http::method_not_allowed("GET, HEAD")))
            }
            (Method::PUT, ["v1", "desk", "calls", source, call, "disposition"]) => {
                let (source, call) = ((*source).to_owned(), (*call).to_owned());
                cors(
                    self.api_or_session(req, move |api, session, req| async move {
                        api.put_wrap_up(session, &source, &call, req).await
                    })
                    .await,
                )
            }
            (_, ["v1", "desk", "calls", _, _, "disposition"]) => {
                cors(answer(http::method_not_allowed("PUT")))
            }
            (Method::GET, ["v1", "desk", "stream"]) => cors(self.open_stream(req, true).await),
            (Method::GET, ["v1", "desk", "events"]) => cors(self.open_stream(req, false).await),
            (Method::POST, ["v1", "desk", "logout"]) => cors(self.with_session(req, Self::logout).await),
            (Method::GET, ["v1", "desk", "status"]) => cors(self.with_session(req, Self::get_status).await),
            (Method::PUT, ["v1", "desk", "status"]) => cors(self.with_session(req, Self::put_status).await),
            (Method::GET, ["v1", "desk", "calls"]) => cors(self.with_session(req, Self::calls).await),
            (Method::POST, ["v1", "desk", "call"]) => cors(self.with_session(req, Self::call).await),
            (_, ["v1", "desk", "stream" | "events" | "calls"]) => {
                cors(answer(http::method_not_allowed("GET")))
            }
            (_, ["v1", "desk", "status"]) => cors(answer(http::method_not_allowed("GET, PUT"))),
            (_, ["v1", "desk", "logout" | "call"]) => cors(answer(http::method_not_allowed("POST"))),
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such path"),
        }
    }

    /// Runs `then` if the request carries an API token.
    async fn api_token<F, Fut>(self: Arc<Self>, req: Request<Incoming>, then: F) -> Answer
    where
        F: FnOnce(Arc<Self>, Request<Incoming>) -> Fut,
        Fut: Future<Output = Answer>,
    {
        let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !self.desk.settings.api.authorizes(authorization) {
            return error(StatusCode::UNAUTHORIZED, "unauthorized", "a valid API token is required");
        }
        then(self, req).await
    }

    /// Runs `then` with no session when the request carries an API token, else with the live
    /// session of its bearer token.
    async fn api_or_session<F, Fut>(self: Arc<Self>, req: Request<Incoming>, then: F) -> Answer
    where
        F: FnOnce(Arc<Self>, Option<Session>, Request<Incoming>) -> Fut,
        Fut: Future<Output = Answer>,
    {
        let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if self.desk.settings.api.authorizes(authorization) {
            return then(self, None, req).await;
        }
        self.with_session(req, move |api, session, req| then(api, Some(session), req)).await
    }

    /// Runs `then` with the live session of the request's bearer token.
    async fn with_session<F, Fut>(self: Arc<Self>, req: Request<Incoming>, then: F) -> Answer
    where
        F: FnOnce(Arc<Self>, Session, Request<Incoming>) -> Fut,
        Fut: Future<Output = Answer>,
    {
        let Some(token) = bearer(req.headers()).map(str::to_owned) else { return auth_invalid() };
        match sessions::authenticate(&self.desk.pool, &token).await {
            Ok(Some(session)) => then(self, session, req).await,
            Ok(None) => auth_invalid(),
            Err(e) => unavailable(&e),
        }
    }

    async fn create_session(self: Arc<Self>, req: Request<Incoming>) -> Answer {
        let body: SessionRequest = match read_json(req).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        if [&body.agent_id, &body.email, &body.role]
            .iter()
            .any(|v| v.as_deref().is_some_and(|t| t.contains('\0')))
        {
            return error(StatusCode::BAD_REQUEST, "bad_request", "no field may hold a NUL character");
        }
        let who = match (body.agent_id, body.email) {
            (Some(id), None) if !id.trim().is_empty() => Who::Id(id.trim().to_owned()),
            (None, Some(email)) if email.contains('@') => Who::Email(email.trim().to_owned()),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "give exactly one of agent_id and email",
                );
            }
        };
        let Some(role) = Role::parse(body.role.as_deref().unwrap_or("agent")) else {
            return error(StatusCode::BAD_REQUEST, "bad_request", "role must be agent or supervisor");
        };
        let max = self.desk.own.session_ttl_secs;
        let ttl = match body.ttl_secs {
            None => max,
            Some(ttl) if ttl.fract() == 0.0 && (60.0..=max as f64).contains(&ttl) => ttl as u64,
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("ttl_secs must be an integer, 60..={max}"),
                );
            }
        };
        let key = self.desk.own.token_key.expose().as_bytes();
        match sessions::create(&self.desk.pool, key, &who, role, body.keep, ttl).await {
            Ok(created) => {
                let status = if created.created { StatusCode::CREATED } else { StatusCode::OK };
                let mut value = json!(created.session);
                if let Some(fields) = value.as_object_mut() {
                    let token = &created.token;
                    fields.insert("token".into(), json!(token));
                    fields.insert("stream_url".into(), json!(format!("/v1/desk/stream?token={token}")));
                    fields.insert("events_url".into(), json!(format!("/v1/desk/events?token={token}")));
                    fields.insert("panel_url".into(), json!(format!("/panel?token={token}")));
                }
                json(status, &value)
            }
            Err(sessions::SessionError::NoSuchAgent) => error(
                StatusCode::NOT_FOUND,
                "no_such_agent",
                "no agent of the directory has that id or email",
            ),
            Err(e) => unavailable(&e),
        }
    }

    async fn get_session(&self, id: &str) -> Answer {
        match sessions::get(&self.desk.pool, id).await {
            Ok(Some((session, live))) => {
                let mut value = json!(session);
                if let Some(fields) = value.as_object_mut() {
                    fields.insert("live".into(), json!(live));
                }
                json(StatusCode::OK, &value)
            }
            Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such session"),
            Err(e) => unavailable(&e),
        }
    }

    async fn revoke(&self, id: &str) -> Answer {
        match sessions::revoke(&self.desk.pool, id).await {
            Ok(true) => {
                // This replica at once; the others through the database's notification.
                self.desk.hub.close_session(id, crate::hub::CloseReason::Revoked);
                no_content()
            }
            Ok(false) => error(StatusCode::NOT_FOUND, "not_found", "no such session"),
            Err(e) => unavailable(&e),
        }
    }

    async fn logout(self: Arc<Self>, session: Session, _req: Request<Incoming>) -> Answer {
        self.revoke(&session.id).await
    }

    fn get_pop(&self, source: &str) -> Answer {
        let pops = self.desk.screen_pops();
        match pops.own(source) {
            Some(pop) => json(StatusCode::OK, &pop.to_json(source)),
            None => error(StatusCode::NOT_FOUND, "not_found", "no screen-pop for that source"),
        }
    }

    async fn put_pop(&self, source: &str, req: Request<Incoming>) -> Answer {
        if source != screen_pop::DEFAULT_SOURCE && sessions_id_invalid(source) {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the source id is not a valid id (or * for the default)",
            );
        }
        let input: ScreenPopInput = match read_json(req).await {
            Ok(input) => input,
            Err(refused) => return refused,
        };
        let pop = match input.parse() {
            Ok(pop) => pop,
            Err(e) => {
                return json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"error": "invalid_template", "message": e.to_string(), "position": e.position}),
                );
            }
        };
        match screen_pop::put(&self.desk.pool, source, &pop).await {
            Ok(created) => {
                self.reload_pops().await;
                json(if created { StatusCode::CREATED } else { StatusCode::OK }, &pop.to_json(source))
            }
            Err(e) => unavailable(&e),
        }
    }

    async fn delete_pop(&self, source: &str) -> Answer {
        match screen_pop::delete(&self.desk.pool, source).await {
            Ok(true) => {
                self.reload_pops().await;
                no_content()
            }
            Ok(false) => error(StatusCode::NOT_FOUND, "not_found", "no screen-pop for that source"),
            Err(e) => unavailable(&e),
        }
    }

    /// This replica sees its own change at once; the others on the notification.
    async fn reload_pops(&self) {
        match screen_pop::load(&self.desk.pool).await {
            Ok(pops) => self.desk.replace_screen_pops(pops),
            Err(error) => tracing::warn!(%error, "Cannot reload the screen-pops; the listener will."),
        }
    }

    async fn get_status(self: Arc<Self>, session: Session, _req: Request<Incoming>) -> Answer {
        match self.desk.statuses(&session).await {
            Ok(value) => json(StatusCode::OK, &value),
            Err(e) => unavailable(&e),
        }
    }

    async fn put_status(self: Arc<Self>, session: Session, req: Request<Incoming>) -> Answer {
        let body: StatusRequest = match read_json(req).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        let Some(status) = AgentStatusValue::parse(&body.status) else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "status must be available, break or offline",
            );
        };
        match self.desk.set_status(&session, status).await {
            Ok(()) => json(StatusCode::OK, &json!({"agent_id": session.agent_id, "status": status.as_str()})),
            Err(e) => unavailable(&e),
        }
    }

    async fn calls(self: Arc<Self>, session: Session, req: Request<Incoming>) -> Answer {
        let limit = match query_param(&req, "limit").map(|l| l.parse::<i64>()) {
            None => 20,
            Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
            Some(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "limit must be 1..=100"),
        };
        match self.desk.recent_calls(&session.agent_id, limit).await {
            Ok(value) => json(StatusCode::OK, &value),
            Err(e) => unavailable(&e),
        }
    }

    async fn call(self: Arc<Self>, session: Session, req: Request<Incoming>) -> Answer {
        let key = match idempotency_key(req.headers()) {
            Ok(key) => key,
            Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_request", reason),
        };
        let body: CallRequest = match read_json(req).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        if body.number.trim().is_empty() || body.number.chars().count() > 64 {
            return error(StatusCode::BAD_REQUEST, "bad_request", "number must be 1-64 characters");
        }
        if has_nul(&[Some(&body.number), body.source_id.as_ref(), body.caller_id.as_ref()]) {
            return error(StatusCode::BAD_REQUEST, "bad_request", "no field may hold a NUL character");
        }
        let source_id = match body.source_id {
            Some(source) => source,
            None => match self.only_source(&session).await {
                Ok(Some(source)) => source,
                Ok(None) => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "not_supported",
                        "click-to-call is not supported by this source: name source_id (the agent works at several sources, or none places calls)",
                    );
                }
                Err(e) => return unavailable(&e),
            },
        };
        let input = originate::OriginateInput {
            source_id,
            agent: originate::AgentInput {
                id: Some(session.agent_id.clone()),
                extension: None,
                number: None,
            },
            destination: body.number,
            caller_id: body.caller_id,
        };
        match originate::place(&self.desk, originate::Via::Desk(&session), key.as_deref(), &input).await {
            Ok((status, body)) => json(status, &body),
            Err(e) => unavailable(&e),
        }
    }

    /// The source an agent's click goes through when it names none: the one source where the
    /// agent has a PBX id, else the only enabled source.
    async fn only_source(&self, session: &Session) -> Result<Option<String>, DeskError> {
        let directory = self.desk.directory.snapshot();
        let own: Vec<String> = directory
            .as_ref()
            .and_then(|d| d.agent(&session.agent_id))
            .and_then(|a| a.external_ids.as_object().map(|ids| ids.keys().cloned().collect()))
            .unwrap_or_default();
        if own.len() == 1 {
            return Ok(own.into_iter().next());
        }
        let rows = self
            .desk
            .pool
            .get()
            .await
            .map_err(sessions::SessionError::from)?
            .query("SELECT id FROM sources WHERE disabled_at IS NULL LIMIT 2", &[])
            .await?;
        Ok(match rows.as_slice() {
            [only] => Some(only.get(0)),
            _ => None,
        })
    }

    async fn originate(self: Arc<Self>, req: Request<Incoming>) -> Answer {
        let key = match idempotency_key(req.headers()) {
            Ok(key) => key,
            Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_request", reason),
        };
        let input: originate::OriginateInput = match read_json(req).await {
            Ok(input) => input,
            Err(refused) => return refused,
        };
        if has_nul(&[
            Some(&input.source_id),
            Some(&input.destination),
            input.caller_id.as_ref(),
            input.agent.id.as_ref(),
            input.agent.extension.as_ref(),
            input.agent.number.as_ref(),
        ]) {
            return error(StatusCode::BAD_REQUEST, "bad_request", "no field may hold a NUL character");
        }
        match originate::place(&self.desk, originate::Via::Api, key.as_deref(), &input).await {
            Ok((status, body)) => json(status, &body),
            Err(e) => unavailable(&e),
        }
    }

    async fn originated(&self, request_id: &str) -> Answer {
        match originate::get(&self.desk, request_id).await {
            Ok(Some(value)) => json(StatusCode::OK, &value),
            Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such click-to-call request"),
            Err(e) => unavailable(&e),
        }
    }

    async fn hang_up(&self, request_id: &str) -> Answer {
        match originate::hang_up(&self.desk, request_id).await {
            Ok((StatusCode::NO_CONTENT, _)) => no_content(),
            Ok((status, body)) => json(status, &body),
            Err(e) => unavailable(&e),
        }
    }

    /// Opens a WebSocket (`websocket`) or Server-Sent Events stream for the session of the
    /// `token` parameter.
    async fn open_stream(self: Arc<Self>, mut req: Request<Incoming>, websocket: bool) -> Answer {
        let Some(token) = query_param(&req, "token") else { return auth_invalid() };
        let session = match sessions::authenticate(&self.desk.pool, &token).await {
            Ok(Some(session)) => Arc::new(session),
            Ok(None) => return auth_invalid(),
            Err(e) => return unavailable(&e),
        };
        // EventSource sends Last-Event-ID by itself when it reconnects; it wins.
        let last = req
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query_param(&req, "last_event_id"))
            .filter(|id| !id.is_empty() && id.len() <= 64);
        let accept = if websocket {
            match websocket_accept(req.headers()) {
                Ok(accept) => Some(accept),
                Err(message) => return error(StatusCode::BAD_REQUEST, "not_websocket", message),
            }
        } else {
            None
        };
        let Ok(slot) = self.stream_slots.clone().try_acquire_owned() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "this replica holds its maximum of streams; retry",
            );
        };
        let status = match self.desk.status_of(&session.agent_id).await {
            Ok(status) => status,
            Err(e) => return unavailable(&e),
        };
        let groups = self.desk.supervised_groups(&session);
        let transport = if websocket { "websocket" } else { "sse" };
        let attached = self.desk.hub.attach(session.clone(), groups, transport, last.as_deref());
        let (desk, cancel) = (self.desk.clone(), self.cancel.clone());
        if let Some(accept) = accept {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let _slot = slot;
                match upgrade.await {
                    Ok(upgraded) => {
                        stream::websocket(desk, session, attached, status, upgraded, cancel).await
                    }
                    Err(error) => {
                        desk.hub.detach(attached.id);
                        tracing::debug!(%error, "WebSocket upgrade failed.");
                    }
                }
            });
            let mut response = Response::new(StreamingBody::from(Full::new(Bytes::new())));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            let _ = headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            let _ = headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            if let Ok(accept) = HeaderValue::from_str(&accept) {
                let _ = headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            }
            return response;
        }
        let body = stream::sse(desk, session, attached, status, cancel, slot);
        let mut response = Response::new(StreamingBody::new(body));
        let headers = response.headers_mut();
        let _ = headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        let _ = headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // nginx and similar proxies buffer responses unless told not to.
        let _ = headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}

/// The `Idempotency-Key` header (1 to 255 visible ASCII characters), if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err("Idempotency-Key must be 1 to 255 visible ASCII characters"),
    }
}

pub(crate) fn has_nul(values: &[Option<&String>]) -> bool {
    values.iter().flatten().any(|v| v.contains('\0'))
}

pub(crate) fn no_content() -> Answer {
    let mut response = Response::new(StreamingBody::from(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

pub(crate) fn sessions_id_invalid(source: &str) -> bool {
    source.is_empty()
        || source.len() > 128
        || !source.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b))
}

/// The `Sec-WebSocket-Accept` of a valid WebSocket upgrade request (RFC 6455 §4.2.1), or why it
/// is not one.
fn websocket_accept(headers: &HeaderMap) -> Result<String, &'static str> {
    let has = |name: header::HeaderName, word: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case(word))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err("this path is a WebSocket: send Upgrade: websocket (or use /v1/desk/events)");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or("Sec-WebSocket-Key is missing")?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}
