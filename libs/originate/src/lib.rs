//! switchboard-originate: click-to-call, the vendor half (#17) — places a call through a PBX
//! vendor's API, agent first, then the destination, hangs calls up where the vendor can, and
//! files an agent's disposition with a PBX that keeps its own (uContact).
//!
//! Inputs: the vendor, the source's stored settings ([`VendorSettings`]), one
//! [`OriginateRequest`] (the agent's endpoint, an E.164 destination, an optional caller id and
//! Switchboard's request id) or [`HangUpRequest`]. Outputs: [`Originated`] (the vendor's call id
//! and command id where its answer names them, and a short summary of the answer), or an
//! [`OriginateError`] that says whose problem it is: the vendor's refusal with its own reason,
//! the vendor being unavailable, a missing setting, an invalid request, or no such API.
//!
//! Guarantees: one request to the vendor per call — a request is sent again only when no
//! connection could be made, so it never reached the vendor (a call placed twice is worse than
//! one that failed; the one other repeat is Telphin's after a refused cached OAuth token, which
//! places nothing); every exchange has a deadline and a cap on the answer's size
//! ([`TransportConfig`]); credentials go only over https (plain http to loopback only) or AMI, and
//! never into an error's text or `Debug`; every value passed on is checked (no control
//! characters, E.164 destination, a request id of a safe alphabet), so that it cannot inject an
//! AMI line or a header. Knows nothing of Kafka or PostgreSQL; metrics are the caller's.
//!
//! | vendor | places a call with | hangs up with | agent fields | settings |
//! |---|---|---|---|---|
//! | Telphin | `POST {api}/extension/{id}/callback/` (OAuth2 bearer) | — | `vendor_id` (extension id) or the `telphin_extension_id` setting; `extension` (or `number`) | `api_client_id`, `api_client_secret`, `api_token_url`, `telphin_extension_id`, `dial_prefix`, `originate_caller_id` (→ `dst_ani`) |
//! | uContact | `POST {api}/Integra/resources/Agents/AgentCall` (Basic token); dispositions with `api/DispositionCall` | `Agents/HangupPhone` by the agent's phone | `vendor_id` (agent name), `extension` (or `number`) | `api_url` (required), `api_client_secret` (token), `originate_context`, `ucontact_outqueue`, `ucontact_tech`, `originate_caller_id` (campaign DID), `dial_prefix` |
//! | Zadarma | `GET {api}/v1/request/callback/` (signed) | — | `extension` (or `number`) | `api_client_id`, `api_client_secret` (else signing secret) |
//! | Mango | `POST {api}/commands/callback` (signed) | `commands/call/hangup` by Mango's `call_id` | `extension`, optional `number` | `api_key`, signing secret (salt), `originate_caller_id` (→ `line_number`) |
//! | Twilio | `POST {api}/2010-04-01/Accounts/{sid}/Calls.json` (Basic) | `Calls/{CallSid}.json` `Status=completed` | `number`, or `vendor_id` `client:`/`sip:` | `api_client_id` (Account SID), `api_client_secret` (else signing secret), `originate_caller_id` (From), `twiml_url` |
//! | Asterisk | AMI `Originate` over TCP | AMI `Hangup` by the channel's unique id | `extension` | `ami_host`, `ami_port`, `ami_username`, `ami_secret`, `originate_context`, `originate_channel`, `dial_prefix` |
//!
//! `{api}` is `api_url`, else `recording_api_url`, else the vendor's public API. Each vendor's
//! module documents the published sources it follows and its retry policy. Any other vendor is
//! [`OriginateError::Unsupported`].

mod ami;
mod error;
mod settings;
mod transport;
mod types;
mod vendors;

pub use error::OriginateError;
pub use settings::VendorSettings;
pub use switchboard_model::Vendor;
pub use transport::{Transport, TransportConfig};
pub use types::{AgentEndpoint, DispositionRequest, HangUpRequest, OriginateRequest, Originated};

