//! The list endpoint's query string: every filter parsed and checked before any SQL runs, so that a
//! bad filter is a 400 that says which parameter and why, never a slow or empty answer.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use switchboard_core::model::{
    CallStatus, Direction, Outcome, PhoneNumber, RecordingStatus, Region, SourceId,
};

/// Largest page; the default is `DEFAULT_LIMIT`.
pub const MAX_LIMIT: i64 = 500;
pub const DEFAULT_LIMIT: i64 = 50;

/// Why a request's parameters were refused: answered 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest(message.into())
}

/// Where the previous page ended: the sort key of its last call (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub started_at: DateTime<Utc>,
    pub source_id: String,
    pub call_id: String,
}

impl Cursor {
    /// Opaque to clients: URL-safe base64 of a small JSON array.
    pub fn encode(&self) -> String {
        let key = serde_json::json!([self.started_at.timestamp_micros(), self.source_id, self.call_id]);
        URL_SAFE_NO_PAD.encode(key.to_string())
    }

    pub fn decode(text: &str) -> Result<Self, BadRequest> {
        let refused = || bad("cursor: not a cursor this API issued (pass next_cursor unchanged)");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| refused())?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| refused())?;
        let (Some(micros), Some(source_id), Some(call_id)) = (
            value.get(0).and_then(|v| v.as_i64()),
            value.get(1).and_then(|v| v.as_str()),
            value.get(2).and_then(|v| v.as_str()),
        ) else {
            return Err(refused());
        };
        Ok(Self {
            started_at: DateTime::from_timestamp_micros(micros).ok_or_else(refused)?,
            source_id: source_id.to_owned(),
            call_id: call_id.to_owned(),
        })
    }
}

/// How to look a number up: by its E.164 form when it is a public number, else by the text as the
/// PBX wrote it, which is how the call log stores numbers that do not parse: an extension as
/// written, a longer number by its digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberFilter {
    E164(String),
    Extension(String),
    /// The digits of a number that does not parse (`07700 900103`, in a range reserved for drama),
    /// so that any spacing finds it however the PBX spaced it.
    Digits(String),
}

impl NumberFilter {
    pub fn as_str(&self) -> &str {
        match self {
            NumberFilter::E164(n) | NumberFilter::Extension(n) | NumberFilter::Digits(n) => n,
        }
    }
}

/// Fewest digits of a number searched by its digits: shorter is an extension or a typo.
const MIN_UNPARSED_DIGITS: usize = 7;

/// The list endpoint's filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub number: Option<NumberFilter>,
    pub agent: Option<String>,
    pub contact: Option<String>,
    pub outcomes: Vec<Outcome>,
    pub directions: Vec<Direction>,
    pub statuses: Vec<CallStatus>,
    /// Calls whose recording has one of these statuses (`pending`, `ready`, `failed`).
    pub recordings: Vec<RecordingStatus>,
    pub source: Option<SourceId>,
    pub complete: Option<bool>,
    /// Calls whose external number is (`true`) or is not (`false`) on the blacklist now.
    pub blacklisted: Option<bool>,
    /// Calls whose wrap-up has this tag, or one of these disposition codes.
    pub tag: Option<String>,
    pub dispositions: Vec<String>,
    pub limit: i64,
    pub cursor: Option<Cursor>,
}

/// The parameters `GET /v1/calls` accepts; anything else is refused, so that a misspelt filter is
/// not silently ignored.
const PARAMETERS: &[&str] = &[
    "from",
    "to",
    "number",
    "region",
    "agent",
    "contact",
    "outcome",
    "direction",
    "status",
    "recording",
    "source",
    "complete",
    "blacklisted",
    "tag",
    "disposition",
    "limit",
    "cursor",
];

fn time(name: &str, text: &str) -> Result<DateTime<Utc>, BadRequest> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        bad(format!("{name}: {text:?} is not an RFC 3339 time such as 2026-11-21T10:00:00Z ({e})"))
    })
}

