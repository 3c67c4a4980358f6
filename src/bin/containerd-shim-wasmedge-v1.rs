//! containerd runtime v2 shim `io.containerd.wasmedge.v1`.

use containerd_shim_wasm::shim::{Cli, Config};
use containerd_shim_wasmedge::node_config::NodeConfig;
use containerd_shim_wasmedge::shim::{init_node, WasmEdgeShim};

fn main() {
    // Debug aid: youki reports container setup failures only through `tracing`; with
    // CONTAINERD_SHIM_WASMEDGE_TRACE set in containerd's environment they reach the container's
    // stderr (its log).
    if std::env::var_os("CONTAINERD_SHIM_WASMEDGE_TRACE").is_some() {
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(tracing::Level::DEBUG).finish(),
        );
    }
    // containerd runs `<shim> ... delete` to clean up after a shim that is gone; after a
    // containerd restart that call can block forever opening the shim log FIFO, so it logs
    // to stderr only (containerd captures it).
    let action = std::env::args().last();
    let is_delete = action.as_deref() == Some("delete");
    // `start` only spawns the daemon and exits; it must not leave descriptors of ours in it.
    let is_start = action.as_deref() == Some("start");
    match NodeConfig::load() {
        Ok(config) => {
            if !is_delete && !is_start {
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
