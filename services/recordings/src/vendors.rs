//! Asking a vendor's API for a recording's link, the one vendor-specific part of the stage.
//!
//! | vendor | asks | with |
//! |---|---|---|
//! | Telphin | `GET {api}/client/@me/record/{RecID}/storage_url/` → `{"record_url"}` (temporary) | OAuth2 client credentials at `{token_url}` (`api_client_id`, `api_client_secret`), bearer token cached until shortly before it expires (a day at most, whatever `expires_in` says) |
//! | Zadarma | `GET {api}/v1/pbx/record/request/?call_id={call_id_with_rec}` → `{"status":"success","link"}` (temporary) | `Authorization: <api_client_id>:base64(hex(HMAC-SHA1(secret, method + query + md5(query))))`, the secret being `api_client_secret`, else the signing secret (Zadarma's API secret signs webhooks too) |
//! | Mango Office | `POST {api}/queries/recording/post` (`vpbx_api_key`, `sign`, `json={"recording_id","action":"download"}`) → `302`, the one-time link in `Location` | `sign = sha256(api_key + json + salt)`: `api_key` setting, signing secret as the salt |
//! | Twilio | only a `RecordingSid`: `{api}/2010-04-01/Accounts/{api_client_id}/Recordings/{sid}.mp3`, no call needed; with a `RecordingUrl` that URL | — |
//! | Aircall | the `recording` (or `voicemail`) URL of `GET {api}/v1/calls/{call id}`: Aircall's links expire, so each opening asks again when `api_client_id`/`api_client_secret` are set, else the URL from the webhook | HTTP Basic, API id and token |
//! | any other | the URL the webhook carried (Intermedia, Chronicall, Sipuni, OnlinePBX, generic...) | — |
//!
//! `{api}` is the source's `recording_api_url` when set, else the vendor's public API. Telphin's
//! documented form is `/extension/{id}/record/{uuid}/storage_url/`, but events carry no extension
//! id; the account-wide `client/@me` form (Telphin's own example) takes the same `RecID`.
//!
//! Every answer is classified: a link (done); "not there (yet)" (`404`, Zadarma's `"status":
//! "error"`, a Mango answer without a redirect), which is what a recording not yet uploaded looks
//! like; a transient failure (no answer in time, `5xx`, `429`, a refused token), retried like the
//! former; or a permanent one (the source lacks the credentials, the vendor has no API), for which
//! retrying cannot help. Secrets never appear in an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard_core::model::{Secret, Vendor};

use crate::client::{CallError, HttpClient, Reply};
use crate::store::{Recording, SourceAccess, usable_url};

pub const TELPHIN_API: &str = "https://apiproxy.telphin.ru/api/ver1.0";
pub const TELPHIN_TOKEN: &str = "https://apiproxy.telphin.ru/oauth/token";
pub const ZADARMA_API: &str = "https://api.zadarma.com";
pub const MANGO_API: &str = "https://app.mango-office.ru/vpbx";
pub const TWILIO_API: &str = "https://api.twilio.com";
pub const AIRCALL_API: &str = "https://api.aircall.io";

/// Why no link came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The vendor does not have the recording, or not yet.
    #[error("{0}")]
    NotReady(String),
    /// No usable answer this time.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help until an operator changes something.
    #[error("{0}")]
    Permanent(String),
}

impl ResolveError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, ResolveError::Permanent(_))
    }
}

/// Reads a vendor's answer that is not a link: `404`/`410` mean "not there (yet)"; anything else
/// is transient, with the status and the start of the body as the reason.
fn refused(vendor: &str, reply: &Reply) -> ResolveError {
    let snippet = reply.snippet();
    let detail = if snippet.is_empty() { String::new() } else { format!(": {snippet}") };
    match reply.status {
        StatusCode::NOT_FOUND | StatusCode::GONE => ResolveError::NotReady(format!(
            "{vendor} has no such recording ({}){detail}",
            reply.status.as_u16()
        )),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ResolveError::Transient(format!(
            "{vendor} refused the source's API credentials ({}){detail}",
            reply.status.as_u16()
        )),
        status => ResolveError::Transient(format!("{vendor} answered {}{detail}", status.as_u16())),
    }
}

fn unreachable_vendor(vendor: &str, error: CallError) -> ResolveError {
    ResolveError::Transient(format!("{vendor} API: {error}"))
}

