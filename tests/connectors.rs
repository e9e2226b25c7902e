//! The built-in CRM connectors end to end: each connector's profile, saved through the
//! dispatcher's API, against a loopback fake of its CRM that checks every request as the CRM's
//! public documentation defines it (method, path, credentials, content type, every field and its
//! format) and answers as the CRM does (the ids a later step reads from the answer among them).
//! Call records are produced on the `calls` topic as the call log publishes them: a complete
//! call, then, for a recording that was still pending, the newer version with the recording
//! ready.
//!
//! A fake refuses what its CRM would refuse (a wrong token, an unknown or malformed field, a
//! call it does not know) with that CRM's kind of error, and notes why; every test ends by
//! asserting that nothing was refused and by comparing what the CRM now holds with the calls.
//!
//! The profiles are the connectors' own (`connectors::by_name`), with only the CRM's address
//! replaced by the fake's: a connector insists on HTTPS, which a loopback fake cannot offer a
//! certificate for.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Map, Value, json};
use switchboard_core::avro::Codecs;
use switchboard_core::model::{
    AgentMatch, AgentRef, CallId, CallRecord, CallStatus, Completion, Direction, Outcome, RecordingStatus,
    SourceId, Vendor,
};
use switchboard_dispatcher::connectors;
use switchboard_tests::{ServiceProcess, TestEnv, http_client, send};
use tokio::net::TcpListener;

const TOKEN: &str = "connectors-test-token-0123456789abcdef0123456789";
const WAIT: Duration = Duration::from_secs(60);
const SOURCE: &str = "acme-pbx";
/// The stable link the recordings stage gives a ready recording.
const RECORDING: &str = "https://sb.example.com/v1/recordings/rec-1?token=t0k3n";

// ---- fake CRMs ----------------------------------------------------------------------------------

/// One request a fake CRM received.
#[derive(Debug, Clone)]
struct Got {
    method: Method,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// What a CRM answers a request it refuses, and why: a test fails on any.
#[derive(Debug)]
struct Refusal {
    status: u16,
    body: Value,
    why: String,
}

/// The status and JSON body a CRM answers, or its refusal.
type Answer = Result<(u16, Value), Refusal>;

trait Crm: Send + 'static {
    fn answer(&mut self, request: &Got) -> Answer;
}

/// A CRM on loopback: every request, what the CRM made of it, and its refusals.
struct Fake<C> {
    crm: Arc<Mutex<C>>,
    got: Arc<Mutex<Vec<Got>>>,
    refused: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl<C> Clone for Fake<C> {
    fn clone(&self) -> Self {
        Fake { crm: self.crm.clone(), got: self.got.clone(), refused: self.refused.clone(), addr: self.addr }
    }
}

impl<C: Crm> Fake<C> {
    async fn start(crm: C) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let fake = Fake {
            crm: Arc::new(Mutex::new(crm)),
            got: Arc::default(),
            refused: Arc::default(),
            addr: listener.local_addr()?,
        };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.serve(req).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(fake)
    }

