//! The services as the `switchboard` binary runs them, in one list ([`SERVICES`]): for each, its
//! own settings section, its metrics and its entry point. The binary runs services from it, and
//! the tests check deployment files against what it derives: every settings section (so that a
//! misspelt one is refused and each is checked before any port is bound) and the catalogue of
//! every metric.
//!
//! Adding a service: its library crate (with `run`, and `settings.rs` and `metrics.rs` of its
//! own), a variant in `switchboard_core::topology::Service` (name, ports; the command line
//! follows from it), and one entry here.

use std::future::Future;
use std::pin::Pin;

use switchboard_core::config::{ConfigError, SectionInfo, Service, Settings};
use switchboard_core::metrics::{self, MetricInfo};
use switchboard_core::service::ServiceError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running service: done when it stopped, after draining, or failed.
pub type Running = Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send>>;

/// One service as the binary runs it.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub service: Service,
    /// Its own section of the configuration, if it has one.
    pub section: Option<SectionInfo>,
    /// Its own metrics (the shared ones are `switchboard_core::metrics`'s).
    pub metrics: fn() -> Vec<MetricInfo>,
    /// Runs it on `listener` (its public port, or its one port) until `cancel`.
    pub run: fn(Settings, TcpListener, CancellationToken) -> Running,
}

/// Every service, in the pipeline's order (`Service::ALL`'s).
pub const SERVICES: [Entry; 9] = [
    Entry {
        service: Service::Ingress,
        section: Some(SectionInfo::of::<switchboard_ingress::IngressSettings>()),
        metrics: switchboard_ingress::metrics::catalogue,
        run: |settings, listener, cancel| Box::pin(switchboard_ingress::run(settings, listener, cancel)),
    },
    Entry {
        service: Service::Normalizer,
        section: None,
        metrics: switchboard_normalizer::metrics::catalogue,
        run: |settings, listener, cancel| Box::pin(switchboard_normalizer::run(settings, listener, cancel)),
    },
    Entry {
        service: Service::Matcher,
        section: None,
        metrics: switchboard_matcher::metrics::catalogue,
        run: |settings, listener, cancel| Box::pin(switchboard_matcher::run(settings, listener, cancel)),
    },
    Entry {
        service: Service::Recordings,
        section: Some(SectionInfo::of::<switchboard_recordings::RecordingsSettings>()),
        metrics: switchboard_recordings::metrics::catalogue,
        run: |settings, listener, cancel| Box::pin(switchboard_recordings::run(settings, listener, cancel)),
    },
    Entry {
        service: Service::Calllog,
        section: Some(SectionInfo::of::<switchboard_calllog::CalllogSettings>()),
        metrics: switchboard_calllog::metrics::catalogue,
        run: |settings, listener, cancel| Box::pin(switchboard_calllog::run(settings, listener, cancel)),
    },
    Entry {
        service: Service::Api,
        // It reads `[recordings]` (the link key), checked as the recordings entry's section.
        section: None,
        metrics: switchboard_api::metrics::catalogue,
        run: |settings, listener, cancel| Box::pin(switchboard_api::run(settings, listener, cancel)),
    },
    Entry {
        service: Service::Router,
        section: Some(SectionInfo::of::<switchboard_router::RouterSettings>()),
        metrics: switchboard_router::metrics::catalogue,
        run: |settings, listener, cancel| Box::pin(switchboard_router::run(settings, listener, cancel)),
    },
    Entry {
        service: Service::Dispatcher,
        section: Some(SectionInfo::of::<switchboard_dispatcher::DispatcherSettings>()),
        metrics: switchboard_dispatcher::metrics::catalogue,
        run: |settings, listener, cancel| Box::pin(switchboard_dispatcher::run(settings, listener, cancel)),
    },
    Entry {
        service: Service::Desk,
        section: Some(SectionInfo::of::<switchboard_desk::DeskSettings>()),
        metrics: switchboard_desk::metrics::catalogue,
        run: |settings, listener, cancel| Box::pin(switchboard_desk::run(settings, listener, cancel)),
    },
];

/// The entry of `service`.
pub fn entry(service: Service) -> Option<&'static Entry> {
    SERVICES.iter().find(|e| e.service == service)
}

/// Every service's own settings section.
pub fn sections() -> Vec<SectionInfo> {
    SERVICES.iter().filter_map(|e| e.section).collect()
}