/// Percent-encodes one path segment.
fn segment(text: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Zadarma's API signature, as its official clients compute it: the query sorted by name and
/// form-encoded, then `base64(hex(HMAC-SHA1(secret, method + query + hex(md5(query)))))`, sent as
/// `Authorization: <key>:<signature>`.
pub fn zadarma_authorization(key: &str, secret: &str, method: &str, sorted_query: &str) -> String {
    use md5::Md5;
    let md5 = hex(&Md5::digest(sorted_query.as_bytes()));
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(format!("{method}{sorted_query}{md5}").as_bytes());
    format!("{key}:{}", STANDARD.encode(hex(&mac.finalize().into_bytes())))
}

/// Mango's request signature: `hex(sha256(api_key + json + salt))`.
pub fn mango_sign(api_key: &str, json: &str, salt: &str) -> String {
    hex(&Sha256::digest(format!("{api_key}{json}{salt}").as_bytes()))
}

/// Longest a token is cached, whatever `expires_in` says: the number is the vendor's, and a
/// huge one (2^64-1) must neither overflow the clock nor pin a token for ever; a day costs one
/// token request a day.
const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// An OAuth2 bearer token and when to stop using it.
struct Token {
    value: Secret,
    use_until: Instant,
}

/// Client-credentials tokens by (token URL, client id): one fetch per client until shortly
/// before expiry, shared by every attempt and link opening of the process. Each key has its own
/// lock, so that a burst of attempts fetches one token, not one each.
#[derive(Default)]
struct TokenCache {
    slots: Mutex<HashMap<(String, String), TokenSlot>>,
}

/// One client's token, behind its own lock.
type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

impl TokenCache {
    fn slot(&self, url: &str, client_id: &str) -> TokenSlot {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry((url.to_owned(), client_id.to_owned())).or_default().clone()
    }
}

/// Credentials of a vendor API, borrowed from a source.
struct Client<'a> {
    id: &'a str,
    secret: &'a Secret,
}

