//! switchboard-model: the vendor-neutral call model every stage after the normalizer speaks.
//!
//! Inputs and outputs: none of its own; these are the records on every topic (`RawWebhook` on the
//! raw topic, `CallEvent` on the call-event topics, `DeadLetter`) and the domain types inside them.
//!
//! Values are parsed once, at the edge that receives them (ingress for source ids, an adapter for
//! call ids and numbers); after that the types guarantee their shape. The same structs are what
//! the Avro codec serialises, so a field added here is a field added to `schemas/`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod call_record;
pub mod source_settings;
pub use call_record::{AgentRef, CallRecord, CallStatus, Completion, LegRecord, Outcome};
pub use source_settings::SourceSettings;

/// Why a value from the outside world was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub reason: String,
}

impl InvalidValue {
    fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self { what, reason: reason.into() }
    }
}

/// The conversions every validated string newtype shares: serde goes through `String` and
/// `Self::parse`, so a value read from the wire is checked like one read from a webhook.
macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Declares a string newtype that can only hold a non-empty, printable value of bounded length.
macro_rules! bounded_id {
    ($(#[$meta:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                if value.is_empty() {
                    return Err(InvalidValue::new($what, "empty"));
                }
                if value.len() > $max {
                    return Err(InvalidValue::new($what, format!("longer than {} bytes", $max)));
                }
                if value.chars().any(char::is_control) {
                    return Err(InvalidValue::new($what, "contains control characters"));
                }
                Ok(Self(value))
            }
        }

        string_newtype!($name);
    };
}

bounded_id!(
    /// The vendor's id for a call. Unique only within one source, so storage keys pair it with
    /// the source id.
    CallId,
    "call id",
    256
);
bounded_id!(
    /// The vendor's id for one leg of a call (Telphin `SubCallID`, Twilio child `CallSid`,
    /// Asterisk `Uniqueid`).
    LegId,
    "leg id",
    256
);
bounded_id!(
    /// Dedupe key of one call event; see `schemas/call_event.avsc`.
    EventId,
    "event id",
    256
);

/// A configured PBX source: the unit of authentication and of per-vendor settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId(String);

impl SourceId {
    /// Source ids appear in URLs, metric labels and storage keys, so they are kept to a small,
    /// URL-safe alphabet.
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        let valid_chars =
            value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if value.is_empty() || value.len() > 63 || !valid_chars || value.starts_with(['-', '_']) {
            return Err(InvalidValue::new(
                "source id",
                "use 1 to 63 of a-z, 0-9, '-' and '_', starting with a letter or digit",
            ));
        }
        Ok(Self(value))
    }
}

string_newtype!(SourceId);

/// Which adapter reads a source's webhooks. Stored as a string on the wire so that a new vendor
/// is not a schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Vendor {
    /// Switchboard's own documented JSON format (`docs/generic-webhook.md`).
    Generic,
    Telphin,
    Twilio,
    Zadarma,
    Aircall,
    /// Intermedia Contact Center, as its IVR studio posts (seed 000).
    Intermedia,
    /// Chronicall web-service integration profiles (seed 004).
    Chronicall,
    /// Axialys screen-pop parameters (seed 003).
    Axialys,
    /// uContact (Net2Phone Contact Center) outbound webhooks (seed 002).
    Ucontact,
    /// Net2Phone Unite call webhooks.
    Net2phone,
    Mango,
    Sipuni,
    Onlinepbx,
    /// An Asterisk AMI event feed relayed as JSON (`Linkedid`/`Uniqueid`).
    Asterisk,
}

