//! Screen-pop settings (`desk_screen_pops`): per source (or `*` for every source without its
//! own), the CRM URL to open with the call's values, the mode of seed 000 (open at once, notify
//! and open on click, or nothing) and which notification pops (ringing or answered).
//!
//! The URL template is an `http(s)` URL with `{variable}` placeholders, seed 003's names among
//! them; every value is percent-encoded, so a caller id cannot add a parameter or change the
//! host. A template is parsed when saved: an unknown variable or an unclosed brace is refused
//! with its position.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

/// The source id of the default screen-pop.
pub const DEFAULT_SOURCE: &str = "*";
/// Longest template accepted (browsers and proxies cut URLs beyond a few KiB).
const MAX_TEMPLATE: usize = 2048;

/// Everything but RFC 3986's unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Open the CRM page at once (seed 000's "open the call screen immediately").
    Open,
    /// Show a notification that opens it on click.
    Notify,
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Open => "open",
            Mode::Notify => "notify",
            Mode::None => "none",
        }
    }
}

/// Which notification carries the pop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PopOn {
    Ringing,
    Answered,
}

impl PopOn {
    pub fn as_str(self) -> &'static str {
        match self {
            PopOn::Ringing => "ringing",
            PopOn::Answered => "answered",
        }
    }
}

/// A value a template can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    IdSession,
    E164In,
    IdCall,
    CallerIdNum,
    Action,
    IdOp,
    IdGroup,
    Wait,
    SourceId,
    ContactId,
    AgentEmail,
    CustomerE164,
}

impl Var {
    const ALL: [(&'static str, Var); 12] = [
        ("id_session", Var::IdSession),
        ("e164_in", Var::E164In),
        ("id_call", Var::IdCall),
        ("caller_id_num", Var::CallerIdNum),
        ("action", Var::Action),
        ("id_op", Var::IdOp),
        ("id_group", Var::IdGroup),
        ("wait", Var::Wait),
        ("source_id", Var::SourceId),
        ("contact_id", Var::ContactId),
        ("agent_email", Var::AgentEmail),
        ("customer_e164", Var::CustomerE164),
    ];

    fn named(name: &str) -> Option<Var> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    source: String,
    parts: Vec<Part>,
}

/// Why a template was refused; `position` counts characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {position})")]
pub struct TemplateError {
    pub message: String,
    pub position: usize,
}

impl UrlTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let fail = |message: String, position: usize| Err(TemplateError { message, position });
        if text.len() > MAX_TEMPLATE {
            return fail(format!("the template is longer than {MAX_TEMPLATE} bytes"), MAX_TEMPLATE);
        }
        let lower = text.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return fail("the template must be an http:// or https:// URL".into(), 1);
        }
        // The host must be literal: a value must never choose where the browser goes.
        let host_start = text.find("://").map_or(0, |i| i.saturating_add(3));
        let host =
            text.get(host_start..).unwrap_or_default().split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains(['{', '}']) {
            return fail(
                "the host must be written out, not empty or a variable".into(),
                host_start.saturating_add(1),
            );
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, n) in chars.by_ref() {
                        if n == '}' {
                            closed = true;
                            break;
                        }
                        name.push(n);
                    }
                    if !closed {
                        return fail("unclosed {".into(), i.saturating_add(1));
                    }
                    let Some(var) = Var::named(name.trim()) else {
                        let known: Vec<&str> = Var::ALL.iter().map(|(n, _)| *n).collect();
                        return fail(
                            format!("unknown variable {{{name}}}; known: {}", known.join(", ")),
                            i.saturating_add(1),
                        );
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                }
                '}' => return fail("} without {".into(), i.saturating_add(1)),
                c if c.is_whitespace() || c.is_control() => {
                    return fail(
                        "spaces and control characters must be percent-encoded".into(),
                        i.saturating_add(1),
                    );
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self { source: text.to_owned(), parts })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The URL with every variable replaced by its value from `value`, percent-encoded.
    pub fn render(&self, value: impl Fn(Var) -> String) -> String {
        let mut out = String::with_capacity(self.source.len().saturating_add(64));
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => out.extend(utf8_percent_encode(&value(*var), COMPONENT)),
            }
        }
        out
    }
}

/// One source's screen-pop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenPop {
    pub template: UrlTemplate,
    pub mode: Mode,
    pub on: PopOn,
}

impl ScreenPop {
    pub fn to_json(&self, source_id: &str) -> serde_json::Value {
        serde_json::json!({
            "source_id": source_id,
            "url_template": self.template.as_str(),
            "mode": self.mode,
            "on": self.on,
        })
    }
}

/// The body of `PUT /v1/desk/screen-pop/{source}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenPopInput {
    pub url_template: String,
    pub mode: Mode,
    #[serde(default = "default_on")]
    pub on: PopOn,
}

fn default_on() -> PopOn {
    PopOn::Ringing
}

