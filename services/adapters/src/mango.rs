//! PLACEHOLDER: this adapter is being written; until then it refuses every request.

use switchboard_model::{CallEvent, RawWebhook};

use crate::{Adapter, AdapterError, Rejection, Request};

#[derive(Debug)]
pub struct Mango;

impl Adapter for Mango {
    fn check(&self, _request: &Request<'_>) -> Result<Option<String>, Rejection> {
        Err(Rejection::Malformed("the mango adapter is not written yet".into()))
    }

    fn normalize(&self, _raw: &RawWebhook) -> Result<Vec<CallEvent>, AdapterError> {
        Err(AdapterError::new("the mango adapter is not written yet"))
    }
}
