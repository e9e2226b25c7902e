//! Contracts with what nobody here wrote, one test binary: the deployment files (compose,
//! Kubernetes, Prometheus, Grafana) against the code, independent Avro decoders (Java, Python)
//! against every topic of a real pipeline run, and a property-based tester (schemathesis)
//! against both HTTP servers and their OpenAPI document.

#[path = "deploy.rs"]
mod deploy;
#[path = "interop.rs"]
mod interop;
#[path = "openapi.rs"]
mod openapi;
