//! "Which extension owns this caller?", answered in the asking PBX's own format.
//!
//! The answer comes from the in-memory directory snapshot, so a lookup is a few hash probes. Every
//! failure — unknown caller, no or ambiguous contact, no responsible agent, no snapshot yet
//! (database down since start-up), a request too slow to read — is answered with the configured
//! fallback and `200`: an IVR that gets an error page drops the call or plays an error, which is
//! worse than sending it to the queue.
//!
//! A blacklisted caller (an entry not expired at the time of the lookup) gets neither an agent nor
//! the fallback but the PBX's own refusal:
//! - Telphin: `<Response><Hangup/></Response>`, the `Hangup` verb of Call Interactive's answer,
//!   which ends the call at once;
//! - Zadarma: `{"redirect": "blacklist"}`, the answer to `NOTIFY_START` that rejects the call
//!   with a busy signal;
//! - JSON: `{"action": "reject", "destination": null, "reason": "blacklisted", …}`.
//!
//! With `router.blacklist_target` set (an extension that plays a message, say), the caller is sent
//! there instead, as to any destination: Telphin `SetVar`, Zadarma `{"redirect": target}`, JSON
//! `"action": "transfer"`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::RouterSettings;
use chrono::{DateTime, Utc};
use switchboard_core::model::{PhoneNumber, Region};
use switchboard_directory::{Directory, Owner};

/// The response formats PBXs understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Telphin / VoipNow "Call Interactive": `<Response><SetVar name="…">ext</SetVar></Response>`.
    Telphin,
    /// Zadarma's answer to `NOTIFY_START`: `{"redirect": "ext"}`.
    Zadarma,
    /// `{"action": …, "destination": …, "agent_id": …, "fallback": …, "reason": …}`.
    Json,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Telphin, Format::Zadarma, Format::Json];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "telphin" | "xml" => Some(Format::Telphin),
            "zadarma" => Some(Format::Zadarma),
            "json" | "" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Telphin => "telphin",
            Format::Zadarma => "zadarma",
            Format::Json => "json",
        }
    }
}

/// Why the router fell back, or that it found an agent or refused a blacklisted caller; also the
/// metric's `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Agent,
    /// The caller is on the blacklist: the PBX's refusal, or `router.blacklist_target`.
    Blacklisted,
    UnknownCaller,
    NoAgent,
    Ambiguous,
    NotLoaded,
    Timeout,
    BadRequest,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Agent,
        Outcome::Blacklisted,
        Outcome::UnknownCaller,
        Outcome::NoAgent,
        Outcome::Ambiguous,
        Outcome::NotLoaded,
        Outcome::Timeout,
        Outcome::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Agent => "agent",
            Outcome::Blacklisted => "blacklisted",
            Outcome::UnknownCaller => "fallback_unknown_caller",
            Outcome::NoAgent => "fallback_no_agent",
            Outcome::Ambiguous => "fallback_ambiguous",
            Outcome::NotLoaded => "fallback_not_loaded",
            Outcome::Timeout => "fallback_timeout",
            Outcome::BadRequest => "fallback_bad_request",
        }
    }
}

/// The lookup metrics' series, resolved once: a lookup then costs two atomic adds, not two
/// label-hash lookups, and every (format, outcome) series exists from the start at zero, so an
/// alert on a rate sees its first fallback.
#[derive(Debug)]
pub struct LookupMetrics {
    /// By format, then by outcome, in their `ALL` orders.
    lookups: Vec<Vec<prometheus::IntCounter>>,
    seconds: Vec<prometheus::Histogram>,
}

impl Default for LookupMetrics {
    fn default() -> Self {
        use crate::metrics::{ROUTER_LOOKUPS, ROUTER_SECONDS};
        let lookups = Format::ALL
            .iter()
            .map(|f| {
                Outcome::ALL
                    .iter()
                    .map(|o| ROUTER_LOOKUPS.with_label_values(&[f.as_str(), o.as_str()]))
                    .collect()
            })
            .collect();
        let seconds = Format::ALL.iter().map(|f| ROUTER_SECONDS.with_label_values(&[f.as_str()])).collect();
        Self { lookups, seconds }
    }
}