impl Vendor {
    pub const ALL: &'static [Vendor] = &[
        Vendor::Generic,
        Vendor::Telphin,
        Vendor::Twilio,
        Vendor::Zadarma,
        Vendor::Aircall,
        Vendor::Intermedia,
        Vendor::Chronicall,
        Vendor::Axialys,
        Vendor::Ucontact,
        Vendor::Net2phone,
        Vendor::Mango,
        Vendor::Sipuni,
        Vendor::Onlinepbx,
        Vendor::Asterisk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Generic => "generic",
            Vendor::Telphin => "telphin",
            Vendor::Twilio => "twilio",
            Vendor::Zadarma => "zadarma",
            Vendor::Aircall => "aircall",
            Vendor::Intermedia => "intermedia",
            Vendor::Chronicall => "chronicall",
            Vendor::Axialys => "axialys",
            Vendor::Ucontact => "ucontact",
            Vendor::Net2phone => "net2phone",
            Vendor::Mango => "mango",
            Vendor::Sipuni => "sipuni",
            Vendor::Onlinepbx => "onlinepbx",
            Vendor::Asterisk => "asterisk",
        }
    }
}

impl FromStr for Vendor {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Vendor::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| InvalidValue::new("vendor", format!("unknown vendor {s:?}")))
    }
}

impl TryFrom<String> for Vendor {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Vendor> for &'static str {
    fn from(value: Vendor) -> Self {
        value.as_str()
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A telephone number in E.164 (`+442079460000`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses a number as a PBX wrote it, reading national formats (`020 7946 0000`) in the
    /// source's default region. Returns `None` for things that are not public numbers
    /// (extensions, `anonymous`, garbage): callers keep the raw text instead of failing the event.
    pub fn parse_lenient(raw: &str, default_region: Region) -> Option<Self> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || !trimmed.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        // Many PBXs send international numbers without the plus (Telphin, Zadarma), which the
        // parser would read as national; a digits-only string longer than most national numbers
        // is also tried as international. When both readings are valid, the national one wins
        // if it lands in the source's own country: `84951234567` from a Russian PBX is Moscow
        // with the trunk prefix 8, not Vietnam (+84).
        let digits_only = trimmed.bytes().all(|b| b.is_ascii_digit());
        let national = Self::parse_strict(trimmed, Some(default_region.0));
        // `00` is the international prefix of most of the world, and PBXs there present foreign
        // callers with it (`00 44 20 7946 0135`) whatever region reads them: a US source, whose
        // own prefix is 011, would find no such national number. So `00` + a valid international
        // number is that number in every region; the national reading stands only where that
        // fails (Australia dials out with 0011: `0011 44 …` is not `+11 44 …`).
        if let Some(international) = without_00(trimmed) {
            return match Self::parse_strict(&format!("+{international}"), None) {
                Some((number, _)) => Some(number),
                None => national.map(|(number, _)| number),
            };
        }
        if digits_only && trimmed.len() >= 11 && !trimmed.starts_with('0') {
            let international = Self::parse_strict(&format!("+{trimmed}"), None);
            return match (international, national) {
                (Some(_), Some((national, country))) if country == Some(default_region.0) => Some(national),
                (Some((international, _)), _) => Some(international),
                (None, national) => national.map(|(number, _)| number),
            };
        }
        national.map(|(number, _)| number)
    }

    /// A valid number in E.164, with the country it belongs to.
    fn parse_strict(
        raw: &str,
        region: Option<phonenumber::country::Id>,
    ) -> Option<(Self, Option<phonenumber::country::Id>)> {
        let number = phonenumber::parse(region, raw).ok()?;
        if !phonenumber::is_valid(&number) {
            return None;
        }
        let country = number.country().id();
        Some((Self(number.format().mode(phonenumber::Mode::E164).to_string()), country))
    }

    /// Accepts a value that is already E.164, as read back from one of our own topics.
    pub fn from_e164(value: impl Into<String>) -> Result<Self, InvalidValue> {
        Self::parse(value)
    }

    /// Strict parse of E.164 text; `parse_lenient` reads what PBXs send.
    fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        let digits = value.strip_prefix('+').unwrap_or("");
        let shape_ok = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !shape_ok {
            return Err(InvalidValue::new("E.164 number", format!("{value:?} is not +<7-15 digits>")));
        }
        Ok(Self(value))
    }
}

string_newtype!(PhoneNumber);

/// The digits after a leading `00`, when `raw` is `00` and digits in the usual groupings
/// (`0044 20 7946 0135`, `00-44-20-…`, `00 (44) 20…`).
fn without_00(raw: &str) -> Option<String> {
    let compact: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/')).collect();
    let rest = compact.strip_prefix("00")?;
    (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())).then(|| rest.to_owned())
}

