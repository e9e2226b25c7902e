//! switchboard-directory: agents, contacts, the company's own numbers and the number blacklist,
//! held in memory by every matcher and router instance and kept fresh from PostgreSQL.
//!
//! Input: the tables of migration 0003 (`agents`, `contacts`, `own_numbers`), the `blacklist` of
//! migration 0012 and each source's matching options (`sources.settings`). Output: an immutable
//! [`Directory`] snapshot answering "who is this agent?", "whose number is this?" and "is this
//! caller refused?" in a few hash lookups, without I/O.
//! Freshness: a statement-level trigger on each table sends `NOTIFY switchboard_directory`; the
//! [`watch`] task LISTENs on a dedicated connection and reloads the whole snapshot (debounced, so
//! a bulk import is one reload), which reaches every instance well within a second. A dropped
//! connection may have missed notifications, so every reconnect reloads, and a slow periodic
//! reload is a safety net. LISTEN/NOTIFY was chosen over a compacted topic because the directory
//! already lives in PostgreSQL and is small (a full reload of 100,000 contacts is a few hundred
//! milliseconds); a topic would add a second source of truth.
//!
//! Numbers are compared in E.164 only: the admin API normalises what it stores, adapters
//! normalise what PBXs send, so `+44 20 7946 0000`, `020 7946 0000` and `442079460000` meet as
//! `+442079460000`.

pub mod metrics;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use switchboard_core::model::{AgentMatch, CallEvent, ContactMatch, Direction, PhoneNumber, Region};
use switchboard_core::retry::Backoff;
use tokio::sync::watch as signal;
use tokio_postgres::{self, AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

pub use store::{Agent, BlacklistEntry, Contact, StoreError};

/// The channel the directory triggers notify.
pub const CHANNEL: &str = "switchboard_directory";

/// One immutable snapshot of the directory.
#[derive(Debug, Default)]
pub struct Directory {
    agents: HashMap<String, Agent>,
    contacts: HashMap<String, Contact>,
    agent_by_extension: HashMap<String, String>,
    agent_by_number: HashMap<String, String>,
    agent_by_email: HashMap<String, String>,
    contacts_by_number: HashMap<String, Vec<String>>,
    own_numbers: HashSet<String>,
    sources: HashMap<String, SourceOptions>,
    /// Blacklisted numbers (E.164) that had not expired when the snapshot was loaded.
    blacklist: HashMap<String, BlacklistEntry>,
}

/// What the matcher needs to know about a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceOptions {
    /// The region the source's national-format numbers belong to.
    pub region: Region,
    /// Whether agents may be matched by email (seed 000's "also match on the agent's email").
    pub match_agent_by_email: bool,
}

