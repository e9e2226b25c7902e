use std::collections::BTreeSet;

use switchboard_model::{Direction, EventKind, RecordingStatus};

use super::*;
use crate::fixtures::{answered_inbound, answered_outbound, event, missed_inbound};

#[test]
fn a_record_gives_seed_004s_values() {
    let v = CallValues::from_record(&answered_inbound());
    let text = |name: &str| crate::template::value_text(&v, name).expect("a known value");
    assert_eq!(text("call_direction"), "Inbound");
    assert_eq!(text("external_number"), "+442079460000");
    assert_eq!(text("dnis"), "+442079460999");
    assert_eq!(text("location"), "GB");
    assert_eq!(text("agent"), "101");
    assert_eq!(text("report_call_id"), "c-1001");
    assert_eq!(text("time"), "1714557600000");
    assert_eq!(text("started_at"), "2024-05-01T10:00:00Z");
    assert_eq!(text("recording_url"), "https://sb.example.com/v1/recordings/r1?token=t");
    assert_eq!(text("talk_ms"), "95000");
    assert_eq!(text("contact_id"), "ct-1");
    let mut two = answered_inbound();
    two.contact_ids.push("ct-2".into());
    let two = CallValues::from_record(&two);
    assert_eq!(crate::template::value_text(&two, "contact_ids").as_deref(), Some("ct-1,ct-2"));
    assert_eq!(crate::template::value_text(&two, "contact_id").as_deref(), Some(""), "ambiguous: none");
    // What the model does not carry is empty, never guessed.
    for empty in
        ["empty", "account_codes", "tags", "disposition", "group", "caller_name", "agent_name", "event"]
    {
        assert_eq!(text(empty), "", "{empty}");
    }
}

#[test]
fn a_wrapped_up_record_gives_its_disposition_and_tags() {
    let mut record = answered_inbound();
    record.wrap_up = Some(switchboard_model::WrapUp {
        code: Some("sale".into()),
        label: Some("Sale".into()),
        note: Some("two seats".into()),
        tags: vec!["vip".into(), "renewal".into()],
        agent_id: Some("ann".into()),
        set_at: record.started_at,
    });
    let v = CallValues::from_record(&record);
    let text = |name: &str| crate::template::value_text(&v, name).expect("a known value");
    assert_eq!(
        [text("disposition"), text("disposition_label"), text("disposition_note"), text("tags")],
        ["sale", "Sale", "two seats", "vip,renewal"]
    );
    let criterion = crate::criteria::Criterion::Tag { any_of: vec!["renewal".into()] };
    assert!(criterion.matches(&v), "the tag criterion sees the wrap-up's tags");
}

#[test]
fn the_external_party_follows_the_direction() {
    let outbound = CallValues::from_record(&answered_outbound());
    assert_eq!(outbound.external_number.as_deref(), Some("+14155550123"));
    assert_eq!(outbound.location.as_deref(), Some("US"));
    let mut internal = answered_inbound();
    internal.direction = Direction::Internal;
    assert_eq!(CallValues::from_record(&internal).external_number, None);
}

#[test]
fn only_the_location_is_left_out_of_the_values_criteria_read() {
    for (located, unlocated) in [
        (
            CallValues::from_record(&answered_inbound()),
            CallValues::from_record_unlocated(&answered_inbound()),
        ),
        (
            CallValues::from_event(&event(EventKind::Answered, Direction::Inbound)),
            CallValues::from_event_unlocated(&event(EventKind::Answered, Direction::Inbound)),
        ),
    ] {
        assert_eq!(located.location.as_deref(), Some("GB"));
        assert_eq!(unlocated.location, None);
        assert_eq!(CallValues { location: None, ..located }, unlocated);
    }
}

#[test]
fn only_a_ready_recording_is_a_link() {
    let mut record = answered_inbound();
    for (status, usable) in [
        (Some(RecordingStatus::Ready), true),
        (None, true),
        (Some(RecordingStatus::Pending), false),
        (Some(RecordingStatus::Failed), false),
    ] {
        record.recording_status = status;
        assert_eq!(CallValues::from_record(&record).has_recording(), usable, "{status:?}");
    }
}

#[test]
fn call_ids_are_stable_uuids() {
    let a = CallValues::from_record(&answered_inbound()).call_uuid;
    assert_eq!(a, CallValues::from_record(&answered_inbound()).call_uuid);
    assert_ne!(a, CallValues::from_record(&missed_inbound()).call_uuid);
    assert_eq!(a.get_version_num(), 5);
    // The same vendor id from two sources is two calls.
    assert_ne!(call_uuid("a", "1"), call_uuid("b", "1"));
    // A vendor UUID (Chronicall's) is kept as it is.
    let vendor = "3f2b8c1e-6a0d-4c8e-9b1a-2d7e5f4c3b2a";
    assert_eq!(call_uuid("x", vendor).to_string(), vendor);
    // Fixed forever: a change would rename every call in every CRM.
    assert_eq!(a.to_string(), "3b89f835-2385-544c-bf77-395beb951574");
}

#[test]
fn an_event_gives_what_it_knows() {
    let mut e = event(EventKind::Answered, Direction::Inbound);
    e.recording_url = Some("https://vendor/rec".into());
    e.recording_status = Some(RecordingStatus::Pending);
    let v = CallValues::from_event(&e);
    assert_eq!(v.event, Some(EventKind::Answered));
    assert_eq!(v.answered_at, Some(e.occurred_at));
    assert_eq!(v.external_number.as_deref(), Some("+442079460000"));
    assert_eq!(v.outcome, None);
    assert_eq!(v.duration_seconds, None);
    assert!(!v.has_recording());
    assert_eq!(v.version, None);
}

#[test]
fn users_map_by_id_then_extension_then_email_then_number() {
    let map = UserMap {
        users: [("101".to_owned(), "ext".to_owned()), ("ann@example.com".to_owned(), "mail".to_owned())]
            .into(),
        default_user: Some("fallback".into()),
    };
    let v = CallValues::from_record(&answered_inbound()).with_crm_user(&map);
    assert_eq!(v.crm_user_id.as_deref(), Some("ext"));
    let by_id = UserMap { users: [("ag-7".to_owned(), "id".to_owned())].into(), default_user: None };
    assert_eq!(
        CallValues::from_record(&answered_inbound()).with_crm_user(&by_id).crm_user_id.as_deref(),
        Some("id")
    );
    let nobody = CallValues::from_record(&missed_inbound()).with_crm_user(&map);
    assert_eq!(nobody.crm_user_id.as_deref(), Some("fallback"));
    assert_eq!(
        CallValues::from_record(&missed_inbound()).with_crm_user(&UserMap::default()).crm_user_id,
        None
    );
}

#[test]
fn every_value_name_is_in_the_context_and_back() {
    let context: BTreeSet<&str> = sample().context().into_keys().collect();
    let names: BTreeSet<&str> = VALUE_NAMES.iter().copied().collect();
    assert_eq!(context, names);
    assert_eq!(names.len(), VALUE_NAMES.len(), "no name twice");
}
