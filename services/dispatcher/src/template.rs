//! Rendering a step's request from the call values, with minijinja in a sandbox: no loader (so no
//! file access, no includes), no network, undefined names are errors, and every render runs on a
//! fuel budget, so that a template written by a user can neither read our disk nor spin our CPU.
//!
//! Two dialects: text (URL and form parameters, headers), where a missing value prints nothing,
//! and JSON (the body), where every `{{ value }}` is written as a JSON value (strings quoted and
//! escaped, missing values `null`), so a caller name with a quote in it cannot break the body.
//! A template is compiled when the profile is saved ([`check`]): a syntax error, an unknown value
//! or filter, or a `steps.x.y` no earlier step extracts is refused there with its position.
//!
//! Filters, besides minijinja's built-in ones: `e164` (optionally `e164("GB")` for national
//! formats), and for times (`time` in ms, or the ISO 8601 `*_at` values) `iso8601`,
//! `datetime_utc` (`%Y-%m-%d %H:%M:%S`, UTC), `ms` and `seconds` (since 1970). Durations come in
//! both units already (`talk_seconds`, `talk_ms`), so no filter converts them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use switchboard_model::{PhoneNumber, Region};

use crate::values::{CallValues, VALUE_NAMES};

/// Instructions (and, about 64 bytes each, memory) one render may use: a CRM request takes a few
/// hundred, a runaway loop is stopped well before it hurts.
const FUEL: u64 = 100_000;

/// Which dialect a template is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Text,
    Json,
}

/// The values each earlier step of a flow extracted, by step name then value name.
pub type StepValues = BTreeMap<String, BTreeMap<String, String>>;

/// Why a template was refused, with where (1-based line and column) when the engine knows.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{message} (line {line}, column {column})")]
    Invalid {
        message: String,
        line: usize,
        column: usize,
        #[source]
        source: Error,
    },
    #[error("{message}")]
    InvalidHere {
        message: String,
        #[source]
        source: Error,
    },
    #[error("unknown value `{0}`; known values: {names}", names = VALUE_NAMES.join(", "))]
    UnknownValue(String),
    #[error("`{0}` names no value an earlier step extracts")]
    UnknownStepValue(String),
}

/// The sandboxed environment with our filters. Built per use: it is cheap, and holding none
/// means there is no state a template could leave for the next one.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    env.set_debug(true);
    // A block tag on a line of its own leaves no blank line behind, as in Ansible and Salt.
    if let Ok(syntax) = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build() {
        env.set_syntax(syntax);
    }
    env.set_auto_escape_callback(
        |name| if name.ends_with(".json") { AutoEscape::Json } else { AutoEscape::None },
    );
    // A missing value is an empty string in a URL or header (Chronicall's `<Empty Value>`), and
    // `null` in JSON, where the default formatter already writes it so.
    env.set_formatter(|out, state, value| {
        let value = if value.is_none() && *state.auto_escape() == AutoEscape::None {
            &Value::UNDEFINED
        } else {
            value
        };
        minijinja::escape_formatter(out, state, value)
    });
    env.add_filter("e164", e164);
    // Text for a field the CRM reads as HTML (Pipedrive's call-log note): `<`, `&` and quotes
    // in an agent's note are shown, not taken for markup.
    env.add_filter("html", |text: String| switchboard_model::escape_markup(&text));
    env.add_filter("iso8601", |v: Value| {
        map_time(v, |t| t.to_rfc3339_opts(SecondsFormat::Secs, true).into())
    });
    env.add_filter("datetime_utc", |v: Value| {
        map_time(v, |t| t.format("%Y-%m-%d %H:%M:%S").to_string().into())
    });
    env.add_filter("ms", |v: Value| map_time(v, |t| t.timestamp_millis().into()));
    env.add_filter("seconds", |v: Value| map_time(v, |t| t.timestamp().into()));
    // `is uuid`: a disposition code that is a CRM's own outcome id (HubSpot's are GUIDs).
    env.add_test("uuid", |v: Value| v.as_str().is_some_and(|s| uuid::Uuid::try_parse(s).is_ok()));
    env
}

fn template_name(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Text => "value.txt",
        Dialect::Json => "body.json",
    }
}

