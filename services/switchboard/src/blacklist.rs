//! `switchboard blacklist add|remove|list|import`: the number blacklist, straight in PostgreSQL
//! like `switchboard sources`, with the router's admin API's checks and statements
//! (`switchboard_directory::store`), so that both behave alike:
//!
//! - numbers in any format, stored in E.164; national ones read in `--region`, or the region of
//!   `--source`, else `router.region` (the API's `?region=` and its default);
//! - a reason (at most 1000 characters) and an optional expiry (`--expires-at`, RFC 3339, or
//!   `--ttl-secs`); an expiry already past is accepted and refuses nobody, as in the API;
//! - many numbers at once are one transaction and one statement (`upsert_blacklist`,
//!   `remove_blacklist`), so every router and matcher reloads once: the `blacklist` table's
//!   trigger (migration 0012) notifies them on commit, as it does for the API's writes;
//! - an import stores its valid rows and reports each refused one with its line, as the API's
//!   `POST /v1/blacklist/import` does (exit 1 when any was refused).
//!
//! Exit codes: 0 done; 1 an import refused some rows (the others are stored); 2 a command line
//! that cannot be carried out (a number that is none, an unknown source, an unreadable file),
//! checked before anything is written; 70 a database failure.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use clap::{Args, Subcommand};
use deadpool_postgres::Pool;
use serde_json::{Value, json};
use switchboard_core::config::Settings;
use switchboard_core::model::{Region, SourceId};
use switchboard_core::pg;
use switchboard_core::runtime::EXIT_FAILURE;
use switchboard_directory::BlacklistEntry;
use switchboard_directory::store::{
    BLACKLIST_COLUMNS, BlacklistImportRow, BlacklistInput, BlacklistWrite, MAX_REASON, blacklist_from_row,
    blacklist_number, remove_blacklist, upsert_blacklist,
};
use switchboard_router::RouterSettings;
use tokio_util::sync::CancellationToken;

/// Exit code of a command line that cannot be carried out, clap's own for usage errors.
const EXIT_USAGE: u8 = 2;
/// The longest `--ttl-secs`: 100 years.
const MAX_TTL_SECS: u64 = 100 * 366 * 24 * 3600;

#[derive(Debug, Subcommand)]
pub(crate) enum Action {
    /// Blacklist numbers, or change the reason and expiry of listed ones (one transaction).
    Add {
        /// Numbers in any format: +44 20 7946 0000, 020 7946 0000 (read in the region).
        #[arg(required = true, value_name = "NUMBER")]
        numbers: Vec<String>,
        #[command(flatten)]
        region: RegionArgs,
        /// Why the numbers are refused, for the people who manage the list (never sent to a PBX).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        expiry: ExpiryArgs,
        /// Print the stored entries as JSON, as the API shows them.
        #[arg(long)]
        json: bool,
    },
    /// Take numbers off the blacklist (one transaction); numbers that were not on it are named.
    Remove {
        #[arg(required = true, value_name = "NUMBER")]
        numbers: Vec<String>,
        #[command(flatten)]
        region: RegionArgs,
        /// Print `{"removed": [...], "not_found": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// List every entry: number, active or expired, expiry (or never), reason.
    List {
        /// Print `{"blacklist": [...]}`, each entry as the API shows it.
        #[arg(long)]
        json: bool,
    },
    /// Import numbers from a file (`-`: standard input): one number per line, or CSV
    /// `number,reason[,expires_at]`, optionally under a header row naming those columns; lines
    /// starting with `#` are comments. Valid rows are stored in one transaction, refused ones
    /// reported with their line (exit 1).
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        region: RegionArgs,
        /// The reason of rows that give none.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        expiry: ExpiryArgs,
        /// Print the report as JSON: `{"imported", "rejected", "errors": [{"line", "error"}]}`.
        #[arg(long)]
        json: bool,
    },
}