/// Resolves recordings into vendor links.
pub struct Resolver {
    http: HttpClient,
    timeout: Duration,
    tokens: TokenCache,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Resolver {
    /// `timeout` bounds each call to a vendor (a token fetch and a lookup are two calls).
    pub fn new(http: HttpClient, timeout: Duration) -> Self {
        Self { http, timeout, tokens: TokenCache::default() }
    }

    /// A fresh link to `recording`: asked of the vendor's API where it has one, else the URL the
    /// webhook carried.
    pub async fn resolve(
        &self,
        recording: &Recording,
        source: &SourceAccess,
    ) -> Result<String, ResolveError> {
        let id = recording.recording_id.as_deref();
        let stored = || {
            recording.vendor_url.clone().ok_or_else(|| {
                ResolveError::Permanent(format!(
                    "{} sent only a recording id ({}), and Switchboard knows no {0} API to turn it into a link",
                    recording.vendor,
                    id.unwrap_or("none"),
                ))
            })
        };
        match (recording.vendor, id) {
            (Vendor::Telphin, Some(id)) => self.telphin(source, id).await,
            (Vendor::Zadarma, Some(id)) => self.zadarma(source, id).await,
            (Vendor::Mango, Some(id)) => self.mango(source, id).await,
            (Vendor::Twilio, Some(sid)) if recording.vendor_url.is_none() => twilio(source, sid),
            (Vendor::Aircall, _) if client(source, None).is_ok() && recording.vendor_url.is_some() => {
                self.aircall(source, recording).await
            }
            _ => stored(),
        }
    }

    /// One call to a vendor, timed in `switchboard_recordings_resolve_seconds` when `timed`.
    async fn call(
        &self,
        vendor: Vendor,
        request: Request<Full<Bytes>>,
        timed: bool,
    ) -> Result<Reply, ResolveError> {
        let started = Instant::now();
        let reply = self.http.call(request, self.timeout).await;
        if timed {
            metrics::RECORDING_RESOLVE_SECONDS
                .with_label_values(&[vendor.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
        reply.map_err(|e| unreachable_vendor(vendor_name(vendor), e))
    }

    async fn telphin(&self, source: &SourceAccess, record: &str) -> Result<String, ResolveError> {
        let s = &source.settings;
        let client = client(source, None)?;
        let base = s.recording_api_url.as_deref().unwrap_or(TELPHIN_API).trim_end_matches('/');
        let token_url = s.api_token_url.as_deref().unwrap_or(TELPHIN_TOKEN);
        let url = format!("{base}/client/@me/record/{}/storage_url/", segment(record));
        // A token the API refuses (revoked, expired early) is dropped and fetched again once.
        for retry in [false, true] {
            let token = self.token(Vendor::Telphin, token_url, &client).await?;
            let request = Request::get(&url)
                .header(header::AUTHORIZATION, format!("Bearer {}", token.expose()))
                .header(header::ACCEPT, "application/json")
                .body(Full::default())
                .map_err(|e| ResolveError::Permanent(format!("Telphin API URL {url:?}: {e}")))?;
            let reply = self.call(Vendor::Telphin, request, true).await?;
            if reply.status == StatusCode::UNAUTHORIZED && !retry {
                self.forget_token(token_url, &client, &token).await;
                continue;
            }
            if reply.status != StatusCode::OK {
                return Err(refused("Telphin", &reply));
            }
            let link =
                reply.json().and_then(|v| v.get("record_url").and_then(Value::as_str).map(str::to_owned));
            return link.filter(|l| usable_url(l)).ok_or_else(|| {
                ResolveError::Transient(format!(
                    "Telphin answered 200 without a usable record_url: {}",
                    reply.snippet()
                ))
            });
        }
        Err(ResolveError::Transient("Telphin refused a freshly issued token (401)".into()))
    }

    /// The client-credentials token of `client` at `url`, from the cache or fetched.
    async fn token(&self, vendor: Vendor, url: &str, client: &Client<'_>) -> Result<Secret, ResolveError> {
        let slot = self.tokens.slot(url, client.id);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| t.use_until > Instant::now()) {
            return Ok(token.value.clone());
        }
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", client.id)
            .append_pair("client_secret", client.secret.expose())
            .finish();
        let request = Request::post(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| ResolveError::Permanent(format!("token URL {url:?}: {e}")))?;
        let reply = self.call(vendor, request, false).await?;
        let name = vendor_name(vendor);
        if reply.status != StatusCode::OK {
            return Err(ResolveError::Transient(format!(
                "{name}'s token endpoint refused the source's client credentials ({}): {}",
                reply.status.as_u16(),
                reply.snippet()
            )));
        }
        let json = reply.json().unwrap_or_default();
        let value =
            json.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()).ok_or_else(|| {
                ResolveError::Transient(format!("{name}'s token endpoint answered without access_token"))
            })?;
        // `expires_in` is seconds, as a number or text; an hour when absent (Telphin's lifetime).
        let expires_in = json.get("expires_in");
        let lifetime = expires_in
            .and_then(Value::as_u64)
            .or_else(|| expires_in.and_then(Value::as_str).and_then(|s| s.trim().parse().ok()))
            .unwrap_or(3600)
            .min(MAX_TOKEN_LIFETIME_SECS);
        // Stop a minute early (half the lifetime for short ones), so a token never expires on
        // its way to the API.
        let margin = (lifetime / 2).min(60);
        let now = Instant::now();
        let token = Token {
            value: Secret::new(value),
            // Checked even though clamped: a clock near its end must not panic the stage; such a
            // token is simply not reused.
            use_until: now.checked_add(Duration::from_secs(lifetime.saturating_sub(margin))).unwrap_or(now),
        };
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    async fn forget_token(&self, url: &str, client: &Client<'_>, refused: &Secret) {
        let slot = self.tokens.slot(url, client.id);
        let mut cached = slot.lock().await;
        // Another attempt may have fetched a newer token meanwhile; only the refused one goes.
        if cached.as_ref().is_some_and(|t| t.value == *refused) {
            *cached = None;
        }
    }

    async fn zadarma(&self, source: &SourceAccess, call_id_with_rec: &str) -> Result<String, ResolveError> {
        let client = client(source, source.signing_secret.as_ref())?;
        let base = source.settings.recording_api_url.as_deref().unwrap_or(ZADARMA_API).trim_end_matches('/');
        let method = "/v1/pbx/record/request/";
        let query =
            form_urlencoded::Serializer::new(String::new()).append_pair("call_id", call_id_with_rec).finish();
        let url = format!("{base}{method}?{query}");
        let request = Request::get(&url)
            .header(
                header::AUTHORIZATION,
                zadarma_authorization(client.id, client.secret.expose(), method, &query),
            )
            .header(header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| ResolveError::Permanent(format!("Zadarma API URL {url:?}: {e}")))?;
        let reply = self.call(Vendor::Zadarma, request, true).await?;
        let json = reply.json().unwrap_or_default();
        let status = json.get("status").and_then(Value::as_str);
        if reply.status == StatusCode::OK && status == Some("success") {
            let link = json
                .get("link")
                .and_then(Value::as_str)
                .or_else(|| json.get("links").and_then(|links| links.get(0)).and_then(Value::as_str));
            return link.filter(|l| usable_url(l)).map(str::to_owned).ok_or_else(|| {
                ResolveError::Transient(format!(
                    "Zadarma answered success without a usable link: {}",
                    reply.snippet()
                ))
            });
        }
        // Zadarma explains a missing (or not yet uploaded) recording as a status "error".
        if status == Some("error") && !matches!(reply.status.as_u16(), 401 | 403 | 429 | 500..) {
            let message = json.get("message").and_then(Value::as_str).unwrap_or("no message");
            return Err(ResolveError::NotReady(format!("Zadarma has no such recording yet: {message}")));
        }
        Err(refused("Zadarma", &reply))
    }

    async fn mango(&self, source: &SourceAccess, recording_id: &str) -> Result<String, ResolveError> {
        let (Some(api_key), Some(salt)) =
            (source.settings.api_key.as_deref(), source.signing_secret.as_ref())
        else {
            return Err(ResolveError::Permanent(
                "Mango recordings need the source's api_key setting and its signing secret (the API salt)"
                    .into(),
            ));
        };
        let base = source.settings.recording_api_url.as_deref().unwrap_or(MANGO_API).trim_end_matches('/');
        let json = serde_json::json!({"recording_id": recording_id, "action": "download"}).to_string();
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("vpbx_api_key", api_key)
            .append_pair("sign", &mango_sign(api_key, &json, salt.expose()))
            .append_pair("json", &json)
            .finish();
        let url = format!("{base}/queries/recording/post");
        let request = Request::post(&url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| ResolveError::Permanent(format!("Mango API URL {url:?}: {e}")))?;
        let reply = self.call(Vendor::Mango, request, true).await?;
        if reply.status.is_redirection() {
            let location = reply.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
            return location
                .filter(|l| usable_url(l))
                .map(str::to_owned)
                .ok_or_else(|| ResolveError::Transient("Mango redirected without a usable Location".into()));
        }
        // Mango answers a recording it does not have with a JSON result code instead of the link.
        if reply.status == StatusCode::OK {
            return Err(ResolveError::NotReady(format!(
                "Mango has no such recording yet: {}",
                reply.snippet()
            )));
        }
        Err(refused("Mango", &reply))
    }

    async fn aircall(&self, source: &SourceAccess, recording: &Recording) -> Result<String, ResolveError> {
        let client = client(source, None)?;
        let base = source.settings.recording_api_url.as_deref().unwrap_or(AIRCALL_API).trim_end_matches('/');
        let url = format!("{base}/v1/calls/{}", segment(recording.call_id.as_str()));
        let basic = STANDARD.encode(format!("{}:{}", client.id, client.secret.expose()));
        let request = Request::get(&url)
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .header(header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| ResolveError::Permanent(format!("Aircall API URL {url:?}: {e}")))?;
        let reply = self.call(Vendor::Aircall, request, true).await?;
        if reply.status != StatusCode::OK {
            return Err(refused("Aircall", &reply));
        }
        let json = reply.json().unwrap_or_default();
        let call = json.get("call");
        // The field whose link is the one the webhook carried (same path, a fresh signature), else
        // the recording, else the voicemail.
        let path = |url: &str| url.split('?').next().unwrap_or(url).to_owned();
        let stored = recording.vendor_url.as_deref().map(path);
        let fresh: Vec<&str> = ["recording", "voicemail"]
            .iter()
            .filter_map(|f| call.and_then(|c| c.get(*f)).and_then(Value::as_str))
            .collect();
        fresh
            .iter()
            .find(|url| stored.as_deref() == Some(path(url).as_str()))
            .or(fresh.first())
            .filter(|url| usable_url(url))
            .map(|url| (*url).to_owned())
            .ok_or_else(|| ResolveError::NotReady("Aircall's call has no recording link (yet)".into()))
    }
}

fn vendor_name(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Telphin => "Telphin",
        Vendor::Zadarma => "Zadarma",
        Vendor::Mango => "Mango",
        Vendor::Aircall => "Aircall",
        Vendor::Twilio => "Twilio",
        other => other.as_str(),
    }
}

/// The source's API client (`api_client_id`, `api_client_secret`, else `fallback_secret`).
fn client<'a>(
    source: &'a SourceAccess,
    fallback_secret: Option<&'a Secret>,
) -> Result<Client<'a>, ResolveError> {
    let s = &source.settings;
    let missing = match (s.api_client_id.as_deref(), s.api_client_secret.as_ref().or(fallback_secret)) {
        (Some(id), Some(secret)) => return Ok(Client { id, secret }),
        (None, None) => "api_client_id and api_client_secret",
        (None, Some(_)) => "api_client_id",
        (Some(_), None) => "api_client_secret",
    };
    Err(ResolveError::Permanent(format!(
        "the source has no {missing} for {}'s API in its settings",
        vendor_name(source.vendor)
    )))
}

