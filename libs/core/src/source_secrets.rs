//! A PBX source's secrets at rest: its signing secret (Twilio auth token, Zadarma API secret,
//! Mango salt, Aircall token) and its vendor API client secret, sealed together into
//! `sources.secrets_sealed` with `sources.secrets_key` ([`crate::seal`]), so that a database dump
//! or backup holds no PBX credential.
//!
//! Rows written before secrets were sealed (migration 0014 added the column) keep them in the
//! plaintext `signing_secret` column and the settings' `api_client_secret`; they are read as
//! they are until `switchboard sources reseal` seals them and clears the plaintext. The same
//! command seals every source again with a new key during a key rotation (the previous key in
//! `sources.previous_secrets_key` opens the old seals meanwhile).

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::model::Secret;
use crate::seal::{SealError, Sealer};

/// One source's secrets. `Debug` shows none of them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_client_secret: Option<Secret>,
}

impl std::fmt::Debug for SourceSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSecrets")
            .field("signing_secret", &self.signing_secret)
            .field("api_client_secret", &self.api_client_secret)
            .finish()
    }
}

impl SourceSecrets {
    /// The sealed form, for `sources.secrets_sealed`.
    pub fn seal(&self, sealer: &Sealer) -> Result<Vec<u8>, SealError> {
        let plain = serde_json::to_vec(self).map_err(|_| SealError::Open)?;
        sealer.seal(&plain)
    }

    pub fn open(sealer: &Sealer, sealed: &[u8]) -> Result<Self, SealError> {
        serde_json::from_slice(&sealer.open(sealed)?).map_err(|_| SealError::Open)
    }

    /// A `sources` row's secrets: the sealed column when there is one, else what a row written
    /// before secrets were sealed holds in plaintext (its `signing_secret` column and the
    /// settings' `api_client_secret`). The plaintext API secret is taken out of `settings` either
    /// way, so that the settings never carry it: a caller that needs it reads it from here.
    pub fn of_row(
        sealer: &Sealer,
        sealed: Option<&[u8]>,
        plain_signing_secret: Option<String>,
        settings: &mut serde_json::Value,
    ) -> Result<Self, SealError> {
        let plain_api_client_secret = settings
            .as_object_mut()
            .and_then(|map| map.remove("api_client_secret"))
            .and_then(|value| value.as_str().map(Secret::new));
        match sealed {
            Some(sealed) => Self::open(sealer, sealed),
            None => Ok(Self {
                signing_secret: plain_signing_secret.filter(|s| !s.is_empty()).map(Secret::new),
                api_client_secret: plain_api_client_secret.filter(|s| !s.is_empty()),
            }),
        }
    }

    pub fn signing_secret(&self) -> Option<&str> {
        self.signing_secret.as_ref().map(Secret::expose)
    }
}

/// The sealer of the sources' secrets, from `sources.secrets_key` (and the previous key during a
/// rotation).
pub fn sealer(settings: &Settings) -> Result<Sealer, SealError> {
    Sealer::with_previous(
        settings.sources.secrets_key.expose(),
        settings.sources.previous_secrets_key.expose(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a-sources-key-of-at-least-thirty-two-bytes";

    #[test]
    fn sealed_secrets_open_whole_and_old_rows_are_read_in_plaintext() {
        let sealer = Sealer::new(KEY).expect("key");
        let secrets = SourceSecrets {
            signing_secret: Some(Secret::new("twilio-auth-token")),
            api_client_secret: Some(Secret::new("client-secret")),
        };
        let sealed = secrets.seal(&sealer).expect("seal");
        assert!(!String::from_utf8_lossy(&sealed).contains("twilio"), "nothing readable");
        let mut no_settings = serde_json::json!({});
        assert_eq!(
            SourceSecrets::of_row(&sealer, Some(&sealed), None, &mut no_settings).expect("open"),
            secrets
        );
        let mut old_settings =
            serde_json::json!({"api_client_id": "c-1", "api_client_secret": "client-secret"});
        let old = SourceSecrets::of_row(&sealer, None, Some("twilio-auth-token".into()), &mut old_settings)
            .expect("plaintext");
        assert_eq!(old, secrets);
        assert_eq!(
            old_settings,
            serde_json::json!({"api_client_id": "c-1"}),
            "the plaintext leaves the settings"
        );
        assert_eq!(
            SourceSecrets::of_row(&sealer, None, Some(String::new()), &mut no_settings).expect("none"),
            SourceSecrets::default()
        );
        let other = Sealer::new("another-sources-key-of-thirty-two-bytes!").expect("key");
        assert!(
            SourceSecrets::of_row(&other, Some(&sealed), None, &mut no_settings).is_err(),
            "the wrong key opens nothing"
        );
        assert!(!format!("{secrets:?}").contains("twilio"), "Debug shows no secret");
    }
}
