use serde_json::json;

use super::*;

/// Seed 004's example: push a recording link to a web service when a recorded call finishes.
fn chronicall_like() -> serde_json::Value {
    json!({
        "name": "Recording links to the CRM",
        "trigger": "call_record_completed",
        "criteria": [
            {"type": "direction", "any_of": ["inbound", "outbound"]},
            {"type": "has_recording", "value": true}
        ],
        "steps": [{
            "name": "send",
            "request": {
                "method": "POST",
                "url": "https://crm.example.com/api/calls?src=pbx",
                "headers": [{"name": "authorization", "secret": "Bearer s3cret"}],
                "url_params": [
                    {"name": "callid", "value": "call_id"},
                    {"name": "tag", "text": "switchboard"}
                ],
                "form_params": [
                    {"name": "externallistenlink", "value": "recording_url"},
                    {"name": "when", "template": "{{ started_at|datetime_utc }}"}
                ]
            }
        }],
        "retry": {"schedule_seconds": [0, 60, 600]},
        "rate_limit": {"requests": 10, "per_seconds": 1},
        "max_concurrency": 2,
        "state": "paused",
        "signing_secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
    })
}

/// `spec` with the field at `pointer` set (added when missing).
fn with(mut spec: serde_json::Value, pointer: &str, value: serde_json::Value) -> serde_json::Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    match spec.pointer_mut(parent).expect("the parent exists") {
        serde_json::Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        serde_json::Value::Array(list) => list[key.parse::<usize>().expect("an index")] = value,
        other => panic!("{other} holds no fields"),
    }
    spec
}

fn refused(spec: serde_json::Value) -> ProfileError {
    Profile::from_json(&spec.to_string()).expect_err("refused")
}

#[test]
fn a_chronicall_style_profile_reads_and_writes_back() {
    let profile = Profile::from_json(&chronicall_like().to_string()).expect("valid");
    assert_eq!(profile.trigger, Trigger::CallRecordCompleted);
    assert_eq!(profile.state, ProfileState::Paused);
    let disabled = with(chronicall_like(), "/state", json!({"disabled": {"reason": "410 Gone"}}));
    let disabled = Profile::from_json(&disabled.to_string()).expect("valid");
    assert_eq!(disabled.state, ProfileState::Disabled { reason: Some("410 Gone".into()) });
    assert_eq!(profile.signing_keys().len(), 1);
    assert!(!format!("{profile:?}").contains("s3cret"), "secrets stay out of Debug");
    let again = Profile::from_json(&profile.to_json()).expect("round trip");
    assert_eq!(again, profile);
    let from_serde: Profile = serde_json::from_value(chronicall_like()).expect("serde validates too");
    assert_eq!(from_serde, profile);
}

#[test]
fn urls_must_be_absolute_http_with_a_host() {
    for (url, expect) in [
        ("/api/calls", "not absolute"),
        ("ftp://crm.example.com/x", "only http"),
        ("https://user:pw@crm.example.com/x", "credentials"),
        ("https://crm.example.com/{{ agent }}", "literal"),
    ] {
        let err = refused(with(chronicall_like(), "/steps/0/request/url", json!(url)));
        assert!(err.to_string().contains(expect), "{url}: {err}");
    }
    let err = refused(with(chronicall_like(), "/steps/0/request/url", json!("https://exa mple.com/")));
    assert!(matches!(err, ProfileError::UrlSyntax { .. }), "{err}");
}

#[test]
fn a_secret_in_the_url_path_goes_with_its_place_and_stays_in_the_path() {
    let with_secret = |url: &str, secret: serde_json::Value| {
        let spec = with(chronicall_like(), "/steps/0/request/url", json!(url));
        with(spec, "/steps/0/request/url_secret", secret)
    };
    let spec = with_secret("https://crm.example.com/rest/1/{secret}/calls", json!("t0k-en_1.x~"));
    let profile = Profile::from_json(&spec.to_string()).expect("valid");
    let request = &profile.steps[0].request;
    assert_eq!(request.url_with_secret(), "https://crm.example.com/rest/1/t0k-en_1.x~/calls");
    assert_eq!(request.url_shown(), "https://crm.example.com/rest/1/***/calls");
    assert!(!format!("{profile:?}").contains("t0k"), "secrets stay out of Debug");
    assert_eq!(Profile::from_json(&profile.to_json()).expect("round trip"), profile);
    for (url, secret, expect) in [
        ("https://crm.example.com/rest/{secret}/x", json!(null), "no url_secret"),
        ("https://crm.example.com/rest/x", json!("t0k"), "no {secret}"),
        ("https://{secret}.example.com/x", json!("t0k"), "not its host"),
        ("https://crm.example.com/{secret}/{secret}", json!("t0k"), "more than once"),
        ("https://crm.example.com/rest/{secret}/x", json!("a/b"), "A-Z"),
        ("https://crm.example.com/rest/{secret}/x", json!(""), "1 or more"),
    ] {
        let spec = if secret.is_null() {
            with(chronicall_like(), "/steps/0/request/url", json!(url))
        } else {
            with_secret(url, secret)
        };
        let err = refused(spec);
        assert!(err.to_string().contains(expect), "{url}: {err}");
    }
}

#[test]
fn methods_are_checked() {
    let err = refused(with(chronicall_like(), "/steps/0/request/method", json!("FETCH")));
    assert!(matches!(err, ProfileError::Json(_)), "{err}");
    let err = refused(with(chronicall_like(), "/steps/0/request/method", json!("GET")));
    assert!(err.to_string().contains("no body"), "{err}");
}