/// The region a source's national-format numbers belong to (ISO 3166 alpha-2, e.g. `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(phonenumber::country::Id);

impl FromStr for Region {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .map(Region)
            .map_err(|_| InvalidValue::new("region", format!("{s:?} is not an ISO 3166 alpha-2 code")))
    }
}

/// The United States, `phonenumber`'s and most PBXs' assumption when nothing is configured.
impl Default for Region {
    fn default() -> Self {
        Region(phonenumber::country::Id::US)
    }
}

impl Region {
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

/// What happened to the call or leg. `Unknown` is the Avro enum default, so that a reader
/// built before a new kind was added still reads newer records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    Ringing,
    Answered,
    Hangup,
    /// A recording of the call (or leg) exists: `recording_url` or `recording_id` says where. Not
    /// a change of call state.
    Recording,
    Unknown,
    /// An agent's wrap-up of the call (`wrap_up` says what): its disposition, note and tags, set
    /// after the call through the desk's API, the last one winning. Not a change of call state.
    /// Last of the symbols, so that the Avro index of every earlier kind stays what it was.
    WrapUp,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Ringing => "ringing",
            EventKind::Answered => "answered",
            EventKind::Hangup => "hangup",
            EventKind::Recording => "recording",
            EventKind::Unknown => "unknown",
            EventKind::WrapUp => "wrap_up",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    Inbound,
    Outbound,
    Internal,
    Unknown,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Internal => "internal",
            Direction::Unknown => "unknown",
        }
    }
}

/// How a call or leg ended, as the vendor reports it on a hangup (Telphin `CallStatus`/`Bridged`,
/// Twilio `CallStatus`, Zadarma `disposition`...). The call log derives the call's outcome
/// (missed, abandoned in IVR...) from these and the legs; adapters only translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Disposition {
    Answered,
    NoAnswer,
    Busy,
    /// The caller hung up before anyone answered.
    Cancelled,
    Failed,
    Rejected,
    Voicemail,
    Unknown,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::NoAnswer => "no_answer",
            Disposition::Busy => "busy",
            Disposition::Cancelled => "cancelled",
            Disposition::Failed => "failed",
            Disposition::Rejected => "rejected",
            Disposition::Voicemail => "voicemail",
            Disposition::Unknown => "unknown",
        }
    }
}

/// How the matcher found the agent of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentMatch {
    Extension,
    Number,
    /// By email, when the source enables it and neither extension nor number matched.
    Email,
    Unknown,
}

/// What the matcher found for the caller's (customer's) number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContactMatch {
    /// Exactly one contact has the number.
    Unique,
    /// Several contacts have it; all are listed, none is guessed.
    Ambiguous,
    /// Nobody has it (or the event has no external number).
    None,
    /// The number is one of the company's own (a DID or trunk), never a customer.
    OwnNumber,
    Unknown,
}

/// Where a call's recording stands, as the recordings stage reports it: `Pending` while the
/// vendor's recording id waits to be resolved (the vendor may not have the file yet), `Ready` once
/// the stable Switchboard link opens it, `Failed` once the retry budget is spent or the vendor
/// refused for good (`recording_error` says why). `Unknown` is the Avro enum default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordingStatus {
    Pending,
    Ready,
    Failed,
    Unknown,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Pending => "pending",
            RecordingStatus::Ready => "ready",
            RecordingStatus::Failed => "failed",
            RecordingStatus::Unknown => "unknown",
        }
    }

    /// Which of two statuses of one call wins, whatever order they arrive in: a recording that
    /// is ready beats one that failed, and any outcome beats waiting.
    pub fn precedence(self) -> u8 {
        match self {
            RecordingStatus::Unknown => 0,
            RecordingStatus::Pending => 1,
            RecordingStatus::Failed => 2,
            RecordingStatus::Ready => 3,
        }
    }
}

