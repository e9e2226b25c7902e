use super::*;

fn oauth(grant_request: GrantRequest, send_as: Placement) -> OAuth {
    OAuth {
        token_url: "https://oauth.bitrix.info/oauth/token/".into(),
        client_id: "local.6667fc928a50a9.70414732".into(),
        client_secret: Secret::new("ZeKy eYIgy&2Ns"),
        refresh_token: Secret::new("r0"),
        grant_request,
        send_as,
    }
}

fn request(url: &str) -> RenderedRequest {
    RenderedRequest {
        method: Method::POST,
        uri: url.parse().expect("uri"),
        shown_url: url.replace("s3cr3t", "***"),
        headers: HeaderMap::new(),
        body: b"CALL_ID=1".to_vec(),
    }
}

#[test]
fn the_trade_is_a_form_post_by_default_and_a_get_for_bitrix24() {
    let post = refresh_request(&oauth(GrantRequest::PostForm, Placement::Bearer), &Secret::new("r/1"))
        .expect("built");
    assert_eq!(post.method, Method::POST);
    assert_eq!(post.uri.to_string(), "https://oauth.bitrix.info/oauth/token/");
    assert_eq!(post.headers[CONTENT_TYPE], "application/x-www-form-urlencoded");
    let form: Vec<(String, String)> = form_urlencoded::parse(&post.body).into_owned().collect();
    let expected = [
        ("grant_type", "refresh_token"),
        ("client_id", "local.6667fc928a50a9.70414732"),
        ("client_secret", "ZeKy eYIgy&2Ns"),
        ("refresh_token", "r/1"),
    ];
    assert_eq!(form, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));

    let get = refresh_request(&oauth(GrantRequest::GetQuery, Placement::Bearer), &Secret::new("r/1"))
        .expect("built");
    assert_eq!(get.method, Method::GET);
    assert!(get.body.is_empty());
    let query: Vec<(String, String)> =
        form_urlencoded::parse(get.uri.query().expect("query").as_bytes()).into_owned().collect();
    assert_eq!(query, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
    assert_eq!(get.shown_url, "https://oauth.bitrix.info/oauth/token/", "no secret in what is shown");
}

#[test]
fn grants_and_refusals_are_read_as_rfc_6749_writes_them() {
    let grant = read_grant(
        200,
        br#"{"access_token":"a1","expires_in":3600,"refresh_token":"r1","client_endpoint":"https://x.bitrix24.ru/rest/"}"#,
    )
    .expect("granted");
    assert_eq!(
        grant,
        Grant {
            access_token: Secret::new("a1"),
            refresh_token: Some(Secret::new("r1")),
            expires_in: Some(3600)
        }
    );
    let no_rotation = read_grant(200, br#"{"access_token":"a2","expires_in":"1800"}"#).expect("granted");
    assert_eq!((no_rotation.refresh_token, no_rotation.expires_in), (None, Some(1800)));

    let refused =
        read_grant(400, br#"{"error":"invalid_grant","error_description":"The refresh token is invalid"}"#);
    assert_eq!(
        refused,
        Err(GrantError::Refused {
            error: "invalid_grant".into(),
            description: Some("The refresh token is invalid".into())
        })
    );
    assert_eq!(
        refused.expect_err("refused").to_string(),
        "the token endpoint refused the grant: invalid_grant (The refresh token is invalid)"
    );
    assert_eq!(read_grant(503, b"busy"), Err(GrantError::Unexpected { status: 503 }));
    assert_eq!(read_grant(200, br#"{"access_token":""}"#), Err(GrantError::Unexpected { status: 200 }));
    assert_eq!(read_grant(500, br#"{"error":"server_error"}"#), Err(GrantError::Unexpected { status: 500 }));
}

#[test]
fn a_token_goes_where_the_profile_says_and_is_never_shown() {
    let token = Secret::new("a1 b/2");
    let mut bearer = request("https://crm.example.com/v1/calls");
    apply(&mut bearer, &Placement::Bearer, Some(&token)).expect("applied");
    assert_eq!(bearer.headers[AUTHORIZATION], "Bearer a1 b/2");
    assert!(bearer.headers[AUTHORIZATION].is_sensitive());
    assert!(!format!("{:?}", bearer.headers).contains("a1"), "a sensitive header's Debug hides it");

    let mut param = request("https://acme.bitrix24.ru/rest/s3cr3t/telephony.externalcall.register.json?x=1");
    apply(&mut param, &Placement::UrlParam("auth".into()), Some(&token)).expect("applied");
    assert_eq!(param.uri.query(), Some("x=1&auth=a1+b%2F2"));
    assert_eq!(
        param.shown_url,
        "https://acme.bitrix24.ru/rest/***/telephony.externalcall.register.json?x=1&auth=***"
    );
    assert_eq!(param.body, b"CALL_ID=1", "the body is untouched");

    let mut dry = request("https://acme.bitrix24.ru/rest/telephony.externalcall.register.json");
    apply(&mut dry, &Placement::UrlParam("auth".into()), None).expect("applied");
    assert_eq!(dry.uri.query(), Some("auth=***"), "a dry run trades nothing");
}

#[test]
fn a_refused_token_is_told_from_other_failures() {
    assert!(token_refused(401, b""));
    assert!(token_refused(
        401,
        br#"{"error":"expired_token","error_description":"The access token provided has expired."}"#
    ));
    assert!(token_refused(400, br#"{"error":"invalid_token"}"#));
    assert!(token_refused(
        200,
        br#"{"error":"NO_AUTH_FOUND","error_description":"Wrong authorization data"}"#
    ));
    assert!(!token_refused(400, br#"{"error":"INVALID_ARG_VALUE"}"#));
    assert!(!token_refused(503, br#"{"error":"QUERY_LIMIT_EXCEEDED"}"#));
    assert!(!token_refused(200, br#"{"result":true}"#));
}
