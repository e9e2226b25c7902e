//! What a caller asks for and what it gets back, and the checks every vendor shares.

use serde::{Deserialize, Serialize};

use crate::OriginateError;

/// Who places the call: the agent's phone, as the vendor knows it. Which fields a vendor needs is
/// in the crate documentation's table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEndpoint {
    /// The agent's internal number on the PBX (`101`).
    #[serde(default)]
    pub extension: Option<String>,
    /// The agent's own phone number, in E.164, where the vendor can ring a number.
    #[serde(default)]
    pub number: Option<String>,
    /// The vendor's id of the agent: Telphin extension id, uContact agent name, Twilio
    /// `client:`/`sip:` address.
    #[serde(default)]
    pub vendor_id: Option<String>,
}

/// One click-to-call: ring the agent first, then the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginateRequest {
    pub agent: AgentEndpoint,
    /// The number to call, in E.164 (`+442079460000`); normalising it is the caller's job.
    pub destination: String,
    /// The number to present to the destination, where the vendor takes one (else the source's
    /// `originate_caller_id`).
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Switchboard's id of this command (1 to 128 of `A-Z a-z 0-9 . _ : -`), passed where the
    /// vendor takes one (Mango `command_id`, AMI `ActionID` and the new channel's `ChannelId`),
    /// so that the call's webhooks can be linked to the request.
    pub request_id: String,
}

/// A call the vendor accepted to place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Originated {
    /// The vendor's id of the new call, when its answer names one (Telphin `call_id`, uContact
    /// GUID, Twilio `CallSid`, the Asterisk channel's `Uniqueid`); Zadarma and Mango name none.
    pub vendor_call_id: Option<String>,
    /// The command id the vendor echoes in the call's events (Mango `command_id`, Telphin
    /// `call_api_id`, AMI `ActionID`).
    pub command_id: Option<String>,
    /// A short summary of the vendor's answer, for logs and the caller's answer.
    pub raw: serde_json::Value,
}

/// One hang-up of a call placed (or seen) before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangUpRequest {
    /// The vendor's id of the call: Mango `call_id` (from its events), Twilio `CallSid`, the
    /// Asterisk channel's `Uniqueid` or name. uContact ignores it (it hangs up the agent's phone).
    pub vendor_call_id: String,
    /// The agent whose phone is in the call; uContact hangs up by the agent's phone.
    #[serde(default)]
    pub agent: AgentEndpoint,
    /// Switchboard's id of this command, as for [`OriginateRequest::request_id`].
    pub request_id: String,
}

/// An agent's disposition of a call, for a PBX that keeps its own (uContact `DispositionCall`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispositionRequest {
    /// The vendor's id of the call (uContact's interaction GUID, which is the call id).
    pub vendor_call_id: String,
    /// The agent who handled it (uContact: `vendor_id`, its user name).
    pub agent: AgentEndpoint,
    /// The campaign or queue the call went through, as the PBX names it.
    #[serde(default)]
    pub campaign: Option<String>,
    /// The customer's number, as the PBX wrote it.
    #[serde(default)]
    pub customer: Option<String>,
    /// The disposition as the PBX knows it (the label of Switchboard's code).
    pub disposition: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Longest note passed to a vendor.
const MAX_NOTE: usize = 4000;

impl DispositionRequest {
    pub(crate) fn check(&self) -> Result<(), OriginateError> {
        check_value("vendor_call_id", &self.vendor_call_id)?;
        check_value("disposition", &self.disposition)?;
        check_opt("campaign", self.campaign.as_deref())?;
        check_opt("customer", self.customer.as_deref())?;
        for tag in &self.tags {
            check_value("tag", tag)?;
        }
        if let Some(note) = &self.note
            && (note.len() > MAX_NOTE || note.chars().any(|c| c.is_control() && c != '\n' && c != '\t'))
        {
            return Err(OriginateError::Invalid(format!(
                "note must be at most {MAX_NOTE} bytes without control characters but new lines and tabs"
            )));
        }
        self.agent.check()
    }
}

/// Longest free-text value passed to a vendor.
const MAX_VALUE: usize = 256;

pub(crate) fn check_request_id(id: &str) -> Result<(), OriginateError> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(OriginateError::Invalid(format!("request_id {id:?} must be 1 to 128 of A-Z a-z 0-9 . _ : -")))
    }
}

/// An E.164 number: `+`, a non-zero digit, 7 to 15 digits in all.
pub(crate) fn check_e164(what: &str, number: &str) -> Result<(), OriginateError> {
    let digits = number.strip_prefix('+').unwrap_or_default();
    let valid = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(())
    } else {
        Err(OriginateError::Invalid(format!(
            "{what} {number:?} is not an E.164 number (+ and 7 to 15 digits)"
        )))
    }
}

/// A value passed to a vendor: not empty, not too long, no control characters (which would
/// break a header, an AMI line or a JSON string's meaning).
pub(crate) fn check_value<'a>(what: &str, value: &'a str) -> Result<&'a str, OriginateError> {
    if value.trim().is_empty() || value.len() > MAX_VALUE || value.chars().any(char::is_control) {
        return Err(OriginateError::Invalid(format!(
            "{what} must be 1 to {MAX_VALUE} bytes without control characters"
        )));
    }
    Ok(value)
}

/// An optional value, checked when present.
pub(crate) fn check_opt<'a>(what: &str, value: Option<&'a str>) -> Result<Option<&'a str>, OriginateError> {
    value.map(|v| check_value(what, v)).transpose()
}

impl OriginateRequest {
    /// The checks every vendor shares: the ids, the destination and the caller id.
    pub(crate) fn check(&self) -> Result<(), OriginateError> {
        check_request_id(&self.request_id)?;
        check_e164("destination", &self.destination)?;
        check_opt("caller_id", self.caller_id.as_deref())?;
        self.agent.check()
    }
}

impl AgentEndpoint {
    pub(crate) fn check(&self) -> Result<(), OriginateError> {
        check_opt("agent extension", self.extension.as_deref())?;
        check_opt("agent number", self.number.as_deref())?;
        check_opt("agent vendor_id", self.vendor_id.as_deref())?;
        Ok(())
    }
}

impl HangUpRequest {
    pub(crate) fn check(&self) -> Result<(), OriginateError> {
        check_request_id(&self.request_id)?;
        check_value("vendor_call_id", &self.vendor_call_id)?;
        self.agent.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_is_checked() {
        assert!(check_e164("d", "+442079460000").is_ok());
        for bad in
            ["442079460000", "+0442079460000", "+44 20", "+123456", "+1234567890123456", "+44a079460000"]
        {
            assert!(check_e164("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_ids_are_a_safe_alphabet() {
        assert!(check_request_id("c2c-01JABC:1.x_y").is_ok());
        for bad in ["", "a b", "a\r\nAction: Hangup", "/regex/", &"a".repeat(129)] {
            assert!(check_request_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_refuse_control_characters() {
        assert!(check_value("v", "PJSIP/101").is_ok());
        assert!(check_value("v", "101\r\nAction: Originate").is_err());
        assert!(check_value("v", " ").is_err());
    }
}
