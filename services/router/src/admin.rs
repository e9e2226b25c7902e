//! The directory admin API (`docs/openapi.yaml`, tag `directory`): agents, contacts, own
//! numbers and the blacklist, one at a time (`PUT` is an idempotent upsert by id or number) or in
//! bulk (`POST …/import`, CSV or JSON, all valid rows in one transaction, a report line per
//! refused row; `POST /v1/blacklist/remove` takes numbers off the blacklist the same way).
//! Numbers are accepted in any format and stored in E.164 (national numbers read in `?region=`,
//! default `router.region`). Every committed change notifies the matchers and routers
//! (migrations 0003 and 0012). Authenticated with a bearer token from `api.tokens`.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use deadpool_postgres::Pool;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use switchboard_core::http::{self as ops, Body};
use switchboard_core::model::{PhoneNumber, Region};
use switchboard_core::pg::error_chain;
use switchboard_directory::store::{
    AgentInput, BLACKLIST_COLUMNS, BlacklistImportRow, BlacklistInput, ContactInput, StoreError,
    agent_from_row, blacklist_from_row, blacklist_number, contact_from_row, remove_blacklist, upsert_agents,
    upsert_blacklist, upsert_contacts, valid_id,
};
use switchboard_directory::{Agent, BlacklistEntry, Contact};
use tokio_postgres::error::SqlState;

use crate::Router;

const MAX_ONE_BYTES: usize = 64 * 1024;
const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// An admin API failure, rendered as a JSON error.
struct Failure(StatusCode, &'static str, String);

type Answer = Result<Response<Body>, Failure>;

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        if let Some(message) = error.constraint() {
            // 23505: another entry already has this value (an agent's email).
            let conflict =
                matches!(&error, StoreError::Db(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION));
            return match conflict {
                true => Failure(StatusCode::CONFLICT, "conflict", message),
                false => Failure(StatusCode::UNPROCESSABLE_ENTITY, "constraint", message),
            };
        }
        // Class 22, data exceptions: a value PostgreSQL cannot take is the request's fault.
        if let StoreError::Db(e) = &error
            && let Some(db) = e.as_db_error()
            && db.code().code().starts_with("22")
        {
            tracing::info!(error = %error_chain(&error), "Directory admin request refused by PostgreSQL.");
            return bad_request(db.message().to_owned());
        }
        tracing::warn!(error = %error_chain(&error), "Directory admin request failed.");
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the directory database is not reachable".into(),
        )
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::from(error).into()
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::from(error).into()
    }
}

fn bad_request(message: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, "bad_request", message.into())
}

fn not_found() -> Failure {
    Failure(StatusCode::NOT_FOUND, "not_found", "no such entry".into())
}

/// Whether a path belongs to this API.
pub fn owns(path: &str) -> bool {
    ["/v1/agents", "/v1/contacts", "/v1/own-numbers", "/v1/blacklist"]
        .iter()
        .any(|prefix| path == *prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')))
}

/// Agents or contacts: the two kinds of directory entry, whose endpoints mirror each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Agents,
    Contacts,
}

/// What a path names, whatever the method.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    /// `/v1/agents`, `/v1/contacts`.
    List(Kind),
    /// `/v1/agents/import`, `/v1/contacts/import`: the path is the import, never an entry's.
    Import(Kind),
    /// `/v1/agents/{id}`, `/v1/contacts/{id}`, the id percent-decoded.
    Entry(Kind, String),
    /// `/v1/own-numbers`.
    OwnNumbers,
    /// `/v1/own-numbers/{number}`, the number as written in the path.
    OwnNumber(String),
    /// `/v1/blacklist`.
    Blacklist,
    /// `/v1/blacklist/import`.
    BlacklistImport,
    /// `/v1/blacklist/remove`: many numbers off the blacklist at once.
    BlacklistRemove,
    /// `/v1/blacklist/{number}`, the number as written in the path.
    Blacklisted(String),
}

impl Resource {
    fn of(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let kind = |name: &str| match name {
            "agents" => Some(Kind::Agents),
            "contacts" => Some(Kind::Contacts),
            _ => None,
        };
        Some(match segments.as_slice() {
            ["v1", "blacklist"] => Resource::Blacklist,
            ["v1", "blacklist", "import"] => Resource::BlacklistImport,
            ["v1", "blacklist", "remove"] => Resource::BlacklistRemove,
            ["v1", "blacklist", number] if !number.is_empty() => Resource::Blacklisted((*number).to_owned()),
            ["v1", "own-numbers"] => Resource::OwnNumbers,
            ["v1", "own-numbers", number] if !number.is_empty() => Resource::OwnNumber((*number).to_owned()),
            ["v1", name] => Resource::List(kind(name)?),
            ["v1", name, "import"] => Resource::Import(kind(name)?),
            ["v1", name, id] if !id.is_empty() => {
                let id = percent_encoding::percent_decode_str(id).decode_utf8().ok()?;
                Resource::Entry(kind(name)?, id.into_owned())
            }
            _ => return None,
        })
    }

