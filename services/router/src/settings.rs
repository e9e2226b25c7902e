//! The router's own section of the configuration: `[router]`, `SWITCHBOARD_ROUTER__…`.

use serde::{Deserialize, Serialize};
use switchboard_core::config::{Section, Settings};
use switchboard_core::model::{Region, Secret};

/// The IVR routing lookup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSettings {
    /// Name of the Telphin `SetVar` variable that carries the extension.
    #[serde(deserialize_with = "switchboard_core::config::scalar_as_string")]
    pub telphin_variable: String,
    /// Where a call goes when no responsible agent is known (unknown caller, no agent, lookup
    /// failure): for example a queue's extension. Empty means "no transfer".
    #[serde(deserialize_with = "switchboard_core::config::scalar_as_string")]
    pub fallback: String,
    /// Where a blacklisted caller goes instead of an agent: for example an extension that plays a
    /// message and hangs up. Empty means the PBX's own refusal (Telphin `<Hangup/>`, Zadarma's
    /// `"blacklist"` scenario, JSON `"action": "reject"`).
    #[serde(deserialize_with = "switchboard_core::config::scalar_as_string")]
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

impl Section for RouterSettings {
    const NAME: &'static str = "router";

    fn validate(&self, _shared: &Settings) -> Result<(), String> {
        if self.region.parse::<Region>().is_err() {
            return Err(format!("region {:?} is not an ISO 3166 alpha-2 code", self.region));
        }
        if !(10..=10_000).contains(&self.lookup_timeout_ms) {
            return Err("lookup_timeout_ms must be 10..=10000".into());
        }
        let xml_name = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !xml_name(&self.telphin_variable) {
            return Err("telphin_variable must be letters, digits and _".into());
        }
        // A PBX takes it as an extension or scenario id: short, one word, printable.
        let target = &self.blacklist_target;
        if target.chars().count() > 64 || target.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("blacklist_target must be at most 64 characters, without spaces".into());
        }
        Ok(())
    }

    fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        self.lookup_tokens.iter().map(|t| ("lookup_tokens", t)).collect()
    }

    fn required(&self) -> Result<(), String> {
        if self.lookup_tokens.is_empty() && !self.open_lookups {
            return Err(
                "lookup_tokens (SWITCHBOARD_ROUTER__LOOKUP_TOKENS) is empty: set tokens for the PBXs' \
                 lookups, or SWITCHBOARD_ROUTER__OPEN_LOOKUPS=true where only the PBX reaches the router"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::config::Settings;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<RouterSettings, switchboard_core::config::ConfigError> {
        Settings::section_from_vars(vars.iter().copied())
    }

    #[test]
    fn router_settings_take_numeric_extensions_and_are_validated() {
        let settings = load(&[("SWITCHBOARD_ROUTER__FALLBACK", "700"), ("SWITCHBOARD_ROUTER__REGION", "RU")]);
        assert_eq!(settings.expect("valid").fallback, "700", "an extension that looks like a number");
        assert!(load(&[("SWITCHBOARD_ROUTER__REGION", "XX")]).is_err());
        assert!(load(&[("SWITCHBOARD_ROUTER__TELPHIN_VARIABLE", "a b")]).is_err());
        assert!(load(&[("SWITCHBOARD_ROUTER__LOOKUP_TIMEOUT_MS", "1")]).is_err());
        let target = load(&[("SWITCHBOARD_ROUTER__BLACKLIST_TARGET", "800")]).expect("valid");
        assert_eq!(target.blacklist_target, "800", "an extension that looks like a number");
        assert!(load(&[("SWITCHBOARD_ROUTER__BLACKLIST_TARGET", "8 00")]).is_err());
        assert!(load(&[("SWITCHBOARD_ROUTER__BLACKLIST_TARGET", &"x".repeat(65))]).is_err());
        let token = "[\"pbx-secret-0123456789abcdef-0123456789\"]";
        let with_token = load(&[("SWITCHBOARD_ROUTER__LOOKUP_TOKENS", token)]).expect("valid");
        assert!(!format!("{with_token:?}").contains("pbx-secret"), "tokens never show in Debug output");
        assert!(with_token.required().is_ok());
        let error = load(&[("SWITCHBOARD_ROUTER__LOOKUP_TOKENS", "[\"short\"]")]).expect_err("short");
        assert!(
            error.to_string().contains("router.lookup_tokens: each must be at least 32 bytes"),
            "{error}"
        );
        assert!(RouterSettings::default().required().is_err(), "no tokens and lookups not open");
        let open = RouterSettings { open_lookups: true, ..RouterSettings::default() };
        assert!(open.required().is_ok());
    }
}
