//! containerd-shim-wasmedge: run AOT-compiled WebAssembly as containerd/Kubernetes containers.
//!
//! Data flows one way: `node_config` (how the node is set up) → `shim` (containerd glue,
//! OCI spec → run request) → `engine` (WasmEdge, AOT compilation and its cache); `http` (function mode: HTTP requests →
//! fresh engine instances, metrics) sits between `shim` and `engine`.
//! `controller` is the cluster side: the canary weight controller (`wasm-weight-controller`).

pub mod containerd_config;
pub mod controller;
pub mod devnode;
pub mod engine;
pub mod http;
pub mod node_config;
pub mod policy;
pub mod shim;