    /// The methods the path serves, as the `Allow` header of a 405 lists them.
    fn allow(&self) -> &'static str {
        match self {
            Resource::List(_) | Resource::OwnNumbers | Resource::Blacklist => "GET, HEAD",
            Resource::Import(_) | Resource::BlacklistImport | Resource::BlacklistRemove => "POST",
            Resource::Entry(..) | Resource::Blacklisted(_) => "GET, HEAD, PUT, DELETE",
            Resource::OwnNumber(_) => "PUT, DELETE",
        }
    }

    /// The query parameters `method` takes here, as docs/openapi.yaml declares them; any other
    /// is refused, so a misspelt `regoin=GB` is not silently read as the default region.
    fn params(&self, method: &Method) -> &'static [&'static str] {
        match (self, method) {
            (Resource::List(Kind::Agents), _) => &["after", "limit"],
            (Resource::List(Kind::Contacts), _) => &["after", "limit", "number", "region"],
            (Resource::Blacklist, _) => &["after", "limit"],
            (Resource::Entry(..), &Method::GET | &Method::DELETE) | (Resource::OwnNumbers, _) => &[],
            _ => &["region"],
        }
    }
}

/// A 400 naming the first query parameter `resource` does not take for `method`.
fn unknown_param(
    resource: &Resource,
    method: &Method,
    query: &HashMap<String, String>,
) -> Result<(), Failure> {
    let known = resource.params(method);
    let mut names: Vec<&String> = query.keys().filter(|k| !known.contains(&k.as_str())).collect();
    names.sort();
    match names.first() {
        None => Ok(()),
        Some(name) if known.is_empty() => {
            Err(bad_request(format!("unknown parameter {name:?}; this takes none")))
        }
        Some(name) => {
            Err(bad_request(format!("unknown parameter {name:?}; this takes {}", known.join(", "))))
        }
    }
}

fn unavailable(code: &'static str, message: &'static str) -> Response<Body> {
    let mut response = ops::error(StatusCode::SERVICE_UNAVAILABLE, code, message);
    let _ = response.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response
}