    async fn serve(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let got = Got {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            body,
        };
        let answer = self.crm.lock().expect("lock").answer(&got);
        self.got.lock().expect("lock").push(got);
        let (status, body) = answer.unwrap_or_else(|refusal| {
            self.refused.lock().expect("lock").push(refusal.why);
            (refusal.status, refusal.body)
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        let _ = response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    /// `http://127.0.0.1:<port>`, which takes the place of the CRM's `https://host`.
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }

    fn state<R>(&self, f: impl FnOnce(&C) -> R) -> R {
        f(&self.crm.lock().expect("lock"))
    }

    async fn wait_for(&self, count: usize) -> anyhow::Result<Vec<Got>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.requests();
            if got.len() >= count {
                return Ok(got);
            }
            ensure!(Instant::now() < deadline, "the CRM got {} requests, not {count}", got.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Nothing was refused.
    fn assert_all_accepted(&self) -> anyhow::Result<()> {
        let refused = self.refused.lock().expect("lock").clone();
        ensure!(refused.is_empty(), "the CRM refused requests: {refused:#?}");
        Ok(())
    }
}

fn refuse(status: u16, body: Value, why: impl Into<String>) -> Refusal {
    Refusal { status, body, why: why.into() }
}

/// An RFC 3339 time with its offset, as Bitrix24 requires for `CALL_START_DATE`.
fn is_iso_with_offset(text: &str) -> bool {
    DateTime::parse_from_rfc3339(text).is_ok()
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Keys of `object` that `known` lacks.
fn unknown_keys(object: &Map<String, Value>, known: &[&str]) -> Vec<String> {
    object.keys().filter(|k| !known.contains(&k.as_str())).cloned().collect()
}

// ---- HubSpot ------------------------------------------------------------------------------------

/// A private app's access token.
const HUBSPOT_TOKEN: &str = "pat-na1-2b7e8c4d-0000-4c1e-9f3a-5d6e7f8a9b0c";
/// The contact the test's recorded call is matched to (the directory's contacts came from
/// HubSpot, so their ids are HubSpot's).
const HUBSPOT_CONTACT: &str = "901";

/// HubSpot's default call properties (developers.hubspot.com/docs/api/crm/calls); any other name
/// is refused as a property that does not exist.
const HUBSPOT_CALL_PROPERTIES: &[&str] = &[
    "hs_timestamp",
    "hs_call_body",
    "hs_call_callee_object_id",
    "hs_call_callee_object_type",
    "hs_call_direction",
    "hs_call_disposition",
    "hs_call_duration",
    "hs_call_from_number",
    "hs_call_recording_url",
    "hs_call_status",
    "hs_call_title",
    "hs_call_to_number",
    "hubspot_owner_id",
];

const HUBSPOT_STATUSES: &[&str] = &[
    "BUSY",
    "CALLING_CRM_USER",
    "CANCELED",
    "COMPLETED",
    "CONNECTING",
    "FAILED",
    "IN_PROGRESS",
    "MISSED",
    "NO_ANSWER",
    "QUEUED",
    "RINGING",
];

/// The GUIDs of HubSpot's default call outcomes (`hs_call_disposition`): busy, connected, left
/// live message, left voicemail, no answer, wrong number.
const HUBSPOT_OUTCOMES: &[&str] = &[
    "9d9162e7-6cf3-4944-bf63-4dff82258764",
    "f240bbac-87c9-4f6e-bf70-924b57d47db7",
    "a4c4c377-d246-4b32-a13b-75a56a4cd0ff",
    "b2cf5968-551e-4856-9783-52b3da59a7d0",
    "73a0d17f-1163-4015-bdd5-ec830791da20",
    "17b47fee-58de-441e-a44c-c6300d46f273",
];
const CONNECTED: &str = "f240bbac-87c9-4f6e-bf70-924b57d47db7";
const NO_ANSWER: &str = "73a0d17f-1163-4015-bdd5-ec830791da20";

/// HubSpot's calls as the API created and updated them.
#[derive(Debug, Default)]
struct HubSpot {
    /// By id: the properties, and the associations given on creation.
    calls: BTreeMap<String, (Map<String, Value>, Value)>,
    /// What each batch update set, by call id.
    updates: Vec<(String, Map<String, Value>)>,
}

fn hubspot_error(status: u16, category: &str, message: &str) -> Refusal {
    refuse(
        status,
        json!({"status": "error", "message": message, "category": category,
            "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf"}),
        format!("HubSpot: {message}"),
    )
}

/// The `properties` of a create or update, checked as HubSpot checks them.
fn hubspot_properties(value: Option<&Value>) -> Result<Map<String, Value>, Refusal> {
    let invalid = |message: String| hubspot_error(400, "VALIDATION_ERROR", &message);
    let properties =
        value.and_then(Value::as_object).ok_or_else(|| invalid("properties is required".into()))?;
    for (name, value) in properties {
        if !HUBSPOT_CALL_PROPERTIES.contains(&name.as_str()) {
            return Err(invalid(format!("Property \"{name}\" does not exist")));
        }
        let text = value
            .as_str()
            .ok_or_else(|| invalid(format!("{name}: property values are strings, not {value}")))?;
        let valid = match name.as_str() {
            // UTC: ISO 8601 or milliseconds.
            "hs_timestamp" => {
                DateTime::parse_from_rfc3339(text).is_ok_and(|t| t.offset().local_minus_utc() == 0)
                    || is_digits(text)
            }
            "hs_call_direction" => ["INBOUND", "OUTBOUND"].contains(&text),
            "hs_call_status" => HUBSPOT_STATUSES.contains(&text),
            "hs_call_disposition" => HUBSPOT_OUTCOMES.contains(&text),
            // Milliseconds.
            "hs_call_duration" | "hubspot_owner_id" => is_digits(text),
            "hs_call_recording_url" => text.starts_with("https://"),
            _ => !text.is_empty(),
        };
        if !valid {
            return Err(invalid(format!("{text:?} is not a valid value of {name}")));
        }
    }
    Ok(properties.clone())
}

impl HubSpot {
    fn create(&mut self, body: &Value) -> Answer {
        let invalid = |message: &str| hubspot_error(400, "VALIDATION_ERROR", message);
        let object = body.as_object().ok_or_else(|| invalid("the body is not a JSON object"))?;
        if !unknown_keys(object, &["properties", "associations"]).is_empty() {
            return Err(invalid("the body has fields other than properties and associations"));
        }
        let properties = hubspot_properties(object.get("properties"))?;
        if !properties.contains_key("hs_timestamp") {
            return Err(invalid("hs_timestamp is required"));
        }
        let associations = object.get("associations").cloned().unwrap_or(Value::Null);
        if !associations.is_null() {
            // Call to contact: HUBSPOT_DEFINED type 194, to a contact that exists.
            let expected = json!([{"to": {"id": HUBSPOT_CONTACT},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}]);
            if associations != expected {
                return Err(invalid(&format!(
                    "associations {associations} are not a call-to-contact association"
                )));
            }
        }
        let id = (51_200 + self.calls.len()).to_string();
        let _ = self.calls.insert(id.clone(), (properties.clone(), associations));
        Ok((
            201,
            json!({"id": id, "properties": properties, "createdAt": "2024-05-01T10:02:00.000Z",
                "updatedAt": "2024-05-01T10:02:00.000Z", "archived": false}),
        ))
    }

    fn batch_update(&mut self, body: &Value) -> Answer {
        let invalid = |message: &str| hubspot_error(400, "VALIDATION_ERROR", message);
        let inputs =
            body.get("inputs").and_then(Value::as_array).ok_or_else(|| invalid("inputs is required"))?;
        if body.as_object().map(Map::len) != Some(1) || inputs.is_empty() || inputs.len() > 100 {
            return Err(invalid("a batch update is {\"inputs\": [1 to 100 of {id, properties}]}"));
        }
        let mut results = Vec::new();
        for input in inputs {
            let object = input.as_object().ok_or_else(|| invalid("an input is not an object"))?;
            if !unknown_keys(object, &["id", "properties"]).is_empty() {
                return Err(invalid("an input has fields other than id and properties"));
            }
            let id = input["id"].as_str().ok_or_else(|| invalid("an input's id is a string"))?;
            let properties = hubspot_properties(object.get("properties"))?;
            let Some((stored, _)) = self.calls.get_mut(id) else {
                // HubSpot answers a batch with an unknown id 207 Multi-Status: to a sender that
                // only looks at the status, a success.
                return Err(refuse(
                    207,
                    json!({"status": "COMPLETE", "results": [], "numErrors": 1,
                        "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND",
                            "message": format!("Could not get some CALL objects, they may be deleted or not exist. Check that ids are valid. ids: [{id}]")}]}),
                    format!("HubSpot: batch update of call {id}, which does not exist"),
                ));
            };
            stored.extend(properties.clone());
            self.updates.push((id.to_owned(), properties));
            results.push(
                json!({"id": id, "properties": stored.clone(), "createdAt": "2024-05-01T10:02:00.000Z",
                "updatedAt": "2024-05-01T10:05:00.000Z", "archived": false}),
            );
        }
        Ok((
            200,
            json!({"status": "COMPLETE", "results": results, "startedAt": "2024-05-01T10:05:00.000Z",
                "completedAt": "2024-05-01T10:05:00.100Z"}),
        ))
    }
}

impl Crm for HubSpot {
    fn answer(&mut self, r: &Got) -> Answer {
        if r.header("authorization") != format!("Bearer {HUBSPOT_TOKEN}") {
            return Err(hubspot_error(
                401,
                "INVALID_AUTHENTICATION",
                &format!(
                    "Authentication credentials not found (authorization: {:?})",
                    r.header("authorization")
                ),
            ));
        }
        if r.method != Method::POST || r.query.is_some() {
            return Err(hubspot_error(
                405,
                "VALIDATION_ERROR",
                &format!("{} {:?} is not how calls are written", r.method, r.query),
            ));
        }
        if !r.header("content-type").starts_with("application/json") {
            return Err(hubspot_error(
                415,
                "VALIDATION_ERROR",
                &format!("content-type {:?}", r.header("content-type")),
            ));
        }
        let body = r.json().ok_or_else(|| hubspot_error(400, "VALIDATION_ERROR", "Invalid input JSON"))?;
        match r.path.as_str() {
            "/crm/v3/objects/calls" => self.create(&body),
            "/crm/v3/objects/calls/batch/update" => self.batch_update(&body),
            other => Err(hubspot_error(404, "OBJECT_NOT_FOUND", &format!("no endpoint {other}"))),
        }
    }
}

// ---- Pipedrive ----------------------------------------------------------------------------------

const PIPEDRIVE_TOKEN: &str = "659c9fddb16335e48cc67114694b52074e812e03";

/// The fields of `POST /v1/callLogs` (developers.pipedrive.com/docs/api/v1/CallLogs).
const PIPEDRIVE_FIELDS: &[&str] = &[
    "user_id",
    "activity_id",
    "subject",
    "duration",
    "outcome",
    "from_phone_number",
    "to_phone_number",
    "start_time",
    "end_time",
    "person_id",
    "org_id",
    "deal_id",
    "lead_id",
    "note",
];
const PIPEDRIVE_OUTCOMES: &[&str] =
    &["connected", "no_answer", "left_message", "left_voicemail", "wrong_number", "busy"];

/// Pipedrive's call logs, as created.
#[derive(Debug, Default)]
struct Pipedrive {
    logs: Vec<Value>,
}

fn pipedrive_error(status: u16, error: &str) -> Refusal {
    refuse(
        status,
        json!({"success": false, "error": error, "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API.",
            "data": null, "additional_data": null}),
        format!("Pipedrive: {error}"),
    )
}

impl Crm for Pipedrive {
    fn answer(&mut self, r: &Got) -> Answer {
        // The token goes in the x-api-token header; in the query it would reach every log line
        // that has the URL.
        if r.header("x-api-token") != PIPEDRIVE_TOKEN || r.query.is_some() {
            return Err(refuse(
                401,
                json!({"success": false, "error": "unauthorized access", "errorCode": 401,
                    "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API."}),
                format!("Pipedrive: x-api-token {:?}, query {:?}", r.header("x-api-token"), r.query),
            ));
        }
        if r.method != Method::POST || r.path != "/api/v1/callLogs" {
            return Err(pipedrive_error(404, &format!("{} {} is not Add a call log", r.method, r.path)));
        }
        if !r.header("content-type").starts_with("application/json") {
            return Err(pipedrive_error(415, &format!("content-type {:?}", r.header("content-type"))));
        }
        let body = r.json().ok_or_else(|| pipedrive_error(400, "the body is not JSON"))?;
        let log = body.as_object().ok_or_else(|| pipedrive_error(400, "the body is not an object"))?;
        let unknown = unknown_keys(log, PIPEDRIVE_FIELDS);
        if !unknown.is_empty() {
            return Err(pipedrive_error(400, &format!("unknown fields {unknown:?}")));
        }
        let text = |name: &str| log.get(name).and_then(Value::as_str);
        if !text("outcome").is_some_and(|o| PIPEDRIVE_OUTCOMES.contains(&o)) {
            return Err(pipedrive_error(400, &format!("outcome is required, one of {PIPEDRIVE_OUTCOMES:?}")));
        }
        if text("to_phone_number").is_none_or(str::is_empty) {
            return Err(pipedrive_error(400, "to_phone_number is required"));
        }
        // UTC, YYYY-MM-DD HH:MM:SS.
        let time =
            |name: &str| text(name).and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok());
        let (Some(start), Some(end)) = (time("start_time"), time("end_time")) else {
            return Err(pipedrive_error(400, "start_time and end_time are required, as YYYY-MM-DD HH:MM:SS"));
        };
        if end < start {
            return Err(pipedrive_error(400, "end_time is before start_time"));
        }
        // Seconds, as a string.
        if log.contains_key("duration") && !text("duration").is_some_and(is_digits) {
            return Err(pipedrive_error(400, "duration is a number of seconds, as a string"));
        }
        for id in ["user_id", "activity_id", "person_id", "org_id", "deal_id"] {
            if log.get(id).is_some_and(|v| !v.is_u64()) {
                return Err(pipedrive_error(400, &format!("{id} is an integer")));
            }
        }
        if log.get("from_phone_number").is_some_and(|v| v.as_str().is_none_or(str::is_empty)) {
            return Err(pipedrive_error(400, "from_phone_number is a string"));
        }
        self.logs.push(body.clone());
        let mut data = body.clone();
        data["id"] = json!(format!("{:032x}", 0x5eed_0000 + self.logs.len()));
        data["activity_id"] = json!(700 + self.logs.len());
        data["has_recording"] = json!(false);
        data["company_id"] = json!(1);
        Ok((200, json!({"success": true, "data": data})))
    }
}

// ---- Bitrix24 -----------------------------------------------------------------------------------

/// The portal's inbound webhook: user 1, its token.
const BITRIX_HOOK: &str = "/rest/1/k3ytest9xq2w7/";
/// The portal's users.
const BITRIX_USERS: &[&str] = &["1", "42"];

/// Bitrix24's `STATUS_CODE`s of `telephony.externalcall.finish`.
const BITRIX_STATUS_CODES: &[&str] =
    &["200", "304", "603", "603-S", "403", "404", "486", "484", "503", "480", "OTHER"];

/// One call the portal registered, and what finish and attachRecord gave it.
#[derive(Debug, Clone, PartialEq)]
struct BitrixCall {
    id: String,
    register: BTreeMap<String, String>,
    finish: Option<BTreeMap<String, String>>,
    record: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default)]
