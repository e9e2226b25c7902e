//! The directory's rows in PostgreSQL: loading a snapshot, and the writes of the admin API
//! (single upserts and deletes, and bulk imports in one transaction with a per-row report).
//! Every write is an upsert by id (the blacklist's: by number), so re-sending a request or
//! re-running an import is harmless.

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, PoolError};
use serde::{Deserialize, Serialize};
use switchboard_core::model::{PhoneNumber, Region};

use crate::{Directory, SourceOptions};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] PoolError),
    #[error("the directory change feed closed")]
    ChangeFeedClosed,
}

impl StoreError {
    /// A constraint the request broke (unknown responsible agent, duplicate email): the caller's
    /// fault, answered 4xx, not a server error.
    pub fn constraint(&self) -> Option<String> {
        match self {
            StoreError::Db(e) => {
                let db = e.as_db_error()?;
                let class = db.code().code();
                // 23xxx: integrity constraint violations.
                class.starts_with("23").then(|| db.message().to_owned())
            }
            _ => None,
        }
    }
}

/// An agent, as stored: extensions as the PBXs name them, numbers in E.164.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub extensions: Vec<String>,
    pub phone_numbers: Vec<String>,
    /// The agent's id per source: `{"telphin-main": "5123"}`.
    pub external_ids: serde_json::Value,
    /// Groups or queues the agent works in (`sales`, `support`): a supervisor of a group sees its
    /// agents' calls and status on the desk.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A customer contact, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    pub name: String,
    pub company: Option<String>,
    pub phone_numbers: Vec<String>,
    pub responsible_agent_id: Option<String>,
}

/// A blacklisted number: the router refuses its calls until `expires_at` (never, when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlacklistEntry {
    /// E.164.
    pub number: String,
    pub reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl BlacklistEntry {
    /// Whether the entry refuses callers at `now`: it expires at `expires_at`, inclusive.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|expires| expires > now)
    }
}

/// The columns [`blacklist_from_row`] reads, in its order.
pub const BLACKLIST_COLUMNS: &str = "number, reason, expires_at, created_at";

pub fn blacklist_from_row(row: &tokio_postgres::Row) -> BlacklistEntry {
    BlacklistEntry { number: row.get(0), reason: row.get(1), expires_at: row.get(2), created_at: row.get(3) }
}

/// Reads the whole directory in one repeatable-read transaction, so the snapshot is consistent
/// (no contact pointing at an agent deleted in between).
pub async fn load(pool: &Pool) -> Result<Directory, StoreError> {
    let mut client = pool.get().await?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    let agents = tx
        .query("SELECT id, name, email, extensions, phone_numbers, external_ids, groups FROM agents", &[])
        .await?
        .iter()
        .map(agent_from_row)
        .collect();
    let contacts = tx
        .query("SELECT id, name, company, phone_numbers, responsible_agent_id FROM contacts", &[])
        .await?
        .iter()
        .map(contact_from_row)
        .collect();
    let own: Vec<String> =
        tx.query("SELECT number FROM own_numbers", &[]).await?.iter().map(|r| r.get(0)).collect();
    let sources: Vec<(String, SourceOptions)> = tx
        .query("SELECT id, default_region, settings->>'match_agent_by_email' = 'true' FROM sources", &[])
        .await?
        .iter()
        .filter_map(|r| {
            // A region this version cannot read falls back like an unknown source.
            let region = r.get::<_, String>(1).parse().ok()?;
            let by_email: Option<bool> = r.get(2);
            Some((r.get(0), SourceOptions { region, match_agent_by_email: by_email.unwrap_or(false) }))
        })
        .collect();
    // Expired entries are left out here and by `with_blacklist`, against the same clock.
    let now = Utc::now();
    let blacklist = tx
        .query(
            &format!("SELECT {BLACKLIST_COLUMNS} FROM blacklist WHERE expires_at IS NULL OR expires_at > $1"),
            &[&now],
        )
        .await?
        .iter()
        .map(blacklist_from_row)
        .collect();
    tx.commit().await?;
    Ok(Directory::new(agents, contacts, own, sources).with_blacklist(blacklist, now))
}

pub fn agent_from_row(row: &tokio_postgres::Row) -> Agent {
    Agent {
        id: row.get(0),
        name: row.get(1),
        email: row.get(2),
        extensions: row.get(3),
        phone_numbers: row.get(4),
        external_ids: row.get(5),
        groups: row.get(6),
    }
}