impl FromStr for RecordingStatus {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(RecordingStatus::Pending),
            "ready" => Ok(RecordingStatus::Ready),
            "failed" => Ok(RecordingStatus::Failed),
            other => Err(InvalidValue::new(
                "recording status",
                format!("{other:?} is not one of pending, ready, failed"),
            )),
        }
    }
}

/// `text` as the content or an attribute value of an XML or HTML document: the five characters
/// markup gives a meaning to as their references (`'` as `&#39;`, which both languages read).
/// For the TwiML and XML answers to PBXs and for CRM fields read as HTML.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A secret (an API secret, a signing key): serialised as its text, so that it can be stored and
/// configured, but never shown by `Debug`, so that it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that signs or authenticates with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(empty)" } else { "Secret(***)" })
    }
}

/// One HTTP request as a PBX sent it (`schemas/raw_webhook.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawWebhook {
    pub id: String,
    pub source_id: SourceId,
    pub vendor: Vendor,
    pub default_region: String,
    /// IANA time zone of a source whose PBX sends local times without an offset.
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(with = "micros")]
    pub received_at: DateTime<Utc>,
    pub remote_addr: Option<String>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(with = "apache_avro::serde::bytes")]
    pub body: Vec<u8>,
}

/// One thing that happened to a call (`schemas/call_event.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    pub event_id: EventId,
    pub raw_id: String,
    pub source_id: SourceId,
    pub vendor: Vendor,
    pub call_id: CallId,
    pub leg_id: Option<LegId>,
    pub kind: EventKind,
    pub direction: Direction,
    pub from_raw: Option<String>,
    pub from_e164: Option<PhoneNumber>,
    pub to_raw: Option<String>,
    pub to_e164: Option<PhoneNumber>,
    pub agent_number: Option<String>,
    pub agent_email: Option<String>,
    #[serde(default)]
    pub agent_extension: Option<String>,
    #[serde(with = "micros")]
    pub occurred_at: DateTime<Utc>,
    #[serde(with = "micros")]
    pub received_at: DateTime<Utc>,
    pub sequence: Option<i64>,
    pub hangup_cause: Option<String>,
    pub recording_url: Option<String>,
    #[serde(default)]
    pub disposition: Option<Disposition>,
    /// The vendor's recording id (Telphin `RecID`, Zadarma `call_id_with_rec`, Twilio
    /// `RecordingSid`), for the recordings stage to resolve into a link.
    #[serde(default)]
    pub recording_id: Option<String>,
    /// Set by the matcher: the directory agent of this event, and how it was found.
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub agent_match: Option<AgentMatch>,
    /// Set by the matcher: the contact(s) owning the external number; several only when
    /// `contact_match` is `Ambiguous`.
    #[serde(default)]
    pub contact_ids: Vec<String>,
    #[serde(default)]
    pub contact_match: Option<ContactMatch>,
    /// The responsible agent of the (unique) matched contact.
    #[serde(default)]
    pub responsible_agent_id: Option<String>,
    /// Set by the recordings stage on every event that names a recording: pending, ready (the
    /// event's `recording_url` is then the stable Switchboard link) or failed.
    #[serde(default)]
    pub recording_status: Option<RecordingStatus>,
    /// Why the recording failed, on the recordings stage's failure event.
    #[serde(default)]
    pub recording_error: Option<String>,
    /// The queue, campaign or hunt group the PBX routed the call through, as it names it
    /// (uContact's campaign), where it says.
    #[serde(default)]
    pub queue: Option<String>,
    /// The agent's wrap-up, on a `WrapUp` event.
    #[serde(default)]
    pub wrap_up: Option<WrapUp>,
}

/// An agent's wrap-up of a call: the disposition (a code from the source's list, with the label
/// it had when set), a free note and tags. Set as a whole: the latest wins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WrapUp {
    pub code: Option<String>,
    pub label: Option<String>,
    pub note: Option<String>,
    pub tags: Vec<String>,
    /// The directory agent who set it, when an agent's session did.
    pub agent_id: Option<String>,
    #[serde(with = "micros")]
    pub set_at: DateTime<Utc>,
}

