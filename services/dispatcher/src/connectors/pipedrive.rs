//! Pipedrive: one call log per completed call, `POST /api/v1/callLogs`
//! (developers.pipedrive.com/docs/api/v1/CallLogs), authenticated with the user's API token in
//! the `x-api-token` header (Pipedrive's documented alternative to the `api_token` query
//! parameter, which would put the token in every log line with a URL).
//!
//! Fields, as documented: `outcome` (required: `connected`, `no_answer`, `left_voicemail`,
//! `busy`...), `to_phone_number` (required: the number called), `from_phone_number`,
//! `start_time` and `end_time` (required, UTC `YYYY-MM-DD HH:MM:SS`), `duration` (seconds, as a
//! string; the talk time), `user_id` (the agent's Pipedrive user, from the user mapping), `note`
//! (the agent's disposition label, note and tags, when the call was wrapped up before it was
//! logged; HTML, as Pipedrive reads it: lines joined with `<br>`, each escaped). An agent's disposition code that is one of Pipedrive's outcomes (`connected`,
//! `no_answer`, `left_message`, `left_voicemail`, `wrong_number`, `busy`) is the `outcome`.
//! Pipedrive takes recordings only as uploaded audio (`/callLogs/{id}/recordings`), not links,
//! so this profile sends none and does not wait for one.

use serde::Deserialize;
use switchboard_model::Secret;

use super::{ConnectorError, finish, https_base, numeric_users};
use crate::criteria::{Criterion, Trigger};
use crate::flow::StepCondition;
use crate::profile::{
    HttpMethod, Param, Profile, ProfileSpec, ProfileState, RateLimit, RequestTemplate, Step,
};
use crate::values::{CallDirection, UserMap};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The company's Pipedrive address, `https://<company>.pipedrive.com`.
    pub base_url: String,
    pub api_token: Secret,
    /// Agent (directory id, extension, email or number) → Pipedrive user id.
    #[serde(default)]
    pub users: UserMap,
}

/// `to_phone_number` is required; an inbound call whose PBX did not say which number was dialled
/// falls back to the agent's number or extension, the party that was called.
const BODY: &str = r#"{% set outcomes = {"answered": "connected", "busy": "busy", "voicemail": "left_voicemail",
  "missed": "no_answer", "no_answer": "no_answer", "abandoned_in_queue": "no_answer",
  "abandoned_in_ivr": "no_answer", "rejected": "no_answer", "failed": "no_answer"} %}
{
{% if crm_user_id %}
  "user_id": {{ crm_user_id|int }},
{% endif %}
{% if from_number %}
  "from_phone_number": {{ from_number }},
{% endif %}
{% set notes = [disposition_label or disposition, disposition_note, ("Tags: " ~ tags) if tags else none]|select|map("html")|join("<br>") %}
{% if notes %}
  "note": {{ notes }},
{% endif %}
{% if disposition in ["connected", "no_answer", "left_message", "left_voicemail", "wrong_number", "busy"] %}
  "outcome": {{ disposition }},
{% else %}
  "outcome": {{ outcomes[outcome]|default("connected" if talk_seconds else "no_answer") }},
{% endif %}
  "to_phone_number": {{ to_number or agent_number or agent_extension or external_number }},
  "start_time": {{ started_at|datetime_utc }},
  "end_time": {{ (ended_at or started_at)|datetime_utc }},
  "duration": {{ (talk_seconds or 0)|string }}
}"#;

pub fn profile(settings: &Settings) -> Result<Profile, ConnectorError> {
    let base = https_base("pipedrive", &settings.base_url)?;
    numeric_users("pipedrive", &settings.users)?;
    let request = RequestTemplate {
        method: HttpMethod::Post,
        url: format!("{base}/api/v1/callLogs"),
        headers: vec![Param::secret("x-api-token", settings.api_token.clone())],
        url_params: Vec::new(),
        form_params: Vec::new(),
        json_body: Some(BODY.to_owned()),
        url_secret: None,
    };
    let spec = ProfileSpec {
        name: "Pipedrive call logs".into(),
        trigger: Trigger::CallRecordCompleted,
        criteria: vec![Criterion::Direction {
            any_of: vec![CallDirection::Inbound, CallDirection::Outbound],
        }],
        steps: vec![Step {
            name: "create".into(),
            request,
            extract: Vec::new(),
            when: StepCondition::Always,
        }],
        users: settings.users.clone(),
        retry: None,
        // Conservative: Pipedrive meters API use per company and answers 429 beyond its burst
        // limit, whose Retry-After the retry rules honour.
        rate_limit: Some(RateLimit { requests: 20, per_seconds: 2 }),
        max_concurrency: Some(2),
        state: ProfileState::Enabled,
        signing_secrets: Vec::new(),
        oauth: None,
    };
    finish("pipedrive", spec)
}
