//! One file per vendor; here what they share: base URLs, number formats, reading refusals.

pub(crate) mod asterisk;
pub(crate) mod mango;
pub(crate) mod telphin;
pub(crate) mod twilio;
pub(crate) mod ucontact;
pub(crate) mod zadarma;

use http::StatusCode;

use crate::transport::Reply;
use crate::{OriginateError, OriginateRequest, VendorSettings};

/// The base URL of a vendor's HTTP API: `api_url`, else `recording_api_url`, else the vendor's
/// public one (`None`: the vendor has none, the setting is required). No trailing slash.
pub(crate) fn base_url(
    settings: &VendorSettings,
    public: Option<&str>,
    vendor: &str,
) -> Result<String, OriginateError> {
    let configured = [settings.api_url.as_deref(), settings.recording_api_url.as_deref()]
        .into_iter()
        .flatten()
        .find(|url| !url.trim().is_empty());
    configured
        .or(public)
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .ok_or_else(|| OriginateError::NotConfigured(format!("{vendor} needs the source's api_url setting")))
}

/// An E.164 number's digits, without the `+` (international format, as Mango and Zadarma
/// document their examples).
pub(crate) fn digits(e164: &str) -> &str {
    e164.strip_prefix('+').unwrap_or(e164)
}

/// The destination as the PBX's own dialplan dials it: `dial_prefix` and the digits.
pub(crate) fn dialled(settings: &VendorSettings, e164: &str) -> String {
    format!("{}{}", settings.dial_prefix.as_deref().unwrap_or_default(), digits(e164))
}

/// The number to present to the destination: the request's, else the source's default.
pub(crate) fn caller_id<'a>(request: &'a OriginateRequest, settings: &'a VendorSettings) -> Option<&'a str> {
    request.caller_id.as_deref().or(settings.originate_caller_id.as_deref()).filter(|c| !c.trim().is_empty())
}

/// A vendor's answer that is not a success: `5xx`, `429` and `408` mean the vendor could not
/// answer now (unavailable); any other status is its refusal, with `reason`.
pub(crate) fn not_accepted(vendor: &str, reply: &Reply, reason: String) -> OriginateError {
    let status = reply.status;
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        return OriginateError::Unavailable(format!("{vendor} answered {}: {reason}", status.as_u16()));
    }
    OriginateError::Refused { status: Some(status.as_u16()), reason }
}

/// The vendor's reason in a JSON error answer (`message`, the common field), else the body.
pub(crate) fn json_reason(reply: &Reply) -> String {
    reply
        .json()
        .and_then(|json| json["message"].as_str().map(str::to_owned))
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| {
            let snippet = reply.snippet();
            if snippet.is_empty() { format!("HTTP {}", reply.status.as_u16()) } else { snippet }
        })
}

/// Hex of bytes, lower case (Mango and Zadarma sign with hex digests).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
