//! The desk's own section of the configuration: `[desk]`, `SWITCHBOARD_DESK__…`.

use serde::{Deserialize, Serialize};
use switchboard_core::config::{Section, Settings, require_key};
use switchboard_core::model::Secret;

/// The agent's desk (the desk service): sessions, the notification stream, the panel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeskSettings {
    /// Key from which session tokens are derived (HMAC-SHA256 of the session id), at least 32
    /// bytes; the desk refuses to start without it. Only token hashes are stored, so a copy of
    /// the database alone gives no usable token; changing the key invalidates every session.
    #[serde(deserialize_with = "switchboard_core::config::secret_scalar")]
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

impl Section for DeskSettings {
    const NAME: &'static str = "desk";

    fn validate(&self, _shared: &Settings) -> Result<(), String> {
        if !(60..=30 * 86_400).contains(&self.session_ttl_secs) {
            return Err("session_ttl_secs must be 60..=2592000".into());
        }
        if !(1..=100_000).contains(&self.resume_window) || self.max_streams == 0 || self.stream_queue == 0 {
            return Err("resume_window must be 1..=100000, max_streams and stream_queue at least 1".into());
        }
        if !(1..=300).contains(&self.keepalive_secs) || self.max_tracked_calls < 100 {
            return Err("keepalive_secs must be 1..=300 and max_tracked_calls at least 100".into());
        }
        if self.frame_ancestors.trim().is_empty() || self.frame_ancestors.contains([';', ',', '\n', '\r']) {
            return Err("frame_ancestors must be CSP sources separated by spaces".into());
        }
        Ok(())
    }

    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        vec![("token_key", &self.token_key)]
    }

    fn required(&self) -> Result<(), String> {
        require_key::<Self>("token_key", &self.token_key)
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::config::Settings;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<DeskSettings, switchboard_core::config::ConfigError> {
        Settings::section_from_vars(vars.iter().copied())
    }

    #[test]
    fn desk_settings_are_validated_and_the_key_is_required_to_start() {
        let key = "a-desk-token-key-of-at-least-32-bytes!";
        let settings = load(&[("SWITCHBOARD_DESK__TOKEN_KEY", key)]).expect("valid");
        assert!(settings.required().is_ok() && !format!("{settings:?}").contains(key));
        assert!(DeskSettings::default().required().is_err());
        for bad in [
            ("SWITCHBOARD_DESK__TOKEN_KEY", "CHANGE_ME_0123456789abcdef0123456789abcdef"),
            ("SWITCHBOARD_DESK__SESSION_TTL_SECS", "1"),
            ("SWITCHBOARD_DESK__MAX_STREAMS", "0"),
            ("SWITCHBOARD_DESK__FRAME_ANCESTORS", "https://a.example; script-src *"),
        ] {
            assert!(load(&[bad]).is_err(), "{bad:?}");
        }
    }
}
