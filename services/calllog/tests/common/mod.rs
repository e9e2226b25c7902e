//! Real event sequences for the call-log tests: every vendor fixture (`tests/fixtures/`) run
//! through its adapter, as the normalizer would, and grouped by call.

#![allow(dead_code, unreachable_pub)]

#[path = "../../../../libs/adapters/tests/common/fixture.rs"]
pub mod fixture;

use std::collections::BTreeMap;

use switchboard_adapters::{SourceSettings, WEBHOOK_PATH_PREFIX, adapter_for};
use switchboard_model::{CallEvent, RawWebhook, SourceId, Vendor};

/// One call of one fixture: its name (`vendor/file.json#call`) and its distinct events.
#[derive(Debug, Clone)]
pub struct FixtureCall {
    pub name: String,
    pub vendor: Vendor,
    pub events: Vec<CallEvent>,
}

/// Every call of every fixture, the events as the adapters produce them, under source `source`.
pub fn fixture_calls(source: &str) -> Vec<FixtureCall> {
    let source_id = SourceId::parse(source).expect("source id");
    let mut calls = Vec::new();
    for path in fixture::fixture_files() {
        let fixture = fixture::load(&path);
        let vendor: Vendor = fixture.source.vendor.parse().expect("vendor");
        let settings: SourceSettings = if fixture.source.settings.is_null() {
            SourceSettings::default()
        } else {
            serde_json::from_value(fixture.source.settings.clone()).expect("settings")
        };
        let file = path.strip_prefix(path.ancestors().nth(2).expect("fixtures dir")).expect("prefix");
        let mut events = Vec::new();
        for (i, request) in fixture.requests.iter().enumerate() {
            if !request.expect.published() || request.expect.dead_letter.is_some() {
                continue;
            }
            let raw = RawWebhook {
                id: format!("raw-{i}"),
                source_id: source_id.clone(),
                vendor,
                default_region: fixture.source.region.clone(),
                timezone: settings.timezone.clone(),
                received_at: fixture.received_at,
                remote_addr: None,
                method: request.method.clone(),
                path: format!("{WEBHOOK_PATH_PREFIX}{source}{}", request.subpath),
                query: request.query.clone(),
                content_type: request.content_type.clone(),
                headers: request.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect(),
                body: request.body.as_bytes().to_vec(),
            };
            events.extend(adapter_for(vendor).normalize(&raw).expect("the fixture normalises"));
        }
        let mut by_call: BTreeMap<String, Vec<CallEvent>> = BTreeMap::new();
        for event in fixture::distinct(events) {
            by_call.entry(event.call_id.to_string()).or_default().push(event);
        }
        for (call, events) in by_call {
            calls.push(FixtureCall { name: format!("{}#{call}", file.display()), vendor, events });
        }
    }
    assert!(!calls.is_empty(), "no fixture calls");
    calls
}
