//! uContact (Net2Phone Contact Center, Integra): `AgentCall`, `HangupPhone` for hang-up, and
//! `DispositionCall` for an agent's disposition.
//!
//! Sources followed: uContact's "API Telephony › Make call" (seed 002; Integra's wiki,
//! integra-scm.atlassian.net/wiki/spaces/UCEN/pages/407684941): `POST
//! Integra/resources/Agents/AgentCall`, `content-type: application/x-www-form-urlencoded;
//! charset=UTF-8`, fields `callerid`, `agent`, `phone`, `tech`, `context`, `outqueue`,
//! `destination`, answering the new call's GUID as text, `0` on error — a two-step call, the agent
//! first; Clever Ideas' uContact reference "Make a Call" (docs.cleverideas.com.mx/books/
//! ucontact-hXr/page/make-a-call): all seven fields required, `Authorization: Basic <token>`;
//! Integra's "API Security v5" (the API key, as `getUserToken` returns it, goes after `Basic `);
//! and Integra's "Agent API" (integra-scm.atlassian.net/wiki/spaces/UCEN/pages/2407956485):
//! `POST Integra/resources/Agents/HangupPhone` with `phone` = the agent's phone, same header.
//!
//! The base URL is the customer's instance (`api_url`, required); the token is
//! `api_client_secret`. `agent` is the agent's `vendor_id` (its uContact name), `phone` its
//! extension (else number), `callerid` the campaign's DID (the request's caller id, else
//! `originate_caller_id`), `context` `originate_context`, `outqueue` `ucontact_outqueue`, `tech`
//! `ucontact_tech` (`SIP`). uContact hangs up by the agent's phone, not by call id. No retries.
//!
//! Dispositions follow Clever Ideas' uContact reference "Call Disposition"
//! (docs.cleverideas.com.mx/books/ucontact-hXr/page/call-disposition): `POST
//! Integra/resources/api/DispositionCall`, form fields `campaign`, `agent`, `callerid`, `guid`,
//! `l1` (required), `l2`, `l3`, `d1`, `d2`, `comment`, `schedule`, `camptoreschedule`, `tag` (sent
//! empty when unused, as its example does), `Authorization: Basic <token>`. `l1` is the
//! disposition as uContact names it (the label of Switchboard's code: name them alike), `comment`
//! the note, `tag` the tags joined with `,`. The reference shows no answer; a `2xx` is taken as
//! done unless its text is `0` or `false` (Integra's error answers elsewhere). Not retried: a
//! disposition can schedule a dialer call (`schedule`), so a repeat is not harmless.

use http::{Method, header};

use super::{base_url, caller_id, dialled, not_accepted};
use crate::settings::{required, required_secret};
use crate::transport::{HttpRequest, Reply, Transport};
use crate::{
    DispositionRequest, HangUpRequest, OriginateError, OriginateRequest, Originated, VendorSettings,
};

const NAME: &str = "uContact";
const FORM: &str = "application/x-www-form-urlencoded; charset=UTF-8";

pub(crate) async fn originate(
    settings: &VendorSettings,
    request: &OriginateRequest,
    transport: &Transport,
) -> Result<Originated, OriginateError> {
    let token =
        required_secret(settings.api_client_secret.as_ref(), "api_client_secret (the API token)", NAME)?;
    let base = base_url(settings, None, NAME)?;
    let agent = request.agent.vendor_id.as_deref().ok_or_else(|| {
        OriginateError::Invalid("uContact needs the agent's vendor_id (its uContact agent name)".into())
    })?;
    let phone = agent_phone(&request.agent)?;
    let callerid = caller_id(request, settings).ok_or_else(|| {
        OriginateError::NotConfigured(
            "uContact needs a caller id: the request's caller_id or the source's originate_caller_id (the campaign's DID)"
                .into(),
        )
    })?;
    let context = required(settings.originate_context.as_deref(), "originate_context", NAME)?;
    let outqueue = required(settings.ucontact_outqueue.as_deref(), "ucontact_outqueue", NAME)?;
    let tech = settings.ucontact_tech.as_deref().filter(|t| !t.trim().is_empty()).unwrap_or("SIP");
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("callerid", callerid)
        .append_pair("agent", agent)
        .append_pair("phone", phone)
        .append_pair("tech", tech)
        .append_pair("context", context)
        .append_pair("outqueue", outqueue)
        .append_pair("destination", &dialled(settings, &request.destination))
        .finish();
    let reply =
        transport.send(&post(format!("{base}/Integra/resources/Agents/AgentCall"), token, form)?).await?;
    let answer = answer(&reply)?;
    Ok(Originated {
        vendor_call_id: Some(answer.clone()),
        command_id: None,
        raw: serde_json::json!({ "status": reply.status.as_u16(), "guid": answer }),
    })
}

