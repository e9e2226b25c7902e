//! The delivery profile: seed 004's "Web Service Integration Profile" (name, target URL, method,
//! headers, URL and form parameters, triggering event and criteria), with what a dependable
//! delivery adds: a JSON body template, several steps where a CRM needs them, a retry schedule,
//! limits, signing secrets and a state.
//!
//! A profile is validated whenever it is built or read ([`Profile::new`], serde): every URL,
//! method, header and template is checked then, so a bad profile is refused when it is saved,
//! with the reason, rather than failing on each call later.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Serialize};
use switchboard_model::Secret;

use crate::criteria::{Criterion, Trigger};
use crate::flow::StepCondition;
use crate::oauth::OAuth;
use crate::retry::RetryPolicy;
use crate::signature::{SignatureError, SigningSecret};
use crate::template::{self, Dialect, TemplateError};
use crate::values::{UserMap, VALUE_NAMES};

/// A profile id: what a URL path segment and a log line can carry safely (the API's and the
/// CLI's check).
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where a step's URL takes its `url_secret`.
pub const URL_SECRET: &str = "{secret}";

impl RequestTemplate {
    /// The URL with its secret in place, for sending only.
    pub fn url_with_secret(&self) -> String {
        match &self.url_secret {
            Some(secret) => self.url.replacen(URL_SECRET, secret.expose(), 1),
            None => self.url.clone(),
        }
    }

    /// The URL as it may be shown or logged: the secret's place as `***`.
    pub fn url_shown(&self) -> String {
        self.url.replacen(URL_SECRET, "***", 1)
    }
}

/// A profile as written; [`Profile`] is one that passed validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub name: String,
    pub trigger: Trigger,
    #[serde(default)]
    pub criteria: Vec<Criterion>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub users: UserMap,
    /// Overrides the default (Svix's) retry schedule.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// At most this many requests of this profile in flight at once.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default)]
    pub state: ProfileState,
    /// Standard Webhooks secrets (`whsec_...`); with more than one (during a rotation) every
    /// request carries a signature by each. None: requests are not signed.
    #[serde(default)]
    pub signing_secrets: Vec<Secret>,
    /// An OAuth client whose access token every request carries (Bitrix24's applications,
    /// HubSpot's and amoCRM's integrations): traded for and rotated by the dispatcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuth>,
}

/// One HTTP request of a profile; a later step can use what an earlier one extracted from its
/// response (`{{ steps.register.call_id }}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// `[a-z0-9_]`, so that templates can name it.
    pub name: String,
    pub request: RequestTemplate,
    /// Values to keep from the JSON response, by JSON pointer (`/result/CALL_ID`).
    #[serde(default)]
    pub extract: Vec<Extract>,
    #[serde(default)]
    pub when: StepCondition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    pub name: String,
    pub pointer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTemplate {
    pub method: HttpMethod,
    /// Literal, not a template: the host a request goes to is fixed when the profile is saved,
    /// where the SSRF guard can check it, and no call value can move it. Its path may hold
    /// [`URL_SECRET`] once, replaced by `url_secret` when the request is sent.
    pub url: String,
    /// A credential some CRMs put in the URL's path (Bitrix24's inbound webhook token): sealed
    /// with the profile's other secrets, shown as `***`, and kept out of the attempt log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<Secret>,
    #[serde(default)]
    pub headers: Vec<Param>,
    #[serde(default)]
    pub url_params: Vec<Param>,
    #[serde(default)]
    pub form_params: Vec<Param>,
    /// A template in the JSON dialect; its output must be valid JSON.
    #[serde(default)]
    pub json_body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub fn as_http(self) -> http::Method {
        match self {
            HttpMethod::Get => http::Method::GET,
            HttpMethod::Post => http::Method::POST,
            HttpMethod::Put => http::Method::PUT,
            HttpMethod::Patch => http::Method::PATCH,
            HttpMethod::Delete => http::Method::DELETE,
        }
    }
}

/// A named parameter or header and what it carries: `{"name": "USER_ID", "value": "crm_user_id"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ParamWire")]
pub struct Param {
    pub name: String,
    #[serde(flatten)]
    pub value: ParamValue,
}

/// A parameter as written, so that one with two kinds of value (or none) is refused rather than
/// read as whichever comes first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamWire {
    name: String,
    text: Option<String>,
    value: Option<String>,
    template: Option<String>,
    secret: Option<Secret>,
}

impl TryFrom<ParamWire> for Param {
    type Error = String;
    fn try_from(wire: ParamWire) -> Result<Self, String> {
        let kinds = [
            wire.text.map(ParamValue::Text),
            wire.value.map(ParamValue::Value),
            wire.template.map(ParamValue::Template),
            wire.secret.map(ParamValue::Secret),
        ];
        let mut given = kinds.into_iter().flatten();
        match (given.next(), given.next()) {
            (Some(value), None) => Ok(Param { name: wire.name, value }),
            _ => Err(format!("parameter {:?} needs exactly one of text, value, template, secret", wire.name)),
        }
    }
}

/// Seed 004: "a string of text rather than a value", or one of the call values; plus a template
/// for anything in between, and a secret for tokens (never shown by `Debug`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamValue {
    Text(String),
    Value(String),
    Template(String),
    Secret(Secret),
}