/// Who owns a caller's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner<'a> {
    /// One of the company's own numbers.
    OwnNumber,
    /// Nobody in the directory.
    Nobody,
    /// Exactly one contact.
    Contact(&'a Contact),
    /// Several contacts share the number (a company switchboard); none is guessed.
    Ambiguous(Vec<&'a Contact>),
}

impl Directory {
    /// Builds the indexes. Where two agents claim one extension, number or email the one with the
    /// smaller id wins, so every instance resolves the conflict the same way; the admin API warns
    /// about such conflicts when they are written.
    pub fn new(
        agents: Vec<Agent>,
        contacts: Vec<Contact>,
        own_numbers: Vec<String>,
        sources: Vec<(String, SourceOptions)>,
    ) -> Self {
        let mut agents = agents;
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        let mut directory = Directory {
            own_numbers: own_numbers.into_iter().collect(),
            sources: sources.into_iter().collect(),
            ..Directory::default()
        };
        for agent in agents {
            for extension in &agent.extensions {
                let _ =
                    directory.agent_by_extension.entry(extension.clone()).or_insert_with(|| agent.id.clone());
            }
            for number in &agent.phone_numbers {
                let _ = directory.agent_by_number.entry(number.clone()).or_insert_with(|| agent.id.clone());
            }
            if let Some(email) = &agent.email {
                let _ =
                    directory.agent_by_email.entry(email.to_lowercase()).or_insert_with(|| agent.id.clone());
            }
            let _ = directory.agents.insert(agent.id.clone(), agent);
        }
        let mut contacts = contacts;
        contacts.sort_by(|a, b| a.id.cmp(&b.id));
        for contact in contacts {
            for number in &contact.phone_numbers {
                directory.contacts_by_number.entry(number.clone()).or_default().push(contact.id.clone());
            }
            let _ = directory.contacts.insert(contact.id.clone(), contact);
        }
        directory
    }

    /// The snapshot with `entries` as its blacklist. Entries already expired at `now` are left
    /// out; the others are checked again at each lookup, so that one expiring between two reloads
    /// stops refusing callers on time.
    pub fn with_blacklist(mut self, entries: Vec<BlacklistEntry>, now: DateTime<Utc>) -> Self {
        self.blacklist = entries
            .into_iter()
            .filter(|entry| entry.active_at(now))
            .map(|entry| (entry.number.clone(), entry))
            .collect();
        self
    }

    /// The blacklist entry refusing `number` (E.164) at `now`, if any.
    pub fn blacklisted(&self, number: &PhoneNumber, now: DateTime<Utc>) -> Option<&BlacklistEntry> {
        self.blacklist.get(number.as_str()).filter(|entry| entry.active_at(now))
    }

    /// Blacklist entries in this snapshot (those not expired when it was loaded).
    pub fn blacklist_count(&self) -> usize {
        self.blacklist.len()
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    pub fn contact(&self, id: &str) -> Option<&Contact> {
        self.contacts.get(id)
    }

    /// A source's options; unknown sources (created after this snapshot) get the defaults.
    pub fn source(&self, id: &str) -> SourceOptions {
        self.sources
            .get(id)
            .copied()
            .unwrap_or(SourceOptions { region: Region::default(), match_agent_by_email: false })
    }

    /// Every agent, in no particular order.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    pub fn contact_count(&self) -> usize {
        self.contacts.len()
    }

    /// The agent a PBX names: by extension, then by number (the PBX's text read in the source's
    /// region), then by email when `by_email` allows it.
    pub fn find_agent(
        &self,
        extension: Option<&str>,
        number: Option<&str>,
        email: Option<&str>,
        region: Region,
        by_email: bool,
    ) -> Option<(&Agent, AgentMatch)> {
        let by =
            |index: &HashMap<String, String>, key: &str| index.get(key).and_then(|id| self.agents.get(id));
        for text in [extension, number].into_iter().flatten().map(str::trim).filter(|t| !t.is_empty()) {
            if let Some(agent) = by(&self.agent_by_extension, text) {
                return Some((agent, AgentMatch::Extension));
            }
        }
        if let Some(e164) = number.and_then(|n| PhoneNumber::parse_lenient(n, region))
            && let Some(agent) = by(&self.agent_by_number, e164.as_str())
        {
            return Some((agent, AgentMatch::Number));
        }
        if by_email
            && let Some(agent) = email.and_then(|e| by(&self.agent_by_email, &e.trim().to_lowercase()))
        {
            return Some((agent, AgentMatch::Email));
        }
        None
    }

    /// Who owns `number` (E.164).
    pub fn owner(&self, number: &PhoneNumber) -> Owner<'_> {
        if self.own_numbers.contains(number.as_str()) {
            return Owner::OwnNumber;
        }
        let contacts: Vec<&Contact> = self
            .contacts_by_number
            .get(number.as_str())
            .map(|ids| ids.iter().filter_map(|id| self.contacts.get(id)).collect())
            .unwrap_or_default();
        match contacts.as_slice() {
            [] => Owner::Nobody,
            [one] => Owner::Contact(one),
            _ => Owner::Ambiguous(contacts),
        }
    }

    /// The responsible agent of the caller, for IVR routing: only for a unique contact.
    pub fn responsible_agent(&self, caller: &PhoneNumber) -> Option<&Agent> {
        match self.owner(caller) {
            Owner::Contact(contact) => {
                contact.responsible_agent_id.as_deref().and_then(|id| self.agents.get(id))
            }
            _ => None,
        }
    }

    /// Enriches an event in place: its agent and its customer, with how each was found.
    pub fn match_event(&self, event: &mut CallEvent) {
        let SourceOptions { region, match_agent_by_email: by_email } = self.source(event.source_id.as_str());
        let agent = self.find_agent(
            event.agent_extension.as_deref(),
            event.agent_number.as_deref(),
            event.agent_email.as_deref(),
            region,
            by_email,
        );
        (event.agent_id, event.agent_match) = match agent {
            Some((agent, how)) => (Some(agent.id.clone()), Some(how)),
            None => (None, None),
        };

        let (contact_match, contact_ids, responsible) = match external_number(event) {
            None => (ContactMatch::None, Vec::new(), None),
            Some(number) => match self.owner(number) {
                Owner::OwnNumber => (ContactMatch::OwnNumber, Vec::new(), None),
                Owner::Nobody => (ContactMatch::None, Vec::new(), None),
                Owner::Contact(c) => {
                    (ContactMatch::Unique, vec![c.id.clone()], c.responsible_agent_id.clone())
                }
                Owner::Ambiguous(all) => {
                    (ContactMatch::Ambiguous, all.iter().map(|c| c.id.clone()).collect(), None)
                }
            },
        };
        event.contact_match = Some(contact_match);
        event.contact_ids = contact_ids;
        event.responsible_agent_id = responsible;
    }
}

