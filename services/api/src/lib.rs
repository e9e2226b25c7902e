//! api: the query API, the call log over HTTP and JSON for CRMs and operators
//! (`docs/openapi.yaml` describes it), and the stable recording links CRM users open.
//!
//! Inputs: `GET /v1/calls` (filters: time range, number in any format, agent, contact, outcome,
//! direction, status, recording status, source, completeness, blacklisted; keyset pages) and
//! `GET /v1/calls/{source_id}/{call_id}` (one call with its legs, events, agents, matched contacts
//! and recording), each with a bearer token from `api.tokens`, both saying whether the call's
//! external number is on the blacklist at the time of the query (`calls::BLACKLISTED`);
//! `GET /v1/recordings/{id}?token=`, whose signed, expiring token is its only credential (a CRM
//! user's browser opens it), answered
//! with a `302` to a fresh vendor link (`switchboard_recordings::serve`); `/healthz`, `/readyz`
//! and `/metrics` without one. Outputs: JSON; a bad filter is a 400 naming the parameter and the
//! reason, a missing or unknown token a 401 (a recording link's: 403), an unknown call a 404, a
//! database that does not answer a 503 with `Retry-After`.
//! Delivery: read-only, so any request may be retried. Ordering: lists are newest first by
//! (`started_at`, `source_id`, `call_id`), a total order, so pages neither skip nor repeat a call
//! while new calls arrive (they land on the first page).

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod calls;
pub mod filter;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::Datelike;
use deadpool_postgres::Pool;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use switchboard_core::config::{ApiSettings, Service, Settings};
use switchboard_core::http::{self as ops, Body, Health};
use switchboard_core::http_service::{self, HttpService};
use switchboard_core::model::{CallId, SourceId};
use switchboard_core::pg;
use switchboard_core::service::ServiceError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use switchboard_recordings::RecordingsSettings;
use switchboard_recordings::serve::{Links, Opened};

use crate::filter::ListQuery;

/// Everything a request handler shares.
struct Api {
    auth: ApiSettings,
    /// Set once PostgreSQL is reachable and migrated; until then `/v1` answers 503.
    pool: OnceLock<Pool>,
    health: Arc<Health>,
    links: Links,
}

/// Which endpoint answered, a bounded metric label.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    ListCalls,
    GetCall,
    RecordingLink,
    Other,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::ListCalls => "list_calls",
            Endpoint::GetCall => "get_call",
            Endpoint::RecordingLink => "recording_link",
            Endpoint::Other => "not_found",
        }
    }
}

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    Links::init_metrics();
    for endpoint in [Endpoint::ListCalls, Endpoint::GetCall, Endpoint::RecordingLink] {
        let _ = metrics::API_SECONDS.with_label_values(&[endpoint.label()]);
        let _ = metrics::API_REQUESTS.with_label_values(&[endpoint.label(), "200"]);
    }
    if settings.api.tokens.is_empty() {
        tracing::warn!("api.tokens is empty: every /v1 request will be refused with 401.");
    }
    let health = Health::new();
    let recordings: RecordingsSettings = settings.section()?;
    let links = Links::new(&settings, &recordings)
        .map_err(|e| ServiceError::Setup { what: "the sources' secrets key", source: Box::new(e) })?;
    if !links.configured() {
        tracing::warn!("recordings.link_key is empty: recording links will be answered 503.");
    }
    let api =
        Arc::new(Api { auth: settings.api.clone(), pool: OnceLock::new(), health: health.clone(), links });
    let spec =
        HttpService { service: Service::Api, settings: &settings, listener, health, cancel: cancel.clone() };
    // Probes answer, and /v1 answers 503, until the database is up.
    let start = async {
        let Some(pool) =
            pg::connect_and_migrate(&settings.postgres, switchboard_schema::MIGRATIONS, &cancel).await?
        else {
            return Ok(None);
        };
        let _ = api.pool.set(pool);
        Ok(Some(Vec::new()))
    };
    http_service::run(spec, api.clone(), start).await
}

