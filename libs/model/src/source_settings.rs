//! Per-source settings: what each source's row stores as JSON beside its credentials
//! (`switchboard sources add --settings`), read by ingress (authentication), the recordings stage
//! (the vendor's recording API) and click-to-call (the vendor's call API). Here, in the model, so
//! that each of them reads one type without depending on the others.

use serde::Deserialize;

use crate::Secret;

/// Per-source settings, stored as JSON with the source (`switchboard sources add --settings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// The exact URL the vendor is configured to call, without the query (Twilio signs it, and
    /// behind a proxy it differs from what ingress sees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// The vendor's account key that travels with each request (Mango `vpbx_api_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// IANA time zone of a PBX that sends local times without an offset (`Europe/Moscow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Let the matcher find this source's agents by email when extension and number do not
    /// match (seed 000's "also match based on the agent's email").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_agent_by_email: Option<bool>,
    /// Base URL of the vendor's API the recordings stage asks for recording links, when it is not
    /// the vendor's public one (a regional endpoint, a sandbox, a proxy): Telphin
    /// `https://apiproxy.telphin.ru/api/ver1.0`, Zadarma `https://api.zadarma.com`, Mango
    /// `https://app.mango-office.ru/vpbx`, Aircall `https://api.aircall.io`, Twilio
    /// `https://api.twilio.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_api_url: Option<String>,
    /// The OAuth2 token endpoint of that API (Telphin:
    /// `https://apiproxy.telphin.ru/oauth/token` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_url: Option<String>,
    /// Who the recordings stage is at the vendor's API: Telphin OAuth client id, Zadarma API
    /// key, Aircall API id, Twilio Account SID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_client_id: Option<String>,
    /// The secret that goes with `api_client_id`: Telphin OAuth client secret, Zadarma API
    /// secret (the signing secret when absent: Zadarma signs webhooks with the same one),
    /// Aircall API token. Stored like the signing secret; never shown by `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_client_secret: Option<Secret>,
    /// Also require the source's generated secret as `?token=` on every request, in addition to
    /// the vendor's own check. Recommended for Zadarma: its signature covers only three fields,
    /// so one captured `NOTIFY_START` would otherwise let anyone mint that call's `NOTIFY_END`
    /// or recording notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_token: Option<bool>,
    /// Base URL of the vendor's call API when it is not the public one (click-to-call; `libs/originate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Click-to-call: the number presented to the destination when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originate_caller_id: Option<String>,
    /// Click-to-call: the dialplan context (Asterisk) or campaign (uContact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originate_context: Option<String>,
    /// Click-to-call: digits the PBX wants before an outside number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_prefix: Option<String>,
    /// Click-to-call: the Telphin extension id whose callback API places calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telphin_extension_id: Option<String>,
    /// Click-to-call: uContact's `outqueue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ucontact_outqueue: Option<String>,
    /// Click-to-call: uContact's `tech` (`SIP` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ucontact_tech: Option<String>,
    /// Click-to-call: the TwiML Twilio fetches for the destination leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twiml_url: Option<String>,
    /// Click-to-call: the Asterisk Manager Interface host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_host: Option<String>,
    /// Click-to-call: its port (5038 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_port: Option<u16>,
    /// Click-to-call: the AMI user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_username: Option<String>,
    /// Click-to-call: the AMI user's secret; never shown by `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_secret: Option<Secret>,
    /// Click-to-call: the agent's channel template (Asterisk, `PJSIP/{extension}` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originate_channel: Option<String>,
}

impl SourceSettings {
    /// Checks values that would otherwise fail only when the first webhook arrives.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(tz) = &self.timezone {
            tz.parse::<chrono_tz::Tz>().map_err(|_| format!("timezone {tz:?} is not an IANA time zone"))?;
        }
        let urls = [
            ("public_url", &self.public_url),
            ("recording_api_url", &self.recording_api_url),
            ("api_token_url", &self.api_token_url),
            ("api_url", &self.api_url),
            ("twiml_url", &self.twiml_url),
        ];
        for (name, url) in urls {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(format!("{name} {url:?} is not an http(s) URL"));
            }
        }
        if self.api_client_id.as_deref().is_some_and(str::is_empty)
            || self.api_client_secret.as_ref().is_some_and(Secret::is_empty)
        {
            return Err("api_client_id and api_client_secret must not be empty".into());
        }
        Ok(())
    }
}
