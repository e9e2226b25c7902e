//! Each connector rendered for an answered call (outbound, no recording), a missed call and a
//! recorded call (inbound), compared with the request the CRM's documentation describes.

use serde_json::{Value, json};
use switchboard_model::{CallRecord, Direction};

use super::*;
use crate::criteria::{Subject, fires};
use crate::fixtures::{answered_inbound, answered_outbound, missed_inbound};
use crate::flow::{DEFAULT_WAIT_LIMIT, FlowState, Next};
use crate::request::{RenderedRequest, render_step};
use crate::values::CallValues;

const CALL_UUID_OF_C1001: &str = "call-uuid-of-c-1001";

fn answered() -> CallRecord {
    CallRecord { recording_status: None, ..answered_outbound() }
}

fn missed() -> CallRecord {
    missed_inbound()
}

fn recorded() -> CallRecord {
    answered_inbound()
}

fn users() -> Value {
    json!({"users": {"101": "42"}})
}

/// Runs every due step of `profile` for `record`, answering each with the next of `responses`.
fn run(profile: &Profile, record: &CallRecord, responses: &[&[u8]]) -> Vec<RenderedRequest> {
    assert!(fires(profile.trigger, &profile.criteria, &Subject::Record { record, previous: None }));
    let values = CallValues::from_record(record).with_crm_user(&profile.users);
    let now = record.completed_at.unwrap_or(record.started_at);
    let mut state = FlowState::default();
    let mut sent = Vec::new();
    let mut responses = responses.iter();
    loop {
        match state.next(profile, &values, now, now, DEFAULT_WAIT_LIMIT) {
            Next::Run(step) => {
                sent.push(render_step(step, &values, &state.extracted).expect("renders"));
                state.complete(step, responses.next().copied().unwrap_or(b"{}")).expect("extracts");
            }
            Next::Skip(step) => state.skip(step),
            Next::Wait { step, .. } => panic!("step {} waits", step.name),
            Next::Finished => return sent,
        }
    }
}

fn json_body(request: &RenderedRequest) -> Value {
    let text = request
        .body_text()
        .replace(&crate::values::call_uuid("acme-pbx", "c-1001").to_string(), CALL_UUID_OF_C1001);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {}", request.body_text()))
}

