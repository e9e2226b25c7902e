//! A source's settings as they are stored: the `sources.settings` JSON (whose existing names
//! this reuses: `api_key`, `api_client_id`, `api_client_secret`, `api_token_url`,
//! `recording_api_url`) plus the `sources.signing_secret` column.

use serde::{Deserialize, Serialize};
use switchboard_model::Secret;

use crate::OriginateError;

/// What originate reads of a source. Unknown keys (the webhook settings: `public_url`,
/// `timezone`...) are ignored, so the same stored JSON deserialises here as it is. Secrets are
/// [`Secret`]s, masked by `Debug`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorSettings {
    /// Base URL of the vendor's HTTP API when it is not the public one (a sandbox, a proxy, a
    /// test); required for uContact, whose API is the customer's own instance
    /// (`https://<instance>.ucontactcloud.com`). `https://`, or `http://` to a loopback address
    /// only, since credentials travel with every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The recordings stage's base URL of the same API, used when `api_url` is absent (the
    /// bases are the same: Telphin `.../api/ver1.0`, Mango `.../vpbx`, Zadarma, Twilio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_api_url: Option<String>,
    /// Telphin's OAuth2 token endpoint (`https://apiproxy.telphin.ru/oauth/token` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_url: Option<String>,
    /// Mango `vpbx_api_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Telphin OAuth client id, Zadarma API key, Twilio Account SID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_client_id: Option<String>,
    /// Telphin OAuth client secret, Zadarma API secret, Twilio auth token, uContact API token
    /// (what follows `Basic ` in its `Authorization` header). Zadarma and Twilio fall back to
    /// the signing secret, which is the same secret for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_client_secret: Option<Secret>,
    /// Default number presented to the destination when the request names none: Twilio `From`
    /// (required there), uContact `callerid` (the campaign's DID, required there), Mango
    /// `line_number`, Telphin `dst_ani`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originate_caller_id: Option<String>,
    /// Dialplan context the call runs in: uContact `context` (`agents`/`agentes`), Asterisk
    /// `Context` (`from-internal` on FreePBX). Required for both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originate_context: Option<String>,
    /// Digits put before the destination's digits where the PBX's own dialplan dials it
    /// (Telphin, uContact, Asterisk): none by default (international digits, no `+`); `+` keeps
    /// E.164, `00` or `9` suit other dialplans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_prefix: Option<String>,
    /// Telphin: the extension id whose `/callback/` resource places calls when the agent has no
    /// `vendor_id` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telphin_extension_id: Option<String>,
    /// uContact: the manual campaign (`outqueue`) the call is counted in. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ucontact_outqueue: Option<String>,
    /// uContact: the agent phone's technology (`tech`), `SIP` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ucontact_tech: Option<String>,
    /// Twilio: a URL serving the TwiML that connects the agent to the destination, instead of
    /// the inline `<Dial>` Switchboard sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twiml_url: Option<String>,
    /// Asterisk: the AMI host (required) and port (5038 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_port: Option<u16>,
    /// Asterisk: the AMI user (`manager.conf`) and its secret; the user needs the `originate`
    /// (and `call`, for hang-up) write permission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_secret: Option<Secret>,
    /// Asterisk: the agent's channel, `{extension}` replaced (`PJSIP/{extension}` when absent;
    /// `SIP/{extension}`, `Local/{extension}@from-internal`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originate_channel: Option<String>,
    /// The `sources.signing_secret` column (Mango salt, Zadarma secret, Twilio auth token): not
    /// part of the settings JSON; see [`VendorSettings::from_stored`].
    #[serde(skip)]
    pub signing_secret: Option<Secret>,
}

impl VendorSettings {
    /// Reads a source's stored settings JSON and its signing secret column.
    pub fn from_stored(
        settings: &serde_json::Value,
        signing_secret: Option<&str>,
    ) -> Result<Self, serde_json::Error> {
        let mut parsed: VendorSettings = serde_json::from_value(settings.clone())?;
        parsed.signing_secret = signing_secret.filter(|s| !s.is_empty()).map(Secret::new);
        Ok(parsed)
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
    fn stored_settings_are_read_with_unknown_keys_and_the_signing_secret() {
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
