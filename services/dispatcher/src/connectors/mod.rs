//! Built-in profiles for CRMs, chosen by name ([`by_name`]): each turns a user's few settings
//! (portal, token, agent ↔ CRM user mapping) into a full [`Profile`] whose requests follow the
//! CRM's public API documentation field by field. The user can then adjust it like any profile.

use serde::de::DeserializeOwned;

use crate::profile::{Profile, ProfileError};

pub mod amocrm;
pub mod bitrix24;
pub mod hubspot;
pub mod pipedrive;

/// The connectors [`by_name`] knows.
pub const NAMES: &[&str] = &["hubspot", "pipedrive", "bitrix24", "amocrm"];

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("no connector named {0:?}; known: hubspot, pipedrive, bitrix24, amocrm")]
    Unknown(String),
    #[error("invalid settings for {connector}")]
    Settings {
        connector: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid settings for {connector}: {reason}")]
    Setting { connector: &'static str, reason: String },
    #[error("the {connector} profile is invalid")]
    Profile {
        connector: &'static str,
        #[source]
        source: ProfileError,
    },
}

/// The profile of connector `name` for `settings` (that connector's settings, as JSON).
pub fn by_name(name: &str, settings: serde_json::Value) -> Result<Profile, ConnectorError> {
    match name {
        "hubspot" => hubspot::profile(&parse("hubspot", settings)?),
        "pipedrive" => pipedrive::profile(&parse("pipedrive", settings)?),
        "bitrix24" => bitrix24::profile(&parse("bitrix24", settings)?),
        "amocrm" => amocrm::profile(&parse("amocrm", settings)?),
        other => Err(ConnectorError::Unknown(other.to_owned())),
    }
}

fn parse<T: DeserializeOwned>(
    connector: &'static str,
    settings: serde_json::Value,
) -> Result<T, ConnectorError> {
    serde_json::from_value(settings).map_err(|source| ConnectorError::Settings { connector, source })
}

/// A base URL as `https://host[:port]` without a trailing slash; only HTTPS, since every one of
/// these CRMs serves its API over HTTPS and the token must not travel in the clear.
fn https_base(connector: &'static str, url: &str) -> Result<String, ConnectorError> {
    let trimmed = url.trim().trim_end_matches('/');
    let refuse = |reason: &str| ConnectorError::Setting { connector, reason: format!("{reason}: {url:?}") };
    let uri: http::Uri = trimmed.parse().map_err(|_| refuse("not a URL"))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
        return Err(refuse("an https:// URL with a host is needed"));
    }
    Ok(trimmed.to_owned())
}

/// CRM user ids that these APIs take as integers must be integers.
fn numeric_users(connector: &'static str, users: &crate::values::UserMap) -> Result<(), ConnectorError> {
    let bad = users.users.values().chain(users.default_user.iter()).find(|id| id.parse::<u64>().is_err());
    match bad {
        Some(id) => Err(ConnectorError::Setting {
            connector,
            reason: format!("CRM user ids are numbers, not {id:?}"),
        }),
        None => Ok(()),
    }
}

fn finish(connector: &'static str, spec: crate::profile::ProfileSpec) -> Result<Profile, ConnectorError> {
    Profile::new(spec).map_err(|source| ConnectorError::Profile { connector, source })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