/// Where national-format numbers are read.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub(crate) struct RegionArgs {
    /// Read national numbers in this source's region.
    #[arg(long, value_name = "SOURCE_ID")]
    source: Option<String>,
    /// ISO 3166 region of national numbers (default: `router.region`, as the API's).
    #[arg(long, value_parser = parse_region)]
    region: Option<Region>,
}

/// When the entries stop refusing callers; without either, never (until removed).
#[derive(Debug, Args)]
#[group(multiple = false)]
pub(crate) struct ExpiryArgs {
    /// An RFC 3339 time, such as 2026-11-21T10:00:00Z.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    expires_at: Option<String>,
    /// Seconds from now.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_SECS))]
    ttl_secs: Option<u64>,
}

impl ExpiryArgs {
    /// The expiry as the API's `expires_at` field takes it.
    fn expires_at(&self, now: DateTime<Utc>) -> Option<String> {
        match (&self.expires_at, self.ttl_secs) {
            (Some(at), _) => Some(at.clone()),
            (None, Some(secs)) => {
                let ttl = TimeDelta::try_seconds(i64::try_from(secs).ok()?)?;
                Some(now.checked_add_signed(ttl)?.to_rfc3339_opts(SecondsFormat::Secs, true))
            }
            (None, None) => None,
        }
    }
}

fn parse_region(text: &str) -> Result<Region, String> {
    text.parse().map_err(|e: switchboard_core::model::InvalidValue| e.to_string())
}

fn parse_time(text: &str) -> Result<String, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-11-21T10:00:00Z ({e})"))
}

/// A command line that cannot be carried out: exit 2, nothing written.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// Runs one `blacklist` command and says how it went.
pub(crate) async fn run(action: Action, settings: &Settings, cancel: &CancellationToken) -> ExitCode {
    match execute(action, settings, cancel).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("switchboard: {error:#}");
            if error.downcast_ref::<Usage>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(u8::try_from(EXIT_FAILURE).unwrap_or(1))
            }
        }
    }
}

/// The region of `--source` or `--region`, else `router.region`; `None` while it takes the
/// database to know (a source's region).
fn known_region(args: &RegionArgs, settings: &Settings) -> anyhow::Result<Option<Region>> {
    Ok(match (&args.source, args.region) {
        (Some(_), _) => None,
        (None, Some(region)) => Some(region),
        (None, None) => {
            let router: RouterSettings = settings.section()?;
            Some(router.region.parse().context("router.region")?)
        }
    })
}

/// The region of the source `--source` names, from the database.
async fn source_region(pool: &Pool, source: &str) -> anyhow::Result<Region> {
    let id = SourceId::parse(source).map_err(|e| usage(format!("--source: {e}")))?;
    let row = pool
        .get()
        .await?
        .query_opt("SELECT default_region FROM sources WHERE id = $1", &[&id.as_str()])
        .await?
        .ok_or_else(|| usage(format!("--source: no source {id} (switchboard sources list)")))?;
    let region: String = row.get(0);
    region.parse().with_context(|| format!("source {id}'s region {region:?}"))
}

/// Connects (waiting for PostgreSQL, as the other admin commands do) and applies migrations.
async fn connect(settings: &Settings, cancel: &CancellationToken) -> anyhow::Result<Pool> {
    pg::connect_and_migrate(&settings.postgres, switchboard_schema::MIGRATIONS, cancel)
        .await?
        .context("cancelled while waiting for PostgreSQL")
}

/// `what` in the region of `args`: checked before connecting where the region is known then.
async fn in_region<T>(
    args: &RegionArgs,
    settings: &Settings,
    cancel: &CancellationToken,
    what: impl Fn(Region) -> anyhow::Result<T>,
) -> anyhow::Result<(Pool, T)> {
    match known_region(args, settings)? {
        Some(region) => {
            let checked = what(region)?;
            Ok((connect(settings, cancel).await?, checked))
        }
        None => {
            let pool = connect(settings, cancel).await?;
            let region = source_region(&pool, args.source.as_deref().unwrap_or_default()).await?;
            let checked = what(region)?;
            Ok((pool, checked))
        }
    }
}

