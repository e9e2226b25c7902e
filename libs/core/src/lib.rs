//! Shared plumbing of every Switchboard service.
//!
//! - [`model`]: the vendor-neutral call model and its domain types (`CallId`, `PhoneNumber`...).
//! - [`avro`]: the one place records become bytes: Avro single-object encoding per topic.
//! - [`kafka`] and [`stage`]: Kafka clients and the at-least-once consume → produce loop.
//! - [`pg`]: the PostgreSQL pool and migrations.
//! - [`topology`]: the services, the topics between them and the record size limit; it imports
//!   nothing, so everything else can refer to it.
//! - [`config`], [`metrics`], [`http`], [`runtime`]: configuration, Prometheus metrics, the ops
//!   endpoints and process plumbing.
//!
//! Services depend on this crate and add only their own logic; nothing here knows about any
//! vendor or CRM.

pub mod avro;
pub mod config;
pub mod errors;
pub mod http;
pub mod http_service;
pub mod kafka;
pub mod metrics;
pub mod pg;
pub mod poison;
pub mod retry;
pub mod runtime;
pub mod schedule;
pub mod seal;
pub mod service;
pub mod source_secrets;
pub mod stage;
pub mod topology;

/// The call model lives in its own crate so that adapters (and their fuzz targets) build without
/// Kafka or PostgreSQL; every stage reaches it as `switchboard_core::model`.
pub use switchboard_model as model;
