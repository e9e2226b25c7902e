use switchboard_model::RecordingStatus;

use super::*;
use crate::fixtures::{answered_inbound, at, missed_inbound};
use crate::values::UserMap;

fn bitrix() -> Profile {
    let settings = crate::connectors::bitrix24::Settings {
        application: None,
        webhook_url: Some(switchboard_model::Secret::new("https://acme.bitrix24.ru/rest/1/tok/")),
        users: UserMap { users: Default::default(), default_user: Some("1".into()) },
        create_leads: true,
    };
    crate::connectors::bitrix24::profile(&settings).expect("a valid profile")
}

fn names(state: &FlowState) -> Vec<&str> {
    state.done.iter().map(String::as_str).collect()
}

#[test]
fn steps_run_in_order_and_pass_values_on() {
    let profile = bitrix();
    let values = CallValues::from_record(&answered_inbound());
    let mut state = FlowState::default();
    let start = at(10, 2, 0);
    let Next::Run(first) = state.next(&profile, &values, start, start, DEFAULT_WAIT_LIMIT) else {
        panic!("the first step runs")
    };
    assert_eq!(first.name, "register");
    state
        .complete(first, br#"{"result": {"CALL_ID": "externalCall.abc", "CRM_CREATED_LEAD": null}}"#)
        .expect("extracts");
    assert_eq!(state.extracted["register"]["call_id"], "externalCall.abc");
    let Next::Run(second) = state.next(&profile, &values, start, start, DEFAULT_WAIT_LIMIT) else { panic!() };
    state.complete(second, br#"{"result": {}}"#).expect("nothing to extract");
    let Next::Run(third) = state.next(&profile, &values, start, start, DEFAULT_WAIT_LIMIT) else { panic!() };
    assert_eq!(third.name, "record");
    state.complete(third, b"").expect("nothing to extract");
    assert_eq!(state.next(&profile, &values, start, start, DEFAULT_WAIT_LIMIT), Next::Finished);
    assert_eq!(names(&state), ["register", "finish", "record"]);
}

#[test]
fn a_step_waits_for_the_recording_then_runs_or_is_skipped() {
    let profile = bitrix();
    let mut pending = answered_inbound();
    pending.recording_status = Some(RecordingStatus::Pending);
    pending.recording_url = None;
    let state = FlowState { done: vec!["register".into(), "finish".into()], extracted: StepValues::new() };
    let start = at(10, 2, 0);
    let values = CallValues::from_record(&pending);
    assert!(matches!(
        state.next(&profile, &values, start, at(11, 0, 0), DEFAULT_WAIT_LIMIT),
        Next::Wait { .. }
    ));
    let late = start + DEFAULT_WAIT_LIMIT;
    assert!(
        matches!(state.next(&profile, &values, start, late, DEFAULT_WAIT_LIMIT), Next::Skip(_)),
        "gives up"
    );
    // A newer record of the call with the recording ready lets it run.
    let ready = CallValues::from_record(&answered_inbound());
    assert!(
        matches!(state.next(&profile, &ready, start, at(11, 0, 0), DEFAULT_WAIT_LIMIT), Next::Run(s) if s.name == "record")
    );
    // A call without a recording skips the step at once.
    let none = CallValues::from_record(&missed_inbound());
    let Next::Skip(step) = state.next(&profile, &none, start, start, DEFAULT_WAIT_LIMIT) else { panic!() };
    let mut state = state;
    state.skip(step);
    assert_eq!(state.next(&profile, &none, start, start, DEFAULT_WAIT_LIMIT), Next::Finished);
}

#[test]
fn conditions_read_the_recording() {
    let mut v = CallValues::from_record(&answered_inbound());
    assert_eq!(StepCondition::RecordingReady.readiness(&v), Readiness::Ready);
    assert_eq!(StepCondition::RecordingSettled.readiness(&v), Readiness::Ready);
    v.recording_url = None;
    v.recording_status = Some(RecordingStatus::Pending);
    assert_eq!(StepCondition::RecordingReady.readiness(&v), Readiness::Waiting);
    assert_eq!(StepCondition::RecordingSettled.readiness(&v), Readiness::Waiting);
    v.recording_status = Some(RecordingStatus::Failed);
    assert_eq!(StepCondition::RecordingReady.readiness(&v), Readiness::Never);
    assert_eq!(StepCondition::RecordingSettled.readiness(&v), Readiness::Ready);
    assert_eq!(StepCondition::Always.readiness(&v), Readiness::Ready);
}

#[test]
fn a_response_without_the_value_fails_the_attempt() {
    let profile = bitrix();
    let register = profile.step("register").expect("a step");
    let mut state = FlowState::default();
    let err = state.complete(register, br#"{"error": "QUERY_LIMIT_EXCEEDED"}"#).expect_err("no CALL_ID");
    assert!(matches!(err, ExtractError::Missing { .. }), "{err}");
    assert!(matches!(state.complete(register, b"<html>"), Err(ExtractError::NotJson { .. })));
    assert!(state.done.is_empty(), "a failed step is not done");
    let numbers = extract(register, br#"{"result": {"CALL_ID": 42}}"#).expect("numbers are text");
    assert_eq!(numbers["call_id"], "42");
}