/// Comma-separated values of a closed set, each parsed with `parse`.
fn list<T>(
    name: &str,
    text: &str,
    parse: impl Fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<Vec<T>, BadRequest> {
    text.split(',')
        .map(str::trim)
        .map(|item| parse(item).ok_or_else(|| bad(format!("{name}: {item:?} is not one of {allowed}"))))
        .collect()
}

fn direction(text: &str) -> Option<Direction> {
    [Direction::Inbound, Direction::Outbound, Direction::Internal, Direction::Unknown]
        .into_iter()
        .find(|d| d.as_str() == text)
}

/// Reads a number in any format. International forms (`+44 20 7946 0000`, `0044 20 7946 0000`)
/// parse on their own; national forms need `region` (or the source's region when `source` is
/// given, which the caller passes as `source_region`). Up to six digits is an extension, matched
/// as written. A number that does not parse, national without a region or not a valid number, is
/// looked up by its digits, which is how the call log keeps the numbers it could not read.
fn number(raw: &str, region: Option<&str>, source_region: Option<&str>) -> Result<NumberFilter, BadRequest> {
    let trimmed = raw.trim();
    if !trimmed.bytes().any(|b| b.is_ascii_digit()) {
        return Err(bad(format!("number: {raw:?} has no digits")));
    }
    let region = match region {
        Some(code) => Some(code.parse::<Region>().map_err(|e| bad(format!("region: {e}")))?),
        None => source_region.and_then(|code| code.parse::<Region>().ok()),
    };
    let digits_only = trimmed.bytes().all(|b| b.is_ascii_digit());
    if digits_only && trimmed.len() <= 6 {
        return Ok(NumberFilter::Extension(trimmed.to_owned()));
    }
    let international = trimmed.starts_with('+')
        || trimmed.starts_with("00")
        || (digits_only && trimmed.len() >= 11 && !trimmed.starts_with('0'));
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let unparsed = |why: String| {
        if digits.len() >= MIN_UNPARSED_DIGITS {
            Ok(NumberFilter::Digits(digits.clone()))
        } else {
            Err(bad(format!("number: {raw:?} {why}")))
        }
    };
    let region = match region {
        Some(region) => region,
        // Any region reads an international number the same way (`00` included).
        None if international => "US".parse::<Region>().map_err(|e| bad(e.to_string()))?,
        None => return unparsed("is too short for a phone number and not an extension".into()),
    };
    // "+44 (0)20 …": the national trunk prefix in parentheses is not part of an international
    // number, and only some regions' rules drop it; drop it for all.
    let cleaned = if trimmed.starts_with('+') { trimmed.replace("(0)", "") } else { trimmed.to_owned() };
    match PhoneNumber::parse_lenient(&cleaned, region) {
        Some(number) => Ok(NumberFilter::E164(number.as_str().to_owned())),
        None => unparsed(format!("is not a valid phone number in {}", region.as_str())),
    }
}

impl ListQuery {
    /// Parses a query string. `source_region` looks up a source's default region, for national
    /// numbers filtered within one source.
    pub fn parse(
        query: Option<&str>,
        source_region: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, BadRequest> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_pairs(query.unwrap_or("")) {
            if !PARAMETERS.contains(&name.as_str()) {
                return Err(bad(format!(
                    "unknown parameter {name:?}; the filters are {}",
                    PARAMETERS.join(", ")
                )));
            }
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(bad(format!("{name}: given twice")));
            }
            pairs.push((name, value));
        }
        let get = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let mut q = ListQuery { limit: DEFAULT_LIMIT, ..ListQuery::default() };
        if let Some(text) = get("from") {
            q.from = Some(time("from", text)?);
        }
        if let Some(text) = get("to") {
            q.to = Some(time("to", text)?);
        }
        if let (Some(from), Some(to)) = (q.from, q.to)
            && from >= to
        {
            return Err(bad("from must be earlier than to"));
        }
        if let Some(text) = get("source") {
            q.source = Some(SourceId::parse(text).map_err(|e| bad(format!("source: {e}")))?);
        }
        if let Some(region) = get("region")
            && get("number").is_none()
        {
            region.parse::<Region>().map_err(|e| bad(format!("region: {e}")))?;
        }
        if let Some(text) = get("number") {
            let from_source = q.source.as_ref().and_then(|s| source_region(s.as_str()));
            q.number = Some(number(text, get("region"), from_source.as_deref())?);
        }
        if let Some(text) = get("agent") {
            let agent = text.trim();
            if agent.is_empty() {
                return Err(bad("agent: empty"));
            }
            // Emails are stored lower-case for the filter.
            q.agent = Some(if agent.contains('@') { agent.to_lowercase() } else { agent.to_owned() });
        }
        if let Some(text) = get("contact") {
            if text.trim().is_empty() {
                return Err(bad("contact: empty"));
            }
            q.contact = Some(text.trim().to_owned());
        }
        let names = |all: &[&str]| all.join(", ");
        if let Some(text) = get("outcome") {
            let allowed: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            q.outcomes = list("outcome", text, |s| s.parse().ok(), &names(&allowed))?;
        }
        if let Some(text) = get("direction") {
            q.directions = list("direction", text, direction, "inbound, outbound, internal, unknown")?;
        }
        if let Some(text) = get("status") {
            let parse = |s: &str| s.parse::<CallStatus>().ok().filter(|s| *s != CallStatus::Unknown);
            q.statuses = list("status", text, parse, "ringing, answered, ended")?;
        }
        if let Some(text) = get("recording") {
            let parse = |s: &str| s.parse::<RecordingStatus>().ok();
            q.recordings = list("recording", text, parse, "pending, ready, failed")?;
        }
        if let Some(text) = get("tag") {
            if text.trim().is_empty() {
                return Err(bad("tag: empty"));
            }
            q.tag = Some(text.trim().to_owned());
        }
        if let Some(text) = get("disposition") {
            let code = |s: &str| {
                (!s.is_empty()
                    && s.len() <= 64
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)))
                .then(|| s.to_owned())
            };
            q.dispositions = list("disposition", text, code, "disposition codes (A-Z, a-z, 0-9, _ . : -)")?;
        }
        for (name, value) in [("complete", &mut q.complete), ("blacklisted", &mut q.blacklisted)] {
            if let Some(text) = get(name) {
                *value = Some(match text {
                    "true" => true,
                    "false" => false,
                    other => return Err(bad(format!("{name}: {other:?} is not true or false"))),
                });
            }
        }
        if let Some(text) = get("limit") {
            q.limit =
                text.parse::<i64>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                    bad(format!("limit: {text:?} is not a whole number from 1 to {MAX_LIMIT}"))
                })?;
        }
        if let Some(text) = get("cursor") {
            q.cursor = Some(Cursor::decode(text)?);
        }
        Ok(q)
    }
}