impl LookupMetrics {
    pub fn record(&self, format: Format, outcome: Outcome, seconds: f64) {
        let f = Format::ALL.iter().position(|x| *x == format).unwrap_or_default();
        let o = Outcome::ALL.iter().position(|x| *x == outcome).unwrap_or_default();
        if let Some(counter) = self.lookups.get(f).and_then(|outcomes| outcomes.get(o)) {
            counter.inc();
        }
        if let Some(histogram) = self.seconds.get(f) {
            histogram.observe(seconds);
        }
    }
}

/// The routing decision for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The extension to transfer to: the agent's; for a blacklisted caller
    /// `router.blacklist_target` (empty: refuse the call); else the fallback (possibly empty).
    pub destination: String,
    pub agent_id: Option<String>,
}

impl Decision {
    pub fn fallback(outcome: Outcome, settings: &RouterSettings) -> Self {
        Self { outcome, destination: settings.fallback.clone(), agent_id: None }
    }

    pub fn blacklisted(settings: &RouterSettings) -> Self {
        Self { outcome: Outcome::Blacklisted, destination: settings.blacklist_target.clone(), agent_id: None }
    }

    /// The PBX's own refusal of the call, instead of a transfer.
    pub fn rejects(&self) -> bool {
        self.outcome == Outcome::Blacklisted && self.destination.is_empty()
    }
}

/// Caller numbers as PBXs write them, already read into E.164 for the router's default region.
/// Parsing is most of a lookup's cost, and callers of a company call again and again; the
/// cache keeps at most `capacity` entries in two generations (the older one is dropped whole
/// when the newer fills up), so memory stays bounded without per-entry bookkeeping.
#[derive(Debug)]
pub struct CallerCache {
    region: Region,
    capacity: usize,
    /// (newer, older).
    generations: Mutex<(ParsedCallers, ParsedCallers)>,
}

/// Caller text → its E.164 number, `None` when it is not a number.
type ParsedCallers = HashMap<String, Option<PhoneNumber>>;

impl CallerCache {
    pub fn new(region: Region, capacity: usize) -> Self {
        Self { region, capacity: capacity.max(2), generations: Mutex::default() }
    }

    /// `raw` read in `region`; cached only for the default region, which nearly every lookup uses.
    pub fn parse(&self, raw: &str, region: Region) -> Option<PhoneNumber> {
        if region != self.region {
            return PhoneNumber::parse_lenient(raw, region);
        }
        if let Ok(generations) = self.generations.lock() {
            let (newer, older) = &*generations;
            if let Some(hit) = newer.get(raw).or_else(|| older.get(raw)) {
                return hit.clone();
            }
        }
        // Parsed outside the lock: two threads may parse the same caller once each, harmlessly.
        let parsed = PhoneNumber::parse_lenient(raw, region);
        if raw.len() <= 64
            && let Ok(mut generations) = self.generations.lock()
        {
            let (newer, older) = &mut *generations;
            if newer.len() >= self.capacity / 2 {
                *older = std::mem::take(newer);
            }
            let _ = newer.insert(raw.to_owned(), parsed.clone());
        }
        parsed
    }
}

/// A lookup's parameters: the query's, then a POST's form fields; the first of each name counts.
pub fn params_of(query: &[u8], form: Option<&[u8]>) -> HashMap<String, String> {
    let mut params: HashMap<String, String> = HashMap::new();
    for bytes in std::iter::once(query).chain(form) {
        for (key, value) in form_urlencoded::parse(bytes) {
            let _ = params.entry(key.into_owned()).or_insert_with(|| value.into_owned());
        }
    }
    params
}

/// What a lookup decides with.
#[derive(Debug)]
pub struct Context<'a> {
    pub settings: &'a RouterSettings,
    /// The region of national numbers when the lookup names none.
    pub region: Region,
    /// The directory snapshot, `None` until the first one loads.
    pub directory: Option<&'a Directory>,
    pub callers: &'a CallerCache,
    pub now: DateTime<Utc>,
}

/// The answer to a lookup.
#[derive(Debug)]
pub enum Reply {
    Decision(Decision),
    /// Zadarma's URL check: its `zd_echo`, as text.
    Echo(String),
}

