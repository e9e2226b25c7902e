use serde_json::json;

use super::*;
use crate::fixtures::{answered_inbound, missed_inbound};
use crate::profile::Profile;

fn profile(request: serde_json::Value) -> Profile {
    let spec = json!({"name": "t", "trigger": "call_record_completed", "steps": [{"name": "s", "request": request}]});
    Profile::from_json(&spec.to_string()).expect("a valid profile")
}

fn render(profile: &Profile, record: &switchboard_model::CallRecord) -> Result<RenderedRequest, RenderError> {
    let step = profile.step("s").expect("a step");
    render_step(step, &CallValues::from_record(record), &StepValues::new())
}

#[test]
fn url_and_form_parameters_are_encoded() {
    let p = profile(json!({
        "method": "POST",
        "url": "https://crm.example.com/hook?key=1",
        "url_params": [{"name": "number", "value": "external_number"}, {"name": "agent", "value": "agent"}],
        "form_params": [{"name": "link", "value": "recording_url"}, {"name": "empty", "value": "caller_name"}],
        "headers": [{"name": "x-call", "template": "{{ report_call_id }}/{{ direction }}"}]
    }));
    let r = render(&p, &answered_inbound()).expect("renders");
    assert_eq!(r.method, http::Method::POST);
    assert_eq!(r.path_and_query(), "/hook?key=1&number=%2B442079460000&agent=101");
    assert_eq!(r.body_text(), "link=https%3A%2F%2Fsb.example.com%2Fv1%2Frecordings%2Fr1%3Ftoken%3Dt&empty=");
    assert_eq!(r.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(r.headers["x-call"], "c-1001/inbound");
}

#[test]
fn secret_headers_stay_out_of_debug_output() {
    let p = profile(json!({
        "method": "POST", "url": "https://crm.example.com/",
        "headers": [{"name": "x-api-token", "secret": "tok123"}, {"name": "authorization", "text": "Bearer abc"}]
    }));
    let r = render(&p, &answered_inbound()).expect("renders");
    assert_eq!(r.headers["x-api-token"], "tok123");
    let debug = format!("{r:?}");
    assert!(!debug.contains("tok123") && !debug.contains("abc"), "{debug}");
}

#[test]
fn a_json_body_must_render_valid_json() {
    let good = profile(json!({
        "method": "POST", "url": "https://crm.example.com/",
        "json_body": "{\"number\": {{ external_number }}, \"answered\": {{ answered_at }}, \"talk\": {{ talk_seconds }}}"
    }));
    let r = render(&good, &missed_inbound()).expect("renders");
    assert_eq!(r.headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(body, json!({"number": "+442079460000", "answered": null, "talk": null}));

    // Valid as a template, but a missing value leaves a dangling comma: refused with the reason.
    let bad = profile(json!({
        "method": "POST", "url": "https://crm.example.com/",
        "json_body": "{\"a\": 1{% if recording_url %}, \"link\": {{ recording_url }}{% endif %}{% if answered_at %},{% endif %}}"
    }));
    assert!(render(&bad, &answered_inbound()).is_err());
    let err = render(&bad, &answered_inbound()).expect_err("a trailing comma");
    assert!(matches!(err, RenderError::InvalidJson { .. }), "{err}");
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}

#[test]
fn a_header_value_cannot_smuggle_a_line() {
    let p = profile(json!({
        "method": "POST", "url": "https://crm.example.com/",
        "headers": [{"name": "x-agent", "value": "agent"}]
    }));
    let mut record = answered_inbound();
    if let Some(agent) = record.agent.as_mut() {
        agent.extension = Some("101\r\nx-admin: yes".into());
    }
    let err = render(&p, &record).expect_err("a line break is not a header character");
    assert!(matches!(err, RenderError::HeaderValue { .. }), "{err}");
}

#[test]
fn signing_adds_the_standard_webhooks_headers() {
    let p = profile(
        json!({"method": "POST", "url": "https://crm.example.com/", "json_body": "{\"id\": {{ call_id }}}"}),
    );
    let mut r = render(&p, &answered_inbound()).expect("renders");
    let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a secret");
    r.sign("dlv_1", 1_714_557_600, std::slice::from_ref(&secret)).expect("signs");
    assert_eq!(r.headers["webhook-id"], "dlv_1");
    assert_eq!(r.headers["webhook-timestamp"], "1714557600");
    let signature = r.headers["webhook-signature"].to_str().expect("ASCII");
    signature::verify(&secret, "dlv_1", "1714557600", signature, &r.body, 1_714_557_600, 300)
        .expect("verifies");
}
