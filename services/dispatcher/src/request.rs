//! A step rendered into the exact HTTP request to send: method, URL with its parameters, headers
//! and body, optionally signed per Standard Webhooks.

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

use crate::profile::{Param, ParamValue, Step};
use crate::signature::{self, SignatureError, SigningSecret};
use crate::template::{self, Dialect, StepValues};
use crate::values::CallValues;

/// Larger bodies are refused: Standard Webhooks asks for payloads well under 20 kB, and no CRM
/// call log comes near this.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct RenderedRequest {
    pub method: Method,
    pub uri: Uri,
    /// The URL as it may be shown or logged: a secret in its path (`url_secret`) as `***`.
    pub shown_url: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why a step could not be rendered for this call (the profile itself was valid when saved).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{field}: {source}")]
    Template {
        field: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("json_body is not valid JSON: {source}; it rendered as {rendered:?}")]
    InvalidJson {
        rendered: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("header {name}: the value is not a valid header value")]
    HeaderValue {
        name: String,
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    #[error("header {name}: invalid name")]
    HeaderName {
        name: String,
        #[source]
        source: http::header::InvalidHeaderName,
    },
    #[error("the URL with its parameters is not a valid URI")]
    Uri(#[source] http::uri::InvalidUri),
    #[error("the body is {0} bytes, more than {MAX_BODY_BYTES}")]
    TooLarge(usize),
    #[error("{0}")]
    UnknownValue(String),
}

impl RenderedRequest {
    /// Adds the Standard Webhooks headers: `id` stays the same on every attempt of a delivery (it
    /// is the receiver's idempotency key), `timestamp` is the attempt's (unix seconds).
    pub fn sign(
        &mut self,
        id: &str,
        timestamp: i64,
        secrets: &[SigningSecret],
    ) -> Result<(), SignatureError> {
        let headers = signature::sign(id, timestamp, &self.body, secrets)?;
        for (name, value) in headers.pairs() {
            let value = HeaderValue::from_str(&value).map_err(|_| SignatureError::MessageId)?;
            self.headers.insert(HeaderName::from_static(name), value);
        }
        Ok(())
    }

    /// The path and query, as a CRM's documentation writes a request.
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    pub fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("")
    }
}

/// Renders `step` for the call `values` describe, with the earlier steps' values as `steps`.
pub fn render_step(
    step: &Step,
    values: &CallValues,
    steps: &StepValues,
) -> Result<RenderedRequest, RenderError> {
    let request = &step.request;
    let (mut url, mut shown_url) = (request.url_with_secret(), request.url_shown());
    let query = render_params("url_params", &request.url_params, values, steps)?;
    if !query.is_empty() {
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        encoded.extend_pairs(&query);
        let query = encoded.finish();
        for url in [&mut url, &mut shown_url] {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query);
        }
    }
    let uri: Uri = url.parse().map_err(RenderError::Uri)?;

    let mut headers = HeaderMap::new();
    let rendered = render_params("headers", &request.headers, values, steps)?;
    for (param, (name, value)) in request.headers.iter().zip(rendered) {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|source| RenderError::HeaderName { name: name.clone(), source })?;
        let mut value =
            HeaderValue::from_str(&value).map_err(|source| RenderError::HeaderValue { name, source })?;
        // A token must not reach a log line through `Debug` (HTTP clients honour the flag too).
        value.set_sensitive(
            matches!(param.value, ParamValue::Secret(_)) || header == http::header::AUTHORIZATION,
        );
        headers.append(header, value);
    }

    let (body, content_type) = if let Some(source) = &request.json_body {
        let rendered = template::render(source, Dialect::Json, values, steps)
            .map_err(|source| RenderError::Template { field: "json_body".into(), source })?;
        let rendered = rendered.trim().to_owned();
        if let Err(source) = serde_json::from_str::<serde::de::IgnoredAny>(&rendered) {
            return Err(RenderError::InvalidJson { rendered, source });
        }
        (rendered.into_bytes(), Some("application/json"))
    } else if !request.form_params.is_empty() {
        let form = render_params("form_params", &request.form_params, values, steps)?;
        let mut encoded = form_urlencoded::Serializer::new(String::new());
        encoded.extend_pairs(&form);
        (encoded.finish().into_bytes(), Some("application/x-www-form-urlencoded"))
    } else {
        (Vec::new(), None)
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(RenderError::TooLarge(body.len()));
    }
    if let Some(content_type) = content_type
        && !headers.contains_key(CONTENT_TYPE)
    {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    Ok(RenderedRequest { method: request.method.as_http(), uri, shown_url, headers, body })
}

fn render_params(
    field: &str,
    params: &[Param],
    values: &CallValues,
    steps: &StepValues,
) -> Result<Vec<(String, String)>, RenderError> {
    params
        .iter()
        .map(|param| {
            let text = match &param.value {
                ParamValue::Text(text) => text.clone(),
                ParamValue::Secret(secret) => secret.expose().to_owned(),
                ParamValue::Value(name) => template::value_text(values, name).ok_or_else(|| {
                    RenderError::UnknownValue(format!("{field}.{}: unknown value {name:?}", param.name))
                })?,
                ParamValue::Template(source) => {
                    template::render(source, Dialect::Text, values, steps).map_err(|source| {
                        RenderError::Template { field: format!("{field}.{}", param.name), source }
                    })?
                }
            };
            Ok((param.name.clone(), text))
        })
        .collect()
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
