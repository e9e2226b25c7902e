//! Notifications as agents receive them: built once per event and agent from the tracker's
//! [`Happening`] and the directory, kept in the resume buffers, and written to each stream with
//! the screen-pop URL rendered for that stream's session (`id_session` differs per session).
//! The JSON is documented in `docs/desk.md`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use switchboard_directory::Directory;
use switchboard_model::{AgentStatus, ContactMatch, Direction};

use crate::screen_pop::{Mode, PopOn, ScreenPop, Var};
use crate::sessions::{Role, Session};
use crate::track::{Happening, Kind, Number};

/// A notification about one agent, as every replica builds it.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The same on every replica: built from the Kafka position of the record (`m<partition>-
    /// <offset>-<n>` for call events, `s<partition>-<offset>` for status changes).
    pub id: String,
    pub kind: &'static str,
    /// The agent it is about.
    pub agent_id: String,
    /// That agent's groups: supervisors of any of them see it.
    pub groups: Vec<String>,
    /// Only the agent's own sessions get it (`taken` is no news to a supervisor).
    pub own_only: bool,
    /// When ingress received what caused it, for the latency histogram.
    pub received_at: Option<DateTime<Utc>>,
    body: Map<String, Value>,
    pop: Option<Pop>,
}

/// The screen-pop of a notification, rendered per session.
#[derive(Debug, Clone)]
struct Pop {
    setting: ScreenPop,
    values: PopValues,
}

#[derive(Debug, Clone, Default)]
struct PopValues {
    e164_in: String,
    id_call: String,
    caller_id_num: String,
    action: &'static str,
    id_op: String,
    id_group: String,
    wait: String,
    source_id: String,
    contact_id: String,
    agent_email: String,
    customer_e164: String,
}

fn number(n: &Number) -> Value {
    json!({"raw": n.raw, "e164": n.e164})
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn direction(d: Direction) -> &'static str {
    d.as_str()
}

fn agent_json(directory: Option<&Directory>, agent_id: &str) -> (Value, Vec<String>) {
    match directory.and_then(|d| d.agent(agent_id)) {
        Some(agent) => (
            json!({"id": agent.id, "name": agent.name, "email": agent.email, "groups": agent.groups}),
            agent.groups.clone(),
        ),
        None => (json!({"id": agent_id, "name": null, "email": null, "groups": []}), Vec::new()),
    }
}

/// Whether `kind` is the notification a screen-pop set to pop `on` rides on.
fn pops_on(kind: Kind, on: PopOn) -> bool {
    match on {
        PopOn::Ringing => matches!(kind, Kind::Incoming | Kind::Outgoing),
        PopOn::Answered => kind == Kind::Answered,
    }
}

