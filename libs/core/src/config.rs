//! Typed configuration, shared by every service.
//!
//! Sources, later ones winning: built-in defaults, an optional TOML file named by
//! `SWITCHBOARD_CONFIG`, then environment variables `SWITCHBOARD_<SECTION>__<KEY>` (for example
//! `SWITCHBOARD_KAFKA__BROKERS=10.0.0.5:9092`). Everything is validated before a service binds a
//! port or opens a connection, so a typo fails fast with exit code 64 instead of half-starting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::model::Secret;
/// The topology is its own module (it imports nothing); configuration refers to it.
pub use crate::topology::{Service, Topics};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub postgres: PostgresSettings,
    pub http: HttpSettings,
    pub ingress: IngressSettings,
    pub pipeline: PipelineSettings,
    pub calllog: CalllogSettings,
    pub api: ApiSettings,
    pub router: RouterSettings,
    pub recordings: RecordingsSettings,
    pub dispatcher: DispatcherSettings,
    pub desk: DeskSettings,
    pub sources: SourcesSettings,
    pub log: LogSettings,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    /// Prepended to every topic name, so several pipelines (or tests) share one cluster.
    pub topic_prefix: String,
    /// Prepended to every consumer group id.
    pub group_prefix: String,
    /// Partitions for topics Switchboard creates. The ceiling on consumer replicas per stage.
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long ingress waits for Kafka to acknowledge a webhook before answering 503.
    pub produce_timeout_ms: u64,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// How often a consumer reads its group's committed offsets against the partitions' high
    /// watermarks (`switchboard_kafka_consumer_lag`) and its group membership.
    pub monitor_interval_ms: u64,
    /// Extra librdkafka properties, for example `linger.ms`. In environment variables write dots
    /// as underscores: `SWITCHBOARD_KAFKA__CLIENT__LINGER_MS=1`.
    #[serde(deserialize_with = "scalars_as_strings")]
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "switchboard.".into(),
            group_prefix: "switchboard.".into(),
            partitions: 4,
            replication_factor: 1,
            produce_timeout_ms: 5_000,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            monitor_interval_ms: 10_000,
            client: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    pub fn group_id(&self, service: Service) -> String {
        format!("{}{}", self.group_prefix, service.name())
    }
}

/// librdkafka properties whose values are credentials (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, ...): never printed.
fn is_secret_property(key: &str) -> bool {
    ["password", "secret", "ssl.key.pem", "sasl.oauthbearer.config"].iter().any(|word| key.contains(word))
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let client: BTreeMap<&str, &str> = self
            .client
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_property(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("group_prefix", &self.group_prefix)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("produce_timeout_ms", &self.produce_timeout_ms)
            .field("client", &client)
            .finish_non_exhaustive()
    }
}

/// `url` with the password of its user info replaced by `***`.
fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((user_info, host)) = rest.split_once('@') else { return url.to_owned() };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &mask_url_password(&self.url))
            .field("pool_size", &self.pool_size)
            .field("create_database", &self.create_database)
            .field("pool_wait_ms", &self.pool_wait_ms)
            .finish()
    }
}

/// librdkafka takes every property as text, but the environment and TOML give `5000` as a
/// number and `true` as a boolean; accept any scalar and keep its text.
fn scalars_as_strings<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Scalar::Text(text) => text,
                Scalar::Integer(n) => n.to_string(),
                Scalar::Float(x) => x.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (key, text)
        })
        .collect())
}

/// A text setting whose values often look like numbers (an extension such as `700`), which the
/// environment and TOML would otherwise hand over as integers.
fn scalar_as_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
    }
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Text(text) => text,
        Scalar::Integer(n) => n.to_string(),
    })
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    pub url: String,
    pub pool_size: usize,
    /// Create the database named in `url` when it does not exist (needs CREATEDB).
    pub create_database: bool,
    /// How long a request waits for a pooled connection (or a new one) before it is told the
    /// database is unavailable: with PostgreSQL stalled, requests fail fast instead of piling up.
    pub pool_wait_ms: u64,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/switchboard".into(),
            pool_size: 8,
            create_database: true,
            pool_wait_ms: 1500,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Where the service listens; defaults to 0.0.0.0 on the service's own port.
    pub listen: Option<SocketAddr>,
    /// Services with a public port (ingress, api, router, dispatcher, desk) only: where their ops
    /// endpoints (`/metrics`, `/healthz`, `/readyz`) listen, apart from the public port; defaults
    /// to 0.0.0.0 on 9100, 9107, 9108, 9105 and 9106. The other consumers serve them on `listen`.
    pub ops_listen: Option<SocketAddr>,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain_timeout_ms: Option<u64>,
    /// Connections one HTTP service serves at once; beyond them: 503 and closed (default 10,000).
    pub max_connections: Option<usize>,
    /// How long one request may take from its headers to its answer, the body's upload included;
    /// past it: 408 and closed, so that a client dripping its body holds nothing for long
    /// (default 10 s).
    pub request_timeout_ms: Option<u64>,
}

