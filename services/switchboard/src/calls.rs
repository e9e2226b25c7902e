//! `switchboard call`, `hangup` and `disposition`: click-to-call and a call's wrap-up through the
//! desk's HTTP API (docs/desk.md), as a CRM back end uses it:
//!
//! - `call` → `POST /v1/desk/originate` with an `Idempotency-Key` (the one given, else a new one,
//!   printed so that a retry can repeat it: the desk places one call per key);
//! - `hangup <request_id>` → `POST /v1/desk/originate/{request_id}/hangup`;
//! - `disposition set` → `PUT /v1/desk/calls/{source_id}/{call_id}/disposition`, and
//!   `disposition codes` → `GET /v1/desk/sources/{source_id}/dispositions` (the codes its agents
//!   choose from: its own list, else the default).
//!
//! The desk is `--desk-url` (default `http://127.0.0.1:8084`, the desk's port); the bearer token
//! is `SWITCHBOARD_API_TOKEN` (one of the desk's `api.tokens`), read from the environment only, so
//! that it never shows in `ps`. The desk's answer is printed as JSON on standard output.
//!
//! Exit codes: 0 the desk answered 2xx; 1 it refused (its error message on standard error);
//! 2 a command line that cannot be sent (no token, an invalid key or URL); 69 no answer from
//! the desk (whether a call was placed is then unknown: retry with the same key).

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand};
use http::{HeaderValue, Method, Request, StatusCode, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};
use switchboard_core::config::{API_TOKEN_VAR, Service};
use switchboard_core::runtime::EXIT_UNAVAILABLE;
use switchboard_recordings::client::HttpClient;
use tokio_util::sync::CancellationToken;

/// Exit code of a command line that cannot be sent, clap's own for usage errors.
const EXIT_USAGE: u8 = 2;
/// Exit code of an answer that is not a 2xx.
const EXIT_REFUSED: u8 = 1;
/// How long the desk may take to answer: a repeated key waits for the first request's vendor,
/// whose own deadline is 10 s.
const TIMEOUT: Duration = Duration::from_secs(60);
/// What a path segment keeps as it is (RFC 3986 unreserved); the desk decodes each segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Where the desk's API is.
#[derive(Debug, Args)]
pub(crate) struct DeskArgs {
    /// The desk's base URL (http or https).
    #[arg(long, value_name = "URL", default_value_t = default_desk_url(), value_parser = parse_desk_url)]
    desk_url: String,
}

fn default_desk_url() -> String {
    format!("http://127.0.0.1:{}", Service::Desk.default_port())
}

/// A base URL: http(s), a host, maybe a path prefix (a proxy's), no query; without its final `/`.
fn parse_desk_url(text: &str) -> Result<String, String> {
    let uri: http::Uri = text.parse().map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?} is not an http:// or https:// URL with a host"));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?}: the desk's URL takes no query"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// `Idempotency-Key` as the desk takes it: 1 to 255 visible ASCII characters.
fn parse_key(text: &str) -> Result<String, String> {
    if (1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(text.to_owned())
    } else {
        Err("an idempotency key is 1 to 255 visible ASCII characters".into())
    }
}

/// Who places the call: exactly one of them.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct AgentArgs {
    /// A directory agent's id.
    #[arg(long, value_name = "AGENT_ID", value_parser = NonEmptyStringValueParser::new())]
    agent_id: Option<String>,
    /// The agent's extension as the PBX knows it.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    extension: Option<String>,
    /// The agent's phone number, in any format (read in the source's region).
    #[arg(long, value_name = "NUMBER", value_parser = NonEmptyStringValueParser::new())]
    agent_number: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The source whose PBX places the call.
    #[arg(long, value_name = "SOURCE_ID", value_parser = NonEmptyStringValueParser::new())]
    source: String,
    #[command(flatten)]
    agent: AgentArgs,
    /// The number to call, in any format (read in the source's region).
    #[arg(long, value_name = "NUMBER", value_parser = NonEmptyStringValueParser::new())]
    to: String,
    /// The number to show to the called party (else the source's `originate_caller_id`).
    #[arg(long, value_name = "NUMBER", value_parser = NonEmptyStringValueParser::new())]
    caller_id: Option<String>,
    /// The request's idempotency key: the same key again gets the first answer and places
    /// nothing. Default: a new key, printed on standard error.
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    desk: DeskArgs,
}

