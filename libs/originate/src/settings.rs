//! A source's settings as they are stored: the `sources.settings` JSON (whose existing names
//! this reuses: `api_key`, `api_client_id`, `api_client_secret`, `api_token_url`,
//! `recording_api_url`) plus the `sources.signing_secret` column.

use switchboard_model::{Secret, SourceSettings};

use crate::OriginateError;

/// What originate reads of a source: the settings JSON as the source stores it
/// ([`SourceSettings`], the one type ingress and the recordings stage read too), and the
/// `sources.signing_secret` column (Mango salt, Zadarma secret, Twilio auth token), which is not
/// part of that JSON. Reads of the stored fields go through `Deref` (`settings.api_url`). Secrets
/// are [`Secret`]s, masked by `Debug`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorSettings {
    pub stored: SourceSettings,
    pub signing_secret: Option<Secret>,
}

impl std::ops::Deref for VendorSettings {
    type Target = SourceSettings;

    fn deref(&self) -> &SourceSettings {
        &self.stored
    }
}

impl std::ops::DerefMut for VendorSettings {
    fn deref_mut(&mut self) -> &mut SourceSettings {
        &mut self.stored
    }
}

impl VendorSettings {
    /// Reads a source's stored settings JSON and its signing secret column.
    pub fn from_stored(
        settings: &serde_json::Value,
        signing_secret: Option<&str>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            stored: serde_json::from_value(settings.clone())?,
            signing_secret: signing_secret.filter(|s| !s.is_empty()).map(Secret::new),
        })
    }

    /// `api_client_secret`, else the signing secret (Zadarma, Twilio).
    pub(crate) fn secret_or_signing(&self) -> Option<&Secret> {
        self.api_client_secret.as_ref().filter(|s| !s.is_empty()).or(self.signing_secret.as_ref())
    }
}

/// A setting that must be present and not blank.
pub(crate) fn required<'a>(
    value: Option<&'a str>,
    name: &str,
    vendor: &str,
) -> Result<&'a str, OriginateError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| OriginateError::NotConfigured(format!("{vendor} needs the source's {name} setting")))
}

/// A secret that must be present and not empty.
pub(crate) fn required_secret<'a>(
    value: Option<&'a Secret>,
    name: &str,
    vendor: &str,
) -> Result<&'a str, OriginateError> {
    value
        .map(Secret::expose)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OriginateError::NotConfigured(format!("{vendor} needs the source's {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_settings_are_read_whole_with_the_signing_secret() {
        let stored = serde_json::json!({
            "public_url": "https://sb.example.com/v1/webhooks/acme",
            "api_key": "k",
            "api_client_secret": "s3cret",
            "ami_port": 5039,
        });
        let settings = VendorSettings::from_stored(&stored, Some("salt")).expect("settings");
        assert_eq!(settings.api_key.as_deref(), Some("k"));
        assert_eq!(settings.ami_port, Some(5039));
        assert_eq!(settings.signing_secret, Some(Secret::new("salt")));
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("salt"), "{shown}");
    }
}