impl CallEvent {
    /// An event read from `raw`, with every optional field empty, for adapters to fill in.
    pub fn new(
        raw: &RawWebhook,
        event_id: EventId,
        call_id: CallId,
        kind: EventKind,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        let mut event = Self::empty(raw.source_id.clone(), raw.vendor, call_id, event_id, kind, occurred_at);
        event.raw_id = raw.id.clone();
        event.received_at = raw.received_at;
        event
    }

    /// An event with every optional field empty, received when it occurred and read from no raw
    /// webhook (`raw_id` empty): for stages that announce something themselves, and for tests.
    pub fn empty(
        source_id: SourceId,
        vendor: Vendor,
        call_id: CallId,
        event_id: EventId,
        kind: EventKind,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id,
            raw_id: String::new(),
            source_id,
            vendor,
            call_id,
            leg_id: None,
            kind,
            direction: Direction::Unknown,
            from_raw: None,
            from_e164: None,
            to_raw: None,
            to_e164: None,
            agent_number: None,
            agent_email: None,
            agent_extension: None,
            occurred_at,
            received_at: occurred_at,
            sequence: None,
            hangup_cause: None,
            recording_url: None,
            disposition: None,
            recording_id: None,
            agent_id: None,
            agent_match: None,
            contact_ids: Vec::new(),
            contact_match: None,
            responsible_agent_id: None,
            recording_status: None,
            recording_error: None,
            queue: None,
            wrap_up: None,
        }
    }

    /// The Kafka message key: every event of one call shares it, so they share a partition and
    /// stay in order through every stage (`schemas/README.md`).
    pub fn partition_key(&self) -> String {
        call_partition_key(&self.source_id, self.call_id.as_str())
    }
}

/// Kafka key for anything about one call, raw or normalised.
pub fn call_partition_key(source: &SourceId, call_id: &str) -> String {
    format!("{source}:{call_id}")
}

/// An agent's status on the desk. `Unknown` is the Avro enum default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentStatusValue {
    Available,
    Break,
    Offline,
    Unknown,
}

impl AgentStatusValue {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatusValue::Available => "available",
            AgentStatusValue::Break => "break",
            AgentStatusValue::Offline => "offline",
            AgentStatusValue::Unknown => "unknown",
        }
    }

    /// The status an agent may set (`available`, `break`, `offline`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "available" => Some(AgentStatusValue::Available),
            "break" => Some(AgentStatusValue::Break),
            "offline" => Some(AgentStatusValue::Offline),
            _ => None,
        }
    }
}

/// An agent's status changed (`schemas/agent_status.avsc`), keyed by agent id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub agent_id: String,
    pub status: AgentStatusValue,
    pub session_id: Option<String>,
    #[serde(with = "micros")]
    pub changed_at: DateTime<Utc>,
}

/// A record some stage could not process (`schemas/dead_letter.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub stage: String,
    pub reason: String,
    pub error_class: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
    #[serde(with = "micros")]
    pub failed_at: DateTime<Utc>,
}