pub async fn handle(router: &Router, req: Request<Incoming>) -> Response<Body> {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !router.settings.api.authorizes(authorization) {
        let mut response =
            ops::error(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required");
        let _ =
            response.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        return response;
    }
    let Some(resource) = Resource::of(req.uri().path()) else {
        return ops::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    };
    // HEAD is GET without the body (hyper leaves the body out).
    let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
    let served = resource.allow().split(", ").any(|m| m == method.as_str());
    if !served {
        return ops::method_not_allowed(resource.allow());
    }
    let Some(pool) = router.pool.get() else {
        return unavailable("starting", "the database is not connected yet");
    };
    match dispatch(router, pool, method, resource, req).await {
        Ok(response) => response,
        Err(Failure(StatusCode::SERVICE_UNAVAILABLE, code, _)) => {
            unavailable(code, "the directory database is not reachable")
        }
        Err(Failure(status, code, message)) => ops::error(status, code, message),
    }
}

/// The `?region=` national numbers are read in, else `router.region`.
fn region(router: &Router, query: &HashMap<String, String>) -> Result<Region, Failure> {
    match query.get("region") {
        Some(r) => r.parse::<Region>().map_err(|e| bad_request(e.to_string())),
        None => Ok(router.region),
    }
}

async fn dispatch(
    router: &Router,
    pool: &Pool,
    method: Method,
    resource: Resource,
    req: Request<Incoming>,
) -> Answer {
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    unknown_param(&resource, &method, &query)?;
    match (method, resource) {
        (Method::GET, Resource::List(Kind::Agents)) => list_agents(pool, &query).await,
        (Method::GET, Resource::List(Kind::Contacts)) => {
            list_contacts(pool, &query, region(router, &query)?).await
        }
        (Method::POST, Resource::Import(Kind::Agents)) => {
            import_agents(pool, req, region(router, &query)?).await
        }
        (Method::POST, Resource::Import(Kind::Contacts)) => {
            import_contacts(pool, req, region(router, &query)?).await
        }
        // An id that is not one could never have been stored.
        (Method::GET | Method::DELETE, Resource::Entry(_, id)) if valid_id(&id).is_err() => Err(not_found()),
        (Method::GET, Resource::Entry(Kind::Agents, id)) => get_agent(pool, &id).await,
        (Method::GET, Resource::Entry(Kind::Contacts, id)) => get_contact(pool, &id).await,
        (Method::PUT, Resource::Entry(Kind::Agents, id)) => {
            let region = region(router, &query)?;
            let input: AgentInput = read_json(req).await?;
            let agent = input.into_agent(Some(&id), region).map_err(bad_request)?;
            write(pool, |tx| {
                Box::pin(async move { upsert_agents(tx, std::slice::from_ref(&agent)).await.map(|_| agent) })
            })
            .await
            .map(|agent| ops::json(StatusCode::OK, &serde_json::json!(agent)))
        }
        (Method::PUT, Resource::Entry(Kind::Contacts, id)) => {
            let region = region(router, &query)?;
            let input: ContactInput = read_json(req).await?;
            let contact = input.into_contact(Some(&id), region).map_err(bad_request)?;
            write(pool, |tx| {
                Box::pin(
                    async move { upsert_contacts(tx, std::slice::from_ref(&contact)).await.map(|_| contact) },
                )
            })
            .await
            .map(|contact| ops::json(StatusCode::OK, &serde_json::json!(contact)))
        }
        (Method::DELETE, Resource::Entry(kind, id)) => {
            let sql = match kind {
                Kind::Agents => "DELETE FROM agents WHERE id = $1",
                Kind::Contacts => "DELETE FROM contacts WHERE id = $1",
            };
            delete(pool, sql, &id).await
        }
        (Method::GET, Resource::OwnNumbers) => {
            let client = pool.get().await?;
            let rows = client.query("SELECT number, label FROM own_numbers ORDER BY number", &[]).await?;
            let numbers: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| serde_json::json!({"number": r.get::<_, String>(0), "label": r.get::<_, Option<String>>(1)}))
                .collect();
            Ok(ops::json(StatusCode::OK, &serde_json::json!({ "own_numbers": numbers })))
        }
        (Method::PUT, Resource::OwnNumber(number)) => {
            let number = parse_number(&number, region(router, &query)?)?;
            let body = read_body(req, MAX_ONE_BYTES).await?;
            // Only a body of no bytes at all is "no body"; whitespace is not JSON.
            let input: OwnNumberInput = if body.is_empty() {
                OwnNumberInput::default()
            } else {
                json_object(&body).map_err(|e| bad_request(format!("invalid JSON: {e}")))?
            };
            if input.label.as_deref().is_some_and(|l| l.contains('\0')) {
                return Err(bad_request("label: NUL characters are not allowed"));
            }
            let label = input.label;
            let client = pool.get().await?;
            let _ = client
                .execute(
                    "INSERT INTO own_numbers (number, label) VALUES ($1, $2)
                     ON CONFLICT (number) DO UPDATE SET label = EXCLUDED.label",
                    &[&number, &label],
                )
                .await?;
            Ok(ops::json(StatusCode::OK, &serde_json::json!({"number": number, "label": label})))
        }
        (Method::DELETE, Resource::OwnNumber(number)) => {
            let number = parse_number(&number, region(router, &query)?)?;
            delete(pool, "DELETE FROM own_numbers WHERE number = $1", &number).await
        }
        (Method::GET, Resource::Blacklist) => list_blacklist(pool, &query).await,
        (Method::POST, Resource::BlacklistImport) => {
            import_blacklist(pool, req, region(router, &query)?).await
        }
        (Method::POST, Resource::BlacklistRemove) => {
            remove_from_blacklist(pool, req, region(router, &query)?).await
        }
        (Method::GET, Resource::Blacklisted(number)) => {
            let number = blacklisted_number(&number, region(router, &query)?)?;
            let client = pool.get().await?;
            let row = client
                .query_opt(
                    &format!("SELECT {BLACKLIST_COLUMNS} FROM blacklist WHERE number = $1"),
                    &[&number],
                )
                .await?
                .ok_or_else(not_found)?;
            Ok(ops::json(StatusCode::OK, &blacklist_json(&blacklist_from_row(&row), Utc::now())))
        }
        (Method::PUT, Resource::Blacklisted(number)) => {
            let region = region(router, &query)?;
            let number = percent_encoding::percent_decode_str(&number).decode_utf8_lossy().into_owned();
            let body = read_body(req, MAX_ONE_BYTES).await?;
            let input: BlacklistInput = if body.is_empty() {
                BlacklistInput::default()
            } else {
                json_object(&body).map_err(|e| bad_request(format!("invalid JSON: {e}")))?
            };
            let entry = input.into_write(&number, region).map_err(bad_request)?;
            let stored = write(pool, |tx| {
                Box::pin(async move { upsert_blacklist(tx, std::slice::from_ref(&entry)).await })
            })
            .await?;
            let stored = stored.first().ok_or_else(not_found)?;
            Ok(ops::json(StatusCode::OK, &blacklist_json(stored, Utc::now())))
        }
        (Method::DELETE, Resource::Blacklisted(number)) => {
            let number = blacklisted_number(&number, region(router, &query)?)?;
            delete(pool, "DELETE FROM blacklist WHERE number = $1", &number).await
        }
        // `handle` answers 405 for every other method first.
        _ => Err(not_found()),
    }
}