fn twilio(source: &SourceAccess, sid: &str) -> Result<String, ResolveError> {
    let account = source.settings.api_client_id.as_deref().ok_or_else(|| {
        ResolveError::Permanent(
            "Twilio sent only a RecordingSid: set the source's api_client_id to the Account SID".into(),
        )
    })?;
    let base = source.settings.recording_api_url.as_deref().unwrap_or(TWILIO_API).trim_end_matches('/');
    Ok(format!("{base}/2010-04-01/Accounts/{}/Recordings/{}.mp3", segment(account), segment(sid)))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::Utc;
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use switchboard_core::model::SourceSettings;
    use switchboard_core::model::{CallId, RecordingStatus, SourceId};

    use super::*;

    /// What the fake vendor saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path_and_query: String,
        authorization: Option<String>,
        body: String,
    }

    /// A vendor API on loopback answering from a script: each request takes the next answer
    /// (`status`, `headers`, `body`, delay), the last one repeating.
    struct FakeVendor {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    type Answer = (u16, Vec<(&'static str, String)>, String, Duration);
    /// Each path prefix's answers still to give.
    type Scripts = Arc<Mutex<Vec<(&'static str, VecDeque<Answer>)>>>;

    fn answer(status: u16, body: &str) -> Answer {
        (status, vec![("content-type", "application/json".to_owned())], body.to_owned(), Duration::ZERO)
    }

    impl FakeVendor {
        /// `route` picks the script by path prefix.
        async fn start(routes: Vec<(&'static str, Vec<Answer>)>) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
            let scripts: Scripts =
                Arc::new(Mutex::new(routes.into_iter().map(|(p, a)| (p, a.into())).collect()));
            let log = seen.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (log, scripts) = (log.clone(), scripts.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |req: http::Request<Incoming>| {
                            let (log, scripts) = (log.clone(), scripts.clone());
                            async move {
                                let path_and_query =
                                    req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                                let method = req.method().to_string();
                                let authorization = req
                                    .headers()
                                    .get(header::AUTHORIZATION)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let body =
                                    req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let body = String::from_utf8_lossy(&body).into_owned();
                                log.lock().expect("log").push(Seen {
                                    method,
                                    path_and_query: path_and_query.clone(),
                                    authorization,
                                    body,
                                });
                                let (status, headers, body, delay) = {
                                    let mut scripts = scripts.lock().expect("scripts");
                                    match scripts.iter_mut().find(|(p, _)| path_and_query.starts_with(p)) {
                                        Some((_, answers)) if answers.len() > 1 => {
                                            answers.pop_front().expect("answer")
                                        }
                                        Some((_, answers)) => answers.front().cloned().expect("answer"),
                                        None => answer(404, "{}"),
                                    }
                                };
                                tokio::time::sleep(delay).await;
                                let mut response = http::Response::builder().status(status);
                                for (name, value) in headers {
                                    response = response.header(name, value);
                                }
                                Ok::<_, std::convert::Infallible>(
                                    response.body(Full::new(Bytes::from(body))).expect("response"),
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Self { addr, seen }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().expect("log").clone()
        }

        fn count(&self, prefix: &str) -> usize {
            self.seen().iter().filter(|s| s.path_and_query.starts_with(prefix)).count()
        }
    }

    fn access(vendor: Vendor, settings: serde_json::Value, signing_secret: Option<&str>) -> SourceAccess {
        SourceAccess {
            vendor,
            signing_secret: signing_secret.map(Secret::new),
            settings: serde_json::from_value::<SourceSettings>(settings).expect("settings"),
        }
    }

    fn recording(vendor: Vendor, recording_id: Option<&str>, vendor_url: Option<&str>) -> Recording {
        Recording {
            id: "0123456789abcdef0123456789abcdef".into(),
            source_id: SourceId::parse("pbx").expect("id"),
            call_id: CallId::parse("812").expect("id"),
            leg_id: None,
            vendor,
            recording_id: recording_id.map(Into::into),
            vendor_url: vendor_url.map(Into::into),
            raw_id: "raw".into(),
            first_received_at: Utc::now(),
            status: RecordingStatus::Pending,
            attempts: 1,
            last_error: None,
        }
    }

    fn resolver(timeout_ms: u64) -> Resolver {
        Resolver::new(HttpClient::new(), Duration::from_millis(timeout_ms))
    }

    fn telphin_access(vendor: &FakeVendor) -> SourceAccess {
        access(
            Vendor::Telphin,
            serde_json::json!({
                "recording_api_url": vendor.url("/api/ver1.0/"),
                "api_token_url": vendor.url("/oauth/token"),
                "api_client_id": "app-1",
                "api_client_secret": "app-secret",
            }),
            None,
        )
    }

    #[tokio::test]
    async fn telphin_links_come_with_one_cached_token_renewed_when_refused() {
        let token = |n: u32| {
            answer(200, &format!(r#"{{"access_token":"tok-{n}","expires_in":3600,"token_type":"bearer"}}"#))
        };
        let link = |n: u32| answer(200, &format!(r#"{{"record_url":"https://storage.telphin.ru/r/{n}=="}}"#));
        let vendor = FakeVendor::start(vec![
            ("/oauth/token", vec![token(1), token(2)]),
            ("/api/ver1.0/client/@me/record/", vec![link(1), link(2), answer(401, "{}"), link(3)]),
        ])
        .await;
        let resolver = resolver(2000);
        let (source, rec) =
            (telphin_access(&vendor), recording(Vendor::Telphin, Some("200101-5A1C 0E"), None));
        assert_eq!(resolver.resolve(&rec, &source).await, Ok("https://storage.telphin.ru/r/1==".into()));
        assert_eq!(resolver.resolve(&rec, &source).await, Ok("https://storage.telphin.ru/r/2==".into()));
        assert_eq!(vendor.count("/oauth/token"), 1, "the token is cached");
        // The API refuses the cached token: a new one is fetched and the lookup made again.
        assert_eq!(resolver.resolve(&rec, &source).await, Ok("https://storage.telphin.ru/r/3==".into()));
        assert_eq!(vendor.count("/oauth/token"), 2);

        let seen = vendor.seen();
        let form = &seen.iter().find(|s| s.path_and_query == "/oauth/token").expect("token request").body;
        for pair in ["grant_type=client_credentials", "client_id=app-1", "client_secret=app-secret"] {
            assert!(form.contains(pair), "{form}");
        }
        let lookups: Vec<&Seen> = seen.iter().filter(|s| s.path_and_query.contains("/record/")).collect();
        assert_eq!(lookups[0].path_and_query, "/api/ver1.0/client/@me/record/200101-5A1C%200E/storage_url/");
        assert_eq!(lookups[0].method, "GET");
        assert_eq!(lookups[0].authorization.as_deref(), Some("Bearer tok-1"));
        assert_eq!(lookups[3].authorization.as_deref(), Some("Bearer tok-2"));
    }

    #[tokio::test]
    async fn an_absurd_token_lifetime_is_clamped_not_a_panic() {
        for expires_in in ["18446744073709551615", r#""18446744073709551615""#, "1e400", "-1"] {
            let vendor = FakeVendor::start(vec![
                (
                    "/oauth/token",
                    vec![answer(200, &format!(r#"{{"access_token":"t","expires_in":{expires_in}}}"#))],
                ),
                ("/api/ver1.0/client/@me/record/", vec![answer(200, r#"{"record_url":"https://s/1"}"#)]),
            ])
            .await;
            let resolver = resolver(2000);
            let (source, rec) = (telphin_access(&vendor), recording(Vendor::Telphin, Some("r1"), None));
            let first = resolver.resolve(&rec, &source).await;
            if expires_in == "1e400" {
                // Not a number serde reads: no token, a transient failure, retried later.
                assert!(matches!(first, Err(ResolveError::Transient(_))), "{expires_in}: {first:?}");
                continue;
            }
            assert_eq!(first, Ok("https://s/1".into()), "{expires_in}");
            assert_eq!(resolver.resolve(&rec, &source).await, Ok("https://s/1".into()), "{expires_in}");
            assert_eq!(vendor.count("/oauth/token"), 1, "{expires_in}: the token is cached");
        }
        // The clamp itself: a day at most, a minute early.
        let vendor = FakeVendor::start(vec![(
            "/oauth/token",
            vec![answer(200, r#"{"access_token":"t","expires_in":18446744073709551615}"#)],
        )])
        .await;
        let resolver = resolver(2000);
        let source = telphin_access(&vendor);
        let client = client(&source, None).expect("credentials");
        let url = vendor.url("/oauth/token");
        let before = Instant::now();
        let _ = resolver.token(Vendor::Telphin, &url, &client).await.expect("token");
        let slot = resolver.tokens.slot(&url, client.id);
        let until = slot.lock().await.as_ref().map(|t| t.use_until).expect("cached");
        assert!(until >= before + Duration::from_secs(MAX_TOKEN_LIFETIME_SECS - 60));
        assert!(until <= Instant::now() + Duration::from_secs(MAX_TOKEN_LIFETIME_SECS - 60));
    }

    #[tokio::test]
    async fn vendor_answers_are_classified_not_ready_transient_or_permanent() {
        let vendor = FakeVendor::start(vec![
            ("/oauth/token", vec![answer(200, r#"{"access_token":"t","expires_in":"3600"}"#)]),
            ("/api/ver1.0/client/@me/record/missing/", vec![answer(404, r#"{"message":"not found"}"#)]),
            ("/api/ver1.0/client/@me/record/down/", vec![answer(503, "maintenance")]),
            ("/api/ver1.0/client/@me/record/empty/", vec![answer(200, r#"{"record_url":"ftp://x"}"#)]),
            (
                "/api/ver1.0/client/@me/record/slow/",
                vec![(200, vec![], r#"{"record_url":"https://s/1"}"#.into(), Duration::from_secs(3))],
            ),
        ])
        .await;
        let resolver = resolver(500);
        let source = telphin_access(&vendor);
        let resolve = |id: &'static str| {
            let rec = recording(Vendor::Telphin, Some(id), None);
            let (resolver, source) = (&resolver, &source);
            async move { resolver.resolve(&rec, source).await }
        };
        let missing = resolve("missing").await;
        assert!(
            matches!(&missing, Err(ResolveError::NotReady(r)) if r.contains("404") && r.contains("not found")),
            "{missing:?}"
        );
        let down = resolve("down").await;
        assert!(
            matches!(&down, Err(ResolveError::Transient(r)) if r.contains("503") && r.contains("maintenance")),
            "{down:?}"
        );
        assert!(matches!(resolve("empty").await, Err(ResolveError::Transient(_))), "an unusable link");
        let slow = resolve("slow").await;
        assert!(
            matches!(&slow, Err(ResolveError::Transient(r)) if r.contains("no answer within")),
            "{slow:?}"
        );

        let no_credentials = access(Vendor::Telphin, serde_json::json!({}), None);
        let rec = recording(Vendor::Telphin, Some("x"), None);
        assert!(matches!(resolver.resolve(&rec, &no_credentials).await, Err(ResolveError::Permanent(_))));
        let zadarma = access(Vendor::Zadarma, serde_json::json!({}), Some("webhook-secret"));
        let missing_key = resolver.resolve(&recording(Vendor::Zadarma, Some("1.2"), None), &zadarma).await;
        assert_eq!(
            missing_key,
            Err(ResolveError::Permanent(
                "the source has no api_client_id for Zadarma's API in its settings".into()
            )),
            "the signing secret stands in for the API secret; only the key is missing"
        );
        let nothing_to_ask = recording(Vendor::Sipuni, Some("x"), None);
        let sipuni = access(Vendor::Sipuni, serde_json::json!({}), None);
        assert!(matches!(resolver.resolve(&nothing_to_ask, &sipuni).await, Err(ResolveError::Permanent(_))));
        let refused =
            FakeVendor::start(vec![("/oauth/token", vec![answer(401, r#"{"error":"invalid_client"}"#)])])
                .await;
        let error = resolver.resolve(&rec, &telphin_access(&refused)).await.expect_err("refused");
        assert!(matches!(&error, ResolveError::Transient(r) if r.contains("invalid_client")), "{error:?}");
        assert!(!format!("{error:?}").contains("app-secret"), "no secret in reasons");
    }

    #[test]
    fn zadarma_and_mango_sign_as_their_clients_do() {
        // Computed independently (Python hmac/hashlib), the way Zadarma's PHP client does.
        assert_eq!(
            zadarma_authorization("key", "secret", "/v1/pbx/record/request/", "call_id=1762000000.12345"),
            "key:MjI3N2E3N2FmYmIzYzFlZDllNmE4NmI4NTJjMTQwNTg3ZDJhMjY5NA=="
        );
        assert_eq!(
            mango_sign(
                "apikey",
                r#"{"recording_id":"MToxMDA3MTYxNTo3NjQ0NDQ0NjE6MA==","action":"download"}"#,
                "salt"
            ),
            "5dd3dae416d30bc65c448bfb2a3f36428c21c8ef13f8e1149d6685040ea8262e"
        );
    }

    #[tokio::test]
    async fn zadarma_mango_aircall_and_twilio_resolve_through_their_apis() {
        let vendor = FakeVendor::start(vec![
            (
                "/v1/pbx/record/request/?call_id=1762000000.12345",
                vec![
                    answer(200, r#"{"status":"error","message":"record not found"}"#),
                    answer(200, r#"{"status":"success","link":"https://api.zadarma.com/v1/pbx/record/download/x","lifetime_till":"2026-11-21 12:00:00"}"#),
                ],
            ),
            (
                "/vpbx/queries/recording/post",
                vec![(302, vec![("location", "https://app.mango-office.ru/rec/once?k=1".into())], String::new(), Duration::ZERO)],
            ),
            (
                "/v1/calls/812",
                vec![answer(200, r#"{"call":{"id":812,"recording":"https://rec.aircall.io/812.mp3?sig=new","voicemail":null}}"#)],
            ),
        ])
        .await;
        let resolver = resolver(2000);

        let zadarma = access(
            Vendor::Zadarma,
            serde_json::json!({"recording_api_url": vendor.url(""), "api_client_id": "key"}),
            Some("secret"),
        );
        let rec = recording(Vendor::Zadarma, Some("1762000000.12345"), None);
        let first = resolver.resolve(&rec, &zadarma).await;
        assert!(
            matches!(&first, Err(ResolveError::NotReady(r)) if r.contains("record not found")),
            "{first:?}"
        );
        let second = resolver.resolve(&rec, &zadarma).await;
        assert_eq!(second, Ok("https://api.zadarma.com/v1/pbx/record/download/x".into()));
        let signed =
            vendor.seen().into_iter().find(|s| s.path_and_query.starts_with("/v1/pbx")).expect("seen");
        assert_eq!(
            signed.authorization.as_deref(),
            Some("key:MjI3N2E3N2FmYmIzYzFlZDllNmE4NmI4NTJjMTQwNTg3ZDJhMjY5NA=="),
            "the signing secret signs API calls too"
        );

        let mango = access(
            Vendor::Mango,
            serde_json::json!({"recording_api_url": vendor.url("/vpbx"), "api_key": "apikey"}),
            Some("salt"),
        );
        let rec = recording(Vendor::Mango, Some("MToxMDA3MTYxNTo3NjQ0NDQ0NjE6MA=="), None);
        assert_eq!(
            resolver.resolve(&rec, &mango).await,
            Ok("https://app.mango-office.ru/rec/once?k=1".into())
        );
        let form =
            vendor.seen().into_iter().find(|s| s.path_and_query.starts_with("/vpbx")).expect("seen").body;
        let fields: HashMap<String, String> = form_urlencoded::parse(form.as_bytes()).into_owned().collect();
        assert_eq!(fields["vpbx_api_key"], "apikey");
        assert_eq!(fields["sign"], mango_sign("apikey", &fields["json"], "salt"));
        let json: serde_json::Value = serde_json::from_str(&fields["json"]).expect("json");
        assert_eq!(json["recording_id"], "MToxMDA3MTYxNTo3NjQ0NDQ0NjE6MA==");

        let aircall = access(
            Vendor::Aircall,
            serde_json::json!({"recording_api_url": vendor.url(""), "api_client_id": "id", "api_client_secret": "tok"}),
            None,
        );
        let rec = recording(Vendor::Aircall, None, Some("https://rec.aircall.io/812.mp3?sig=old"));
        assert_eq!(
            resolver.resolve(&rec, &aircall).await,
            Ok("https://rec.aircall.io/812.mp3?sig=new".into())
        );
        let basic = vendor.seen().into_iter().find(|s| s.path_and_query == "/v1/calls/812").expect("seen");
        assert_eq!(basic.authorization, Some(format!("Basic {}", STANDARD.encode("id:tok"))));
        let without_api = access(Vendor::Aircall, serde_json::json!({}), None);
        assert_eq!(
            resolver.resolve(&rec, &without_api).await,
            Ok("https://rec.aircall.io/812.mp3?sig=old".into()),
            "no API credentials: the webhook's link"
        );

        let twilio = access(Vendor::Twilio, serde_json::json!({"api_client_id": "AC1"}), None);
        let sid_only = recording(Vendor::Twilio, Some("RE1"), None);
        assert_eq!(
            resolver.resolve(&sid_only, &twilio).await,
            Ok("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1.mp3".into())
        );
        let calls = AtomicUsize::new(vendor.seen().len());
        let with_url = recording(Vendor::Twilio, Some("RE1"), Some("https://api.twilio.com/rec/RE1"));
        assert_eq!(resolver.resolve(&with_url, &twilio).await, Ok("https://api.twilio.com/rec/RE1".into()));
        assert_eq!(calls.load(Ordering::Relaxed), vendor.seen().len(), "a URL needs no call");
    }
}