pub fn contact_from_row(row: &tokio_postgres::Row) -> Contact {
    Contact {
        id: row.get(0),
        name: row.get(1),
        company: row.get(2),
        phone_numbers: row.get(3),
        responsible_agent_id: row.get(4),
    }
}

/// An agent or contact as the admin API receives it: numbers in any format, checked here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInput {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub extensions: Vec<String>,
    #[serde(default)]
    pub phone_numbers: Vec<String>,
    #[serde(default)]
    pub external_ids: Option<serde_json::Value>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub company: Option<String>,
    #[serde(default)]
    pub phone_numbers: Vec<String>,
    #[serde(default)]
    pub responsible_agent_id: Option<String>,
}

/// Ids appear in URLs and event fields: a small alphabet, as the table's CHECK says.
pub fn valid_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        format!("id {id:?}: use 1 to 128 of A-Z a-z 0-9 _ . : @ -, starting with a letter or digit")
    })
}

/// Numbers in any format to E.164; the first that does not parse is the error.
pub fn e164_all(numbers: &[String], region: Region) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(numbers.len());
    for number in numbers.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let parsed = PhoneNumber::parse_lenient(number, region)
            .ok_or_else(|| format!("{number:?} is not a valid phone number (region {})", region.as_str()))?;
        if !out.iter().any(|n| n == parsed.as_str()) {
            out.push(parsed.into());
        }
    }
    Ok(out)
}

fn text(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// PostgreSQL text (and jsonb) cannot hold NUL: a field with one is refused, never a database
/// error.
fn no_nul<'a>(field: &str, values: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    match values.into_iter().any(|v| v.contains('\0')) {
        true => Err(format!("{field}: NUL characters are not allowed")),
        false => Ok(()),
    }
}

/// The longest email address (RFC 5321), in characters.
const MAX_EMAIL: usize = 254;
/// The longest extension, in characters.
const MAX_EXTENSION: usize = 32;

/// An email as the table's CHECK wants it (`LIKE '%_@_%'`): an `@` with something on each side.
fn email(raw: Option<String>) -> Result<Option<String>, String> {
    let Some(raw) = raw else { return Ok(None) };
    no_nul("email", [raw.as_str()])?;
    if raw.chars().count() > MAX_EMAIL {
        return Err(format!("email is longer than {MAX_EMAIL} characters"));
    }
    let Some(email) = text(Some(raw)) else { return Ok(None) };
    let chars: Vec<char> = email.chars().collect();
    let inner = chars.get(1..chars.len().saturating_sub(1)).unwrap_or_default();
    if !inner.contains(&'@') {
        return Err(format!("email {email:?} is not an email address"));
    }
    Ok(Some(email))
}

impl AgentInput {
    /// Checks and normalises; `id` comes from the URL or the row.
    pub fn into_agent(self, id: Option<&str>, region: Region) -> Result<Agent, String> {
        let id = id.map(str::to_owned).or(text(self.id)).ok_or("id is missing")?;
        valid_id(&id)?;
        no_nul("name", [self.name.as_str()])?;
        let name = text(Some(self.name)).ok_or("name is empty")?;
        let email = email(self.email)?;
        no_nul("extensions", self.extensions.iter().map(String::as_str))?;
        let mut extensions: Vec<String> = self.extensions.into_iter().filter_map(|e| text(Some(e))).collect();
        extensions.dedup();
        if let Some(bad) = extensions
            .iter()
            .find(|e| e.chars().count() > MAX_EXTENSION || e.chars().any(char::is_whitespace))
        {
            return Err(format!("extension {bad:?} is longer than {MAX_EXTENSION} characters or has spaces"));
        }
        let external_ids = self.external_ids.unwrap_or_else(|| serde_json::json!({}));
        let Some(ids) = external_ids.as_object() else {
            return Err("external_ids must be an object of source id to PBX id".into());
        };
        if !ids.values().all(serde_json::Value::is_string) {
            return Err("external_ids: every PBX id must be a string".into());
        }
        no_nul("external_ids", ids.iter().flat_map(|(k, v)| [k.as_str(), v.as_str().unwrap_or_default()]))?;
        no_nul("phone_numbers", self.phone_numbers.iter().map(String::as_str))?;
        let mut groups: Vec<String> = self.groups.into_iter().filter_map(|g| text(Some(g))).collect();
        groups.sort();
        groups.dedup();
        if let Some(bad) = groups.iter().find(|g| valid_id(g).is_err()) {
            return Err(format!(
                "group {bad:?} must be 1-128 letters, digits and _.:@- (starting with a letter or digit)"
            ));
        }
        Ok(Agent {
            id,
            name,
            email,
            extensions,
            phone_numbers: e164_all(&self.phone_numbers, region)?,
            external_ids,
            groups,
        })
    }
}

