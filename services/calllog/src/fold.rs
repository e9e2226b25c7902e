//! The call state machine: a call's record as a pure function of the *set* of its events.
//!
//! [`fold`] sees every distinct event of one call at once (the writer loads them all from
//! `call_events` whenever a new one arrives), sorts them into one total order, and derives the
//! record. Nothing depends on arrival order or on duplicates: events are de-duplicated by
//! `event_id` and sorted by (vendor time, vendor sequence number, kind, event id), so any
//! permutation or repetition of the same events gives the same record. Sequence numbers (Twilio
//! `SequenceNumber`, Mango `seq`) order events that share a timestamp, which is where the
//! vendors that send them need it (second-resolution times).
//!
//! # Legs
//! Events with the same `leg_id` are one leg; events without one belong to the call's main leg,
//! whose id is the call id (Asterisk's caller channel has that id too). Each leg is a state
//! machine ringing → answered → ended where a later state always wins: a hangup that arrives
//! before the answer still leaves the leg answered and ended. A leg is *answered* when it has an
//! answer event or a hangup whose disposition is answered (Telphin `Bridged=yes`, uContact's
//! served interaction); adapters already drop machine answers (an IVR picking up). A leg is an
//! *agent leg* when any of its events names an agent (extension, number, email or directory id);
//! other legs are *system legs* (IVRs, queues, the caller's channel).
//!
//! # The call
//! - **status**: ended once the vendor's end marker arrived (a hangup without a leg) or every leg
//!   has hung up; else answered once any leg is answered; else ringing. When the call has ended,
//!   legs still open end with it (Aircall never closes an agent's ringing leg).
//! - **answered** when any leg is: a ring-all group where one agent answered is one answered call
//!   whose other legs only rang.
//! - **times**: started at the first state event, answered at the first answer, ended at the last
//!   hangup. Numbers and direction come from the earliest event that has them, preferring events
//!   of the call itself over those of a leg; the agent is whoever answered first (for an outbound
//!   call, whoever placed it); contact and recording from the latest event that has them.
//! - **recording**: the recordings stage marks every event that names a recording pending, ready
//!   or failed. The call's `recording_status` is the highest any event gives (ready over failed
//!   over pending, so a late "pending" copy never undoes "ready"), with the latest failure reason
//!   when it is failed; its `recording_url` is the latest link of a ready recording, else of a
//!   recording event, else of any event.
//! - **queue**: the earliest an event names (the one the call entered through).
//! - **wrap-up**: the content of the latest `wrap_up` event (an agent's disposition, note and
//!   tags, set through the desk after the call); such events open no leg and change nothing else.
//! - **complete** once the end marker arrived or the settle sweep marked the call `settled`.
//!
//! # Outcome
//! Decided once the call has ended or settled, from the disposition the vendor gave the call as a
//! whole ("D": the latest hangup of the call itself with a known disposition; for inbound calls
//! without one, the latest of a system leg, which is how Telphin reports an IVR or queue that did
//! not bridge; for outbound calls, the latest of any leg, the dialled party):
//!
//! | call | rule | outcome |
//! |---|---|---|
//! | any | a leg answered | `answered` |
//! | any | a voicemail disposition on any event | `voicemail` |
//! | any | D busy / rejected / failed | `busy` / `rejected` / `failed` |
//! | outbound, internal | D no answer or cancelled, or no D | `no_answer` |
//! | outbound, internal | no D, from a vendor that never reports answers (Chronicall) | `unknown` |
//! | inbound | D cancelled (the caller hung up), agents offered / none | `abandoned_in_queue` / `abandoned_in_ivr` |
//! | inbound | D no answer on the call itself (the vendor's "nobody answered") | `missed` |
//! | inbound | D no answer on a system leg (Telphin `Bridged=no`), agents offered / none | `missed` / `abandoned_in_ivr` |
//! | inbound | no D, no agent offered | `abandoned_in_ivr` |
//! | inbound | no D, an agent leg cancelled or still ringing when the call ended | `abandoned_in_queue` |
//! | inbound | no D, every agent leg rang out (no answer, declined, busy) | `missed` |
//!
//! "Agents offered" means some agent leg exists. A direction the vendor never stated is read as
//! inbound, where unanswered calls matter most. What this means per vendor signal: Telphin
//! `Bridged=no` on an IVR/queue hangup → `missed` when an agent's extension rang, else
//! `abandoned_in_ivr`; Twilio children all `no-answer` → `missed`, `canceled` → abandoned in queue,
//! a parent `busy` → `busy`; Aircall `abandoned_in_ivr` (cancelled, no agent) → `abandoned_in_ivr`,
//! `agents_did_not_answer` → `missed`, a voicemail → `voicemail`; Zadarma/Mango/Sipuni/Aircall
//! call-level `no answer` → `missed`, `cancel` → abandoned; Asterisk legs `NOANSWER` → `missed`,
//! `CANCEL` while the caller waits → abandoned in queue, a caller hanging up in the IVR (no dial)
//! → `abandoned_in_ivr`. OnlinePBX reports a hang-up in its voice menu as a call-level no answer,
//! so it is `missed`, as are Chronicall's and net2phone's unanswered calls, whose adapters cannot
//! name the agents rung.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use switchboard_core::model::{
    AgentMatch, AgentRef, CallEvent, CallId, CallRecord, CallStatus, Completion, ContactMatch, Direction,
    Disposition, EventKind, LegRecord, Outcome, RecordingStatus, SourceId, Vendor, WrapUp,
};

