//! The directory's rows in PostgreSQL: loading a snapshot, and the writes of the admin API
//! (single upserts and deletes, and bulk imports in one transaction with a per-row report).
//! Every write is an upsert by id, so re-sending a request or re-running an import is harmless.

use serde::{Deserialize, Serialize};
use switchboard_core::deadpool_postgres::{Pool, PoolError};
use switchboard_core::model::{PhoneNumber, Region};
use switchboard_core::tokio_postgres;

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
    tx.commit().await?;
    Ok(Directory::new(agents, contacts, own, sources))
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
}
