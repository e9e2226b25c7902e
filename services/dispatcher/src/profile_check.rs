//! The checks [`Profile::new`](crate::profile::Profile::new) runs, one function per part.

use std::collections::{BTreeMap, BTreeSet};

use http::header::HeaderName;
use http::uri::{Scheme, Uri};

use crate::oauth::{OAuth, Placement};
use crate::profile::{
    HttpMethod, Param, ParamValue, ProfileError, ProfileSpec, Step, URL_SECRET, check_template, known_value,
};
use crate::signature::SigningSecret;
use crate::template::Dialect;

/// Headers the dispatcher writes itself: the signature and body framing must match what is sent.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

pub(crate) fn validate(spec: &ProfileSpec) -> Result<(), ProfileError> {
    let name = spec.name.trim();
    if name.is_empty() || spec.name.chars().count() > 200 || spec.name.chars().any(char::is_control) {
        return Err(ProfileError::Name);
    }
    if spec.steps.is_empty() {
        return Err(ProfileError::NoSteps);
    }
    // What each step extracts, for the later steps' `steps.<name>.<value>`.
    let mut earlier: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for step in &spec.steps {
        let valid_name = !step.name.is_empty()
            && step.name.len() <= 64
            && step.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name || earlier.contains_key(&step.name) {
            return Err(ProfileError::StepName(step.name.clone()));
        }
        check_step(step, &earlier)?;
        earlier.insert(step.name.clone(), step.extract.iter().map(|e| e.name.clone()).collect());
    }
    for (index, criterion) in spec.criteria.iter().enumerate() {
        if let Some(reason) = criterion.problem() {
            return Err(ProfileError::Criterion { index, reason });
        }
    }
    if let Some(retry) = &spec.retry {
        retry.check().map_err(ProfileError::Limits)?;
    }
    if spec.rate_limit.is_some_and(|r| r.requests == 0 || r.per_seconds == 0) {
        return Err(ProfileError::Limits("a rate limit needs at least one request per at least one second"));
    }
    if spec.max_concurrency == Some(0) {
        return Err(ProfileError::Limits("max_concurrency must be at least 1"));
    }
    for (index, secret) in spec.signing_secrets.iter().enumerate() {
        SigningSecret::parse(secret.expose())
            .map_err(|source| ProfileError::SigningSecret { index, source })?;
    }
    if let Some(oauth) = &spec.oauth {
        check_oauth(oauth, &spec.steps)?;
    }
    Ok(())
}

/// The token endpoint is a URL like a step's; the client and its tokens are printable text; a
/// token sent as a URL parameter does not clash with a step's own parameter.
fn check_oauth(oauth: &OAuth, steps: &[Step]) -> Result<(), ProfileError> {
    if check_url("oauth", &oauth.token_url).is_err() {
        return Err(ProfileError::OAuth(
            "token_url is an absolute http(s) URL with a host and no credentials",
        ));
    }
    let printable =
        |text: &str| (1..=2048).contains(&text.chars().count()) && !text.chars().any(char::is_control);
    if !printable(&oauth.client_id) {
        return Err(ProfileError::OAuth("client_id is 1 to 2048 printable characters"));
    }
    if !printable(oauth.client_secret.expose()) || !printable(oauth.refresh_token.expose()) {
        return Err(ProfileError::OAuth(
            "client_secret and refresh_token are 1 to 2048 printable characters",
        ));
    }
    if let Placement::UrlParam(name) = &oauth.send_as {
        let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if name.is_empty() || name.len() > 64 || !name.bytes().all(safe) {
            return Err(ProfileError::OAuth(
                "send_as.url_param is 1 to 64 of A-Z, a-z, 0-9, '-', '.', '_' and '~'",
            ));
        }
        if steps.iter().any(|s| s.request.url_params.iter().any(|p| p.name == *name)) {
            return Err(ProfileError::OAuth("send_as.url_param names a parameter a step sets itself"));
        }
    } else if steps
        .iter()
        .any(|s| s.request.headers.iter().any(|h| h.name.eq_ignore_ascii_case("authorization")))
    {
        return Err(ProfileError::OAuth(
            "the access token goes in the Authorization header, which a step sets itself",
        ));
    }
    Ok(())
}