/// What the fold reads of one event: a `CallEvent` or a `call_events` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub leg_id: Option<String>,
    pub kind: EventKind,
    pub direction: Direction,
    pub from_raw: Option<String>,
    pub from_e164: Option<String>,
    pub to_raw: Option<String>,
    pub to_e164: Option<String>,
    pub agent_extension: Option<String>,
    pub agent_number: Option<String>,
    pub agent_email: Option<String>,
    pub agent_id: Option<String>,
    pub agent_match: Option<AgentMatch>,
    pub contact_ids: Vec<String>,
    pub contact_match: Option<ContactMatch>,
    pub responsible_agent_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub sequence: Option<i64>,
    pub disposition: Option<Disposition>,
    pub hangup_cause: Option<String>,
    pub recording_url: Option<String>,
    pub recording_id: Option<String>,
    pub recording_status: Option<RecordingStatus>,
    pub recording_error: Option<String>,
    pub queue: Option<String>,
    pub wrap_up: Option<WrapUp>,
}

impl From<&CallEvent> for Event {
    fn from(e: &CallEvent) -> Self {
        Self {
            event_id: e.event_id.to_string(),
            leg_id: e.leg_id.as_ref().map(ToString::to_string),
            kind: e.kind,
            direction: e.direction,
            from_raw: e.from_raw.clone(),
            from_e164: e.from_e164.as_ref().map(ToString::to_string),
            to_raw: e.to_raw.clone(),
            to_e164: e.to_e164.as_ref().map(ToString::to_string),
            agent_extension: e.agent_extension.clone(),
            agent_number: e.agent_number.clone(),
            agent_email: e.agent_email.clone(),
            agent_id: e.agent_id.clone(),
            agent_match: e.agent_match,
            contact_ids: e.contact_ids.clone(),
            contact_match: e.contact_match,
            responsible_agent_id: e.responsible_agent_id.clone(),
            occurred_at: e.occurred_at,
            received_at: e.received_at,
            sequence: e.sequence,
            disposition: e.disposition,
            hangup_cause: e.hangup_cause.clone(),
            recording_url: e.recording_url.clone(),
            recording_id: e.recording_id.clone(),
            recording_status: e.recording_status,
            recording_error: e.recording_error.clone(),
            queue: e.queue.clone(),
            wrap_up: e.wrap_up.clone(),
        }
    }
}

/// The fold's result: the record (at version 0, not yet stamped with a completion time) and what
/// only the database keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    pub record: CallRecord,
    /// Distinct events of the call, and of each leg (parallel to `record.legs`).
    pub event_count: i32,
    pub leg_event_counts: Vec<i32>,
    pub first_received_at: DateTime<Utc>,
}

fn kind_rank(kind: EventKind) -> u8 {
    match kind {
        EventKind::Ringing => 0,
        EventKind::Answered => 1,
        EventKind::Hangup => 2,
        EventKind::Recording => 3,
        EventKind::Unknown => 4,
        EventKind::WrapUp => 5,
    }
}

/// The one total order of a call's events.
fn order_key(e: &Event) -> (DateTime<Utc>, i64, u8, &str) {
    (e.occurred_at, e.sequence.unwrap_or(i64::MAX), kind_rank(e.kind), &e.event_id)
}

fn known(disposition: Option<Disposition>) -> Option<Disposition> {
    disposition.filter(|d| *d != Disposition::Unknown)
}

fn is_state(kind: EventKind) -> bool {
    matches!(kind, EventKind::Ringing | EventKind::Answered | EventKind::Hangup)
}

/// An agent's fields as the events of one leg name them: the latest value of each, taken from
/// answer events first (who answered is the agent of the leg), then from any event.
#[derive(Default)]
struct AgentAcc<'a> {
    answered: [Option<&'a str>; 4],
    other: [Option<&'a str>; 4],
    matched_answered: Option<AgentMatch>,
    matched_other: Option<AgentMatch>,
}

impl<'a> AgentAcc<'a> {
    fn see(&mut self, e: &'a Event) {
        let fields = [&e.agent_id, &e.agent_extension, &e.agent_number, &e.agent_email];
        let (slots, matched) = if e.kind == EventKind::Answered {
            (&mut self.answered, &mut self.matched_answered)
        } else {
            (&mut self.other, &mut self.matched_other)
        };
        for (slot, value) in slots.iter_mut().zip(fields) {
            if let Some(value) = value.as_deref() {
                *slot = Some(value);
            }
        }
        if e.agent_match.is_some() && e.agent_id.is_some() {
            *matched = e.agent_match;
        }
    }

    fn build(&self) -> AgentRef {
        let [id, extension, number, email] = self.answered;
        let [other_id, other_extension, other_number, other_email] = self.other;
        let pick = |answered: Option<&str>, other: Option<&str>| answered.or(other).map(str::to_owned);
        let agent_id = pick(id, other_id);
        AgentRef {
            agent_match: agent_id.as_ref().and(self.matched_answered.or(self.matched_other)),
            agent_id,
            extension: pick(extension, other_extension),
            number: pick(number, other_number),
            email: pick(email, other_email),
        }
    }
}

struct LegAcc<'a> {
    leg_id: &'a str,
    events: i32,
    first_any: DateTime<Utc>,
    first_state: Option<DateTime<Utc>>,
    rang_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    answered: bool,
    hung_up: bool,
    ended_at: Option<DateTime<Utc>>,
    disposition: Option<Disposition>,
    hangup_cause: Option<&'a str>,
    recording_url: Option<&'a str>,
    recording_id: Option<&'a str>,
    agent: AgentAcc<'a>,
}

