//! The call values a profile can send: seed 004's list (Chronicall's `<Agent>`, `<DNIS>`,
//! `<Call ID>`...) read from our `CallRecord` (record-level triggers) or `CallEvent` (event-level
//! triggers), plus what our model knows that Chronicall's list lacks (outcome, durations, contact).
//!
//! Where our model has no such field the value is empty, and the field says so: a value is never
//! guessed, because a CRM stores what it is sent.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::Value;
use serde::{Deserialize, Serialize};
use switchboard_model::{CallEvent, CallRecord, Direction, EventKind, Outcome, RecordingStatus};
use uuid::Uuid;

/// The direction of a call in Chronicall's words (`Inbound`, `Outbound`, `Internal`). Chronicall's
/// fourth, `Intersite`, is never produced: our sources do not report calls between sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    Inbound,
    Outbound,
    Internal,
}

impl CallDirection {
    fn from_model(direction: Direction) -> Option<Self> {
        match direction {
            Direction::Inbound => Some(CallDirection::Inbound),
            Direction::Outbound => Some(CallDirection::Outbound),
            Direction::Internal => Some(CallDirection::Internal),
            Direction::Unknown => None,
        }
    }

    /// Seed 004's spelling.
    pub fn chronicall(self) -> &'static str {
        match self {
            CallDirection::Inbound => "Inbound",
            CallDirection::Outbound => "Outbound",
            CallDirection::Internal => "Internal",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
            CallDirection::Internal => "internal",
        }
    }
}

/// The agent of the call or event, as the PBX named them and as the matcher found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentValues {
    pub id: Option<String>,
    pub extension: Option<String>,
    pub number: Option<String>,
    pub email: Option<String>,
}

/// Which agent keys find a CRM user, and the user when none does. Keys are tried in the order
/// directory agent id, extension, email, number: the directory id is the one a PBX cannot reuse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMap {
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    #[serde(default)]
    pub default_user: Option<String>,
}

impl UserMap {
    pub fn lookup(&self, agent: &AgentValues) -> Option<String> {
        [&agent.id, &agent.extension, &agent.email, &agent.number]
            .into_iter()
            .flatten()
            .find_map(|key| self.users.get(key))
            .or(self.default_user.as_ref())
            .cloned()
    }
}

/// Every value of one call (or one event of it) a template can use.
#[derive(Debug, Clone, PartialEq)]
pub struct CallValues {
    pub source_id: String,
    pub vendor: String,
    /// `<Call ID>`: the vendor's id when it is a UUID, else a UUID derived from source and id.
    pub call_uuid: Uuid,
    /// `<Report Call ID>`: the PBX's own call id, the one its reports show.
    pub report_call_id: String,
    /// The event kind, for event-level triggers; `None` for a call record.
    pub event: Option<EventKind>,
    pub direction: Option<CallDirection>,
    /// Set on records only: the call log decides outcomes once a call has ended.
    pub outcome: Option<Outcome>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    /// `<External Number>`: the customer's side, the caller of an inbound call and the called
    /// party of an outbound one; none for an internal call or one of unknown direction.
    pub external_number: Option<String>,
    /// `<DNIS>`: the number that was dialled.
    pub dnis: Option<String>,
    /// `<Location>`: the country (ISO 3166 alpha-2) of the external number. Chronicall names a
    /// place; numbers only tell us the country.
    pub location: Option<String>,
    /// `<Time>`: when the call started (for an event: when the event happened, since an event
    /// does not carry its call's start).
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i64>,
    pub talk_seconds: Option<i64>,
    pub agent: AgentValues,
    pub contact_ids: Vec<String>,
    pub responsible_agent_id: Option<String>,
    /// `<Audio Recording Link>`: only once the link opens the recording (status ready, or a
    /// vendor link from a source without a recordings stage).
    pub recording_url: Option<String>,
    pub recording_status: Option<RecordingStatus>,
    pub version: Option<i64>,
    /// The agent's user in the CRM, from the profile's [`UserMap`].
    pub crm_user_id: Option<String>,
    /// `<Tag>`: the tags of the agent's wrap-up (records only).
    pub tags: Vec<String>,
    /// The agent's disposition (records only): its code, label and note.
    pub disposition: Option<String>,
    pub disposition_label: Option<String>,
    pub disposition_note: Option<String>,
    /// `<Group/Skill>`: the queue or campaign the call went through, where the PBX names it.
    /// `<Account Codes>`, `<Caller Name>` and the agent's name: no source reports these into our
    /// model yet, so they are always empty.
    pub account_codes: Vec<String>,
    pub group: Option<String>,
    pub caller_name: Option<String>,
    pub agent_name: Option<String>,
}