impl HttpSettings {
    /// The limits of the service's public HTTP server.
    pub fn limits(&self) -> crate::http::Limits {
        let defaults = crate::http::Limits::default();
        crate::http::Limits {
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            request_timeout: self
                .request_timeout_ms
                .map_or(defaults.request_timeout, std::time::Duration::from_millis),
            ..defaults
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressSettings {
    /// Larger bodies are refused with 413 before they are read whole.
    pub max_body_bytes: usize,
    /// How often ingress re-reads the sources table, so a new source works without a restart.
    pub sources_refresh_ms: u64,
    /// The `Retry-After` ingress sends with a 503.
    pub retry_after_secs: u64,
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self { max_body_bytes: 1024 * 1024, sources_refresh_ms: 2_000, retry_after_secs: 5 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// Records a consumer stage keeps in flight (processed or being produced, offset not yet
    /// stored). The bound is what turns a slow broker into backpressure instead of memory.
    pub max_in_flight: usize,
    /// Upper bound of the exponential backoff between retries of a transient failure.
    pub max_backoff_ms: u64,
    /// Time a stopping consumer gives in-flight records to finish before it commits and exits.
    pub drain_timeout_ms: u64,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self { max_in_flight: 1_000, max_backoff_ms: 5_000, drain_timeout_ms: 10_000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalllogSettings {
    /// Most events written in one database transaction.
    pub batch_max: usize,
    /// How long the writer waits to fill a batch once it has one event.
    pub batch_linger_ms: u64,
    /// A call with no end marker is complete (and published) once no new event has arrived for
    /// this long, provided it was answered or has ended; a later event updates it again.
    pub settle_ms: u64,
    /// The same for a call that is still ringing: longer, so that a caller waiting in a queue
    /// is not reported missed while they wait.
    pub ringing_settle_ms: u64,
    /// Batches a writer has in the database at once (each its own transaction); offsets are
    /// still stored in order. 1 writes strictly one batch after another.
    pub batches_in_flight: usize,
    /// Calls whose events a writer keeps in memory while they are in progress, so that a call's
    /// next batch folds without reading it back; 0 reads every call back.
    pub fold_cache_calls: usize,
    /// Most events one call keeps: every batch refolds a call from all its events, so a call that
    /// grew without bound (a PBX stuck resending a leg's event under new ids) would make each of
    /// its batches slower than the last. Events beyond go to the dead-letter topic with the reason.
    pub max_events_per_call: usize,
}

impl Default for CalllogSettings {
    fn default() -> Self {
        Self {
            batch_max: 1_000,
            batch_linger_ms: 20,
            settle_ms: 60_000,
            ringing_settle_ms: 3_600_000,
            batches_in_flight: 2,
            fold_cache_calls: 50_000,
            max_events_per_call: 10_000,
        }
    }
}

/// Who may call the HTTP APIs (call-log queries, directory admin): bearer tokens, compared in
/// constant time. Empty means the APIs refuse every request. `Secret`: never shown by `Debug`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    pub tokens: Vec<Secret>,
    /// The longest one query of the API may take before the client gets 503 (a stalled database
    /// answers nothing; an indexed call-log page takes milliseconds).
    pub query_timeout_ms: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self { tokens: Vec::new(), query_timeout_ms: 1500 }
    }
}

impl ApiSettings {
    /// Whether an `Authorization` header value carries one of the configured tokens.
    pub fn authorizes(&self, authorization: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        // Every token is compared, so timing does not tell which (if any) matched.
        self.tokens.iter().fold(false, |found, known| {
            found | bool::from(known.expose().as_bytes().ct_eq(token.trim().as_bytes()))
        })
    }
}

/// The IVR routing lookup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSettings {
    /// Name of the Telphin `SetVar` variable that carries the extension.
    #[serde(deserialize_with = "scalar_as_string")]
    pub telphin_variable: String,
    /// Where a call goes when no responsible agent is known (unknown caller, no agent, lookup
    /// failure): for example a queue's extension. Empty means "no transfer".
    #[serde(deserialize_with = "scalar_as_string")]
    pub fallback: String,
    /// Where a blacklisted caller goes instead of an agent: for example an extension that plays a
    /// message and hangs up. Empty means the PBX's own refusal (Telphin `<Hangup/>`, Zadarma's
    /// `"blacklist"` scenario, JSON `"action": "reject"`).
    #[serde(deserialize_with = "scalar_as_string")]
    pub blacklist_target: String,
    /// How long a lookup may take, reading the request included, before the router answers with
    /// the fallback; well inside any IVR's timeout.
    pub lookup_timeout_ms: u64,
    /// ISO 3166 region for callers in national format, and for numbers the admin API imports
    /// (a request's `region` parameter overrides it).
    pub region: String,
    /// Tokens a lookup must carry as `?token=` (PBXs cannot send headers). A lookup without one
    /// of them gets only the fallback answer. Required unless `open_lookups` says otherwise.
    pub lookup_tokens: Vec<Secret>,
    /// Answer lookups without a token, as in Telphin's own examples: only where the router port
    /// is reachable from the PBX's addresses alone. The router refuses to start with neither.
    pub open_lookups: bool,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            telphin_variable: "transferDestination".into(),
            fallback: String::new(),
            blacklist_target: String::new(),
            lookup_timeout_ms: 300,
            region: "US".into(),
            lookup_tokens: Vec::new(),
            open_lookups: false,
        }
    }
}

/// Recording links (the recordings service signs them, the api serves them) and the resolution of
/// vendor recording ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingsSettings {
    /// HMAC-SHA256 key of the links' tokens, at least 32 bytes; the same on the recordings
    /// service and the api. Changing it invalidates every link handed out. The recordings service
    /// refuses to start without one; the api then answers recording links 503.
    #[serde(deserialize_with = "secret_scalar")]
    pub link_key: Secret,
    /// The key before the last rotation, at least 32 bytes when set: links it signed still open
    /// (new ones are signed with `link_key`), so that rotating the key does not break the links
    /// already pasted into CRMs. Keep it until those links expire (`link_ttl_secs`), then unset.
    #[serde(deserialize_with = "secret_scalar")]
    pub previous_link_key: Secret,
    /// Where CRM users reach the api: links are `<public_url>/v1/recordings/<id>?token=...`.
    pub public_url: String,
    /// How long a link works after the call's recording was first reported.
    pub link_ttl_secs: u64,
    /// Attempts to resolve a vendor recording id before the call is marked recording_failed.
    pub max_attempts: u32,
    /// Wait before the second attempt; it doubles after each attempt, up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// How long one vendor API call (token included) may take.
    pub resolve_timeout_ms: u64,
    /// How often the resolver looks for due recordings when it has nothing in hand.
    pub poll_interval_ms: u64,
    /// Vendor API calls one recordings replica makes at once.
    pub concurrency: usize,
}

