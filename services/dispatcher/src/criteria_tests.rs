use switchboard_model::{Direction, EventKind, LegId, Outcome, RecordingStatus, SourceId};

use super::*;
use crate::fixtures::{answered_inbound, answered_outbound, event, missed_inbound};

fn record(r: &CallRecord) -> CallValues {
    CallValues::from_record(r)
}

#[test]
fn event_triggers_fire_on_their_event_only() {
    let ringing_in = event(EventKind::Ringing, Direction::Inbound);
    let ringing_out = event(EventKind::Ringing, Direction::Outbound);
    let answered = event(EventKind::Answered, Direction::Inbound);
    let hangup = event(EventKind::Hangup, Direction::Inbound);
    let mut leg_hangup = hangup.clone();
    leg_hangup.leg_id = Some(LegId::parse("leg-2").expect("a leg id"));
    let mut recording = event(EventKind::Recording, Direction::Inbound);
    recording.recording_status = Some(RecordingStatus::Ready);
    let mut pending = recording.clone();
    pending.recording_status = Some(RecordingStatus::Pending);

    let fires = |t: Trigger, e: &CallEvent| t.fires_on(&Subject::Event(e));
    assert!(fires(Trigger::CallRingingInbound, &ringing_in));
    assert!(!fires(Trigger::CallRingingInbound, &ringing_out));
    assert!(fires(Trigger::CallRingingOutbound, &ringing_out));
    assert!(fires(Trigger::CallAnswered, &answered));
    assert!(!fires(Trigger::CallAnswered, &ringing_in));
    assert!(fires(Trigger::CallEnded, &hangup));
    assert!(!fires(Trigger::CallEnded, &leg_hangup), "a leg's hangup does not end the call");
    assert!(fires(Trigger::RecordingReady, &recording));
    assert!(!fires(Trigger::RecordingReady, &pending));
    for record_level in [Trigger::CallRecordCompleted, Trigger::CallRecordChanged, Trigger::CallMissed] {
        assert!(!fires(record_level, &hangup), "{record_level:?}");
        assert!(!record_level.is_event_level());
    }
}

#[test]
fn record_triggers_tell_first_from_later_versions() {
    let first = answered_inbound();
    let mut later = first.clone();
    later.version += 2;
    let completed = Subject::Record { record: &first, previous: None };
    let changed = Subject::Record { record: &later, previous: Some(&first) };
    let replayed = Subject::Record { record: &first, previous: Some(&first) };
    assert!(Trigger::CallRecordCompleted.fires_on(&completed));
    assert!(!Trigger::CallRecordCompleted.fires_on(&changed));
    assert!(Trigger::CallRecordChanged.fires_on(&changed));
    assert!(!Trigger::CallRecordChanged.fires_on(&completed));
    assert!(!Trigger::CallRecordChanged.fires_on(&replayed), "a version already seen changes nothing");
    assert!(!Trigger::CallAnswered.fires_on(&completed));
}

#[test]
fn missed_means_no_agent_answered() {
    let missed = missed_inbound();
    assert!(Trigger::CallMissed.fires_on(&Subject::Record { record: &missed, previous: None }));
    assert!(!Trigger::CallMissed.fires_on(&Subject::Record { record: &missed, previous: Some(&missed) }));
    let answered = answered_inbound();
    assert!(!Trigger::CallMissed.fires_on(&Subject::Record { record: &answered, previous: None }));
    for (outcome, is_missed) in
        [(Outcome::AbandonedInQueue, true), (Outcome::Voicemail, true), (Outcome::AbandonedInIvr, false)]
    {
        let mut r = missed.clone();
        r.outcome = Some(outcome);
        assert_eq!(
            Trigger::CallMissed.fires_on(&Subject::Record { record: &r, previous: None }),
            is_missed,
            "{outcome:?}"
        );
    }
}

#[test]
fn direction_criterion() {
    let c = Criterion::Direction { any_of: vec![CallDirection::Outbound] };
    assert!(c.matches(&record(&answered_outbound())));
    assert!(!c.matches(&record(&answered_inbound())));
}