impl Notification {
    /// The notification `happening` makes, numbered `id`.
    pub fn of_call(
        id: String,
        happening: &Happening,
        directory: Option<&Directory>,
        pop: Option<&ScreenPop>,
        received_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        let call = &happening.call;
        let (agent, groups) = agent_json(directory, &happening.agent_id);
        let wait = now.signed_duration_since(call.started_at).num_seconds().max(0);
        let candidates: Vec<Value> = call
            .contact_ids
            .iter()
            .map(|id| match directory.and_then(|d| d.contact(id)) {
                Some(c) => json!({"id": c.id, "name": c.name, "company": c.company}),
                None => json!({"id": id, "name": null, "company": null}),
            })
            .collect();
        let matched = match call.contact_match {
            Some(ContactMatch::Unique) => "unique",
            Some(ContactMatch::Ambiguous) => "ambiguous",
            Some(ContactMatch::OwnNumber) => "own_number",
            _ => "none",
        };
        let taken_by = match happening.kind {
            Kind::Taken => call.answered_by.as_deref().map(|a| agent_json(directory, a).0),
            _ => None,
        };
        let customer = call.customer();
        let mut body = Map::new();
        let _ = body.insert("id".into(), json!(id));
        let _ = body.insert("type".into(), json!(happening.kind.as_str()));
        let _ = body.insert("at".into(), json!(time(now)));
        let _ = body.insert(
            "call".into(),
            json!({
                "source_id": call.source_id,
                "call_id": call.call_id,
                "direction": direction(call.direction),
                "from": number(&call.from),
                "to": number(&call.to),
                "customer": number(customer),
                "started_at": time(call.started_at),
                "wait_seconds": wait,
            }),
        );
        let _ = body.insert("agent".into(), agent.clone());
        let _ = body.insert("contact".into(), json!({"match": matched, "candidates": candidates}));
        let _ = body.insert("taken_by".into(), taken_by.unwrap_or(Value::Null));
        let pop = pop.filter(|p| p.mode != Mode::None && pops_on(happening.kind, p.on)).map(|setting| {
            let digits = |n: &Number| {
                n.e164.as_deref().map(|e| e.trim_start_matches('+').to_owned()).or_else(|| n.raw.clone())
            };
            Pop {
                setting: setting.clone(),
                values: PopValues {
                    e164_in: digits(call.ours()).unwrap_or_default(),
                    id_call: call.call_id.clone(),
                    caller_id_num: digits(customer).unwrap_or_default(),
                    action: if call.direction == Direction::Outbound { "out" } else { "in" },
                    id_op: happening.agent_id.clone(),
                    id_group: groups.first().cloned().unwrap_or_default(),
                    wait: wait.to_string(),
                    source_id: call.source_id.clone(),
                    contact_id: match call.contact_match {
                        Some(ContactMatch::Unique) => call.contact_ids.first().cloned().unwrap_or_default(),
                        _ => String::new(),
                    },
                    agent_email: agent.get("email").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    customer_e164: customer.e164.clone().unwrap_or_default(),
                },
            }
        });
        Self {
            id,
            kind: happening.kind.as_str(),
            agent_id: happening.agent_id.clone(),
            groups,
            own_only: happening.kind == Kind::Taken,
            received_at: Some(received_at),
            body,
            pop,
        }
    }

    /// The notification of a status change, numbered `id`.
    pub fn of_status(id: String, status: &AgentStatus, directory: Option<&Directory>) -> Self {
        let (agent, groups) = agent_json(directory, &status.agent_id);
        let mut body = Map::new();
        let _ = body.insert("id".into(), json!(id));
        let _ = body.insert("type".into(), json!("status"));
        let _ = body.insert("at".into(), json!(time(status.changed_at)));
        let _ = body.insert("agent".into(), agent);
        let _ = body.insert("status".into(), json!(status.status.as_str()));
        Self {
            id,
            kind: "status",
            agent_id: status.agent_id.clone(),
            groups,
            own_only: false,
            received_at: None,
            body,
            pop: None,
        }
    }

    /// Whether `session` (of `session_groups`, a supervisor's own groups) receives it.
    pub fn is_for(&self, session: &Session, session_groups: &[String]) -> bool {
        if session.agent_id == self.agent_id {
            return true;
        }
        session.role == Role::Supervisor
            && !self.own_only
            && self.groups.iter().any(|g| session_groups.contains(g))
    }