impl<'a> LegAcc<'a> {
    fn new(leg_id: &'a str, at: DateTime<Utc>) -> Self {
        Self {
            leg_id,
            events: 0,
            first_any: at,
            first_state: None,
            rang_at: None,
            answered_at: None,
            answered: false,
            hung_up: false,
            ended_at: None,
            disposition: None,
            hangup_cause: None,
            recording_url: None,
            recording_id: None,
            agent: AgentAcc::default(),
        }
    }

    /// Events come in the call's order, so "latest" is simply the last one seen.
    fn see(&mut self, e: &'a Event) {
        self.events = self.events.saturating_add(1);
        let at = e.occurred_at;
        if is_state(e.kind) {
            self.first_state.get_or_insert(at);
        }
        match e.kind {
            EventKind::Ringing => {
                self.rang_at.get_or_insert(at);
            }
            EventKind::Answered => {
                self.answered_at.get_or_insert(at);
                self.answered = true;
            }
            EventKind::Hangup => {
                self.hung_up = true;
                self.ended_at = Some(at);
                if let Some(disposition) = known(e.disposition) {
                    self.disposition = Some(disposition);
                    self.answered |= disposition == Disposition::Answered;
                }
                self.hangup_cause = e.hangup_cause.as_deref().or(self.hangup_cause);
            }
            EventKind::Recording | EventKind::Unknown | EventKind::WrapUp => {}
        }
        self.recording_url = e.recording_url.as_deref().or(self.recording_url);
        self.recording_id = e.recording_id.as_deref().or(self.recording_id);
        self.agent.see(e);
    }

    /// At its first state event; a leg with none (only recordings) at its first event.
    fn started_at(&self) -> DateTime<Utc> {
        self.first_state.unwrap_or(self.first_any)
    }

    /// The leg's record. A leg still open when the call ended ends with it (Aircall never closes an
    /// agent's ringing leg); `call_ended_at` is the call's end, `None` while it has not ended.
    fn record(&self, agent: AgentRef, call_ended: bool, call_ended_at: Option<DateTime<Utc>>) -> LegRecord {
        let status = if self.hung_up || call_ended {
            CallStatus::Ended
        } else if self.answered {
            CallStatus::Answered
        } else {
            CallStatus::Ringing
        };
        LegRecord {
            leg_id: self.leg_id.to_owned(),
            status,
            answered: self.answered,
            agent,
            started_at: self.started_at(),
            rang_at: self.rang_at,
            answered_at: self.answered_at,
            ended_at: self.ended_at.or(call_ended_at),
            disposition: if self.answered { Some(Disposition::Answered) } else { self.disposition },
            hangup_cause: self.hangup_cause.map(str::to_owned),
            recording_url: self.recording_url.map(str::to_owned),
            recording_id: self.recording_id.map(str::to_owned),
        }
    }
}

/// One copy per event id (the first by content, so that the choice does not depend on which copy
/// came first), in the call's total order.
fn distinct_in_order(events: &[Event]) -> Vec<&Event> {
    let mut distinct: Vec<&Event> = events.iter().collect();
    distinct.sort_by(|a, b| {
        (&a.event_id, order_key(a), a.received_at).cmp(&(&b.event_id, order_key(b), b.received_at))
    });
    distinct.dedup_by(|a, b| a.event_id == b.event_id);
    distinct.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    distinct
}

/// The call's recording as its events name it; each field is the latest event's that has it.
#[derive(Default)]
struct RecordingAcc<'a> {
    /// The link of an event whose recording is ready (the stable link that works) wins over that
    /// of a recording event, which wins over that of any other event.
    ready_url: Option<&'a str>,
    recording_event_url: Option<&'a str>,
    other_url: Option<&'a str>,
    /// The id of a recording event wins over that of any other event.
    recording_event_id: Option<&'a str>,
    other_id: Option<&'a str>,
    /// The highest status any event gives.
    status: Option<RecordingStatus>,
    /// The reason of the latest failure.
    error: Option<&'a str>,
}

