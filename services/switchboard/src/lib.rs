//! What the `switchboard` binary knows of every service, for the binary and for the tests that
//! check deployment files against it: each service's own settings section, and the catalogue of
//! every metric.
//!
//! The services themselves are listed once, in `switchboard_core::topology::Service`; each
//! service crate defines its own section (`switchboard_calllog::CalllogSettings`...), and this
//! list is where the configuration learns which sections exist, so that a misspelt section is
//! refused at start and every section is checked before any port is bound.

use switchboard_core::config::{ConfigError, SectionInfo, Service, Settings};
use switchboard_core::metrics::{self, MetricInfo};

/// Every service's own section of the configuration. A new service with settings of its own
/// adds its section here.
pub const SECTIONS: [SectionInfo; 6] = [
    SectionInfo::of::<switchboard_ingress::IngressSettings>(),
    SectionInfo::of::<switchboard_calllog::CalllogSettings>(),
    SectionInfo::of::<switchboard_recordings::RecordingsSettings>(),
    SectionInfo::of::<switchboard_router::RouterSettings>(),
    SectionInfo::of::<switchboard_dispatcher::DispatcherSettings>(),
    SectionInfo::of::<switchboard_desk::DeskSettings>(),
];

/// Every metric Switchboard defines, the shared ones and each crate's own, whether or not this
/// process has observed them: what `docs/metrics.md`, the alert rules and the dashboard are
/// checked against. A new crate with metrics of its own adds its `catalogue` here.
pub fn catalogue() -> Vec<MetricInfo> {
    [
        metrics::shared_catalogue(),
        switchboard_ingress::metrics::catalogue(),
        switchboard_normalizer::metrics::catalogue(),
        switchboard_matcher::metrics::catalogue(),
        switchboard_directory::metrics::catalogue(),
        switchboard_router::metrics::catalogue(),
        switchboard_recordings::metrics::catalogue(),
        switchboard_calllog::metrics::catalogue(),
        switchboard_api::metrics::catalogue(),
        switchboard_dispatcher::metrics::catalogue(),
        switchboard_desk::metrics::catalogue(),
    ]
    .concat()
}

/// The settings from defaults, the file and the environment, every section checked.
pub fn load() -> Result<Settings, ConfigError> {
    Settings::load(&SECTIONS)
}

/// The settings a deployment manifest's environment `vars` would give, every section checked.
pub fn from_vars<K: AsRef<str>, V: AsRef<str>>(
    vars: impl IntoIterator<Item = (K, V)>,
) -> Result<Settings, ConfigError> {
    Settings::from_vars(&SECTIONS, vars)
}

/// Every `SWITCHBOARD_…` variable the configuration reads.
pub fn env_keys() -> Vec<String> {
    Settings::env_keys(&SECTIONS)
}

/// What `service` needs to start beyond valid settings: what every service needs, then its own
/// section's needs (a key it cannot run without).
pub fn check_start(settings: &Settings, service: Service) -> Result<(), ConfigError> {
    settings.validate_for(service)?;
    SECTIONS.iter().filter(|s| s.name == service.name()).try_for_each(|s| s.check_required(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_is_named_after_its_service_and_listed_once() {
        for section in SECTIONS {
            assert!(Service::named(section.name).is_some(), "{} is no service", section.name);
            assert_eq!(SECTIONS.iter().filter(|s| s.name == section.name).count(), 1, "{}", section.name);
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