struct Bitrix {
    calls: Vec<BitrixCall>,
    /// Methods to answer QUERY_LIMIT_EXCEEDED once each, in order.
    overloaded: VecDeque<&'static str>,
    /// Set: the portal takes only a local application's access token (`auth`), as portals that
    /// enforce Bitrix24's March 2026 rule do, and the same fake answers for oauth.bitrix.info.
    app: Option<BitrixApp>,
}

/// A local application's client and the tokens the portal holds for it: one access token and
/// one refresh token at a time, each refresh token good once (Bitrix24 rotates it).
#[derive(Debug)]
struct BitrixApp {
    access: String,
    refresh: String,
    trades: usize,
}

const BITRIX_CLIENT_ID: &str = "local.6667fc928a50a9.70414732";
const BITRIX_CLIENT_SECRET: &str = "ZeKyeYIgy2NsHZqsIHY6GfG1V";

impl BitrixApp {
    fn new() -> Self {
        BitrixApp { access: "never-issued".into(), refresh: "r3fresh0".into(), trades: 0 }
    }

    /// `GET https://oauth.bitrix.info/oauth/token/?grant_type=refresh_token&client_id=…&
    /// client_secret=…&refresh_token=…`, as Bitrix24's OAuth documentation writes it.
    fn token(&mut self, r: &Got) -> Answer {
        let query: BTreeMap<String, String> =
            form_urlencoded::parse(r.query.as_deref().unwrap_or_default().as_bytes()).into_owned().collect();
        let param = |name: &str| query.get(name).map(String::as_str);
        if r.method != Method::GET || query.len() != 4 || param("grant_type") != Some("refresh_token") {
            return Err(bitrix_error(400, "invalid_request", &format!("{} {:?}", r.method, r.query)));
        }
        if (param("client_id"), param("client_secret"))
            != (Some(BITRIX_CLIENT_ID), Some(BITRIX_CLIENT_SECRET))
        {
            return Err(bitrix_error(401, "invalid_client", "Invalid client credentials"));
        }
        if param("refresh_token") != Some(self.refresh.as_str()) {
            return Err(bitrix_error(400, "invalid_grant", "Invalid refresh token"));
        }
        self.trades += 1;
        self.access = format!("acc3ss{}", self.trades);
        self.refresh = format!("r3fresh{}", self.trades);
        Ok((
            200,
            json!({"access_token": self.access, "expires": 1_714_561_320, "expires_in": 3600,
                "scope": "app", "domain": "oauth.bitrix.info",
                "server_endpoint": "https://oauth.bitrix.info/rest/", "status": "L",
                "client_endpoint": "https://acme.bitrix24.ru/rest/", "member_id": "a223c6b3710f85df22e9377d6c4f7553",
                "user_id": 1, "refresh_token": self.refresh}),
        ))
    }

    /// The access token is the only query parameter; an old one is expired.
    fn authorize(&self, r: &Got) -> Result<Option<(u16, Value)>, Refusal> {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(r.query.as_deref().unwrap_or_default().as_bytes()).into_owned().collect();
        match query.as_slice() {
            [(name, token)] if name == "auth" && *token == self.access => Ok(None),
            [(name, _)] if name == "auth" => Ok(Some((
                401,
                json!({"error": "expired_token", "error_description": "The access token provided has expired."}),
            ))),
            _ => Err(bitrix_error(401, "NO_AUTH_FOUND", &format!("Wrong authorization data: {:?}", r.query))),
        }
    }
}

fn bitrix_error(status: u16, error: &str, description: &str) -> Refusal {
    refuse(
        status,
        json!({"error": error, "error_description": description}),
        format!("Bitrix24: {error}: {description}"),
    )
}

/// The form parameters, each once, none but `known`.
fn bitrix_params(r: &Got, known: &[&str]) -> Result<BTreeMap<String, String>, Refusal> {
    let mut params = BTreeMap::new();
    for (name, value) in r.form() {
        if !known.contains(&name.as_str()) {
            return Err(bitrix_error(400, "INVALID_ARG_VALUE", &format!("unknown parameter {name}")));
        }
        if params.insert(name.clone(), value).is_some() {
            return Err(bitrix_error(400, "INVALID_ARG_VALUE", &format!("{name} given twice")));
        }
    }
    Ok(params)
}

fn bitrix_time() -> Value {
    json!({"start": 1_714_557_720.1, "finish": 1_714_557_720.2, "duration": 0.1, "processing": 0.05,
        "date_start": "2024-05-01T13:02:00+03:00", "date_finish": "2024-05-01T13:02:00+03:00"})
}

impl Bitrix {
    fn register(&mut self, r: &Got) -> Answer {
        let params = bitrix_params(
            r,
            &[
                "USER_PHONE_INNER",
                "USER_ID",
                "PHONE_NUMBER",
                "CALL_START_DATE",
                "CRM_CREATE",
                "CRM_SOURCE",
                "CRM_ENTITY_TYPE",
                "CRM_ENTITY_ID",
                "SHOW",
                "CALL_LIST_ID",
                "LINE_NUMBER",
                "TYPE",
                "ADD_TO_CHAT",
            ],
        )?;
        let param = |name: &str| params.get(name).map(String::as_str);
        let bad = |description: &str| bitrix_error(400, "INVALID_ARG_VALUE", description);
        if !param("USER_ID").is_some_and(|u| BITRIX_USERS.contains(&u)) && param("USER_PHONE_INNER").is_none()
        {
            return Err(bad("USER_ID (a user of the portal) or USER_PHONE_INNER is required"));
        }
        if param("PHONE_NUMBER").is_none_or(str::is_empty) {
            return Err(bad("PHONE_NUMBER is required"));
        }
        if !param("TYPE").is_some_and(|t| ["1", "2", "3", "4", "5"].contains(&t)) {
            return Err(bad("TYPE is 1 (outgoing), 2 (incoming), 3, 4 or 5"));
        }
        if param("CALL_START_DATE").is_some_and(|d| !is_iso_with_offset(d)) {
            return Err(bad("CALL_START_DATE is ISO 8601 with the time zone"));
        }
        for flag in ["CRM_CREATE", "SHOW"] {
            if param(flag).is_some_and(|f| !["0", "1"].contains(&f)) {
                return Err(bad(&format!("{flag} is 0 or 1")));
            }
        }
        // The same parameters again before finish: the same call, for 30 minutes.
        let id = match self.calls.iter().find(|c| c.register == params && c.finish.is_none()) {
            Some(call) => call.id.clone(),
            None => {
                let id =
                    format!("externalCall.{:032x}.1714557720", 0xb1c0_0000_u64 + self.calls.len() as u64);
                self.calls.push(BitrixCall { id: id.clone(), register: params, finish: None, record: None });
                id
            }
        };
        Ok((
            200,
            json!({"result": {"CALL_ID": id, "CRM_CREATED_LEAD": null, "CRM_ENTITY_TYPE": "CONTACT",
                "CRM_ENTITY_ID": 77, "LEAD_CREATION_ERROR": null}, "time": bitrix_time()}),
        ))
    }