impl<'a> RecordingAcc<'a> {
    fn see(&mut self, e: &'a Event) {
        let from_recording = e.kind == EventKind::Recording;
        if let Some(value) = e.recording_id.as_deref() {
            if from_recording {
                self.recording_event_id = Some(value);
            } else {
                self.other_id = Some(value);
            }
        }
        if let Some(value) = e.recording_url.as_deref() {
            if e.recording_status == Some(RecordingStatus::Ready) {
                self.ready_url = Some(value);
            } else if from_recording {
                self.recording_event_url = Some(value);
            } else {
                self.other_url = Some(value);
            }
        }
        // The highest status wins whatever the order (ready over failed over pending); among
        // failures the latest reason.
        if let Some(status) = e.recording_status.filter(|s| *s != RecordingStatus::Unknown) {
            if self.status.is_none_or(|best| status.precedence() > best.precedence()) {
                self.status = Some(status);
            }
            if status == RecordingStatus::Failed {
                self.error = e.recording_error.as_deref().or(self.error);
            }
        }
    }

    fn url(&self) -> Option<String> {
        self.ready_url.or(self.recording_event_url).or(self.other_url).map(str::to_owned)
    }

    fn id(&self) -> Option<String> {
        self.recording_event_id.or(self.other_id).map(str::to_owned)
    }

    /// The failure's reason while the recording stands failed: a ready one makes it moot.
    fn error(&self) -> Option<String> {
        self.error.filter(|_| self.status == Some(RecordingStatus::Failed)).map(str::to_owned)
    }
}

/// One pass over a call's events, in order: its legs, and what the call-level rules read.
#[derive(Default)]
struct Scan<'a> {
    /// The id of the call's main leg, which events without a leg id belong to.
    main_leg: &'a str,
    /// The call's legs, in the order of their first events; filled in once every event is seen.
    legs: Vec<LegAcc<'a>>,
    /// While scanning: leg id → how many legs were open before it, and the leg.
    open: HashMap<&'a str, (usize, LegAcc<'a>)>,
    /// A hangup of the call itself arrived: the vendor's end marker.
    end_marker: bool,
    /// The latest known disposition of the call's own hangups.
    call_disposition: Option<Disposition>,
    /// The latest hangup cause of the call itself, and of any hangup.
    call_cause: Option<&'a str>,
    any_cause: Option<&'a str>,
    voicemail: bool,
    /// The latest event with a contact match.
    contact: Option<&'a Event>,
    recording: RecordingAcc<'a>,
    /// The latest wrap-up event's content.
    wrap_up: Option<&'a WrapUp>,
}

impl<'a> Scan<'a> {
    fn new(distinct: &[&'a Event], main_leg: &'a str) -> Self {
        let mut scan = Scan { main_leg, ..Scan::default() };
        for &e in distinct {
            scan.see(e);
        }
        let mut legs: Vec<(usize, LegAcc<'a>)> = std::mem::take(&mut scan.open).into_values().collect();
        legs.sort_unstable_by_key(|(opened_before, _)| *opened_before);
        scan.legs = legs.into_iter().map(|(_, leg)| leg).collect();
        scan
    }

    fn see(&mut self, e: &'a Event) {
        if e.kind == EventKind::WrapUp {
            // An agent's note about the call, not something the PBX saw: it opens no leg and
            // changes no state, time or number.
            self.wrap_up = e.wrap_up.as_ref().or(self.wrap_up);
            return;
        }
        let leg_id = e.leg_id.as_deref().unwrap_or(self.main_leg);
        let opened_before = self.open.len();
        let (_, leg) =
            self.open.entry(leg_id).or_insert_with(|| (opened_before, LegAcc::new(leg_id, e.occurred_at)));
        leg.see(e);
        if e.kind == EventKind::Hangup {
            if e.leg_id.is_none() {
                self.end_marker = true;
                self.call_disposition = known(e.disposition).or(self.call_disposition);
                self.call_cause = e.hangup_cause.as_deref().or(self.call_cause);
            }
            self.any_cause = e.hangup_cause.as_deref().or(self.any_cause);
        }
        self.voicemail |= e.disposition == Some(Disposition::Voicemail);
        if e.contact_match.is_some() {
            self.contact = Some(e);
        }
        self.recording.see(e);
    }

    fn answered(&self) -> bool {
        self.legs.iter().any(|l| l.answered)
    }

    /// Ended once the end marker arrived or every leg with a state has hung up; else answered
    /// once any leg is; else ringing.
    fn status(&self) -> CallStatus {
        let stateful: Vec<&LegAcc<'_>> = self.legs.iter().filter(|l| l.first_state.is_some()).collect();
        let all_hung_up = !stateful.is_empty() && stateful.iter().all(|l| l.hung_up);
        if self.end_marker || all_hung_up {
            CallStatus::Ended
        } else if self.answered() {
            CallStatus::Answered
        } else {
            CallStatus::Ringing
        }
    }

    /// D: the call's own disposition, else the latest of a system leg (inbound) or of any leg
    /// (outbound). `agents`: each leg's, parallel to `legs`.
    fn disposition(
        &self,
        distinct: &[&Event],
        agents: &[AgentRef],
        outbound: bool,
    ) -> Option<(Source, Disposition)> {
        // Every hangup's leg is among `legs`, having been scanned from the same events.
        let system_legs: HashSet<&str> = self
            .legs
            .iter()
            .zip(agents)
            .filter(|(_, agent)| !agent.is_known())
            .map(|(l, _)| l.leg_id)
            .collect();
        let leg_disposition = |system_only: bool| {
            distinct
                .iter()
                .rev()
                .filter(|e| e.kind == EventKind::Hangup && e.leg_id.is_some())
                .filter(|e| {
                    !system_only || system_legs.contains(e.leg_id.as_deref().unwrap_or(self.main_leg))
                })
                .find_map(|e| known(e.disposition))
        };
        match self.call_disposition {
            Some(d) => Some((Source::Call, d)),
            None if outbound => leg_disposition(false).map(|d| (Source::AnyLeg, d)),
            None => leg_disposition(true).map(|d| (Source::SystemLeg, d)),
        }
    }
}

/// The first value `field` gives, preferring events of the call itself over those of a leg.
fn earliest<'a, T>(events: &[&'a Event], field: impl Fn(&'a Event) -> Option<T>) -> Option<T> {
    let call_level = events.iter().copied().filter(|e| e.leg_id.is_none()).find_map(&field);
    call_level.or_else(|| events.iter().copied().find_map(&field))
}

/// Where the call's disposition ("D" in the module documentation) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Call,
    SystemLeg,
    AnyLeg,
}

