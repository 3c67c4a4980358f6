//! containerd glue: the shim's task instances, on `containerd-shimkit` and youki.
//!
//! Two sides, one process image:
//! - the **daemon** (`instance`, `launch`, `image_fs`, `oci_layers`): for each container it
//!   reads the spec and the image's module, resolves the sandbox policy, and has the module
//!   compiled (through the node's AOT cache) before the container exists; the result is a
//!   [`launch::Launch`] value;
//! - the **container** (`executor`): youki's init process after `pivot_root` gets that value
//!   in memory, closes every descriptor it inherited but its stdio, and runs the module.
//!   Nothing of the node (cache, bundles, sockets) is reachable from there.

use std::sync::OnceLock;

use crate::engine::cache::AotCache;
use crate::node_config::NodeConfig;
use crate::policy::PolicySettings;

pub mod bundle;
pub mod cleanup;
mod executor;
mod image_fs;
pub mod instance;
mod launch;
mod oci_layers;
pub mod task_proxy;

/// Node state, set in `main` before the zygote that containers are forked from.
struct Node {
    config: NodeConfig,
    /// Presets, default and ceiling, or why the admin's policy config is unusable.
    policies: Result<PolicySettings, String>,
}

static NODE: OnceLock<Node> = OnceLock::new();
/// The AOT cache, or why it is unavailable. Opened after the zygote exists, so that no
/// container process ever inherits its descriptor.
static CACHE: OnceLock<Result<AotCache, String>> = OnceLock::new();

/// Called once in `main`, before containerd-shimkit starts threads and before the zygote.
pub fn init_node(config: &NodeConfig) {
    // WasmEdge logs to the process's stdout/stderr, which are the container's: keep the
    // module's output its own. Errors reach users through the shim's messages instead.
    wasmedge_sdk::LogManager::log_off();
    let _ = NODE.set(Node {
        config: config.clone(),
        policies: config.policy_settings().map_err(|e| format!("{e:#}")),
    });
}

/// Opens the node's AOT cache in the daemon (after `zygote::Zygote::init`). A cache that
/// cannot be opened (read-only or full disk) is not fatal: modules then run interpreted, and
/// each container logs why.
pub fn open_node_cache() {
    let Some(node) = NODE.get() else { return };
    crate::engine::aot::engine_fingerprint();
    let _ = CACHE.set(
        AotCache::open(&node.config.aot_cache_dir, node.config.aot_cache_max_bytes)
            .map_err(|e| format!("{e:#}")),
    );
}

fn node() -> &'static Node {
    NODE.get().expect("init_node runs first")
}

fn node_cache() -> Option<&'static AotCache> {
    match CACHE.get()? {
        Ok(cache) => Some(cache),
        Err(err) => {
            log::error!("aot cache unavailable: {err}");
            None
        }
    }
}