/// Namespace of the UUIDs derived for calls whose vendor id is not a UUID (random, fixed forever:
/// changing it would give every call a new `<Call ID>`).
const CALL_NAMESPACE: Uuid = Uuid::from_u128(0x5b1c_7c2e_0f4a_4d8e_9a51_3c6e_d2b7_90a4);

/// The stable UUID of a call: its own id when the vendor uses UUIDs (Chronicall does), else a
/// name-based UUID of `source:call`, so that every delivery of a call names it the same way.
pub fn call_uuid(source_id: &str, call_id: &str) -> Uuid {
    Uuid::parse_str(call_id)
        .unwrap_or_else(|_| Uuid::new_v5(&CALL_NAMESPACE, format!("{source_id}:{call_id}").as_bytes()))
}

impl CallValues {
    pub fn from_record(record: &CallRecord) -> Self {
        Self::from_record_unlocated(record).located()
    }

    pub fn from_event(event: &CallEvent) -> Self {
        Self::from_event_unlocated(event).located()
    }

    /// The values without `location`, which only a rendered request needs: it parses the external
    /// number with the full numbering plan, the costliest value by far (criteria never read it).
    pub fn from_record_unlocated(record: &CallRecord) -> Self {
        let direction = CallDirection::from_model(record.direction);
        let agent = record.agent.as_ref().map(agent_of_record).unwrap_or_default();
        let external_number = external(direction, &record.from_number, &record.to_number);
        Self {
            source_id: record.source_id.to_string(),
            vendor: record.vendor.to_string(),
            call_uuid: call_uuid(record.source_id.as_str(), record.call_id.as_str()),
            report_call_id: record.call_id.to_string(),
            event: None,
            direction,
            outcome: record.outcome,
            from_number: record.from_number.clone(),
            to_number: record.to_number.clone(),
            location: None,
            external_number,
            dnis: record.to_number.clone(),
            started_at: record.started_at,
            answered_at: record.answered_at,
            ended_at: record.ended_at,
            duration_seconds: record.duration_seconds,
            talk_seconds: record.talk_seconds,
            agent,
            contact_ids: record.contact_ids.clone(),
            responsible_agent_id: record.responsible_agent_id.clone(),
            recording_url: usable_recording(&record.recording_url, record.recording_status),
            recording_status: record.recording_status,
            version: Some(record.version),
            crm_user_id: None,
            account_codes: Vec::new(),
            tags: record.wrap_up.as_ref().map(|w| w.tags.clone()).unwrap_or_default(),
            disposition: record.wrap_up.as_ref().and_then(|w| w.code.clone()),
            disposition_label: record.wrap_up.as_ref().and_then(|w| w.label.clone()),
            disposition_note: record.wrap_up.as_ref().and_then(|w| w.note.clone()),
            group: record.queue.clone(),
            caller_name: None,
            agent_name: None,
        }
    }

    pub fn from_event_unlocated(event: &CallEvent) -> Self {
        let direction = CallDirection::from_model(event.direction);
        let from = event.from_e164.as_ref().map(|n| n.to_string()).or_else(|| event.from_raw.clone());
        let to = event.to_e164.as_ref().map(|n| n.to_string()).or_else(|| event.to_raw.clone());
        let external_number = external(direction, &from, &to);
        let agent = AgentValues {
            id: event.agent_id.clone(),
            extension: event.agent_extension.clone(),
            number: event.agent_number.clone(),
            email: event.agent_email.clone(),
        };
        Self {
            source_id: event.source_id.to_string(),
            vendor: event.vendor.to_string(),
            call_uuid: call_uuid(event.source_id.as_str(), event.call_id.as_str()),
            report_call_id: event.call_id.to_string(),
            event: Some(event.kind),
            direction,
            outcome: None,
            location: None,
            external_number,
            dnis: to.clone(),
            from_number: from,
            to_number: to,
            started_at: event.occurred_at,
            answered_at: (event.kind == EventKind::Answered).then_some(event.occurred_at),
            ended_at: (event.kind == EventKind::Hangup).then_some(event.occurred_at),
            duration_seconds: None,
            talk_seconds: None,
            agent,
            contact_ids: event.contact_ids.clone(),
            responsible_agent_id: event.responsible_agent_id.clone(),
            recording_url: usable_recording(&event.recording_url, event.recording_status),
            recording_status: event.recording_status,
            version: None,
            crm_user_id: None,
            account_codes: Vec::new(),
            tags: Vec::new(),
            disposition: None,
            disposition_label: None,
            disposition_note: None,
            group: event.queue.clone(),
            caller_name: None,
            agent_name: None,
        }
    }

