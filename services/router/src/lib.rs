//! router: the synchronous side of Switchboard, for a PBX or an admin that needs an answer now.
//!
//! Inputs: IVR routing lookups — `GET|POST /v1/route?caller=…&format=json|telphin|zadarma`,
//! Telphin's "Call Interactive" URL as its integration guide writes it
//! (`/cid/{application}/getmanager/{login}`, caller in `CallerIDNum`), and Zadarma's
//! `NOTIFY_START` (`/v1/route/zadarma`, caller in `caller_id`, `zd_echo` answered) — and the
//! directory admin API ([`admin`]: agents, contacts, own numbers, the blacklist). Outputs: the
//! responsible agent's extension in the PBX's own format ([`lookup`]), or the configured fallback
//! whenever there is no clear answer, or, for a blacklisted caller, the PBX's own refusal (or
//! `router.blacklist_target`); admin writes go to PostgreSQL. Freshness: lookups read an
//! in-memory snapshot that the directory's change feed replaces within a second of any committed
//! change (`switchboard-directory`); the
//! router serves from the first moment, answering the fallback until the first snapshot loads,
//! and keeps answering from the last snapshot while the database is away.

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod metrics;
pub mod settings;
pub use settings::RouterSettings;
pub mod admin;
pub mod lookup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::Pool;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use switchboard_core::config::{Service, Settings};
use switchboard_core::http::{self as ops, Body, Health};
use switchboard_core::http_service::{self, HttpService};
use switchboard_core::model::Region;
use switchboard_core::pg;
use switchboard_core::service::ServiceError;
use switchboard_directory::SharedDirectory;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::lookup::{CallerCache, Decision, Format, LookupMetrics, Outcome, Reply};

/// IVR lookups carry a few form fields; anything bigger is not a lookup.
const MAX_LOOKUP_BODY: usize = 16 * 1024;
/// Distinct caller numbers whose parsing is remembered (about 100 bytes each).
const CALLER_CACHE_ENTRIES: usize = 200_000;

/// What every request handler shares.
#[derive(Debug)]
pub struct Router {
    settings: Settings,
    /// The `[router]` section.
    own: RouterSettings,
    region: Region,
    directory: SharedDirectory,
    callers: CallerCache,
    metrics: LookupMetrics,
    pool: OnceLock<Pool>,
    health: Arc<Health>,
}

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    let own: RouterSettings = settings.own_section(Service::Router)?;
    let region: Region =
        own.region.parse().map_err(|source| ServiceError::Setting { setting: "router.region", source })?;
    // The phone-number metadata loads on first use (hundreds of milliseconds in a debug build);
    // pay that before the first IVR waits for it.
    let _ = switchboard_core::model::PhoneNumber::parse_lenient("+14155550123", region);
    let router = Arc::new(Router {
        settings: settings.clone(),
        own,
        region,
        directory: SharedDirectory::default(),
        callers: CallerCache::new(region, CALLER_CACHE_ENTRIES),
        metrics: LookupMetrics::default(),
        pool: OnceLock::new(),
        health: Health::new(),
    });
    let spec = HttpService {
        service: Service::Router,
        settings: &settings,
        listener,
        health: router.health.clone(),
        cancel: cancel.clone(),
    };
    // Lookups get the fallback, and the admin API 503, until the directory is loaded.
    let start = async {
        let Some(pool) =
            pg::connect_and_migrate(&settings.postgres, switchboard_schema::MIGRATIONS, &cancel).await?
        else {
            return Ok(None);
        };
        let _ = router.pool.set(pool.clone());
        let watcher = tokio::spawn(switchboard_directory::watch(
            pool,
            settings.postgres.url.clone(),
            router.directory.clone(),
            Duration::from_millis(50),
            Duration::from_secs(60),
            cancel.clone(),
        ));
        if router.directory.wait_loaded(&cancel).await.is_none() {
            watcher.abort();
            return Ok(None);
        }
        Ok(Some(vec![watcher]))
    };
    http_service::run(spec, router.clone(), start).await
}

impl http_service::Handler for Router {
    async fn handle(&self, req: Request<Incoming>, _remote: SocketAddr) -> Response<Body> {
        if let Some(response) = ops::probe_response(&req, &self.health) {
            return response;
        }
        let path = req.uri().path();
        let format = match path {
            "/v1/route" => None,
            "/v1/route/zadarma" => Some(Format::Zadarma),
            _ if is_telphin_path(path) => Some(Format::Telphin),
            _ if admin::owns(path) => return admin::handle(self, req).await,
            _ => return ops::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        };
        if !matches!(*req.method(), Method::GET | Method::HEAD | Method::POST) {
            return ops::method_not_allowed("GET, HEAD, POST");
        }
        self.route(req, format).await
    }
}

