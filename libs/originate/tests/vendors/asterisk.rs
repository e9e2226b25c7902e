//! Asterisk's manager interface, faked on loopback TCP: login, `Originate`, `Hangup`, logoff.

use std::collections::HashSet;
use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};

use switchboard_model::{Secret, SourceSettings};
use switchboard_originate::{HangUpRequest, OriginateError, Vendor, VendorSettings, hang_up, originate};

use crate::common::{
    AMI_SECRET, AMI_USER, AmiHandler, AmiPacket, FakeAmi, get, quick_transport, reply, request, transport,
};

/// Asterisk: `Originate` needs `Channel` and an existing `Context`/`Exten`/`Priority`; it is
/// queued (`Async: true`) and answered at once, after an unrelated event; `Hangup` finds a
/// channel by name or unique id.
fn asterisk(channels: Arc<Mutex<HashSet<String>>>) -> AmiHandler {
    Arc::new(move |packet: &AmiPacket| {
        let id = get(packet, "ActionID").unwrap_or_default().to_owned();
        let event =
            reply(&[("Event", "FullyBooted"), ("Privilege", "system,all"), ("Status", "Fully Booted")]);
        match get(packet, "Action") {
            Some("Originate") => {
                let complete =
                    ["Channel", "Exten", "Priority", "CallerID"].iter().all(|k| get(packet, k).is_some())
                        && get(packet, "Async") == Some("true");
                if !complete || get(packet, "Context") != Some("from-internal") {
                    return Some(vec![reply(&[
                        ("Response", "Error"),
                        ("ActionID", &id),
                        ("Message", "Extension does not exist."),
                    ])]);
                }
                if let Some(unique) = get(packet, "ChannelId") {
                    channels.lock().expect("channels").insert(unique.to_owned());
                }
                let queued = reply(&[
                    ("Response", "Success"),
                    ("ActionID", &id),
                    ("Message", "Originate successfully queued"),
                ]);
                Some(vec![event, queued])
            }
            Some("Hangup") => {
                let known =
                    get(packet, "Channel").is_some_and(|c| channels.lock().expect("channels").remove(c));
                let (response, message) =
                    if known { ("Success", "Channel Hungup") } else { ("Error", "No such channel") };
                Some(vec![reply(&[("Response", response), ("ActionID", &id), ("Message", message)])])
            }
            _ => Some(vec![reply(&[
                ("Response", "Error"),
                ("ActionID", &id),
                ("Message", "Invalid/unknown command"),
            ])]),
        }
    })
}

fn settings(ami: &FakeAmi) -> VendorSettings {
    VendorSettings {
        stored: SourceSettings {
            ami_host: Some("127.0.0.1".into()),
            ami_port: Some(ami.addr.port()),
            ami_username: Some(AMI_USER.into()),
            ami_secret: Some(Secret::new(AMI_SECRET)),
            originate_context: Some("from-internal".into()),
            ..SourceSettings::default()
        },
        signing_secret: None,
    }
}

fn fields(packet: &AmiPacket) -> Vec<(&str, &str)> {
    packet.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test]
async fn logs_in_and_originates_as_documented() {
    let ami = FakeAmi::start(asterisk(Arc::default())).await;
    let mut request = request();
    request.caller_id = Some("+442071838750".into());
    let placed = originate(Vendor::Asterisk, &settings(&ami), &request, &transport()).await.expect("placed");
    assert_eq!(placed.vendor_call_id.as_deref(), Some("c2c-0001"), "the channel's Uniqueid");
    assert_eq!(placed.command_id.as_deref(), Some("c2c-0001"));
    assert_eq!(placed.raw["Message"], "Originate successfully queued");

    let packets = ami.wait_packets(3).await;
    assert_eq!(packets.len(), 3, "{packets:#?}");
    assert_eq!(
        fields(&packets[0]),
        [
            ("Action", "Login"),
            ("ActionID", "login-c2c-0001"),
            ("Username", AMI_USER),
            ("Secret", AMI_SECRET),
            ("Events", "off"),
        ]
    );
    assert_eq!(
        fields(&packets[1]),
        [
            ("Action", "Originate"),
            ("ActionID", "c2c-0001"),
            ("Channel", "PJSIP/101"),
            ("Context", "from-internal"),
            ("Exten", "442079460000"),
            ("Priority", "1"),
            ("CallerID", "\"442079460000\" <442079460000>"),
            ("Async", "true"),
            ("ChannelId", "c2c-0001"),
            ("Variable", "SWITCHBOARD_REQUEST_ID=c2c-0001"),
            ("Variable", "SWITCHBOARD_CALLER_ID=+442071838750"),
        ]
    );
    assert_eq!(fields(&packets[2]), [("Action", "Logoff")]);
}

