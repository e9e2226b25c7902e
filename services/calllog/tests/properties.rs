//! The fold on real event sequences: every vendor fixture's calls, as their adapters produce them.
//!
//! - Property (proptest): any permutation of a call's events, with any of them repeated, folds to
//!   the same record as the events in order, settled or not.
//! - Table: the outcome, status and answering agent of every fixture call, per vendor signal.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use switchboard_calllog::fold::{Event, fold};
use switchboard_model::{CallRecord, CallStatus, Completion, Outcome};

fn fold_call(call: &common::FixtureCall, events: &[Event], settled: bool) -> CallRecord {
    let first = &call.events[0];
    fold(&first.source_id, call.vendor, &first.call_id, events, settled).expect("a call has events").record
}

#[test]
fn shuffled_and_duplicated_fixture_calls_fold_to_the_same_record() {
    let calls = common::fixture_calls("pbx");
    let mut checked = 0;
    for call in &calls {
        let events: Vec<Event> = call.events.iter().map(Event::from).collect();
        let expected = (fold_call(call, &events, false), fold_call(call, &events, true));
        let n = events.len();
        let base = events.clone();
        // Up to two extra copies of each event, then any order.
        let strategy = proptest::collection::vec(0..n, 0..=2 * n).prop_flat_map(move |repeated| {
            let mut all = base.clone();
            all.extend(repeated.iter().map(|&i| base[i].clone()));
            Just(all).prop_shuffle()
        });
        let config = Config { cases: 48, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |shuffled| {
            prop_assert_eq!(&fold_call(call, &shuffled, false), &expected.0);
            prop_assert_eq!(&fold_call(call, &shuffled, true), &expected.1);
            Ok(())
        });
        if let Err(error) = result {
            panic!("{}: {error}", call.name);
        }
        checked += 1;
    }
    assert!(checked >= 40, "every vendor's fixture calls are checked, got {checked}");
}

/// One fixture call's expected result: its name (file, or file#call), the outcome once settled,
/// the answering (or calling) agent's extension, number or email, and whether the vendor's end
/// marker completes it without the settle sweep.
struct Expected(&'static str, Outcome, Option<&'static str>, bool);