fn check_step(step: &Step, earlier: &BTreeMap<String, BTreeSet<String>>) -> Result<(), ProfileError> {
    let request = &step.request;
    check_url_secret(step)?;
    check_url(&step.name, &request.url_shown())?;
    let has_body = request.json_body.is_some() || !request.form_params.is_empty();
    if request.json_body.is_some() && !request.form_params.is_empty() {
        return Err(request_error(step, "a request has form parameters or a JSON body, not both"));
    }
    if has_body && matches!(request.method, HttpMethod::Get | HttpMethod::Delete) {
        return Err(request_error(step, "GET and DELETE requests carry no body"));
    }
    for header in &request.headers {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|source| {
            ProfileError::HeaderName { step: step.name.clone(), name: header.name.clone(), source }
        })?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(ProfileError::ReservedHeader { step: step.name.clone(), name: header.name.clone() });
        }
    }
    check_params(step, "headers", &request.headers, earlier)?;
    check_params(step, "url_params", &request.url_params, earlier)?;
    check_params(step, "form_params", &request.form_params, earlier)?;
    if let Some(body) = &request.json_body {
        check_template(&step.name, "json_body".into(), body, Dialect::Json, earlier)?;
    }
    let mut names = BTreeSet::new();
    for extract in &step.extract {
        let reason = if extract.name.is_empty()
            || !extract.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            Some("names are letters, digits and '_'")
        } else if !extract.pointer.starts_with('/') {
            Some("the pointer is a JSON pointer, starting with '/'")
        } else if !names.insert(extract.name.as_str()) {
            Some("extracted twice")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ProfileError::Extract {
                step: step.name.clone(),
                name: extract.name.clone(),
                reason,
            });
        }
    }
    Ok(())
}

fn request_error(step: &Step, reason: &'static str) -> ProfileError {
    ProfileError::Request { step: step.name.clone(), reason }
}

/// An absolute http(s) URL with a host and no credentials (they belong in a header, where they
/// are a secret, not in a URL that ends up in logs).
fn check_url(step: &str, url: &str) -> Result<(), ProfileError> {
    let refuse = |reason| ProfileError::Url { step: step.into(), url: url.into(), reason };
    if url.contains(['{', '}']) {
        return Err(refuse("the URL is literal; put call values in url_params"));
    }
    let uri: Uri = url.parse().map_err(|source| ProfileError::UrlSyntax {
        step: step.into(),
        url: url.into(),
        source,
    })?;
    let scheme = uri.scheme().ok_or_else(|| refuse("not absolute (no http:// or https://)"))?;
    if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
        return Err(refuse("only http and https are allowed"));
    }
    let authority = uri.authority().ok_or_else(|| refuse("no host"))?;
    if authority.host().is_empty() {
        return Err(refuse("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(refuse("credentials in a URL; send them in a header"));
    }
    Ok(())
}

/// `url_secret` and its place in the URL go together, the place in the path (a secret must not
/// choose the host), and the secret is made of URL-safe characters, so that it is sent as given.
fn check_url_secret(step: &Step) -> Result<(), ProfileError> {
    let request = &step.request;
    let url = request.url_shown();
    let refuse = |reason| ProfileError::Url { step: step.name.clone(), url: url.clone(), reason };
    let places = request.url.matches(URL_SECRET).count();
    match (&request.url_secret, places) {
        (None, 0) => Ok(()),
        (None, _) => Err(refuse("the URL holds {secret} but the step has no url_secret")),
        (Some(_), 0) => Err(refuse("url_secret is given but the URL has no {secret} in its path")),
        (Some(_), 2..) => Err(refuse("the URL holds {secret} more than once")),
        (Some(secret), _) => {
            let authority_end = request.url.find("://").map_or(0, |at| at.saturating_add("://".len()));
            // Offsets within the URL: the additions cannot overflow.
            let path_start = request
                .url
                .get(authority_end..)
                .and_then(|rest| rest.find('/'))
                .map_or(usize::MAX, |at| at.saturating_add(authority_end));
            if request.url.find(URL_SECRET).is_none_or(|at| at < path_start) {
                return Err(refuse("{secret} belongs in the URL's path, not its host"));
            }
            let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
            if secret.is_empty() || !secret.expose().bytes().all(safe) {
                return Err(refuse("url_secret is 1 or more of A-Z, a-z, 0-9, '-', '.', '_' and '~'"));
            }
            Ok(())
        }
    }
}

fn check_params(
    step: &Step,
    field: &'static str,
    params: &[Param],
    earlier: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), ProfileError> {
    for param in params {
        if param.name.trim().is_empty() {
            return Err(ProfileError::ParamName { step: step.name.clone(), field, name: param.name.clone() });
        }
        match &param.value {
            ParamValue::Text(_) | ParamValue::Secret(_) => {}
            ParamValue::Value(value) if known_value(value) => {}
            ParamValue::Value(value) => {
                return Err(ProfileError::UnknownValue {
                    step: step.name.clone(),
                    field,
                    name: param.name.clone(),
                    value: value.clone(),
                });
            }
            ParamValue::Template(source) => {
                check_template(
                    &step.name,
                    format!("{field}.{}", param.name),
                    source,
                    Dialect::Text,
                    earlier,
                )?;
            }
        }
    }
    Ok(())
}
