use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::fixtures::{answered_inbound, missed_inbound};

fn values() -> CallValues {
    CallValues::from_record(&answered_inbound())
}

fn text(source: &str) -> String {
    render(source, Dialect::Text, &values(), &StepValues::new()).expect("renders")
}

fn no_steps() -> BTreeMap<String, BTreeSet<String>> {
    BTreeMap::new()
}

#[test]
fn filters_format_what_crms_ask_for() {
    assert_eq!(text("{{ started_at|iso8601 }}"), "2024-05-01T10:00:00Z");
    assert_eq!(text("{{ time|iso8601 }}"), "2024-05-01T10:00:00Z");
    assert_eq!(text("{{ started_at|datetime_utc }}"), "2024-05-01 10:00:00");
    assert_eq!(text("{{ started_at|ms }}"), "1714557600000");
    assert_eq!(text("{{ time|seconds }}"), "1714557600");
    assert_eq!(text("{{ '2024-05-01T12:00:00+02:00'|datetime_utc }}"), "2024-05-01 10:00:00");
    assert_eq!(text("{{ '020 7946 0000'|e164('GB') }}"), "+442079460000");
    assert_eq!(text("{{ '(415) 555-0123'|e164 }}"), "+14155550123");
    assert_eq!(text("{{ '101'|e164('GB') }}"), "101");
}

#[test]
fn missing_values_are_empty_in_text_and_null_in_json() {
    let missed = CallValues::from_record(&missed_inbound());
    let steps = StepValues::new();
    assert_eq!(
        render("[{{ answered_at }}][{{ answered_at|iso8601 }}]", Dialect::Text, &missed, &steps)
            .expect("renders"),
        "[][]"
    );
    assert_eq!(
        render(r#"{"a": {{ answered_at|iso8601 }}}"#, Dialect::Json, &missed, &steps).expect("renders"),
        r#"{"a": null}"#
    );
}

#[test]
fn json_values_are_escaped_so_a_value_cannot_break_the_body() {
    let mut v = values();
    v.report_call_id = "a\"b\\c\n".into();
    let out =
        render(r#"{"id": {{ report_call_id }}}"#, Dialect::Json, &v, &StepValues::new()).expect("renders");
    let parsed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(parsed["id"], "a\"b\\c\n");
}

#[test]
fn bad_templates_are_refused_with_their_position() {
    let err = check("{{ agent }}\n  {% if x %}", Dialect::Text, &no_steps()).expect_err("unclosed block");
    match &err {
        TemplateError::Invalid { line, .. } => assert_eq!(*line, 2, "{err}"),
        other => panic!("expected a positioned error, got {other:?}"),
    }
    let err = check("ok\n{{ agent | nope }}", Dialect::Text, &no_steps()).expect_err("unknown filter");
    match &err {
        TemplateError::Invalid { line, column, .. } => assert_eq!((*line, *column), (2, 12), "{err}"),
        other => panic!("expected a positioned error, got {other:?}"),
    }
    assert!(err.to_string().contains("unknown filter"), "{err}");
    let err = check("{{ agnet }}", Dialect::Text, &no_steps()).expect_err("unknown value");
    assert!(matches!(err, TemplateError::UnknownValue(ref n) if n == "agnet"), "{err}");
    assert!(
        check("{{ agent }} {{ range(3)|list|length }} {{ 1 if has_recording }}", Dialect::Text, &no_steps())
            .is_ok()
    );
}

#[test]
fn step_values_must_come_from_an_earlier_step() {
    let earlier = BTreeMap::from([("register".to_owned(), BTreeSet::from(["call_id".to_owned()]))]);
    assert!(check("{{ steps.register.call_id }}", Dialect::Text, &earlier).is_ok());
    let err = check("{{ steps.register.nope }}", Dialect::Text, &earlier).expect_err("not extracted");
    assert!(matches!(err, TemplateError::UnknownStepValue(_)), "{err}");
    assert!(check("{{ steps.finish.call_id }}", Dialect::Text, &earlier).is_err());
    let steps = StepValues::from([(
        "register".to_owned(),
        BTreeMap::from([("call_id".to_owned(), "X1".to_owned())]),
    )]);
    assert_eq!(
        render("{{ steps.register.call_id }}", Dialect::Text, &values(), &steps).expect("renders"),
        "X1"
    );
}

#[test]
fn the_sandbox_has_no_files_and_a_fuel_budget() {
    let err = check("{% include 'x' %}", Dialect::Text, &no_steps()).expect_err("no includes");
    assert!(matches!(err, TemplateError::Invalid { .. }), "{err}");
    let runaway = "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}";
    let err = check(runaway, Dialect::Text, &no_steps()).expect_err("out of fuel");
    assert!(err.to_string().contains("fuel"), "{err}");
}
