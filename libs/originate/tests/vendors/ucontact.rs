//! uContact's `AgentCall`, `HangupPhone` and `DispositionCall`, faked as documented.

use switchboard_model::{Secret, SourceSettings};
use switchboard_originate::{
    AgentEndpoint, DispositionRequest, HangUpRequest, OriginateError, Vendor, VendorSettings,
    can_set_disposition, hang_up, originate, set_disposition,
};

use crate::common::{Answer, FakeApi, Seen, request, text, transport};

const CALL_PATH: &str = "/Integra/resources/Agents/AgentCall";
const HANGUP_PATH: &str = "/Integra/resources/Agents/HangupPhone";
const GUID: &str = "f4b1c2e0-5a6b-4c7d-8e9f-0a1b2c3d4e5f";

/// uContact: the API key after `Basic`, a form in UTF-8, every field present; `0` when it
/// cannot place the call (here: an agent it does not know).
fn ucontact(seen: &Seen) -> Answer {
    if seen.header("authorization") != Some("Basic QWRtaW46OTgzNWM1MjU=") {
        return text(401, "");
    }
    if seen.method != "POST"
        || seen.header("content-type") != Some("application/x-www-form-urlencoded; charset=UTF-8")
    {
        return text(415, "");
    }
    match seen.path.as_str() {
        CALL_PATH => {
            let names: Vec<String> = seen.form().into_iter().map(|(k, _)| k).collect();
            let all = ["callerid", "agent", "phone", "tech", "context", "outqueue", "destination"];
            if names != all || seen.field("agent").as_deref() != Some("jdoe") {
                return text(200, "0");
            }
            text(200, GUID)
        }
        HANGUP_PATH if seen.field("phone").is_some() => text(200, "1"),
        _ => text(404, "Not Found"),
    }
}

fn settings(api: &FakeApi) -> VendorSettings {
    VendorSettings {
        stored: SourceSettings {
            api_url: Some(api.url()),
            api_client_secret: Some(Secret::new("QWRtaW46OTgzNWM1MjU=")),
            originate_caller_id: Some("59821234567".into()),
            originate_context: Some("agents".into()),
            ucontact_outqueue: Some("Ventas->".into()),
            ..SourceSettings::default()
        },
        signing_secret: None,
    }
}

fn agent() -> AgentEndpoint {
    AgentEndpoint { extension: Some("1001".into()), number: None, vendor_id: Some("jdoe".into()) }
}