/// The answer to a lookup with `params` (the format, when the path did not fix it, the caller,
/// the region, Zadarma's `zd_echo`) from a client whose token was `authorized` or not. Every
/// input gets an answer: a parameter that makes no sense is the fallback (`BadRequest`).
pub fn answer(
    params: &HashMap<String, String>,
    format: Option<Format>,
    authorized: bool,
    context: &Context<'_>,
) -> (Format, Reply) {
    let fallback = |format, outcome| (format, Reply::Decision(Decision::fallback(outcome, context.settings)));
    let format = match format {
        Some(format) => format,
        None => match Format::parse(params.get("format").map_or("", String::as_str)) {
            Some(format) => format,
            None => return fallback(Format::Json, Outcome::BadRequest),
        },
    };
    // Zadarma validates a URL before using it; the echo is the only answer it accepts.
    if format == Format::Zadarma
        && let Some(echo) = params.get("zd_echo")
        && echo.len() <= 128
        && echo.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return (format, Reply::Echo(echo.clone()));
    }
    if !authorized {
        return fallback(format, Outcome::BadRequest);
    }
    let region = match params.get("region") {
        Some(region) => match region.parse() {
            Ok(region) => region,
            Err(_) => return fallback(format, Outcome::BadRequest),
        },
        None => context.region,
    };
    let caller = ["caller", "CallerIDNum", "caller_id", "from"]
        .iter()
        .find_map(|name| params.get(*name))
        .map(String::as_str);
    let decision = decide(context.directory, caller, region, context.settings, context.callers, context.now);
    (format, Reply::Decision(decision))
}

/// Decides where `caller` (as the PBX wrote it) goes at `now`: a blacklisted caller is refused
/// first, whoever owns the number.
pub fn decide(
    directory: Option<&Directory>,
    caller: Option<&str>,
    region: Region,
    settings: &RouterSettings,
    cache: &CallerCache,
    now: DateTime<Utc>,
) -> Decision {
    let Some(directory) = directory else {
        return Decision::fallback(Outcome::NotLoaded, settings);
    };
    let Some(number) = caller.and_then(|c| cache.parse(c, region)) else {
        return Decision::fallback(Outcome::UnknownCaller, settings);
    };
    if directory.blacklisted(&number, now).is_some() {
        return Decision::blacklisted(settings);
    }
    match directory.owner(&number) {
        Owner::Contact(contact) => {
            let agent = contact.responsible_agent_id.as_deref().and_then(|id| directory.agent(id));
            match agent.and_then(|a| a.extensions.first().map(|ext| (a, ext))) {
                Some((agent, extension)) => Decision {
                    outcome: Outcome::Agent,
                    destination: extension.clone(),
                    agent_id: Some(agent.id.clone()),
                },
                None => Decision::fallback(Outcome::NoAgent, settings),
            }
        }
        Owner::Ambiguous(_) => Decision::fallback(Outcome::Ambiguous, settings),
        Owner::Nobody | Owner::OwnNumber => Decision::fallback(Outcome::UnknownCaller, settings),
    }
}

