//! What each call means to each agent, from its events as they come: who it rings, who answered,
//! whom it was taken from, and whether it ended answered or missed. Pure (no I/O, no clock).
//!
//! The call log decides a call's outcome from the whole set of its events once it has settled;
//! a pop cannot wait for that. So the desk keeps a small state per call and follows the same
//! rules as they become known:
//! - a ringing event naming an agent rings that agent (`incoming`, or `outgoing` for an outbound
//!   call), once per call;
//! - the first answer by an agent is `answered` for that agent and `taken` for every other agent
//!   it rang (a ring-all group);
//! - the call has ended when the vendor's end marker arrives (a hangup without a leg) or every
//!   leg has hung up. An answered call then `ended` for the agent who answered; an unanswered
//!   inbound call is `missed`, once, for every agent it rang — never once per ring-all member's
//!   unanswered ring. An unanswered outbound call `ended` for the agent who placed it.
//!
//! Ended calls are remembered (so a late or repeated event notifies nobody twice) until
//! `max_calls` newer ones push them out.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use switchboard_model::{CallEvent, ContactMatch, Direction, Disposition, EventKind};

/// What happened, for one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Incoming,
    Outgoing,
    Answered,
    /// Another agent answered a call that rang this one.
    Taken,
    Ended,
    Missed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Incoming => "incoming",
            Kind::Outgoing => "outgoing",
            Kind::Answered => "answered",
            Kind::Taken => "taken",
            Kind::Ended => "ended",
            Kind::Missed => "missed",
        }
    }
}

/// A number as the PBX wrote it and in E.164.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Number {
    pub raw: Option<String>,
    pub e164: Option<String>,
}

/// The call as the desk knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    pub source_id: String,
    pub call_id: String,
    pub direction: Direction,
    pub from: Number,
    pub to: Number,
    pub started_at: DateTime<Utc>,
    pub answered_by: Option<String>,
    pub contact_match: Option<ContactMatch>,
    pub contact_ids: Vec<String>,
}

impl CallView {
    /// The customer's side: the caller of an inbound call, the callee of an outbound one.
    pub fn customer(&self) -> &Number {
        if self.direction == Direction::Outbound { &self.to } else { &self.from }
    }

    /// Our side: the number called on an inbound call, the caller id of an outbound one.
    pub fn ours(&self) -> &Number {
        if self.direction == Direction::Outbound { &self.from } else { &self.to }
    }
}

/// One notification due to one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Happening {
    pub kind: Kind,
    pub agent_id: String,
    pub call: CallView,
}

#[derive(Debug, Default)]
struct Leg {
    answered: bool,
    ended: bool,
}

#[derive(Debug)]
struct CallState {
    view: CallView,
    legs: HashMap<String, Leg>,
    /// Agents the call rang (or who answered or placed it), in order.
    rung: Vec<String>,
    /// `(agent, kind)` pairs already notified.
    told: HashSet<(String, Kind)>,
    ended: bool,
}

/// The state of the calls in progress and recently ended.
#[derive(Debug)]
pub struct Tracker {
    calls: HashMap<(String, String), CallState>,
    /// Calls in the order they were first seen, for forgetting the oldest.
    order: VecDeque<(String, String)>,
    max_calls: usize,
}

impl Tracker {
    pub fn new(max_calls: usize) -> Self {
        Self { calls: HashMap::new(), order: VecDeque::new(), max_calls: max_calls.max(1) }
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The notifications `event` makes due.
    pub fn observe(&mut self, event: &CallEvent) -> Vec<Happening> {
        let key = (event.source_id.as_str().to_owned(), event.call_id.as_str().to_owned());
        if !self.calls.contains_key(&key) {
            while self.order.len() >= self.max_calls {
                if let Some(old) = self.order.pop_front() {
                    let _ = self.calls.remove(&old);
                }
            }
            self.order.push_back(key.clone());
            let _ = self.calls.insert(key.clone(), CallState::new(event));
        }
        let Some(call) = self.calls.get_mut(&key) else { return Vec::new() };
        call.learn(event);
        let mut due = Vec::new();
        call.step(event, &mut due);
        due
    }
}

impl CallState {
    fn new(event: &CallEvent) -> Self {
        Self {
            view: CallView {
                source_id: event.source_id.as_str().to_owned(),
                call_id: event.call_id.as_str().to_owned(),
                direction: Direction::Unknown,
                from: Number::default(),
                to: Number::default(),
                started_at: event.occurred_at,
                answered_by: None,
                contact_match: None,
                contact_ids: Vec::new(),
            },
            legs: HashMap::new(),
            rung: Vec::new(),
            told: HashSet::new(),
            ended: false,
        }
    }