    /// The same values with the agent's CRM user filled in from `map`.
    pub fn with_crm_user(mut self, map: &UserMap) -> Self {
        self.crm_user_id = map.lookup(&self.agent);
        self
    }

    /// `<Agent>`: Chronicall sends the agent's name, which our model does not have, so this is the
    /// best identifier we do have: extension, else email, else number, else directory id.
    pub fn agent_label(&self) -> Option<&str> {
        let a = &self.agent;
        a.extension.as_deref().or(a.email.as_deref()).or(a.number.as_deref()).or(a.id.as_deref())
    }

    pub fn has_recording(&self) -> bool {
        self.recording_url.is_some()
    }

    /// The values as a template sees them, by the names of [`VALUE_NAMES`].
    pub(crate) fn context(&self) -> BTreeMap<&'static str, Value> {
        let text = |v: &Option<String>| v.as_deref().map_or(Value::from(()), Value::from);
        let iso = |t: Option<DateTime<Utc>>| {
            t.map_or(Value::from(()), |t| Value::from(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
        };
        let int = |v: Option<i64>| v.map_or(Value::from(()), Value::from);
        let ms = |v: Option<i64>| v.and_then(|s| s.checked_mul(1000)).map_or(Value::from(()), Value::from);
        let contact_id = match self.contact_ids.as_slice() {
            [only] => Value::from(only.as_str()),
            _ => Value::from(()),
        };
        BTreeMap::from([
            ("empty", Value::from("")),
            ("account_codes", Value::from(self.account_codes.join(","))),
            ("agent", self.agent_label().map_or(Value::from(()), Value::from)),
            ("agent_name", text(&self.agent_name)),
            ("agent_id", text(&self.agent.id)),
            ("agent_extension", text(&self.agent.extension)),
            ("agent_number", text(&self.agent.number)),
            ("agent_email", text(&self.agent.email)),
            ("crm_user_id", text(&self.crm_user_id)),
            ("call_direction", self.direction.map_or(Value::from(()), |d| Value::from(d.chronicall()))),
            ("direction", self.direction.map_or(Value::from(()), |d| Value::from(d.as_str()))),
            ("caller_name", text(&self.caller_name)),
            ("dnis", text(&self.dnis)),
            ("call_id", Value::from(self.call_uuid.to_string())),
            ("report_call_id", Value::from(self.report_call_id.as_str())),
            ("external_number", text(&self.external_number)),
            ("from_number", text(&self.from_number)),
            ("to_number", text(&self.to_number)),
            ("group", text(&self.group)),
            ("location", text(&self.location)),
            ("time", Value::from(self.started_at.timestamp_millis())),
            ("started_at", iso(Some(self.started_at))),
            ("answered_at", iso(self.answered_at)),
            ("ended_at", iso(self.ended_at)),
            ("duration_seconds", int(self.duration_seconds)),
            ("talk_seconds", int(self.talk_seconds)),
            ("duration_ms", ms(self.duration_seconds)),
            ("talk_ms", ms(self.talk_seconds)),
            ("tags", Value::from(self.tags.join(","))),
            ("tag_list", Value::from(self.tags.clone())),
            ("disposition", text(&self.disposition)),
            ("disposition_label", text(&self.disposition_label)),
            ("disposition_note", text(&self.disposition_note)),
            ("recording_url", text(&self.recording_url)),
            ("recording_status", self.recording_status.map_or(Value::from(()), |s| Value::from(s.as_str()))),
            ("has_recording", Value::from(self.has_recording())),
            ("outcome", self.outcome.map_or(Value::from(()), |o| Value::from(o.as_str()))),
            ("event", self.event.map_or(Value::from(()), |e| Value::from(e.as_str()))),
            ("source_id", Value::from(self.source_id.as_str())),
            ("vendor", Value::from(self.vendor.as_str())),
            ("contact_ids", Value::from(self.contact_ids.clone())),
            ("contact_id", contact_id),
            ("matched_contact", Value::from(!self.contact_ids.is_empty())),
            ("responsible_agent_id", text(&self.responsible_agent_id)),
            ("version", int(self.version)),
        ])
    }
}

/// Every name a template or a `{"value": ...}` parameter can use, besides `steps` (the values
/// earlier steps of a flow extracted).
pub const VALUE_NAMES: &[&str] = &[
    "empty",
    "account_codes",
    "agent",
    "agent_name",
    "agent_id",
    "agent_extension",
    "agent_number",
    "agent_email",
    "crm_user_id",
    "call_direction",
    "direction",
    "caller_name",
    "dnis",
    "call_id",
    "report_call_id",
    "external_number",
    "from_number",
    "to_number",
    "group",
    "location",
    "time",
    "started_at",
    "answered_at",
    "ended_at",
    "duration_seconds",
    "talk_seconds",
    "duration_ms",
    "talk_ms",
    "tags",
    "tag_list",
    "disposition",
    "disposition_label",
    "disposition_note",
    "recording_url",
    "recording_status",
    "has_recording",
    "outcome",
    "event",
    "source_id",
    "vendor",
    "contact_ids",
    "contact_id",
    "matched_contact",
    "responsible_agent_id",
    "version",
];

/// Values with every field set, for dry runs of templates when a profile is saved (and for
/// previews): a template that renders these uses only names and filters that exist.
pub(crate) fn sample() -> CallValues {
    let at = DateTime::<Utc>::UNIX_EPOCH;
    CallValues {
        source_id: "sample".into(),
        vendor: "generic".into(),
        call_uuid: call_uuid("sample", "1"),
        report_call_id: "1".into(),
        event: Some(EventKind::Hangup),
        direction: Some(CallDirection::Inbound),
        outcome: Some(Outcome::Answered),
        from_number: Some("+442079460000".into()),
        to_number: Some("+442079460001".into()),
        external_number: Some("+442079460000".into()),
        dnis: Some("+442079460001".into()),
        location: Some("GB".into()),
        started_at: at,
        answered_at: Some(at),
        ended_at: Some(at),
        duration_seconds: Some(1),
        talk_seconds: Some(1),
        agent: AgentValues {
            id: Some("1".into()),
            extension: Some("1".into()),
            number: Some("1".into()),
            email: Some("a@example.com".into()),
        },
        contact_ids: vec!["1".into()],
        responsible_agent_id: Some("1".into()),
        recording_url: Some("https://example.com/r".into()),
        recording_status: Some(RecordingStatus::Ready),
        version: Some(1),
        crm_user_id: Some("1".into()),
        account_codes: vec!["1".into()],
        tags: vec!["1".into()],
        disposition: Some("1".into()),
        disposition_label: Some("1".into()),
        disposition_note: Some("1".into()),
        group: Some("1".into()),
        caller_name: Some("1".into()),
        agent_name: Some("1".into()),
    }
}

fn agent_of_record(agent: &switchboard_model::AgentRef) -> AgentValues {
    AgentValues {
        id: agent.agent_id.clone(),
        extension: agent.extension.clone(),
        number: agent.number.clone(),
        email: agent.email.clone(),
    }
}

fn external(direction: Option<CallDirection>, from: &Option<String>, to: &Option<String>) -> Option<String> {
    match direction {
        Some(CallDirection::Inbound) => from.clone(),
        Some(CallDirection::Outbound) => to.clone(),
        Some(CallDirection::Internal) | None => None,
    }
}

/// A pending link does not open anything yet and a failed one never will, so only a ready link
/// (or a vendor link from a source whose recordings stage set no status) is a recording link.
fn usable_recording(url: &Option<String>, status: Option<RecordingStatus>) -> Option<String> {
    match status {
        None | Some(RecordingStatus::Ready) => url.clone().filter(|u| !u.is_empty()),
        Some(RecordingStatus::Pending | RecordingStatus::Failed | RecordingStatus::Unknown) => None,
    }
}

impl CallValues {
    /// Fills `location`: the country of the external number.
    pub fn located(mut self) -> Self {
        self.location = self.external_number.as_deref().and_then(country_of);
        self
    }
}

/// Loads the numbering plan's metadata (parsed on first use, which took half a second of the first
/// delivery's attempt in a debug build).
pub fn load_numbering_plan() {
    let _ = country_of("+442079460000");
}

fn country_of(number: &str) -> Option<String> {
    if !number.starts_with('+') {
        return None;
    }
    let parsed = phonenumber::parse(None, number).ok()?;
    parsed.country().id().map(|id| id.as_ref().to_owned())
}

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
