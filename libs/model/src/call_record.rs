//! The completed-call record (`schemas/call_record.avsc`): what the call log publishes on the
//! calls topic, one per call, again with a higher `version` whenever it changes.
//!
//! The call log derives it from the set of a call's events (services/calllog `fold`); these types
//! only carry it, so that the Avro codec, the call log and the query API read the same names.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    AgentMatch, CallId, ContactMatch, Direction, Disposition, InvalidValue, RecordingStatus, SourceId,
    Vendor, WrapUp, micros,
};

/// Where a call or leg is: the state machine ringing → answered → ended. A later state always wins
/// over an earlier one, whatever order the events arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallStatus {
    Ringing,
    Answered,
    Ended,
    /// The Avro enum default, for readers older than a new symbol.
    Unknown,
}

/// What became of a call, decided once it has ended or settled (services/calllog `fold` has the
/// rules per vendor signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// A person answered (on any leg: a ring-all group where one agent answered is answered).
    Answered,
    /// Inbound: agents were offered the call and none answered.
    Missed,
    /// Inbound: the caller hung up before any agent was offered the call (in the voice menu).
    AbandonedInIvr,
    /// Inbound: the caller hung up while waiting for, or while ringing, agents.
    AbandonedInQueue,
    Busy,
    /// Outbound or internal: the called party did not answer.
    NoAnswer,
    Rejected,
    Failed,
    /// Nobody answered and the caller reached voicemail.
    Voicemail,
    /// The vendor's events cannot tell (for example an outbound call from a PBX that reports no
    /// answers and no disposition).
    Unknown,
}

/// Why a call is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Completion {
    /// The vendor's end marker arrived: a hangup of the call itself, not of one leg.
    EndMarker,
    /// No new event arrived for the configured settle time.
    Settled,
    Unknown,
}

/// The agent of a call or leg, as the PBX named them and as the matcher found them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct AgentRef {
    /// The directory agent (set by the matcher).
    pub agent_id: Option<String>,
    pub agent_match: Option<AgentMatch>,
    pub extension: Option<String>,
    pub number: Option<String>,
    pub email: Option<String>,
}

impl AgentRef {
    /// Whether the PBX or the matcher named anybody.
    pub fn is_known(&self) -> bool {
        self.agent_id.is_some() || self.extension.is_some() || self.number.is_some() || self.email.is_some()
    }
}

/// One leg: one party the call reached (an agent's phone, an IVR, a queue), or, with `leg_id`
/// equal to the call id, the call's own main leg.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LegRecord {
    pub leg_id: String,
    pub status: CallStatus,
    /// Whether this leg was answered: who answered, as opposed to who only rang.
    pub answered: bool,
    pub agent: AgentRef,
    #[serde(with = "micros")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "micros_opt")]
    pub rang_at: Option<DateTime<Utc>>,
    #[serde(with = "micros_opt")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(with = "micros_opt")]
    pub ended_at: Option<DateTime<Utc>>,
    /// `Answered` when answered, else the vendor's disposition of the leg's latest hangup.
    pub disposition: Option<Disposition>,
    pub hangup_cause: Option<String>,
    pub recording_url: Option<String>,
    pub recording_id: Option<String>,
}

/// One call as the call log knows it: the record CRMs subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallRecord {
    pub source_id: SourceId,
    pub vendor: Vendor,
    pub call_id: CallId,
    /// Grows by one each time the record changes; consumers keep the highest per call.
    pub version: i64,
    pub status: CallStatus,
    /// Set once the call has ended or settled.
    pub outcome: Option<Outcome>,
    /// Set once the call is complete; only complete calls are published.
    pub completion: Option<Completion>,
    #[serde(with = "micros_opt")]
    pub completed_at: Option<DateTime<Utc>>,
    pub direction: Direction,
    /// The external parties: E.164 when the number parsed, else as the PBX wrote it.
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    #[serde(with = "micros")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "micros_opt")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(with = "micros_opt")]
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i64>,
    pub talk_seconds: Option<i64>,
    /// The vendor's disposition of the call as a whole (of a leg standing for it when the vendor
    /// has no call-level hangup).
    pub disposition: Option<Disposition>,
    pub hangup_cause: Option<String>,
    /// Who answered (the first to answer), or who placed an outbound call.
    pub agent: Option<AgentRef>,
    pub contact_ids: Vec<String>,
    pub contact_match: Option<ContactMatch>,
    pub responsible_agent_id: Option<String>,
    pub recording_url: Option<String>,
    pub recording_id: Option<String>,
    pub legs: Vec<LegRecord>,
    /// The call's recording: pending, ready (`recording_url` is the stable Switchboard link) or
    /// failed (`recording_error` says why); `None` when no recording was reported.
    #[serde(default)]
    pub recording_status: Option<RecordingStatus>,
    #[serde(default)]
    pub recording_error: Option<String>,
    /// The queue, campaign or hunt group the call went through (the earliest an event names).
    #[serde(default)]
    pub queue: Option<String>,
    /// The agent's latest wrap-up: disposition, note and tags (`None` until one is set).
    #[serde(default)]
    pub wrap_up: Option<WrapUp>,
}

impl CallRecord {
    /// The Kafka key of the calls topic: the same key as every event of the call.
    pub fn partition_key(&self) -> String {
        crate::call_partition_key(&self.source_id, self.call_id.as_str())
    }
}

macro_rules! text_enum {
    ($name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(InvalidValue::new(
                        $what,
                        format!("{other:?} is not one of {}", [$($text),+].join(", ")),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(CallStatus, "status", {
    Ringing => "ringing", Answered => "answered", Ended => "ended", Unknown => "unknown",
});
text_enum!(Outcome, "outcome", {
    Answered => "answered", Missed => "missed", AbandonedInIvr => "abandoned_in_ivr",
    AbandonedInQueue => "abandoned_in_queue", Busy => "busy", NoAnswer => "no_answer",
    Rejected => "rejected", Failed => "failed", Voicemail => "voicemail", Unknown => "unknown",
});
text_enum!(Completion, "completion", {
    EndMarker => "end_marker", Settled => "settled", Unknown => "unknown",
});

/// Avro `["null", timestamp-micros]` as optional chrono UTC times.
pub mod micros_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(time) => serializer.serialize_some(&time.timestamp_micros()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<i64>::deserialize(deserializer)?
            .map(|micros| {
                DateTime::from_timestamp_micros(micros)
                    .ok_or_else(|| serde::de::Error::custom(format!("timestamp {micros} out of range")))
            })
            .transpose()
    }
}