    /// Takes what the event tells about the call: the earliest direction, numbers and start, the
    /// latest contact match.
    fn learn(&mut self, event: &CallEvent) {
        let view = &mut self.view;
        if view.direction == Direction::Unknown {
            view.direction = event.direction;
        }
        let fill = |number: &mut Number, raw: &Option<String>, e164: Option<&str>| {
            if number.raw.is_none() && number.e164.is_none() {
                number.raw.clone_from(raw);
                number.e164 = e164.map(str::to_owned);
            }
        };
        fill(&mut view.from, &event.from_raw, event.from_e164.as_ref().map(|n| n.as_str()));
        fill(&mut view.to, &event.to_raw, event.to_e164.as_ref().map(|n| n.as_str()));
        view.started_at = view.started_at.min(event.occurred_at);
        if let Some(matched) = event.contact_match.filter(|m| *m != ContactMatch::Unknown) {
            view.contact_match = Some(matched);
            view.contact_ids.clone_from(&event.contact_ids);
        }
    }

    fn tell(&mut self, agent: &str, kind: Kind, due: &mut Vec<Happening>) {
        if self.told.insert((agent.to_owned(), kind)) {
            due.push(Happening { kind, agent_id: agent.to_owned(), call: self.view.clone() });
        }
    }

    fn ring(&mut self, agent: &str, due: &mut Vec<Happening>) {
        if !self.rung.iter().any(|a| a == agent) {
            self.rung.push(agent.to_owned());
        }
        let kind = if self.view.direction == Direction::Outbound { Kind::Outgoing } else { Kind::Incoming };
        // One pop per call and agent, whichever of the two came first.
        if !self.told.contains(&(agent.to_owned(), Kind::Incoming))
            && !self.told.contains(&(agent.to_owned(), Kind::Outgoing))
        {
            self.tell(agent, kind, due);
        }
    }

    fn step(&mut self, event: &CallEvent, due: &mut Vec<Happening>) {
        if self.ended {
            return;
        }
        let agent = event.agent_id.clone();
        let leg_key = event.leg_id.as_ref().map_or_else(String::new, |l| l.as_str().to_owned());
        let answered = event.kind == EventKind::Answered
            || (event.kind == EventKind::Hangup && event.disposition == Some(Disposition::Answered));
        match event.kind {
            EventKind::Ringing => {
                let _ = self.legs.entry(leg_key.clone()).or_default();
                if let Some(agent) = &agent {
                    self.ring(agent, due);
                }
            }
            EventKind::Answered | EventKind::Hangup => {}
            EventKind::Recording | EventKind::Unknown | EventKind::WrapUp => return,
        }
        if answered {
            self.legs.entry(leg_key.clone()).or_default().answered = true;
            if let Some(agent) = &agent
                && self.view.answered_by.is_none()
            {
                self.ring(agent, due);
                self.view.answered_by = Some(agent.clone());
                self.tell(agent, Kind::Answered, due);
                let others: Vec<String> = self.rung.iter().filter(|a| *a != agent).cloned().collect();
                for other in others {
                    self.tell(&other, Kind::Taken, due);
                }
            }
        }
        if event.kind == EventKind::Hangup {
            self.legs.entry(leg_key.clone()).or_default().ended = true;
            // The answering agent's own leg ending ends the call for them (a transfer goes on
            // without them).
            if let (Some(agent), Some(answerer)) = (&agent, self.view.answered_by.clone())
                && *agent == answerer
                && !leg_key.is_empty()
            {
                self.tell(&answerer, Kind::Ended, due);
            }
            let end_marker = leg_key.is_empty();
            if end_marker || self.legs.values().all(|l| l.ended) {
                self.end(due);
            }
        }
    }