pub(crate) async fn hang_up(
    settings: &VendorSettings,
    request: &HangUpRequest,
    transport: &Transport,
) -> Result<(), OriginateError> {
    let token =
        required_secret(settings.api_client_secret.as_ref(), "api_client_secret (the API token)", NAME)?;
    let base = base_url(settings, None, NAME)?;
    let phone = agent_phone(&request.agent)?;
    let form = form_urlencoded::Serializer::new(String::new()).append_pair("phone", phone).finish();
    let reply =
        transport.send(&post(format!("{base}/Integra/resources/Agents/HangupPhone"), token, form)?).await?;
    answer(&reply).map(|_| ())
}

pub(crate) async fn set_disposition(
    settings: &VendorSettings,
    request: &DispositionRequest,
    transport: &Transport,
) -> Result<(), OriginateError> {
    let token =
        required_secret(settings.api_client_secret.as_ref(), "api_client_secret (the API token)", NAME)?;
    let base = base_url(settings, None, NAME)?;
    let invalid = |what: &str| OriginateError::Invalid(format!("uContact needs {what} for a disposition"));
    let agent = request
        .agent
        .vendor_id
        .as_deref()
        .ok_or_else(|| invalid("the agent's vendor_id (its uContact agent name)"))?;
    let campaign = request.campaign.as_deref().ok_or_else(|| invalid("the call's campaign"))?;
    let callerid = request.customer.as_deref().ok_or_else(|| invalid("the customer's number"))?;
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("campaign", campaign)
        .append_pair("agent", agent)
        .append_pair("callerid", callerid)
        .append_pair("guid", &request.vendor_call_id)
        .append_pair("l1", &request.disposition)
        .append_pair("l2", "")
        .append_pair("l3", "")
        .append_pair("d1", "")
        .append_pair("d2", "")
        .append_pair("comment", request.note.as_deref().unwrap_or(""))
        .append_pair("schedule", "")
        .append_pair("camptoreschedule", "")
        .append_pair("tag", &request.tags.join(","))
        .finish();
    let reply =
        transport.send(&post(format!("{base}/Integra/resources/api/DispositionCall"), token, form)?).await?;
    if !reply.status.is_success() {
        let snippet = reply.snippet();
        let reason = if snippet.is_empty() { format!("HTTP {}", reply.status.as_u16()) } else { snippet };
        return Err(not_accepted(NAME, &reply, reason));
    }
    let text = reply.snippet();
    let text = text.trim().trim_matches('"').trim();
    if text == "0" || text.eq_ignore_ascii_case("false") {
        return Err(OriginateError::Refused {
            status: Some(reply.status.as_u16()),
            reason: format!(
                "uContact answered {text:?} to the disposition (unknown call, agent, campaign or disposition)"
            ),
        });
    }
    Ok(())
}

fn agent_phone(agent: &crate::AgentEndpoint) -> Result<&str, OriginateError> {
    agent.extension.as_deref().or(agent.number.as_deref()).ok_or_else(|| {
        OriginateError::Invalid("uContact needs the agent's phone: its extension or number".into())
    })
}

fn post(url: String, token: &str, form: String) -> Result<HttpRequest, OriginateError> {
    let mut request = HttpRequest::new(Method::POST, url)
        .secret_header(header::AUTHORIZATION, &format!("Basic {token}"))?;
    request = request.header(header::CONTENT_TYPE, FORM)?;
    request.body = form.into();
    Ok(request)
}

/// uContact's text answer: anything but `0` (its documented error answer) on a `2xx` is the
/// answer (the new call's GUID for `AgentCall`).
fn answer(reply: &Reply) -> Result<String, OriginateError> {
    if !reply.status.is_success() {
        let snippet = reply.snippet();
        let reason = if snippet.is_empty() { format!("HTTP {}", reply.status.as_u16()) } else { snippet };
        return Err(not_accepted(NAME, reply, reason));
    }
    let text = reply.snippet();
    let text = text.trim().trim_matches('"').trim();
    if text.is_empty() || text == "0" {
        return Err(OriginateError::Refused {
            status: Some(reply.status.as_u16()),
            reason: format!(
                "uContact answered {text:?}, its error answer (unknown agent, phone, campaign or context, or the agent is not available)"
            ),
        });
    }
    Ok(text.to_owned())
}