impl Default for RecordingsSettings {
    fn default() -> Self {
        Self {
            link_key: Secret::default(),
            previous_link_key: Secret::default(),
            public_url: "http://127.0.0.1:8081".into(),
            link_ttl_secs: 365 * 24 * 3600,
            max_attempts: 12,
            retry_initial_ms: 15_000,
            retry_max_ms: 600_000,
            resolve_timeout_ms: 10_000,
            poll_interval_ms: 1_000,
            concurrency: 16,
        }
    }
}

/// Outbound delivery to CRMs (the dispatcher service).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherSettings {
    /// Key that seals the profiles' secrets (signing secrets, tokens) in PostgreSQL, at least 32
    /// bytes; the dispatcher refuses to start without it. Changing it makes the stored profiles
    /// unreadable until they are saved again.
    #[serde(deserialize_with = "secret_scalar")]
    pub secrets_key: Secret,
    /// Non-public networks deliveries may reach anyway, as CIDRs (`10.1.2.0/24`): a CRM on the
    /// office network, or the loopback receivers of tests. Public addresses are always allowed.
    pub allow_networks: Vec<String>,
    /// How often a dispatcher replica looks for due deliveries when it has nothing in hand.
    pub poll_interval_ms: u64,
    /// Requests one replica has in flight at once (each profile also has its own limit).
    pub concurrency: usize,
    /// How long a receiver has to answer when the profile sets no timeout of its own.
    pub attempt_timeout_ms: u64,
    /// How much of an answer is read (and kept in the attempt log); the rest is dropped.
    pub max_response_bytes: usize,
    /// A profile whose every delivery has failed for this long is disabled (0: never).
    pub disable_after_hours: u64,
    /// How soon a changed profile is used by every replica.
    pub profiles_refresh_ms: u64,
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        Self {
            secrets_key: Secret::default(),
            allow_networks: Vec::new(),
            poll_interval_ms: 500,
            concurrency: 32,
            attempt_timeout_ms: 15_000,
            max_response_bytes: 64 * 1024,
            disable_after_hours: 72,
            profiles_refresh_ms: 1_000,
        }
    }
}

/// The PBX sources' secrets at rest (`switchboard_core::source_secrets`): read by ingress (the
/// signing secrets), recordings and the api (vendor API credentials), the desk (click-to-call) and
/// `switchboard sources add|reseal`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesSettings {
    /// Seals every source's signing secret and API client secret in PostgreSQL; at least 32
    /// bytes. The services that read them refuse to start without it.
    pub secrets_key: Secret,
    /// During a key rotation, the key the stored secrets were sealed with until
    /// `switchboard sources reseal` seals them again with `secrets_key`; then unset it.
    pub previous_secrets_key: Secret,
}

/// The agent's desk (the desk service): sessions, the notification stream, the panel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeskSettings {
    /// Key from which session tokens are derived (HMAC-SHA256 of the session id), at least 32
    /// bytes; the desk refuses to start without it. Only token hashes are stored, so a copy of
    /// the database alone gives no usable token; changing the key invalidates every session.
    #[serde(deserialize_with = "secret_scalar")]
    pub token_key: Secret,
    /// How long a session lives; a session may ask for less, never more.
    pub session_ttl_secs: u64,
    /// Notifications kept per agent for clients that resume by last event id.
    pub resume_window: usize,
    /// Streams (WebSocket or SSE) one replica holds at once; one more is refused with 503.
    pub max_streams: usize,
    /// Notifications queued for one slow stream before it is closed (it resumes on reconnect).
    pub stream_queue: usize,
    /// How often an idle stream gets a keep-alive (WebSocket ping, SSE comment).
    pub keepalive_secs: u64,
    /// Who may embed the agent panel in a frame (CSP `frame-ancestors`), e.g.
    /// `https://crm.example.com`; `*` allows every site (the panel still needs a token).
    pub frame_ancestors: String,
    /// Calls whose state the desk remembers at once (for "taken" and "missed"); the oldest are
    /// forgotten first.
    pub max_tracked_calls: usize,
}

impl Default for DeskSettings {
    fn default() -> Self {
        Self {
            token_key: Secret::default(),
            session_ttl_secs: 12 * 3600,
            resume_window: 256,
            max_streams: 20_000,
            stream_queue: 256,
            keepalive_secs: 15,
            frame_ancestors: "*".into(),
            max_tracked_calls: 100_000,
        }
    }
}

/// Shortest link key accepted: 256 bits, the HMAC-SHA256 output size.
pub const MIN_LINK_KEY_BYTES: usize = 32;

/// Whether `text` is an IPv4 or IPv6 network (`10.0.0.0/8`) or a bare address; the dispatcher
/// parses it again with its own type, this keeps a typo from starting.
fn is_cidr(text: &str) -> bool {
    let (addr, prefix) = text.trim().split_once('/').map_or((text.trim(), None), |(a, p)| (a, Some(p)));
    let Ok(addr) = addr.parse::<std::net::IpAddr>() else { return false };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|p| p <= max))
}

/// A secret setting given as any scalar (a key of digits reads as a number from the environment).
fn secret_scalar<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
    scalar_as_string(deserializer).map(Secret::new)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` for people, `json` for log shippers.
    pub format: String,
    /// A tracing filter such as `info,switchboard_core=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: "text".into(), filter: "info".into() }
    }
}

const ENV_PREFIX: &str = "SWITCHBOARD_";
/// Names the TOML file; not a setting itself.
const CONFIG_FILE_VAR: &str = "SWITCHBOARD_CONFIG";
/// The API token the `switchboard` command line sends to the desk (`switchboard call`, …): read
/// by the command itself, never a setting of a service, so that it can be exported in the same
/// shell as the configuration without being refused as an unknown one.
pub const API_TOKEN_VAR: &str = "SWITCHBOARD_API_TOKEN";

/// The `SWITCHBOARD_` environment variables as a figment provider, the way figment's own
/// `Env::prefixed("SWITCHBOARD_").split("__")` reads them (prefix matched without regard to
/// case, `__` nesting, lower-cased keys, values parsed as figment values), but over any list of
/// variables: the process environment, or a deployment manifest's in [`Settings::from_vars`].
#[derive(Debug)]
struct EnvVars {
    /// `(nested.key, value)`, in the order given.
    vars: Vec<(String, String)>,
}