    /// The JSON text `session` receives: supervisors' copies never pop.
    pub fn render_for(&self, session: &Session) -> String {
        let mut body = self.body.clone();
        let pop = self.pop.as_ref().filter(|_| session.agent_id == self.agent_id).map(|pop| {
            let v = &pop.values;
            let url = pop.setting.template.render(|var| match var {
                Var::IdSession => session.id.clone(),
                Var::E164In => v.e164_in.clone(),
                Var::IdCall => v.id_call.clone(),
                Var::CallerIdNum => v.caller_id_num.clone(),
                Var::Action => v.action.to_owned(),
                Var::IdOp => v.id_op.clone(),
                Var::IdGroup => v.id_group.clone(),
                Var::Wait => v.wait.clone(),
                Var::SourceId => v.source_id.clone(),
                Var::ContactId => v.contact_id.clone(),
                Var::AgentEmail => v.agent_email.clone(),
                Var::CustomerE164 => v.customer_e164.clone(),
            });
            json!({"url": url, "mode": pop.setting.mode, "on": pop.setting.on})
        });
        if self.kind != "status" {
            let _ = body.insert("screen_pop".into(), pop.unwrap_or(Value::Null));
        }
        Value::Object(body).to_string()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::screen_pop::UrlTemplate;
    use crate::track::CallView;

    fn session(id: &str, agent: &str, role: Role) -> Session {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).single().expect("time");
        Session { id: id.into(), agent_id: agent.into(), role, created_at: at, expires_at: at }
    }

    fn happening(kind: Kind) -> Happening {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).single().expect("time");
        Happening {
            kind,
            agent_id: "ann".into(),
            call: CallView {
                source_id: "pbx".into(),
                call_id: "c1".into(),
                direction: Direction::Inbound,
                from: Number { raw: Some("89161234567".into()), e164: Some("+79161234567".into()) },
                to: Number { raw: Some("4951234567".into()), e164: Some("+74951234567".into()) },
                started_at: at,
                answered_by: None,
                contact_match: Some(ContactMatch::Unique),
                contact_ids: vec!["bob".into()],
            },
        }
    }

    #[test]
    fn the_pop_is_rendered_per_session_and_only_for_the_agent() {
        let pop = ScreenPop {
            template: UrlTemplate::parse(
                "https://crm/pop?n={caller_id_num}&s={id_session}&a={action}&w={wait}",
            )
            .expect("valid"),
            mode: Mode::Open,
            on: PopOn::Ringing,
        };
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 3).single().expect("time");
        let n = Notification::of_call("m0-1-0".into(), &happening(Kind::Incoming), None, Some(&pop), at, at);
        let ann = session("ds_a", "ann", Role::Agent);
        let text: Value = serde_json::from_str(&n.render_for(&ann)).expect("json");
        assert_eq!(text["screen_pop"]["url"], "https://crm/pop?n=79161234567&s=ds_a&a=in&w=3");
        assert_eq!(text["screen_pop"]["mode"], "open");
        assert_eq!(text["call"]["customer"]["e164"], "+79161234567");
        assert_eq!(text["contact"]["match"], "unique");
        let sup = session("ds_s", "sue", Role::Supervisor);
        assert!(n.is_for(&ann, &[]));
        assert!(!n.is_for(&sup, &["sales".into()]), "ann has no groups in an empty directory");
        let copy: Value = serde_json::from_str(&n.render_for(&sup)).expect("json");
        assert_eq!(copy["screen_pop"], Value::Null);
        // Answered does not pop when the setting pops on ringing.
        let answered =
            Notification::of_call("m0-2-0".into(), &happening(Kind::Answered), None, Some(&pop), at, at);
        let text: Value = serde_json::from_str(&answered.render_for(&ann)).expect("json");
        assert_eq!(text["screen_pop"], Value::Null);
    }

    #[test]
    fn taken_stays_with_the_agent() {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 3).single().expect("time");
        let mut n = Notification::of_call("m0-1-1".into(), &happening(Kind::Taken), None, None, at, at);
        n.groups = vec!["sales".into()];
        assert!(!n.is_for(&session("ds_s", "sue", Role::Supervisor), &["sales".into()]));
        let mut missed = Notification::of_call("m0-1-2".into(), &happening(Kind::Missed), None, None, at, at);
        missed.groups = vec!["sales".into()];
        assert!(missed.is_for(&session("ds_s", "sue", Role::Supervisor), &["sales".into()]));
        assert!(!missed.is_for(&session("ds_t", "tom", Role::Agent), &["sales".into()]));
    }
}
