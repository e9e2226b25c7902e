//! Bitrix24: the REST telephony methods for external PBXs
//! (dev.1c-bitrix.ru/rest_help/scope_telephony/telephony/), as three steps per completed call,
//! called either as a local application (`application`: the portal's `/rest/<method>` with the
//! application's OAuth access token as `auth`, traded for at `oauth.bitrix.info` and rotated by
//! the dispatcher) or on an inbound webhook (`webhook_url`: `https://<portal>/rest/<user>/<token>/`):
//!
//! 1. `telephony.externalcall.register`: `USER_ID`, `PHONE_NUMBER`, `TYPE` (1 outgoing, 2
//!    incoming), `CALL_START_DATE`, `CRM_CREATE` (a lead for an unknown number), `SHOW=0` (the
//!    call is over: no call card); returns `result.CALL_ID`.
//! 2. `telephony.externalcall.finish`: `CALL_ID`, `USER_ID`, `DURATION` (seconds; the talk
//!    time), `STATUS_CODE` (200 success, 304 missed, 486 busy, 603 declined, 603-S cancelled, 480
//!    unavailable); this creates the call activity.
//! 3. `telephony.externalCall.attachRecord`: `CALL_ID`, `FILENAME` (must end in .mp3 or .wav),
//!    `RECORD_URL`, once the recording is ready (skipped when there is none). `finish`'s own
//!    `RECORD_URL` is deprecated: the portal tries it twice and gives up silently.
//!
//! Parameters go form-encoded, as in Bitrix24's examples. `USER_ID` is required by `finish`, so a
//! default user is required for calls whose agent maps to nobody.
//!
//! Bitrix24's REST documentation (since March 2026) lists `register` and `finish` as available
//! only in an application's context (`WRONG_AUTH_TYPE` through an inbound webhook): a portal that
//! enforces it needs `application`. The webhook stays for portals that still take it.

use serde::Deserialize;
use switchboard_model::Secret;

use super::{ConnectorError, finish, https_base, numeric_users};
use crate::criteria::{Criterion, Trigger};
use crate::flow::StepCondition;
use crate::oauth::{GrantRequest, OAuth, Placement};
use crate::profile::{
    Extract, HttpMethod, Param, Profile, ProfileSpec, ProfileState, RateLimit, RequestTemplate, Step,
    URL_SECRET,
};
use crate::values::{CallDirection, UserMap};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A local application (scope `telephony`), installed on the portal: exactly one of this and
    /// `webhook_url`.
    #[serde(default)]
    pub application: Option<Application>,
    /// The inbound webhook, `https://<portal>/rest/<user id>/<token>/` (scope `telephony`). Its
    /// token becomes the steps' `url_secret`: sealed, shown as `***`, kept out of the logs.
    #[serde(default)]
    pub webhook_url: Option<Secret>,
    /// Agent → Bitrix24 user id; `default_user` is required.
    pub users: UserMap,
    /// Create a lead for a number the CRM does not know (`CRM_CREATE`).
    #[serde(default = "yes")]
    pub create_leads: bool,
}

fn yes() -> bool {
    true
}

/// A local application: its client (from the portal's Developer resources → Other → Local
/// application) and the refresh token its installation handed out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// `https://<portal>`.
    pub portal_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub refresh_token: Secret,
}

/// Bitrix24's token endpoint for every cloud portal.
pub const TOKEN_URL: &str = "https://oauth.bitrix.info/oauth/token/";

/// Where the steps go: each method's URL (with `{secret}` for a webhook's token), the webhook's
/// token, and the application's OAuth client.
fn endpoint(settings: &Settings) -> Result<(String, Option<Secret>, Option<OAuth>), ConnectorError> {
    let setting = |reason: &str| ConnectorError::Setting { connector: "bitrix24", reason: reason.into() };
    match (&settings.application, &settings.webhook_url) {
        (Some(app), None) => {
            let portal = https_base("bitrix24", &app.portal_url)?;
            let oauth = OAuth {
                token_url: TOKEN_URL.into(),
                client_id: app.client_id.clone(),
                client_secret: app.client_secret.clone(),
                refresh_token: app.refresh_token.clone(),
                grant_request: GrantRequest::GetQuery,
                send_as: Placement::UrlParam("auth".into()),
            };
            Ok((format!("{portal}/rest"), None, Some(oauth)))
        }
        (None, Some(webhook)) => {
            let hook = https_base("bitrix24", webhook.expose())?;
            // `https://<portal>/rest/<user id>/<token>`: the token is the last segment.
            let (base, token) = hook
                .rsplit_once('/')
                .filter(|(base, token)| {
                    base.rsplit_once("/rest/")
                        .is_some_and(|(_, user)| !user.is_empty() && !user.contains('/'))
                        && !token.is_empty()
                })
                .ok_or_else(|| {
                    setting("the inbound webhook URL looks like https://<portal>/rest/<user id>/<token>/")
                })?;
            Ok((format!("{base}/{URL_SECRET}"), Some(Secret::new(token)), None))
        }
        _ => Err(setting("give application (a local application's OAuth client) or webhook_url, not both")),
    }
}