fn check_reason(reason: Option<&str>) -> anyhow::Result<()> {
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(usage(format!("--reason is longer than {MAX_REASON} characters")));
    }
    Ok(())
}

async fn execute(
    action: Action,
    settings: &Settings,
    cancel: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    match action {
        Action::Add { numbers, region, reason, expiry, json } => {
            check_reason(reason.as_deref())?;
            let input = BlacklistInput { reason, expires_at: expiry.expires_at(Utc::now()) };
            let (pool, entries) = in_region(&region, settings, cancel, |region| {
                let mut entries: Vec<BlacklistWrite> = Vec::new();
                for number in &numbers {
                    let entry = input.clone().into_write(number, region).map_err(usage)?;
                    // The same number twice (in two notations) is one entry.
                    if !entries.iter().any(|e| e.number == entry.number) {
                        entries.push(entry);
                    }
                }
                Ok(entries)
            })
            .await?;
            let stored = upsert(&pool, entries).await?;
            let now = Utc::now();
            if stored.iter().any(|e| !e.active_at(now)) {
                eprintln!("switchboard: the expiry has passed: the entries are kept but refuse nobody");
            }
            print_entries(&stored, json, now);
        }
        Action::Remove { numbers, region, json } => {
            let (pool, wanted) = in_region(&region, settings, cancel, |region| {
                let mut wanted: Vec<String> = Vec::new();
                for number in &numbers {
                    let number = blacklist_number(number, region).map_err(usage)?;
                    // Removing a number twice is removing it once.
                    if !wanted.contains(&number) {
                        wanted.push(number);
                    }
                }
                Ok(wanted)
            })
            .await?;
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let removed = remove_blacklist(&tx, &wanted).await?;
            tx.commit().await?;
            let not_found: Vec<&String> = wanted.iter().filter(|n| !removed.contains(n)).collect();
            if json {
                println!("{}", json!({"removed": removed, "not_found": not_found}));
            } else {
                for number in &removed {
                    println!("Removed {number}.");
                }
                for number in &not_found {
                    println!("{number} was not on the blacklist.");
                }
            }
        }
        Action::List { json } => {
            let pool = connect(settings, cancel).await?;
            let rows = pool
                .get()
                .await?
                .query(&format!("SELECT {BLACKLIST_COLUMNS} FROM blacklist ORDER BY number"), &[])
                .await?;
            let entries: Vec<BlacklistEntry> = rows.iter().map(blacklist_from_row).collect();
            print_entries(&entries, json, Utc::now());
        }
        Action::Import { file, region, reason, expiry, json } => {
            check_reason(reason.as_deref())?;
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                let _ = std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| usage(format!("standard input: {e}")))?;
                text
            } else {
                std::fs::read_to_string(&file).map_err(|e| usage(format!("{}: {e}", file.display())))?
            };
            let rows = import_rows(&text)?;
            let expires_at = expiry.expires_at(Utc::now());
            let (pool, (entries, mut errors)) = in_region(&region, settings, cancel, |region| {
                let mut entries: Vec<BlacklistWrite> = Vec::new();
                let mut errors: Vec<RowError> = Vec::new();
                for (line, row) in rows.clone() {
                    let checked = row.and_then(|mut row| {
                        row.reason = row.reason.or_else(|| reason.clone());
                        row.expires_at = row.expires_at.or_else(|| expires_at.clone());
                        row.into_write(region)
                    });
                    match checked {
                        // As the API: the first row of a number wins, later ones are reported.
                        Ok(entry) if entries.iter().any(|e| e.number == entry.number) => {
                            errors.push(RowError {
                                line,
                                error: format!("duplicate number {} in this import", entry.number),
                            })
                        }
                        Ok(entry) => entries.push(entry),
                        Err(error) => errors.push(RowError { line, error }),
                    }
                }
                Ok((entries, errors))
            })
            .await?;
            let stored = upsert(&pool, entries).await?;
            errors.sort_by_key(|e| e.line);
            if json {
                let errors: Vec<Value> =
                    errors.iter().map(|e| json!({"line": e.line, "error": e.error})).collect();
                println!("{}", json!({"imported": stored.len(), "rejected": errors.len(), "errors": errors}));
            } else {
                println!("Imported {} numbers; refused {} rows.", stored.len(), errors.len());
            }
            for error in &errors {
                eprintln!("switchboard: line {}: {}", error.line, error.error);
            }
            if !errors.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Upserts `entries` in one transaction, so that the routers reload once, on commit.
async fn upsert(pool: &Pool, entries: Vec<BlacklistWrite>) -> anyhow::Result<Vec<BlacklistEntry>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let stored = upsert_blacklist(&tx, &entries).await?;
    tx.commit().await?;
    Ok(stored)
}