    fn finish(&mut self, r: &Got) -> Answer {
        let params = bitrix_params(
            r,
            &[
                "CALL_ID",
                "USER_ID",
                "DURATION",
                "COST",
                "COST_CURRENCY",
                "STATUS_CODE",
                "FAILED_REASON",
                "RECORD_URL",
                "VOTE",
                "ADD_TO_CHAT",
            ],
        )?;
        let param = |name: &str| params.get(name).map(String::as_str);
        let bad = |description: &str| bitrix_error(400, "INVALID_ARG_VALUE", description);
        if !param("USER_ID").is_some_and(|u| BITRIX_USERS.contains(&u)) {
            return Err(bad("USER_ID (a user of the portal) is required"));
        }
        if !param("DURATION").is_some_and(is_digits) {
            return Err(bad("DURATION (seconds) is required"));
        }
        if param("STATUS_CODE").is_some_and(|s| !BITRIX_STATUS_CODES.contains(&s)) {
            return Err(bad("STATUS_CODE is one of the documented codes"));
        }
        let call = self
            .calls
            .iter_mut()
            .find(|c| Some(c.id.as_str()) == param("CALL_ID") && c.finish.is_none())
            .ok_or_else(|| bitrix_error(400, "ERROR_NOT_FOUND", "Call is not found, or already finished"))?;
        call.finish = Some(params.clone());
        let result = json!({"CALL_ID": call.id, "CALL_TYPE": call.register["TYPE"],
            "PHONE_NUMBER": call.register["PHONE_NUMBER"], "PORTAL_USER_ID": params["USER_ID"],
            "CALL_DURATION": params["DURATION"], "CALL_FAILED_CODE": param("STATUS_CODE").unwrap_or("200"),
            "CRM_ACTIVITY_ID": 9001, "CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 77});
        Ok((200, json!({"result": result, "time": bitrix_time()})))
    }

    fn attach_record(&mut self, r: &Got) -> Answer {
        let params = bitrix_params(r, &["CALL_ID", "FILENAME", "FILE_CONTENT", "RECORD_URL"])?;
        let param = |name: &str| params.get(name).map(String::as_str);
        let bad = |description: &str| bitrix_error(400, "INVALID_ARG_VALUE", description);
        if !param("FILENAME").is_some_and(|f| f.ends_with(".mp3") || f.ends_with(".wav")) {
            return Err(bad("FILENAME is required and ends in .mp3 or .wav"));
        }
        if !param("RECORD_URL").is_some_and(|u| u.starts_with("https://")) {
            return Err(bad("RECORD_URL is a link the portal can download the recording from"));
        }
        // After finish: the recording goes on the call's activity.
        let call = self
            .calls
            .iter_mut()
            .find(|c| Some(c.id.as_str()) == param("CALL_ID") && c.finish.is_some())
            .ok_or_else(|| bitrix_error(400, "ERROR_NOT_FOUND", "Call is not found, or not finished yet"))?;
        call.record = Some(params);
        Ok((200, json!({"result": {"FILE_ID": 3001}, "time": bitrix_time()})))
    }
}

impl Crm for Bitrix {
    fn answer(&mut self, r: &Got) -> Answer {
        if let Some(app) = &mut self.app {
            if r.path == "/oauth/token/" {
                return app.token(r);
            }
            if let Some(expired) = app.authorize(r)? {
                return Ok(expired);
            }
        }
        let prefix = if self.app.is_some() { "/rest/" } else { BITRIX_HOOK };
        let Some(method) = r.path.strip_prefix(prefix).and_then(|m| m.strip_suffix(".json")) else {
            return Err(refuse(
                401,
                json!({"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}),
                format!("Bitrix24: {} is not the webhook", r.path),
            ));
        };
        if r.method != Method::POST || (self.app.is_none() && r.query.is_some()) {
            return Err(bitrix_error(405, "ERROR_METHOD", &format!("{} with query {:?}", r.method, r.query)));
        }
        if !r.header("content-type").starts_with("application/x-www-form-urlencoded") {
            return Err(bitrix_error(
                400,
                "INVALID_REQUEST",
                &format!("content-type {:?}", r.header("content-type")),
            ));
        }
        let method = method.to_ascii_lowercase();
        if self.overloaded.front().is_some_and(|m| m.eq_ignore_ascii_case(&method)) {
            let _ = self.overloaded.pop_front();
            return Ok((
                503,
                json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}),
            ));
        }
        match method.as_str() {
            "telephony.externalcall.register" => self.register(r),
            "telephony.externalcall.finish" => self.finish(r),
            "telephony.externalcall.attachrecord" => self.attach_record(r),
            other => Err(bitrix_error(404, "ERROR_METHOD_NOT_FOUND", &format!("Method not found: {other}"))),
        }
    }
}

// ---- amoCRM -------------------------------------------------------------------------------------

const AMO_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.long-lived.token";

/// The fields of a call of `POST /api/v4/calls`.
const AMO_FIELDS: &[&str] = &[
    "direction",
    "uniq",
    "duration",
    "source",
    "link",
    "phone",
    "call_result",
    "call_status",
    "call_responsible",
    "responsible_user_id",
    "created_by",
    "updated_by",
    "created_at",
    "updated_at",
    "request_id",
];

#[derive(Debug, Default)]
struct AmoCrm {
    calls: Vec<Value>,
}

fn amo_invalid(path: &str, detail: &str) -> Refusal {
    refuse(
        400,
        json!({"title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
            "detail": "Request validation failed",
            "validation-errors": [{"request_id": "0", "errors": [{"code": "InvalidType", "path": path, "detail": detail}]}]}),
        format!("amoCRM: {path}: {detail}"),
    )
}

impl Crm for AmoCrm {
    fn answer(&mut self, r: &Got) -> Answer {
        if r.header("authorization") != format!("Bearer {AMO_TOKEN}") {
            return Err(refuse(
                401,
                json!({"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401, "detail": "Unauthorized"}),
                format!("amoCRM: authorization {:?}", r.header("authorization")),
            ));
        }
        if r.method != Method::POST || r.path != "/api/v4/calls" || r.query.is_some() {
            return Err(refuse(
                404,
                json!({"title": "Not Found", "status": 404}),
                format!("amoCRM: {} {} is not Add calls", r.method, r.path),
            ));
        }
        if !r.header("content-type").starts_with("application/json") {
            return Err(amo_invalid("", &format!("content-type {:?}", r.header("content-type"))));
        }
        // An array of calls (a batch).
        let Some(Value::Array(calls)) = r.json() else {
            return Err(amo_invalid("", "the body is a JSON array of calls"));
        };
        if calls.is_empty() {
            return Err(amo_invalid("", "no calls"));
        }
        for call in &calls {
            let object = call.as_object().ok_or_else(|| amo_invalid("", "a call is an object"))?;
            if let Some(name) = unknown_keys(object, AMO_FIELDS).first() {
                return Err(amo_invalid(name, "unknown field"));
            }
            let text = |name: &str| object.get(name).and_then(Value::as_str).filter(|t| !t.is_empty());
            if !text("direction").is_some_and(|d| ["inbound", "outbound"].contains(&d)) {
                return Err(amo_invalid("direction", "inbound or outbound, required"));
            }
            for name in ["uniq", "source", "phone"] {
                if text(name).is_none() {
                    return Err(amo_invalid(name, "a string, required"));
                }
            }
            if !object.get("duration").is_some_and(Value::is_u64) {
                return Err(amo_invalid("duration", "seconds, an integer, required"));
            }
            if object.get("call_status").is_some_and(|s| !s.as_u64().is_some_and(|s| (1..=7).contains(&s))) {
                return Err(amo_invalid("call_status", "1 to 7"));
            }
            for name in ["responsible_user_id", "created_by", "created_at", "updated_at"] {
                if object.get(name).is_some_and(|v| !v.is_u64()) {
                    return Err(amo_invalid(name, "an integer"));
                }
            }
            if object.contains_key("link") && !text("link").is_some_and(|l| l.starts_with("https://")) {
                return Err(amo_invalid("link", "a link to the recording"));
            }
            // Stricter than amoCRM, which documents no such check: here a repeated `uniq` shows
            // that the dispatcher sent one call twice.
            if self.calls.iter().any(|c| c["uniq"] == object["uniq"]) {
                return Err(amo_invalid("uniq", "a call with this uniq was added already"));
            }
        }
        let mut added = Vec::new();
        for call in calls {
            self.calls.push(call);
            added.push(json!({"id": 4_000 + self.calls.len(), "entity_id": 5001, "entity_type": "contact",
                "account_id": 28_805_383, "request_id": (added.len()).to_string()}));
        }
        Ok((200, json!({"_total_items": added.len(), "_embedded": {"calls": added}})))
    }
}

// ---- the dispatcher -----------------------------------------------------------------------------

struct Setup {
    env: TestEnv,
    dispatcher: ServiceProcess,
    producer: FutureProducer,
    codecs: Codecs,
}

async fn setup(name: &str) -> anyhow::Result<Setup> {
    let mut env = TestEnv::new(name);
    env.set("SWITCHBOARD_API__TOKENS", format!("[\"{TOKEN}\"]"));
    env.set("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", "[\"127.0.0.0/8\"]");
    env.set("SWITCHBOARD_DISPATCHER__POLL_INTERVAL_MS", "50");
    env.set("SWITCHBOARD_DISPATCHER__PROFILES_REFRESH_MS", "200");
    env.init().await?;
    let dispatcher = env.start("dispatcher").await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("acks", "all")
        .create()
        .context("producer")?;
    Ok(Setup { env, dispatcher, producer, codecs: Codecs::new()? })
}

impl Setup {
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let auth = format!("Bearer {TOKEN}");
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let response = send(&http_client(), method, &self.dispatcher.url(path), &headers, body).await?;
        Ok((response.status, response.json()))
    }

    /// Saves connector `name`'s profile for `settings` as profile `name` through the API, with
    /// the CRM's address `crm` in its URLs replaced by `fake`'s; returns it as stored.
    async fn put_connector(
        &self,
        name: &str,
        settings: Value,
        crm: &str,
        fake: &str,
    ) -> anyhow::Result<Value> {
        let profile = connectors::by_name(name, settings).with_context(|| format!("the {name} connector"))?;
        let mut spec: Value = serde_json::from_str(&profile.to_json())?;
        for step in spec["steps"].as_array_mut().context("steps")? {
            let url = step["request"]["url"].as_str().context("url")?;
            ensure!(url.starts_with(crm), "{url} is on {crm}");
            step["request"]["url"] = json!(url.replacen(crm, fake, 1));
        }
        // The token endpoint (oauth.bitrix.info for Bitrix24) is played by the same fake.
        if let Some(token_url) = spec.pointer("/oauth/token_url").and_then(Value::as_str) {
            let path = token_url.parse::<http::Uri>()?.path().to_owned();
            spec["oauth"]["token_url"] = json!(format!("{fake}{path}"));
        }
        let (status, stored) = self.api("PUT", &format!("/v1/profiles/{name}"), Some(spec)).await?;
        ensure!(status == 201, "PUT profile {name}: {status} {stored}");
        // Every replica uses it within the refresh interval.
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(stored)
    }

    async fn produce(&self, record: &CallRecord) -> anyhow::Result<()> {
        let payload = self.codecs.call_record.encode(record)?;
        let key = record.partition_key();
        self.producer
            .send(
                FutureRecord::to(&self.env.topics().calls).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    async fn delivery(&self, id: &str) -> anyhow::Result<Value> {
        let (status, body) = self.api("GET", &format!("/v1/deliveries/{id}"), None).await?;
        ensure!(status == 200, "GET delivery {id}: {status} {body}");
        Ok(body)
    }

    /// Waits until delivery `id` satisfies `done`.
    async fn wait(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + WAIT;
        let mut last = Value::Null;
        loop {
            if let Ok(delivery) = self.delivery(id).await {
                if done(&delivery) {
                    return Ok(delivery);
                }
                last = delivery;
            }
            ensure!(Instant::now() < deadline, "delivery {id} never {what}: {last}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_delivered(&self, id: &str) -> anyhow::Result<Value> {
        self.wait(id, "delivered", |d| d["status"] == "delivered").await
    }

    /// Waits until delivery `id` has done what it can and waits for the call's recording.
    async fn wait_for_recording(&self, id: &str) -> anyhow::Result<Value> {
        self.wait(id, "waited for the recording", |d| {
            d["status"] == "pending"
                && d["last_error"].as_str().is_some_and(|e| e.contains("waits for the recording"))
        })
        .await
    }

    async fn deliveries(&self, profile: &str) -> anyhow::Result<usize> {
        let (status, list) = self.api("GET", &format!("/v1/deliveries?profile={profile}"), None).await?;
        ensure!(status == 200, "{status} {list}");
        list["deliveries"].as_array().map(Vec::len).context("deliveries")
    }

    /// Stops the dispatcher, which must drain and exit 0 on SIGTERM, and starts a new one.
    async fn restart(&mut self) -> anyhow::Result<()> {
        let code = self.dispatcher.terminate(Duration::from_secs(15)).await?;
        ensure!(code == Some(0), "the dispatcher exited with {code:?} after SIGTERM");
        self.dispatcher = self.env.start("dispatcher").await?;
        Ok(())
    }

    /// Stops the dispatcher, which must drain and exit 0 on SIGTERM, and drops the database.
    async fn done(mut self) -> anyhow::Result<()> {
        let code = self.dispatcher.terminate(Duration::from_secs(15)).await?;
        ensure!(code == Some(0), "the dispatcher exited with {code:?} after SIGTERM");
        self.env.cleanup().await;
        Ok(())
    }
}

// ---- calls --------------------------------------------------------------------------------------

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, h, m, s).single().expect("a valid time")
}

/// 2024-05-01 10:00:00 UTC in seconds, every call's start.
const STARTED: i64 = 1_714_557_600;
const CUSTOMER: &str = "+442079460000";
const OUR_NUMBER: &str = "+442079460999";
const CALLED: &str = "+14155550123";

/// Extension 101, whom every profile maps to CRM user 42.
fn agent_101() -> AgentRef {
    AgentRef {
        agent_id: Some("ag-7".into()),
        agent_match: Some(AgentMatch::Extension),
        extension: Some("101".into()),
        number: None,
        email: Some("ann@example.com".into()),
    }
}

/// The complete record (version 3) of call `id`, started at 10:00:00 UTC: answered at 10:00:05
/// by extension 101 and ended at 10:01:05 (60 s of talk), or, unanswered, ended at 10:00:30 (no
/// agent on a missed inbound call). Inbound: +44 20 7946 0000 calls +44 20 7946 0999; outbound:
/// extension 101 calls +1 415 555 0123; internal: 101 calls 102. No recording.
fn call(id: &str, direction: Direction, outcome: Outcome) -> CallRecord {
    let answered = outcome == Outcome::Answered;
    let (from, to) = match direction {
        Direction::Outbound => ("101", CALLED),
        Direction::Internal => ("101", "102"),
        _ => (CUSTOMER, OUR_NUMBER),
    };
    let agent = (answered || direction != Direction::Inbound).then(agent_101);
    CallRecord {
        source_id: SourceId::parse(SOURCE).expect("source"),
        vendor: Vendor::Generic,
        call_id: CallId::parse(id).expect("call"),
        version: 3,
        status: CallStatus::Ended,
        outcome: Some(outcome),
        completion: Some(Completion::EndMarker),
        completed_at: Some(at(10, 1, 10)),
        direction,
        from_number: Some(from.into()),
        to_number: Some(to.into()),
        started_at: at(10, 0, 0),
        answered_at: answered.then(|| at(10, 0, 5)),
        ended_at: Some(if answered { at(10, 1, 5) } else { at(10, 0, 30) }),
        duration_seconds: Some(if answered { 65 } else { 30 }),
        talk_seconds: answered.then_some(60),
        disposition: None,
        hangup_cause: None,
        agent,
        contact_ids: Vec::new(),
        contact_match: None,
        responsible_agent_id: None,
        recording_url: None,
        recording_id: None,
        legs: Vec::new(),
        recording_status: None,
        recording_error: None,
        queue: None,
        wrap_up: None,
    }
}

/// An answered inbound call whose recording the recordings stage is still resolving.
fn recording_pending(id: &str) -> CallRecord {
    CallRecord {
        recording_status: Some(RecordingStatus::Pending),
        ..call(id, Direction::Inbound, Outcome::Answered)
    }
}

/// The call's next version: the recording is ready, behind its stable link.
fn recording_ready(record: &CallRecord) -> CallRecord {
    CallRecord {
        version: record.version + 1,
        recording_status: Some(RecordingStatus::Ready),
        recording_url: Some(RECORDING.into()),
        ..record.clone()
    }
}

/// The delivery of a profile for a call's first record (version 3).
fn delivery_of(profile: &str, call: &str) -> String {
    switchboard_dispatcher::delivery_id(profile, SOURCE, call, "record:3")
}

/// The `<Call ID>` a CRM gets for a call: a UUID derived from source and call.
fn call_uuid(call: &str) -> String {
    switchboard_dispatcher::values::call_uuid(SOURCE, call).to_string()
}

/// The stored profile shows none of `secrets`, and its secret headers as `***`.
fn assert_masked(stored: &Value, secrets: &[&str]) -> anyhow::Result<()> {
    let text = stored.to_string();
    ensure!(secrets.iter().all(|s| !text.contains(s)), "the stored profile shows a secret: {stored}");
    for step in stored["spec"]["steps"].as_array().context("steps")? {
        for header in step["request"]["headers"].as_array().into_iter().flatten() {
            ensure!(header.get("secret").is_none_or(|s| s == "***"), "{header}");
        }
    }
    Ok(())
}

/// `values`, sorted by their JSON text: what a CRM holds, in no particular order.
fn sorted(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by_key(Value::to_string);
    values
}

// ---- the tests ----------------------------------------------------------------------------------

/// HubSpot: each call is created at once (with its owner, outcome, times in HubSpot's units and
/// its matched contact), and a recording that is ready only later is set on the call HubSpot
/// created, by the id HubSpot answered.
#[tokio::test]
async fn hubspot_logs_each_call_at_once_and_sets_a_late_recording_on_it() -> anyhow::Result<()> {
    let setup = setup("cn-hubspot").await?;
    let hubspot = Fake::start(HubSpot::default()).await?;
    let settings = json!({"access_token": HUBSPOT_TOKEN, "users": {"users": {"101": "42"}},
        "associate_contacts": true});
    let stored =
        setup.put_connector("hubspot", settings, "https://api.hubapi.com", &hubspot.origin()).await?;
    assert_masked(&stored, &[HUBSPOT_TOKEN])?;

    // Test, as a user presses it: the request for a call, rendered and not sent.
    let sample = json!({"record": call("hs-sample", Direction::Inbound, Outcome::Answered), "dry_run": true});
    let (status, test) = setup.api("POST", "/v1/profiles/hubspot/test", Some(sample)).await?;
    ensure!(status == 200 && test["step"] == "create", "{status} {test}");
    ensure!(test["request"]["url"] == format!("{}/crm/v3/objects/calls", hubspot.origin()), "{test}");
    ensure!(test["request"]["headers"]["authorization"] == "***", "{test}");
    ensure!(hubspot.requests().is_empty(), "a dry run sends nothing");

    let mut recorded = recording_pending("hs-rec");
    recorded.contact_ids = vec![HUBSPOT_CONTACT.into()];
    setup.produce(&recorded).await?;
    setup.produce(&call("hs-out", Direction::Outbound, Outcome::Answered)).await?;
    setup.produce(&call("hs-missed", Direction::Inbound, Outcome::Missed)).await?;
    setup.produce(&call("hs-internal", Direction::Internal, Outcome::Answered)).await?;

    setup.wait_delivered(&delivery_of("hubspot", "hs-out")).await?;
    setup.wait_delivered(&delivery_of("hubspot", "hs-missed")).await?;
    setup.wait_for_recording(&delivery_of("hubspot", "hs-rec")).await?;
    let props = |v: Value| v.as_object().cloned().unwrap_or_default();
    let expected = sorted(vec![
        json!([{"hs_timestamp": "2024-05-01T10:00:00Z", "hs_call_direction": "INBOUND",
            "hs_call_duration": "60000", "hs_call_status": "COMPLETED", "hs_call_disposition": CONNECTED,
            "hs_call_from_number": CUSTOMER, "hs_call_to_number": OUR_NUMBER, "hubspot_owner_id": "42"},
            [{"to": {"id": HUBSPOT_CONTACT},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}]]),
        json!([{"hs_timestamp": "2024-05-01T10:00:00Z", "hs_call_direction": "OUTBOUND",
            "hs_call_duration": "60000", "hs_call_status": "COMPLETED", "hs_call_disposition": CONNECTED,
            "hs_call_from_number": "101", "hs_call_to_number": CALLED, "hubspot_owner_id": "42"}, null]),
        json!([{"hs_timestamp": "2024-05-01T10:00:00Z", "hs_call_direction": "INBOUND",
            "hs_call_duration": "0", "hs_call_status": "NO_ANSWER", "hs_call_disposition": NO_ANSWER,
            "hs_call_from_number": CUSTOMER, "hs_call_to_number": OUR_NUMBER}, null]),
    ]);
    let held = |h: &HubSpot| sorted(h.calls.values().map(|(p, a)| json!([p, a])).collect());
    ensure!(hubspot.state(held) == expected, "HubSpot holds {:#?}", hubspot.state(held));
    ensure!(
        hubspot.requests().len() == 3,
        "three calls created, nothing else yet (the internal call is not sent)"
    );

    // The recording is ready: its link goes on the call HubSpot created for it.
    setup.produce(&recording_ready(&recorded)).await?;
    let delivery = setup.wait_delivered(&delivery_of("hubspot", "hs-rec")).await?;
    let steps: Vec<&str> = delivery["attempt_log"]
        .as_array()
        .context("log")?
        .iter()
        .filter_map(|a| a["step"].as_str())
        .collect();
    ensure!(steps == ["create", "recording"], "{delivery}");
    let got = hubspot.wait_for(4).await?;
    let update = got.last().context("the update")?;
    ensure!(update.path == "/crm/v3/objects/calls/batch/update", "{update:?}");
    let (id, set) = hubspot.state(|h| h.updates.first().cloned()).context("an update")?;
    ensure!(set == props(json!({"hs_call_recording_url": RECORDING})), "{set:?}");
    let (properties, associations) = hubspot.state(|h| h.calls[&id].clone());
    ensure!(
        associations[0]["to"]["id"] == HUBSPOT_CONTACT && properties["hs_call_recording_url"] == RECORDING,
        "the link is set on the recorded call: {properties:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(hubspot.requests().len() == 4 && setup.deliveries("hubspot").await? == 3);
    hubspot.assert_all_accepted()?;
    setup.done().await?;
    Ok(())
}

/// Pipedrive: one call log per call, sent at once (Pipedrive takes recordings only as uploaded
/// audio, so the profile neither sends a link nor waits for one).
#[tokio::test]
async fn pipedrive_gets_one_call_log_per_call() -> anyhow::Result<()> {
    let setup = setup("cn-pipedrive").await?;
    let pipedrive = Fake::start(Pipedrive::default()).await?;
    let settings = json!({"base_url": "https://acme.pipedrive.com", "api_token": PIPEDRIVE_TOKEN,
        "users": {"users": {"101": "42"}}});
    let stored =
        setup.put_connector("pipedrive", settings, "https://acme.pipedrive.com", &pipedrive.origin()).await?;
    assert_masked(&stored, &[PIPEDRIVE_TOKEN])?;

    let recorded = recording_pending("pd-rec");
    setup.produce(&recorded).await?;
    setup.produce(&call("pd-missed", Direction::Inbound, Outcome::Missed)).await?;
    setup.produce(&call("pd-busy", Direction::Outbound, Outcome::Busy)).await?;
    for call in ["pd-rec", "pd-missed", "pd-busy"] {
        setup.wait_delivered(&delivery_of("pipedrive", call)).await?;
    }
    let expected = sorted(vec![
        json!({"user_id": 42, "outcome": "connected", "from_phone_number": CUSTOMER, "to_phone_number": OUR_NUMBER,
            "start_time": "2024-05-01 10:00:00", "end_time": "2024-05-01 10:01:05", "duration": "60"}),
        json!({"outcome": "no_answer", "from_phone_number": CUSTOMER, "to_phone_number": OUR_NUMBER,
            "start_time": "2024-05-01 10:00:00", "end_time": "2024-05-01 10:00:30", "duration": "0"}),
        json!({"user_id": 42, "outcome": "busy", "from_phone_number": "101", "to_phone_number": CALLED,
            "start_time": "2024-05-01 10:00:00", "end_time": "2024-05-01 10:00:30", "duration": "0"}),
    ]);
    let logs = pipedrive.state(|p| sorted(p.logs.clone()));
    ensure!(logs == expected, "Pipedrive holds {logs:#?}");

    // The recording becomes ready: nothing more to send.
    setup.produce(&recording_ready(&recorded)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ensure!(pipedrive.requests().len() == 3, "{} requests", pipedrive.requests().len());
    pipedrive.assert_all_accepted()?;
    setup.done().await?;
    Ok(())
}

/// Bitrix24: register, then finish with the `CALL_ID` register answered (a finish the portal
/// turned away is retried alone, not registered again), then attachRecord once the recording is
/// ready, after the call was logged; calls without a recording end at finish.
#[tokio::test]
async fn bitrix24_registers_finishes_and_attaches_a_late_recording() -> anyhow::Result<()> {
    let setup = setup("cn-bitrix24").await?;
    let bitrix = Fake::start(Bitrix {
        overloaded: VecDeque::from(["telephony.externalcall.finish"]),
        ..Bitrix::default()
    })
    .await?;
    let portal = "https://acme.bitrix24.ru";
    let settings = json!({"webhook_url": format!("{portal}{BITRIX_HOOK}"),
        "users": {"users": {"101": "42"}, "default_user": "1"}});
    let stored = setup.put_connector("bitrix24", settings, portal, &bitrix.origin()).await?;
    // The webhook's token is in the URL's path: sealed, never shown back (#15).
    let token = BITRIX_HOOK.trim_matches('/').rsplit('/').next().context("the token")?;
    ensure!(!stored.to_string().contains(token), "the stored profile shows the token: {stored}");
    ensure!(stored["spec"]["steps"][0]["request"]["url_secret"] == "***", "{stored}");

    let recorded = recording_pending("bx-rec");
    setup.produce(&recorded).await?;
    setup.produce(&call("bx-missed", Direction::Inbound, Outcome::Missed)).await?;
    setup.produce(&call("bx-out", Direction::Outbound, Outcome::Answered)).await?;
    let delivered = setup.wait_delivered(&delivery_of("bitrix24", "bx-missed")).await?;
    ensure!(!delivered.to_string().contains(token), "the attempt log shows the token: {delivered}");
    setup.wait_delivered(&delivery_of("bitrix24", "bx-out")).await?;
    setup.wait_for_recording(&delivery_of("bitrix24", "bx-rec")).await?;

    let params = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let register = |user: &str, phone: &str, kind: &str| {
        params(&[
            ("USER_ID", user),
            ("PHONE_NUMBER", phone),
            ("TYPE", kind),
            ("CALL_START_DATE", "2024-05-01T10:00:00+00:00"),
            ("CRM_CREATE", "1"),
            ("SHOW", "0"),
        ])
    };
    let finish = |id: &str, user: &str, duration: &str, code: &str| {
        params(&[("CALL_ID", id), ("USER_ID", user), ("DURATION", duration), ("STATUS_CODE", code)])
    };
    let calls = bitrix.state(|b| b.calls.clone());
    ensure!(calls.len() == 3, "three calls registered, each once: {calls:#?}");
    let find = |user: &str, kind: &str| {
        calls
            .iter()
            .find(|c| c.register["USER_ID"] == user && c.register["TYPE"] == kind)
            .cloned()
            .with_context(|| format!("no call of user {user}, type {kind}: {calls:#?}"))
    };
    let (rec, missed, out) = (find("42", "2")?, find("1", "2")?, find("42", "1")?);
    ensure!(rec.register == register("42", CUSTOMER, "2"), "{rec:?}");
    ensure!(missed.register == register("1", CUSTOMER, "2"), "the default user: {missed:?}");
    ensure!(out.register == register("42", CALLED, "1"), "{out:?}");
    ensure!(rec.finish == Some(finish(&rec.id, "42", "60", "200")), "{rec:?}");
    ensure!(missed.finish == Some(finish(&missed.id, "1", "0", "304")), "{missed:?}");
    ensure!(out.finish == Some(finish(&out.id, "42", "60", "200")), "{out:?}");
    ensure!(calls.iter().all(|c| c.record.is_none()), "no recording yet: {calls:#?}");
    let methods = |got: &[Got]| -> Vec<String> {
        got.iter().map(|r| r.path.trim_start_matches(BITRIX_HOOK).to_owned()).collect()
    };
    let got = bitrix.requests();
    let count = |method: &str| methods(&got).iter().filter(|m| *m == method).count();
    ensure!(
        (count("telephony.externalcall.register.json"), count("telephony.externalcall.finish.json"))
            == (3, 4),
        "three registers, four finishes (one turned away, then retried): {:?}",
        methods(&got)
    );

    // The recording is ready: attached to the call the portal registered.
    setup.produce(&recording_ready(&recorded)).await?;
    setup.wait_delivered(&delivery_of("bitrix24", "bx-rec")).await?;
    let record = bitrix.state(|b| b.calls.iter().find(|c| c.id == rec.id).and_then(|c| c.record.clone()));
    let filename = format!("{}.mp3", call_uuid("bx-rec"));
    ensure!(
        record == Some(params(&[("CALL_ID", &rec.id), ("FILENAME", &filename), ("RECORD_URL", RECORDING)])),
        "{record:?}"
    );
    let got = bitrix.wait_for(8).await?;
    ensure!(
        got.last()
            .is_some_and(|r| r.path == format!("{BITRIX_HOOK}telephony.externalCall.attachRecord.json")),
        "{:?}",
        methods(&got)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(bitrix.requests().len() == 8, "{:?}", methods(&bitrix.requests()));
    bitrix.assert_all_accepted()?;
    setup.done().await?;
    Ok(())
}

/// The recording becomes ready while the flow's earlier steps are still being retried (the
/// portal turned finish away): the recording must still be attached once finish went through.
/// (The newer record reaches every pending delivery of the call, not only those already waiting
/// for the recording: `schedule_store::refresh_waiting`.)
#[tokio::test]
async fn bitrix24_attaches_a_recording_that_was_ready_while_finish_was_retried() -> anyhow::Result<()> {
    let setup = setup("cn-bitrix24-race").await?;
    let bitrix = Fake::start(Bitrix {
        overloaded: VecDeque::from(["telephony.externalcall.finish"]),
        ..Bitrix::default()
    })
    .await?;
    let portal = "https://acme.bitrix24.ru";
    let settings = json!({"webhook_url": format!("{portal}{BITRIX_HOOK}"),
        "users": {"users": {"101": "42"}, "default_user": "1"}});
    let _ = setup.put_connector("bitrix24", settings, portal, &bitrix.origin()).await?;
    let recorded = recording_pending("bx-race");
    setup.produce(&recorded).await?;
    // Registered, and finish turned away: the delivery waits for its retry (5 s).
    let _ = bitrix.wait_for(2).await?;
    setup.produce(&recording_ready(&recorded)).await?;
    setup.wait_delivered(&delivery_of("bitrix24", "bx-race")).await?;
    let attached = bitrix.state(|b| b.calls.first().and_then(|c| c.record.clone()));
    ensure!(attached.as_ref().is_some_and(|r| r["RECORD_URL"] == RECORDING), "{attached:?}");
    bitrix.assert_all_accepted()?;
    setup.done().await?;
    Ok(())
}

/// Each request the portal got, as `path?query`.
fn bitrix_paths(got: &[Got]) -> Vec<String> {
    got.iter().map(|r| format!("{}?{}", r.path, r.query.as_deref().unwrap_or_default())).collect()
}

/// Produces call `id` (`direction`, `outcome`), waits until it is delivered, and checks that the
/// portal got exactly `expected` and then `requests`; returns the delivery.
async fn deliver_to_app<const N: usize>(
    setup: &Setup,
    bitrix: &Fake<Bitrix>,
    id: &str,
    (direction, outcome): (Direction, Outcome),
    expected: &mut Vec<String>,
    requests: [String; N],
) -> anyhow::Result<Value> {
    setup.produce(&call(id, direction, outcome)).await?;
    let delivered = setup
        .wait_delivered(&delivery_of("bitrix24", id))
        .await
        .with_context(|| format!("the portal got {:#?}", bitrix_paths(&bitrix.requests())))?;
    expected.extend(requests);
    let got = bitrix_paths(&bitrix.requests());
    ensure!(got == *expected, "the portal got {got:#?}, not {expected:#?}");
    Ok(delivered)
}

/// Bitrix24 as a local application, on a portal that takes nothing else: the dispatcher trades
/// the installation's refresh token for an access token at oauth.bitrix.info, sends it as `auth`,
/// and when the portal answers `expired_token` trades the rotated refresh token (the first one is
/// spent) for a new one and sends the step again. The tokens outlive a restart: a new process
/// uses the stored access token and, once that expires, the stored rotated refresh token. The
/// Test action sends the same way.
#[tokio::test]
async fn bitrix24_as_an_application_trades_and_rotates_its_tokens() -> anyhow::Result<()> {
    let mut setup = setup("cn-bitrix24-app").await?;
    let bitrix = Fake::start(Bitrix { app: Some(BitrixApp::new()), ..Bitrix::default() }).await?;
    let portal = "https://acme.bitrix24.ru";
    let settings = json!({
        "application": {"portal_url": portal, "client_id": BITRIX_CLIENT_ID,
            "client_secret": BITRIX_CLIENT_SECRET, "refresh_token": "r3fresh0"},
        "users": {"users": {"101": "42"}, "default_user": "1"},
    });
    let stored = setup.put_connector("bitrix24", settings, portal, &bitrix.origin()).await?;
    assert_masked(&stored, &[BITRIX_CLIENT_SECRET, "r3fresh0"])?;
    // The token endpoint passes the SSRF guard like every step's URL.
    let mut metadata = stored["spec"].clone();
    metadata["oauth"] = json!({"token_url": "http://169.254.169.254/oauth/token/", "client_id": "c",
        "client_secret": "s", "refresh_token": "r", "grant_request": "get_query", "send_as": {"url_param": "auth"}});
    let (status, refused) = setup.api("PUT", "/v1/profiles/bitrix24-metadata", Some(metadata)).await?;
    ensure!(
        status == 400 && refused["message"].as_str().is_some_and(|m| m.starts_with("oauth.token_url")),
        "{status} {refused}"
    );
    let rest = |method: &str, token: &str| format!("/rest/telephony.externalcall.{method}.json?auth={token}");
    let trade = |refresh: &str| {
        format!(
            "/oauth/token/?grant_type=refresh_token&client_id={BITRIX_CLIENT_ID}&client_secret={BITRIX_CLIENT_SECRET}&refresh_token={refresh}"
        )
    };
    let mut expected = Vec::new();

    // The first call: the installation's refresh token traded, the access token sent as `auth`.
    let delivered = deliver_to_app(
        &setup,
        &bitrix,
        "bx-app-1",
        (Direction::Inbound, Outcome::Missed),
        &mut expected,
        [trade("r3fresh0"), rest("register", "acc3ss1"), rest("finish", "acc3ss1")],
    )
    .await?;
    ensure!(!delivered.to_string().contains("acc3ss"), "the attempt log shows the token: {delivered}");

    // The portal lets the token expire: the step is turned away, a new token traded, sent again.
    bitrix.crm.lock().expect("lock").app.as_mut().context("app")?.access = "expired".into();
    deliver_to_app(
        &setup,
        &bitrix,
        "bx-app-2",
        (Direction::Outbound, Outcome::Answered),
        &mut expected,
        [
            rest("register", "acc3ss1"),
            trade("r3fresh1"),
            rest("register", "acc3ss2"),
            rest("finish", "acc3ss2"),
        ],
    )
    .await?;

    // A new process: the stored access token first, then the stored (rotated) refresh token.
    setup.restart().await?;
    deliver_to_app(
        &setup,
        &bitrix,
        "bx-app-3",
        (Direction::Inbound, Outcome::Answered),
        &mut expected,
        [rest("register", "acc3ss2"), rest("finish", "acc3ss2")],
    )
    .await?;
    bitrix.crm.lock().expect("lock").app.as_mut().context("app")?.access = "expired".into();
    setup.restart().await?;
    deliver_to_app(
        &setup,
        &bitrix,
        "bx-app-4",
        (Direction::Inbound, Outcome::Answered),
        &mut expected,
        [
            rest("register", "acc3ss2"),
            trade("r3fresh2"),
            rest("register", "acc3ss3"),
            rest("finish", "acc3ss3"),
        ],
    )
    .await?;
    ensure!(bitrix.state(|b| b.calls.iter().all(|c| c.finish.is_some()) && b.calls.len() == 4), "four calls");

    // Test, as a user presses it, once the token expired: sent as the worker sends, so the API
    // trades the stored refresh token and sends again rather than show the portal's refusal.
    bitrix.crm.lock().expect("lock").app.as_mut().context("app")?.access = "expired".into();
    let sample =
        json!({"record": call("bx-app-test", Direction::Inbound, Outcome::Answered), "dry_run": false});
    let (status, test) = setup.api("POST", "/v1/profiles/bitrix24/test", Some(sample)).await?;
    ensure!(status == 200 && test["response"]["status"] == 200, "{status} {test}");
    let shown = test["request"]["url"].as_str().unwrap_or_default();
    ensure!(shown.ends_with("auth=***") && !test.to_string().contains("acc3ss"), "the token shows: {test}");
    expected.extend([rest("register", "acc3ss3"), trade("r3fresh3"), rest("register", "acc3ss4")]);
    let got = bitrix_paths(&bitrix.requests());
    ensure!(got == expected, "the portal got {got:#?}, not {expected:#?}");
    bitrix.assert_all_accepted()?;
    setup.done().await?;
    Ok(())
}

/// amoCRM: one call each (it files them on the contact with that number itself); amoCRM cannot
/// add a link to a call later, so a call whose recording is pending is sent once the recording is
/// ready, with the link; internal calls are not sent.
#[tokio::test]
async fn amocrm_gets_each_call_with_its_recording_once_ready() -> anyhow::Result<()> {
    let setup = setup("cn-amocrm").await?;
    let amo = Fake::start(AmoCrm::default()).await?;
    let account = "https://acme.amocrm.ru";
    let settings = json!({"base_url": account, "access_token": AMO_TOKEN, "users": {"users": {"101": "42"}}});
    let stored = setup.put_connector("amocrm", settings, account, &amo.origin()).await?;
    assert_masked(&stored, &[AMO_TOKEN])?;

    let recorded = recording_pending("am-rec");
    setup.produce(&recorded).await?;
    setup.produce(&call("am-missed", Direction::Inbound, Outcome::Missed)).await?;
    setup.produce(&call("am-internal", Direction::Internal, Outcome::Answered)).await?;
    setup.wait_delivered(&delivery_of("amocrm", "am-missed")).await?;
    setup.wait_for_recording(&delivery_of("amocrm", "am-rec")).await?;
    let missed = json!({"direction": "inbound", "uniq": call_uuid("am-missed"), "duration": 0,
        "source": "Switchboard", "phone": CUSTOMER, "call_status": 6, "created_at": STARTED});
    ensure!(amo.state(|a| a.calls.clone()) == [missed.clone()], "{:#?}", amo.state(|a| a.calls.clone()));

    setup.produce(&recording_ready(&recorded)).await?;
    setup.wait_delivered(&delivery_of("amocrm", "am-rec")).await?;
    let answered = json!({"direction": "inbound", "uniq": call_uuid("am-rec"), "duration": 60,
        "source": "Switchboard", "phone": CUSTOMER, "link": RECORDING, "call_status": 4,
        "responsible_user_id": 42, "created_at": STARTED});
    ensure!(amo.state(|a| a.calls.clone()) == [missed, answered], "{:#?}", amo.state(|a| a.calls.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(amo.requests().len() == 2, "one request per call");
    ensure!(setup.deliveries("amocrm").await? == 2, "nothing scheduled for the internal call");
    amo.assert_all_accepted()?;
    setup.done().await?;
    Ok(())
}