/// The customer's side of a call: the caller of an inbound call, the callee of an outbound one.
/// Events that do not say (a hangup, an unknown direction) try the caller, then the callee, and
/// the company's own numbers are skipped by [`Directory::owner`].
fn external_number(event: &CallEvent) -> Option<&PhoneNumber> {
    match event.direction {
        Direction::Inbound => event.from_e164.as_ref(),
        Direction::Outbound => event.to_e164.as_ref(),
        Direction::Internal => None,
        Direction::Unknown => event.from_e164.as_ref().or(event.to_e164.as_ref()),
    }
}

/// The current snapshot, shared by request handlers and the reloader. `None` until the first
/// load succeeded: nobody matches against an empty directory by mistake.
#[derive(Debug, Clone)]
pub struct SharedDirectory {
    current: Arc<RwLock<Option<Arc<Directory>>>>,
    loaded: signal::Receiver<bool>,
    loaded_tx: Arc<signal::Sender<bool>>,
}

impl Default for SharedDirectory {
    fn default() -> Self {
        let (loaded_tx, loaded) = signal::channel(false);
        Self { current: Arc::default(), loaded, loaded_tx: Arc::new(loaded_tx) }
    }
}

impl SharedDirectory {
    pub fn snapshot(&self) -> Option<Arc<Directory>> {
        self.current.read().ok()?.clone()
    }

    pub fn replace(&self, directory: Directory) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(directory));
        }
        let _ = self.loaded_tx.send(true);
    }

    /// Waits for the first snapshot; `None` when cancelled first.
    pub async fn wait_loaded(&self, cancel: &CancellationToken) -> Option<Arc<Directory>> {
        let mut loaded = self.loaded.clone();
        tokio::select! {
            _ = cancel.cancelled() => None,
            result = loaded.wait_for(|l| *l) => match result {
                Ok(_) => self.snapshot(),
                Err(_) => None,
            },
        }
    }
}

/// Loads and swaps in a fresh snapshot.
pub async fn reload(pool: &Pool, shared: &SharedDirectory) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let directory = store::load(pool).await?;
    let (agents, contacts, blacklisted) =
        (directory.agent_count(), directory.contact_count(), directory.blacklist_count());
    shared.replace(directory);
    crate::metrics::DIRECTORY_RELOADS.with_label_values(&["ok"]).inc();
    tracing::debug!(
        agents,
        contacts,
        blacklisted,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Directory loaded."
    );
    Ok(())
}