/// The body of `PUT /v1/own-numbers/{number}`, which may also be empty.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnNumberInput {
    #[serde(default)]
    label: Option<String>,
}

/// A number as a path segment writes it: percent-encoded, `+` kept as itself.
fn parse_number(segment: &str, region: Region) -> Result<String, Failure> {
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
    number(&decoded, region)
}

/// A number in any format, to E.164.
fn number(text: &str, region: Region) -> Result<String, Failure> {
    PhoneNumber::parse_lenient(text, region)
        .map(String::from)
        .ok_or_else(|| bad_request(format!("{text:?} is not a valid phone number")))
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Failure> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Failure(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("at most {limit} bytes")))
        }
        Err(e) => Err(bad_request(format!("cannot read the body: {e}"))),
    }
}

async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Failure> {
    let body = read_body(req, MAX_ONE_BYTES).await?;
    json_object(&body).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

/// A JSON object read into `T`. serde would also read a struct from an array of its fields in
/// order, which is not what the API takes.
fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    object(value)
}

fn object<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    if !value.is_object() {
        return Err(format!("expected an object, found {value}"));
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Runs `work` in one transaction and commits it.
async fn write<T, F>(pool: &Pool, work: F) -> Result<T, Failure>
where
    F: for<'t> FnOnce(
        &'t tokio_postgres::Transaction<'t>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 't>>,
{
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let value = work(&tx).await?;
    tx.commit().await?;
    Ok(value)
}

async fn delete(pool: &Pool, sql: &str, key: &str) -> Answer {
    let client = pool.get().await?;
    match client.execute(sql, &[&key]).await? {
        0 => Err(not_found()),
        _ => Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::new(Bytes::new()))
            .unwrap_or_default()),
    }
}

fn limit(query: &HashMap<String, String>) -> Result<i64, Failure> {
    match query.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| bad_request(format!("limit must be 1..={MAX_PAGE}"))),
        None => Ok(DEFAULT_PAGE),
    }
}

fn page(query: &HashMap<String, String>) -> Result<(String, i64), Failure> {
    let limit = limit(query)?;
    // `after` is the `next` of a page, an id; empty is the first page.
    let after = query.get("after").cloned().unwrap_or_default();
    if !after.is_empty() {
        valid_id(&after).map_err(|e| bad_request(format!("after: {e}")))?;
    }
    Ok((after, limit))
}

/// A keyset page: `next` is the `after` of the following page, absent on the last one.
fn paged<T: serde::Serialize>(
    key: &str,
    items: Vec<T>,
    limit: i64,
    last_id: Option<String>,
) -> Response<Body> {
    let next = (items.len() as i64 == limit).then_some(last_id).flatten();
    ops::json(StatusCode::OK, &serde_json::json!({ key: items, "next": next }))
}

async fn list_agents(pool: &Pool, query: &HashMap<String, String>) -> Answer {
    let (after, limit) = page(query)?;
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, name, email, extensions, phone_numbers, external_ids, groups FROM agents
             WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &limit],
        )
        .await?;
    let agents: Vec<Agent> = rows.iter().map(agent_from_row).collect();
    let last = agents.last().map(|a| a.id.clone());
    Ok(paged("agents", agents, limit, last))
}

async fn list_contacts(pool: &Pool, query: &HashMap<String, String>, region: Region) -> Answer {
    let (after, limit) = page(query)?;
    let number = query.get("number").map(|n| number(n, region)).transpose()?;
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, name, company, phone_numbers, responsible_agent_id FROM contacts
             WHERE id > $1 AND ($3::text IS NULL OR phone_numbers @> ARRAY[$3::text])
             ORDER BY id LIMIT $2",
            &[&after, &limit, &number],
        )
        .await?;
    let contacts: Vec<Contact> = rows.iter().map(contact_from_row).collect();
    let last = contacts.last().map(|c| c.id.clone());
    Ok(paged("contacts", contacts, limit, last))
}

async fn get_agent(pool: &Pool, id: &str) -> Answer {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT id, name, email, extensions, phone_numbers, external_ids, groups FROM agents WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or_else(not_found)?;
    Ok(ops::json(StatusCode::OK, &serde_json::json!(agent_from_row(&row))))
}