/// Compiles `source` and checks every name it uses: call values, and `steps.<step>.<value>` of
/// the earlier steps in `earlier`. A dry run with sample values finds unknown filters and tests,
/// which the engine only looks up when it meets them.
pub fn check(
    source: &str,
    dialect: Dialect,
    earlier: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), TemplateError> {
    let env = environment();
    let template =
        env.template_from_named_str(template_name(dialect), source).map_err(|e| positioned(e, source))?;
    for name in template.undeclared_variables(true) {
        let mut parts = name.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("steps"), Some(step), Some(value)) => {
                if !earlier.get(step).is_some_and(|values| values.contains(value)) {
                    return Err(TemplateError::UnknownStepValue(name));
                }
            }
            (Some("steps"), _, _) => {}
            (Some(top), _, _) if VALUE_NAMES.contains(&top) || env.globals().any(|(g, _)| g == top) => {}
            (Some(top), _, _) => return Err(TemplateError::UnknownValue(top.to_owned())),
            (None, _, _) => {}
        }
    }
    let steps: StepValues = earlier
        .iter()
        .map(|(step, values)| (step.clone(), values.iter().map(|v| (v.clone(), "1".to_owned())).collect()))
        .collect();
    match template.render(context(&crate::values::sample(), &steps)) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnknownFilter
                    | ErrorKind::UnknownTest
                    | ErrorKind::UnknownFunction
                    | ErrorKind::UnknownMethod
                    | ErrorKind::OutOfFuel
            ) =>
        {
            Err(positioned(e, source))
        }
        _ => Ok(()),
    }
}

/// Renders `source` with the call values and the earlier steps' values in scope.
pub fn render(
    source: &str,
    dialect: Dialect,
    values: &CallValues,
    steps: &StepValues,
) -> Result<String, Error> {
    let env = environment();
    let template = env.template_from_named_str(template_name(dialect), source)?;
    template.render(context(values, steps))
}

/// One call value as text, as a `{"value": ...}` parameter sends it: empty when missing, a list
/// comma-delimited (as seed 004 sends account codes and tags).
pub fn value_text(values: &CallValues, name: &str) -> Option<String> {
    let value = values.context().remove(name)?;
    Some(match value.kind() {
        ValueKind::None | ValueKind::Undefined => String::new(),
        ValueKind::Seq => value
            .try_iter()
            .map(|items| items.map(|v| v.to_string()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        _ => value.to_string(),
    })
}

fn context(values: &CallValues, steps: &StepValues) -> Value {
    let mut map: BTreeMap<&str, Value> = values.context();
    map.insert("steps", Value::from(steps.clone()));
    Value::from(map)
}

/// The error with its 1-based line and column, from the byte range the engine reports.
fn positioned(error: Error, source: &str) -> TemplateError {
    let message =
        error.detail().map_or_else(|| error.kind().to_string(), |d| format!("{}: {d}", error.kind()));
    let start = error.range().map(|r| r.start).or_else(|| error.line().map(|l| line_start(source, l)));
    match start {
        Some(offset) => {
            let before = source.get(..offset).unwrap_or(source);
            // Counts within the source: adding one cannot overflow.
            let line = before.matches('\n').count().saturating_add(1);
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()).saturating_add(1);
            TemplateError::Invalid { message, line, column, source: error }
        }
        None => TemplateError::InvalidHere { message, source: error },
    }
}

fn line_start(source: &str, line: usize) -> usize {
    source.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum()
}

/// A time given as milliseconds since 1970 (`time`) or as RFC 3339 text (`started_at`).
fn parse_time(value: &Value) -> Result<DateTime<Utc>, Error> {
    let bad = || {
        Error::new(ErrorKind::InvalidOperation, format!("{value} is not a time (ms since 1970 or ISO 8601)"))
    };
    if let Some(ms) = value.as_i64() {
        return Utc.timestamp_millis_opt(ms).single().ok_or_else(bad);
    }
    let text = value.as_str().ok_or_else(bad)?;
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| bad().with_source(e))
}

/// Applies `f` to a time; a missing time stays missing, so an optional field stays optional.
fn map_time(value: Value, f: impl Fn(DateTime<Utc>) -> Value) -> Result<Value, Error> {
    if value.is_none() || value.is_undefined() {
        return Ok(value);
    }
    parse_time(&value).map(f)
}

/// A number in E.164, read in `region` (ISO 3166 alpha-2, default US) when written nationally. What
/// is not a public number (an extension, `anonymous`) is returned as it is: a CRM is better served
/// by the raw text than by nothing.
fn e164(value: Value, region: Option<String>) -> Result<Value, Error> {
    let Some(text) = value.as_str() else { return Ok(value) };
    let region: Region = match region {
        Some(code) => code
            .parse()
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("e164: {e}")).with_source(e))?,
        None => Region::default(),
    };
    Ok(PhoneNumber::parse_lenient(text, region)
        .map_or_else(|| Value::from(text), |n| Value::from(n.as_str())))
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