fn form(request: &RenderedRequest) -> Vec<(String, String)> {
    form_urlencoded::parse(&request.body).into_owned().collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn assert_head(r: &RenderedRequest, path: &str, headers: &[(&str, &str)]) {
    assert_eq!(r.method, http::Method::POST);
    assert_eq!(r.uri.scheme_str(), Some("https"));
    assert_eq!(r.path_and_query(), path);
    for (name, value) in headers {
        assert_eq!(r.headers.get(*name).and_then(|v| v.to_str().ok()), Some(*value), "{name}");
    }
}

#[test]
fn hubspot_calls() {
    let mut settings = json!({"access_token": "pat-na1-123"});
    settings["users"] = users();
    let profile = by_name("hubspot", settings).expect("a profile");
    let head = [("authorization", "Bearer pat-na1-123"), ("content-type", "application/json")];

    let created: &[u8] = br#"{"id": "512", "properties": {}}"#;
    let [r] = run(&profile, &answered(), &[created]).try_into().expect("one request: no recording");
    assert_head(&r, "/crm/v3/objects/calls", &head);
    assert_eq!(r.uri.host(), Some("api.hubapi.com"));
    assert_eq!(
        json_body(&r),
        json!({"properties": {
        "hs_timestamp": "2024-05-01T10:00:00Z", "hs_call_direction": "OUTBOUND", "hs_call_duration": "42000",
        "hs_call_status": "COMPLETED", "hs_call_disposition": "f240bbac-87c9-4f6e-bf70-924b57d47db7",
        "hs_call_from_number": "101", "hs_call_to_number": "+14155550123", "hubspot_owner_id": "42"}})
    );

    let [r] = run(&profile, &missed(), &[created]).try_into().expect("one request");
    assert_eq!(
        json_body(&r),
        json!({"properties": {
        "hs_timestamp": "2024-05-01T10:00:00Z", "hs_call_direction": "INBOUND", "hs_call_duration": "0",
        "hs_call_status": "NO_ANSWER", "hs_call_disposition": "73a0d17f-1163-4015-bdd5-ec830791da20",
        "hs_call_from_number": "+442079460000", "hs_call_to_number": "+442079460999"}})
    );

    // A recorded call: created, then its recording link set on the call HubSpot created.
    let [create, recording] = run(&profile, &recorded(), &[created]).try_into().expect("two requests");
    assert_eq!(
        json_body(&create),
        json!({"properties": {
        "hs_timestamp": "2024-05-01T10:00:00Z", "hs_call_direction": "INBOUND", "hs_call_duration": "95000",
        "hs_call_status": "COMPLETED", "hs_call_disposition": "f240bbac-87c9-4f6e-bf70-924b57d47db7",
        "hs_call_from_number": "+442079460000", "hs_call_to_number": "+442079460999", "hubspot_owner_id": "42"}})
    );
    assert_head(&recording, "/crm/v3/objects/calls/batch/update", &head);
    assert_eq!(
        json_body(&recording),
        json!({"inputs": [{"id": "512",
        "properties": {"hs_call_recording_url": "https://sb.example.com/v1/recordings/r1?token=t"}}]})
    );
}

#[test]
fn hubspot_associates_the_matched_contact_when_asked() {
    let settings = json!({"access_token": "t", "associate_contacts": true});
    let profile = by_name("hubspot", settings).expect("a profile");
    let created: &[u8] = br#"{"id": "512"}"#;
    let [create, _] = run(&profile, &recorded(), &[created]).try_into().expect("two requests");
    assert_eq!(
        json_body(&create)["associations"],
        json!([{"to": {"id": "ct-1"},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 194}]}])
    );
    // No contact (or several): no association.
    let [create] = run(&profile, &missed(), &[created]).try_into().expect("one request");
    assert!(json_body(&create).get("associations").is_none());
    let profile = by_name("hubspot", json!({"access_token": "t"})).expect("a profile");
    let [create, _] = run(&profile, &recorded(), &[created]).try_into().expect("two requests");
    assert!(json_body(&create).get("associations").is_none(), "off by default");
}

#[test]
fn pipedrive_call_logs() {
    let settings =
        json!({"base_url": "https://acme.pipedrive.com/", "api_token": "tok123", "users": users()});
    let profile = by_name("pipedrive", settings).expect("a profile");
    let head = [("x-api-token", "tok123"), ("content-type", "application/json")];

    let [r] = run(&profile, &answered(), &[]).try_into().expect("one request");
    assert_head(&r, "/api/v1/callLogs", &head);
    assert_eq!(r.uri.host(), Some("acme.pipedrive.com"));
    assert_eq!(
        json_body(&r),
        json!({"user_id": 42, "outcome": "connected", "from_phone_number": "101",
        "to_phone_number": "+14155550123", "start_time": "2024-05-01 10:00:00", "end_time": "2024-05-01 10:00:47",
        "duration": "42"})
    );

    let [r] = run(&profile, &missed(), &[]).try_into().expect("one request");
    assert_eq!(
        json_body(&r),
        json!({"outcome": "no_answer", "from_phone_number": "+442079460000",
        "to_phone_number": "+442079460999", "start_time": "2024-05-01 10:00:00", "end_time": "2024-05-01 10:00:30",
        "duration": "0"})
    );

    let [r] = run(&profile, &recorded(), &[]).try_into().expect("one request");
    assert_eq!(
        json_body(&r),
        json!({"user_id": 42, "outcome": "connected", "from_phone_number": "+442079460000",
        "to_phone_number": "+442079460999", "start_time": "2024-05-01 10:00:00", "end_time": "2024-05-01 10:01:45",
        "duration": "95"})
    );
}

fn wrapped_up(record: CallRecord, code: &str) -> CallRecord {
    let set_at = record.started_at;
    CallRecord {
        wrap_up: Some(switchboard_model::WrapUp {
            code: Some(code.into()),
            label: Some("Left a message".into()),
            note: Some("call back \"Tuesday\"".into()),
            tags: vec!["vip".into(), "renewal".into()],
            agent_id: Some("ann".into()),
            set_at,
        }),
        ..record
    }
}

