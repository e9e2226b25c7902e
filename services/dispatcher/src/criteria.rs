//! When a profile fires: its triggering event (seed 004's "Triggering Event") and its triggering
//! criteria ("Triggering Call Criteria": all must match; none means every call).
//!
//! Event-level triggers read the `enriched` topic's events; record-level ones read the `calls`
//! topic's records. The calls topic republishes a record, with a higher version, each time it
//! changes, and versions are not contiguous, so only the dispatcher's memory of the version it
//! last saw can tell a call's first record (completed) from a later one (changed): the caller
//! passes that previous record in.

use serde::{Deserialize, Serialize};
use switchboard_model::{CallEvent, CallRecord, EventKind, Outcome, RecordingStatus, SourceId};

use crate::values::{CallDirection, CallValues};

/// What happened, as a profile can subscribe to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A ringing event of an inbound call (one per leg that rings: use the agent criterion to
    /// pop only one agent's CRM).
    CallRingingInbound,
    CallRingingOutbound,
    CallAnswered,
    /// The hangup of the call itself; a leg's hangup does not end the call.
    CallEnded,
    /// The call's first complete record, when no agent answered an inbound call (outcomes
    /// missed, abandoned in queue, voicemail). A caller who gave up in the voice menu was never
    /// offered to anybody and is not missed; add an outcome criterion to include them.
    CallMissed,
    /// The call's first complete record.
    CallRecordCompleted,
    /// Every later version of the record (a recording became ready, a late leg arrived...).
    CallRecordChanged,
    /// The recordings stage's event saying the call's recording link now opens the recording.
    RecordingReady,
}

/// What arrived: an event, or a record with the version of it seen before (if any).
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Event(&'a CallEvent),
    Record { record: &'a CallRecord, previous: Option<&'a CallRecord> },
}

impl Subject<'_> {
    /// The values criteria read (all but the location, which none reads).
    pub fn values(&self) -> CallValues {
        match self {
            Subject::Event(event) => CallValues::from_event_unlocated(event),
            Subject::Record { record, .. } => CallValues::from_record_unlocated(record),
        }
    }
}

impl Trigger {
    pub fn fires_on(self, subject: &Subject<'_>) -> bool {
        match (self, subject) {
            (Trigger::CallRingingInbound, Subject::Event(e)) => {
                e.kind == EventKind::Ringing && e.direction == switchboard_model::Direction::Inbound
            }
            (Trigger::CallRingingOutbound, Subject::Event(e)) => {
                e.kind == EventKind::Ringing && e.direction == switchboard_model::Direction::Outbound
            }
            (Trigger::CallAnswered, Subject::Event(e)) => e.kind == EventKind::Answered,
            (Trigger::CallEnded, Subject::Event(e)) => {
                e.kind == EventKind::Hangup
                    && e.leg_id.as_ref().is_none_or(|leg| leg.as_str() == e.call_id.as_str())
            }
            (Trigger::RecordingReady, Subject::Event(e)) => {
                e.kind == EventKind::Recording && e.recording_status == Some(RecordingStatus::Ready)
            }
            (Trigger::CallRecordCompleted, Subject::Record { previous, .. }) => previous.is_none(),
            (Trigger::CallRecordChanged, Subject::Record { record, previous }) => {
                previous.is_some_and(|p| record.version > p.version)
            }
            (Trigger::CallMissed, Subject::Record { record, previous }) => {
                previous.is_none()
                    && matches!(
                        record.outcome,
                        Some(Outcome::Missed | Outcome::AbandonedInQueue | Outcome::Voicemail)
                    )
            }
            _ => false,
        }
    }

    /// Whether the trigger reads events (the `enriched` topic) rather than records (`calls`).
    pub fn is_event_level(self) -> bool {
        matches!(
            self,
            Trigger::CallRingingInbound
                | Trigger::CallRingingOutbound
                | Trigger::CallAnswered
                | Trigger::CallEnded
                | Trigger::RecordingReady
        )
    }
}

/// Which measure of a call's length a duration criterion reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// From the first ring to the hangup.
    #[default]
    Total,
    /// From the answer to the hangup.
    Talk,
}

