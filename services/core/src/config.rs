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

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The services a `switchboard` process can be. Each runs as its own process so that each stage
/// scales on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Ingress,
    Normalizer,
    Matcher,
    Recordings,
    Calllog,
}

impl Service {
    pub const ALL: [Service; 5] =
        [Service::Ingress, Service::Normalizer, Service::Matcher, Service::Recordings, Service::Calllog];

    pub fn name(self) -> &'static str {
        match self {
            Service::Ingress => "ingress",
            Service::Normalizer => "normalizer",
            Service::Matcher => "matcher",
            Service::Recordings => "recordings",
            Service::Calllog => "calllog",
        }
    }

    /// Default HTTP port: ingress takes webhooks on 8080; consumers serve only their metrics and
    /// probes, on 9101 upwards.
    pub fn default_port(self) -> u16 {
        match self {
            Service::Ingress => 8080,
            Service::Normalizer => 9101,
            Service::Matcher => 9102,
            Service::Recordings => 9103,
            Service::Calllog => 9104,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub postgres: PostgresSettings,
    pub http: HttpSettings,
    pub ingress: IngressSettings,
    pub pipeline: PipelineSettings,
    pub calllog: CalllogSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Every topic of the pipeline (`schemas/README.md` has key, schema and wire format of each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Raw webhooks, as received (ingress → normalizer).
    pub raw: String,
    /// Normalised call events (normalizer → matcher).
    pub normalized: String,
    /// Call events with agent and customer matched (matcher → recordings).
    pub matched: String,
    /// Fully enriched call events (recordings → calllog, and CRM subscribers).
    pub enriched: String,
    /// Records a stage could not process, with the reason.
    pub dead_letter: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            raw: format!("{prefix}raw"),
            normalized: format!("{prefix}normalized"),
            matched: format!("{prefix}matched"),
            enriched: format!("{prefix}enriched"),
            dead_letter: format!("{prefix}deadletter"),
        }
    }

    pub fn all(&self) -> [&str; 5] {
        [&self.raw, &self.normalized, &self.matched, &self.enriched, &self.dead_letter]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    pub url: String,
    pub pool_size: usize,
    /// Create the database named in `url` when it does not exist (needs CREATEDB).
    pub create_database: bool,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/switchboard".into(),
            pool_size: 8,
            create_database: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Where the service listens; defaults to 0.0.0.0 on the service's own port.
    pub listen: Option<SocketAddr>,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain_timeout_ms: Option<u64>,
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
}

impl Default for CalllogSettings {
    fn default() -> Self {
        Self { batch_max: 1_000, batch_linger_ms: 20 }
    }
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
        Self::load_from(file, Env::prefixed("SWITCHBOARD_").split("__"))
    }

    fn load_from(file: Option<PathBuf>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!("config file {} not found", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        // `SWITCHBOARD_CONFIG` names the file; it is not a setting.
        let env = env.ignore(&["config"]);
        let mut settings: Settings = figment.merge(env).extract().map_err(Box::new)?;
        settings.kafka.client = std::mem::take(&mut settings.kafka.client)
            .into_iter()
            .map(|(key, value)| (key.replace('_', "."), value))
            .collect();
        settings.validate()?;
        Ok(settings)
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
        if self.kafka.heartbeat_interval_ms * 3 > self.kafka.session_timeout_ms {
            return fail("kafka.heartbeat_interval_ms must be at most a third of session_timeout_ms".into());
        }
        if let Err(e) = tokio_postgres::Config::from_str(&self.postgres.url) {
            return fail(format!("postgres.url does not parse: {e}"));
        }
        if self.postgres.pool_size == 0 {
            return fail("postgres.pool_size must be at least 1".into());
        }
        // The raw record adds kept headers (at most 128 KiB), a query string (at most 8 KiB) and
        // metadata to the body; keep room for them.
        let max_body = crate::kafka::MAX_RECORD_BYTES - 256 * 1024;
        if !(1024..=max_body).contains(&self.ingress.max_body_bytes) {
            return fail(format!("ingress.max_body_bytes must be between 1024 and {max_body}"));
        }
        if self.ingress.sources_refresh_ms < 100 {
            return fail("ingress.sources_refresh_ms must be at least 100".into());
        }
        if self.pipeline.max_backoff_ms < 100 {
            return fail("pipeline.max_backoff_ms must be at least 100".into());
        }
        if self.pipeline.max_in_flight == 0 || self.calllog.batch_max == 0 {
            return fail("pipeline.max_in_flight and calllog.batch_max must be at least 1".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return fail(format!("log.format must be text or json, got {:?}", self.log.format));
        }
        Ok(())
    }

    pub fn listen_addr(&self, service: Service) -> SocketAddr {
        self.http.listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], service.default_port())))
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
        let result = Settings::load_from(Some(file.clone()), Env::prefixed("SWITCHBOARD_UNSET_"));
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