#[tokio::test]
async fn the_channel_template_and_dial_prefix_shape_the_call() {
    let ami = FakeAmi::start(asterisk(Arc::default())).await;
    let mut settings = settings(&ami);
    settings.originate_channel = Some("SIP/{extension}".into());
    settings.dial_prefix = Some("00".into());
    originate(Vendor::Asterisk, &settings, &request(), &transport()).await.expect("placed");
    let originate = &ami.packets()[1];
    assert_eq!(get(originate, "Channel"), Some("SIP/101"));
    assert_eq!(get(originate, "Exten"), Some("00442079460000"));
    assert_eq!(get(originate, "CallerID"), Some("\"00442079460000\" <00442079460000>"));
}

#[tokio::test]
async fn asterisks_error_message_is_the_refusal() {
    let ami = FakeAmi::start(asterisk(Arc::default())).await;
    let mut settings = settings(&ami);
    settings.originate_context = Some("no-such-context".into());
    let error = originate(Vendor::Asterisk, &settings, &request(), &transport()).await.expect_err("refused");
    assert_eq!(error, OriginateError::Refused { status: None, reason: "Extension does not exist.".into() });
}

#[tokio::test]
async fn a_refused_login_sends_nothing_else() {
    let ami = FakeAmi::start(asterisk(Arc::default())).await;
    let mut settings = settings(&ami);
    settings.ami_secret = Some(Secret::new("wrong"));
    let error = originate(Vendor::Asterisk, &settings, &request(), &transport()).await.expect_err("refused");
    assert_eq!(
        error,
        OriginateError::Refused {
            status: None,
            reason: "Asterisk refused the AMI login: Authentication failed".into()
        }
    );
    let packets = ami.packets();
    assert_eq!(packets.len(), 1);
    assert_eq!(get(&packets[0], "Action"), Some("Login"));
}

#[tokio::test]
async fn hangs_up_the_originated_channel_by_its_unique_id() {
    let ami = FakeAmi::start(asterisk(Arc::default())).await;
    let (settings, transport) = (settings(&ami), transport());
    let placed = originate(Vendor::Asterisk, &settings, &request(), &transport).await.expect("placed");
    let hang = HangUpRequest {
        vendor_call_id: placed.vendor_call_id.expect("id"),
        agent: Default::default(),
        request_id: "hup-0001".into(),
    };
    hang_up(Vendor::Asterisk, &settings, &hang, &transport).await.expect("hung up");
    let packets = ami.packets();
    let hangup = packets.iter().find(|p| get(p, "Action") == Some("Hangup")).expect("hangup");
    assert_eq!(fields(hangup), [("Action", "Hangup"), ("ActionID", "hup-0001"), ("Channel", "c2c-0001")]);

    let error = hang_up(Vendor::Asterisk, &settings, &hang, &transport).await.expect_err("gone");
    assert_eq!(error, OriginateError::Refused { status: None, reason: "No such channel".into() });
    let regex = HangUpRequest { vendor_call_id: "/.*/".into(), ..hang };
    let error = hang_up(Vendor::Asterisk, &settings, &regex, &transport).await.expect_err("regex");
    assert!(matches!(error, OriginateError::Invalid(_)), "{error:?}");
}

#[tokio::test]
async fn no_manager_listening_is_unavailable() {
    let port = StdListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let settings = VendorSettings {
        stored: SourceSettings {
            ami_host: Some("127.0.0.1".into()),
            ami_port: Some(port),
            ami_username: Some(AMI_USER.into()),
            ami_secret: Some(Secret::new(AMI_SECRET)),
            originate_context: Some("from-internal".into()),
            ..SourceSettings::default()
        },
        signing_secret: None,
    };
    let error = originate(Vendor::Asterisk, &settings, &request(), &transport()).await.expect_err("down");
    assert!(matches!(&error, OriginateError::Unavailable(t) if t.contains("AMI")), "{error:?}");
}

#[tokio::test]
async fn a_silent_manager_is_unavailable_in_time() {
    let silent: AmiHandler = Arc::new(|_| None);
    let ami = FakeAmi::start(silent).await;
    let error = originate(Vendor::Asterisk, &settings(&ami), &request(), &quick_transport())
        .await
        .expect_err("silent");
    assert!(matches!(&error, OriginateError::Unavailable(t) if t.contains("no answer")), "{error:?}");
    assert_eq!(ami.packets().iter().filter(|p| get(p, "Action") == Some("Originate")).count(), 1);
}

#[tokio::test]
async fn values_cannot_inject_ami_lines() {
    let ami = FakeAmi::start(asterisk(Arc::default())).await;
    let mut request = request();
    request.agent.extension = Some("101\r\nAction: Hangup\r\nChannel: /.*/".into());
    let error =
        originate(Vendor::Asterisk, &settings(&ami), &request, &transport()).await.expect_err("invalid");
    assert!(matches!(error, OriginateError::Invalid(_)), "{error:?}");
    let mut settings = settings(&ami);
    settings.originate_context = Some("from-internal\r\nAction: Hangup".into());
    let error = originate(Vendor::Asterisk, &settings, &self::request(), &transport())
        .await
        .expect_err("unconfigured");
    assert!(matches!(error, OriginateError::NotConfigured(_)), "{error:?}");
    assert_eq!(ami.connections(), 0, "nothing was sent");
}