/// Avro `timestamp-micros` as chrono UTC times.
pub mod micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(value.timestamp_micros())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let micros = i64::deserialize(deserializer)?;
        DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| serde::de::Error::custom(format!("timestamp {micros} out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_any_format_become_the_same_e164() {
        let gb: Region = "gb".parse().expect("GB is a region");
        let forms = ["+44 20 7946 0000", "020 7946 0000", "442079460000", "+44 (0)20 7946 0000"];
        for form in forms {
            let parsed = PhoneNumber::parse_lenient(form, gb).map(|n| n.as_str().to_owned());
            assert_eq!(parsed.as_deref(), Some("+442079460000"), "{form}");
        }
    }

    #[test]
    fn digits_only_numbers_read_as_the_pbx_meant_them() {
        let ru: Region = "RU".parse().expect("RU is a region");
        let gb: Region = "GB".parse().expect("GB is a region");
        let cases = [
            ("84951234567", ru, "+74951234567"),
            ("74951234567", ru, "+74951234567"),
            ("+7 (495) 123-45-67", ru, "+74951234567"),
            ("442079460000", ru, "+442079460000"),
            ("442079460000", gb, "+442079460000"),
            ("14155550123", gb, "+14155550123"),
        ];
        for (raw, region, expected) in cases {
            let parsed = PhoneNumber::parse_lenient(raw, region).map(|n| n.as_str().to_owned());
            assert_eq!(parsed.as_deref(), Some(expected), "{raw} in {}", region.as_str());
        }
    }

    #[test]
    fn a_leading_00_is_international_in_every_region() {
        let region = |code: &str| code.parse::<Region>().expect("a region");
        let cases = [
            // A US source dials out with 011, yet European PBXs behind it present callers with 00.
            ("00442079460135", "US", "+442079460135"),
            ("00 44 20 7946 0135", "US", "+442079460135"),
            ("0044-20-7946-0135", "US", "+442079460135"),
            ("011 44 20 7946 0135", "US", "+442079460135"),
            ("00 7 495 123-45-67", "US", "+74951234567"),
            ("00442079460135", "GB", "+442079460135"),
            ("00 1 415 555 0123", "GB", "+14155550123"),
            ("00442079460135", "RU", "+442079460135"),
            ("00 49 30 901820", "RU", "+4930901820"),
            // Australia dials out with 0011: `+11 44…` is no number, the national reading is.
            ("0011 44 20 7946 0135", "AU", "+442079460135"),
        ];
        for (raw, code, expected) in cases {
            let parsed = PhoneNumber::parse_lenient(raw, region(code)).map(|n| n.as_str().to_owned());
            assert_eq!(parsed.as_deref(), Some(expected), "{raw} in {code}");
        }
        // What each reading alone gives: nothing for the US national reading, nothing for the
        // international reading of Australia's prefix.
        assert_eq!(PhoneNumber::parse_strict("00442079460135", Some(region("US").0)), None);
        assert_eq!(PhoneNumber::parse_strict("+11442079460135", None), None);
        // No valid number either way.
        for code in ["US", "GB", "RU"] {
            assert_eq!(PhoneNumber::parse_lenient("00 44 20", region(code)), None, "{code}");
            assert_eq!(PhoneNumber::parse_lenient("00", region(code)), None, "{code}");
        }
    }

    #[test]
    fn extensions_and_junk_are_not_numbers() {
        let us: Region = "US".parse().expect("US is a region");
        for raw in ["101", "anonymous", "", "+", "12"] {
            assert_eq!(PhoneNumber::parse_lenient(raw, us), None, "{raw}");
        }
    }

    #[test]
    fn e164_shape_is_checked_when_read_back() {
        assert!(PhoneNumber::from_e164("+442079460000").is_ok());
        for bad in ["442079460000", "+0123456789", "+12", "+4420794600001234567"] {
            assert!(PhoneNumber::from_e164(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn source_ids_are_url_safe() {
        assert!(SourceId::parse("acme-telphin_1").is_ok());
        for bad in ["", "-x", "Acme", "a/b", "a b", &"x".repeat(64)] {
            assert!(SourceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn markup_escapes_the_five_characters_and_nothing_else() {
        assert_eq!(
            escape_markup(r#"Tom & "Jerry's" <b>/é"#),
            "Tom &amp; &quot;Jerry&#39;s&quot; &lt;b&gt;/é"
        );
        assert_eq!(escape_markup("+442079460000"), "+442079460000");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{:?}", Secret::default()), "Secret(empty)");
    }

    #[test]
    fn recording_statuses_rank_ready_over_failed_over_pending() {
        use RecordingStatus::*;
        assert!(Ready.precedence() > Failed.precedence());
        assert!(Failed.precedence() > Pending.precedence());
        for status in [Pending, Ready, Failed] {
            assert_eq!(status.as_str().parse::<RecordingStatus>(), Ok(status));
        }
        assert!("done".parse::<RecordingStatus>().is_err());
    }

    #[test]
    fn ids_refuse_empty_and_control_characters() {
        assert!(CallId::parse("abc-123").is_ok());
        assert!(CallId::parse("").is_err());
        assert!(CallId::parse("a\nb").is_err());
        assert!(CallId::parse("x".repeat(257)).is_err());
    }
}
