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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The settings every service shares, and each service's own section as read.
///
/// The shared sections are typed here; a service's own section (`[calllog]`,
/// `SWITCHBOARD_CALLLOG__…`) is a [`Section`] defined in the service's crate and taken with
/// [`Settings::section`], so that changing it rebuilds that service alone. Which sections exist is
/// the binary's list of services (`switchboard::SERVICES`, each with its [`SectionInfo`]):
/// loading refuses any other.
///
/// When each check runs:
///
/// | when | what | where |
/// |---|---|---|
/// | loading, before anything binds | the shared sections; every section's `validate` and `secrets`; unknown sections refused | [`Settings::validate`] |
/// | starting a service, before it binds | its ops port apart, the sources' key if it reads them ([`Settings::validate_for`]); its own section's `required` | `switchboard::check_start`, again in the service through [`Settings::own_section`] |
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub postgres: PostgresSettings,
    pub http: HttpSettings,
    pub pipeline: PipelineSettings,
    pub api: ApiSettings,
    pub sources: SourcesSettings,
    pub log: LogSettings,
    /// The services' own sections by name, untyped until their service reads them. Not
    /// `deny_unknown_fields` (serde cannot with `flatten`): `validate` refuses unknown names.
    #[serde(flatten)]
    sections: BTreeMap<String, figment::value::Value>,
}