    fn end(&mut self, due: &mut Vec<Happening>) {
        self.ended = true;
        if let Some(answerer) = self.view.answered_by.clone() {
            self.tell(&answerer, Kind::Ended, due);
            return;
        }
        let kind = if self.view.direction == Direction::Outbound { Kind::Ended } else { Kind::Missed };
        for agent in self.rung.clone() {
            self.tell(&agent, kind, due);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use switchboard_model::{CallId, EventId, LegId, PhoneNumber, SourceId, Vendor};

    use super::*;

    fn event(n: u32, kind: EventKind, leg: Option<&str>, agent: Option<&str>) -> CallEvent {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).single().expect("time")
            + chrono::Duration::seconds(i64::from(n));
        let mut e = CallEvent::empty(
            SourceId::parse("pbx").expect("id"),
            Vendor::Generic,
            CallId::parse("c1").expect("id"),
            EventId::parse(format!("e{n}")).expect("id"),
            kind,
            at,
        );
        e.direction = Direction::Inbound;
        e.from_raw = Some("8 916 123-45-67".into());
        e.from_e164 = Some(PhoneNumber::from_e164("+79161234567").expect("number"));
        e.leg_id = leg.map(|l| LegId::parse(l).expect("leg"));
        e.agent_id = agent.map(str::to_owned);
        e.contact_match = Some(ContactMatch::Unique);
        e.contact_ids = vec!["bob".into()];
        e
    }

    fn kinds(due: &[Happening]) -> Vec<(Kind, &str)> {
        due.iter().map(|h| (h.kind, h.agent_id.as_str())).collect()
    }

    #[test]
    fn a_ring_all_group_rings_everyone_then_one_answers_and_the_others_are_told() {
        let mut t = Tracker::new(100);
        assert_eq!(kinds(&t.observe(&event(0, EventKind::Ringing, None, None))), vec![]);
        assert_eq!(
            kinds(&t.observe(&event(1, EventKind::Ringing, Some("l1"), Some("ann")))),
            vec![(Kind::Incoming, "ann")]
        );
        assert_eq!(
            kinds(&t.observe(&event(1, EventKind::Ringing, Some("l2"), Some("bea")))),
            vec![(Kind::Incoming, "bea")]
        );
        let due = t.observe(&event(2, EventKind::Answered, Some("l2"), Some("bea")));
        assert_eq!(kinds(&due), vec![(Kind::Answered, "bea"), (Kind::Taken, "ann")]);
        assert_eq!(due[0].call.answered_by.as_deref(), Some("bea"));
        assert_eq!(due[0].call.customer().e164.as_deref(), Some("+79161234567"));
        // Ann's unanswered ring ends: nothing for anyone.
        assert_eq!(kinds(&t.observe(&event(3, EventKind::Hangup, Some("l1"), Some("ann")))), vec![]);
        assert_eq!(
            kinds(&t.observe(&event(9, EventKind::Hangup, Some("l2"), Some("bea")))),
            vec![(Kind::Ended, "bea")]
        );
        assert_eq!(kinds(&t.observe(&event(9, EventKind::Hangup, None, None))), vec![], "already told");
    }

    #[test]
    fn an_unanswered_call_is_missed_once_per_agent_not_per_ring() {
        let mut t = Tracker::new(100);
        let _ = t.observe(&event(0, EventKind::Ringing, None, None));
        let _ = t.observe(&event(1, EventKind::Ringing, Some("l1"), Some("ann")));
        let _ = t.observe(&event(1, EventKind::Ringing, Some("l2"), Some("bea")));
        assert_eq!(
            kinds(&t.observe(&event(5, EventKind::Hangup, Some("l1"), Some("ann")))),
            vec![],
            "the call goes on"
        );
        // Ringing Ann again (a second round) pops nothing new.
        assert_eq!(kinds(&t.observe(&event(6, EventKind::Ringing, Some("l3"), Some("ann")))), vec![]);
        let due = t.observe(&event(9, EventKind::Hangup, None, None));
        assert_eq!(kinds(&due), vec![(Kind::Missed, "ann"), (Kind::Missed, "bea")]);
        assert!(t.observe(&event(10, EventKind::Hangup, Some("l2"), Some("bea"))).is_empty());
    }

    #[test]
    fn every_leg_hung_up_ends_a_call_without_an_end_marker() {
        let mut t = Tracker::new(100);
        let _ = t.observe(&event(1, EventKind::Ringing, Some("l1"), Some("ann")));
        assert_eq!(
            kinds(&t.observe(&event(4, EventKind::Hangup, Some("l1"), Some("ann")))),
            vec![(Kind::Missed, "ann")]
        );
    }

    #[test]
    fn outbound_calls_are_outgoing_and_end_without_being_missed() {
        let mut t = Tracker::new(100);
        let mut ring = event(0, EventKind::Ringing, None, Some("ann"));
        ring.direction = Direction::Outbound;
        assert_eq!(kinds(&t.observe(&ring)), vec![(Kind::Outgoing, "ann")]);
        let mut hangup = event(5, EventKind::Hangup, None, Some("ann"));
        hangup.disposition = Some(Disposition::NoAnswer);
        assert_eq!(kinds(&t.observe(&hangup)), vec![(Kind::Ended, "ann")]);
    }

    #[test]
    fn an_answer_reported_only_on_the_hangup_still_counts() {
        let mut t = Tracker::new(100);
        let _ = t.observe(&event(1, EventKind::Ringing, None, Some("ann")));
        let mut hangup = event(9, EventKind::Hangup, None, Some("ann"));
        hangup.disposition = Some(Disposition::Answered);
        assert_eq!(kinds(&t.observe(&hangup)), vec![(Kind::Answered, "ann"), (Kind::Ended, "ann")]);
    }

    #[test]
    fn the_oldest_calls_are_forgotten_first() {
        let mut t = Tracker::new(2);
        for n in 0..5u32 {
            let mut e = event(n, EventKind::Ringing, None, Some("ann"));
            e.call_id = CallId::parse(format!("c{n}")).expect("id");
            assert_eq!(t.observe(&e).len(), 1);
        }
        assert_eq!(t.len(), 2);
    }
}