/// Every metric Switchboard defines, the shared ones, the directory's (which several services
/// observe) and each service's own, whether or not this process has observed them: what
/// `docs/metrics.md`, the alert rules and the dashboard are checked against.
pub fn catalogue() -> Vec<MetricInfo> {
    let mut all = [metrics::shared_catalogue(), switchboard_directory::metrics::catalogue()].concat();
    all.extend(SERVICES.iter().flat_map(|e| (e.metrics)()));
    all
}

/// The settings from defaults, the file and the environment, every section checked.
pub fn load() -> Result<Settings, ConfigError> {
    Settings::load(&sections())
}

/// The settings a deployment manifest's environment `vars` would give, every section checked.
pub fn from_vars<K: AsRef<str>, V: AsRef<str>>(
    vars: impl IntoIterator<Item = (K, V)>,
) -> Result<Settings, ConfigError> {
    Settings::from_vars(&sections(), vars)
}

/// Every `SWITCHBOARD_…` variable the configuration reads.
pub fn env_keys() -> Vec<String> {
    Settings::env_keys(&sections())
}

/// What `service` needs to start beyond valid settings: what every service needs, then its own
/// section's needs (a key it cannot run without).
pub fn check_start(settings: &Settings, service: Service) -> Result<(), ConfigError> {
    settings.validate_for(service)?;
    entry(service).and_then(|e| e.section).map_or(Ok(()), |section| section.check_required(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_one_entry_and_its_section_its_name() {
        let listed: Vec<Service> = SERVICES.iter().map(|e| e.service).collect();
        assert_eq!(listed, Service::ALL, "one entry per service, in the pipeline's order");
        for entry in SERVICES {
            if let Some(section) = entry.section {
                assert_eq!(section.name, entry.service.name(), "a section is named after its service");
            }
        }
        let defaults = from_vars(Vec::<(String, String)>::new()).expect("the defaults are valid");
        assert!(check_start(&defaults, Service::Normalizer).is_ok(), "a stage that reads no secret");
        for service in [Service::Recordings, Service::Dispatcher, Service::Desk, Service::Router] {
            let error = check_start(&defaults, service).expect_err("a key of its own").to_string();
            assert!(
                error.starts_with(&format!("invalid configuration: {}.", service.name()))
                    || error.contains("sources.secrets_key"),
                "{error}"
            );
        }
        assert!(env_keys().iter().any(|k| k == "SWITCHBOARD_CALLLOG__BATCH_LINGER_MS"));
        assert!(from_vars([("SWITCHBOARD_CALLOG__BATCH_MAX", "5")]).is_err(), "a misspelt section");
    }

    #[test]
    fn each_crates_catalogue_lists_every_metric_it_defines_once() {
        let crates = [
            (include_str!("../../../libs/core/src/metrics.rs"), metrics::shared_catalogue()),
            (include_str!("../../ingress/src/metrics.rs"), switchboard_ingress::metrics::catalogue()),
            (include_str!("../../normalizer/src/metrics.rs"), switchboard_normalizer::metrics::catalogue()),
            (include_str!("../../matcher/src/metrics.rs"), switchboard_matcher::metrics::catalogue()),
            (
                include_str!("../../../libs/directory/src/metrics.rs"),
                switchboard_directory::metrics::catalogue(),
            ),
            (include_str!("../../router/src/metrics.rs"), switchboard_router::metrics::catalogue()),
            (include_str!("../../recordings/src/metrics.rs"), switchboard_recordings::metrics::catalogue()),
            (include_str!("../../calllog/src/metrics.rs"), switchboard_calllog::metrics::catalogue()),
            (include_str!("../../api/src/metrics.rs"), switchboard_api::metrics::catalogue()),
            (include_str!("../../dispatcher/src/metrics.rs"), switchboard_dispatcher::metrics::catalogue()),
            (include_str!("../../desk/src/metrics.rs"), switchboard_desk::metrics::catalogue()),
        ];
        for (source, catalogue) in &crates {
            assert_eq!(metrics::catalogue_problem(source, catalogue), None);
        }
        assert_eq!(
            crates.iter().map(|(_, c)| c.len()).sum::<usize>(),
            catalogue().len(),
            "each crate joined"
        );
        let (source, shared) = &crates[0];
        let twice = [shared.clone(), shared.clone()].concat();
        assert!(metrics::catalogue_problem(source, &twice).is_some(), "the check can fail");
    }

    #[test]
    fn the_catalogue_names_each_metric_once() {
        let catalogue = catalogue();
        let names: std::collections::BTreeSet<&str> = catalogue.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names.len(), catalogue.len(), "two crates define a metric of the same name");
        assert!(names.contains("switchboard_calllog_rows_total") && names.contains("switchboard_ready"));
    }
}
