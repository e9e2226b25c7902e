//! Helpers the adapters share: form and JSON fields, ids, numbers, times, dedupe keys, and the
//! recording event a hangup that names its recording gives.
//!
//! Vendor adapters are lenient where the vendor is sloppy (a bad date falls back to the receive
//! time, an unparseable number keeps its raw text) and strict only where an event would be
//! meaningless (no call id).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};
use switchboard_model::{CallEvent, CallId, EventId, EventKind, LegId, PhoneNumber, RawWebhook, Region};

use crate::{AdapterError, Rejection, Request};

/// Longest free text kept from a vendor field (names, causes, URLs are clipped, not refused).
pub const MAX_TEXT: usize = 512;

/// A dedupe key from stable parts of an event: `sha256:` and 32 hex digits. Parts are separated
/// by a byte no text field contains, so `("ab", "c")` and `("a", "bc")` differ.
pub fn stable_id(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0x1f]);
        }
        hasher.update(part);
    }
    format!("sha256:{}", crate::auth::hex(&hasher.finalize()[..16]))
}

/// [`stable_id`] over text parts.
pub fn stable_text_id(parts: &[&str]) -> String {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    stable_id(&bytes)
}

/// Form fields of a request: the URL-encoded body of a POST, else the query of a GET (the query
/// of a POST is appended, after the body's fields; the `token` credential is never included).
#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn from_request(request: &Request<'_>) -> Self {
        let mut fields = Vec::new();
        if request.method != "GET" && request.media_type() == "application/x-www-form-urlencoded" {
            fields.extend(form_urlencoded::parse(request.body).into_owned());
        }
        if let Some(query) = request.query {
            fields.extend(
                form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .filter(|(k, _)| k != crate::auth::TOKEN_PARAM),
            );
        }
        Self(fields)
    }

    /// Fields decoded from `key=value&...` text (a form body).
    pub fn parse(text: &[u8]) -> Self {
        Self(form_urlencoded::parse(text).into_owned().collect())
    }

    /// The first value of `name` exactly as sent, blank or not: the occurrence a vendor's
    /// signature covers, so that a repeated field cannot slip past it.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first non-blank value of `name`, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.trim()).find(|v| !v.is_empty())
    }

    /// The first non-blank value of any of `names`, in order.
    pub fn get_any(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|name| self.get(name))
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(clip)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Fields a vendor's own parser has already read (Twilio's JSON callbacks).
impl From<Vec<(String, String)>> for Fields {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }
}

/// `Ok` when the request is a form (POST body) or a GET with a query; the 415 otherwise.
pub fn require_form(request: &Request<'_>) -> Result<(), Rejection> {
    let media = request.media_type();
    if request.method == "GET" || media == "application/x-www-form-urlencoded" {
        Ok(())
    } else {
        Err(Rejection::UnsupportedMediaType(media))
    }
}

/// `Ok` when the request declares a JSON body.
pub fn require_json(request: &Request<'_>) -> Result<(), Rejection> {
    let media = request.media_type();
    if media == "application/json" || media.ends_with("+json") {
        Ok(())
    } else {
        Err(Rejection::UnsupportedMediaType(media))
    }
}

