//! amoCRM (Kommo): calls added with `POST /api/v4/calls`
//! (amocrm.ru/developers/content/crm_platform/calls-api), a JSON array of calls, authenticated with
//! a long-lived token (`Authorization: Bearer`). amoCRM files each call on the contact, company
//! or deal with that phone number itself; a number it does not know adds nothing.
//!
//! Fields: `direction` (`inbound`/`outbound`; internal calls are not sent), `uniq` (our call
//! UUID, amoCRM's "unique call identifier"; amoCRM documents no refusal of a repeated one, so a
//! request retried after its answer was lost may log the call twice), `duration` (seconds; the talk time), `source` (the
//! integration's name), `phone`, `link` (the recording), `call_status` (4 talked, 6 not reached,
//! 7 busy, 1 left a message), `responsible_user_id` (the agent's amoCRM user) and `created_at`
//! (unix seconds). amoCRM has no way to add a link to a call later, so the request waits (up to a
//! day) while the recording is pending.

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
    /// The account's address, `https://<subdomain>.amocrm.ru` (or `.kommo.com`).
    pub base_url: String,
    pub access_token: Secret,
    /// Agent → amoCRM user id.
    #[serde(default)]
    pub users: UserMap,
    /// `source` of every call; "Switchboard" when absent.
    #[serde(default)]
    pub source: Option<String>,
}

const BODY: &str = r#"{% set call_status = {"answered": 4, "busy": 7, "voicemail": 1, "missed": 6, "no_answer": 6,
  "abandoned_in_queue": 6, "abandoned_in_ivr": 6, "rejected": 6, "failed": 6} %}
[{
{% if recording_url %}
  "link": {{ recording_url }},
{% endif %}
{% if crm_user_id %}
  "responsible_user_id": {{ crm_user_id|int }},
{% endif %}
{% if call_status[outcome] is defined %}
  "call_status": {{ call_status[outcome] }},
{% endif %}
  "direction": {{ direction }},
  "uniq": {{ call_id }},
  "duration": {{ talk_seconds or 0 }},
  "source": SOURCE,
  "phone": {{ external_number }},
  "created_at": {{ started_at|seconds }}
}]"#;

pub fn profile(settings: &Settings) -> Result<Profile, ConnectorError> {
    let base = https_base("amocrm", &settings.base_url)?;
    numeric_users("amocrm", &settings.users)?;
    let source = settings.source.as_deref().unwrap_or("Switchboard");
    // The name is pasted into the template as a JSON string, so it must not read as template
    // syntax.
    if source.is_empty()
        || source.len() > 100
        || source.contains(['{', '}', '%', '#'])
        || source.chars().any(char::is_control)
    {
        return Err(ConnectorError::Setting {
            connector: "amocrm",
            reason: format!("source is 1 to 100 characters without braces, % or #: {source:?}"),
        });
    }
    let source_json = serde_json::Value::from(source).to_string();
    let request = RequestTemplate {
        method: HttpMethod::Post,
        url: format!("{base}/api/v4/calls"),
        headers: vec![Param::secret(
            "authorization",
            Secret::new(format!("Bearer {}", settings.access_token.expose())),
        )],
        url_params: Vec::new(),
        form_params: Vec::new(),
        json_body: Some(BODY.replace("SOURCE", &source_json)),
        url_secret: None,
    };
    let spec = ProfileSpec {
        name: "amoCRM calls".into(),
        trigger: Trigger::CallRecordCompleted,
        criteria: vec![Criterion::Direction {
            any_of: vec![CallDirection::Inbound, CallDirection::Outbound],
        }],
        steps: vec![Step {
            name: "create".into(),
            request,
            extract: Vec::new(),
            when: StepCondition::RecordingSettled,
        }],
        users: settings.users.clone(),
        retry: None,
        // amoCRM allows 7 requests per second per integration.
        rate_limit: Some(RateLimit { requests: 7, per_seconds: 1 }),
        max_concurrency: Some(2),
        state: ProfileState::Enabled,
        signing_secrets: Vec::new(),
        oauth: None,
    };
    finish("amocrm", spec)
}