impl ScreenPopInput {
    pub fn parse(self) -> Result<ScreenPop, TemplateError> {
        Ok(ScreenPop { template: UrlTemplate::parse(&self.url_template)?, mode: self.mode, on: self.on })
    }
}

/// The screen-pops of every source, as loaded.
#[derive(Debug, Clone, Default)]
pub struct ScreenPops(HashMap<String, ScreenPop>);

impl ScreenPops {
    /// The screen-pop of `source`: its own, else the default.
    pub fn of(&self, source: &str) -> Option<&ScreenPop> {
        self.0.get(source).or_else(|| self.0.get(DEFAULT_SOURCE))
    }

    /// The screen-pop stored for `source` itself (`*`: the default).
    pub fn own(&self, source: &str) -> Option<&ScreenPop> {
        self.0.get(source)
    }
}

pub async fn load(pool: &Pool) -> Result<ScreenPops, crate::sessions::SessionError> {
    let rows = pool
        .get()
        .await?
        .query("SELECT source_id, url_template, mode, pop_on FROM desk_screen_pops", &[])
        .await?;
    let mut pops = HashMap::new();
    for row in rows {
        let source: String = row.get(0);
        let parsed = ScreenPopInput {
            url_template: row.get(1),
            mode: serde_json::from_value(serde_json::json!(row.get::<_, &str>(2))).unwrap_or(Mode::None),
            on: serde_json::from_value(serde_json::json!(row.get::<_, &str>(3))).unwrap_or(PopOn::Ringing),
        }
        .parse();
        match parsed {
            Ok(pop) => {
                let _ = pops.insert(source, pop);
            }
            // Saved by a release with other variables: skipped, and said so.
            Err(error) => tracing::warn!(%source, %error, "Screen-pop template no longer parses; ignored."),
        }
    }
    Ok(ScreenPops(pops))
}

/// Stores `pop` for `source`; `true` when it is new.
pub async fn put(pool: &Pool, source: &str, pop: &ScreenPop) -> Result<bool, crate::sessions::SessionError> {
    let row = pool
        .get()
        .await?
        .query_one(
            "INSERT INTO desk_screen_pops (source_id, url_template, mode, pop_on) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source_id) DO UPDATE SET url_template = EXCLUDED.url_template,
                 mode = EXCLUDED.mode, pop_on = EXCLUDED.pop_on, updated_at = now()
             RETURNING (xmax = 0)",
            &[&source, &pop.template.as_str(), &pop.mode.as_str(), &pop.on.as_str()],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn delete(pool: &Pool, source: &str) -> Result<bool, crate::sessions::SessionError> {
    let deleted =
        pool.get().await?.execute("DELETE FROM desk_screen_pops WHERE source_id = $1", &[&source]).await?;
    Ok(deleted > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_seed_003_variables_encoded() {
        let t =
            UrlTemplate::parse("https://crm.example.com/pop?num={caller_id_num}&op={id_op}&s={id_session}")
                .expect("valid");
        let url = t.render(|v| match v {
            Var::CallerIdNum => "79161234567".into(),
            Var::IdOp => "a 1&x=2".into(),
            _ => "ds_1".into(),
        });
        assert_eq!(url, "https://crm.example.com/pop?num=79161234567&op=a%201%26x%3D2&s=ds_1");
    }

    #[test]
    fn bad_templates_are_refused_with_the_position() {
        let err = UrlTemplate::parse("https://crm/x?n={caller}").expect_err("unknown");
        assert_eq!(err.position, 17);
        assert!(err.message.contains("unknown variable {caller}"), "{err}");
        assert_eq!(UrlTemplate::parse("https://crm/x?n={wait").expect_err("unclosed").position, 17);
        assert_eq!(UrlTemplate::parse("https://crm/x}").expect_err("stray").position, 14);
        assert!(UrlTemplate::parse("javascript:alert(1)").is_err());
        assert!(UrlTemplate::parse("https://{source_id}.crm.example.com/").is_err(), "host from a value");
        assert!(UrlTemplate::parse("https://crm/x y").is_err());
        assert!(UrlTemplate::parse(&format!("https://crm/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn a_source_falls_back_to_the_default() {
        let pop = |url: &str| ScreenPop {
            template: UrlTemplate::parse(url).expect("valid"),
            mode: Mode::Open,
            on: PopOn::Ringing,
        };
        let pops = ScreenPops(HashMap::from([
            ("*".to_owned(), pop("https://default/")),
            ("pbx-1".to_owned(), pop("https://own/")),
        ]));
        assert_eq!(pops.of("pbx-1").map(|p| p.template.as_str()), Some("https://own/"));
        assert_eq!(pops.of("pbx-2").map(|p| p.template.as_str()), Some("https://default/"));
        assert!(ScreenPops::default().of("pbx-1").is_none());
    }
}