/// Keeps `shared` fresh until cancelled: LISTEN on a dedicated connection, reload on every
/// notification (debounced by `debounce`), on every (re)connect, and every `every` regardless.
pub async fn watch(
    pool: Pool,
    postgres_url: String,
    shared: SharedDirectory,
    debounce: Duration,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !cancel.is_cancelled() {
        match listen_and_reload(&pool, &postgres_url, &shared, debounce, every, &cancel).await {
            Ok(()) => return,
            Err(error) => {
                crate::metrics::DIRECTORY_RELOADS.with_label_values(&["error"]).inc();
                tracing::warn!(%error, "Directory change feed lost; reconnecting.");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn listen_and_reload(
    pool: &Pool,
    postgres_url: &str,
    shared: &SharedDirectory,
    debounce: Duration,
    every: Duration,
    cancel: &CancellationToken,
) -> Result<(), StoreError> {
    let (client, mut connection) = tokio_postgres::connect(postgres_url, NoTls).await?;
    let (notify_tx, mut notified) = tokio::sync::mpsc::unbounded_channel::<()>();
    // The connection object yields notifications; it runs in its own task and ends with the
    // client or on a network error, which closes the channel and makes this function return.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notify_tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "Directory listener connection failed.");
                    return;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Anything before LISTEN took effect is covered by loading after it.
    reload(pool, shared).await?;
    let mut periodic = tokio::time::interval(every);
    periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let _ = periodic.tick().await;
    let outcome = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            _ = periodic.tick() => reload(pool, shared).await?,
            message = notified.recv() => {
                if message.is_none() {
                    break Err(StoreError::ChangeFeedClosed);
                }
                // Coalesce a burst (a bulk import touches several tables) into one reload.
                tokio::time::sleep(debounce).await;
                while notified.try_recv().is_ok() {}
                reload(pool, shared).await?;
            }
        }
    };
    drop(client);
    driver.abort();
    outcome
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use switchboard_core::model::{CallId, EventId, EventKind, SourceId, Vendor};

    use super::*;

    fn gb() -> Region {
        "GB".parse().expect("region")
    }

    fn agent(id: &str, ext: &str, number: &str, email: &str) -> Agent {
        Agent {
            id: id.into(),
            name: id.to_uppercase(),
            email: Some(email.into()),
            extensions: vec![ext.into()],
            phone_numbers: vec![number.into()],
            external_ids: serde_json::json!({}),
            groups: Vec::new(),
        }
    }

    fn contact(id: &str, numbers: &[&str], responsible: Option<&str>) -> Contact {
        Contact {
            id: id.into(),
            name: id.into(),
            company: None,
            phone_numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
            responsible_agent_id: responsible.map(str::to_owned),
        }
    }

    fn directory(email_sources: &[&str]) -> Directory {
        Directory::new(
            vec![
                agent("ann", "101", "+442079460101", "ann@example.com"),
                agent("bob", "102", "+442079460102", "Bob@Example.com"),
            ],
            vec![
                contact("acme-alice", &["+442079460000", "+447911123456"], Some("ann")),
                contact("globex-front-desk", &["+442079461111"], None),
                contact("initech-1", &["+442079462222"], Some("bob")),
                contact("initech-2", &["+442079462222"], Some("ann")),
            ],
            vec!["+442079469999".into()],
            vec![(
                "pbx".to_owned(),
                SourceOptions { region: gb(), match_agent_by_email: email_sources.contains(&"pbx") },
            )],
        )
    }

    fn event(direction: Direction, from: Option<&str>, to: Option<&str>) -> CallEvent {
        let mut event = CallEvent::empty(
            SourceId::parse("pbx").expect("id"),
            Vendor::Generic,
            CallId::parse("c").expect("id"),
            EventId::parse("e").expect("id"),
            EventKind::Ringing,
            Utc::now(),
        );
        event.direction = direction;
        event.from_e164 = from.and_then(|n| PhoneNumber::parse_lenient(n, gb()));
        event.to_e164 = to.and_then(|n| PhoneNumber::parse_lenient(n, gb()));
        event
    }

    #[test]
    fn a_caller_matches_in_any_number_format() {
        let dir = directory(&[]);
        for form in
            ["+44 20 7946 0000", "020 7946 0000", "442079460000", "+44 (0)20 7946 0000", "07911 123456"]
        {
            let mut e = event(Direction::Inbound, Some(form), Some("+442079469999"));
            dir.match_event(&mut e);
            assert_eq!(e.contact_match, Some(ContactMatch::Unique), "{form}");
            assert_eq!(e.contact_ids, vec!["acme-alice".to_owned()], "{form}");
            assert_eq!(e.responsible_agent_id.as_deref(), Some("ann"), "{form}");
        }
    }

    #[test]
    fn shared_numbers_are_ambiguous_with_every_candidate_and_no_guess() {
        let dir = directory(&[]);
        let mut e = event(Direction::Inbound, Some("020 7946 2222"), None);
        dir.match_event(&mut e);
        assert_eq!(e.contact_match, Some(ContactMatch::Ambiguous));
        assert_eq!(e.contact_ids, vec!["initech-1".to_owned(), "initech-2".to_owned()]);
        assert_eq!(e.responsible_agent_id, None, "no responsible agent is guessed");
        assert_eq!(dir.responsible_agent(&PhoneNumber::from_e164("+442079462222").expect("e164")), None);
    }

    #[test]
    fn own_numbers_are_never_customers() {
        let dir = directory(&[]);
        // Outbound from our DID: the customer is the callee.
        let mut e = event(Direction::Outbound, Some("+442079469999"), Some("+442079461111"));
        dir.match_event(&mut e);
        assert_eq!(e.contact_ids, vec!["globex-front-desk".to_owned()]);
        // An event that names only our own number matches nobody.
        let mut e = event(Direction::Unknown, Some("+442079469999"), None);
        dir.match_event(&mut e);
        assert_eq!(e.contact_match, Some(ContactMatch::OwnNumber));
        assert!(e.contact_ids.is_empty());
        // Internal calls have no customer.
        let mut e = event(Direction::Internal, Some("+442079460000"), None);
        dir.match_event(&mut e);
        assert_eq!(e.contact_match, Some(ContactMatch::None));
    }

    #[test]
    fn unknown_numbers_match_nobody() {
        let dir = directory(&[]);
        let mut e = event(Direction::Inbound, Some("+33 1 23 45 67 89"), None);
        dir.match_event(&mut e);
        assert_eq!(e.contact_match, Some(ContactMatch::None));
        let mut e = event(Direction::Inbound, None, None);
        dir.match_event(&mut e);
        assert_eq!(e.contact_match, Some(ContactMatch::None));
    }

    #[test]
    fn agents_match_by_extension_then_number_then_email_when_enabled() {
        let off = directory(&[]);
        let on = directory(&["pbx"]);
        type Sent = (Option<&'static str>, Option<&'static str>, Option<&'static str>);
        type Found = Option<(&'static str, AgentMatch)>;
        // What the PBX sent (extension, number, email) → found with email matching off, and on.
        let cases: [(Sent, Found, Found); 6] = [
            (
                (Some("101"), None, None),
                Some(("ann", AgentMatch::Extension)),
                Some(("ann", AgentMatch::Extension)),
            ),
            // Many PBXs put the extension in the agent number field.
            (
                (None, Some("102"), None),
                Some(("bob", AgentMatch::Extension)),
                Some(("bob", AgentMatch::Extension)),
            ),
            (
                (None, Some("020 7946 0102"), None),
                Some(("bob", AgentMatch::Number)),
                Some(("bob", AgentMatch::Number)),
            ),
            ((None, None, Some("BOB@example.COM")), None, Some(("bob", AgentMatch::Email))),
            // Number first, email only as a fallback.
            (
                (None, Some("+442079460101"), Some("bob@example.com")),
                Some(("ann", AgentMatch::Number)),
                Some(("ann", AgentMatch::Number)),
            ),
            ((Some("999"), Some("+15005550006"), Some("nobody@example.com")), None, None),
        ];
        for ((ext, number, email), want_off, want_on) in cases {
            for (dir, want) in [(&off, want_off), (&on, want_on)] {
                let mut e = event(Direction::Inbound, None, None);
                (e.agent_extension, e.agent_number, e.agent_email) =
                    (ext.map(Into::into), number.map(Into::into), email.map(Into::into));
                dir.match_event(&mut e);
                let got = e.agent_id.as_deref().zip(e.agent_match);
                assert_eq!(got, want, "{ext:?} {number:?} {email:?}");
            }
        }
    }

    #[test]
    fn blacklisted_numbers_are_found_until_they_expire() {
        let now = Utc::now();
        let entry = |number: &str, expires_in: Option<i64>| BlacklistEntry {
            number: number.into(),
            reason: Some("pest".into()),
            expires_at: expires_in.map(|s| now + chrono::Duration::seconds(s)),
            created_at: now,
        };
        let dir = directory(&[]).with_blacklist(
            vec![
                entry("+442079460000", None),
                entry("+442079461111", Some(60)),
                entry("+442079462222", Some(-1)),
                entry("+442079463333", Some(0)),
            ],
            now,
        );
        let number = |n: &str| PhoneNumber::from_e164(n).expect("e164");
        assert_eq!(dir.blacklist_count(), 2, "entries expired at load time are left out");
        let found = dir.blacklisted(&number("+442079460000"), now).expect("blacklisted");
        assert_eq!(found.reason.as_deref(), Some("pest"));
        assert!(dir.blacklisted(&number("+442079461111"), now).is_some());
        // Expiry is checked at lookup time too: no reload needed.
        let later = now + chrono::Duration::seconds(60);
        assert!(dir.blacklisted(&number("+442079461111"), later).is_none(), "expired at its expiry");
        assert!(dir.blacklisted(&number("+442079460000"), later).is_some(), "no expiry: until deleted");
        assert!(dir.blacklisted(&number("+442079462222"), now).is_none());
        assert!(dir.blacklisted(&number("+442079463333"), now).is_none());
        assert!(dir.blacklisted(&number("+442079469999"), now).is_none());
        // The directory itself is unchanged by the blacklist: a blacklisted contact still matches.
        assert_eq!(dir.responsible_agent(&number("+442079460000")).map(|a| a.id.as_str()), Some("ann"));
    }

    #[test]
    fn conflicting_claims_resolve_the_same_way_everywhere() {
        let dir = Directory::new(
            vec![
                agent("zed", "101", "+442079460101", "z@example.com"),
                agent("amy", "101", "+442079460109", "a@example.com"),
            ],
            vec![],
            vec![],
            vec![],
        );
        let found = dir.find_agent(Some("101"), None, None, gb(), false).map(|(a, _)| a.id.as_str());
        assert_eq!(found, Some("amy"));
    }
}
