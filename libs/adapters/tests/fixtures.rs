//! Runs every vendor fixture (`tests/fixtures/<vendor>/*.json`) through the same decisions ingress
//! makes ([`decide`]) and the adapter's `normalize`, and compares the events. The end-to-end test
//! `tests/vendors.rs` runs the same fixtures through the real pipeline.

mod common;

use std::collections::BTreeMap;

use common::fixture::{self, Fixture, FixtureAuth, FixtureRequest};
use sha2::{Digest, Sha256};
use switchboard_adapters::auth::{TOKEN_PARAM, query_without_token};
use switchboard_adapters::{
    Decision, Rejection, Request, SourceAuth, SourceSettings, WEBHOOK_PATH_PREFIX, adapter_for, decide,
};
use switchboard_model::{CallEvent, RawWebhook, SourceId, Vendor};

const SOURCE: &str = "fixture-src";

/// Adds the fixture's credentials the way a PBX would send them.
fn with_auth(request: &FixtureRequest) -> (BTreeMap<String, String>, Option<String>) {
    let mut headers: BTreeMap<String, String> =
        request.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    let mut query = request.query.clone();
    match request.auth {
        FixtureAuth::Basic => {
            let credentials = format!("{SOURCE}:{}", fixture::FIXTURE_SECRET);
            let _ = headers.insert(
                "authorization".into(),
                format!("Basic {}", switchboard_adapters::auth::base64(credentials.as_bytes())),
            );
        }
        FixtureAuth::Token => {
            let token = format!("{TOKEN_PARAM}={}", fixture::FIXTURE_SECRET);
            query = Some(match query {
                Some(q) if !q.is_empty() => format!("{q}&{token}"),
                _ => token,
            });
        }
        FixtureAuth::None => {}
    }
    (headers, query)
}

fn run(path: &std::path::Path) -> Result<(), String> {
    let fixture: Fixture = fixture::load(path);
    let vendor: Vendor = fixture.source.vendor.parse().map_err(|e| format!("{e}"))?;
    let settings: SourceSettings = if fixture.source.settings.is_null() {
        SourceSettings::default()
    } else {
        serde_json::from_value(fixture.source.settings.clone()).map_err(|e| format!("settings: {e}"))?
    };
    settings.validate()?;
    let secret_sha256: [u8; 32] = Sha256::digest(fixture::FIXTURE_SECRET.as_bytes()).into();
    let source = SourceAuth {
        source_id: SOURCE,
        secret_sha256: &secret_sha256,
        signing_secret: fixture.source.signing_secret.as_deref(),
        settings: &settings,
    };
    let adapter = adapter_for(vendor);
    let mut events: Vec<CallEvent> = Vec::new();

    for (i, spec) in fixture.requests.iter().enumerate() {
        let (headers, query) = with_auth(spec);
        let request = Request {
            method: &spec.method,
            subpath: &spec.subpath,
            query: query.as_deref(),
            content_type: spec.content_type.as_deref(),
            headers: &headers,
            body: spec.body.as_bytes(),
        };
        let context = |what: String| format!("request {i}: {what}");
        let (status, body) = match decide(adapter, &request, &source) {
            Decision::Handshake(reply) => (reply.status, Some(reply.body)),
            Decision::MethodNotAllowed => (405, None),
            Decision::Unauthorized(_) => (401, None),
            Decision::Rejected(Rejection::UnsupportedMediaType(_)) => (415, None),
            Decision::Rejected(Rejection::Malformed(_)) => (400, None),
            Decision::Publish { .. } => {
                let reply = adapter.reply("raw-id");
                (reply.status, Some(reply.body))
            }
        };
        if status != spec.expect.status {
            return Err(context(format!("status {status}, expected {}", spec.expect.status)));
        }
        if let (Some(want), Some(got)) = (&spec.expect.body, &body)
            && want.as_bytes() != got.as_slice()
        {
            return Err(context(format!("reply {:?}, expected {want:?}", String::from_utf8_lossy(got))));
        }
        if !spec.expect.published() {
            continue;
        }
        // The raw record exactly as ingress stores it: no credentials, the token out of the query
        // and out of the body.
        let stored_body = adapter.stored_body(&request).into_owned();
        if vendor == Vendor::Aircall
            && let Some(secret) = &fixture.source.signing_secret
            && String::from_utf8_lossy(&stored_body).contains(secret.as_str())
        {
            return Err(context("Aircall's token is kept in the stored body".into()));
        }
        let raw = RawWebhook {
            id: format!("raw-{i}"),
            source_id: SourceId::parse(SOURCE).map_err(|e| e.to_string())?,
            vendor,
            default_region: fixture.source.region.clone(),
            timezone: settings.timezone.clone(),
            received_at: fixture.received_at,
            remote_addr: None,
            method: spec.method.clone(),
            path: format!("{WEBHOOK_PATH_PREFIX}{SOURCE}{}", spec.subpath),
            query: query_without_token(query.as_deref()),
            content_type: spec.content_type.clone(),
            headers: headers.into_iter().filter(|(k, _)| k != "authorization").collect(),
            body: stored_body,
        };
        match (adapter.normalize(&raw), &spec.expect.dead_letter) {
            (Ok(found), None) => events.extend(found),
            (Err(error), Some(reason)) if error.0.contains(reason.as_str()) => {}
            (Err(error), _) => return Err(context(format!("dead-lettered: {error}"))),
            (Ok(_), Some(reason)) => {
                return Err(context(format!("normalised, expected dead letter {reason:?}")));
            }
        }
    }
    fixture::compare(&fixture::distinct(events), &fixture.events, Some(fixture.received_at))
}

#[test]
fn every_vendor_fixture_normalises_to_its_events() {
    let files = fixture::fixture_files();
    assert!(!files.is_empty(), "no fixtures found");
    let failures: Vec<String> =
        files.iter().filter_map(|path| run(path).err().map(|e| format!("{}: {e}", path.display()))).collect();
    assert!(failures.is_empty(), "{} fixture(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_vendor_has_fixtures() {
    let files = fixture::fixture_files();
    for vendor in Vendor::ALL {
        let dir = format!("/fixtures/{}/", vendor.as_str());
        let count = files.iter().filter(|f| f.to_string_lossy().contains(&dir)).count();
        assert!(count >= 1, "no fixtures for {vendor}");
    }
}
