//! The dispatcher's own section of the configuration: `[dispatcher]`, `SWITCHBOARD_DISPATCHER__…`.

use serde::{Deserialize, Serialize};
use switchboard_core::config::{Section, Settings, require_key};
use switchboard_core::model::Secret;

/// Outbound delivery to CRMs (the dispatcher service).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherSettings {
    /// Key that seals the profiles' secrets (signing secrets, tokens) in PostgreSQL, at least 32
    /// bytes; the dispatcher refuses to start without it. Changing it makes the stored profiles
    /// unreadable until they are saved again.
    #[serde(deserialize_with = "switchboard_core::config::secret_scalar")]
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

/// Whether `text` is an IPv4 or IPv6 network (`10.0.0.0/8`) or a bare address; the dispatcher
/// parses it again with its own type, this keeps a typo from starting.
fn is_cidr(text: &str) -> bool {
    let (addr, prefix) = text.trim().split_once('/').map_or((text.trim(), None), |(a, p)| (a, Some(p)));
    let Ok(addr) = addr.parse::<std::net::IpAddr>() else { return false };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|p| p <= max))
}

impl Section for DispatcherSettings {
    const NAME: &'static str = "dispatcher";

    fn validate(&self, _shared: &Settings) -> Result<(), String> {
        if let Some(bad) = self.allow_networks.iter().find(|n| !is_cidr(n)) {
            return Err(format!("allow_networks: {bad:?} is not a CIDR (10.0.0.0/8, fd00::/8)"));
        }
        if self.poll_interval_ms < 10 || self.concurrency == 0 || self.profiles_refresh_ms < 10 {
            return Err(
                "poll_interval_ms and profiles_refresh_ms must be at least 10, concurrency at least 1".into(),
            );
        }
        if !(100..=120_000).contains(&self.attempt_timeout_ms) {
            return Err("attempt_timeout_ms must be 100..=120000".into());
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_response_bytes) {
            return Err("max_response_bytes must be 1024..=16777216".into());
        }
        Ok(())
    }

    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        vec![("secrets_key", &self.secrets_key)]
    }

    fn required(&self) -> Result<(), String> {
        require_key::<Self>("secrets_key", &self.secrets_key)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::config::Settings;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<DispatcherSettings, switchboard_core::config::ConfigError> {
        Settings::section_from_vars(vars.iter().copied())
    }

    #[test]
    fn dispatcher_settings_are_validated_and_the_key_is_required_to_start() {
        let key = "a-dispatcher-secrets-key-of-32-bytes-or-more";
        let settings = load(&[
            ("SWITCHBOARD_DISPATCHER__SECRETS_KEY", key),
            ("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", r#"["10.1.2.0/24", "fd00::/8", "127.0.0.1"]"#),
        ])
        .expect("valid");
        assert_eq!(settings.allow_networks.len(), 3);
        assert!(settings.required().is_ok());
        assert!(!format!("{settings:?}").contains(key), "the key stays out of Debug");
        assert_eq!((settings.attempt_timeout_ms, settings.max_response_bytes), (15_000, 64 * 1024));
        assert!(DispatcherSettings::default().required().is_err());
        assert!(load(&[("SWITCHBOARD_DISPATCHER__SECRETS_KEY", "short")]).is_err());
        assert!(load(&[("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", r#"["10.0.0.0/33"]"#)]).is_err());
        assert!(load(&[("SWITCHBOARD_DISPATCHER__ALLOW_NETWORKS", r#"["office"]"#)]).is_err());
    }
}
