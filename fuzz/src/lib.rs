//! One harness for every adapter's fuzz target: the input becomes a request (method, content
//! type, sub-path, query and headers chosen by the first bytes, the rest is the body), which goes
//! through everything ingress runs (`decide`: handshake, method, authentication, check) and, as
//! a stored raw record, through `normalize`. libFuzzer reports any panic; the adapters promise
//! events, a refusal or a dead letter for any input.

use std::collections::BTreeMap;

use switchboard_adapters::{Request, SourceAuth, SourceSettings, adapter_for, decide};
use switchboard_model::{RawWebhook, SourceId, Vendor};

const CONTENT_TYPES: [&str; 4] =
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8"];
const SUBPATHS: [&str; 5] = ["", "/events/call", "/events/summary", "/events/recording", "/x"];

/// Splits `data` at the first `\n` into a control line and a body: the control line's bytes
/// pick the method, content type and sub-path; its text after 3 bytes is the query, and a
/// `Signature`/`X-Twilio-Signature` header gets the same text, so signature code sees odd input.
pub fn run(vendor: Vendor, data: &[u8]) {
    let (control, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[][..], data),
    };
    let pick = |i: usize| control.get(i).copied().unwrap_or(0) as usize;
    let method = if pick(0) % 2 == 0 { "POST" } else { "GET" };
    let content_type = CONTENT_TYPES[pick(1) % CONTENT_TYPES.len()];
    let subpath = SUBPATHS[pick(2) % SUBPATHS.len()];
    let text = String::from_utf8_lossy(control.get(3..).unwrap_or_default()).into_owned();
    let query = (!text.is_empty()).then_some(text.as_str());
    let mut headers = BTreeMap::new();
    for name in ["signature", "x-twilio-signature", "authorization", "i-twilio-idempotency-token"] {
        let _ = headers.insert(name.to_owned(), text.clone());
    }

    let settings = SourceSettings {
        public_url: Some("https://hooks.example.com/v1/webhooks/fuzz".into()),
        api_key: Some("key".into()),
        timezone: Some("Europe/Moscow".into()),
        match_agent_by_email: None,
        ..SourceSettings::default()
    };
    let secret_sha256 = [7u8; 32];
    let source =
        SourceAuth { source_id: "fuzz", secret_sha256: &secret_sha256, signing_secret: Some("secret"), settings: &settings };
    let request =
        Request { method, subpath, query, content_type: Some(content_type), headers: &headers, body };
    let adapter = adapter_for(vendor);
    let _ = decide(adapter, &request, &source);
    let _ = adapter.check(&request);

    let Ok(source_id) = SourceId::parse("fuzz") else { return };
    let raw = RawWebhook {
        id: "raw".into(),
        source_id,
        vendor,
        default_region: "US".into(),
        timezone: settings.timezone.clone(),
        received_at: chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default(),
        remote_addr: None,
        method: method.into(),
        path: format!("/v1/webhooks/fuzz{subpath}"),
        query: query.map(str::to_owned),
        content_type: Some(content_type.into()),
        headers,
        body: body.to_vec(),
    };
    let _ = adapter.normalize(&raw);
}