async fn get_contact(pool: &Pool, id: &str) -> Answer {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT id, name, company, phone_numbers, responsible_agent_id FROM contacts WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or_else(not_found)?;
    Ok(ops::json(StatusCode::OK, &serde_json::json!(contact_from_row(&row))))
}

/// One refused row of an import: its 1-based position (the CSV header is row 0), id and reason.
#[derive(Debug, serde::Serialize)]
struct RowError {
    row: usize,
    id: Option<String>,
    error: String,
}

/// Reads an import body as rows of `T`: a JSON array, or CSV with a header row where list
/// columns separate their items with `;`.
fn import_rows<T: DeserializeOwned>(
    content_type: &str,
    body: &[u8],
    csv_row: impl Fn(&HashMap<String, String>) -> T,
) -> Result<Vec<Result<T, String>>, Failure> {
    if content_type.starts_with("application/json") {
        let rows: Vec<serde_json::Value> = serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("a JSON import is an array of objects: {e}")))?;
        return Ok(rows.into_iter().map(object).collect());
    }
    if !content_type.starts_with("text/csv") {
        return Err(Failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "imports are text/csv or application/json".into(),
        ));
    }
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(false).from_reader(body);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| bad_request(format!("CSV header: {e}")))?
        .iter()
        .map(str::to_ascii_lowercase)
        .collect();
    Ok(reader
        .records()
        .map(|record| {
            let record = record.map_err(|e| format!("CSV: {e}"))?;
            let fields: HashMap<String, String> =
                headers.iter().cloned().zip(record.iter().map(str::to_owned)).collect();
            Ok(csv_row(&fields))
        })
        .collect())
}

fn list(fields: &HashMap<String, String>, name: &str) -> Vec<String> {
    fields
        .get(name)
        .map(|v| v.split(';').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

fn field(fields: &HashMap<String, String>, name: &str) -> Option<String> {
    fields.get(name).cloned().filter(|v| !v.is_empty())
}

/// Keeps the first row of each id (`what` names it in the report); later ones are reported, since
/// which should win is unclear.
fn first_of_each_id<T>(
    rows: Vec<(usize, T)>,
    what: &str,
    id: impl Fn(&T) -> &str,
    errors: &mut Vec<RowError>,
) -> Vec<T> {
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    for (row, item) in rows {
        if seen.insert(id(&item).to_owned()) {
            kept.push(item);
        } else {
            errors.push(RowError {
                row,
                id: Some(id(&item).to_owned()),
                error: format!("duplicate {what} in this import"),
            });
        }
    }
    kept
}

fn report(imported: usize, mut errors: Vec<RowError>) -> Response<Body> {
    errors.sort_by_key(|e| e.row);
    ops::json(
        StatusCode::OK,
        &serde_json::json!({"imported": imported, "rejected": errors.len(), "errors": errors}),
    )
}

async fn import_agents(pool: &Pool, req: Request<Incoming>, region: Region) -> Answer {
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = read_body(req, MAX_IMPORT_BYTES).await?;
    let rows = import_rows(&content_type, &body, |f| AgentInput {
        id: field(f, "id"),
        name: field(f, "name").unwrap_or_default(),
        email: field(f, "email"),
        extensions: list(f, "extensions"),
        phone_numbers: list(f, "phone_numbers"),
        external_ids: None,
        groups: list(f, "groups"),
    })?;
    let mut errors = Vec::new();
    let mut valid = Vec::new();
    // Rows count from 1 (`RowError`).
    for (n, row) in (1..).zip(rows) {
        match row.and_then(|input| input.into_agent(None, region)) {
            Ok(agent) => valid.push((n, agent)),
            Err(error) => errors.push(RowError { row: n, id: None, error }),
        }
    }
    let agents = first_of_each_id(valid, "id", |a| a.id.as_str(), &mut errors);
    let count = agents.len();
    write(pool, |tx| Box::pin(async move { upsert_agents(tx, &agents).await })).await?;
    Ok(report(count, errors))
}

async fn import_contacts(pool: &Pool, req: Request<Incoming>, region: Region) -> Answer {
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = read_body(req, MAX_IMPORT_BYTES).await?;
    let rows = import_rows(&content_type, &body, |f| ContactInput {
        id: field(f, "id"),
        name: field(f, "name").unwrap_or_default(),
        company: field(f, "company"),
        phone_numbers: list(f, "phone_numbers"),
        responsible_agent_id: field(f, "responsible_agent_id"),
    })?;
    let mut errors = Vec::new();
    let mut valid = Vec::new();
    // Rows count from 1 (`RowError`).
    for (n, row) in (1..).zip(rows) {
        match row.and_then(|input| input.into_contact(None, region)) {
            Ok(contact) => valid.push((n, contact)),
            Err(error) => errors.push(RowError { row: n, id: None, error }),
        }
    }
    let positions: HashMap<String, usize> = valid.iter().map(|(row, c)| (c.id.clone(), *row)).collect();
    let contacts = first_of_each_id(valid, "id", |c| c.id.as_str(), &mut errors);
    let (count, unknown) = write(pool, |tx| {
        Box::pin(async move {
            // A responsible agent that does not exist would fail the whole batch on the foreign
            // key; check first, in the same transaction, and refuse just those rows.
            let wanted: Vec<&str> =
                contacts.iter().filter_map(|c| c.responsible_agent_id.as_deref()).collect();
            let known: HashSet<String> = tx
                .query("SELECT id FROM agents WHERE id = ANY($1)", &[&wanted])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let (ok, unknown): (Vec<Contact>, Vec<Contact>) = contacts
                .into_iter()
                .partition(|c| c.responsible_agent_id.as_ref().is_none_or(|id| known.contains(id)));
            upsert_contacts(tx, &ok).await?;
            Ok((ok.len(), unknown))
        })
    })
    .await?;
    for contact in unknown {
        errors.push(RowError {
            row: positions.get(&contact.id).copied().unwrap_or_default(),
            error: format!(
                "responsible agent {:?} does not exist",
                contact.responsible_agent_id.unwrap_or_default()
            ),
            id: Some(contact.id),
        });
    }
    Ok(report(count, errors))
}

/// A number as a path segment writes it (percent-encoded, `+` kept as itself), for the blacklist:
/// the 400 names the field, and a NUL is refused as such.
fn blacklisted_number(segment: &str, region: Region) -> Result<String, Failure> {
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
    blacklist_number(&decoded, region).map_err(bad_request)
}

fn time(value: Option<DateTime<Utc>>) -> serde_json::Value {
    value.map_or(serde_json::Value::Null, |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into())
}

/// A blacklist entry as the API shows it; `active`: it refuses callers at `now`.
fn blacklist_json(entry: &BlacklistEntry, now: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "number": entry.number,
        "reason": entry.reason,
        "expires_at": time(entry.expires_at),
        "created_at": time(Some(entry.created_at)),
        "active": entry.active_at(now),
    })
}

