//! The recordings service's own section of the configuration: `[recordings]`, `SWITCHBOARD_RECORDINGS__…`;
//! the api reads it too, to open the links this service signs.

use serde::{Deserialize, Serialize};
use switchboard_core::config::{Section, Settings, require_key};
use switchboard_core::model::Secret;

/// Recording links (the recordings service signs them, the api serves them) and the resolution of
/// vendor recording ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingsSettings {
    /// HMAC-SHA256 key of the links' tokens, at least 32 bytes; the same on the recordings
    /// service and the api. Changing it invalidates every link handed out. The recordings service
    /// refuses to start without one; the api then answers recording links 503.
    #[serde(deserialize_with = "switchboard_core::config::secret_scalar")]
    pub link_key: Secret,
    /// The key before the last rotation, at least 32 bytes when set: links it signed still open
    /// (new ones are signed with `link_key`), so that rotating the key does not break the links
    /// already pasted into CRMs. Keep it until those links expire (`link_ttl_secs`), then unset.
    #[serde(deserialize_with = "switchboard_core::config::secret_scalar")]
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

impl RecordingsSettings {
    /// The base URL of links, without a trailing slash.
    pub fn public_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }
}

impl Section for RecordingsSettings {
    const NAME: &'static str = "recordings";

    fn validate(&self, _shared: &Settings) -> Result<(), String> {
        let url_ok =
            |u: &str| (u.starts_with("https://") || u.starts_with("http://")) && !u.contains(['?', '#', ' ']);
        if !url_ok(&self.public_url) {
            return Err(format!("public_url {:?} is not an http(s) URL", self.public_url));
        }
        if self.link_ttl_secs < 60 {
            return Err("link_ttl_secs must be at least 60".into());
        }
        if !(1..=1000).contains(&self.max_attempts) {
            return Err("max_attempts must be 1..=1000".into());
        }
        if self.retry_initial_ms < 10 || self.retry_max_ms < self.retry_initial_ms {
            return Err(
                "retry_initial_ms must be at least 10 and retry_max_ms at least retry_initial_ms".into()
            );
        }
        if !(100..=120_000).contains(&self.resolve_timeout_ms) {
            return Err("resolve_timeout_ms must be 100..=120000".into());
        }
        if self.poll_interval_ms < 10 || self.concurrency == 0 {
            return Err("poll_interval_ms must be at least 10 and concurrency at least 1".into());
        }
        Ok(())
    }

    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        vec![("link_key", &self.link_key), ("previous_link_key", &self.previous_link_key)]
    }

    fn required(&self) -> Result<(), String> {
        require_key::<Self>("link_key", &self.link_key)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::config::Settings;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<RecordingsSettings, switchboard_core::config::ConfigError> {
        Settings::section_from_vars(vars.iter().copied())
    }

    #[test]
    fn recordings_settings_are_validated_and_the_key_stays_secret() {
        let key = "k".repeat(switchboard_core::config::MIN_LINK_KEY_BYTES);
        let settings = load(&[
            ("SWITCHBOARD_RECORDINGS__LINK_KEY", key.as_str()),
            ("SWITCHBOARD_RECORDINGS__PUBLIC_URL", "https://sb.example.com/"),
            ("SWITCHBOARD_RECORDINGS__MAX_ATTEMPTS", "5"),
        ])
        .expect("valid");
        assert_eq!(settings.link_key.expose(), key);
        assert_eq!(settings.public_url(), "https://sb.example.com");
        assert!(settings.required().is_ok());
        assert!(!format!("{settings:?}").contains(&key), "the key never shows in Debug output");
        let digits = "1".repeat(40);
        let numeric = load(&[("SWITCHBOARD_RECORDINGS__LINK_KEY", digits.as_str())]);
        assert_eq!(numeric.expect("a key of digits").link_key.expose(), digits);
        assert!(RecordingsSettings::default().required().is_err());
        for bad in [
            ("SWITCHBOARD_RECORDINGS__LINK_KEY", "short"),
            ("SWITCHBOARD_RECORDINGS__PREVIOUS_LINK_KEY", "change-me-to-32-random-bytes-or-more-000000"),
            ("SWITCHBOARD_RECORDINGS__PUBLIC_URL", "sb.example.com"),
            ("SWITCHBOARD_RECORDINGS__MAX_ATTEMPTS", "0"),
            ("SWITCHBOARD_RECORDINGS__RETRY_MAX_MS", "5"),
            ("SWITCHBOARD_RECORDINGS__RESOLVE_TIMEOUT_MS", "1"),
            ("SWITCHBOARD_RECORDINGS__CONCURRENCY", "0"),
        ] {
            let error = load(&[bad]).expect_err(bad.0).to_string();
            assert!(error.contains("recordings."), "the error names the setting: {error}");
            assert!(!error.contains("change-me-to"), "and does not repeat a secret: {error}");
        }
    }
}
