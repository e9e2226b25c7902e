//! dispatcher: delivers calls to CRMs and other web services, as a Chronicall "Web Service
//! Integration Profile" does (seed 004), reliably.
//!
//! Inputs: call records (`<prefix>calls`: completed, changed) and enriched call events
//! (`<prefix>enriched`: ringing, answered, ended, recording ready), and the delivery profiles.
//! Outputs: HTTP requests to each profile's target, rendered from the call's values, optionally
//! signed per Standard Webhooks; a record it cannot read goes to `<prefix>deadletter` with the
//! reason (acknowledged before its offset is stored). Delivery: at least once per (profile, event or record version):
//! a failed attempt is retried on the profile's schedule until it succeeds, is aborted by the
//! receiver, or the schedule is spent; every attempt of a delivery carries the same `webhook-id`,
//! the receiver's idempotency key. Ordering: per (profile, call), a delivery waits while an
//! earlier one of the same call to the same profile is pending; calls are independent.
//!
//! This crate is the pure half of the service: no Kafka, no PostgreSQL, no clock and no
//! randomness of its own (the caller passes `now` and random numbers), so every rule here is
//! tested fast and exactly. The service ([`service`]) consumes the topics ([`consume`]), stores
//! the due deliveries and their [`flow::FlowState`] in PostgreSQL ([`store`]) before committing
//! offsets, runs the attempts ([`worker`], [`send`]) and serves the profiles API ([`api`]). The
//! pure modules:
//! - [`criteria`]: whether a profile fires on an event or a record ([`criteria::fires`]);
//! - [`values`]: the call values a profile can send ([`values::CallValues`]);
//! - [`profile`]: the profile and its validation ([`profile::Profile::new`]);
//! - [`flow`]: which step of a profile is due ([`flow::FlowState::next`]) and what it extracts;
//! - [`request`] and [`template`]: a step rendered into an HTTP request ([`request::render_step`]);
//! - [`signature`]: Standard Webhooks signing and verification;
//! - [`retry`]: what a response means and when to try again ([`retry::classify`], [`retry::next`]);
//! - [`ssrf`]: which addresses a request may reach ([`ssrf::EgressPolicy`]);
//! - [`oauth`]: OAuth access tokens for CRMs that want one (traded and stored by [`tokens`]);
//! - [`connectors`]: ready-made profiles for HubSpot, Pipedrive, Bitrix24 and amoCRM.

// Service code must not panic on what it is given (#18): no `unwrap`, no indexing or slicing
// that can go out of bounds, no arithmetic that can overflow. Tests may.
#![warn(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod metrics;
pub mod settings;
pub use settings::DispatcherSettings;
pub mod api;
pub mod cache;
pub mod connectors;
pub mod consume;
pub mod criteria;
pub mod flow;
pub mod oauth;
pub mod profile;
mod profile_check;
pub mod request;
pub mod retry;
pub mod schedule_store;
pub mod seal;
pub mod send;
pub mod service;
pub mod settle;
pub mod signature;
pub mod ssrf;
pub mod store;
pub mod subject_json;
pub mod template;
pub mod tokens;
pub mod values;
pub mod worker;

pub use service::run;

#[cfg(test)]
mod fixtures;

/// The id of one delivery: the same for every attempt (the receiver's idempotency key), derived
/// from the profile and what triggered it, so that a record read twice schedules nothing twice.
/// `subject` is the event id for an event, `record:<version>` for a record; the result has no `.`
/// (Standard Webhooks signs `{id}.{timestamp}.{body}`). The parts are joined with newlines, which
/// no id contains (call and event ids refuse control characters).
pub fn delivery_id(profile_id: &str, source_id: &str, call_id: &str, subject: &str) -> String {
    let name = format!("{profile_id}\n{source_id}\n{call_id}\n{subject}");
    format!("dlv_{}", uuid::Uuid::new_v5(&DELIVERY_NAMESPACE, name.as_bytes()).simple())
}

/// The message id of one step of a delivery: each step is its own request, which the receiver
/// must be able to tell apart from the others.
pub fn step_message_id(delivery_id: &str, step: &str) -> String {
    format!("{delivery_id}_{step}")
}

/// Namespace of delivery ids (random, fixed forever).
const DELIVERY_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8e0b_41d6_2f3c_4a7e_b5d1_6c29_0a84_f317);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_and_signable() {
        let id = delivery_id("p1", "acme-pbx", "c.1", "record:3");
        assert_eq!(
            id,
            delivery_id("p1", "acme-pbx", "c.1", "record:3"),
            "a re-read record schedules nothing new"
        );
        assert!(id.starts_with("dlv_") && !id.contains('.'), "{id}");
        assert_ne!(id, delivery_id("p1", "acme-pbx", "c.1", "record:4"));
        assert_ne!(id, delivery_id("p2", "acme-pbx", "c.1", "record:3"));
        assert_eq!(step_message_id(&id, "finish"), format!("{id}_finish"));
    }
}