/// `after` of a blacklist page: the `next` of the previous one, an E.164 number (its `+` may
/// arrive as a space when not written `%2B`); empty is the first page.
fn blacklist_after(query: &HashMap<String, String>) -> Result<String, Failure> {
    let after = query.get("after").map(String::as_str).unwrap_or_default();
    if after.is_empty() {
        return Ok(String::new());
    }
    let digits = after.strip_prefix(['+', ' ']).unwrap_or(after);
    if !(1..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_request(format!("after: {after:?} is not the `next` of a blacklist page")));
    }
    Ok(format!("+{digits}"))
}

async fn list_blacklist(pool: &Pool, query: &HashMap<String, String>) -> Answer {
    let (after, limit) = (blacklist_after(query)?, limit(query)?);
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!("SELECT {BLACKLIST_COLUMNS} FROM blacklist WHERE number > $1 ORDER BY number LIMIT $2"),
            &[&after, &limit],
        )
        .await?;
    let now = Utc::now();
    let entries: Vec<BlacklistEntry> = rows.iter().map(blacklist_from_row).collect();
    let last = entries.last().map(|e| e.number.clone());
    let items: Vec<serde_json::Value> = entries.iter().map(|e| blacklist_json(e, now)).collect();
    Ok(paged("blacklist", items, limit, last))
}

async fn import_blacklist(pool: &Pool, req: Request<Incoming>, region: Region) -> Answer {
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = read_body(req, MAX_IMPORT_BYTES).await?;
    let rows = import_rows(&content_type, &body, |f| BlacklistImportRow {
        number: field(f, "number"),
        reason: field(f, "reason"),
        expires_at: field(f, "expires_at"),
    })?;
    let mut errors = Vec::new();
    let mut valid = Vec::new();
    // Rows count from 1 (`RowError`).
    for (n, row) in (1..).zip(rows) {
        match row.and_then(|input| input.into_write(region)) {
            Ok(entry) => valid.push((n, entry)),
            Err(error) => errors.push(RowError { row: n, id: None, error }),
        }
    }
    let entries = first_of_each_id(valid, "number", |e| e.number.as_str(), &mut errors);
    let stored = write(pool, |tx| Box::pin(async move { upsert_blacklist(tx, &entries).await })).await?;
    Ok(report(stored.len(), errors))
}