/// `application/x-www-form-urlencoded` pairs of a query string.
pub(crate) fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(name), decode_component(value))
        })
        .collect()
}

/// Percent-decodes a query component, reading `+` as a space as forms do.
fn decode_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<ListQuery, BadRequest> {
        ListQuery::parse(Some(query), |source| (source == "acme-gb").then(|| "GB".to_owned()))
    }

    #[test]
    fn numbers_in_any_format_become_the_stored_form() {
        let e164 = |q: &str| parse(q).map(|q| q.number.map(|n| n.as_str().to_owned()));
        for query in [
            "number=%2B44%2020%207946%200000",
            "number=020+7946+0000&region=GB",
            "number=442079460000",
            "number=%2B44%20(0)20%207946%200000",
            "number=020%207946%200000&source=acme-gb",
        ] {
            assert_eq!(e164(query), Ok(Some("+442079460000".into())), "{query}");
        }
        assert_eq!(parse("number=101").expect("ok").number, Some(NumberFilter::Extension("101".into())));
        for query in ["number=abc", "number=020&region=XX", "number=%2B1234&region=GB", "number=02-01"] {
            assert!(parse(query).is_err(), "{query}");
        }
    }

    #[test]
    fn a_leading_00_is_international_without_a_region() {
        let number = |q: &str| parse(q).map(|q| q.number);
        for query in
            ["number=00442079460000", "number=0044+20+7946+0000", "number=00+44+20+7946+0000&region=RU"]
        {
            assert_eq!(number(query), Ok(Some(NumberFilter::E164("+442079460000".into()))), "{query}");
        }
    }

    #[test]
    fn numbers_that_do_not_parse_are_searched_by_their_digits() {
        let number = |q: &str| parse(q).map(|q| q.number);
        let drama = Ok(Some(NumberFilter::Digits("07700900103".into())));
        // Not a valid number in the UK, with or without the region; national without one.
        for query in [
            "number=07700+900103",
            "number=07700900103",
            "number=%2807700%29+900-103",
            "number=07700+900103&region=GB",
            "number=07700+900103&source=acme-gb",
        ] {
            assert_eq!(number(query), drama, "{query}");
        }
        let international = Ok(Some(NumberFilter::Digits("447700900103".into())));
        assert_eq!(number("number=%2B44+7700+900103"), international);
        // A national number without a region is not read in any region: only its digits match.
        assert_eq!(number("number=020+7946+0000"), Ok(Some(NumberFilter::Digits("02079460000".into()))));
    }

    #[test]
    fn every_bad_filter_says_which_parameter() {
        for (query, names) in [
            ("from=yesterday", "from"),
            ("from=2026-11-21T10:00:00Z&to=2026-11-21T09:00:00Z", "from"),
            ("outcome=missed,lost", "outcome"),
            ("direction=sideways", "direction"),
            ("status=unknown", "status"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("cursor=not-a-cursor", "cursor"),
            ("source=Not%20Valid", "source"),
            ("complete=yes", "complete"),
            ("blacklisted=1", "blacklisted"),
            ("recording=lost", "recording"),
            ("agnet=101", "agnet"),
            ("outcome=missed&outcome=answered", "outcome"),
            ("region=Mars", "region"),
        ] {
            let error = parse(query).expect_err(query);
            assert!(error.0.contains(names), "{query}: {error}");
        }
    }

    #[test]
    fn filters_and_cursor_round_trip() {
        let cursor = Cursor {
            started_at: DateTime::from_timestamp_micros(1_800_000_000_123_456).expect("time"),
            source_id: "acme".into(),
            call_id: "a/b c".into(),
        };
        let query = format!(
            "from=2026-11-21T00:00:00%2B01:00&outcome=missed,abandoned_in_ivr&direction=inbound&agent=Ann@Example.com&limit=2&cursor={}",
            cursor.encode()
        );
        let q = parse(&query).expect("valid");
        assert_eq!(q.from.map(|t| t.to_rfc3339()), Some("2026-11-20T23:00:00+00:00".into()));
        assert_eq!(q.outcomes, [Outcome::Missed, Outcome::AbandonedInIvr]);
        assert_eq!(q.directions, [Direction::Inbound]);
        assert_eq!(q.agent.as_deref(), Some("ann@example.com"));
        assert_eq!((q.limit, q.cursor), (2, Some(cursor)));
        let q = parse("blacklisted=true&complete=false").expect("valid");
        assert_eq!((q.blacklisted, q.complete), (Some(true), Some(false)));
        let q = parse("recording=failed,pending").expect("valid");
        assert_eq!(q.recordings, [RecordingStatus::Failed, RecordingStatus::Pending]);
    }
}