/// Places `request`'s call through `vendor`'s API: the agent's phone rings first, then the
/// destination. `Ok` means the vendor accepted the call, not that anyone answered.
pub async fn originate(
    vendor: Vendor,
    settings: &VendorSettings,
    request: &OriginateRequest,
    transport: &Transport,
) -> Result<Originated, OriginateError> {
    request.check()?;
    match vendor {
        Vendor::Telphin => vendors::telphin::originate(settings, request, transport).await,
        Vendor::Ucontact => vendors::ucontact::originate(settings, request, transport).await,
        Vendor::Zadarma => vendors::zadarma::originate(settings, request, transport).await,
        Vendor::Mango => vendors::mango::originate(settings, request, transport).await,
        Vendor::Twilio => vendors::twilio::originate(settings, request, transport).await,
        Vendor::Asterisk => vendors::asterisk::originate(settings, request, transport).await,
        other => Err(OriginateError::Unsupported(format!("Switchboard cannot place calls through {other}"))),
    }
}

/// Hangs up a call through `vendor`'s API, where it has one (uContact, Mango, Twilio, Asterisk).
pub async fn hang_up(
    vendor: Vendor,
    settings: &VendorSettings,
    request: &HangUpRequest,
    transport: &Transport,
) -> Result<(), OriginateError> {
    request.check()?;
    match vendor {
        Vendor::Ucontact => vendors::ucontact::hang_up(settings, request, transport).await,
        Vendor::Mango => vendors::mango::hang_up(settings, request, transport).await,
        Vendor::Twilio => vendors::twilio::hang_up(settings, request, transport).await,
        Vendor::Asterisk => vendors::asterisk::hang_up(settings, request, transport).await,
        other => Err(OriginateError::Unsupported(format!("{other} has no API to hang up a call"))),
    }
}

/// Files an agent's disposition of a call with `vendor`, where the PBX keeps its own (uContact).
/// Never retried: a vendor's disposition may schedule a dialer call.
pub async fn set_disposition(
    vendor: Vendor,
    settings: &VendorSettings,
    request: &DispositionRequest,
    transport: &Transport,
) -> Result<(), OriginateError> {
    request.check()?;
    match vendor {
        Vendor::Ucontact => vendors::ucontact::set_disposition(settings, request, transport).await,
        other => {
            Err(OriginateError::Unsupported(format!("{other} keeps no dispositions Switchboard can set")))
        }
    }
}

/// Whether [`set_disposition`] supports `vendor`.
pub fn can_set_disposition(vendor: Vendor) -> bool {
    vendor == Vendor::Ucontact
}

/// Whether [`originate`] supports `vendor`.
pub fn can_originate(vendor: Vendor) -> bool {
    matches!(
        vendor,
        Vendor::Telphin
            | Vendor::Ucontact
            | Vendor::Zadarma
            | Vendor::Mango
            | Vendor::Twilio
            | Vendor::Asterisk
    )
}

/// Whether [`hang_up`] supports `vendor`.
pub fn can_hang_up(vendor: Vendor) -> bool {
    matches!(vendor, Vendor::Ucontact | Vendor::Mango | Vendor::Twilio | Vendor::Asterisk)
}

/// The futures are `Send`: services run them on a multi-threaded runtime.
#[cfg(test)]
mod send_tests {
    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn originate_and_hang_up_futures_are_send() {
        let (settings, transport) =
            (crate::VendorSettings::default(), crate::Transport::new(Default::default()));
        let request = crate::OriginateRequest {
            agent: crate::AgentEndpoint::default(),
            destination: "+442079460000".into(),
            caller_id: None,
            request_id: "r".into(),
        };
        for vendor in crate::Vendor::ALL {
            is_send(&crate::originate(*vendor, &settings, &request, &transport));
        }
        let hang_up = crate::HangUpRequest {
            vendor_call_id: "c".into(),
            agent: Default::default(),
            request_id: "r".into(),
        };
        is_send(&crate::hang_up(crate::Vendor::Twilio, &settings, &hang_up, &transport));
    }
}
