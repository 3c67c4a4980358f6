//! containerd runtime v2 shim `io.containerd.wasmedge.v1`.

use containerd_shim_wasm::shim::{Cli, Config};
use containerd_shim_wasmedge::node_config::NodeConfig;
use containerd_shim_wasmedge::shim::{init_node, WasmEdgeShim};

fn main() {
    // containerd runs `<shim> ... delete` to clean up after a shim that is gone; after a
    // containerd restart that call can block forever opening the shim log FIFO, so it logs
    // to stderr only (containerd captures it).
    let is_delete = std::env::args().last().as_deref() == Some("delete");
    match NodeConfig::load() {
        Ok(config) => {
            if !is_delete {
                init_node(&config);
            }
        }
        Err(e) => {
            eprintln!("containerd-shim-wasmedge: invalid node config: {e:#}");
            std::process::exit(1);
        }
    }
    WasmEdgeShim::run(Config {
        no_setup_logger: is_delete,
        default_log_level: "info".to_string(),
    });
}
