//! HubSpot: one call engagement per completed call, `POST /crm/v3/objects/calls` with the call in
//! `properties` (developers.hubspot.com/docs/api/crm/calls), authenticated with a private app's
//! access token (`Authorization: Bearer`), answered `201` with the new call's `id`.
//!
//! Properties, as documented: `hs_timestamp` (required; UTC ISO 8601 or ms), `hs_call_direction`
//! (`INBOUND`/`OUTBOUND`; internal calls are not sent), `hs_call_duration` (milliseconds; the talk
//! time, so 0 for an unanswered call), `hs_call_status` (`COMPLETED`, `NO_ANSWER`, `BUSY`,
//! `FAILED`...), `hs_call_from_number`, `hs_call_to_number`, `hs_call_disposition` (the GUID of
//! one of HubSpot's default call outcomes, or the agent's disposition code when it is a GUID: a
//! portal's own outcome), `hs_call_body` (the agent's disposition label, note and tags, when the
//! call was wrapped up before it was logged) and `hubspot_owner_id` (the agent's HubSpot user,
//! from the user mapping). Properties without a value are left out rather than sent empty.
//!
//! The call is created as soon as it is complete; its recording link
//! (`hs_call_recording_url`) follows once the recording is ready, with
//! `POST /crm/v3/objects/calls/batch/update` (`{"inputs": [{"id", "properties"}]}`: the call's id
//! goes in the body, since a profile's URL is fixed), so that a recording the vendor produces
//! late delays nothing and one that fails leaves the call logged without it.
//!
//! HubSpot files a call on a contact's timeline only through an association. With
//! `associate_contacts` (for a directory whose contact ids are HubSpot contact ids, as when the
//! contacts were imported from HubSpot), a call matched to exactly one contact is created with
//! `associations: [{"to": {"id"}, "types": [{"associationCategory": "HUBSPOT_DEFINED",
//! "associationTypeId": 194}]}]` (194: call to contact); otherwise HubSpot lists the call under
//! Calls only.

use serde::Deserialize;
use switchboard_model::Secret;

use super::{ConnectorError, finish, https_base};
use crate::criteria::{Criterion, Trigger};
use crate::flow::StepCondition;
use crate::profile::{Extract, HttpMethod, Param, Profile, ProfileSpec, ProfileState, RequestTemplate, Step};
use crate::values::{CallDirection, UserMap};

pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A private app's access token with the `crm.objects.contacts.write` scope.
    pub access_token: Secret,
    #[serde(default)]
    pub base_url: Option<String>,
    /// Agent (directory id, extension, email or number) → HubSpot owner id.
    #[serde(default)]
    pub users: UserMap,
    /// The directory's contact ids are HubSpot contact ids: associate each call with its
    /// (uniquely) matched contact.
    #[serde(default)]
    pub associate_contacts: bool,
}

/// HubSpot's default call outcomes (`hs_call_disposition` takes their GUIDs): Connected, No
/// answer, Busy, Left voicemail. A portal can add its own outcomes; these always exist.
const BODY: &str = r#"{% set status = {"answered": "COMPLETED", "busy": "BUSY", "failed": "FAILED",
  "missed": "NO_ANSWER", "no_answer": "NO_ANSWER", "abandoned_in_queue": "NO_ANSWER",
  "abandoned_in_ivr": "NO_ANSWER", "rejected": "NO_ANSWER", "voicemail": "NO_ANSWER"} %}
{% set outcome_guid = {"answered": "f240bbac-87c9-4f6e-bf70-924b57d47db7",
  "busy": "9d9162e7-6cf3-4944-bf63-4dff82258764", "voicemail": "b2cf5968-551e-4856-9783-52b3da59a7d0",
  "missed": "73a0d17f-1163-4015-bdd5-ec830791da20", "no_answer": "73a0d17f-1163-4015-bdd5-ec830791da20",
  "abandoned_in_queue": "73a0d17f-1163-4015-bdd5-ec830791da20",
  "abandoned_in_ivr": "73a0d17f-1163-4015-bdd5-ec830791da20",
  "rejected": "73a0d17f-1163-4015-bdd5-ec830791da20"} %}
{% set notes = [disposition_label or disposition, disposition_note, ("Tags: " ~ tags) if tags else none]|select|join("\n") %}
{"properties": {
{% if disposition is uuid %}
  "hs_call_disposition": {{ disposition }},
{% elif outcome_guid[outcome] is defined %}
  "hs_call_disposition": {{ outcome_guid[outcome] }},
{% endif %}
{% if notes %}
  "hs_call_body": {{ notes }},
{% endif %}
{% if crm_user_id %}
  "hubspot_owner_id": {{ crm_user_id }},
{% endif %}
{% if from_number %}
  "hs_call_from_number": {{ from_number }},
{% endif %}
{% if to_number %}
  "hs_call_to_number": {{ to_number }},
{% endif %}
  "hs_timestamp": {{ started_at|iso8601 }},
  "hs_call_direction": {{ direction|upper }},
  "hs_call_duration": {{ (talk_ms or 0)|string }},
  "hs_call_status": {{ status[outcome]|default("COMPLETED") }}
}ASSOCIATIONS}"#;

/// HubSpot's own association type of a call to a contact.
const ASSOCIATIONS: &str = r#"{% if contact_id %},
"associations": [{"to": {"id": {{ contact_id }}},
  "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}]
{% endif %}"#;

/// The recording link, on the call the first step created.
const RECORDING: &str = r#"{"inputs": [{"id": {{ steps.create.id }},
  "properties": {"hs_call_recording_url": {{ recording_url }}}}]}"#;

pub fn profile(settings: &Settings) -> Result<Profile, ConnectorError> {
    let base = https_base("hubspot", settings.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL))?;
    let request = |path: &str, body: String| RequestTemplate {
        method: HttpMethod::Post,
        url: format!("{base}{path}"),
        headers: vec![Param::secret(
            "authorization",
            Secret::new(format!("Bearer {}", settings.access_token.expose())),
        )],
        url_params: Vec::new(),
        form_params: Vec::new(),
        json_body: Some(body),
        url_secret: None,
    };
    let associations = if settings.associate_contacts { ASSOCIATIONS } else { "" };
    let create = Step {
        name: "create".into(),
        request: request("/crm/v3/objects/calls", BODY.replace("ASSOCIATIONS", associations)),
        extract: vec![Extract { name: "id".into(), pointer: "/id".into() }],
        when: StepCondition::Always,
    };
    let recording = Step {
        name: "recording".into(),
        request: request("/crm/v3/objects/calls/batch/update", RECORDING.to_owned()),
        extract: Vec::new(),
        when: StepCondition::RecordingReady,
    };
    let spec = ProfileSpec {
        name: "HubSpot calls".into(),
        trigger: Trigger::CallRecordCompleted,
        criteria: vec![Criterion::Direction {
            any_of: vec![CallDirection::Inbound, CallDirection::Outbound],
        }],
        steps: vec![create, recording],
        users: settings.users.clone(),
        retry: None,
        // Under HubSpot's burst limit for private apps on the lowest tiers (100 per 10 s).
        rate_limit: Some(crate::profile::RateLimit { requests: 100, per_seconds: 10 }),
        max_concurrency: Some(4),
        state: ProfileState::Enabled,
        signing_secrets: Vec::new(),
        oauth: None,
    };
    finish("hubspot", spec)
}
