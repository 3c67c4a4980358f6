//! containerd runtime v2 shim `io.containerd.wasmedge.v1`.

use containerd_shim_wasmedge::node_config::NodeConfig;
use containerd_shim_wasmedge::shim::instance::{WasmEdgeInstance, RUNTIME_NAME};
use containerd_shim_wasmedge::shim::{cleanup, init_node, open_node_cache, task_proxy};

fn main() {
    // Debug aid: youki reports container setup failures only through `tracing`; with
    // CONTAINERD_SHIM_WASMEDGE_TRACE set in containerd's environment they reach the container's
    // stderr (its log).
    if std::env::var_os("CONTAINERD_SHIM_WASMEDGE_TRACE").is_some() {
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_max_level(tracing::Level::DEBUG)
                .finish(),
        );
    }
    // containerd runs `<shim> ... delete` to clean up after a shim that is gone; after a
    // containerd restart that call can block forever opening the shim log FIFO, so it logs
    // to stderr only (containerd captures it).
    let action = std::env::args().next_back();
    let is_delete = action.as_deref() == Some("delete");
    // `start` only spawns the daemon and exits; it must not leave descriptors of ours in it.
    let is_start = action.as_deref() == Some("start");
    match NodeConfig::load() {
        Ok(config) => {
            if !is_delete && !is_start {
                init_node(&config);
                // The daemon: answer containerd's `Pids` so tasks survive a containerd restart.
                if is_daemon() {
                    // Containers are forked from the zygote process, which must be forked while
                    // this process has a single thread: a lock held by another thread at that
                    // moment (the loader's, by a thread being created) stays held in every
                    // container, which then hangs creating its first thread (seen once in 739
                    // churn cycles). So the zygote first (after the node state it inherits),
                    // then the proxy's threads. The AOT cache is opened after the fork: no
                    // container (they all come from the zygote) may inherit its descriptor.
                    zygote::Zygote::init();
                    open_node_cache();
                    if let Err(e) = task_proxy::install() {
                        eprintln!("containerd-shim-wasmedge: task proxy not installed ({e:#}); tasks will not survive a containerd restart");
                    }
                }
            }
        }
        Err(e) => {
            eprintln!("containerd-shim-wasmedge: invalid node config: {e:#}");
            std::process::exit(1);
        }
    }
    if is_delete {
        // containerd runs `delete` in the bundle after a shim died: also remove what the
        // library's delete leaves behind (the container's cgroups).
        let id = arg_after("-id").unwrap_or_default();
        if let Err(e) = std::env::current_dir()
            .map_err(anyhow::Error::from)
            .and_then(|bundle| cleanup::remove_container_cgroups(&bundle, &id))
        {
            eprintln!("containerd-shim-wasmedge: cleanup of {id}: {e:#}");
        }
        if let (Some(address), Some(namespace)) = (arg_after("-address"), arg_after("-namespace")) {
            task_proxy::remove_dead_shim_socket(&address, &namespace, &id);
        }
    }
    let config = containerd_shimkit::Config {
        no_setup_logger: is_delete,
        default_log_level: "info".to_string(),
        no_reaper: false,
        no_sub_reaper: false,
    };
    containerd_shimkit::sandbox::cli::shim_main::<WasmEdgeInstance>(
        RUNTIME_NAME,
        containerd_shimkit::shim_version!(),
        Some(config),
    );
}

/// The daemon is started with the listening socket as fd 3 and no action argument.
fn is_daemon() -> bool {
    use nix::sys::socket::{getsockopt, sockopt::AcceptConn};
    // SAFETY: only borrowed for the query.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(3) };
    getsockopt(&fd, AcceptConn).unwrap_or(false)
}

/// The value following `flag` on the command line (containerd passes `-id ID`).
fn arg_after(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}