/// Everything the outcome rules read, gathered by [`fold`].
#[derive(Debug, Clone, Copy)]
struct Signals {
    vendor: Vendor,
    direction: Direction,
    answered: bool,
    voicemail: bool,
    disposition: Option<(Source, Disposition)>,
    agents_offered: bool,
    /// An agent leg was cancelled, or still ringing when the call ended: the caller gave up first.
    agent_leg_cut_short: bool,
}

/// Vendors whose events never say whether an outbound call was answered.
fn reports_answers(vendor: Vendor) -> bool {
    vendor != Vendor::Chronicall
}

/// The outcome table of the module documentation.
fn outcome(s: &Signals) -> Outcome {
    if s.answered {
        return Outcome::Answered;
    }
    if s.voicemail {
        return Outcome::Voicemail;
    }
    match s.disposition.map(|(_, d)| d) {
        Some(Disposition::Busy) => return Outcome::Busy,
        Some(Disposition::Rejected) => return Outcome::Rejected,
        Some(Disposition::Failed) => return Outcome::Failed,
        _ => {}
    }
    if matches!(s.direction, Direction::Outbound | Direction::Internal) {
        return match s.disposition {
            Some(_) => Outcome::NoAnswer,
            None if reports_answers(s.vendor) => Outcome::NoAnswer,
            None => Outcome::Unknown,
        };
    }
    let abandoned = if s.agents_offered { Outcome::AbandonedInQueue } else { Outcome::AbandonedInIvr };
    match s.disposition {
        Some((_, Disposition::Cancelled)) => abandoned,
        Some((Source::Call, Disposition::NoAnswer)) => Outcome::Missed,
        Some((_, Disposition::NoAnswer)) if s.agents_offered => Outcome::Missed,
        Some((_, Disposition::NoAnswer)) => Outcome::AbandonedInIvr,
        _ if !s.agents_offered => Outcome::AbandonedInIvr,
        _ if s.agent_leg_cut_short => Outcome::AbandonedInQueue,
        _ => Outcome::Missed,
    }
}

