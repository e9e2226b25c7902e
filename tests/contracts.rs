//! Contracts with what nobody here wrote, one test binary: the deployment files (compose,
//! Kubernetes, Prometheus, Grafana) against the code, and independent Avro decoders (Java,
//! Python) against every topic of a real pipeline run.

#[path = "deploy.rs"]
mod deploy;
#[path = "interop.rs"]
mod interop;
