//! The HTTP handlers of dispositions and tags (`wrap_up`): the code lists (API token to change,
//! either token to read) and a call's wrap-up (an API token, or the session of an agent who was on
//! the call, or a supervisor's).

use crate::metrics;
use ::http::StatusCode;
use hyper::Request;
use hyper::body::Incoming;
use serde_json::json;

use crate::api::{Answer, Api, error, json, no_content, read_json, sessions_id_invalid, unavailable};
use crate::sessions::Session;
use crate::wrap_up::{self, CodeList, WrapUpInput};

fn bad_source(source: &str) -> Option<Answer> {
    (source != "*" && sessions_id_invalid(source)).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the source id is not a valid id (or * for the default)",
        )
    })
}

impl Api {
    /// `GET /v1/desk/dispositions/{source_id}`: the source's own list, 404 when it has none.
    pub(crate) async fn get_codes(&self, source: &str) -> Answer {
        if let Some(refused) = bad_source(source) {
            return refused;
        }
        match wrap_up::own_codes(&self.desk, source).await {
            Ok(Some(codes)) => {
                json(StatusCode::OK, &json!({"source_id": source, "inherited": false, "codes": codes}))
            }
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "that source has no disposition codes of its own (GET /v1/desk/sources/{source_id}/dispositions: the ones its agents choose from)",
            ),
            Err(e) => unavailable(&e),
        }
    }

    /// `GET /v1/desk/sources/{source_id}/dispositions`: what the source's agents choose from (its
    /// own list, else the default). A read-only view, kept apart from the list resource so that a
    /// deleted list is gone (404) where it was stored.
    pub(crate) async fn effective_codes(&self, source: &str) -> Answer {
        if let Some(refused) = bad_source(source) {
            return refused;
        }
        match wrap_up::codes(&self.desk, source).await {
            Ok((codes, inherited)) => {
                json(StatusCode::OK, &json!({"source_id": source, "inherited": inherited, "codes": codes}))
            }
            Err(e) => unavailable(&e),
        }
    }

    pub(crate) async fn put_codes(&self, source: &str, req: Request<Incoming>) -> Answer {
        if let Some(refused) = bad_source(source) {
            return refused;
        }
        let list: CodeList = match read_json(req).await {
            Ok(list) => list,
            Err(refused) => return refused,
        };
        if let Err(reason) = wrap_up::check_codes(&list) {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_codes", reason);
        }
        match wrap_up::replace_codes(&self.desk, source, &list).await {
            Ok(()) => self.get_codes(source).await,
            Err(e) => unavailable(&e),
        }
    }

    pub(crate) async fn delete_codes(&self, source: &str) -> Answer {
        match wrap_up::delete_codes(&self.desk, source).await {
            Ok(true) => no_content(),
            Ok(false) => {
                error(StatusCode::NOT_FOUND, "not_found", "no disposition codes of that source's own")
            }
            Err(e) => unavailable(&e),
        }
    }

    pub(crate) async fn put_wrap_up(
        &self,
        session: Option<Session>,
        source: &str,
        call: &str,
        req: Request<Incoming>,
    ) -> Answer {
        let input: WrapUpInput = match read_json(req).await {
            Ok(input) => input,
            Err(refused) => {
                metrics::DESK_WRAP_UPS.with_label_values(&["refused"]).inc();
                return refused;
            }
        };
        match wrap_up::set(&self.desk, session.as_ref(), source, call, input).await {
            Ok((status, body)) => {
                let result = if status.is_success() { "set" } else { "refused" };
                metrics::DESK_WRAP_UPS.with_label_values(&[result]).inc();
                json(status, &body)
            }
            Err(e) => unavailable(&e),
        }
    }
}