#[derive(Debug, Args)]
pub(crate) struct HangupArgs {
    /// The `request_id` that `switchboard call` printed.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    request_id: String,
    #[command(flatten)]
    desk: DeskArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DispositionAction {
    /// Set a call's disposition (its wrap-up): a code of the source's list, a note, tags.
    Set {
        /// The call's source.
        #[arg(long, value_name = "SOURCE_ID", value_parser = NonEmptyStringValueParser::new())]
        source: String,
        /// The call's id (the call log's `call_id`).
        #[arg(long = "call", value_name = "CALL_ID", value_parser = NonEmptyStringValueParser::new())]
        call: String,
        /// The disposition code.
        #[arg(long, value_parser = NonEmptyStringValueParser::new())]
        code: String,
        /// A free-text note.
        #[arg(long)]
        note: Option<String>,
        /// A tag; repeat for several.
        #[arg(long = "tag", value_name = "TAG", value_parser = NonEmptyStringValueParser::new())]
        tags: Vec<String>,
        #[command(flatten)]
        desk: DeskArgs,
    },
    /// List the disposition codes agents of a source choose from (`*`: the default list).
    Codes {
        #[arg(value_name = "SOURCE_ID|*", value_parser = NonEmptyStringValueParser::new())]
        source: String,
        #[command(flatten)]
        desk: DeskArgs,
    },
}

/// A command for the desk's API.
#[derive(Debug)]
pub(crate) enum DeskCommand {
    Call(CallArgs),
    Hangup(HangupArgs),
    Disposition(DispositionAction),
}

/// One request to the desk.
#[derive(Debug)]
struct Call {
    method: Method,
    url: String,
    body: Option<Value>,
    /// The key sent, for the hint after a failure.
    key: Option<String>,
    /// What 204 prints (the desk's answer has no body then).
    no_content: Value,
}

fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

impl DeskCommand {
    fn request(self) -> Call {
        match self {
            DeskCommand::Call(args) => {
                let key = args.idempotency_key.unwrap_or_else(|| {
                    let key = format!("cli-{}", uuid::Uuid::now_v7().simple());
                    eprintln!(
                        "switchboard: Idempotency-Key {key} (to retry this call: --idempotency-key {key})"
                    );
                    key
                });
                let agent = match (args.agent.agent_id, args.agent.extension, args.agent.agent_number) {
                    (Some(id), _, _) => json!({ "id": id }),
                    (None, Some(extension), _) => json!({ "extension": extension }),
                    (None, None, number) => json!({ "number": number }),
                };
                let mut body = Map::from_iter([
                    ("source_id".to_owned(), json!(args.source)),
                    ("agent".to_owned(), agent),
                    ("destination".to_owned(), json!(args.to)),
                ]);
                if let Some(caller_id) = args.caller_id {
                    body.insert("caller_id".to_owned(), json!(caller_id));
                }
                Call {
                    method: Method::POST,
                    url: format!("{}/v1/desk/originate", args.desk.desk_url),
                    body: Some(Value::Object(body)),
                    key: Some(key),
                    no_content: Value::Null,
                }
            }
            DeskCommand::Hangup(args) => Call {
                method: Method::POST,
                url: format!("{}/v1/desk/originate/{}/hangup", args.desk.desk_url, segment(&args.request_id)),
                body: None,
                key: None,
                no_content: json!({"request_id": args.request_id, "hung_up": true}),
            },
            DeskCommand::Disposition(DispositionAction::Set { source, call, code, note, tags, desk }) => {
                let mut body =
                    Map::from_iter([("code".to_owned(), json!(code)), ("tags".to_owned(), json!(tags))]);
                // The desk takes an absent field, never a null.
                if let Some(note) = note {
                    body.insert("note".to_owned(), json!(note));
                }
                Call {
                    method: Method::PUT,
                    url: format!(
                        "{}/v1/desk/calls/{}/{}/disposition",
                        desk.desk_url,
                        segment(&source),
                        segment(&call)
                    ),
                    body: Some(Value::Object(body)),
                    key: None,
                    no_content: json!({"source_id": source, "call_id": call, "code": code}),
                }
            }
            DeskCommand::Disposition(DispositionAction::Codes { source, desk }) => Call {
                method: Method::GET,
                url: format!("{}/v1/desk/sources/{}/dispositions", desk.desk_url, segment(&source)),
                body: None,
                key: None,
                no_content: Value::Null,
            },
        }
    }
}

/// The `Authorization` header from `SWITCHBOARD_API_TOKEN`, or why there is none.
fn authorization(token: Option<std::ffi::OsString>) -> Result<HeaderValue, String> {
    let missing = format!(
        "{API_TOKEN_VAR} is not set: export it with one of the desk's api.tokens (a token is never \
         taken from the command line, where `ps` would show it)"
    );
    let token = token.ok_or_else(|| missing.clone())?;
    let token = token.to_str().map(str::trim).filter(|t| !t.is_empty()).ok_or(missing)?;
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| format!("{API_TOKEN_VAR} holds characters an HTTP header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The error code and message of a refusal's body (`{"error", "message"}`), as one line.
fn refusal(status: StatusCode, body: Option<&Value>) -> String {
    let field = |name: &str| body.and_then(|b| b[name].as_str()).map(str::to_owned);
    match (field("error"), field("message")) {
        (Some(code), Some(message)) => format!("the desk answered {status}: {code}: {message}"),
        (Some(code), None) => format!("the desk answered {status}: {code}"),
        (None, Some(message)) => format!("the desk answered {status}: {message}"),
        (None, None) => format!("the desk answered {status}"),
    }
}

/// Runs one command against the desk and says how it went.
pub(crate) async fn run(command: DeskCommand, cancel: &CancellationToken) -> ExitCode {
    let authorization = match authorization(std::env::var_os(API_TOKEN_VAR)) {
        Ok(value) => value,
        Err(message) => {
            eprintln!("switchboard: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let call = command.request();
    let mut request = Request::builder()
        .method(call.method.clone())
        .uri(&call.url)
        .header(header::AUTHORIZATION, authorization)
        .header(header::ACCEPT, "application/json");
    if let Some(key) = &call.key {
        request = request.header("idempotency-key", key.as_str());
    }
    let body = match &call.body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            switchboard_core::http::Body::from(body.to_string())
        }
        None => switchboard_core::http::Body::default(),
    };
    let request = match request.body(body) {
        Ok(request) => request,
        Err(error) => {
            eprintln!("switchboard: cannot build the request to {}: {error}", call.url);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let retry =
        call.key.as_deref().map(|key| format!("; retry with --idempotency-key {key}")).unwrap_or_default();
    let client = HttpClient::new();
    let reply = tokio::select! {
        reply = client.call(request, TIMEOUT) => reply,
        () = cancel.cancelled() => {
            eprintln!("switchboard: interrupted before the desk answered{retry}");
            return ExitCode::from(u8::try_from(EXIT_UNAVAILABLE).unwrap_or(1));
        }
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => {
            eprintln!("switchboard: no answer from the desk at {}: {error}{retry}", call.url);
            return ExitCode::from(u8::try_from(EXIT_UNAVAILABLE).unwrap_or(1));
        }
    };
    let body = reply.json();
    if reply.status.is_success() {
        match body {
            Some(body) => println!("{body}"),
            None if reply.status == StatusCode::NO_CONTENT => println!("{}", call.no_content),
            None => println!("{}", reply.snippet()),
        }
        return ExitCode::SUCCESS;
    }
    if let Some(body) = &body {
        println!("{body}");
    }
    let mut message = refusal(reply.status, body.as_ref());
    if body.is_none() && !reply.body.is_empty() {
        message.push_str(&format!(" ({})", reply.snippet()));
    }
    match reply.status {
        StatusCode::UNAUTHORIZED => message.push_str(&format!(" (check {API_TOKEN_VAR})")),
        // The desk's database or the first request's vendor is busy: the same key is safe.
        StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => message.push_str(&retry),
        _ => {}
    }
    eprintln!("switchboard: {message}");
    ExitCode::from(EXIT_REFUSED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        Call(CallArgs),
        Hangup(HangupArgs),
        Disposition {
            #[command(subcommand)]
            action: DispositionAction,
        },
    }

    fn call(args: &[&str]) -> Result<Call, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("switchboard").chain(args.iter().copied()))?;
        Ok(match cli.command {
            Sub::Call(args) => DeskCommand::Call(args),
            Sub::Hangup(args) => DeskCommand::Hangup(args),
            Sub::Disposition { action } => DeskCommand::Disposition(action),
        }
        .request())
    }

    #[test]
    fn calls_become_the_desks_requests() {
        let placed = call(&[
            "call",
            "--source",
            "pbx",
            "--extension",
            "101",
            "--to",
            "020 7946 0000",
            "--idempotency-key",
            "k-1",
        ])
        .expect("valid");
        assert_eq!(
            (placed.method, placed.url.as_str()),
            (Method::POST, "http://127.0.0.1:8084/v1/desk/originate")
        );
        assert_eq!(
            placed.body,
            Some(json!({"source_id": "pbx", "agent": {"extension": "101"}, "destination": "020 7946 0000"}))
        );
        assert_eq!(placed.key.as_deref(), Some("k-1"));
        let generated =
            call(&["call", "--source", "pbx", "--agent-id", "ann", "--to", "1", "--caller-id", "2"])
                .expect("valid");
        assert!(
            generated.key.as_deref().is_some_and(|k| k.starts_with("cli-") && k.len() == 36),
            "{generated:?}"
        );
        assert_eq!(generated.body.as_ref().map(|b| b["caller_id"].clone()), Some(json!("2")));

        let hang_up =
            call(&["hangup", "sbc_1/2", "--desk-url", "https://desk.example.com/base/"]).expect("valid");
        assert_eq!(hang_up.url, "https://desk.example.com/base/v1/desk/originate/sbc_1%2F2/hangup");
        assert_eq!(hang_up.no_content, json!({"request_id": "sbc_1/2", "hung_up": true}));

        let set = call(&[
            "disposition",
            "set",
            "--source",
            "pbx",
            "--call",
            "c 1",
            "--code",
            "sale",
            "--tag",
            "vip",
            "--tag",
            "q4",
        ])
        .expect("valid");
        assert_eq!(
            (set.method, set.url.as_str()),
            (Method::PUT, "http://127.0.0.1:8084/v1/desk/calls/pbx/c%201/disposition")
        );
        assert_eq!(set.body, Some(json!({"code": "sale", "tags": ["vip", "q4"]})), "no note: no field");
        let codes = call(&["disposition", "codes", "*"]).expect("valid");
        assert_eq!(
            (codes.method, codes.url.as_str()),
            (Method::GET, "http://127.0.0.1:8084/v1/desk/sources/%2A/dispositions")
        );
    }

    #[test]
    fn command_lines_that_cannot_be_sent_are_usage_errors() {
        for args in [
            &["call", "--source", "pbx", "--to", "1"][..],
            &["call", "--source", "pbx", "--agent-id", "a", "--extension", "1", "--to", "1"],
            &["call", "--source", "pbx", "--agent-id", "a", "--to", "1", "--idempotency-key", "has space"],
            &["call", "--source", "", "--agent-id", "a", "--to", "1"],
            &["hangup", "x", "--desk-url", "ftp://desk"],
            &["hangup", "x", "--desk-url", "http://desk/?q=1"],
            &["hangup", ""],
            &["disposition", "set", "--source", "pbx", "--call", "c"],
        ] {
            let error = call(args).expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
        assert!(authorization(None).is_err_and(|e| e.contains(API_TOKEN_VAR)));
        assert!(authorization(Some(" ".into())).is_err());
        assert!(authorization(Some("bad\ntoken".into())).is_err());
        let value = authorization(Some("t0ken".into())).expect("token");
        assert!(value.is_sensitive() && value == "Bearer t0ken");
    }

    #[test]
    fn refusals_name_the_desks_error() {
        let body = json!({"error": "vendor_refused", "message": "busy"});
        assert_eq!(
            refusal(StatusCode::UNPROCESSABLE_ENTITY, Some(&body)),
            "the desk answered 422 Unprocessable Entity: vendor_refused: busy"
        );
        assert_eq!(refusal(StatusCode::BAD_GATEWAY, None), "the desk answered 502 Bad Gateway");
    }
}