#[test]
fn outcome_criterion() {
    let c: Criterion =
        serde_json::from_str(r#"{"type": "outcome", "any_of": ["missed", "busy"]}"#).expect("parses");
    assert!(c.matches(&record(&missed_inbound())));
    assert!(!c.matches(&record(&answered_inbound())));
    assert!(
        !c.matches(&CallValues::from_event(&event(EventKind::Hangup, Direction::Inbound))),
        "events have no outcome"
    );
    assert!(serde_json::from_str::<Criterion>(r#"{"type": "outcome", "any_of": ["lost"]}"#).is_err());
}

#[test]
fn source_criterion() {
    let c = Criterion::Source { any_of: vec![SourceId::parse("acme-pbx").expect("a source id")] };
    assert!(c.matches(&record(&answered_inbound())));
    let other = Criterion::Source { any_of: vec![SourceId::parse("other").expect("a source id")] };
    assert!(!other.matches(&record(&answered_inbound())));
}

#[test]
fn agent_criterion_reads_id_extension_email_and_number() {
    for key in ["ag-7", "101", "ann@example.com"] {
        assert!(Criterion::Agent { any_of: vec![key.into()] }.matches(&record(&answered_inbound())), "{key}");
    }
    assert!(!Criterion::Agent { any_of: vec!["102".into()] }.matches(&record(&answered_inbound())));
    assert!(!Criterion::Agent { any_of: vec!["101".into()] }.matches(&record(&missed_inbound())), "no agent");
}

#[test]
fn group_criterion_matches_nothing_until_groups_exist() {
    let c = Criterion::Group { any_of: vec!["sales".into()] };
    assert!(!c.matches(&record(&answered_inbound())));
    let mut v = record(&answered_inbound());
    v.group = Some("sales".into());
    assert!(c.matches(&v));
}

#[test]
fn duration_criterion_reads_total_or_talk_time() {
    let total = Criterion::DurationAtLeast { seconds: 100, measure: Measure::Total };
    let talk = Criterion::DurationAtLeast { seconds: 100, measure: Measure::Talk };
    assert!(total.matches(&record(&answered_inbound())), "105 s in total");
    assert!(!talk.matches(&record(&answered_inbound())), "95 s of talk");
    assert!(
        !Criterion::DurationAtLeast { seconds: 0, measure: Measure::Talk }
            .matches(&record(&missed_inbound()))
    );
    let parsed: Criterion =
        serde_json::from_str(r#"{"type": "duration_at_least", "seconds": 30}"#).expect("parses");
    assert_eq!(parsed, Criterion::DurationAtLeast { seconds: 30, measure: Measure::Total });
}

#[test]
fn number_prefix_criterion_compares_digits() {
    let v = record(&answered_inbound());
    assert!(Criterion::NumberPrefix { any_of: vec!["+44 20".into()] }.matches(&v));
    assert!(Criterion::NumberPrefix { any_of: vec!["1".into(), "4420".into()] }.matches(&v));
    assert!(!Criterion::NumberPrefix { any_of: vec!["+1".into()] }.matches(&v));
    assert!(Criterion::NumberPrefix { any_of: vec!["+1 415".into()] }.matches(&record(&answered_outbound())));
}

#[test]
fn tag_criterion_matches_nothing_until_tags_exist() {
    let c = Criterion::Tag { any_of: vec!["vip".into()] };
    let mut v = record(&answered_inbound());
    assert!(!c.matches(&v));
    v.tags = vec!["vip".into()];
    assert!(c.matches(&v));
}

#[test]
fn recording_criterion() {
    assert!(Criterion::HasRecording { value: true }.matches(&record(&answered_inbound())));
    assert!(Criterion::HasRecording { value: false }.matches(&record(&missed_inbound())));
    assert!(
        Criterion::HasRecording { value: false }.matches(&record(&answered_outbound())),
        "pending is not yet"
    );
}

#[test]
fn matched_contact_criterion() {
    assert!(Criterion::MatchedContact { value: true }.matches(&record(&answered_inbound())));
    assert!(Criterion::MatchedContact { value: false }.matches(&record(&missed_inbound())));
}

#[test]
fn all_criteria_must_match_and_none_means_every_call() {
    let answered = answered_inbound();
    let subject = Subject::Record { record: &answered, previous: None };
    assert!(fires(Trigger::CallRecordCompleted, &[], &subject));
    let both = [
        Criterion::Direction { any_of: vec![CallDirection::Inbound] },
        Criterion::HasRecording { value: true },
    ];
    assert!(fires(Trigger::CallRecordCompleted, &both, &subject));
    let one_fails = [both[0].clone(), Criterion::MatchedContact { value: false }];
    assert!(!fires(Trigger::CallRecordCompleted, &one_fails, &subject));
    assert!(!fires(Trigger::CallRecordChanged, &[], &subject));
}

#[test]
fn criteria_that_can_never_match_are_named() {
    assert!(Criterion::Agent { any_of: vec![] }.problem().is_some());
    assert!(Criterion::NumberPrefix { any_of: vec!["+".into()] }.problem().is_some());
    assert!(Criterion::DurationAtLeast { seconds: -1, measure: Measure::Total }.problem().is_some());
    assert!(Criterion::HasRecording { value: true }.problem().is_none());
}