/// The body as a JSON object; serde would also read a struct from an array, which no vendor sends.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// A JSON string field, trimmed; `None` when absent, blank or not a string.
pub fn json_str<'a>(object: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> Option<&'a str> {
    object.get(name)?.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// The body of a request that must carry a JSON object: 415 for another media type, 400 for
/// another body.
pub fn json_request(request: &Request<'_>) -> Result<serde_json::Map<String, serde_json::Value>, Rejection> {
    require_json(request)?;
    json_object(request.body).map_err(Rejection::Malformed)
}

/// An id that may be a JSON string or number (many vendors number their calls).
pub fn json_id(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON string (or number, as text), clipped.
pub fn json_text(value: Option<&serde_json::Value>) -> Option<String> {
    json_id(value).map(|s| clip(&s))
}

/// Text clipped to [`MAX_TEXT`] bytes at a character boundary.
pub fn clip(text: &str) -> String {
    let text = text.trim();
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

pub fn call_id(value: Option<&str>, field: &str) -> Result<CallId, AdapterError> {
    let value = value.ok_or_else(|| AdapterError::new(format!("{field} is missing")))?;
    CallId::parse(value.trim()).map_err(|e| AdapterError::new(format!("{field}: {e}")))
}

/// The call id a request names, checked at ingress as the normalizer will check it, so that a
/// request whose events would be dead-lettered for it is refused (400) while the PBX can still
/// be told.
pub fn call_key(value: Option<&str>, field: &str) -> Result<Option<String>, Rejection> {
    call_id(value, field).map(|id| Some(id.into())).map_err(|e| Rejection::Malformed(e.0))
}

pub fn leg_id(value: Option<&str>, field: &str) -> Result<Option<LegId>, AdapterError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => LegId::parse(v).map(Some).map_err(|e| AdapterError::new(format!("{field}: {e}"))),
    }
}

pub fn event_id(value: String) -> Result<EventId, AdapterError> {
    EventId::parse(value).map_err(|e| AdapterError::new(format!("event id: {e}")))
}

/// The source's region, which ingress copied into the raw record.
pub fn region(raw: &RawWebhook) -> Result<Region, AdapterError> {
    raw.default_region.parse().map_err(|e| AdapterError::new(format!("source region: {e}")))
}

/// A number as the PBX wrote it (clipped) and its E.164 form when it is a public number.
pub fn number(raw: Option<&str>, region: Region) -> (Option<String>, Option<PhoneNumber>) {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => (None, None),
        Some(text) => (Some(clip(text)), PhoneNumber::parse_lenient(text, region)),
    }
}

/// Sets `from_*` and `to_*` of an event.
pub fn set_numbers(event: &mut CallEvent, from: Option<&str>, to: Option<&str>, region: Region) {
    (event.from_raw, event.from_e164) = number(from, region);
    (event.to_raw, event.to_e164) = number(to, region);
}

/// `hangup`, followed by a `Recording` event when it is a hangup that names its recording
/// (`recording_url` or `recording_id`): the recordings stage acts on recording events only, and
/// the hangup keeps the link for the call log. The recording's dedupe key derives from the
/// hangup's (`base_id`), so a retried hangup repeats both keys.
pub fn with_recording(hangup: CallEvent, base_id: &str) -> Result<Vec<CallEvent>, AdapterError> {
    if hangup.kind != EventKind::Hangup || (hangup.recording_url.is_none() && hangup.recording_id.is_none()) {
        return Ok(vec![hangup]);
    }
    let mut recording = hangup.clone();
    recording.event_id = event_id(stable_text_id(&[base_id, "recording"]))?;
    recording.kind = EventKind::Recording;
    recording.disposition = None;
    recording.hangup_cause = None;
    Ok(vec![hangup, recording])
}

/// The source's time zone for local times; UTC when none is configured or it is unknown.
pub fn timezone(raw: &RawWebhook) -> Tz {
    raw.timezone.as_deref().and_then(|tz| tz.parse().ok()).unwrap_or(Tz::UTC)
}

/// Unix time in seconds, milliseconds or microseconds (told apart by size), as text or number.
pub fn unix_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let n: i64 = int.parse().ok()?;
    let t = match n.unsigned_abs() {
        0..1_000_000_000_000 => {
            let nanos = if frac.is_empty() {
                0
            } else {
                // At most 9 ASCII digits, so neither the scale nor the product can overflow.
                let digits = frac.get(..frac.len().min(9))?;
                if !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let scale = 10u32.checked_pow(9u32.checked_sub(u32::try_from(digits.len()).ok()?)?)?;
                digits.parse::<u32>().ok()?.checked_mul(scale)?
            };
            DateTime::from_timestamp(n, nanos)?
        }
        1_000_000_000_000..1_000_000_000_000_000 => DateTime::from_timestamp_millis(n)?,
        _ => DateTime::from_timestamp_micros(n)?,
    };
    Some(t)
}

/// Local wall-clock formats PBXs use, tried in order.
const LOCAL_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d/%m/%Y %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
];

/// A time as vendors write it: RFC 3339 / ISO 8601 with an offset, RFC 2822 (Twilio), Unix time,
/// or local wall-clock time in `tz` (an ambiguous DST hour takes the earlier instant). `None` when
/// nothing fits; callers then use the receive time rather than fail the event.
pub fn parse_time(text: &str, tz: Tz) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return unix_time(text);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let utc_suffix = text.strip_suffix(" UTC").or_else(|| text.strip_suffix('Z'));
    let (text, tz) = match utc_suffix {
        Some(rest) => (rest, Tz::UTC),
        None => (text, tz),
    };
    LOCAL_FORMATS.iter().find_map(|format| {
        let naive = NaiveDateTime::parse_from_str(text, format).ok()?;
        tz.from_local_datetime(&naive).earliest().map(|t| t.with_timezone(&Utc))
    })
}

