//! The end-to-end tests, one test binary (linking librdkafka once instead of once per file):
//! each module is an area, run against the real binary, a real Apache Kafka and a real
//! PostgreSQL, every test on its own topics, groups and database (`support/lib.rs`).

/// The vendor fixture format, shared with the adapters' in-process tests.
#[path = "../libs/adapters/tests/common/fixture.rs"]
mod fixture;

#[path = "calllog.rs"]
mod calllog;
#[path = "cli.rs"]
mod cli;
#[path = "connectors.rs"]
mod connectors;
#[path = "desk.rs"]
mod desk;
#[path = "directory.rs"]
mod directory;
#[path = "dispatcher.rs"]
mod dispatcher;
#[path = "operations.rs"]
mod operations;
#[path = "pipeline.rs"]
mod pipeline;
#[path = "recordings.rs"]
mod recordings;
#[path = "upgrade.rs"]
mod upgrade;
#[path = "vendors.rs"]
mod vendors;