/// One refused row of an import: its line in the file.
#[derive(Debug)]
struct RowError {
    line: u64,
    error: String,
}

/// The rows of an import file: one number per line, or CSV `number,reason[,expires_at]` with an
/// optional header row (one field of it `number`) that may order the columns otherwise. Blank
/// lines and `#` comments are skipped. A column the header names but the blacklist has not is a usage
/// error: the file is not what the command thinks it is.
fn import_rows(text: &str) -> anyhow::Result<Vec<(u64, Result<BlacklistImportRow, String>)>> {
    const KNOWN: [&str; 3] = ["number", "reason", "expires_at"];
    let mut columns: Vec<String> = KNOWN.iter().map(|c| (*c).to_owned()).collect();
    let mut first = true;
    let mut rows = Vec::new();
    // Line by line (a row is one line), so that a report names the file's own line numbers.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (line, content) in (1u64..).zip(text.lines()) {
        if content.trim().is_empty() || content.trim_start().starts_with('#') {
            continue;
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(content.as_bytes());
        let record = match reader.records().next() {
            Some(Ok(record)) => record,
            Some(Err(error)) => {
                rows.push((line, Err(format!("CSV: {error}"))));
                continue;
            }
            None => continue,
        };
        // A header names the number column; no number is the word itself.
        if std::mem::take(&mut first) && record.iter().any(|f| f.eq_ignore_ascii_case("number")) {
            columns = record.iter().map(str::to_ascii_lowercase).collect();
            if let Some(unknown) = columns.iter().find(|c| !KNOWN.contains(&c.as_str())) {
                return Err(usage(format!(
                    "line {line}: unknown column {unknown:?} (known: {})",
                    KNOWN.join(", ")
                )));
            }
            continue;
        }
        if record.len() > columns.len() {
            rows.push((
                line,
                Err(format!("{} fields, at most {} ({})", record.len(), columns.len(), columns.join(","))),
            ));
            continue;
        }
        let field = |name: &str| {
            columns
                .iter()
                .position(|c| c == name)
                .and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let row = BlacklistImportRow {
            number: field("number"),
            reason: field("reason"),
            expires_at: field("expires_at"),
        };
        rows.push((line, Ok(row)));
    }
    Ok(rows)
}

fn time(value: Option<DateTime<Utc>>) -> Value {
    value.map_or(Value::Null, |t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into())
}

/// An entry as the API shows it (`GET /v1/blacklist`); `active`: it refuses callers at `now`.
fn entry_json(entry: &BlacklistEntry, now: DateTime<Utc>) -> Value {
    json!({
        "number": entry.number,
        "reason": entry.reason,
        "expires_at": time(entry.expires_at),
        "created_at": time(Some(entry.created_at)),
        "active": entry.active_at(now),
    })
}

/// An entry as one tab-separated line: number, state, expiry, reason.
fn entry_line(entry: &BlacklistEntry, now: DateTime<Utc>) -> String {
    let state = if entry.active_at(now) { "active" } else { "expired" };
    let until = match time(entry.expires_at) {
        Value::String(at) => at,
        _ => "never".to_owned(),
    };
    let reason = entry.reason.as_deref().unwrap_or_default().replace(['\t', '\r', '\n'], " ");
    format!("{}\t{state}\t{until}\t{reason}", entry.number)
}

fn print_entries(entries: &[BlacklistEntry], json: bool, now: DateTime<Utc>) {
    if json {
        let entries: Vec<Value> = entries.iter().map(|e| entry_json(e, now)).collect();
        println!("{}", json!({ "blacklist": entries }));
    } else {
        for entry in entries {
            println!("{}", entry_line(entry, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(
        rows: &[(u64, Result<BlacklistImportRow, String>)],
    ) -> Vec<(u64, Option<String>, Option<String>)> {
        rows.iter()
            .map(|(line, row)| match row {
                Ok(row) => (*line, row.number.clone(), row.reason.clone()),
                Err(e) => (*line, None, Some(format!("error: {e}"))),
            })
            .collect()
    }

    #[test]
    fn import_files_are_lines_or_csv_with_an_optional_header() {
        let plain = "# spam callers\n+44 20 7946 0000\n\n07911 123456\n";
        assert_eq!(
            numbers(&import_rows(plain).expect("rows")),
            vec![(2, Some("+44 20 7946 0000".into()), None), (4, Some("07911 123456".into()), None)]
        );
        let csv = "+442079460000,\"robocaller, daily\"\n07911 123456,spam,2030-01-01T00:00:00Z\n1,2,3,4\n";
        let rows = import_rows(csv).expect("rows");
        assert_eq!(rows[0].1.as_ref().ok().and_then(|r| r.reason.as_deref()), Some("robocaller, daily"));
        assert_eq!(
            rows[1].1.as_ref().ok().and_then(|r| r.expires_at.as_deref()),
            Some("2030-01-01T00:00:00Z")
        );
        assert!(rows[2].1.as_ref().is_err_and(|e| e.contains("4 fields")), "{:?}", rows[2]);
        let header = "Reason,Number\nspam,+442079460000\n";
        assert_eq!(
            numbers(&import_rows(header).expect("rows")),
            vec![(2, Some("+442079460000".into()), Some("spam".into()))]
        );
        let unknown = import_rows("number,until\n+442079460000,never\n").expect_err("unknown column");
        assert!(
            unknown.downcast_ref::<Usage>().is_some() && unknown.to_string().contains("until"),
            "{unknown}"
        );
    }

    #[test]
    fn expiry_is_a_time_or_seconds_from_now() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("time").with_timezone(&Utc);
        let ttl = ExpiryArgs { expires_at: None, ttl_secs: Some(3600) };
        assert_eq!(ttl.expires_at(now).as_deref(), Some("2026-01-01T01:00:00Z"));
        let at = ExpiryArgs { expires_at: Some("2030-01-01T00:00:00+02:00".into()), ttl_secs: None };
        assert_eq!(at.expires_at(now).as_deref(), Some("2030-01-01T00:00:00+02:00"));
        assert_eq!(ExpiryArgs { expires_at: None, ttl_secs: None }.expires_at(now), None);
        assert!(parse_time("2030-01-01").is_err() && parse_time("2030-01-01T00:00:00Z").is_ok());
    }

    #[test]
    fn entries_print_as_the_api_shows_them() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("time").with_timezone(&Utc);
        let entry = BlacklistEntry {
            number: "+442079460000".into(),
            reason: Some("spam\tcaller".into()),
            expires_at: Some(now - TimeDelta::seconds(1)),
            created_at: now,
        };
        assert_eq!(entry_line(&entry, now), "+442079460000\texpired\t2025-12-31T23:59:59Z\tspam caller");
        let json = entry_json(&entry, now);
        assert_eq!(
            (json["active"].as_bool(), json["created_at"].as_str()),
            (Some(false), Some("2026-01-01T00:00:00Z"))
        );
        let forever = BlacklistEntry { expires_at: None, reason: None, ..entry };
        assert_eq!(entry_line(&forever, now), "+442079460000\tactive\tnever\t");
    }
}
