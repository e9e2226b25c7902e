#![no_main]
//! The router's lookups (`/v1/route?…`, Telphin's getmanager, Zadarma's `NOTIFY_START`): any
//! parameters, in the query or a POST's form, get an answer in the PBX's format — the agent, the
//! fallback, a blacklisted caller's refusal or Zadarma's echo — never a panic; a JSON answer is
//! JSON, a Telphin answer one `<Response>` element, and an echo only what Zadarma may send.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use switchboard_router::RouterSettings;
use switchboard_core::model::Region;
use switchboard_directory::{Agent, BlacklistEntry, Contact, Directory};
use switchboard_router::lookup::{self, CallerCache, Context, Format, Reply};

static DIRECTORY: LazyLock<Directory> = LazyLock::new(|| {
    let agent = Agent {
        id: "ann".into(),
        name: "Ann <&> \"O'Neil\"".into(),
        email: Some("ann@example.com".into()),
        extensions: vec!["101".into()],
        phone_numbers: vec!["+442071234500".into()],
        external_ids: serde_json::json!({}),
        groups: Vec::new(),
    };
    let contact = |id: &str, number: &str| Contact {
        id: id.into(),
        name: id.into(),
        company: None,
        phone_numbers: vec![number.into()],
        responsible_agent_id: Some("ann".into()),
    };
    let blocked = BlacklistEntry {
        number: "+442079460999".into(),
        reason: Some("robocaller".into()),
        expires_at: None,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
    };
    Directory::new(
        vec![agent],
        vec![
            contact("alice", "+442079460000"),
            contact("twin-1", "+74951234570"),
            contact("twin-2", "+74951234570"),
        ],
        vec!["+442071234567".into()],
        vec![],
    )
    .with_blacklist(vec![blocked], DateTime::<Utc>::UNIX_EPOCH)
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first byte picks the path's format (or none: the `format` parameter decides), the
    // token's verdict and whether the directory has loaded; the rest is the query, and after a
    // `\n`, the form body.
    let Some((&control, rest)) = data.split_first() else { return };
    let (query, form) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (rest.get(..at).unwrap_or_default(), rest.get(at + 1..)),
        None => (rest, None),
    };
    let format =
        [None, Some(Format::Telphin), Some(Format::Zadarma), Some(Format::Json)][usize::from(control % 4)];
    let settings = RouterSettings {
        fallback: if control & 0x10 == 0 { "700".into() } else { String::new() },
        blacklist_target: if control & 0x20 == 0 { String::new() } else { "<msg & \"x\">".into() },
        ..RouterSettings::default()
    };
    let region: Region = "GB".parse().unwrap_or_else(|_| unreachable!("GB is a region"));
    let callers = CallerCache::new(region, 64);
    let context = Context {
        settings: &settings,
        region,
        directory: (control & 0x40 == 0).then_some(&*DIRECTORY),
        callers: &callers,
        now: DateTime::<Utc>::UNIX_EPOCH,
    };
    let params = lookup::params_of(query, form);
    let (format, reply) = lookup::answer(&params, format, control & 0x08 == 0, &context);
    match reply {
        Reply::Echo(echo) => {
            assert_eq!(format, Format::Zadarma);
            assert!(echo.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{echo:?}");
        }
        Reply::Decision(decision) => {
            let (content_type, body) = lookup::render(&decision, format, &settings);
            match format {
                Format::Json | Format::Zadarma => {
                    assert!(content_type.starts_with("application/json"), "{content_type}");
                    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&body);
                    assert!(parsed.is_ok(), "not JSON: {body}");
                }
                Format::Telphin => {
                    assert!(body.starts_with("<Response>") && body.ends_with("</Response>"), "{body}");
                    assert!(!body.contains("<msg"), "a destination not escaped: {body}");
                }
            }
        }
    }
});