/// The body and content type of the answer in `format`.
pub fn render(decision: &Decision, format: Format, settings: &RouterSettings) -> (&'static str, String) {
    match format {
        Format::Telphin => {
            let mut xml = String::from("<Response>");
            // No destination: an empty response lets the IVR go on to its next rule.
            if decision.rejects() {
                xml.push_str("<Hangup/>");
            } else if !decision.destination.is_empty() {
                let _ = write!(
                    xml,
                    "<SetVar name=\"{}\">{}</SetVar>",
                    settings.telphin_variable,
                    switchboard_core::model::escape_markup(&decision.destination)
                );
            }
            xml.push_str("</Response>");
            ("application/xml", xml)
        }
        Format::Zadarma => {
            let body = if decision.rejects() {
                // Zadarma's own blacklist scenario: the call is rejected with a busy signal.
                serde_json::json!({ "redirect": "blacklist" })
            } else if decision.destination.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::json!({ "redirect": decision.destination })
            };
            ("application/json", body.to_string())
        }
        Format::Json => {
            let action = match (decision.rejects(), decision.destination.is_empty()) {
                (true, _) => "reject",
                (false, false) => "transfer",
                // No destination: the IVR goes on to its next rule.
                (false, true) => "continue",
            };
            let body = serde_json::json!({
                "action": action,
                "destination": (!decision.destination.is_empty()).then_some(&decision.destination),
                "agent_id": decision.agent_id,
                "fallback": !matches!(decision.outcome, Outcome::Agent | Outcome::Blacklisted),
                "reason": decision.outcome.as_str(),
            });
            ("application/json", body.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_directory::{Agent, BlacklistEntry, Contact};

    use super::*;

    fn settings(fallback: &str) -> RouterSettings {
        RouterSettings { fallback: fallback.into(), ..RouterSettings::default() }
    }

    fn directory() -> Directory {
        let agent = |id: &str, ext: &[&str]| Agent {
            id: id.into(),
            name: id.into(),
            email: None,
            extensions: ext.iter().map(|e| (*e).to_owned()).collect(),
            phone_numbers: vec![],
            external_ids: serde_json::json!({}),
            groups: Vec::new(),
        };
        let contact = |id: &str, number: &str, agent: Option<&str>| Contact {
            id: id.into(),
            name: id.into(),
            company: None,
            phone_numbers: vec![number.into()],
            responsible_agent_id: agent.map(str::to_owned),
        };
        Directory::new(
            vec![agent("ann", &["101"]), agent("nox", &[])],
            vec![
                contact("alice", "+74951234567", Some("ann")),
                contact("orphan", "+74951234568", None),
                contact("no-ext", "+74951234569", Some("nox")),
                contact("twin-1", "+74951234570", Some("ann")),
                contact("twin-2", "+74951234570", Some("ann")),
            ],
            vec![],
            vec![],
        )
        .with_blacklist(
            vec![
                BlacklistEntry {
                    number: "+74951234567".into(),
                    reason: None,
                    expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
                    created_at: Utc::now(),
                },
                BlacklistEntry {
                    number: "+74959999990".into(),
                    reason: Some("robocaller".into()),
                    expires_at: None,
                    created_at: Utc::now(),
                },
            ],
            Utc::now(),
        )
    }

    #[test]
    fn every_path_gives_an_answer() {
        let ru: Region = "RU".parse().expect("region");
        let dir = directory();
        let s = settings("700");
        let cases = [
            (Some("84951234567"), Outcome::Agent, "101"),
            (Some("+7 (495) 123-45-67"), Outcome::Agent, "101"),
            (Some("74951234568"), Outcome::NoAgent, "700"),
            (Some("74951234569"), Outcome::NoAgent, "700"),
            (Some("74951234570"), Outcome::Ambiguous, "700"),
            (Some("74959999999"), Outcome::UnknownCaller, "700"),
            (Some("anonymous"), Outcome::UnknownCaller, "700"),
            (None, Outcome::UnknownCaller, "700"),
        ];
        let cache = CallerCache::new(ru, 4);
        // Twice, so the second round answers from the cache. Alice's number is blacklisted for
        // an hour: two hours on, she reaches her agent again.
        let now = Utc::now() + chrono::Duration::hours(2);
        for (caller, outcome, destination) in cases.iter().chain(cases.iter()).copied() {
            let decision = decide(Some(&dir), caller, ru, &s, &cache, now);
            assert_eq!(
                (decision.outcome, decision.destination.as_str()),
                (outcome, destination),
                "{caller:?}"
            );
        }
        assert_eq!(decide(None, Some("84951234567"), ru, &s, &cache, now).outcome, Outcome::NotLoaded);
        let gb: Region = "GB".parse().expect("region");
        assert_eq!(
            decide(Some(&dir), Some("84951234567"), gb, &s, &cache, now).outcome,
            Outcome::UnknownCaller
        );
    }

    #[test]
    fn blacklisted_callers_are_refused_before_any_agent_or_fallback() {
        let ru: Region = "RU".parse().expect("region");
        let (dir, cache) = (directory(), CallerCache::new(ru, 4));
        let refuse = settings("700");
        let target = RouterSettings { blacklist_target: "800".into(), ..settings("700") };
        let now = Utc::now();
        // Alice has a responsible agent, the other caller is unknown: both are refused.
        for caller in ["8 (495) 123-45-67", "+74951234567", "84959999990"] {
            let decision = decide(Some(&dir), Some(caller), ru, &refuse, &cache, now);
            assert_eq!(
                decision,
                Decision { outcome: Outcome::Blacklisted, destination: String::new(), agent_id: None },
                "{caller}"
            );
            assert!(decision.rejects());
            let decision = decide(Some(&dir), Some(caller), ru, &target, &cache, now);
            assert_eq!((decision.outcome, decision.destination.as_str()), (Outcome::Blacklisted, "800"));
            assert!(!decision.rejects());
        }
        // The entry with an expiry stops refusing at its expiry, without a reload.
        let later = now + chrono::Duration::hours(1);
        assert_eq!(
            decide(Some(&dir), Some("84951234567"), ru, &refuse, &cache, later).outcome,
            Outcome::Agent
        );
        assert_eq!(
            decide(Some(&dir), Some("84959999990"), ru, &refuse, &cache, later).outcome,
            Outcome::Blacklisted
        );
    }

    #[test]
    fn blacklisted_callers_get_each_pbxs_own_refusal() {
        let s = RouterSettings { telphin_variable: "manager".into(), ..settings("700") };
        let refused = Decision::blacklisted(&s);
        // Telphin Call Interactive's Hangup verb; Zadarma's blacklist scenario (busy signal).
        assert_eq!(
            render(&refused, Format::Telphin, &s),
            ("application/xml", "<Response><Hangup/></Response>".into())
        );
        assert_eq!(
            render(&refused, Format::Zadarma, &s),
            ("application/json", r#"{"redirect":"blacklist"}"#.into())
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&refused, Format::Json, &s).1).expect("json");
        let want = serde_json::json!({
            "action": "reject", "destination": null, "agent_id": null, "fallback": false, "reason": "blacklisted",
        });
        assert_eq!(json, want);
        // A configured target takes the caller instead, like any transfer.
        let s = RouterSettings { blacklist_target: "8&00".into(), ..s };
        let sent = Decision::blacklisted(&s);
        assert_eq!(
            render(&sent, Format::Telphin, &s).1,
            "<Response><SetVar name=\"manager\">8&amp;00</SetVar></Response>"
        );
        assert_eq!(render(&sent, Format::Zadarma, &s).1, r#"{"redirect":"8&00"}"#);
        let json: serde_json::Value = serde_json::from_str(&render(&sent, Format::Json, &s).1).expect("json");
        assert_eq!((json["action"].as_str(), json["destination"].as_str()), (Some("transfer"), Some("8&00")));
        assert_eq!(json["reason"], "blacklisted");
    }

    #[test]
    fn a_router_in_the_us_knows_callers_presented_with_00() {
        // A US router (011 is its own international prefix) behind a European or Russian PBX.
        let us: Region = "US".parse().expect("region");
        let (dir, s, cache) = (directory(), settings("700"), CallerCache::new(us, 4));
        // Alice's hour on the blacklist is over.
        let now = Utc::now() + chrono::Duration::hours(2);
        for caller in ["0074951234567", "00 7 495 123-45-67", "+74951234567"] {
            let decision = decide(Some(&dir), Some(caller), us, &s, &cache, now);
            assert_eq!(
                (decision.outcome, decision.destination.as_str()),
                (Outcome::Agent, "101"),
                "{caller}"
            );
        }
    }

    #[test]
    fn answers_in_each_pbx_format() {
        let s = RouterSettings { telphin_variable: "manager".into(), ..settings("") };
        let found =
            Decision { outcome: Outcome::Agent, destination: "101".into(), agent_id: Some("ann".into()) };
        let none = Decision::fallback(Outcome::UnknownCaller, &s);
        assert_eq!(
            render(&found, Format::Telphin, &s),
            ("application/xml", "<Response><SetVar name=\"manager\">101</SetVar></Response>".into())
        );
        assert_eq!(render(&none, Format::Telphin, &s).1, "<Response></Response>");
        assert_eq!(render(&found, Format::Zadarma, &s).1, r#"{"redirect":"101"}"#);
        assert_eq!(render(&none, Format::Zadarma, &s).1, "{}");
        let json: serde_json::Value = serde_json::from_str(&render(&none, Format::Json, &s).1).expect("json");
        assert_eq!(json["fallback"], true);
        assert_eq!(json["reason"], "fallback_unknown_caller");
        let queue = Decision::fallback(Outcome::Timeout, &settings("q&1"));
        assert_eq!(
            render(&queue, Format::Telphin, &s).1,
            "<Response><SetVar name=\"manager\">q&amp;1</SetVar></Response>"
        );
    }
}