/// One row of a removal: a number, or an object with its `number` (so that an import's rows can
/// be sent back as they are; their other fields are ignored).
fn removal_row(value: serde_json::Value) -> Result<String, String> {
    match value {
        serde_json::Value::String(number) => Ok(number),
        serde_json::Value::Object(mut row) => match row.remove("number") {
            Some(serde_json::Value::String(number)) => Ok(number),
            _ => Err("number is missing".into()),
        },
        other => Err(format!("expected a number or an object with its number, found {other}")),
    }
}

async fn remove_from_blacklist(pool: &Pool, req: Request<Incoming>, region: Region) -> Answer {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(Failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a removal is an application/json array of numbers".into(),
        ));
    }
    let body = read_body(req, MAX_IMPORT_BYTES).await?;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("a removal is a JSON array of numbers: {e}")))?;
    let mut errors = Vec::new();
    let mut numbers: Vec<String> = Vec::new();
    // Rows count from 1 (`RowError`).
    for (n, row) in (1..).zip(rows) {
        match removal_row(row).and_then(|number| blacklist_number(&number, region)) {
            // Removing a number twice is removing it once.
            Ok(number) if !numbers.contains(&number) => numbers.push(number),
            Ok(_) => {}
            Err(error) => errors.push(RowError { row: n, id: None, error }),
        }
    }
    let wanted = numbers.clone();
    let removed = write(pool, |tx| Box::pin(async move { remove_blacklist(tx, &wanted).await })).await?;
    let not_found: Vec<&String> = numbers.iter().filter(|n| !removed.contains(n)).collect();
    Ok(ops::json(
        StatusCode::OK,
        &serde_json::json!({
            "removed": removed.len(),
            "not_found": not_found,
            "rejected": errors.len(),
            "errors": errors,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_imports_read_the_same_rows() {
        let csv = b"id,name,company,phone_numbers,responsible_agent_id\nalice,Alice,Acme,020 7946 0000;07911 123456,ann\n,NoId,,,\n";
        let row = |f: &HashMap<String, String>| ContactInput {
            id: field(f, "id"),
            name: field(f, "name").unwrap_or_default(),
            company: field(f, "company"),
            phone_numbers: list(f, "phone_numbers"),
            responsible_agent_id: field(f, "responsible_agent_id"),
        };
        let rows = import_rows("text/csv", csv, row).ok().expect("csv");
        assert_eq!(rows.len(), 2);
        let alice =
            rows[0].clone().expect("row").into_contact(None, "GB".parse().expect("GB")).expect("valid");
        assert_eq!(alice.phone_numbers, vec!["+442079460000".to_owned(), "+447911123456".to_owned()]);
        assert!(rows[1].clone().expect("row").into_contact(None, "GB".parse().expect("GB")).is_err());

        let json =
            br#"[{"id": "alice", "name": "Alice", "phone_numbers": ["020 7946 0000"]}, {"nme": "typo"}]"#;
        let rows = import_rows::<ContactInput>("application/json", json, row).ok().expect("json");
        assert!(rows[0].is_ok());
        assert!(rows[1].as_ref().expect_err("unknown field").contains("nme"));
        assert!(import_rows::<ContactInput>("text/plain", b"", row).is_err());
        // serde reads a struct from an array of its fields; the API takes objects only.
        let rows = import_rows::<ContactInput>("application/json", br#"[["alice", "Alice"]]"#, row)
            .ok()
            .expect("json");
        assert!(rows[0].is_err());
        assert!(json_object::<OwnNumberInput>(b"[]").is_err());
        assert!(json_object::<OwnNumberInput>(br#"{"label": "main"}"#).is_ok());
    }

    #[test]
    fn admin_paths_are_recognised_exactly() {
        assert!(owns("/v1/agents") && owns("/v1/agents/ann") && owns("/v1/own-numbers/%2B44"));
        assert!(!owns("/v1/agentsx") && !owns("/v1/route"));
    }

    #[test]
    fn each_path_names_one_resource_and_the_methods_it_serves() {
        let of = |path: &str| Resource::of(path);
        assert_eq!(of("/v1/agents"), Some(Resource::List(Kind::Agents)));
        assert_eq!(of("/v1/contacts/import"), Some(Resource::Import(Kind::Contacts)));
        assert_eq!(of("/v1/agents/ann%40example"), Some(Resource::Entry(Kind::Agents, "ann@example".into())));
        assert_eq!(of("/v1/own-numbers/%2B44"), Some(Resource::OwnNumber("%2B44".into())));
        for path in ["/v1/agents/", "/v1/agents/a/b", "/v1/own-numbers/", "/v1/numbers", "/v1/agents/%FF"] {
            assert_eq!(of(path), None, "{path}");
        }
        assert_eq!(Resource::Import(Kind::Agents).allow(), "POST");
        assert_eq!(Resource::OwnNumber(String::new()).allow(), "PUT, DELETE");
        assert_eq!(of("/v1/blacklist"), Some(Resource::Blacklist));
        assert_eq!(of("/v1/blacklist/import"), Some(Resource::BlacklistImport));
        assert_eq!(of("/v1/blacklist/remove"), Some(Resource::BlacklistRemove));
        assert_eq!(of("/v1/blacklist/%2B44"), Some(Resource::Blacklisted("%2B44".into())));
        assert_eq!(of("/v1/blacklist/"), None);
        assert_eq!(of("/v1/blacklist/a/b"), None);
        assert!(owns("/v1/blacklist") && owns("/v1/blacklist/remove") && !owns("/v1/blacklists"));
        assert_eq!(Resource::BlacklistRemove.allow(), "POST");
        assert_eq!(Resource::Blacklisted(String::new()).allow(), "GET, HEAD, PUT, DELETE");
    }

    #[test]
    fn each_endpoint_refuses_query_parameters_it_does_not_take() {
        let query = |names: &[&str]| names.iter().map(|n| ((*n).to_owned(), "1".to_owned())).collect();
        let contacts = Resource::List(Kind::Contacts);
        assert!(unknown_param(&contacts, &Method::GET, &query(&["after", "number", "region"])).is_ok());
        let refusal = unknown_param(&contacts, &Method::GET, &query(&["regoin"])).err();
        assert!(refusal.is_some_and(
            |Failure(status, _, message)| status == StatusCode::BAD_REQUEST && message.contains("regoin")
        ));
        let entry = Resource::Entry(Kind::Agents, "ann".into());
        assert!(unknown_param(&entry, &Method::PUT, &query(&["region"])).is_ok());
        assert!(unknown_param(&entry, &Method::GET, &query(&["region"])).is_err());
        assert!(unknown_param(&Resource::OwnNumbers, &Method::GET, &query(&[])).is_ok());
        assert!(unknown_param(&Resource::Blacklist, &Method::GET, &query(&["region"])).is_err());
    }

    #[test]
    fn blacklist_pages_and_removals_read_what_clients_send() {
        let query = |after: &str| HashMap::from([("after".to_owned(), after.to_owned())]);
        assert_eq!(blacklist_after(&HashMap::new()).ok(), Some(String::new()));
        // `+` written as itself in a query string arrives as a space.
        for after in ["+442079460000", " 442079460000", "442079460000"] {
            assert_eq!(blacklist_after(&query(after)).ok(), Some("+442079460000".into()), "{after:?}");
        }
        for after in ["abc", "+", "\t442079460000", "+4420794600001234", "++44"] {
            assert!(blacklist_after(&query(after)).is_err(), "{after:?}");
        }
        assert_eq!(removal_row(serde_json::json!("+44 20 7946 0000")), Ok("+44 20 7946 0000".into()));
        assert_eq!(removal_row(serde_json::json!({"number": "1", "reason": "x"})), Ok("1".into()));
        assert!(removal_row(serde_json::json!({"reason": "x"})).is_err());
        assert!(removal_row(serde_json::json!(442079460000_u64)).is_err());
        let gb: Region = "GB".parse().expect("GB");
        assert_eq!(blacklisted_number("%2B442079460000", gb).ok(), Some("+442079460000".into()));
        assert!(blacklisted_number("%2B44%0020", gb).is_err(), "NUL");
        assert!(blacklisted_number("12", gb).is_err());
        let entry = BlacklistEntry {
            number: "+442079460000".into(),
            reason: None,
            expires_at: DateTime::from_timestamp(1_900_000_000, 0),
            created_at: DateTime::from_timestamp(1_800_000_000, 500_000_000).expect("time"),
        };
        let json = blacklist_json(&entry, DateTime::from_timestamp(1_900_000_000, 0).expect("time"));
        let want = serde_json::json!({
            "number": "+442079460000", "reason": null, "expires_at": "2030-03-17T17:46:40Z",
            "created_at": "2027-01-15T08:00:00.500Z", "active": false,
        });
        assert_eq!(json, want);
    }

    #[test]
    fn own_numbers_in_urls_may_keep_their_plus() {
        let gb: Region = "GB".parse().expect("GB");
        assert_eq!(parse_number("%2B442079460000", gb).ok(), Some("+442079460000".to_owned()));
        assert_eq!(parse_number("+442079460000", gb).ok(), Some("+442079460000".to_owned()));
        assert_eq!(parse_number("020%207946%200000", gb).ok(), Some("+442079460000".to_owned()));
        assert!(parse_number("12", gb).is_err());
    }
}