const STATUS_CODE: &str = r#"{{ {"answered": "200", "missed": "304", "no_answer": "304",
  "abandoned_in_queue": "304", "abandoned_in_ivr": "603-S", "voicemail": "304", "busy": "486",
  "rejected": "603", "failed": "480"}[outcome]|default("200" if talk_seconds else "304") }}"#;

pub fn profile(settings: &Settings) -> Result<Profile, ConnectorError> {
    let (base, token, oauth) = endpoint(settings)?;
    if settings.users.default_user.is_none() {
        return Err(ConnectorError::Setting {
            connector: "bitrix24",
            reason: "a default user is required: telephony.externalcall.finish needs USER_ID".into(),
        });
    }
    numeric_users("bitrix24", &settings.users)?;
    let step = |name: &str, method: &str, form_params: Vec<Param>, extract: Vec<Extract>, when| Step {
        name: name.into(),
        request: RequestTemplate {
            method: HttpMethod::Post,
            url: format!("{base}/{method}.json"),
            url_secret: token.clone(),
            headers: Vec::new(),
            url_params: Vec::new(),
            form_params,
            json_body: None,
        },
        extract,
        when,
    };
    let register = step(
        "register",
        "telephony.externalcall.register",
        vec![
            Param::value("USER_ID", "crm_user_id"),
            Param::value("PHONE_NUMBER", "external_number"),
            Param::template("TYPE", r#"{{ "1" if direction == "outbound" else "2" }}"#),
            // Bitrix24 writes and reads REST dates as ISO 8601 with a numeric offset.
            Param::template("CALL_START_DATE", r#"{{ started_at|datetime_utc|replace(" ", "T") }}+00:00"#),
            Param::text("CRM_CREATE", if settings.create_leads { "1" } else { "0" }),
            Param::text("SHOW", "0"),
        ],
        vec![Extract { name: "call_id".into(), pointer: "/result/CALL_ID".into() }],
        StepCondition::Always,
    );
    let finish_call = step(
        "finish",
        "telephony.externalcall.finish",
        vec![
            Param::template("CALL_ID", "{{ steps.register.call_id }}"),
            Param::value("USER_ID", "crm_user_id"),
            Param::template("DURATION", "{{ talk_seconds or 0 }}"),
            Param::template("STATUS_CODE", STATUS_CODE),
        ],
        Vec::new(),
        StepCondition::Always,
    );
    let record = step(
        "record",
        "telephony.externalCall.attachRecord",
        vec![
            Param::template("CALL_ID", "{{ steps.register.call_id }}"),
            Param::template("FILENAME", "{{ call_id }}.mp3"),
            Param::value("RECORD_URL", "recording_url"),
        ],
        Vec::new(),
        StepCondition::RecordingReady,
    );
    let spec = ProfileSpec {
        name: "Bitrix24 telephony".into(),
        trigger: Trigger::CallRecordCompleted,
        criteria: vec![Criterion::Direction {
            any_of: vec![CallDirection::Inbound, CallDirection::Outbound],
        }],
        steps: vec![register, finish_call, record],
        users: settings.users.clone(),
        retry: None,
        // Bitrix24 allows about two REST requests per second per portal before answering
        // QUERY_LIMIT_EXCEEDED.
        rate_limit: Some(RateLimit { requests: 2, per_seconds: 1 }),
        max_concurrency: Some(1),
        state: ProfileState::Enabled,
        signing_secrets: Vec::new(),
        oauth,
    };
    finish("bitrix24", spec)
}
