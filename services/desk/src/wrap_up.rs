//! Dispositions and tags (#17): an agent's wrap-up of a call, and the lists of disposition codes
//! agents choose from.
//!
//! A wrap-up is not written to the call log here: it becomes a `WRAP_UP` call event on the
//! `enriched` topic, keyed by the call like every event of it, and the call log folds it like any
//! other (the latest wins), stores it on the call and publishes a new version of the call record
//! on `calls` — so CRMs, outbound profiles and the query API all see it through the paths they
//! already use, and the event log keeps every change. The request is answered once Kafka has
//! acknowledged the event (at least once: a retried request is a second event with the same
//! content, and the later one wins, which is the same wrap-up). Then, where the PBX keeps
//! dispositions of its own (uContact), it is pushed there too; that push's result is reported,
//! never retried behind the agent's back (a vendor's disposition action may run dialer actions).
//!
//! Codes come from a list per source (`*`: the default of every source without its own), so that
//! reports and CRMs see a fixed vocabulary; the label is copied into the wrap-up, so that renaming
//! a code later does not rewrite history.

use chrono::Utc;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_core::kafka::Outbound;
use switchboard_model::{CallEvent, CallId, EventId, EventKind, SourceId, Vendor, WrapUp};

use crate::metrics;

use crate::desk::{Desk, DeskError};
use crate::originate::{self, Answer};
use crate::sessions::{Role, Session, SessionError};

/// At most this many codes in one list, tags on one call, and characters in a note.
pub const MAX_CODES: usize = 200;
pub const MAX_TAGS: usize = 20;
pub const MAX_NOTE_CHARS: usize = 2000;
const MAX_TAG_CHARS: usize = 64;

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    (status, json!({"error": code, "message": message.into()}))
}

/// One code of a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Code {
    pub code: String,
    pub label: String,
}

/// The body of `PUT /v1/desk/dispositions/{source_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeList {
    pub codes: Vec<Code>,
}