/// Whether a vendor time is believable: a PBX clock can be off by minutes, not by years, and an
/// event from the future would corrupt the call's times.
pub fn plausible(t: DateTime<Utc>, received_at: DateTime<Utc>) -> bool {
    let earliest = DateTime::from_timestamp(946_684_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
    t >= earliest && t <= latest_plausible(received_at)
}

/// A day after `received_at`: the latest vendor time believed. Checked, because the receive time
/// comes from a stored record, and a corrupt one at the end of time must not panic an adapter.
pub fn latest_plausible(received_at: DateTime<Utc>) -> DateTime<Utc> {
    received_at.checked_add_signed(chrono::Duration::days(1)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The vendor's time when it parses and is plausible, else the receive time: a bad date never
/// fails an event (uContact sends `2023-48-13 06:48:51`).
pub fn time_or_received(text: Option<&str>, tz: Tz, received_at: DateTime<Utc>) -> DateTime<Utc> {
    text.and_then(|t| parse_time(t, tz)).filter(|t| plausible(*t, received_at)).unwrap_or(received_at)
}

/// An `http(s)` URL, clipped; anything else is not a link a CRM can open.
pub fn url(text: Option<&str>) -> Option<String> {
    let text = text?.trim();
    (text.starts_with("https://") || text.starts_with("http://")).then(|| clip(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_vendor_shape() {
        let moscow: Tz = "Europe/Moscow".parse().expect("tz");
        let expected = Utc.with_ymd_and_hms(2026, 11, 21, 7, 0, 0).single().expect("valid");
        for text in [
            "2026-11-21T07:00:00Z",
            "2026-11-21T10:00:00+03:00",
            "Sat, 21 Nov 2026 07:00:00 +0000",
            "1795244400",
            "1795244400000",
            "2026-11-21 10:00:00",
            "21.11.2026 10:00:00",
            "2026-11-21 07:00:00 UTC",
        ] {
            assert_eq!(parse_time(text, moscow), Some(expected), "{text}");
        }
        assert_eq!(parse_time("2023-48-13 06:48:51", moscow), None);
        assert_eq!(parse_time("", moscow), None);
    }

    #[test]
    fn implausible_or_broken_times_fall_back_to_receipt() {
        let received = Utc.with_ymd_and_hms(2026, 11, 21, 7, 0, 0).single().expect("valid");
        assert_eq!(time_or_received(Some("2023-48-13 06:48:51"), Tz::UTC, received), received);
        assert_eq!(time_or_received(Some("1999-01-01 00:00:00"), Tz::UTC, received), received);
        assert_eq!(time_or_received(Some("2030-01-01 00:00:00"), Tz::UTC, received), received);
        assert_eq!(time_or_received(None, Tz::UTC, received), received);
    }

    #[test]
    fn extreme_times_are_refused_not_a_panic() {
        // A receive time at the end of time: "a day later" does not exist, and must not panic.
        let end = DateTime::<Utc>::MAX_UTC;
        assert!(plausible(end, end));
        assert!(!plausible(DateTime::<Utc>::MIN_UTC, end));
        assert_eq!(time_or_received(Some("1795244400"), Tz::UTC, end).timestamp(), 1_795_244_400);
        assert_eq!(unix_time("1795244400.5").map(|t| t.timestamp_subsec_millis()), Some(500));
        assert_eq!(
            unix_time("1795244400.1234567890123").map(|t| t.timestamp_subsec_nanos()),
            Some(123_456_789)
        );
        assert_eq!(unix_time("1795244400.ééééé"), None);
        assert_eq!(unix_time("1795244400.+1"), None);
        assert_eq!(unix_time("99999999999999999999"), None);
    }

    #[test]
    fn stable_ids_separate_their_parts() {
        assert_ne!(stable_text_id(&["ab", "c"]), stable_text_id(&["a", "bc"]));
        assert_eq!(stable_text_id(&["x"]), stable_id(&[b"x"]));
        assert!(stable_text_id(&["x"]).starts_with("sha256:"));
    }

    #[test]
    fn clipping_respects_characters() {
        let long = "é".repeat(MAX_TEXT);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_TEXT);
        assert!(clipped.chars().all(|c| c == 'é'));
    }
}
