//! Shared by the integration tests: the private containerd of `devnode`, plus a CRI client.
#![allow(dead_code, unused_imports)]

pub mod cri;
pub mod image;

pub use containerd_shim_wasmedge::devnode::*;
