//! Ingress's own section of the configuration: `[ingress]`, `SWITCHBOARD_INGRESS__…`.

use serde::{Deserialize, Serialize};
use switchboard_core::config::{Section, Settings};
use switchboard_core::topology::MAX_RECORD_BYTES;

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

impl Section for IngressSettings {
    const NAME: &'static str = "ingress";

    fn validate(&self, _shared: &Settings) -> Result<(), String> {
        // The raw record adds kept headers (at most 128 KiB), a query string (at most 8 KiB) and
        // metadata to the body; keep room for them.
        let max_body = MAX_RECORD_BYTES - 256 * 1024;
        if !(1024..=max_body).contains(&self.max_body_bytes) {
            return Err(format!("max_body_bytes must be between 1024 and {max_body}"));
        }
        if self.sources_refresh_ms < 100 {
            return Err("sources_refresh_ms must be at least 100".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::config::Settings;

    use super::*;

    #[test]
    fn ingress_settings_leave_room_in_a_record_for_the_headers() {
        let load = |vars: &[(&str, &str)]| {
            Settings::section_from_vars::<IngressSettings, _, _>(vars.iter().copied())
        };
        assert!(load(&[]).is_ok());
        assert!(load(&[("SWITCHBOARD_INGRESS__MAX_BODY_BYTES", "2097152")]).is_err());
        assert!(load(&[("SWITCHBOARD_INGRESS__SOURCES_REFRESH_MS", "1")]).is_err());
    }
}
