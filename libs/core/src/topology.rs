//! The pipeline's shape, and nothing else: which services exist, which topics connect them, how
//! large a record may be. It imports nothing, so that configuration, Kafka plumbing, metrics and
//! the binary's command line can all refer to it without referring to each other.

/// Largest record Switchboard writes. A raw webhook is the body (capped at 1 MiB by default) plus
/// its headers and metadata, which is more than Kafka's 1 MB default; topics are created with
/// a matching `max.message.bytes`, and the brokers' `message.max.bytes` takes it
/// (`deploy/kafka/server.properties`).
pub const MAX_RECORD_BYTES: usize = 2 * 1024 * 1024;

/// The services a `switchboard` process can be. Each runs as its own process so that each stage
/// scales on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Ingress,
    Normalizer,
    Matcher,
    Recordings,
    Calllog,
    /// The HTTP API CRMs and operators call: call-log queries.
    Api,
    /// Synchronous lookups for PBX IVRs ("which extension owns this caller?") and the directory
    /// admin API.
    Router,
    /// Outbound delivery of calls and call events to CRMs (delivery profiles), with its own
    /// HTTP API for the profiles and deliveries.
    Dispatcher,
    /// The agent's desk: agent sessions, real-time call notifications (WebSocket, Server-Sent
    /// Events), screen-pop, agent status, the JS SDK and the agent panel.
    Desk,
}

impl Service {
    pub const ALL: [Service; 9] = [
        Service::Ingress,
        Service::Normalizer,
        Service::Matcher,
        Service::Recordings,
        Service::Calllog,
        Service::Api,
        Service::Router,
        Service::Dispatcher,
        Service::Desk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Ingress => "ingress",
            Service::Normalizer => "normalizer",
            Service::Matcher => "matcher",
            Service::Recordings => "recordings",
            Service::Calllog => "calllog",
            Service::Api => "api",
            Service::Router => "router",
            Service::Dispatcher => "dispatcher",
            Service::Desk => "desk",
        }
    }

    /// What the service does, in one line: the binary's `--help` for `switchboard <name>`.
    pub fn about(self) -> &'static str {
        match self {
            Service::Ingress => "Accept PBX webhooks and publish them to Kafka",
            Service::Normalizer => "Read raw webhooks into call events",
            Service::Matcher => "Match agents and customers",
            Service::Recordings => "Attach recording links",
            Service::Calllog => "Write the call log to PostgreSQL",
            Service::Api => "Answer call-log queries over HTTP (the query API)",
            Service::Router => "Answer IVR routing lookups and serve the directory admin API",
            Service::Dispatcher => "Deliver calls to CRMs per delivery profile, and serve the profiles API",
            Service::Desk => {
                "Notify agents of their calls in the browser: sessions, stream, screen-pop, SDK, panel"
            }
        }
    }

    /// The service called `name`, as on the command line.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the service reads a Kafka topic in a consumer group, and so scales by partitions
    /// (the others are HTTP services that scale behind a load balancer).
    pub fn is_consumer(self) -> bool {
        matches!(
            self,
            Service::Normalizer
                | Service::Matcher
                | Service::Recordings
                | Service::Calllog
                | Service::Dispatcher
        )
    }

    /// Whether the service reads topics, and so reports its consumer group's lag: the consumer
    /// stages, and the desk, whose replicas each read in a group of their own (broadcast).
    pub fn reads_topics(self) -> bool {
        self.is_consumer() || self == Service::Desk
    }

    /// Whether the service answers requests from outside (PBXs, CRMs, browsers) on a public port,
    /// and so keeps its ops endpoints on a port of their own; the other consumers have one port.
    pub fn has_public_port(self) -> bool {
        !matches!(self, Service::Normalizer | Service::Matcher | Service::Recordings | Service::Calllog)
    }

    /// Default port of the ops endpoints (`/metrics`, `/healthz`, `/readyz`). Every service with a
    /// public port serves them on a port of its own, so that what PBXs, CRMs and browsers reach
    /// shows no metrics: ingress 9100, the dispatcher 9105, the desk 9106, the api 9107, the
    /// router 9108; the consumers serve them on their one port.
    pub fn default_ops_port(self) -> u16 {
        match self {
            Service::Ingress => 9100,
            Service::Dispatcher => 9105,
            Service::Desk => 9106,
            Service::Api => 9107,
            Service::Router => 9108,
            other => other.default_port(),
        }
    }

    /// Default HTTP port: ingress takes webhooks on 8080, the API answers on 8081 and the router
    /// on 8082; consumers serve only their metrics and probes, on 9101 upwards.
    pub fn default_port(self) -> u16 {
        match self {
            Service::Ingress => 8080,
            Service::Normalizer => 9101,
            Service::Matcher => 9102,
            Service::Recordings => 9103,
            Service::Calllog => 9104,
            Service::Api => 8081,
            Service::Router => 8082,
            Service::Dispatcher => 8083,
            Service::Desk => 8084,
        }
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
    /// Call records (one per call, re-published on every change), keyed by call: what CRMs
    /// subscribe to for the call log.
    pub calls: String,
    /// Agent status changes (available, break, offline), keyed by agent: the desk writes them
    /// and every desk replica reads them to tell supervisors.
    pub agent_status: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            raw: format!("{prefix}raw"),
            normalized: format!("{prefix}normalized"),
            matched: format!("{prefix}matched"),
            enriched: format!("{prefix}enriched"),
            dead_letter: format!("{prefix}deadletter"),
            calls: format!("{prefix}calls"),
            agent_status: format!("{prefix}agent-status"),
        }
    }

    pub fn all(&self) -> [&str; 7] {
        [
            &self.raw,
            &self.normalized,
            &self.matched,
            &self.enriched,
            &self.dead_letter,
            &self.calls,
            &self.agent_status,
        ]
    }
}