impl ContactInput {
    pub fn into_contact(self, id: Option<&str>, region: Region) -> Result<Contact, String> {
        let id = id.map(str::to_owned).or(text(self.id)).ok_or("id is missing")?;
        valid_id(&id)?;
        no_nul("name", [self.name.as_str()])?;
        let name = text(Some(self.name)).ok_or("name is empty")?;
        no_nul("company", self.company.as_deref())?;
        let responsible_agent_id = text(self.responsible_agent_id);
        if let Some(agent) = &responsible_agent_id {
            valid_id(agent).map_err(|e| format!("responsible_agent_id: {e}"))?;
        }
        no_nul("phone_numbers", self.phone_numbers.iter().map(String::as_str))?;
        Ok(Contact {
            id,
            name,
            company: text(self.company),
            phone_numbers: e164_all(&self.phone_numbers, region)?,
            responsible_agent_id,
        })
    }
}

/// The longest blacklist reason, in characters.
pub const MAX_REASON: usize = 1000;

/// The body of `PUT /v1/blacklist/{number}` (the number is the path's), which may also be empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlacklistInput {
    #[serde(default)]
    pub reason: Option<String>,
    /// RFC 3339; absent or null: until deleted.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// One row of a blacklist import.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlacklistImportRow {
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A checked blacklist entry, ready to store (`created_at` is the database's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlacklistWrite {
    /// E.164.
    pub number: String,
    pub reason: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A number in any format to E.164, or why not, naming the field.
pub fn blacklist_number(raw: &str, region: Region) -> Result<String, String> {
    no_nul("number", [raw])?;
    PhoneNumber::parse_lenient(raw, region).map(String::from).ok_or_else(|| {
        format!("number: {:?} is not a valid phone number (region {})", raw.trim(), region.as_str())
    })
}

impl BlacklistInput {
    /// Checks and normalises. A past `expires_at` is accepted: the entry is stored and refuses
    /// nobody (a retried request must not fail once its expiry has passed).
    pub fn into_write(self, number: &str, region: Region) -> Result<BlacklistWrite, String> {
        let number = blacklist_number(number, region)?;
        no_nul("reason", self.reason.as_deref())?;
        if self.reason.as_deref().is_some_and(|r| r.chars().count() > MAX_REASON) {
            return Err(format!("reason is longer than {MAX_REASON} characters"));
        }
        let expires_at = match self.expires_at {
            None => None,
            Some(text) => {
                Some(DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
                    format!("expires_at: {text:?} is not an RFC 3339 time such as 2026-11-21T10:00:00Z ({e})")
                })?)
            }
        };
        Ok(BlacklistWrite { number, reason: text(self.reason), expires_at })
    }
}

impl BlacklistImportRow {
    pub fn into_write(self, region: Region) -> Result<BlacklistWrite, String> {
        let number = self.number.filter(|n| !n.trim().is_empty()).ok_or("number is missing")?;
        BlacklistInput { reason: self.reason, expires_at: self.expires_at }.into_write(&number, region)
    }
}

/// Upserts blacklist entries in one statement (UNNEST), inside `tx`; returns them as stored.
pub async fn upsert_blacklist(
    tx: &tokio_postgres::Transaction<'_>,
    entries: &[BlacklistWrite],
) -> Result<Vec<BlacklistEntry>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let numbers: Vec<&str> = entries.iter().map(|e| e.number.as_str()).collect();
    let reasons: Vec<Option<&str>> = entries.iter().map(|e| e.reason.as_deref()).collect();
    let expiries: Vec<Option<DateTime<Utc>>> = entries.iter().map(|e| e.expires_at).collect();
    Ok(tx
        .query(
            &format!(
                "INSERT INTO blacklist (number, reason, expires_at)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[])
                 ON CONFLICT (number) DO UPDATE SET
                     reason = EXCLUDED.reason, expires_at = EXCLUDED.expires_at, updated_at = now()
                 RETURNING {BLACKLIST_COLUMNS}"
            ),
            &[&numbers, &reasons, &expiries],
        )
        .await?
        .iter()
        .map(blacklist_from_row)
        .collect())
}