/// One triggering criterion. A value a subject does not have never matches: an event has no
/// outcome or duration yet, so such criteria belong on record-level triggers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Criterion {
    Direction {
        any_of: Vec<CallDirection>,
    },
    Outcome {
        any_of: Vec<OutcomeName>,
    },
    Source {
        any_of: Vec<SourceId>,
    },
    /// The agent's directory id, extension, email or number is one of these.
    Agent {
        any_of: Vec<String>,
    },
    /// Seed 004's group/skill or queue. No source reports groups into our model yet, so this
    /// matches nothing until one does.
    Group {
        any_of: Vec<String>,
    },
    DurationAtLeast {
        seconds: i64,
        #[serde(default)]
        measure: Measure,
    },
    /// The external number starts with one of these, compared on digits only, in international
    /// form (`+44 20` and `4420` are the same prefix).
    NumberPrefix {
        any_of: Vec<String>,
    },
    /// No source reports tags into our model yet, so this matches nothing until one does.
    Tag {
        any_of: Vec<String>,
    },
    HasRecording {
        value: bool,
    },
    /// Whether the matcher found at least one contact for the external number.
    MatchedContact {
        value: bool,
    },
}

/// An outcome in the call log's own words (`missed`, `abandoned_in_queue`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OutcomeName(pub Outcome);

impl TryFrom<String> for OutcomeName {
    type Error = switchboard_model::InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse().map(OutcomeName)
    }
}

impl From<OutcomeName> for String {
    fn from(value: OutcomeName) -> String {
        value.0.as_str().to_owned()
    }
}

impl Criterion {
    pub fn matches(&self, v: &CallValues) -> bool {
        let any = |list: &[String], value: Option<&str>| value.is_some_and(|x| list.iter().any(|l| l == x));
        match self {
            Criterion::Direction { any_of } => v.direction.is_some_and(|d| any_of.contains(&d)),
            Criterion::Outcome { any_of } => v.outcome.is_some_and(|o| any_of.iter().any(|n| n.0 == o)),
            Criterion::Source { any_of } => any_of.iter().any(|s| s.as_str() == v.source_id),
            Criterion::Agent { any_of } => {
                let a = &v.agent;
                [&a.id, &a.extension, &a.email, &a.number].into_iter().any(|key| any(any_of, key.as_deref()))
            }
            Criterion::Group { any_of } => any(any_of, v.group.as_deref()),
            Criterion::DurationAtLeast { seconds, measure } => {
                let length = match measure {
                    Measure::Total => v.duration_seconds,
                    Measure::Talk => v.talk_seconds,
                };
                length.is_some_and(|l| l >= *seconds)
            }
            Criterion::NumberPrefix { any_of } => v.external_number.as_deref().is_some_and(|number| {
                let number = digits(number);
                any_of.iter().any(|prefix| number.starts_with(&digits(prefix)))
            }),
            Criterion::Tag { any_of } => v.tags.iter().any(|t| any_of.contains(t)),
            Criterion::HasRecording { value } => v.has_recording() == *value,
            Criterion::MatchedContact { value } => v.contact_ids.is_empty() != *value,
        }
    }

    /// Why the criterion can never match anything as written, if it cannot.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        let empty = match self {
            Criterion::Direction { any_of } => any_of.is_empty(),
            Criterion::Outcome { any_of } => any_of.is_empty(),
            Criterion::Source { any_of } => any_of.is_empty(),
            Criterion::Agent { any_of }
            | Criterion::Group { any_of }
            | Criterion::NumberPrefix { any_of }
            | Criterion::Tag { any_of } => any_of.is_empty() || any_of.iter().any(|x| x.trim().is_empty()),
            Criterion::DurationAtLeast { seconds, .. } => {
                return (*seconds < 0).then_some("a negative duration");
            }
            Criterion::HasRecording { .. } | Criterion::MatchedContact { .. } => false,
        };
        if let Criterion::NumberPrefix { any_of } = self
            && any_of.iter().any(|p| digits(p).is_empty())
        {
            return Some("a number prefix without digits");
        }
        empty.then_some("an empty list or an empty entry")
    }
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// Whether a profile with `trigger` and `criteria` fires on `subject`: the trigger fires and every
/// criterion matches the subject's values.
pub fn fires(trigger: Trigger, criteria: &[Criterion], subject: &Subject<'_>) -> bool {
    trigger.fires_on(subject)
        && (criteria.is_empty() || {
            let values = subject.values();
            criteria.iter().all(|c| c.matches(&values))
        })
}

#[cfg(test)]
#[path = "criteria_tests.rs"]
mod tests;