/// Shown without the services' sections, which hold keys and are typed (and masked) only by
/// their own crates.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("kafka", &self.kafka)
            .field("postgres", &self.postgres)
            .field("http", &self.http)
            .field("pipeline", &self.pipeline)
            .field("api", &self.api)
            .field("sources", &self.sources)
            .field("log", &self.log)
            .field("sections", &self.sections.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A service's own section of the configuration, defined in the service's crate.
pub trait Section: Default + Serialize + DeserializeOwned {
    /// `calllog` for `[calllog]` in the file and `SWITCHBOARD_CALLLOG__…` in the environment.
    const NAME: &'static str;

    /// Why the section cannot be used, checked with the shared settings at hand before any
    /// service binds a port.
    fn validate(&self, _shared: &Settings) -> Result<(), String> {
        Ok(())
    }

    /// The keys and tokens it holds, by setting name: each is held to [`secret_problem`].
    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        Vec::new()
    }

    /// What the section's own service needs beyond a valid section (a key it cannot run
    /// without), checked before that service binds a port; other commands may do without.
    fn required(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A section's value that does not parse, named as the setting and its environment variable
/// (`calllog.batch_max (SWITCHBOARD_CALLLOG__BATCH_MAX): invalid type: …`), as figment names a
/// shared section's.
fn section_error(section: &str, error: &figment::Error) -> ConfigError {
    let path: Vec<&str> = std::iter::once(section).chain(error.path.iter().map(String::as_str)).collect();
    let var = format!("{ENV_PREFIX}{}", path.iter().map(|p| p.to_uppercase()).collect::<Vec<_>>().join("__"));
    ConfigError::Invalid(format!("{} ({var}): {}", path.join("."), error.kind))
}

/// For [`Section::required`]: `Err` naming the setting `name` of section `S` (and its
/// environment variable) when `key` is not set.
pub fn require_key<S: Section>(name: &str, key: &Secret) -> Result<(), String> {
    match key.is_empty() {
        true => Err(format!(
            "{name} ({ENV_PREFIX}{}__{}) must be set, at least {MIN_LINK_KEY_BYTES} bytes",
            S::NAME.to_uppercase(),
            name.to_uppercase()
        )),
        false => Ok(()),
    }
}

/// A [`Section`] type as a value, for the binary's one list of services' sections.
#[derive(Debug, Clone, Copy)]
pub struct SectionInfo {
    pub name: &'static str,
    defaults: fn() -> serde_json::Value,
    check: fn(&Settings) -> Result<(), ConfigError>,
    required: fn(&Settings) -> Result<(), ConfigError>,
}

impl SectionInfo {
    pub const fn of<S: Section>() -> Self {
        Self {
            name: S::NAME,
            defaults: || serde_json::to_value(S::default()).unwrap_or_default(),
            check: |settings| settings.section::<S>().map(drop),
            required: |settings| {
                settings
                    .section::<S>()?
                    .required()
                    .map_err(|e| ConfigError::Invalid(format!("{}.{e}", S::NAME)))
            },
        }
    }

    /// What the section's service needs to start (`Section::required`).
    pub fn check_required(&self, settings: &Settings) -> Result<(), ConfigError> {
        (self.required)(settings)
    }
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
pub fn scalar_as_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
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

/// Shortest link key accepted: 256 bits, the HMAC-SHA256 output size.
pub const MIN_LINK_KEY_BYTES: usize = 32;

/// A secret setting given as any scalar (a key of digits reads as a number from the environment).
pub fn secret_scalar<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
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
    /// Loads defaults, then `SWITCHBOARD_CONFIG` (a TOML file) when set, then the environment;
    /// `sections` are the services' own sections that may appear.
    pub fn load(sections: &[SectionInfo]) -> Result<Self, ConfigError> {
        let file = std::env::var_os("SWITCHBOARD_CONFIG").map(PathBuf::from);
        let vars = std::env::vars_os()
            .map(|(key, value)| (key.to_string_lossy().into_owned(), value.to_string_lossy().into_owned()));
        Self::load_from(file, EnvVars::new(vars), sections)
    }

    /// Loads defaults and then `vars` as if they were the whole environment (the TOML file is not
    /// read): what a deployment manifest's environment would configure, validated. Variables
    /// without the `SWITCHBOARD_` prefix are ignored, as they are in the real environment.
    pub fn from_vars<K: AsRef<str>, V: AsRef<str>>(
        sections: &[SectionInfo],
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let vars = vars.into_iter().map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()));
        Self::load_from(None, EnvVars::new(vars), sections)
    }

    fn load_from(file: Option<PathBuf>, env: EnvVars, sections: &[SectionInfo]) -> Result<Self, ConfigError> {
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
        settings.validate(sections)?;
        Ok(settings)
    }

    /// The section `S` alone, read from `vars` as [`Settings::from_vars`] reads them: for the
    /// tests of a service's own settings.
    pub fn section_from_vars<S: Section, K: AsRef<str>, V: AsRef<str>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<S, ConfigError> {
        Self::from_vars(&[SectionInfo::of::<S>()], vars)?.section()
    }

    /// The service's own section `S`, its defaults where unset, checked.
    pub fn section<S: Section>(&self) -> Result<S, ConfigError> {
        let section = match self.sections.get(S::NAME) {
            None => S::default(),
            Some(value) => value.deserialize::<S>().map_err(|e| section_error(S::NAME, &e))?,
        };
        section.validate(self).map_err(|e| ConfigError::Invalid(format!("{}.{e}", S::NAME)))?;
        if let Some(problem) = section
            .secrets()
            .into_iter()
            .find_map(|(name, secret)| secret_problem(secret).map(|why| format!("{}.{name}{why}", S::NAME)))
        {
            return Err(ConfigError::Invalid(problem));
        }
        Ok(section)
    }

    /// Replaces the section `S` (tests and benchmarks that configure a service in code).
    pub fn set_section<S: Section>(&mut self, section: &S) -> Result<(), ConfigError> {
        let value = figment::value::Value::serialize(section).map_err(|e| ConfigError::Load(Box::new(e)))?;
        let _ = self.sections.insert(S::NAME.to_owned(), value);
        Ok(())
    }

    /// The section of `service` checked for starting it: what every service needs
    /// ([`Settings::validate_for`]), then the section's own needs ([`Section::required`]).
    pub fn own_section<S: Section>(&self, service: Service) -> Result<S, ConfigError> {
        self.validate_for(service)?;
        let section = self.section::<S>()?;
        section.required().map_err(|e| ConfigError::Invalid(format!("{}.{e}", S::NAME)))?;
        Ok(section)
    }

    /// Every environment variable the configuration reads, as `SWITCHBOARD_<SECTION>__<KEY>`,
    /// from the settings structs themselves, so that it cannot drift from them. The free-form
    /// librdkafka properties appear as their prefix, `SWITCHBOARD_KAFKA__CLIENT__`.
    pub fn env_keys(sections: &[SectionInfo]) -> Vec<String> {
        let mut keys = vec![CONFIG_FILE_VAR.to_owned()];
        let Ok(serde_json::Value::Object(mut all)) = serde_json::to_value(Settings::default()) else {
            return keys;
        };
        for section in sections {
            let _ = all.insert(section.name.to_owned(), (section.defaults)());
        }
        for (section, fields) in all {
            let serde_json::Value::Object(fields) = fields else { continue };
            for (field, value) in fields {
                let key = format!("{ENV_PREFIX}{}__{}", section.to_uppercase(), field.to_uppercase());
                // A map of free-form keys (the librdkafka properties) is named by its prefix.
                keys.push(if value.is_object() { format!("{key}__") } else { key });
            }
        }
        keys
    }

    /// The defaults of every setting, the services' `sections` included, as JSON.
    pub fn defaults(sections: &[SectionInfo]) -> serde_json::Value {
        let mut all = serde_json::to_value(Settings::default()).unwrap_or_default();
        for section in sections {
            if let Some(map) = all.as_object_mut() {
                let _ = map.insert(section.name.to_owned(), (section.defaults)());
            }
        }
        all
    }

    /// Checks the shared sections, then refuses sections not in `sections` and checks each of
    /// those that are.
    pub fn validate(&self, sections: &[SectionInfo]) -> Result<(), ConfigError> {
        self.validate_shared()?;
        if let Some(unknown) = self.sections.keys().find(|name| !sections.iter().any(|s| s.name == *name)) {
            let mut known: Vec<&str> =
                ["kafka", "postgres", "http", "pipeline", "api", "sources", "log"].into();
            known.extend(sections.iter().map(|s| s.name));
            return Err(ConfigError::Invalid(format!(
                "unknown section {unknown:?}; the sections are {}",
                known.join(", ")
            )));
        }
        sections.iter().try_for_each(|section| (section.check)(self))
    }

    fn validate_shared(&self) -> Result<(), ConfigError> {
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
        if self.pipeline.max_backoff_ms < 100 {
            return fail("pipeline.max_backoff_ms must be at least 100".into());
        }
        if self.pipeline.max_in_flight == 0 {
            return fail("pipeline.max_in_flight must be at least 1".into());
        }
        if let Some(problem) = self.secret_problem() {
            return fail(problem);
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return fail(format!("log.format must be text or json, got {:?}", self.log.format));
        }
        Ok(())
    }

    /// The first shared key or token that is too short or a placeholder ([`secret_problem`]).
    fn secret_problem(&self) -> Option<String> {
        let keys = [
            ("sources.secrets_key", &self.sources.secrets_key),
            ("sources.previous_secrets_key", &self.sources.previous_secrets_key),
        ];
        let tokens = self.api.tokens.iter().map(|t| ("api.tokens", t));
        keys.into_iter()
            .chain(tokens)
            .find_map(|(name, secret)| secret_problem(secret).map(|why| format!("{name}{why}")))
    }

    /// What every service needs to start beyond valid settings: its ops endpoints off its
    /// public port, and the sources' key where it reads the sources' secrets. A service's own
    /// needs are its section's ([`Settings::own_section`]).
    pub fn validate_for(&self, service: Service) -> Result<(), ConfigError> {
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
        Ok(())
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

/// Why a configured key or token is unfit, to follow its setting's name: too short to resist
/// guessing, or still a placeholder from an example file (`change-me`); each would let anyone who
/// read the example, or who can try a few million values, in. Empty ones are not configured,
/// which the services that need them refuse on their own (`Section::required`).
pub fn secret_problem(secret: &Secret) -> Option<String> {
    if secret.is_empty() {
        return None;
    }
    let text = secret.expose();
    let folded: String = text.to_ascii_lowercase().chars().filter(char::is_ascii_alphanumeric).collect();
    if folded.contains("changeme") {
        Some(" holds a placeholder (change-me): set a random value of your own, for example `head -c 32 /dev/urandom | base64`".into())
    } else if text.len() < MIN_LINK_KEY_BYTES {
        Some(format!(
            ": each must be at least {MIN_LINK_KEY_BYTES} bytes (a shorter one can be guessed), for example `head -c 32 /dev/urandom | base64`"
        ))
    } else {
        None
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
        let result = Settings::load_from(Some(file.clone()), EnvVars::new([]), &[]);
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
        let settings = Settings::from_vars(
            &[],
            [
                ("SWITCHBOARD_KAFKA__PARTITIONS", "12"),
                ("switchboard_kafka__brokers", "kafka:9092"),
                ("SWITCHBOARD_HTTP__OPS_LISTEN", "127.0.0.1:9200"),
                ("SWITCHBOARD_KAFKA__CLIENT__LINGER_MS", "1"),
                ("SWITCHBOARD_CONFIG", "/not/read/here.toml"),
                ("PATH", "/usr/bin"),
            ],
        )
        .expect("valid");
        assert_eq!(settings.kafka.partitions, 12);
        assert_eq!(settings.kafka.brokers, "kafka:9092", "the prefix is matched without regard to case");
        assert_eq!(settings.ops_listen_addr(Service::Ingress).port(), 9200);
        assert_eq!(settings.ops_listen_addr(Service::Calllog).port(), 9104, "consumers have one port");
        let defaults = Settings::from_vars(&[], Vec::<(String, String)>::new()).expect("defaults");
        for (service, public, ops) in [(Service::Api, 8081, 9107), (Service::Router, 8082, 9108)] {
            assert_eq!(defaults.listen_addr(service).port(), public);
            assert_eq!(
                defaults.ops_listen_addr(service).port(),
                ops,
                "{service:?}: metrics off the public port"
            );
        }
        let same = Settings::from_vars(
            &[],
            [("SWITCHBOARD_HTTP__LISTEN", "0.0.0.0:8081"), ("SWITCHBOARD_HTTP__OPS_LISTEN", "0.0.0.0:8081")],
        )
        .expect("parses");
        let error = same.validate_for(Service::Api).expect_err("metrics would be on the public port");
        assert!(error.to_string().contains("SWITCHBOARD_HTTP__OPS_LISTEN"), "{error}");
        assert!(
            same.validate_for(Service::Calllog).is_ok(),
            "a consumer's one port serves its ops endpoints"
        );
        assert_eq!(settings.kafka.client["linger.ms"], "1");
        let error = Settings::from_vars(&[], [("SWITCHBOARD_KAFKA__PARTITON", "3")]).expect_err("a typo");
        assert!(error.to_string().contains("partiton"), "the error names the key: {error}");
        assert!(Settings::from_vars(&[], [("SWITCHBOARD_KAFKA__PARTITIONS", "many")]).is_err());
        assert!(Settings::from_vars(&[], [("SWITCHBOARD_NOSECTION", "1")]).is_err());
        // The command line's own token is not configuration, and not refused as unknown.
        assert!(Settings::from_vars(&[], [("SWITCHBOARD_API_TOKEN", "t0ken")]).is_ok());
        assert!(Settings::from_vars(&[], [("SWITCHBOARD_API_TOKENS", "t0ken")]).is_err(), "only that name");
    }

    #[test]
    fn env_keys_list_every_setting() {
        let keys = Settings::env_keys(&[]);
        for key in [
            "SWITCHBOARD_CONFIG",
            "SWITCHBOARD_KAFKA__BROKERS",
            "SWITCHBOARD_KAFKA__CLIENT__",
            "SWITCHBOARD_HTTP__LISTEN",
            "SWITCHBOARD_HTTP__OPS_LISTEN",
            "SWITCHBOARD_PIPELINE__MAX_IN_FLIGHT",
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
            assert!(Settings::from_vars(&[], [(key.as_str(), text.as_str())]).is_ok(), "{key}={text}");
        }
    }

    #[test]
    fn short_and_placeholder_tokens_and_keys_are_refused() {
        let long = "x".repeat(MIN_LINK_KEY_BYTES);
        for key in [
            "SWITCHBOARD_API__TOKENS",
            "SWITCHBOARD_SOURCES__SECRETS_KEY",
            "SWITCHBOARD_SOURCES__PREVIOUS_SECRETS_KEY",
            "SWITCHBOARD_TOY__KEY",
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
                let error = Settings::from_vars(TOY, [(key, value(bad))]).expect_err(bad).to_string();
                assert!(error.contains(why), "{key}={bad}: {error}");
                assert!(!error.contains(bad), "the error does not repeat the secret: {error}");
            }
            assert!(
                Settings::from_vars(TOY, [(key, value(&long))]).is_ok(),
                "{key}: 32 random bytes are fine"
            );
        }
    }

    /// A service's own section, as a service crate defines one.
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Toy {
        #[serde(deserialize_with = "scalar_as_string")]
        target: String,
        limit: u32,
        #[serde(deserialize_with = "secret_scalar")]
        key: Secret,
    }

    impl Section for Toy {
        const NAME: &'static str = "toy";
        fn validate(&self, shared: &Settings) -> Result<(), String> {
            match self.limit > shared.kafka.partitions.unsigned_abs() {
                true => Err("limit must be at most kafka.partitions".into()),
                false => Ok(()),
            }
        }
        fn secrets(&self) -> Vec<(&'static str, &Secret)> {
            vec![("key", &self.key)]
        }
        fn required(&self) -> Result<(), String> {
            match self.key.is_empty() {
                true => Err("key (SWITCHBOARD_TOY__KEY) must be set".into()),
                false => Ok(()),
            }
        }
    }

    const TOY: &[SectionInfo] = &[SectionInfo::of::<Toy>()];

    #[test]
    fn a_services_section_is_read_checked_and_only_known_sections_are_taken() {
        let key = "k".repeat(MIN_LINK_KEY_BYTES);
        let vars = [
            ("SWITCHBOARD_TOY__TARGET", "700"),
            ("SWITCHBOARD_TOY__LIMIT", "3"),
            ("SWITCHBOARD_TOY__KEY", &key),
        ];
        let settings = Settings::from_vars(TOY, vars).expect("valid");
        let toy: Toy = settings.section().expect("typed");
        assert_eq!((toy.target.as_str(), toy.limit), ("700", 3), "an extension that looks like a number");
        assert!(!format!("{settings:?}").contains(&key), "a section's keys never show in Debug output");
        assert!(settings.own_section::<Toy>(Service::Calllog).is_ok());
        let defaults = Settings::from_vars(TOY, Vec::<(String, String)>::new()).expect("defaults");
        let error = defaults.own_section::<Toy>(Service::Calllog).expect_err("the key is required to start");
        assert!(error.to_string().contains("toy.key (SWITCHBOARD_TOY__KEY)"), "{error}");
        let error =
            Settings::from_vars(TOY, [("SWITCHBOARD_TOY__LIMIT", "5")]).expect_err("checked").to_string();
        assert!(error.contains("toy.limit must be at most"), "{error}");
        let error = Settings::from_vars(TOY, [("SWITCHBOARD_TOY__LIMIT", "many")]).expect_err("a word");
        assert!(error.to_string().contains("toy.limit (SWITCHBOARD_TOY__LIMIT): invalid type"), "{error}");
        let error =
            Settings::from_vars(TOY, [("SWITCHBOARD_TOY__LIMT", "1")]).expect_err("a typo").to_string();
        assert!(error.contains("limt"), "{error}");
        let error = Settings::from_vars(&[], [("SWITCHBOARD_TOY__LIMIT", "1")]).expect_err("no such section");
        assert!(error.to_string().contains("unknown section \"toy\""), "{error}");
        assert!(Settings::env_keys(TOY).iter().any(|k| k == "SWITCHBOARD_TOY__LIMIT"));
        // From a TOML file too, the environment winning over it.
        let file = std::env::temp_dir().join(format!("sb-config-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&file, "[toy]\ntarget = 800\nlimit = 2\n").expect("write config");
        let env = EnvVars::new([("SWITCHBOARD_TOY__LIMIT".to_owned(), "1".to_owned())]);
        let loaded = Settings::load_from(Some(file.clone()), env, TOY);
        let _ = std::fs::remove_file(file);
        let toy: Toy = loaded.expect("valid").section().expect("typed");
        assert_eq!((toy.target.as_str(), toy.limit), ("800", 1));
        let mut set = Settings::default();
        set.set_section(&Toy { limit: 2, ..Toy::default() }).expect("set");
        assert_eq!(set.section::<Toy>().expect("typed").limit, 2);
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