/// Removes numbers (E.164) from the blacklist in one statement; returns those that were on it.
pub async fn remove_blacklist(
    tx: &tokio_postgres::Transaction<'_>,
    numbers: &[String],
) -> Result<Vec<String>, StoreError> {
    if numbers.is_empty() {
        return Ok(Vec::new());
    }
    Ok(tx
        .query("DELETE FROM blacklist WHERE number = ANY($1) RETURNING number", &[&numbers])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Upserts agents in one statement (UNNEST), inside `tx`.
pub async fn upsert_agents(
    tx: &tokio_postgres::Transaction<'_>,
    agents: &[Agent],
) -> Result<u64, StoreError> {
    if agents.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    let emails: Vec<Option<&str>> = agents.iter().map(|a| a.email.as_deref()).collect();
    // Arrays of arrays cannot be UNNESTed row by row, so lists travel as JSON.
    let extensions: Vec<serde_json::Value> = agents.iter().map(|a| serde_json::json!(a.extensions)).collect();
    let numbers: Vec<serde_json::Value> = agents.iter().map(|a| serde_json::json!(a.phone_numbers)).collect();
    let external: Vec<&serde_json::Value> = agents.iter().map(|a| &a.external_ids).collect();
    let groups: Vec<serde_json::Value> = agents.iter().map(|a| serde_json::json!(a.groups)).collect();
    Ok(tx
        .execute(
            "INSERT INTO agents (id, name, email, extensions, phone_numbers, external_ids, groups)
             SELECT id, name, email,
                    ARRAY(SELECT jsonb_array_elements_text(ext)),
                    ARRAY(SELECT jsonb_array_elements_text(num)),
                    external,
                    ARRAY(SELECT jsonb_array_elements_text(grp))
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::jsonb[], $7::jsonb[])
                  AS t(id, name, email, ext, num, external, grp)
             ON CONFLICT (id) DO UPDATE SET
                 name = EXCLUDED.name, email = EXCLUDED.email, extensions = EXCLUDED.extensions,
                 phone_numbers = EXCLUDED.phone_numbers, external_ids = EXCLUDED.external_ids,
                 groups = EXCLUDED.groups, updated_at = now()",
            &[&ids, &names, &emails, &extensions, &numbers, &external, &groups],
        )
        .await?)
}

/// Upserts contacts in one statement (UNNEST), inside `tx`.
pub async fn upsert_contacts(
    tx: &tokio_postgres::Transaction<'_>,
    contacts: &[Contact],
) -> Result<u64, StoreError> {
    if contacts.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = contacts.iter().map(|c| c.id.as_str()).collect();
    let names: Vec<&str> = contacts.iter().map(|c| c.name.as_str()).collect();
    let companies: Vec<Option<&str>> = contacts.iter().map(|c| c.company.as_deref()).collect();
    let numbers: Vec<serde_json::Value> =
        contacts.iter().map(|c| serde_json::json!(c.phone_numbers)).collect();
    let responsible: Vec<Option<&str>> = contacts.iter().map(|c| c.responsible_agent_id.as_deref()).collect();
    Ok(tx
        .execute(
            "INSERT INTO contacts (id, name, company, phone_numbers, responsible_agent_id)
             SELECT id, name, company, ARRAY(SELECT jsonb_array_elements_text(num)), responsible
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[])
                  AS t(id, name, company, num, responsible)
             ON CONFLICT (id) DO UPDATE SET
                 name = EXCLUDED.name, company = EXCLUDED.company,
                 phone_numbers = EXCLUDED.phone_numbers,
                 responsible_agent_id = EXCLUDED.responsible_agent_id, updated_at = now()",
            &[&ids, &names, &companies, &numbers, &responsible],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gb() -> Region {
        "GB".parse().expect("region")
    }

    #[test]
    fn inputs_are_normalised_and_checked() {
        let contact = ContactInput {
            name: " Alice ".into(),
            phone_numbers: vec!["020 7946 0000".into(), "+44 20 7946 0000".into(), "".into()],
            ..Default::default()
        }
        .into_contact(Some("alice"), gb())
        .expect("valid");
        assert_eq!(contact.name, "Alice");
        assert_eq!(contact.phone_numbers, vec!["+442079460000".to_owned()], "deduplicated E.164");

        let bad = ContactInput { name: "X".into(), phone_numbers: vec!["12".into()], ..Default::default() };
        assert!(bad.into_contact(Some("x"), gb()).expect_err("bad number").contains("\"12\""));
        let no_id = ContactInput { name: "X".into(), ..Default::default() };
        assert!(no_id.into_contact(None, gb()).is_err());
        let bad_id = ContactInput { name: "X".into(), ..Default::default() };
        assert!(bad_id.into_contact(Some("a b"), gb()).is_err());

        let agent = AgentInput { name: "Ann".into(), email: Some("nope".into()), ..Default::default() };
        assert!(agent.into_agent(Some("ann"), gb()).expect_err("email").contains("email"));
        let agent = AgentInput { name: "Ann".into(), extensions: vec!["1 01".into()], ..Default::default() };
        assert!(agent.into_agent(Some("ann"), gb()).is_err());
    }

    #[test]
    fn what_postgresql_would_refuse_is_refused_here() {
        let agent = |f: &dyn Fn(&mut AgentInput)| {
            let mut input = AgentInput { name: "Ann".into(), ..Default::default() };
            f(&mut input);
            input.into_agent(Some("ann"), gb())
        };
        assert!(agent(&|a| a.name = "A\0nn".into()).expect_err("NUL").contains("NUL"));
        assert!(agent(&|a| a.extensions = vec!["1\0".into()]).is_err());
        assert!(agent(&|a| a.external_ids = Some(serde_json::json!({"pbx": "a\0"}))).is_err());
        assert!(agent(&|a| a.external_ids = Some(serde_json::json!({"pbx": 5}))).is_err());
        assert!(agent(&|a| a.external_ids = Some(serde_json::json!({"pbx": "5"}))).is_ok());
        // The table's CHECK: something on each side of the `@`.
        for bad in ["a@", "@a", " @a ", "a@ "] {
            assert!(agent(&|a| a.email = Some(bad.into())).is_err(), "{bad:?}");
        }
        for good in ["a@b", " a@b ", "@@a", "  "] {
            assert!(agent(&|a| a.email = Some(good.into())).is_ok(), "{good:?}");
        }
        assert!(
            agent(&|a| a.email = Some(format!("{}@b", "é".repeat(252)))).is_ok(),
            "characters, not bytes"
        );
        assert!(agent(&|a| a.extensions = vec!["é".repeat(32)]).is_ok(), "characters, not bytes");
        let contact = ContactInput { name: "X".into(), company: Some("\0".into()), ..Default::default() };
        assert!(contact.into_contact(Some("x"), gb()).is_err());
    }

    #[test]
    fn blacklist_entries_are_normalised_and_checked() {
        let input = |reason: Option<&str>, expires_at: Option<&str>| BlacklistInput {
            reason: reason.map(str::to_owned),
            expires_at: expires_at.map(str::to_owned),
        };
        let entry = input(Some(" robocaller "), Some("2030-01-01T12:00:00+01:00"))
            .into_write("020 7946 0000", gb())
            .expect("valid");
        assert_eq!(entry.number, "+442079460000");
        assert_eq!(entry.reason.as_deref(), Some("robocaller"));
        assert_eq!(entry.expires_at.map(|t| t.to_rfc3339()), Some("2030-01-01T11:00:00+00:00".into()));
        let plain = input(Some("  "), None).into_write("+44 20 7946 0000", gb()).expect("valid");
        assert_eq!((plain.reason, plain.expires_at), (None, None), "blank reason: none");
        // A past expiry is stored (and refuses nobody).
        assert!(input(None, Some("2001-01-01T00:00:00Z")).into_write("+442079460000", gb()).is_ok());

        // Each refusal names its field.
        for (number, reason, expires, field) in [
            ("12", None, None, "number"),
            ("+44\u{0}2079460000", None, None, "number"),
            ("+442079460000", Some("a\0b"), None, "reason"),
            ("+442079460000", None, Some("tomorrow"), "expires_at"),
            ("+442079460000", None, Some("2030-01-01"), "expires_at"),
        ] {
            let error = input(reason, expires).into_write(number, gb()).expect_err(number);
            assert!(error.starts_with(field), "{error}");
        }
        let long = "é".repeat(MAX_REASON);
        assert!(input(Some(&long), None).into_write("+442079460000", gb()).is_ok(), "characters, not bytes");
        let longer = format!("{long}x");
        assert!(input(Some(&longer), None).into_write("+442079460000", gb()).is_err());

        let row = BlacklistImportRow { number: Some(" ".into()), ..Default::default() };
        assert!(row.into_write(gb()).expect_err("missing").contains("number"));
        let row = BlacklistImportRow { number: Some("07911 123456".into()), ..Default::default() };
        assert_eq!(row.into_write(gb()).map(|e| e.number), Ok("+447911123456".into()));
    }
}
