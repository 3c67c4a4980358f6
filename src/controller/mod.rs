//! wasm-weight-controller: canary rollouts of edge functions without a service mesh or sidecar.

pub mod exposition;
pub mod window;
