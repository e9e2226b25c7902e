//! desk: the agent's desk. Tells agents, in their browser, about their calls while they happen —
//! who is calling (with the matched CRM contact) before they pick up, answered, taken by a
//! colleague, ended, missed — pops the CRM's own page, and shows supervisors their groups.
//!
//! Inputs: matched call events (`<prefix>matched`, the earliest topic with the agent and the
//! contact) and agent status changes (`<prefix>agent-status`), read by every replica in a
//! consumer group of its own from the latest record (broadcast: each replica holds its own
//! connections); sessions and screen-pop settings in PostgreSQL. Outputs: notifications on
//! WebSocket or Server-Sent Events streams; status changes on `<prefix>agent-status`.
//!
//! Delivery: at most once per stream while connected, plus resume — a client that reconnects
//! with the last event id it saw gets what it missed from the replica's per-agent buffer (the last
//! `desk.resume_window` notifications; ids are the same on every replica). Notifications are
//! live signals, not a log: a replica that restarts starts from the latest record, and the call
//! log remains the record. Ordering: per call, as on the topic (keyed by call).
//!
//! Modules: [`token`] and [`sessions`] (who may connect), [`screen_pop`] (what to open),
//! [`track`] (what a call means to each agent; pure), [`notify`] (the notification JSON),
//! [`hub`] (streams and resume buffers), [`stream`] (WebSocket and SSE), [`desk`] (shared state,
//! status, recent calls), [`originate`] (click-to-call through the PBX, once per idempotency
//! key), [`wrap_up`] (dispositions and tags: a call event the call log folds), [`api`] (HTTP),
//! [`service`] (the process).

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod metrics;
pub mod settings;
pub use settings::DeskSettings;
pub mod api;
mod api_wrap_up;
pub mod desk;
pub mod hub;
pub mod notify;
pub mod originate;
pub mod screen_pop;
pub mod service;
pub mod sessions;
pub mod stream;
pub mod token;
pub mod track;
pub mod wrap_up;

pub use service::run;