impl Router {
    /// Answers a lookup, always `200` in the PBX's format, within `router.lookup_timeout_ms`.
    async fn route(&self, req: Request<Incoming>, format: Option<Format>) -> Response<Body> {
        let started = Instant::now();
        // Known before the body is read, so that even a timed-out answer is in the PBX's format.
        let format = format.or_else(|| {
            let query = req.uri().query()?;
            let (_, name) = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "format")?;
            Format::parse(&name)
        });
        let budget = Duration::from_millis(self.own.lookup_timeout_ms);
        let (format, reply) = match tokio::time::timeout(budget, self.lookup(req, format)).await {
            Ok(answer) => answer,
            Err(_) => {
                let format = format.unwrap_or(Format::Json);
                (format, Reply::Decision(Decision::fallback(Outcome::Timeout, &self.own)))
            }
        };
        match reply {
            Reply::Echo(text) => text_response("text/plain", text),
            Reply::Decision(decision) => {
                let (content_type, body) = lookup::render(&decision, format, &self.own);
                match decision.outcome {
                    Outcome::Agent => {}
                    // The caller's number is personal data: the metric counts them, no log names them.
                    Outcome::Blacklisted => tracing::debug!("Refused a blacklisted caller."),
                    outcome => tracing::debug!(reason = outcome.as_str(), "Routing fell back."),
                }
                let response = text_response(content_type, body);
                self.metrics.record(format, decision.outcome, started.elapsed().as_secs_f64());
                response
            }
        }
    }

    async fn lookup(&self, req: Request<Incoming>, format: Option<Format>) -> (Format, Reply) {
        let params = match params(req).await {
            Ok(params) => params,
            Err(()) => {
                let fallback = Decision::fallback(Outcome::BadRequest, &self.own);
                return (format.unwrap_or(Format::Json), Reply::Decision(fallback));
            }
        };
        let authorized = self.lookup_authorized(params.get("token"));
        let snapshot = self.directory.snapshot();
        let context = lookup::Context {
            settings: &self.own,
            region: self.region,
            directory: snapshot.as_deref(),
            callers: &self.callers,
            now: chrono::Utc::now(),
        };
        let answer = lookup::answer(&params, format, authorized, &context);
        if !authorized && matches!(answer.1, Reply::Decision(_)) {
            tracing::warn!("A routing lookup without a valid token was answered with the fallback.");
        }
        answer
    }

    fn lookup_authorized(&self, token: Option<&String>) -> bool {
        if self.own.open_lookups {
            return true;
        }
        let tokens = &self.own.lookup_tokens;
        // Empty only if validation was bypassed: then nothing authorises a lookup.
        let Some(token) = token else { return false };
        use subtle::ConstantTimeEq;
        // Every token is compared, so timing does not tell which one matched.
        tokens
            .iter()
            .fold(false, |found, known| found | bool::from(known.expose().as_bytes().ct_eq(token.as_bytes())))
    }
}

/// `/cid/{application}/getmanager/{login}`: the application and login only tell integrations
/// apart in logs, as in Telphin's guide.
fn is_telphin_path(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(segments.as_slice(), ["cid", app, "getmanager", login] if !app.is_empty() && !login.is_empty())
}

/// Query parameters, plus the form body of a POST (Telphin can send either).
async fn params(req: Request<Incoming>) -> Result<HashMap<String, String>, ()> {
    let query = req.uri().query().map(|q| q.as_bytes().to_vec()).unwrap_or_default();
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let form = if req.method() == Method::POST && is_form {
        Some(Limited::new(req.into_body(), MAX_LOOKUP_BODY).collect().await.map_err(|_| ())?.to_bytes())
    } else {
        None
    };
    Ok(lookup::params_of(&query, form.as_deref()))
}

fn text_response(content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let _ = response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telphin_paths_work_as_written_in_the_guide() {
        assert!(is_telphin_path("/cid/807/getmanager/TLP55522"));
        assert!(!is_telphin_path("/cid/807/getmanager/"));
        assert!(!is_telphin_path("/cid/807/other/TLP55522"));
    }
}