#[tokio::test]
async fn places_an_agent_call_as_documented() {
    let api = FakeApi::start(ucontact).await;
    let mut request = request();
    request.agent = agent();
    let placed = originate(Vendor::Ucontact, &settings(&api), &request, &transport()).await.expect("placed");
    assert_eq!(placed.vendor_call_id.as_deref(), Some(GUID));

    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", CALL_PATH));
    assert_eq!(call.header("authorization"), Some("Basic QWRtaW46OTgzNWM1MjU="));
    assert_eq!(call.header("content-type"), Some("application/x-www-form-urlencoded; charset=UTF-8"));
    let expected = [
        ("callerid", "59821234567"),
        ("agent", "jdoe"),
        ("phone", "1001"),
        ("tech", "SIP"),
        ("context", "agents"),
        ("outqueue", "Ventas->"),
        ("destination", "442079460000"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    assert_eq!(call.form(), expected);
    assert!(call.body.contains("outqueue=Ventas-%3E"), "form-encoded: {}", call.body);
}

#[tokio::test]
async fn zero_is_a_refusal() {
    let api = FakeApi::start(ucontact).await;
    let mut request = request();
    request.agent = AgentEndpoint { vendor_id: Some("nobody".into()), ..agent() };
    let error =
        originate(Vendor::Ucontact, &settings(&api), &request, &transport()).await.expect_err("refused");
    assert!(
        matches!(&error, OriginateError::Refused { status: Some(200), reason } if reason.contains("\"0\"")),
        "{error:?}"
    );
    assert_eq!(api.count(CALL_PATH), 1);
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_a_server_error_unavailable() {
    let api = FakeApi::start(ucontact).await;
    let mut settings = settings(&api);
    settings.api_client_secret = Some(Secret::new("bm9wZQ=="));
    let mut request = request();
    request.agent = agent();
    let error = originate(Vendor::Ucontact, &settings, &request, &transport()).await.expect_err("refused");
    assert!(matches!(error, OriginateError::Refused { status: Some(401), .. }), "{error:?}");

    let down = FakeApi::start(|_| text(503, "Service Unavailable")).await;
    let error =
        originate(Vendor::Ucontact, &self::settings(&down), &request, &transport()).await.expect_err("down");
    assert!(matches!(&error, OriginateError::Unavailable(t) if t.contains("503")), "{error:?}");
    assert_eq!(down.count(CALL_PATH), 1);
}

#[tokio::test]
async fn uncounted_campaign_or_unknown_instance_is_not_configured() {
    let api = FakeApi::start(ucontact).await;
    let mut request = request();
    request.agent = agent();
    let mut settings = settings(&api);
    settings.ucontact_outqueue = None;
    let error =
        originate(Vendor::Ucontact, &settings, &request, &transport()).await.expect_err("unconfigured");
    assert!(
        matches!(&error, OriginateError::NotConfigured(t) if t.contains("ucontact_outqueue")),
        "{error:?}"
    );
    let mut settings = self::settings(&api);
    settings.api_url = None;
    let error =
        originate(Vendor::Ucontact, &settings, &request, &transport()).await.expect_err("unconfigured");
    assert!(matches!(&error, OriginateError::NotConfigured(t) if t.contains("api_url")), "{error:?}");
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn hangs_up_the_agents_phone() {
    let api = FakeApi::start(ucontact).await;
    let request = HangUpRequest { vendor_call_id: GUID.into(), agent: agent(), request_id: "hup-1".into() };
    hang_up(Vendor::Ucontact, &settings(&api), &request, &transport()).await.expect("hung up");
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", HANGUP_PATH));
    assert_eq!(seen[0].header("authorization"), Some("Basic QWRtaW46OTgzNWM1MjU="));
    assert_eq!(seen[0].form(), vec![("phone".to_owned(), "1001".to_owned())]);

    let refusing = FakeApi::start(|_| text(200, "0")).await;
    let error = hang_up(Vendor::Ucontact, &settings(&refusing), &request, &transport()).await.expect_err("0");
    assert!(matches!(error, OriginateError::Refused { .. }), "{error:?}");
}

const DISPOSITION_PATH: &str = "/Integra/resources/api/DispositionCall";

/// uContact's `DispositionCall`, as Clever Ideas' reference documents it: every field present
/// (the unused ones empty), `l1` and the interaction required; `0` for an interaction it does
/// not know.
fn ucontact_dispositions(seen: &Seen) -> Answer {
    if seen.header("authorization") != Some("Basic QWRtaW46OTgzNWM1MjU=") {
        return text(401, "");
    }
    if seen.method != "POST" || seen.path != DISPOSITION_PATH {
        return text(404, "Not Found");
    }
    let names: Vec<String> = seen.form().into_iter().map(|(k, _)| k).collect();
    let all = [
        "campaign",
        "agent",
        "callerid",
        "guid",
        "l1",
        "l2",
        "l3",
        "d1",
        "d2",
        "comment",
        "schedule",
        "camptoreschedule",
        "tag",
    ];
    if names != all || seen.field("l1").is_none_or(|l1| l1.is_empty()) {
        return text(400, "missing parameters");
    }
    if seen.field("guid").as_deref() != Some(GUID) {
        return text(200, "0");
    }
    text(200, "")
}

fn disposition() -> DispositionRequest {
    DispositionRequest {
        vendor_call_id: GUID.into(),
        agent: agent(),
        campaign: Some("Ventas<-".into()),
        customer: Some("29153456".into()),
        disposition: "Venta".into(),
        note: Some("Plan hogar & fibra = 2 líneas".into()),
        tags: vec!["vip".into(), "renovación".into()],
    }
}

#[tokio::test]
async fn files_a_disposition_as_documented() {
    let api = FakeApi::start(ucontact_dispositions).await;
    set_disposition(Vendor::Ucontact, &settings(&api), &disposition(), &transport()).await.expect("filed");
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", DISPOSITION_PATH));
    assert_eq!(seen[0].header("content-type"), Some("application/x-www-form-urlencoded; charset=UTF-8"));
    let expected = [
        ("campaign", "Ventas<-"),
        ("agent", "jdoe"),
        ("callerid", "29153456"),
        ("guid", GUID),
        ("l1", "Venta"),
        ("l2", ""),
        ("l3", ""),
        ("d1", ""),
        ("d2", ""),
        ("comment", "Plan hogar & fibra = 2 líneas"),
        ("schedule", ""),
        ("camptoreschedule", ""),
        ("tag", "vip,renovación"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    assert_eq!(seen[0].form(), expected);
    assert!(seen[0].body.contains("campaign=Ventas%3C-"), "form-encoded: {}", seen[0].body);
    assert!(seen[0].body.contains("comment=Plan+hogar+%26+fibra+%3D+2+l%C3%ADneas"), "{}", seen[0].body);
}

#[tokio::test]
async fn a_disposition_ucontact_refuses_or_cannot_take_is_an_error_and_not_retried() {
    let api = FakeApi::start(ucontact_dispositions).await;
    let unknown = DispositionRequest { vendor_call_id: "no-such-interaction".into(), ..disposition() };
    let error =
        set_disposition(Vendor::Ucontact, &settings(&api), &unknown, &transport()).await.expect_err("0");
    assert!(
        matches!(&error, OriginateError::Refused { reason, .. } if reason.contains("\"0\"")),
        "{error:?}"
    );

    let no_campaign = DispositionRequest { campaign: None, ..disposition() };
    let error = set_disposition(Vendor::Ucontact, &settings(&api), &no_campaign, &transport())
        .await
        .expect_err("invalid");
    assert!(matches!(&error, OriginateError::Invalid(t) if t.contains("campaign")), "{error:?}");
    assert_eq!(api.count(DISPOSITION_PATH), 1, "nothing sent without a campaign");

    let down = FakeApi::start(|_| text(500, "Internal Server Error")).await;
    let error = set_disposition(Vendor::Ucontact, &settings(&down), &disposition(), &transport())
        .await
        .expect_err("down");
    assert!(matches!(&error, OriginateError::Unavailable(t) if t.contains("500")), "{error:?}");
    assert_eq!(down.count(DISPOSITION_PATH), 1, "no retry");

    let error = set_disposition(Vendor::Twilio, &settings(&api), &disposition(), &transport())
        .await
        .expect_err("unsupported");
    assert!(matches!(error, OriginateError::Unsupported(_)), "{error:?}");
    assert!(can_set_disposition(Vendor::Ucontact) && !can_set_disposition(Vendor::Twilio));

    let control = DispositionRequest { note: Some("a\u{1b}[2J".into()), ..disposition() };
    let error = set_disposition(Vendor::Ucontact, &settings(&api), &control, &transport())
        .await
        .expect_err("invalid");
    assert!(matches!(error, OriginateError::Invalid(_)), "{error:?}");
}