impl Param {
    pub fn text(name: &str, text: &str) -> Self {
        Param { name: name.into(), value: ParamValue::Text(text.into()) }
    }
    pub fn value(name: &str, value: &str) -> Self {
        Param { name: name.into(), value: ParamValue::Value(value.into()) }
    }
    pub fn template(name: &str, source: &str) -> Self {
        Param { name: name.into(), value: ParamValue::Template(source.into()) }
    }
    pub fn secret(name: &str, secret: Secret) -> Self {
        Param { name: name.into(), value: ParamValue::Secret(secret) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

/// Enabled: deliveries are scheduled and sent. Paused: scheduled and held, so nothing is lost
/// while a CRM is being fixed. Disabled: nothing is scheduled (the CRM answered 410 Gone, or an
/// administrator turned the profile off).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileState {
    #[default]
    Enabled,
    Paused,
    Disabled {
        #[serde(default)]
        reason: Option<String>,
    },
}

/// A validated profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ProfileSpec", into = "ProfileSpec")]
pub struct Profile(ProfileSpec);

impl Deref for Profile {
    type Target = ProfileSpec;
    fn deref(&self) -> &ProfileSpec {
        &self.0
    }
}

impl From<Profile> for ProfileSpec {
    fn from(value: Profile) -> Self {
        value.0
    }
}

impl TryFrom<ProfileSpec> for Profile {
    type Error = ProfileError;
    fn try_from(spec: ProfileSpec) -> Result<Self, ProfileError> {
        Profile::new(spec)
    }
}

/// Why a profile was refused; `step` and `field` say where (`step "finish": form_params.USER_ID`).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("invalid profile JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("profile name must be 1 to 200 printable characters")]
    Name,
    #[error("a profile needs at least one step")]
    NoSteps,
    #[error("step {0:?}: names are 1 to 64 of a-z, 0-9 and '_', unique in the profile")]
    StepName(String),
    #[error("step {step:?}: invalid URL {url:?}: {reason}")]
    Url { step: String, url: String, reason: &'static str },
    #[error("step {step:?}: invalid URL {url:?}")]
    UrlSyntax {
        step: String,
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("step {step:?}: {reason}")]
    Request { step: String, reason: &'static str },
    #[error("step {step:?}: invalid header name {name:?}")]
    HeaderName {
        step: String,
        name: String,
        #[source]
        source: http::header::InvalidHeaderName,
    },
    #[error("step {step:?}: header {name:?} is set by the dispatcher itself")]
    ReservedHeader { step: String, name: String },
    #[error("step {step:?}: {field} {name:?}: parameter names must not be empty")]
    ParamName { step: String, field: &'static str, name: String },
    #[error("step {step:?}: {field} {name:?}: unknown value {value:?}")]
    UnknownValue { step: String, field: &'static str, name: String, value: String },
    #[error("step {step:?}: {field}: {source}")]
    Template {
        step: String,
        field: String,
        #[source]
        source: TemplateError,
    },
    #[error("step {step:?}: extract {name:?}: {reason}")]
    Extract { step: String, name: String, reason: &'static str },
    #[error("criterion {index}: {reason}")]
    Criterion { index: usize, reason: &'static str },
    #[error("{0}")]
    Limits(&'static str),
    #[error("oauth: {0}")]
    OAuth(&'static str),
    #[error("signing secret {index}")]
    SigningSecret {
        index: usize,
        #[source]
        source: SignatureError,
    },
}

impl Profile {
    /// Validates `spec` (see the module documentation).
    pub fn new(spec: ProfileSpec) -> Result<Profile, ProfileError> {
        crate::profile_check::validate(&spec)?;
        Ok(Profile(spec))
    }

    pub fn from_json(json: &str) -> Result<Profile, ProfileError> {
        let spec: ProfileSpec = serde_json::from_str(json).map_err(ProfileError::Json)?;
        Profile::new(spec)
    }

    /// Whether the profile may send the call's location: any of its text names it. Only such a
    /// profile pays for it (the country of a number takes a parse with the full numbering plan,
    /// by far the costliest value: BENCHMARKS.md, dispatcher).
    pub fn names_location(&self) -> bool {
        self.to_json().contains("location")
    }

    pub fn to_json(&self) -> String {
        // A profile is plain data (strings, numbers, lists): serialising it cannot fail.
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    pub fn spec(&self) -> &ProfileSpec {
        &self.0
    }

    pub fn signing_keys(&self) -> Vec<SigningSecret> {
        // Every secret was parsed when the profile was validated.
        self.signing_secrets.iter().filter_map(|s| SigningSecret::parse(s.expose()).ok()).collect()
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Checks one template of a step, naming where it is.
pub(crate) fn check_template(
    step: &str,
    field: String,
    source: &str,
    dialect: Dialect,
    earlier: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), ProfileError> {
    template::check(source, dialect, earlier).map_err(|source| ProfileError::Template {
        step: step.into(),
        field,
        source,
    })
}

pub(crate) fn known_value(name: &str) -> bool {
    VALUE_NAMES.contains(&name)
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