#[test]
fn template_errors_say_where() {
    let spec =
        with(chronicall_like(), "/steps/0/request/form_params/1/template", json!("a\n  {{ started_at|"));
    let err = refused(spec);
    let text = err.to_string();
    assert!(text.contains("form_params.when") && text.contains("line 2"), "{text}");
    let body = with(chronicall_like(), "/steps/0/request/form_params", json!([]));
    let body = with(body, "/steps/0/request/json_body", json!("{\"a\": {{ nope }}}"));
    assert!(refused(body).to_string().contains("unknown value `nope`"));
}

#[test]
fn parameters_and_headers_are_checked() {
    let err = refused(with(chronicall_like(), "/steps/0/request/url_params/0/value", json!("calid")));
    assert!(matches!(err, ProfileError::UnknownValue { .. }), "{err}");
    let err = refused(with(chronicall_like(), "/steps/0/request/headers/0/name", json!("bad header")));
    assert!(matches!(err, ProfileError::HeaderName { .. }), "{err}");
    let err = refused(with(chronicall_like(), "/steps/0/request/headers/0/name", json!("Webhook-Signature")));
    assert!(matches!(err, ProfileError::ReservedHeader { .. }), "{err}");
    let err = refused(with(chronicall_like(), "/steps/0/request/json_body", json!("{}")));
    assert!(err.to_string().contains("not both"), "{err}");
}

#[test]
fn steps_need_unique_names_and_valid_extracts() {
    let spec = chronicall_like();
    let step = spec["steps"][0].clone();
    let err = refused(with(spec.clone(), "/steps", json!([step.clone(), step.clone()])));
    assert!(matches!(err, ProfileError::StepName(_)), "{err}");
    assert!(matches!(refused(with(spec.clone(), "/steps", json!([]))), ProfileError::NoSteps));
    let mut bad = step.clone();
    bad["extract"] = json!([{"name": "id", "pointer": "result.id"}]);
    assert!(matches!(refused(with(spec, "/steps", json!([bad]))), ProfileError::Extract { .. }));
}

#[test]
fn limits_and_secrets_are_checked() {
    for (pointer, value) in [
        ("/retry/schedule_seconds", json!([])),
        ("/rate_limit/requests", json!(0)),
        ("/max_concurrency", json!(0)),
    ] {
        assert!(
            matches!(refused(with(chronicall_like(), pointer, value)), ProfileError::Limits(_)),
            "{pointer}"
        );
    }
    let err = refused(with(chronicall_like(), "/signing_secrets/0", json!("whsec_c2hvcnQ=")));
    assert!(matches!(err, ProfileError::SigningSecret { index: 0, .. }), "{err}");
    let err = refused(with(chronicall_like(), "/criteria/0/any_of", json!([])));
    assert!(matches!(err, ProfileError::Criterion { index: 0, .. }), "{err}");
    assert!(matches!(refused(with(chronicall_like(), "/name", json!(" "))), ProfileError::Name));
}

#[test]
fn a_parameter_carries_exactly_one_kind_of_value() {
    let one: Param = serde_json::from_str(r#"{"name": "a", "value": "agent"}"#).expect("one kind");
    assert_eq!(one, Param::value("a", "agent"));
    assert_eq!(serde_json::to_value(&one).expect("serialises"), json!({"name": "a", "value": "agent"}));
    for bad in [
        r#"{"name": "a", "text": "x", "value": "agent"}"#,
        r#"{"name": "a"}"#,
        r#"{"name": "a", "txt": "x"}"#,
    ] {
        assert!(serde_json::from_str::<Param>(bad).is_err(), "{bad}");
    }
}

#[test]
fn an_oauth_client_is_checked_when_saved() {
    let oauth = json!({"token_url": "https://oauth.bitrix.info/oauth/token/", "client_id": "local.1",
        "client_secret": "s3", "refresh_token": "r0", "grant_request": "get_query",
        "send_as": {"url_param": "auth"}});
    // The chronicall-like profile sets its own Authorization header: a bearer token would clash.
    let spec = with(chronicall_like(), "/oauth", oauth.clone());
    let profile = Profile::from_json(&spec.to_string()).expect("valid");
    let client = profile.oauth.as_ref().expect("kept");
    assert_eq!(client.send_as, crate::oauth::Placement::UrlParam("auth".into()));
    assert_eq!(client.grant_request, crate::oauth::GrantRequest::GetQuery);
    assert!(!format!("{profile:?}").contains("\"r0\""), "tokens stay out of Debug");
    assert_eq!(Profile::from_json(&profile.to_json()).expect("round trip"), profile);
    let plain = Profile::from_json(&chronicall_like().to_string()).expect("valid");
    assert!(!plain.to_json().contains("oauth"), "no oauth written when there is none");

    let bearer = with(oauth.clone(), "/send_as", json!("bearer"));
    for (spec, expect) in [
        (with(oauth.clone(), "/token_url", json!("oauth.example.com/token")), "token_url"),
        (with(oauth.clone(), "/client_id", json!("")), "client_id"),
        (with(oauth.clone(), "/refresh_token", json!("r\n0")), "refresh_token"),
        (with(oauth.clone(), "/send_as", json!({"url_param": "a b"})), "url_param"),
        (with(oauth.clone(), "/send_as", json!({"url_param": "callid"})), "sets itself"),
        (bearer, "Authorization"),
    ] {
        let err = refused(with(chronicall_like(), "/oauth", spec));
        assert!(
            err.to_string().starts_with("oauth: ") && err.to_string().contains(expect),
            "{expect}: {err}"
        );
    }
    let unknown = with(oauth, "/scope", json!("telephony"));
    assert!(refused(with(chronicall_like(), "/oauth", unknown)).to_string().contains("unknown field"));
}
