//! wasm-weight-controller: canary rollouts of edge functions without a service mesh or sidecar.

pub mod crd;
pub mod decide;
pub mod exposition;
pub mod lease;
pub mod replicas;
pub mod scrape;
pub mod telemetry;
pub mod window;
