//! The vendor fixture format (`tests/fixtures/README.md`), shared by the adapter tests here and the
//! end-to-end tests in `switchboard-tests`, which include this file by path so that both read the
//! fixtures and compare events the same way.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use switchboard_model::CallEvent;

/// The secret fixture sources are given in the adapter tests; end-to-end tests use the generated
/// one and add it the same way (`auth`).
pub const FIXTURE_SECRET: &str = "fixture-secret";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub description: String,
    pub source: FixtureSource,
    /// Receive time the adapter tests give every request (end-to-end tests use the real clock).
    pub received_at: DateTime<Utc>,
    pub requests: Vec<FixtureRequest>,
    /// The distinct events (by event id, first occurrence) all accepted requests normalise to,
    /// in order; each lists only the fields it checks.
    pub events: Vec<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureSource {
    pub vendor: String,
    pub region: String,
    #[serde(default)]
    pub signing_secret: Option<String>,
    #[serde(default)]
    pub settings: serde_json::Value,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixtureAuth {
    /// HTTP Basic: source id and the source's secret.
    #[default]
    Basic,
    /// The secret as `token` query parameter.
    Token,
    /// Nothing added: the request carries the vendor's signature (or deliberately nothing).
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRequest {
    #[serde(default = "post")]
    pub method: String,
    #[serde(default)]
    pub subpath: String,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub auth: FixtureAuth,
    pub expect: Expect,
}

fn post() -> String {
    "POST".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The HTTP status ingress answers.
    pub status: u16,
    /// The exact response body, when the vendor needs a specific one.
    #[serde(default)]
    pub body: Option<String>,
    /// The request is stored but the normalizer dead-letters it with a reason containing this.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// A handshake answered at ingress and never published.
    #[serde(default)]
    pub handshake: bool,
}

impl Expect {
    /// Whether ingress publishes the request.
    pub fn published(&self) -> bool {
        (200..300).contains(&self.status) && !self.handshake
    }
}

/// Every fixture file, sorted, under `tests/fixtures/<vendor>/`.
pub fn fixture_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = root.ancestors().find(|p| p.join("tests/fixtures").is_dir()).expect("repository root");
    let mut files = Vec::new();
    for vendor in std::fs::read_dir(root.join("tests/fixtures")).expect("fixtures dir") {
        let vendor = vendor.expect("entry").path();
        if !vendor.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&vendor).expect("vendor dir") {
            let file = file.expect("entry").path();
            if file.extension().is_some_and(|e| e == "json") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

pub fn load(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).expect("readable fixture");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Events in order of first appearance, one per event id: what a call log keeps.
pub fn distinct(events: Vec<CallEvent>) -> Vec<CallEvent> {
    let mut seen = std::collections::HashSet::new();
    events.into_iter().filter(|e| seen.insert(e.event_id.clone())).collect()
}

/// Compares actual events with the fixture's expectations field by field. `received_at` stands in
/// for events whose expected `occurred_at` is `"received"`.
pub fn compare(
    actual: &[CallEvent],
    expected: &[BTreeMap<String, serde_json::Value>],
    received_at: Option<DateTime<Utc>>,
) -> Result<(), String> {
    if actual.len() != expected.len() {
        let kinds: Vec<String> = actual
            .iter()
            .map(|e| {
                format!("{}/{}/{}", e.call_id, e.leg_id.as_ref().map_or("-", |l| l.as_str()), e.kind.as_str())
            })
            .collect();
        return Err(format!("expected {} events, got {}: {kinds:?}", expected.len(), actual.len()));
    }
    for (i, (event, fields)) in actual.iter().zip(expected).enumerate() {
        let value = serde_json::to_value(event).map_err(|e| e.to_string())?;
        for (name, want) in fields {
            let got = match name.as_str() {
                "occurred_at" => {
                    if want == "received" {
                        match received_at {
                            Some(at) if event.occurred_at == at => continue,
                            Some(at) => {
                                return Err(format!(
                                    "event {i}: occurred_at {} is not the receive time {at}",
                                    event.occurred_at
                                ));
                            }
                            None => continue,
                        }
                    }
                    serde_json::Value::String(
                        event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    )
                }
                "kind" => serde_json::Value::String(event.kind.as_str().into()),
                "direction" => serde_json::Value::String(event.direction.as_str().into()),
                "disposition" => event
                    .disposition
                    .map_or(serde_json::Value::Null, |d| serde_json::Value::String(d.as_str().into())),
                other => value.get(other).cloned().ok_or_else(|| format!("event {i}: no field {other:?}"))?,
            };
            if &got != want {
                return Err(format!("event {i} ({}): {name} is {got}, expected {want}", event.kind.as_str()));
            }
        }
    }
    Ok(())
}