/// The body of `PUT /v1/desk/calls/{source_id}/{call_id}/disposition`: the whole wrap-up (a
/// field left out is cleared, as with any `PUT`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrapUpInput {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Checks a list: codes of `[A-Za-z0-9_.:-]{1,64}`, each once, labels of 1-200 characters.
pub fn check_codes(list: &CodeList) -> Result<(), String> {
    if list.codes.len() > MAX_CODES {
        return Err(format!("at most {MAX_CODES} codes"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in list.codes.iter().enumerate() {
        let valid = !c.code.is_empty()
            && c.code.len() <= 64
            && c.code.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !valid {
            return Err(format!("codes[{i}].code: use 1 to 64 of A-Z, a-z, 0-9, '_', '.', ':' and '-'"));
        }
        let label = c.label.trim();
        if label.is_empty() || label.chars().count() > 200 || label.chars().any(char::is_control) {
            return Err(format!("codes[{i}].label: 1 to 200 characters, no control characters"));
        }
        if !seen.insert(c.code.as_str()) {
            return Err(format!("codes[{i}].code: {:?} is listed twice", c.code));
        }
    }
    Ok(())
}

/// A wrap-up's fields as stored.
#[derive(Debug, PartialEq, Eq)]
pub struct Cleaned {
    pub code: Option<String>,
    pub note: Option<String>,
    pub tags: Vec<String>,
}

/// A wrap-up's fields as stored: trimmed (blank is none), tags de-duplicated in their order.
/// `Err` says what is wrong.
pub fn clean(input: WrapUpInput) -> Result<Cleaned, String> {
    let code = input.code.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    let note = input.note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if let Some(note) = &note {
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err(format!("note: at most {MAX_NOTE_CHARS} characters"));
        }
        if note.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err("note: no control characters but new lines and tabs".into());
        }
    }
    if input.tags.len() > MAX_TAGS {
        return Err(format!("tags: at most {MAX_TAGS}"));
    }
    let mut tags: Vec<String> = Vec::with_capacity(input.tags.len());
    for (i, tag) in input.tags.iter().enumerate() {
        let tag = tag.trim();
        if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
            return Err(format!("tags[{i}]: 1 to {MAX_TAG_CHARS} characters, no control characters"));
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    Ok(Cleaned { code, note, tags })
}

/// `source_id`'s own list, in the panel's order; `None` when it has none (it uses the default).
/// A source has a list of its own when it has a row in `disposition_lists` (an empty list too) or,
/// as a release from before migration 0016 writes it, code rows alone. One round trip: the row of
/// `s` always comes back, with its codes when it has any.
pub async fn own_codes(desk: &Desk, source_id: &str) -> Result<Option<Vec<Code>>, DeskError> {
    let rows = desk
        .pool
        .get()
        .await
        .map_err(SessionError::from)?
        .query(
            "SELECT EXISTS (SELECT 1 FROM disposition_lists l WHERE l.source_id = s.id)
                    OR c.code IS NOT NULL,
                    c.code, c.label
             FROM (SELECT $1::text AS id) s
             LEFT JOIN disposition_codes c ON c.source_id = s.id
             ORDER BY c.position, c.code",
            &[&source_id],
        )
        .await?;
    if !rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
        return Ok(None);
    }
    let codes = rows
        .iter()
        .filter_map(|r| {
            Some(Code { code: r.get::<_, Option<String>>(1)?, label: r.get::<_, Option<String>>(2)? })
        })
        .collect();
    Ok(Some(codes))
}

/// The list agents of `source_id` choose from (its own, else the default `*`, else none), and
/// whether it is the default.
pub async fn codes(desk: &Desk, source_id: &str) -> Result<(Vec<Code>, bool), DeskError> {
    if let Some(own) = own_codes(desk, source_id).await? {
        return Ok((own, false));
    }
    let default = own_codes(desk, "*").await?;
    Ok((default.unwrap_or_default(), source_id != "*"))
}

/// Replaces `source_id`'s list (creating it, even empty) in one transaction.
pub async fn replace_codes(desk: &Desk, source_id: &str, list: &CodeList) -> Result<(), DeskError> {
    let mut client = desk.pool.get().await.map_err(SessionError::from)?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO disposition_lists (source_id) VALUES ($1)
         ON CONFLICT (source_id) DO UPDATE SET updated_at = now()",
        &[&source_id],
    )
    .await?;
    tx.execute("DELETE FROM disposition_codes WHERE source_id = $1", &[&source_id]).await?;
    for (position, c) in list.codes.iter().enumerate() {
        let position = i32::try_from(position).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO disposition_codes (source_id, code, label, position) VALUES ($1, $2, $3, $4)",
            &[&source_id, &c.code, &c.label.trim(), &position],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes `source_id`'s own list (it then uses the default); `false` when it had none.
pub async fn delete_codes(desk: &Desk, source_id: &str) -> Result<bool, DeskError> {
    let mut client = desk.pool.get().await.map_err(SessionError::from)?;
    let tx = client.transaction().await?;
    let lists = tx.execute("DELETE FROM disposition_lists WHERE source_id = $1", &[&source_id]).await?;
    let codes = tx.execute("DELETE FROM disposition_codes WHERE source_id = $1", &[&source_id]).await?;
    tx.commit().await?;
    Ok(lists > 0 || codes > 0)
}

/// What the wrap-up needs of a call.
struct CallFacts {
    vendor: String,
    /// Whether the session's agent answered, placed or rang on it.
    was_on_call: bool,
    /// The call's own agent (who answered first, or placed it).
    agent_id: Option<String>,
    /// The queue or campaign it went through.
    queue: Option<String>,
    /// The customer's number as the PBX wrote it (else as the call log keeps it).
    customer: Option<String>,
}

async fn call_of(
    desk: &Desk,
    source_id: &str,
    call_id: &str,
    agent_id: Option<&str>,
) -> Result<Option<CallFacts>, DeskError> {
    let row = desk
        .pool
        .get()
        .await
        .map_err(SessionError::from)?
        .query_opt(
            "SELECT c.vendor,
                    $3::text IS NOT NULL AND (c.agent_id = $3 OR EXISTS (
                        SELECT 1 FROM call_legs l
                        WHERE l.source_id = c.source_id AND l.call_id = c.call_id AND l.agent_id = $3)),
                    c.agent_id, c.queue,
                    COALESCE((SELECT CASE WHEN c.direction = 'outbound' THEN e.to_raw ELSE e.from_raw END
                              FROM call_events e
                              WHERE e.source_id = c.source_id AND e.call_id = c.call_id
                                AND (CASE WHEN c.direction = 'outbound' THEN e.to_raw ELSE e.from_raw END) IS NOT NULL
                              ORDER BY e.occurred_at LIMIT 1),
                             CASE WHEN c.direction = 'outbound' THEN c.to_number ELSE c.from_number END)
             FROM calls c WHERE c.source_id = $1 AND c.call_id = $2",
            &[&source_id, &call_id, &agent_id],
        )
        .await?;
    Ok(row.map(|r| CallFacts {
        vendor: r.get(0),
        was_on_call: r.get(1),
        agent_id: r.get(2),
        queue: r.get(3),
        customer: r.get(4),
    }))
}

/// Sets the wrap-up of a call: checked, published as a `WRAP_UP` event once Kafka acknowledged
/// it, then pushed to the PBX where it keeps dispositions. `session` is the agent's when an agent
/// sets it (an agent may wrap up only calls they were on; a supervisor any call).
pub async fn set(
    desk: &Desk,
    session: Option<&Session>,
    source_id: &str,
    call_id: &str,
    input: WrapUpInput,
) -> Result<Answer, DeskError> {
    let Cleaned { code, note, tags } = match clean(input) {
        Ok(cleaned) => cleaned,
        Err(reason) => return Ok(refuse(StatusCode::BAD_REQUEST, "bad_request", reason)),
    };
    let (Ok(source), Ok(call)) = (SourceId::parse(source_id), CallId::parse(call_id)) else {
        return Ok(refuse(StatusCode::NOT_FOUND, "not_found", "no such call"));
    };
    let agent_id = session.map(|s| s.agent_id.as_str());
    let Some(facts) = call_of(desk, source_id, call_id, agent_id).await? else {
        return Ok(refuse(StatusCode::NOT_FOUND, "not_found", "no such call in the call log (yet)"));
    };
    if session.is_some_and(|s| s.role == Role::Agent) && !facts.was_on_call {
        return Ok(refuse(StatusCode::FORBIDDEN, "forbidden", "an agent wraps up only calls they were on"));
    }
    let label = match &code {
        None => None,
        Some(code) => {
            let (list, _) = codes(desk, source_id).await?;
            match list.into_iter().find(|c| &c.code == code) {
                Some(found) => Some(found.label),
                None => {
                    return Ok(refuse(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "unknown_code",
                        format!(
                            "{code:?} is not a disposition code of source {source_id:?} (GET /v1/desk/sources/{source_id}/dispositions)"
                        ),
                    ));
                }
            }
        }
    };
    let vendor: Vendor = facts.vendor.parse().unwrap_or(Vendor::Generic);
    let now = Utc::now();
    let wrap_up = WrapUp { code, label, note, tags, agent_id: agent_id.map(str::to_owned), set_at: now };
    let event_id = EventId::parse(format!("wrap-up:{}", uuid::Uuid::now_v7().simple()))
        .map_err(|e| DeskError::Invalid(e.to_string()))?;
    let mut event = CallEvent::empty(source, vendor, call, event_id, EventKind::WrapUp, now);
    event.wrap_up = Some(wrap_up.clone());
    let outbound = Outbound {
        topic: desk.enriched_topic.clone(),
        key: Some(event.partition_key().into_bytes()),
        payload: desk.codecs.call_event.encode(&event)?,
    };
    desk.produce(&outbound).await?;
    let agent = agent_id.map(str::to_owned).or(facts.agent_id.clone());
    let pbx = push(desk, vendor, source_id, call_id, agent, &facts, &wrap_up).await;
    tracing::info!(source = source_id, call = call_id, event = %event.event_id, "Wrap-up set.");
    Ok((
        StatusCode::ACCEPTED,
        json!({
            "event_id": event.event_id.as_str(),
            "source_id": source_id,
            "call_id": call_id,
            "wrap_up": wrap_up_json(&wrap_up),
            "pbx": pbx,
        }),
    ))
}

/// Pushes the disposition to the PBX where it keeps dispositions (uContact), and says how that
/// went: `{"pushed": true}`, `{"pushed": false, "error": …}`, or `null` where there is nothing to
/// push (no code, or a vendor without dispositions). A failure here is reported, not retried:
/// the wrap-up is already recorded in Switchboard, and the vendor's action may not be idempotent.
async fn push(
    desk: &Desk,
    vendor: Vendor,
    source_id: &str,
    call_id: &str,
    agent_id: Option<String>,
    facts: &CallFacts,
    wrap_up: &WrapUp,
) -> Value {
    let Some(code) = wrap_up.code.clone() else { return Value::Null };
    if !switchboard_originate::can_set_disposition(vendor) {
        return Value::Null;
    }
    let failed = |reason: String| {
        metrics::DESK_DISPOSITION_PUSHES.with_label_values(&[vendor.as_str(), "failed"]).inc();
        tracing::warn!(source = source_id, call = call_id, reason = %reason, "The PBX did not take the disposition.");
        json!({"pushed": false, "error": reason})
    };
    let source = match originate::source(desk, source_id).await {
        Ok(Some(source)) => source,
        Ok(None) => return failed(format!("source {source_id:?} is disabled")),
        Err(e) => return failed(format!("cannot read the source: {e}")),
    };
    let agent = match agent_id {
        Some(id) => {
            let input = originate::AgentInput { id: Some(id), extension: None, number: None };
            match originate::endpoint(desk, source_id, &input, source.region) {
                Ok((endpoint, _)) => endpoint,
                Err((_, answer)) => {
                    return failed(format!(
                        "the call's agent: {}",
                        answer.get("message").unwrap_or(&Value::Null)
                    ));
                }
            }
        }
        None => return failed("the call has no agent to push the disposition as".into()),
    };
    let request = switchboard_originate::DispositionRequest {
        vendor_call_id: call_id.to_owned(),
        agent,
        campaign: facts.queue.clone(),
        customer: facts.customer.clone(),
        // The PBX knows its dispositions by name: the code's label.
        disposition: wrap_up.label.clone().unwrap_or(code),
        note: wrap_up.note.clone(),
        tags: wrap_up.tags.clone(),
    };
    match switchboard_originate::set_disposition(vendor, &source.settings, &request, &desk.transport).await {
        Ok(()) => {
            metrics::DESK_DISPOSITION_PUSHES.with_label_values(&[vendor.as_str(), "pushed"]).inc();
            json!({"pushed": true})
        }
        Err(e) => failed(e.to_string()),
    }
}

/// A wrap-up as the APIs show it.
pub fn wrap_up_json(w: &WrapUp) -> Value {
    json!({
        "code": w.code,
        "label": w.label,
        "note": w.note,
        "tags": w.tags,
        "agent_id": w.agent_id,
        "set_at": w.set_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(code: Option<&str>, note: Option<&str>, tags: &[&str]) -> WrapUpInput {
        WrapUpInput {
            code: code.map(Into::into),
            note: note.map(Into::into),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn a_wrap_up_is_trimmed_and_its_tags_kept_once_in_order() {
        let Cleaned { code, note, tags } =
            clean(input(Some(" sale "), Some(" line 1\nline 2 "), &["vip", " renewal", "vip"]))
                .expect("valid");
        assert_eq!(
            (code.as_deref(), note.as_deref(), tags),
            (Some("sale"), Some("line 1\nline 2"), vec!["vip".to_owned(), "renewal".to_owned()])
        );
        let Cleaned { code, note, tags } = clean(input(Some(" "), Some(""), &[])).expect("empty clears");
        assert_eq!((code, note, tags.len()), (None, None, 0));
    }

    #[test]
    fn bad_notes_and_tags_are_refused_with_the_reason() {
        let long = "x".repeat(MAX_NOTE_CHARS + 1);
        assert!(clean(input(None, Some(&long), &[])).unwrap_err().starts_with("note"));
        assert!(clean(input(None, Some("a\u{7}b"), &[])).unwrap_err().starts_with("note"));
        assert!(clean(input(None, None, &["ok", " "])).unwrap_err().starts_with("tags[1]"));
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(clean(input(None, None, &many)).unwrap_err().starts_with("tags:"));
    }

    #[test]
    fn code_lists_need_safe_unique_codes_and_labels() {
        let list = |codes: &[(&str, &str)]| CodeList {
            codes: codes.iter().map(|(c, l)| Code { code: (*c).into(), label: (*l).into() }).collect(),
        };
        assert_eq!(check_codes(&list(&[("sale", "Sale"), ("call-back", "Call back")])), Ok(()));
        assert!(check_codes(&list(&[("sale", "Sale"), ("sale", "Again")])).unwrap_err().contains("twice"));
        assert!(check_codes(&list(&[("no spaces", "x")])).unwrap_err().starts_with("codes[0].code"));
        assert!(check_codes(&list(&[("ok", " ")])).unwrap_err().starts_with("codes[0].label"));
    }
}