fn seconds_between(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<i64> {
    Some(to?.signed_duration_since(from?).num_seconds().max(0))
}

/// The call's agent: who answered first (legs with an answer time before those answered only by a
/// hangup's disposition, whose time is unknown); for an outbound call without an answer, who
/// placed it.
fn call_agent(agent_legs: &[(&LegAcc<'_>, &AgentRef)], outbound: bool) -> Option<AgentRef> {
    agent_legs
        .iter()
        .filter(|(leg, _)| leg.answered)
        .min_by_key(|(leg, _)| {
            (
                leg.answered_at.is_none(),
                leg.answered_at.unwrap_or_else(|| leg.started_at()),
                leg.started_at(),
                leg.leg_id,
            )
        })
        .or_else(|| {
            outbound
                .then(|| agent_legs.iter().min_by_key(|(leg, _)| (leg.started_at(), leg.leg_id)))
                .flatten()
        })
        .map(|(_, agent)| (*agent).clone())
}

/// Folds the events of one call. `settled` is the settle sweep's mark (no new event for the settle
/// time): the call is then complete even without an end marker. Returns `None` for no events.
pub fn fold(
    source_id: &SourceId,
    vendor: Vendor,
    call_id: &CallId,
    events: &[Event],
    settled: bool,
) -> Option<Folded> {
    let distinct = distinct_in_order(events);
    let first = *distinct.first()?;
    let scan = Scan::new(&distinct, call_id.as_str());
    let agents: Vec<AgentRef> = scan.legs.iter().map(|l| l.agent.build()).collect();

    let status = scan.status();
    let call_ended = status == CallStatus::Ended;
    let ended_at = if call_ended { scan.legs.iter().filter_map(|l| l.ended_at).max() } else { None };
    let started_at = scan.legs.iter().map(LegAcc::started_at).min().unwrap_or(first.occurred_at);
    let answered_at = scan.legs.iter().filter_map(|l| l.answered_at).min();
    let direction = earliest(&distinct, |e| Some(e.direction).filter(|d| *d != Direction::Unknown))
        .unwrap_or(Direction::Unknown);
    let outbound = matches!(direction, Direction::Outbound | Direction::Internal);

    let disposition = scan.disposition(&distinct, &agents, outbound);
    let agent_legs: Vec<(&LegAcc<'_>, &AgentRef)> =
        scan.legs.iter().zip(&agents).filter(|(_, agent)| agent.is_known()).collect();
    let signals = Signals {
        vendor,
        direction,
        answered: scan.answered(),
        voicemail: scan.voicemail,
        disposition,
        agents_offered: !agent_legs.is_empty(),
        agent_leg_cut_short: agent_legs
            .iter()
            .any(|(leg, _)| leg.disposition == Some(Disposition::Cancelled) || !leg.hung_up),
    };
    let outcome = (call_ended || settled).then(|| outcome(&signals));
    let completion = if scan.end_marker {
        Some(Completion::EndMarker)
    } else if settled {
        Some(Completion::Settled)
    } else {
        None
    };
    let agent = call_agent(&agent_legs, outbound);

    let mut legs: Vec<(LegRecord, i32)> = scan
        .legs
        .iter()
        .zip(agents)
        .map(|(leg, agent)| (leg.record(agent, call_ended, ended_at), leg.events))
        .collect();
    legs.sort_by(|(a, _), (b, _)| (a.started_at, &a.leg_id).cmp(&(b.started_at, &b.leg_id)));
    let (legs, leg_event_counts) = legs.into_iter().unzip();

    let number = |e164: fn(&Event) -> Option<&String>, raw: fn(&Event) -> Option<&String>| {
        earliest(&distinct, e164).or_else(|| earliest(&distinct, raw)).cloned()
    };
    let contact = scan.contact;
    let record = CallRecord {
        source_id: source_id.clone(),
        vendor,
        call_id: call_id.clone(),
        version: 0,
        status,
        outcome,
        completion,
        completed_at: None,
        direction,
        from_number: number(|e| e.from_e164.as_ref(), |e| e.from_raw.as_ref()),
        to_number: number(|e| e.to_e164.as_ref(), |e| e.to_raw.as_ref()),
        started_at,
        answered_at,
        ended_at,
        duration_seconds: seconds_between(Some(started_at), ended_at),
        talk_seconds: seconds_between(answered_at, ended_at),
        disposition: disposition.map(|(_, d)| d),
        hangup_cause: scan.call_cause.or(scan.any_cause).map(str::to_owned),
        agent,
        contact_ids: contact.map(|e| e.contact_ids.clone()).unwrap_or_default(),
        contact_match: contact.and_then(|e| e.contact_match),
        responsible_agent_id: contact.and_then(|e| e.responsible_agent_id.clone()),
        recording_url: scan.recording.url(),
        recording_id: scan.recording.id(),
        legs,
        recording_status: scan.recording.status,
        recording_error: scan.recording.error(),
        queue: earliest(&distinct, |e| e.queue.as_ref()).cloned(),
        wrap_up: scan.wrap_up.cloned(),
    };
    Some(Folded {
        record,
        event_count: distinct.len() as i32,
        leg_event_counts,
        first_received_at: distinct.iter().map(|e| e.received_at).min().unwrap_or(first.received_at),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + second, 0).single().expect("valid time")
    }

    /// A terse event: `leg` None is the call itself; `agent` names the leg's agent extension.
    fn ev(id: &str, leg: Option<&str>, kind: EventKind, second: i64) -> Event {
        Event {
            event_id: id.into(),
            leg_id: leg.map(Into::into),
            kind,
            direction: Direction::Unknown,
            from_raw: None,
            from_e164: None,
            to_raw: None,
            to_e164: None,
            agent_extension: None,
            agent_number: None,
            agent_email: None,
            agent_id: None,
            agent_match: None,
            contact_ids: Vec::new(),
            contact_match: None,
            responsible_agent_id: None,
            occurred_at: at(second),
            received_at: at(second),
            sequence: None,
            disposition: None,
            hangup_cause: None,
            recording_url: None,
            recording_id: None,
            recording_status: None,
            recording_error: None,
            queue: None,
            wrap_up: None,
        }
    }

    fn agent(mut e: Event, extension: &str) -> Event {
        e.agent_extension = Some(extension.into());
        e
    }

    fn dispo(mut e: Event, disposition: Disposition) -> Event {
        e.disposition = Some(disposition);
        e
    }

    fn inbound(mut e: Event) -> Event {
        e.direction = Direction::Inbound;
        e
    }

    fn run(events: &[Event], settled: bool) -> CallRecord {
        let source = SourceId::parse("pbx").expect("id");
        let call = CallId::parse("c").expect("id");
        fold(&source, Vendor::Generic, &call, events, settled).expect("events").record
    }

    #[test]
    fn ring_all_with_one_answer_is_one_answered_call_with_who_rang_and_who_answered() {
        use EventKind::*;
        let events = vec![
            inbound(ev("1", None, Ringing, 0)),
            agent(ev("2", Some("a"), Ringing, 1), "101"),
            agent(ev("3", Some("b"), Ringing, 1), "102"),
            agent(ev("4", Some("a"), Answered, 5), "101"),
            dispo(agent(ev("5", Some("b"), Hangup, 5), "102"), Disposition::Cancelled),
            ev("6", Some("a"), Hangup, 60),
            ev("7", None, Hangup, 61),
        ];
        let record = run(&events, false);
        assert_eq!((record.status, record.outcome), (CallStatus::Ended, Some(Outcome::Answered)));
        assert_eq!(record.completion, Some(Completion::EndMarker));
        assert_eq!(record.agent.and_then(|a| a.extension).as_deref(), Some("101"));
        let answered: Vec<(&str, bool)> =
            record.legs.iter().map(|l| (l.leg_id.as_str(), l.answered)).collect();
        assert_eq!(answered, [("c", false), ("a", true), ("b", false)]);
        assert_eq!(record.legs[2].disposition, Some(Disposition::Cancelled));
        assert_eq!((record.talk_seconds, record.duration_seconds), (Some(56), Some(61)));
    }

    fn wrap_up(id: &str, second: i64, code: &str, tags: &[&str]) -> Event {
        let mut e = ev(id, None, EventKind::WrapUp, second);
        e.wrap_up = Some(WrapUp {
            code: Some(code.into()),
            label: None,
            note: Some(format!("note {id}")),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            agent_id: Some("ann".into()),
            set_at: at(second),
        });
        e
    }

    #[test]
    fn the_latest_wrap_up_wins_and_changes_nothing_else_of_the_call() {
        use EventKind::*;
        // Legs only: a wrap-up (which names no leg) must not open the call's main leg.
        let call = vec![
            inbound(agent(ev("1", Some("a"), Ringing, 0), "101")),
            agent(ev("2", Some("a"), Answered, 5), "101"),
            ev("3", Some("a"), Hangup, 60),
        ];
        let plain = run(&call, false);
        assert_eq!(plain.wrap_up, None);
        let first = wrap_up("w1", 90, "callback", &["vip"]);
        let second = wrap_up("w2", 120, "sale", &["vip", "renewal"]);
        for events in [
            [call.clone(), vec![first.clone(), second.clone()]].concat(),
            [vec![second.clone()], call.clone(), vec![first.clone()]].concat(),
        ] {
            let record = run(&events, false);
            let wrap = record.wrap_up.clone().expect("a wrap-up");
            assert_eq!((wrap.code.as_deref(), wrap.tags.len()), (Some("sale"), 2), "the last one wins");
            assert_eq!(CallRecord { wrap_up: None, ..record }, plain, "nothing else changes");
        }
    }

    #[test]
    fn a_hangup_before_its_answer_still_ends_an_answered_leg() {
        use EventKind::*;
        let forward = vec![
            ev("1", Some("a"), Ringing, 0),
            ev("2", Some("a"), Answered, 3),
            ev("3", Some("a"), Hangup, 9),
        ];
        let mut reversed = forward.clone();
        reversed.reverse();
        let record = run(&reversed, false);
        assert_eq!(record, run(&forward, false));
        assert_eq!(record.legs[0].status, CallStatus::Ended);
        assert!(record.legs[0].answered);
        assert_eq!(record.status, CallStatus::Ended, "every leg hung up");
        assert_eq!(record.completion, None, "no end marker: complete only once settled");
        assert_eq!(run(&forward, true).completion, Some(Completion::Settled));
    }

    #[test]
    fn inbound_outcomes_follow_the_table() {
        use EventKind::*;
        let ringing = || inbound(ev("r", None, Ringing, 0));
        let agent_rings = || agent(ev("ar", Some("a"), Ringing, 1), "101");
        let cases: Vec<(&str, Vec<Event>, Outcome)> = vec![
            ("caller leaves the menu", vec![ringing(), ev("h", None, Hangup, 9)], Outcome::AbandonedInIvr),
            (
                "caller leaves while an agent rings",
                vec![ringing(), agent_rings(), ev("h", None, Hangup, 9)],
                Outcome::AbandonedInQueue,
            ),
            (
                "agents ring out",
                vec![
                    ringing(),
                    agent_rings(),
                    dispo(ev("ah", Some("a"), Hangup, 8), Disposition::NoAnswer),
                    ev("h", None, Hangup, 9),
                ],
                Outcome::Missed,
            ),
            (
                "the vendor says nobody answered",
                vec![ringing(), dispo(ev("h", None, Hangup, 9), Disposition::NoAnswer)],
                Outcome::Missed,
            ),
            (
                "the vendor says the caller gave up, agents rang",
                vec![ringing(), agent_rings(), dispo(ev("h", None, Hangup, 9), Disposition::Cancelled)],
                Outcome::AbandonedInQueue,
            ),
            (
                "an IVR leg did not bridge, no agent",
                vec![
                    inbound(ev("r", Some("ivr"), Ringing, 0)),
                    dispo(ev("h", Some("ivr"), Hangup, 9), Disposition::NoAnswer),
                ],
                Outcome::AbandonedInIvr,
            ),
            (
                "a queue leg did not bridge after an agent rang",
                vec![
                    agent_rings(),
                    dispo(ev("ah", Some("a"), Hangup, 8), Disposition::Cancelled),
                    dispo(ev("h", Some("queue"), Hangup, 9), Disposition::NoAnswer),
                ],
                Outcome::Missed,
            ),
            (
                "voicemail",
                vec![ringing(), agent_rings(), dispo(ev("h", None, Hangup, 9), Disposition::Voicemail)],
                Outcome::Voicemail,
            ),
            ("busy", vec![ringing(), dispo(ev("h", None, Hangup, 9), Disposition::Busy)], Outcome::Busy),
        ];
        for (name, events, expected) in cases {
            assert_eq!(run(&events, false).outcome, Some(expected), "{name}");
        }
    }

    #[test]
    fn outbound_outcomes_come_from_the_dialled_leg() {
        use EventKind::*;
        let placed = || {
            let mut e = agent(ev("r", Some("a"), Ringing, 0), "101");
            e.direction = Direction::Outbound;
            e
        };
        let busy = vec![placed(), dispo(ev("h", Some("a"), Hangup, 3), Disposition::Busy)];
        assert_eq!(run(&busy, false).outcome, Some(Outcome::Busy));
        let unanswered = vec![placed(), ev("h", None, Hangup, 30)];
        let record = run(&unanswered, false);
        assert_eq!(record.outcome, Some(Outcome::NoAnswer));
        assert_eq!(record.agent.and_then(|a| a.extension).as_deref(), Some("101"), "who placed it");
        let chronicall = fold(
            &SourceId::parse("pbx").expect("id"),
            Vendor::Chronicall,
            &CallId::parse("c").expect("id"),
            &unanswered,
            false,
        );
        assert_eq!(chronicall.expect("events").record.outcome, Some(Outcome::Unknown));
    }

    #[test]
    fn no_outcome_while_the_call_is_open_unless_settled() {
        use EventKind::*;
        let ringing = vec![inbound(ev("r", None, Ringing, 0)), agent(ev("a", Some("a"), Ringing, 1), "101")];
        let record = run(&ringing, false);
        assert_eq!((record.status, record.outcome), (CallStatus::Ringing, None));
        let settled = run(&ringing, true);
        assert_eq!(settled.outcome, Some(Outcome::AbandonedInQueue));
        assert_eq!(settled.status, CallStatus::Ringing, "settling decides, it does not invent a hangup");
    }

    #[test]
    fn latest_recording_and_contact_win_and_sequence_breaks_ties() {
        use EventKind::*;
        let mut first = ev("x", Some("a"), Hangup, 5);
        first.sequence = Some(2);
        first.disposition = Some(Disposition::NoAnswer);
        let mut second = ev("w", Some("a"), Hangup, 5);
        second.sequence = Some(3);
        second.disposition = Some(Disposition::Busy);
        let mut recording = ev("rec", None, Recording, 80);
        recording.recording_id = Some("R1".into());
        let mut matched = ev("m", None, Ringing, 0);
        matched.contact_match = Some(ContactMatch::Unique);
        matched.contact_ids = vec!["c-1".into()];
        let record = run(&[second, recording, first, matched], false);
        assert_eq!(record.legs[1].disposition, Some(Disposition::Busy), "sequence 3 is the later hangup");
        assert_eq!(record.recording_id.as_deref(), Some("R1"));
        assert_eq!(record.contact_ids, ["c-1"]);
    }

    fn recording(id: &str, second: i64, url: &str, status: RecordingStatus, error: Option<&str>) -> Event {
        let mut e = ev(id, None, EventKind::Recording, second);
        e.recording_url = Some(url.into());
        e.recording_id = Some("R1".into());
        e.recording_status = Some(status);
        e.recording_error = error.map(Into::into);
        e
    }

    #[test]
    fn the_recording_status_is_the_highest_reported_in_any_order() {
        use RecordingStatus::*;
        let hangup = ev("h", None, EventKind::Hangup, 10);
        let pending = recording("p", 10, "https://sb/v1/recordings/a?token=1", Pending, None);
        let failed = recording("f", 90, "https://sb/v1/recordings/a?token=1", Failed, Some("vendor 404"));
        let other_ready = recording("r", 40, "https://sb/v1/recordings/b?token=2", Ready, None);

        let waiting = run(&[hangup.clone(), pending.clone()], false);
        assert_eq!((waiting.recording_status, waiting.recording_error.as_deref()), (Some(Pending), None));

        let mut events = vec![hangup.clone(), failed.clone(), pending.clone()];
        for _ in 0..3 {
            let record = run(&events, false);
            assert_eq!(record.recording_status, Some(Failed));
            assert_eq!(record.recording_error.as_deref(), Some("vendor 404"));
            events.rotate_left(1);
        }

        // A second recording that is ready wins over the failed one, and its link is the call's,
        // although the failure came later.
        let record = run(&[failed, other_ready, pending, hangup.clone()], false);
        assert_eq!((record.recording_status, record.recording_error), (Some(Ready), None));
        assert_eq!(record.recording_url.as_deref(), Some("https://sb/v1/recordings/b?token=2"));

        assert_eq!(run(&[hangup], false).recording_status, None, "no recording, no status");
    }
}