fn unavailable() -> Response<Body> {
    let mut response =
        ops::error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the call log database is not reachable");
    let _ = response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn unauthorized() -> Response<Body> {
    let mut response = ops::error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send Authorization: Bearer <a token from api.tokens>",
    );
    let _ = response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

impl http_service::Handler for Api {
    async fn handle(&self, req: Request<Incoming>, _remote: SocketAddr) -> Response<Body> {
        if let Some(response) = ops::probe_response(&req, &self.health) {
            return response;
        }
        let started = Instant::now();
        let (endpoint, response) = self.route(&req).await;
        metrics::API_REQUESTS.with_label_values(&[endpoint.label(), response.status().as_str()]).inc();
        metrics::API_SECONDS.with_label_values(&[endpoint.label()]).observe(started.elapsed().as_secs_f64());
        response
    }
}

impl Api {
    async fn route(&self, req: &Request<Incoming>) -> (Endpoint, Response<Body>) {
        let path = req.uri().path();
        // Before the bearer check: a recording link's own token is its credential.
        if let Some(id) = path.strip_prefix("/v1/recordings/") {
            return (Endpoint::RecordingLink, self.recording_link(req, id).await);
        }
        let Some(rest) = path.strip_prefix("/v1/calls") else {
            return (Endpoint::Other, ops::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"));
        };
        let endpoint = if rest.is_empty() || rest == "/" { Endpoint::ListCalls } else { Endpoint::GetCall };
        if !rest.is_empty() && !rest.starts_with('/') {
            return (Endpoint::Other, ops::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"));
        }
        // Authentication before anything else, so that nobody learns which calls exist.
        let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !self.auth.authorizes(authorization) {
            return (endpoint, unauthorized());
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = ops::error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
            let _ = response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return (endpoint, response);
        }
        let Some(pool) = self.pool.get() else {
            return (endpoint, unavailable());
        };
        // A stalled database answers nothing: past the deadline the client hears so at once.
        let deadline = Duration::from_millis(self.auth.query_timeout_ms);
        let query = async {
            match endpoint {
                Endpoint::ListCalls => list(pool, req.uri().query()).await,
                _ => get(pool, rest.trim_start_matches('/')).await,
            }
        };
        let response = tokio::time::timeout(deadline, query).await.unwrap_or_else(|_| {
            tracing::warn!(?deadline, "A call-log query took longer than api.query_timeout_ms.");
            unavailable()
        });
        (endpoint, response)
    }
}

impl Api {
    /// `GET /v1/recordings/{id}?token=`: a `302` to a fresh vendor link, or why not. The answers
    /// say little: whoever holds a link may see that it works, not why the vendor refused.
    async fn recording_link(&self, req: &Request<Incoming>, id: &str) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = ops::error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
            let _ = response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let token = filter::form_pairs(req.uri().query().unwrap_or(""))
            .into_iter()
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value);
        let mut response = match self.links.open(self.pool.get(), id, token.as_deref()).await {
            Opened::Redirect(url) => match HeaderValue::from_str(&url) {
                Ok(location) => {
                    let mut response = Response::new(Body::default());
                    *response.status_mut() = StatusCode::FOUND;
                    let headers = response.headers_mut();
                    let _ = headers.insert(header::LOCATION, location);
                    // Referrer: the link's token must not travel to the vendor.
                    let _ = headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
                    response
                }
                Err(_) => {
                    ops::error(StatusCode::BAD_GATEWAY, "bad_gateway", "the vendor's link is not usable")
                }
            },
            Opened::Refused(_) => ops::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this recording link is not valid or has expired",
            ),
            Opened::NotFound { retry } => {
                let mut response = ops::error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    if retry {
                        "the recording is not available from the phone system yet; try again in a minute"
                    } else {
                        "the recording is not available"
                    },
                );
                if retry {
                    let _ =
                        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                }
                response
            }
            Opened::VendorFailed => ops::error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the phone system did not give a link to this recording; try again later",
            ),
            Opened::Unavailable => unavailable(),
        };
        // A fresh vendor link each time: nothing here may be cached.
        let _ = response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

fn bad_request(message: String) -> Response<Body> {
    ops::error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn read_failed(error: calls::ReadError) -> Response<Body> {
    tracing::warn!(error = %switchboard_core::pg::error_chain(&error), "Call-log query failed.");
    unavailable()
}

/// What the filters can hold that no call can: PostgreSQL text never holds NUL, and a cursor
/// this API issued names a stored call (a valid source and call id, a time PostgreSQL can hold).
/// Refused here, so that they are a 400 and never a database error.
fn impossible_filter(filters: &ListQuery) -> Option<String> {
    for (name, value) in [("agent", &filters.agent), ("contact", &filters.contact), ("tag", &filters.tag)] {
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Some(format!("{name}: NUL characters are not allowed"));
        }
    }
    let cursor = filters.cursor.as_ref()?;
    let year = cursor.started_at.year();
    let issued = SourceId::parse(cursor.source_id.as_str()).is_ok()
        && CallId::parse(cursor.call_id.as_str()).is_ok()
        && (1..=9999).contains(&year);
    (!issued).then(|| "cursor: not a cursor this API issued (pass next_cursor unchanged)".to_owned())
}

async fn list(pool: &Pool, query: Option<&str>) -> Response<Body> {
    // The source's own region reads national numbers filtered within one source; a source id
    // that is not one is left to the filter's 400.
    let source = filter::form_pairs(query.unwrap_or(""))
        .into_iter()
        .find(|(name, _)| name == "source")
        .and_then(|(_, v)| SourceId::parse(v).ok());
    let region = match &source {
        Some(source) => match calls::source_region(pool, source.as_str()).await {
            Ok(region) => region,
            Err(error) => return read_failed(error),
        },
        None => None,
    };
    let filters = match ListQuery::parse(query, |_| region.clone()) {
        Ok(filters) => filters,
        Err(error) => return bad_request(error.0),
    };
    if let Some(message) = impossible_filter(&filters) {
        return bad_request(message);
    }
    match calls::list(pool, &filters).await {
        Ok(page) => ops::json(StatusCode::OK, &page),
        Err(error) => read_failed(error),
    }
}

async fn get(pool: &Pool, key: &str) -> Response<Body> {
    let not_found = || ops::error(StatusCode::NOT_FOUND, "not_found", "no such call");
    // `{source_id}/{call_id}`; a call id may itself hold (encoded or not) slashes.
    let Some((source, call)) = key.split_once('/') else {
        return not_found();
    };
    let decode =
        |text: &str| percent_encoding::percent_decode_str(text).decode_utf8().map(|t| t.into_owned());
    let (Ok(source), Ok(call)) = (decode(source), decode(call)) else {
        return bad_request("the call's path is not valid percent-encoded UTF-8".into());
    };
    // PostgreSQL text holds no NUL: no such call can exist.
    if call.is_empty() || call.contains('\0') || source.contains('\0') {
        return not_found();
    }
    match calls::get(pool, &source, &call).await {
        Ok(Some(call)) => ops::json(StatusCode::OK, &call),
        Ok(None) => not_found(),
        Err(error) => read_failed(error),
    }
}