#[test]
fn a_wrap_up_goes_into_the_crms_note_and_outcome() {
    let pipedrive = by_name(
        "pipedrive",
        json!({"base_url": "https://acme.pipedrive.com/", "api_token": "tok123", "users": users()}),
    )
    .expect("a profile");
    let [r] = run(&pipedrive, &wrapped_up(answered(), "left_message"), &[]).try_into().expect("one request");
    let body = json_body(&r);
    assert_eq!(body["outcome"], "left_message", "a code that is a Pipedrive outcome is the outcome");
    // Pipedrive reads the note as HTML (`ResponseCallLogObject.note`): lines are `<br>`, text escaped.
    assert_eq!(body["note"], "Left a message<br>call back &quot;Tuesday&quot;<br>Tags: vip,renewal");
    let [r] = run(&pipedrive, &wrapped_up(answered(), "sale"), &[]).try_into().expect("one request");
    assert_eq!(json_body(&r)["outcome"], "connected", "any other code leaves the call's own outcome");

    let hubspot = by_name("hubspot", json!({"access_token": "pat-1", "users": users()})).expect("a profile");
    let guid = "3c4b5a6d-1111-4e2f-8a9b-0c1d2e3f4a5b";
    let [r] = run(&hubspot, &wrapped_up(answered(), guid), &[br#"{"id": "7"}"#]).try_into().expect("one");
    let properties = &json_body(&r)["properties"];
    assert_eq!(properties["hs_call_disposition"], guid, "a portal's own outcome GUID wins");
    assert_eq!(properties["hs_call_body"], "Left a message\ncall back \"Tuesday\"\nTags: vip,renewal");
    let [r] = run(&hubspot, &wrapped_up(answered(), "sale"), &[br#"{"id": "7"}"#]).try_into().expect("one");
    assert_eq!(json_body(&r)["properties"]["hs_call_disposition"], "f240bbac-87c9-4f6e-bf70-924b57d47db7");
}

#[test]
fn bitrix24_register_finish_attach() {
    let mut settings = json!({"webhook_url": "https://acme.bitrix24.ru/rest/1/k3y/"});
    settings["users"] = json!({"users": {"101": "42"}, "default_user": "1"});
    let profile = by_name("bitrix24", settings).expect("a profile");
    let registered: &[u8] =
        br#"{"result": {"CALL_ID": "externalCall.abc", "CRM_CREATED_LEAD": null}, "time": {}}"#;
    let form_type = [("content-type", "application/x-www-form-urlencoded")];
    let call_uuid = crate::values::call_uuid("acme-pbx", "c-1001").to_string();

    let [register, finish, record] =
        run(&profile, &recorded(), &[registered]).try_into().expect("three steps");
    assert_head(&register, "/rest/1/k3y/telephony.externalcall.register.json", &form_type);
    assert_eq!(register.uri.host(), Some("acme.bitrix24.ru"));
    // The webhook's token is a secret: sealed, masked when shown or logged (#15).
    assert_eq!(
        register.shown_url,
        "https://acme.bitrix24.ru/rest/1/***/telephony.externalcall.register.json"
    );
    assert!(!crate::worker::request_summary(&register).to_string().contains("k3y"), "not in the attempt log");
    assert!(!crate::store::redacted(&profile).to_string().contains("k3y"), "not in the stored spec");
    assert!(profile.to_json().contains("k3y"), "sealed with the profile");
    assert_eq!(
        form(&register),
        pairs(&[
            ("USER_ID", "42"),
            ("PHONE_NUMBER", "+442079460000"),
            ("TYPE", "2"),
            ("CALL_START_DATE", "2024-05-01T10:00:00+00:00"),
            ("CRM_CREATE", "1"),
            ("SHOW", "0")
        ])
    );
    assert_head(&finish, "/rest/1/k3y/telephony.externalcall.finish.json", &form_type);
    assert_eq!(
        form(&finish),
        pairs(&[
            ("CALL_ID", "externalCall.abc"),
            ("USER_ID", "42"),
            ("DURATION", "95"),
            ("STATUS_CODE", "200")
        ])
    );
    assert_head(&record, "/rest/1/k3y/telephony.externalCall.attachRecord.json", &form_type);
    assert_eq!(
        form(&record),
        pairs(&[
            ("CALL_ID", "externalCall.abc"),
            ("FILENAME", &format!("{call_uuid}.mp3")),
            ("RECORD_URL", "https://sb.example.com/v1/recordings/r1?token=t")
        ])
    );

    let [register, finish] = run(&profile, &missed(), &[registered]).try_into().expect("no recording step");
    assert_eq!(form(&register)[0], ("USER_ID".to_owned(), "1".to_owned()), "the default user");
    assert_eq!(
        form(&finish),
        pairs(&[
            ("CALL_ID", "externalCall.abc"),
            ("USER_ID", "1"),
            ("DURATION", "0"),
            ("STATUS_CODE", "304")
        ])
    );

    let [register, finish] = run(&profile, &answered(), &[registered]).try_into().expect("no recording step");
    assert_eq!(form(&register)[1..3], pairs(&[("PHONE_NUMBER", "+14155550123"), ("TYPE", "1")]));
    assert_eq!(form(&finish)[2..], pairs(&[("DURATION", "42"), ("STATUS_CODE", "200")]));
}

#[test]
fn amocrm_calls() {
    let settings = json!({"base_url": "https://acme.amocrm.ru", "access_token": "eyJ0", "users": users()});
    let profile = by_name("amocrm", settings).expect("a profile");
    let head = [("authorization", "Bearer eyJ0"), ("content-type", "application/json")];

    let [r] = run(&profile, &recorded(), &[]).try_into().expect("one request");
    assert_head(&r, "/api/v4/calls", &head);
    assert_eq!(
        json_body(&r),
        json!([{"direction": "inbound", "uniq": CALL_UUID_OF_C1001, "duration": 95,
        "source": "Switchboard", "phone": "+442079460000", "link": "https://sb.example.com/v1/recordings/r1?token=t",
        "call_status": 4, "responsible_user_id": 42, "created_at": 1_714_557_600}])
    );

    let [r] = run(&profile, &missed(), &[]).try_into().expect("one request");
    let body = json_body(&r);
    assert_eq!(body[0]["call_status"], 6);
    assert_eq!(body[0]["duration"], 0);
    assert!(body[0].get("link").is_none() && body[0].get("responsible_user_id").is_none(), "{body}");

    let [r] = run(&profile, &answered(), &[]).try_into().expect("one request");
    let body = json_body(&r);
    assert_eq!(
        (&body[0]["direction"], &body[0]["phone"], &body[0]["duration"]),
        (&json!("outbound"), &json!("+14155550123"), &json!(42))
    );
}

#[test]
fn internal_calls_are_not_sent_to_crms() {
    let mut internal = answered_inbound();
    internal.direction = Direction::Internal;
    let profile = by_name("amocrm", json!({"base_url": "https://acme.amocrm.ru", "access_token": "t"}))
        .expect("a profile");
    assert!(!fires(
        profile.trigger,
        &profile.criteria,
        &Subject::Record { record: &internal, previous: None }
    ));
}

#[test]
fn a_pending_recording_holds_only_the_hubspot_recording_step() {
    let profile = by_name("hubspot", json!({"access_token": "t"})).expect("a profile");
    let values = CallValues::from_record(&answered_outbound());
    let now = answered_outbound().started_at;
    let mut state = FlowState::default();
    let Next::Run(create) = state.next(&profile, &values, now, now, DEFAULT_WAIT_LIMIT) else {
        panic!("the call is created at once");
    };
    state.complete(create, br#"{"id": "512"}"#).expect("extracts the id");
    assert!(matches!(
        state.next(&profile, &values, now, now, DEFAULT_WAIT_LIMIT),
        Next::Wait { step, .. } if step.name == "recording"
    ));
}

#[test]
fn a_pending_recording_holds_the_amocrm_request() {
    let settings = json!({"base_url": "https://acme.amocrm.ru", "access_token": "t"});
    let profile = by_name("amocrm", settings).expect("a profile");
    let values = CallValues::from_record(&answered_outbound());
    let now = answered_outbound().started_at;
    assert!(matches!(
        FlowState::default().next(&profile, &values, now, now, DEFAULT_WAIT_LIMIT),
        Next::Wait { .. }
    ));
}

#[test]
fn bitrix24_as_a_local_application_sends_its_access_token_as_auth() {
    let settings = json!({
        "application": {"portal_url": "https://acme.bitrix24.ru/", "client_id": "local.66a1",
            "client_secret": "cl1ent", "refresh_token": "r3fresh"},
        "users": {"users": {"101": "42"}, "default_user": "1"},
    });
    let profile = by_name("bitrix24", settings).expect("a profile");
    let oauth = profile.oauth.clone().expect("an OAuth client");
    assert_eq!(oauth.token_url, "https://oauth.bitrix.info/oauth/token/");
    assert_eq!(oauth.grant_request, crate::oauth::GrantRequest::GetQuery);
    assert_eq!(oauth.send_as, crate::oauth::Placement::UrlParam("auth".into()));
    let registered: &[u8] = br#"{"result": {"CALL_ID": "externalCall.abc"}, "time": {}}"#;
    let [register, finish, record] =
        run(&profile, &recorded(), &[registered]).try_into().expect("three steps");
    let form_type = [("content-type", "application/x-www-form-urlencoded")];
    assert_head(&register, "/rest/telephony.externalcall.register.json", &form_type);
    assert_head(&finish, "/rest/telephony.externalcall.finish.json", &form_type);
    assert_head(&record, "/rest/telephony.externalCall.attachRecord.json", &form_type);
    let mut sent = register.clone();
    crate::oauth::apply(&mut sent, &oauth.send_as, Some(&switchboard_model::Secret::new("acc3ss")))
        .expect("applied");
    assert_eq!(sent.uri.query(), Some("auth=acc3ss"));
    assert_eq!(sent.shown_url, "https://acme.bitrix24.ru/rest/telephony.externalcall.register.json?auth=***");
    let stored = crate::store::redacted(&profile).to_string();
    assert!(!stored.contains("cl1ent") && !stored.contains("r3fresh"), "{stored}");

    let both = json!({"webhook_url": "https://acme.bitrix24.ru/rest/1/k/",
        "application": {"portal_url": "https://acme.bitrix24.ru", "client_id": "c", "client_secret": "s",
            "refresh_token": "r"},
        "users": {"default_user": "1"}});
    assert!(matches!(by_name("bitrix24", both), Err(ConnectorError::Setting { .. })));
    let neither = json!({"users": {"default_user": "1"}});
    assert!(matches!(by_name("bitrix24", neither), Err(ConnectorError::Setting { .. })));
}

#[test]
fn bad_settings_are_refused() {
    assert!(matches!(by_name("salesforce", json!({})), Err(ConnectorError::Unknown(_))));
    assert!(matches!(by_name("hubspot", json!({"token": "t"})), Err(ConnectorError::Settings { .. })));
    let http = json!({"base_url": "http://acme.pipedrive.com", "api_token": "t"});
    assert!(matches!(by_name("pipedrive", http), Err(ConnectorError::Setting { .. })));
    let words = json!({"base_url": "https://acme.pipedrive.com", "api_token": "t", "users": {"users": {"101": "ann"}}});
    assert!(matches!(by_name("pipedrive", words), Err(ConnectorError::Setting { .. })));
    let no_default = json!({"webhook_url": "https://acme.bitrix24.ru/rest/1/k/", "users": {}});
    assert!(matches!(by_name("bitrix24", no_default), Err(ConnectorError::Setting { .. })));
    let braces = json!({"base_url": "https://acme.amocrm.ru", "access_token": "t", "source": "{{ x }}"});
    assert!(matches!(by_name("amocrm", braces), Err(ConnectorError::Setting { .. })));
    for name in NAMES {
        assert!(!matches!(by_name(name, json!({})), Err(ConnectorError::Unknown(_))), "{name}");
    }
}
