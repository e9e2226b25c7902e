//! Asterisk: the Manager Interface's `Originate` and `Hangup` actions over TCP.
//!
//! Sources followed: Asterisk's AMI action reference (docs.asterisk.org/Asterisk_20_Documentation/
//! API_Documentation/AMI_Actions/Originate: `Channel`, `Context`, `Exten`, `Priority`,
//! `CallerID`, `Variable` (repeatable), `Async` "true for fast origination", `ActionID` "will be
//! returned", `ChannelId` "Channel UniqueId to be set on the channel"; .../AMI_Actions/Hangup:
//! `Channel` "the exact channel name ... or /regex/"; .../AMI_Actions/Login: `Username`,
//! `Secret`, `Events`), the AMI v2 specification (packets of `Key: Value` lines ended by an empty
//! line; `Response: Success|Error` with `Message`), and Asterisk's `main/channel.c`
//! (`ast_channel_get_by_name`, which `Hangup` uses, falls back to matching the unique id).
//!
//! Originate rings the agent's channel (`originate_channel`, `PJSIP/{extension}` by default)
//! and, when it answers, runs `originate_context`/destination/1 — the PBX's own dialplan dials the
//! destination (`dial_prefix` and its digits). `CallerID` is the dialled destination, name and
//! number, so that the agent's phone shows whom it is about to be connected to (the Telphin rule);
//! the number presented to the destination is the dialplan's (outbound route), and the request's
//! caller id travels as the channel variable `SWITCHBOARD_CALLER_ID` for a dialplan that wants
//! it, with `SWITCHBOARD_REQUEST_ID`. `Async: true`, so the response comes as soon as the call is
//! queued. `ActionID` and `ChannelId` are the request id: the new channel's `Uniqueid`, which is
//! also the call's `Linkedid` in the AMI/CEL feed, is the request id, and hang-up finds the channel
//! by it (Asterisk 12 and later; older versions ignore `ChannelId`). No retries.

use super::dialled;
use crate::ami::{AmiSession, Packet};
use crate::settings::{required, required_secret};
use crate::transport::Transport;
use crate::types::check_value;
use crate::{HangUpRequest, OriginateError, OriginateRequest, Originated, VendorSettings};

const NAME: &str = "Asterisk";
const DEFAULT_PORT: u16 = 5038;
const DEFAULT_CHANNEL: &str = "PJSIP/{extension}";

pub(crate) async fn originate(
    settings: &VendorSettings,
    request: &OriginateRequest,
    transport: &Transport,
) -> Result<Originated, OriginateError> {
    let context = setting(settings.originate_context.as_deref(), "originate_context")?;
    let extension = request.agent.extension.as_deref().ok_or_else(|| {
        OriginateError::Invalid("Asterisk rings the agent's extension first: the agent has none".into())
    })?;
    let template =
        settings.originate_channel.as_deref().filter(|c| !c.trim().is_empty()).unwrap_or(DEFAULT_CHANNEL);
    let channel = template.replace("{extension}", extension);
    let channel = check_value("the agent's channel (originate_channel)", &channel)?;
    let exten = dialled(settings, &request.destination);
    let exten = check_value("destination", &exten)?;
    let caller_id = format!("\"{exten}\" <{exten}>");
    let request_variable = format!("SWITCHBOARD_REQUEST_ID={}", request.request_id);
    let presented = super::caller_id(request, settings).map(|c| check_value("caller id", c)).transpose()?;
    let caller_variable = presented.map(|c| format!("SWITCHBOARD_CALLER_ID={c}"));
    let mut action = vec![
        ("Action", "Originate"),
        ("ActionID", request.request_id.as_str()),
        ("Channel", channel),
        ("Context", context),
        ("Exten", exten),
        ("Priority", "1"),
        ("CallerID", caller_id.as_str()),
        ("Async", "true"),
        ("ChannelId", request.request_id.as_str()),
        ("Variable", request_variable.as_str()),
    ];
    if let Some(variable) = caller_variable.as_deref() {
        action.push(("Variable", variable));
    }
    let response = run(settings, transport, &request.request_id, &action).await?;
    Ok(Originated {
        vendor_call_id: Some(request.request_id.clone()),
        command_id: Some(request.request_id.clone()),
        raw: response.summary(),
    })
}

pub(crate) async fn hang_up(
    settings: &VendorSettings,
    request: &HangUpRequest,
    transport: &Transport,
) -> Result<(), OriginateError> {
    // A leading `/` would make it a regular expression, hanging up every channel it matches.
    if request.vendor_call_id.starts_with('/') {
        return Err(OriginateError::Invalid(
            "an Asterisk call id is a channel's unique id or name, not a /regex/".into(),
        ));
    }
    let action = [
        ("Action", "Hangup"),
        ("ActionID", request.request_id.as_str()),
        ("Channel", request.vendor_call_id.as_str()),
    ];
    run(settings, transport, &request.request_id, &action).await.map(|_| ())
}

/// Logs in, sends `action`, reads its response and logs off; `Response: Error` is a refusal with
/// Asterisk's `Message`.
async fn run(
    settings: &VendorSettings,
    transport: &Transport,
    action_id: &str,
    action: &[(&str, &str)],
) -> Result<Packet, OriginateError> {
    let host = setting(settings.ami_host.as_deref(), "ami_host")?;
    let username = setting(settings.ami_username.as_deref(), "ami_username")?;
    let secret = required_secret(settings.ami_secret.as_ref(), "ami_secret", NAME)?;
    if secret.chars().any(char::is_control) {
        return Err(OriginateError::NotConfigured("the source's ami_secret has control characters".into()));
    }
    let config = transport.config();
    let port = settings.ami_port.unwrap_or(DEFAULT_PORT);
    let mut session = AmiSession::connect(host, port, config.timeout, config.max_answer_bytes).await?;
    let login_id = format!("login-{action_id}");
    session
        .send(&[
            ("Action", "Login"),
            ("ActionID", login_id.as_str()),
            ("Username", username),
            ("Secret", secret),
            ("Events", "off"),
        ])
        .await?;
    let login = session.response(&login_id).await?;
    if !login.is_success() {
        return Err(OriginateError::Refused {
            status: None,
            reason: format!("Asterisk refused the AMI login: {}", message(&login)),
        });
    }
    session.send(action).await?;
    let response = session.response(action_id).await?;
    session.logoff().await;
    if response.is_success() {
        Ok(response)
    } else {
        Err(OriginateError::Refused { status: None, reason: message(&response) })
    }
}

/// A required setting that is safe on an AMI line.
fn setting<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, OriginateError> {
    let value = required(value, name, NAME)?;
    check_value(name, value).map_err(|_| {
        OriginateError::NotConfigured(format!(
            "the source's {name} setting has control characters or is too long"
        ))
    })
}

fn message(packet: &Packet) -> String {
    packet.get("Message").filter(|m| !m.is_empty()).unwrap_or("no message").to_owned()
}