impl EnvVars {
    fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars = vars
            .into_iter()
            .filter_map(|(key, value)| {
                let key = key.trim();
                let head = key.get(..ENV_PREFIX.len())?;
                if !head.eq_ignore_ascii_case(ENV_PREFIX)
                    || key.eq_ignore_ascii_case(CONFIG_FILE_VAR)
                    || key.eq_ignore_ascii_case(API_TOKEN_VAR)
                {
                    return None;
                }
                let path = key[ENV_PREFIX.len()..].replace("__", ".").to_ascii_lowercase();
                // Like figment: a key with an empty segment (`SWITCHBOARD_KAFKA__`) is no key.
                if path.split('.').any(str::is_empty) {
                    return None;
                }
                Some((path, value))
            })
            .collect();
        Self { vars }
    }
}

impl figment::Provider for EnvVars {
    fn metadata(&self) -> figment::Metadata {
        // Errors name the variable as it was written: `KAFKA.PARTITIONS`.
        figment::Metadata::named("`SWITCHBOARD_` environment variable(s)").interpolater(
            |_: &figment::Profile, keys: &[&str]| {
                keys.iter().map(|k| k.to_ascii_uppercase()).collect::<Vec<_>>().join(".")
            },
        )
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (path, raw) in &self.vars {
            // Parsing a figment value never fails: what is not a number, boolean or array is text.
            let value = raw.parse::<figment::value::Value>().unwrap_or_else(|e| match e {});
            if let figment::value::Value::Dict(_, nested) = figment::util::nest(path, value) {
                merge_dict(&mut dict, nested);
            }
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

/// Deep merge; on a conflict the later value wins, as in the environment.
fn merge_dict(into: &mut figment::value::Dict, from: figment::value::Dict) {
    use figment::value::Value;
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, nested)) => merge_dict(existing, nested),
            (_, value) => {
                let _ = into.insert(key, value);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults, then `SWITCHBOARD_CONFIG` (a TOML file) when set, then the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("SWITCHBOARD_CONFIG").map(PathBuf::from);
        let vars = std::env::vars_os()
            .map(|(key, value)| (key.to_string_lossy().into_owned(), value.to_string_lossy().into_owned()));
        Self::load_from(file, EnvVars::new(vars))
    }

    /// Loads defaults and then `vars` as if they were the whole environment (the TOML file is not
    /// read): what a deployment manifest's environment would configure, validated. Variables
    /// without the `SWITCHBOARD_` prefix are ignored, as they are in the real environment.
    pub fn from_vars<K: AsRef<str>, V: AsRef<str>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let vars = vars.into_iter().map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()));
        Self::load_from(None, EnvVars::new(vars))
    }

    fn load_from(file: Option<PathBuf>, env: EnvVars) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!("config file {} not found", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        let mut settings: Settings = figment.merge(env).extract().map_err(Box::new)?;
        settings.kafka.client = std::mem::take(&mut settings.kafka.client)
            .into_iter()
            .map(|(key, value)| (key.replace('_', "."), value))
            .collect();
        settings.validate()?;
        Ok(settings)
    }

    /// Every environment variable the configuration reads, as `SWITCHBOARD_<SECTION>__<KEY>`,
    /// from the settings structs themselves, so that it cannot drift from them. The free-form
    /// librdkafka properties appear as their prefix, `SWITCHBOARD_KAFKA__CLIENT__`.
    pub fn env_keys() -> Vec<String> {
        let mut keys = vec![CONFIG_FILE_VAR.to_owned()];
        let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(Settings::default()) else {
            return keys;
        };
        for (section, fields) in sections {
            let serde_json::Value::Object(fields) = fields else { continue };
            for (field, value) in fields {
                let key = format!("{ENV_PREFIX}{}__{}", section.to_uppercase(), field.to_uppercase());
                // A map of free-form keys (the librdkafka properties) is named by its prefix.
                keys.push(if value.is_object() { format!("{key}__") } else { key });
            }
        }
        keys
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError::Invalid(msg));
        if self.kafka.brokers.trim().is_empty() {
            return fail("kafka.brokers is empty".into());
        }
        if !(1..=10_000).contains(&self.kafka.partitions) {
            return fail(format!("kafka.partitions must be 1..=10000, got {}", self.kafka.partitions));
        }
        if !(1..=32).contains(&self.kafka.replication_factor) {
            return fail("kafka.replication_factor must be 1..=32".into());
        }
        let valid_name = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid_name(&self.kafka.topic_prefix) || !valid_name(&self.kafka.group_prefix) {
            return fail("kafka topic_prefix and group_prefix may hold only a-z A-Z 0-9 . _ -".into());
        }
        if self.kafka.produce_timeout_ms < 100 {
            return fail("kafka.produce_timeout_ms must be at least 100".into());
        }
        if self.http.max_connections == Some(0) {
            return fail("http.max_connections must be at least 1".into());
        }
        if self.http.request_timeout_ms.is_some_and(|ms| ms < 100) {
            return fail("http.request_timeout_ms must be at least 100".into());
        }
        // A webhook waits for Kafka inside its request: the request deadline must leave it room.
        if self.http.limits().request_timeout < Duration::from_millis(self.kafka.produce_timeout_ms) {
            return fail("http.request_timeout_ms must be at least kafka.produce_timeout_ms".into());
        }
        if self.kafka.monitor_interval_ms < 100 {
            return fail("kafka.monitor_interval_ms must be at least 100".into());
        }
        if self.kafka.heartbeat_interval_ms * 3 > self.kafka.session_timeout_ms {
            return fail("kafka.heartbeat_interval_ms must be at most a third of session_timeout_ms".into());
        }
        if let Err(e) = tokio_postgres::Config::from_str(&self.postgres.url) {
            return fail(format!("postgres.url does not parse: {e}"));
        }
        if self.postgres.pool_wait_ms < 100 || self.api.query_timeout_ms < 100 {
            return fail("postgres.pool_wait_ms and api.query_timeout_ms must be at least 100".into());
        }
        if self.postgres.pool_size == 0 {
            return fail("postgres.pool_size must be at least 1".into());
        }
        // The raw record adds kept headers (at most 128 KiB), a query string (at most 8 KiB) and
        // metadata to the body; keep room for them.
        let max_body = crate::topology::MAX_RECORD_BYTES - 256 * 1024;
        if !(1024..=max_body).contains(&self.ingress.max_body_bytes) {
            return fail(format!("ingress.max_body_bytes must be between 1024 and {max_body}"));
        }
        if self.ingress.sources_refresh_ms < 100 {
            return fail("ingress.sources_refresh_ms must be at least 100".into());
        }
        if self.pipeline.max_backoff_ms < 100 {
            return fail("pipeline.max_backoff_ms must be at least 100".into());
        }
        if self.router.region.parse::<crate::model::Region>().is_err() {
            return fail(format!("router.region {:?} is not an ISO 3166 alpha-2 code", self.router.region));
        }
        if !(10..=10_000).contains(&self.router.lookup_timeout_ms) {
            return fail("router.lookup_timeout_ms must be 10..=10000".into());
        }
        let xml_name = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !xml_name(&self.router.telphin_variable) {
            return fail("router.telphin_variable must be letters, digits and _".into());
        }
        // A PBX takes it as an extension or scenario id: short, one word, printable.
        let target = &self.router.blacklist_target;
        if target.chars().count() > 64 || target.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return fail("router.blacklist_target must be at most 64 characters, without spaces".into());
        }
        if !(1..=16).contains(&self.calllog.batches_in_flight) {
            return fail("calllog.batches_in_flight must be 1..=16".into());
        }
        if self.calllog.max_events_per_call == 0 {
            return fail("calllog.max_events_per_call must be at least 1".into());
        }
        if self.pipeline.max_in_flight == 0 || self.calllog.batch_max == 0 {
            return fail("pipeline.max_in_flight and calllog.batch_max must be at least 1".into());
        }
        if self.calllog.settle_ms < 100 || self.calllog.ringing_settle_ms < self.calllog.settle_ms {
            return fail(
                "calllog.settle_ms must be at least 100 and ringing_settle_ms at least settle_ms".into(),
            );
        }
        if let Some(problem) = self.secret_problem() {
            return fail(problem);
        }
        let r = &self.recordings;
        let url_ok =
            |u: &str| (u.starts_with("https://") || u.starts_with("http://")) && !u.contains(['?', '#', ' ']);
        if !url_ok(&r.public_url) {
            return fail(format!("recordings.public_url {:?} is not an http(s) URL", r.public_url));
        }
        if r.link_ttl_secs < 60 {
            return fail("recordings.link_ttl_secs must be at least 60".into());
        }
        if !(1..=1000).contains(&r.max_attempts) {
            return fail("recordings.max_attempts must be 1..=1000".into());
        }
        if r.retry_initial_ms < 10 || r.retry_max_ms < r.retry_initial_ms {
            return fail(
                "recordings.retry_initial_ms must be at least 10 and retry_max_ms at least retry_initial_ms"
                    .into(),
            );
        }
        if !(100..=120_000).contains(&r.resolve_timeout_ms) {
            return fail("recordings.resolve_timeout_ms must be 100..=120000".into());
        }
        if r.poll_interval_ms < 10 || r.concurrency == 0 {
            return fail("recordings.poll_interval_ms must be at least 10 and concurrency at least 1".into());
        }
        let d = &self.dispatcher;
        if let Some(bad) = d.allow_networks.iter().find(|n| !is_cidr(n)) {
            return fail(format!("dispatcher.allow_networks: {bad:?} is not a CIDR (10.0.0.0/8, fd00::/8)"));
        }
        if d.poll_interval_ms < 10 || d.concurrency == 0 || d.profiles_refresh_ms < 10 {
            return fail(
                "dispatcher.poll_interval_ms and profiles_refresh_ms must be at least 10, concurrency at least 1"
                    .into(),
            );
        }
        if !(100..=120_000).contains(&d.attempt_timeout_ms) {
            return fail("dispatcher.attempt_timeout_ms must be 100..=120000".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&d.max_response_bytes) {
            return fail("dispatcher.max_response_bytes must be 1024..=16777216".into());
        }
        let k = &self.desk;
        if !(60..=30 * 86_400).contains(&k.session_ttl_secs) {
            return fail("desk.session_ttl_secs must be 60..=2592000".into());
        }
        if !(1..=100_000).contains(&k.resume_window) || k.max_streams == 0 || k.stream_queue == 0 {
            return fail(
                "desk.resume_window must be 1..=100000, max_streams and stream_queue at least 1".into(),
            );
        }
        if !(1..=300).contains(&k.keepalive_secs) || k.max_tracked_calls < 100 {
            return fail("desk.keepalive_secs must be 1..=300 and max_tracked_calls at least 100".into());
        }
        if k.frame_ancestors.trim().is_empty() || k.frame_ancestors.contains([';', ',', '\n', '\r']) {
            return fail("desk.frame_ancestors must be CSP sources separated by spaces".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return fail(format!("log.format must be text or json, got {:?}", self.log.format));
        }
        Ok(())
    }

    /// The first configured key or token that is too short to resist guessing, or still a
    /// placeholder from an example file (`change-me`): each would let anyone who read the example,
    /// or who can try a few million values, in. Empty ones are not configured, which the services
    /// that need them refuse on their own (`validate_for`).
    fn secret_problem(&self) -> Option<String> {
        let keys = [
            ("recordings.link_key", &self.recordings.link_key),
            ("recordings.previous_link_key", &self.recordings.previous_link_key),
            ("dispatcher.secrets_key", &self.dispatcher.secrets_key),
            ("desk.token_key", &self.desk.token_key),
            ("sources.secrets_key", &self.sources.secrets_key),
            ("sources.previous_secrets_key", &self.sources.previous_secrets_key),
        ];
        let tokens = self.api.tokens.iter().map(|t| ("api.tokens", t));
        let lookups = self.router.lookup_tokens.iter().map(|t| ("router.lookup_tokens", t));
        keys.into_iter().chain(tokens).chain(lookups).filter(|(_, s)| !s.is_empty()).find_map(|(name, secret)| {
            let text = secret.expose();
            let folded: String = text.to_ascii_lowercase().chars().filter(char::is_ascii_alphanumeric).collect();
            if folded.contains("changeme") {
                Some(format!("{name} holds a placeholder (change-me): set a random value of your own, for example `head -c 32 /dev/urandom | base64`"))
            } else if text.len() < MIN_LINK_KEY_BYTES {
                Some(format!("{name}: each must be at least {MIN_LINK_KEY_BYTES} bytes (a shorter one can be guessed), for example `head -c 32 /dev/urandom | base64`"))
            } else {
                None
            }
        })
    }

    /// What one service needs beyond what every service does, checked before it binds a port: the
    /// recordings service signs links, so it needs the link key.
    pub fn validate_for(&self, service: Service) -> Result<(), ConfigError> {
        if service == Service::Recordings && self.recordings.link_key.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "recordings.link_key (SWITCHBOARD_RECORDINGS__LINK_KEY) must be set, at least {MIN_LINK_KEY_BYTES} bytes"
            )));
        }
        if service == Service::Router && self.router.lookup_tokens.is_empty() && !self.router.open_lookups {
            return Err(ConfigError::Invalid(
                "router.lookup_tokens (SWITCHBOARD_ROUTER__LOOKUP_TOKENS) is empty: set tokens for the PBXs' \
                 lookups, or SWITCHBOARD_ROUTER__OPEN_LOOKUPS=true where only the PBX reaches the router"
                    .into(),
            ));
        }
        if service == Service::Dispatcher && self.dispatcher.secrets_key.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "dispatcher.secrets_key (SWITCHBOARD_DISPATCHER__SECRETS_KEY) must be set, at least {MIN_LINK_KEY_BYTES} bytes"
            )));
        }
        if service.has_public_port() && self.ops_listen_addr(service) == self.listen_addr(service) {
            return Err(ConfigError::Invalid(format!(
                "http.ops_listen (SWITCHBOARD_HTTP__OPS_LISTEN) is {}, the public port: {} keeps its metrics off \
                 the port PBXs, CRMs and browsers reach, so give them a port of their own",
                self.listen_addr(service),
                service.name()
            )));
        }
        let reads_source_secrets =
            matches!(service, Service::Ingress | Service::Recordings | Service::Api | Service::Desk);
        if reads_source_secrets && self.sources.secrets_key.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "sources.secrets_key (SWITCHBOARD_SOURCES__SECRETS_KEY) must be set, at least {MIN_LINK_KEY_BYTES} bytes: \
                 the sources' signing and API secrets are sealed with it"
            )));
        }
        if service == Service::Desk && self.desk.token_key.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "desk.token_key (SWITCHBOARD_DESK__TOKEN_KEY) must be set, at least {MIN_LINK_KEY_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// The recordings base URL without a trailing slash.
    pub fn recordings_public_url(&self) -> &str {
        self.recordings.public_url.trim_end_matches('/')
    }

    pub fn listen_addr(&self, service: Service) -> SocketAddr {
        self.http.listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], service.default_port())))
    }

    /// Where the service's ops endpoints listen: a port of their own for a service with a public
    /// port, the consumers' only port.
    pub fn ops_listen_addr(&self, service: Service) -> SocketAddr {
        if service.has_public_port() {
            self.http
                .ops_listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], service.default_ops_port())))
        } else {
            self.listen_addr(service)
        }
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_output_keeps_credentials_out() {
        let postgres = PostgresSettings {
            url: "postgres://sb:hunter2@db:5432/switchboard".into(),
            ..PostgresSettings::default()
        };
        let printed = format!("{postgres:?}");
        assert!(
            !printed.contains("hunter2") && printed.contains("postgres://sb:***@db:5432/switchboard"),
            "{printed}"
        );
        let mut kafka = KafkaSettings::default();
        let _ = kafka.client.insert("sasl.password".into(), "hunter2".into());
        let _ = kafka.client.insert("linger.ms".into(), "5".into());
        let printed = format!("{kafka:?}");
        assert!(!printed.contains("hunter2") && printed.contains("linger.ms"), "{printed}");
        let settings = Settings { postgres, kafka, ..Settings::default() };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads settings as if `vars` were set in the environment, written as a TOML file so that
    /// tests do not race on the process environment.
    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut toml = String::new();
        for (key, value) in vars {
            let path = key.trim_start_matches("SWITCHBOARD_").to_lowercase().replace("__", ".");
            toml.push_str(&format!("{path} = {value}\n"));
        }
        let file = std::env::temp_dir().join(format!("sb-config-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&file, toml).expect("write config");
        let result = Settings::load_from(Some(file.clone()), EnvVars::new([]));
        let _ = std::fs::remove_file(file);
        result
    }

    #[test]
    fn defaults_are_valid() {
        let settings = load(&[]).expect("defaults");
        assert_eq!(settings.kafka.topics().raw, "switchboard.raw");
        assert_eq!(settings.listen_addr(Service::Calllog).port(), 9104);
    }

    #[test]
    fn overrides_apply_and_are_validated() {
        let settings = load(&[("SWITCHBOARD_KAFKA__PARTITIONS", "8")]).expect("valid");
        assert_eq!(settings.kafka.partitions, 8);
        assert!(load(&[("SWITCHBOARD_KAFKA__PARTITIONS", "0")]).is_err());
        assert!(load(&[("SWITCHBOARD_LOG__FORMAT", "\"xml\"")]).is_err());
        assert!(load(&[("SWITCHBOARD_POSTGRES__URL", "\"not a url ::\"")]).is_err());
        assert!(load(&[("SWITCHBOARD_KAFKA__NO_SUCH_KEY", "1")]).is_err(), "typos are errors");
    }

    #[test]
    fn environment_variables_nest_parse_and_are_validated() {
        let settings = Settings::from_vars([
            ("SWITCHBOARD_KAFKA__PARTITIONS", "12"),
            ("switchboard_kafka__brokers", "kafka:9092"),
            ("SWITCHBOARD_HTTP__OPS_LISTEN", "127.0.0.1:9200"),
            ("SWITCHBOARD_KAFKA__CLIENT__LINGER_MS", "1"),
            ("SWITCHBOARD_CONFIG", "/not/read/here.toml"),
            ("PATH", "/usr/bin"),
        ])
        .expect("valid");
        assert_eq!(settings.kafka.partitions, 12);
        assert_eq!(settings.kafka.brokers, "kafka:9092", "the prefix is matched without regard to case");
        assert_eq!(settings.ops_listen_addr(Service::Ingress).port(), 9200);
        assert_eq!(settings.ops_listen_addr(Service::Calllog).port(), 9104, "consumers have one port");
        let defaults = Settings::from_vars(Vec::<(String, String)>::new()).expect("defaults");
        for (service, public, ops) in [(Service::Api, 8081, 9107), (Service::Router, 8082, 9108)] {
            assert_eq!(defaults.listen_addr(service).port(), public);
            assert_eq!(
                defaults.ops_listen_addr(service).port(),
                ops,
                "{service:?}: metrics off the public port"
            );
        }
        let same = Settings::from_vars([
            ("SWITCHBOARD_HTTP__LISTEN", "0.0.0.0:8081"),
            ("SWITCHBOARD_HTTP__OPS_LISTEN", "0.0.0.0:8081"),
        ])
        .expect("parses");
        let error = same.validate_for(Service::Api).expect_err("metrics would be on the public port");
        assert!(error.to_string().contains("SWITCHBOARD_HTTP__OPS_LISTEN"), "{error}");
        assert!(
            same.validate_for(Service::Calllog).is_ok(),
            "a consumer's one port serves its ops endpoints"
        );
        assert_eq!(settings.kafka.client["linger.ms"], "1");
        let error = Settings::from_vars([("SWITCHBOARD_KAFKA__PARTITON", "3")]).expect_err("a typo");
        assert!(error.to_string().contains("partiton"), "the error names the key: {error}");
        assert!(Settings::from_vars([("SWITCHBOARD_KAFKA__PARTITIONS", "many")]).is_err());
        assert!(Settings::from_vars([("SWITCHBOARD_NOSECTION", "1")]).is_err());
        // The command line's own token is not configuration, and not refused as unknown.
        assert!(Settings::from_vars([("SWITCHBOARD_API_TOKEN", "t0ken")]).is_ok());
        assert!(Settings::from_vars([("SWITCHBOARD_API_TOKENS", "t0ken")]).is_err(), "only that name");
    }

    #[test]
    fn env_keys_list_every_setting() {
        let keys = Settings::env_keys();
        for key in [
            "SWITCHBOARD_CONFIG",
            "SWITCHBOARD_KAFKA__BROKERS",
            "SWITCHBOARD_KAFKA__CLIENT__",
            "SWITCHBOARD_HTTP__LISTEN",
            "SWITCHBOARD_HTTP__OPS_LISTEN",
            "SWITCHBOARD_CALLLOG__BATCH_LINGER_MS",
            "SWITCHBOARD_LOG__FILTER",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
        // Each listed key is accepted with its default value's type: every one is real.
        let defaults = serde_json::to_value(Settings::default()).expect("serialise");
        for key in keys.iter().filter(|k| !k.ends_with("__") && *k != "SWITCHBOARD_CONFIG") {
            let path: Vec<String> = key["SWITCHBOARD_".len()..].split("__").map(str::to_lowercase).collect();
            let value = &defaults[&path[0]][&path[1]];
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            assert!(Settings::from_vars([(key.as_str(), text.as_str())]).is_ok(), "{key}={text}");
        }
    }

    #[test]
    fn router_settings_take_numeric_extensions_and_are_validated() {
        let settings = Settings::from_vars([
            ("SWITCHBOARD_ROUTER__FALLBACK", "700"),
            ("SWITCHBOARD_ROUTER__REGION", "RU"),
            (
                "SWITCHBOARD_API__TOKENS",
                "[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"]",
            ),
        ])
        .expect("valid");
        assert_eq!(settings.router.fallback, "700", "an extension that looks like a number");
        assert!(settings.api.authorizes(Some("Bearer bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")));
        assert!(
            !settings.api.authorizes(Some("Bearer cccccccccccccccccccccccccccccccc"))
                && !settings.api.authorizes(None)
        );
        assert!(Settings::from_vars([("SWITCHBOARD_ROUTER__REGION", "XX")]).is_err());
        assert!(Settings::from_vars([("SWITCHBOARD_ROUTER__TELPHIN_VARIABLE", "a b")]).is_err());
        assert!(Settings::from_vars([("SWITCHBOARD_ROUTER__LOOKUP_TIMEOUT_MS", "1")]).is_err());
        let target = Settings::from_vars([("SWITCHBOARD_ROUTER__BLACKLIST_TARGET", "800")]).expect("valid");
        assert_eq!(target.router.blacklist_target, "800", "an extension that looks like a number");
        assert!(Settings::from_vars([("SWITCHBOARD_ROUTER__BLACKLIST_TARGET", "8 00")]).is_err());
        assert!(Settings::from_vars([("SWITCHBOARD_ROUTER__BLACKLIST_TARGET", "x".repeat(65))]).is_err());
        let with_token = Settings::from_vars([(
            "SWITCHBOARD_ROUTER__LOOKUP_TOKENS",
            "[\"pbx-secret-0123456789abcdef-0123456789\"]",
        )])
        .expect("valid");
        assert!(!format!("{with_token:?}").contains("pbx-secret"), "tokens never show in Debug output");
    }

    #[test]
    fn short_and_placeholder_tokens_and_keys_are_refused() {
        let long = "x".repeat(MIN_LINK_KEY_BYTES);
        for key in [
            "SWITCHBOARD_API__TOKENS",
            "SWITCHBOARD_ROUTER__LOOKUP_TOKENS",
            "SWITCHBOARD_RECORDINGS__LINK_KEY",
            "SWITCHBOARD_RECORDINGS__PREVIOUS_LINK_KEY",
            "SWITCHBOARD_DISPATCHER__SECRETS_KEY",
            "SWITCHBOARD_DESK__TOKEN_KEY",
        ] {
            let value = |v: &str| {
                if key.ends_with("TOKENS") { format!("[\"{long}\", \"{v}\"]") } else { v.to_owned() }
            };
            for (bad, why) in [
                ("short-token-0123456789", "at least 32 bytes"),
                ("change-me-to-32-random-bytes-or-more-000000", "placeholder"),
                ("CHANGE_ME_0123456789abcdef0123456789abcdef", "placeholder"),
                ("ChangeMe0123456789abcdef0123456789abcdef", "placeholder"),
            ] {
                let error = Settings::from_vars([(key, value(bad))]).expect_err(bad).to_string();
                assert!(error.contains(why), "{key}={bad}: {error}");
                assert!(!error.contains(bad), "the error does not repeat the secret: {error}");
            }
            assert!(Settings::from_vars([(key, value(&long))]).is_ok(), "{key}: 32 random bytes are fine");
        }
    }

    #[test]
    fn dispatcher_settings_are_validated_and_the_key_is_required_to_start() {
        let key = "a-dispatcher-secrets-key-of-32-bytes-or-more";
        let settings = Settings::from_vars([
            ("SWITCHBOARD_DISPATCHER__SECRETS_KEY", key),
            ("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", r#"["10.1.2.0/24", "fd00::/8", "127.0.0.1"]"#),
        ])
        .expect("valid");
        assert_eq!(settings.dispatcher.allow_networks.len(), 3);
        assert!(settings.validate_for(Service::Dispatcher).is_ok());
        assert!(!format!("{settings:?}").contains(key), "the key stays out of Debug");
        assert_eq!(settings.dispatcher.attempt_timeout_ms, 15_000);
        assert_eq!(settings.dispatcher.max_response_bytes, 64 * 1024);
        assert_eq!(settings.ops_listen_addr(Service::Dispatcher).port(), 9105);
        assert_eq!(settings.listen_addr(Service::Dispatcher).port(), 8083);
        assert!(
            Settings::from_vars(Vec::<(String, String)>::new())
                .expect("defaults")
                .validate_for(Service::Dispatcher)
                .is_err()
        );
        assert!(Settings::from_vars([("SWITCHBOARD_DISPATCHER__SECRETS_KEY", "short")]).is_err());
        assert!(
            Settings::from_vars([("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", r#"["10.0.0.0/33"]"#)]).is_err()
        );
        assert!(Settings::from_vars([("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", r#"["office"]"#)]).is_err());
    }

    #[test]
    fn recordings_settings_are_validated_and_the_key_stays_secret() {
        let key = "k".repeat(MIN_LINK_KEY_BYTES);
        let settings = Settings::from_vars([
            ("SWITCHBOARD_RECORDINGS__LINK_KEY", key.as_str()),
            ("SWITCHBOARD_RECORDINGS__PUBLIC_URL", "https://sb.example.com/"),
            ("SWITCHBOARD_RECORDINGS__MAX_ATTEMPTS", "5"),
            ("SWITCHBOARD_SOURCES__SECRETS_KEY", "s".repeat(MIN_LINK_KEY_BYTES).as_str()),
        ])
        .expect("valid");
        assert_eq!(settings.recordings.link_key.expose(), key);
        assert_eq!(settings.recordings_public_url(), "https://sb.example.com");
        assert!(settings.validate_for(Service::Recordings).is_ok());
        assert!(!format!("{settings:?}").contains(&key), "the key never shows in Debug output");

        let digits = "1".repeat(40);
        let numeric = Settings::from_vars([("SWITCHBOARD_RECORDINGS__LINK_KEY", digits.as_str())]);
        assert_eq!(numeric.expect("a key of digits").recordings.link_key.expose(), digits);
        let defaults = Settings::from_vars(Vec::<(String, String)>::new()).expect("defaults");
        assert!(
            defaults.validate_for(Service::Normalizer).is_ok(),
            "a stage that reads no secret needs no key"
        );
        for service in [Service::Recordings, Service::Ingress, Service::Api, Service::Desk] {
            let error = defaults.validate_for(service).expect_err("the sources' key");
            assert!(
                service == Service::Recordings || error.to_string().contains("sources.secrets_key"),
                "{error}"
            );
        }
        for bad in [
            ("SWITCHBOARD_RECORDINGS__LINK_KEY", "short"),
            ("SWITCHBOARD_RECORDINGS__PUBLIC_URL", "sb.example.com"),
            ("SWITCHBOARD_RECORDINGS__MAX_ATTEMPTS", "0"),
            ("SWITCHBOARD_RECORDINGS__RETRY_MAX_MS", "5"),
            ("SWITCHBOARD_RECORDINGS__RESOLVE_TIMEOUT_MS", "1"),
            ("SWITCHBOARD_RECORDINGS__CONCURRENCY", "0"),
        ] {
            assert!(Settings::from_vars([bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_properties_take_dots() {
        let settings = load(&[("SWITCHBOARD_KAFKA__CLIENT__SECURITY_PROTOCOL", "\"ssl\"")]).expect("valid");
        assert_eq!(settings.kafka.client.get("security.protocol").map(String::as_str), Some("ssl"));
        let settings = load(&[
            ("SWITCHBOARD_KAFKA__CLIENT__AUTO_COMMIT_INTERVAL_MS", "3600000"),
            ("SWITCHBOARD_KAFKA__CLIENT__ENABLE_SSL_CERTIFICATE_VERIFICATION", "false"),
        ])
        .expect("numbers and booleans are accepted");
        assert_eq!(settings.kafka.client["auto.commit.interval.ms"], "3600000");
        assert_eq!(settings.kafka.client["enable.ssl.certificate.verification"], "false");
    }
}