#[test]
fn every_vendor_signal_gives_its_outcome() {
    use Outcome::*;
    let table = [
        Expected("aircall/inbound-answered.json", Answered, Some("camille.martin@example.fr"), true),
        Expected("aircall/inbound-missed.json", Missed, None, true),
        Expected("aircall/transfer.json", Answered, Some("camille.martin@example.fr"), true),
        Expected("aircall/voicemail-and-ivr-abandon.json#1790001003", Voicemail, None, true),
        Expected("aircall/voicemail-and-ivr-abandon.json#1790001004", AbandonedInIvr, None, true),
        Expected("asterisk/duplicate-delivery.json", AbandonedInIvr, None, true),
        Expected("asterisk/inbound-missed.json", Missed, None, true),
        Expected("asterisk/inbound-queue-ring-all.json", Answered, Some("101"), true),
        Expected("asterisk/outbound.json", Answered, Some("101"), true),
        Expected("asterisk/transfer.json", Answered, Some("101"), true),
        Expected("axialys/inbound-missed-in-queue.json", Missed, None, false),
        Expected("axialys/transfer-between-agents.json", Answered, Some("1042"), false),
        Expected("chronicall/inbound-missed.json", Missed, None, true),
        Expected("chronicall/outbound.json", Unknown, Some("202"), true),
        Expected("intermedia/transfer.json", Answered, Some("+14155550142"), false),
        Expected("mango/duplicate-delivery.json", AbandonedInIvr, None, true),
        Expected("mango/inbound-missed-queue.json", Missed, None, true),
        Expected("mango/transfer.json", Answered, Some("101"), true),
        Expected("net2phone/inbound-missed.json#n2p-7f3a9c02", Missed, None, true),
        Expected("net2phone/inbound-missed.json#n2p-7f3a9c03", Voicemail, None, true),
        Expected("onlinepbx/duplicate-delivery.json", Busy, Some("505"), false),
        Expected("onlinepbx/inbound-missed-in-ivr.json", Missed, None, true),
        Expected("onlinepbx/transfer-between-agents.json", Answered, Some("101"), false),
        Expected("sipuni/inbound-missed-in-queue.json", Missed, None, true),
        Expected("sipuni/transfer-between-agents.json", Answered, Some("201"), false),
        Expected("telphin/inbound-ivr-queue-answered.json", Answered, Some("101"), false),
        Expected("telphin/inbound-missed-in-queue.json", Missed, None, false),
        Expected("telphin/transfer-between-agents.json", Answered, Some("101"), false),
        Expected("twilio/duplicate-delivery.json", Busy, None, true),
        Expected("twilio/get-callback.json", NoAnswer, None, true),
        Expected("twilio/inbound-missed.json", Missed, None, true),
        Expected("twilio/transfer.json", Answered, Some("+14155550142"), true),
        Expected("ucontact/inbound-missed-rona.json", Missed, None, true),
        Expected("ucontact/transfer.json", Answered, Some("2101"), true),
        Expected("zadarma/duplicate-delivery.json", AbandonedInQueue, None, true),
        Expected("zadarma/inbound-missed.json", Missed, None, true),
        Expected("zadarma/transfer.json", Answered, Some("101"), true),
    ];
    let calls = common::fixture_calls("pbx");
    let mut failures = Vec::new();
    for Expected(name, outcome, agent, end_marker) in table {
        let found: Vec<&common::FixtureCall> =
            calls.iter().filter(|c| c.name == name || c.name.starts_with(&format!("{name}#"))).collect();
        let [call] = found.as_slice() else {
            failures.push(format!("{name}: {} fixture calls match", found.len()));
            continue;
        };
        let events: Vec<Event> = call.events.iter().map(Event::from).collect();
        let settled = fold_call(call, &events, true);
        let open = fold_call(call, &events, false);
        let named =
            settled.agent.as_ref().and_then(|a| a.extension.clone().or(a.number.clone()).or(a.email.clone()));
        let got = (settled.outcome, named.as_deref(), open.completion == Some(Completion::EndMarker));
        if got != (Some(outcome), agent, end_marker) {
            failures.push(format!("{name}: got {got:?}, expected {:?}", (Some(outcome), agent, end_marker)));
        }
        if end_marker && open.status != CallStatus::Ended {
            failures.push(format!("{name}: an end marker ends the call, status {:?}", open.status));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A ring-all group where one agent answered: one answered call, every agent who rang a leg, only
/// one of them answered.
#[test]
fn a_ring_all_queue_is_one_answered_call_listing_who_rang() {
    let calls = common::fixture_calls("pbx");
    let call =
        calls.iter().find(|c| c.name.starts_with("asterisk/inbound-queue-ring-all.json")).expect("fixture");
    let events: Vec<Event> = call.events.iter().map(Event::from).collect();
    let record = fold_call(call, &events, false);
    let agents: Vec<(Option<&str>, bool)> = record
        .legs
        .iter()
        .filter(|leg| leg.agent.extension.is_some())
        .map(|leg| (leg.agent.extension.as_deref(), leg.answered))
        .collect();
    assert_eq!(agents, [(Some("101"), true), (Some("102"), false)]);
    assert_eq!(record.outcome, Some(Outcome::Answered));
    assert!(record.legs.iter().all(|leg| leg.status == CallStatus::Ended), "{:?}", record.legs);
}

/// Every shape of record the fixtures produce survives the Avro codec of the calls topic, and a
/// consumer without a schema registry finds the schema by its fingerprint.
#[test]
fn every_fixture_record_round_trips_through_avro() {
    let codecs = switchboard_core::avro::Codecs::new().expect("codecs");
    for call in common::fixture_calls("pbx") {
        let events: Vec<Event> = call.events.iter().map(Event::from).collect();
        let mut record = fold_call(&call, &events, true);
        record.version = 7;
        record.completed_at = Some(record.started_at);
        let bytes = codecs.call_record.encode(&record).expect("encode");
        assert_eq!(&bytes[..2], &[0xC3, 0x01], "single-object encoding");
        assert_eq!(codecs.call_record.decode(&bytes).expect("decode"), record, "{}", call.name);
    }
}
