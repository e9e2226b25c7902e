//! A profile's steps as a flow: which step is due next, given what has run, and what each step
//! keeps from its response for the later ones. A step can wait for the call's recording (Bitrix24
//! attaches a recording to a call it registered earlier), so a flow can pause between steps; the
//! service stores the [`FlowState`] and asks again when a newer record or event of the call comes.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use switchboard_model::RecordingStatus;

use crate::profile::{Profile, Step};
use crate::template::StepValues;
use crate::values::CallValues;

/// How long a step may wait for its condition before the flow gives it up: recordings that the
/// vendor has not produced in a day are not coming.
pub const DEFAULT_WAIT_LIMIT: Duration = Duration::hours(24);

/// When a step may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepCondition {
    #[default]
    Always,
    /// Once the recording link opens the recording; skipped when the recording failed or the
    /// call reported none.
    RecordingReady,
    /// Once the recording is no longer pending (ready, failed, or none reported): for a CRM
    /// that takes the link only in the request that creates the call log.
    RecordingSettled,
}

/// Whether a condition holds for the call as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Waiting,
    /// It never will: the step is skipped.
    Never,
}

impl StepCondition {
    pub fn readiness(self, values: &CallValues) -> Readiness {
        let status = values.recording_status;
        match self {
            StepCondition::Always => Readiness::Ready,
            StepCondition::RecordingReady if values.has_recording() => Readiness::Ready,
            StepCondition::RecordingReady if status == Some(RecordingStatus::Pending) => Readiness::Waiting,
            StepCondition::RecordingReady => Readiness::Never,
            StepCondition::RecordingSettled if status == Some(RecordingStatus::Pending) => Readiness::Waiting,
            StepCondition::RecordingSettled => Readiness::Ready,
        }
    }
}

/// What a delivery of a flow has done so far: the steps finished (or skipped), in order, and the
/// values they extracted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    pub done: Vec<String>,
    pub extracted: StepValues,
}

/// What to do next for a delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next<'p> {
    /// Render and send this step (with `FlowState::extracted` in scope as `steps`).
    Run(&'p Step),
    /// The next step waits for its condition; ask again when the call changes, or give up at
    /// `until`.
    Wait {
        step: &'p Step,
        until: DateTime<Utc>,
    },
    /// This step can never run: record it as skipped ([`FlowState::skip`]) and ask again.
    Skip(&'p Step),
    Finished,
}

impl FlowState {
    /// The next step of `profile` for the call as `values` describe it now. `started_at` is when
    /// the delivery was scheduled: a step waits at most `wait_limit` from then.
    pub fn next<'p>(
        &self,
        profile: &'p Profile,
        values: &CallValues,
        started_at: DateTime<Utc>,
        now: DateTime<Utc>,
        wait_limit: Duration,
    ) -> Next<'p> {
        let Some(step) = profile.steps.iter().find(|s| !self.done.contains(&s.name)) else {
            return Next::Finished;
        };
        // A limit that runs past the range of chrono's times ends at its edge.
        let edge =
            if wait_limit < Duration::zero() { DateTime::<Utc>::MIN_UTC } else { DateTime::<Utc>::MAX_UTC };
        let until = started_at.checked_add_signed(wait_limit).unwrap_or(edge);
        match step.when.readiness(values) {
            Readiness::Ready => Next::Run(step),
            Readiness::Waiting if now < until => Next::Wait { step, until },
            Readiness::Waiting | Readiness::Never => Next::Skip(step),
        }
    }

    /// Records a successful response of `step`, keeping what it extracts from `body`.
    pub fn complete(&mut self, step: &Step, body: &[u8]) -> Result<(), ExtractError> {
        let values = extract(step, body)?;
        if !values.is_empty() {
            self.extracted.insert(step.name.clone(), values);
        }
        self.done.push(step.name.clone());
        Ok(())
    }

    pub fn skip(&mut self, step: &Step) {
        self.done.push(step.name.clone());
    }
}

/// A 2xx response that lacks what a later step needs: the CRM did not do what the step asked, so
/// the attempt counts as failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("step {step:?}: the response is not JSON")]
    NotJson {
        step: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("step {step:?}: the response has no {pointer} (for {name:?})")]
    Missing { step: String, name: String, pointer: String },
}

/// The values `step` keeps from a JSON response: strings as they are, numbers and booleans as
/// their JSON text.
pub fn extract(step: &Step, body: &[u8]) -> Result<BTreeMap<String, String>, ExtractError> {
    if step.extract.is_empty() {
        return Ok(BTreeMap::new());
    }
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|source| ExtractError::NotJson { step: step.name.clone(), source })?;
    step.extract
        .iter()
        .map(|e| {
            let text = match json.pointer(&e.pointer) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Some(v.to_string()),
                _ => None,
            };
            text.map(|t| (e.name.clone(), t)).ok_or_else(|| ExtractError::Missing {
                step: step.name.clone(),
                name: e.name.clone(),
                pointer: e.pointer.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
