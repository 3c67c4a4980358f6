//! containerd glue: the `Shim`/`Sandbox`/`Compiler` of `containerd-shim-wasm`.
//!
//! `run_wasi` executes inside the container (after `pivot_root`), so everything it needs from
//! the node (config, the AOT cache directory) is prepared by [`init_node`] in the shim binary's
//! `main`, before any container process is forked, and inherited from there.

use std::hash::Hash;
use std::sync::OnceLock;

use anyhow::Result;
use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source, WasmLayer};
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{Compiler, Shim, Version};

use crate::engine::aot::{self, ModuleKind};
use crate::engine::cache::AotCache;
use crate::engine::{self, exit_code, Outcome, RunSpec};
use crate::node_config::NodeConfig;

mod spec;

/// Node state shared by every container this shim process forks.
struct Node {
    cache: Option<AotCache>,
    /// Why the cache is unavailable, reported when a container would have used it.
    cache_error: Option<String>,
    /// The directory of this namespace's bundles, to find a container's own spec.
    task_dir: Option<std::os::fd::OwnedFd>,
}

static NODE: OnceLock<Node> = OnceLock::new();

/// Opens the node's AOT cache. Called once in `main`, before containerd-shim-wasm forks.
/// A cache that cannot be opened (read-only or full disk) is not fatal: modules then run
/// compiled in memory or interpreted, and each container logs why.
pub fn init_node(config: &NodeConfig) {
    // WasmEdge logs to the process's stdout/stderr, which are the container's: keep the
    // module's output its own. Errors reach users through the shim's messages instead.
    wasmedge_sdk::LogManager::log_off();
    let (cache, cache_error) = match AotCache::open(&config.aot_cache_dir, config.aot_cache_max_bytes) {
        Ok(cache) => (Some(cache), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let node = Node { cache, cache_error, task_dir: spec::open_task_dir().ok() };
    let _ = NODE.set(node);
}

fn node_cache() -> Option<&'static AotCache> {
    let node = NODE.get()?;
    if let Some(err) = &node.cache_error {
        log::error!("aot cache unavailable: {err}");
    }
    node.cache.as_ref()
}

pub struct WasmEdgeShim;

impl Shim for WasmEdgeShim {
    fn name() -> &'static str {
        "wasmedge"
    }

    fn version() -> Version {
        containerd_shim_wasm::shim::version!()
    }

    type Sandbox = WasmEdgeSandbox;

    async fn compiler() -> Option<impl Compiler> {
        Some(OciLayerCompiler)
    }
}

#[derive(Default)]
pub struct WasmEdgeSandbox;

impl Sandbox for WasmEdgeSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> Result<i32> {
        exit_on_termination_signals();
        make_stdin_read_only();
        let annotations = match NODE.get().and_then(|n| n.task_dir.as_ref()) {
            Some(dir) => spec::own_annotations(dir).unwrap_or_else(|e| {
                log::warn!("could not read this container's annotations ({e:#}); using the node defaults");
                Default::default()
            }),
            None => Default::default(),
        };
        log::info!("annotations: {annotations:?}");
        let entrypoint = ctx.entrypoint();
        let loaded = match &entrypoint.source {
            Source::File(path) => std::fs::read(path)
                .map_err(|e| engine::LoadError(format!("{}: {e}", path.display())))
                .and_then(|bytes| engine::load_module(&bytes, Some(path), node_cache())),
            Source::Oci(_) => entrypoint
                .source
                .as_bytes()
                .map_err(|e| engine::LoadError(format!("OCI layer: {e:#}")))
                .and_then(|bytes| engine::load_module(&bytes, None, node_cache())),
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => return Ok(report_failure(&e.to_string(), exit_code::LOAD_FAILED)),
        };
        log::info!("module ready ({:?}), calling {}", loaded.path, entrypoint.func);
        let spec = RunSpec {
            func: &entrypoint.func,
            args: ctx.args().to_vec(),
            envs: ctx.envs().to_vec(),
            preopens: vec!["/:/".to_string()],
        };
        match engine::run_command(&loaded.module, &spec) {
            Ok(Outcome::Exited(code)) => Ok(code),
            Ok(Outcome::Trapped(trap)) => Ok(report_failure(&format!("wasm trap: {trap}"), exit_code::TRAP)),
            Err(e) => Ok(report_failure(&format!("failed to start module: {e:#}"), exit_code::LOAD_FAILED)),
        }
    }

    /// Every file entrypoint is ours to run; a file that is not a usable module is reported
    /// by `run_wasi` with a clear message instead of a generic "cannot handle" from youki.
    async fn can_handle(&self, _ctx: &impl RuntimeContext) -> Result<()> {
        Ok(())
    }
}

/// Kubernetes shows this file's content as the container's termination message.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Writes the reason to the container's stderr (`ctr run`, `kubectl logs`), to the termination
/// message when Kubernetes provides one (`kubectl describe`), and to the shim log.
fn report_failure(message: &str, code: i32) -> i32 {
    log::error!("{message}");
    eprintln!("{message}");
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(TERMINATION_LOG) {
        use std::io::Write;
        let _ = writeln!(f, "{message}");
    }
    code
}

/// A container's init process ignores signals it has no handler for, so without this a busy
/// module would outlive `ctr task kill` (SIGTERM) until SIGKILL.
fn exit_on_termination_signals() {
    extern "C" fn on_signal(sig: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) }
    }
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only calls _exit.
        unsafe {
            let _ = sigaction(sig, &action);
        }
    }
    debug_assert_eq!(exit_code::TERMINATED, 128 + libc::SIGTERM);
}

/// containerd-shim-wasm opens the stdin FIFO read-write (so that opening never blocks), which
/// makes the container its own writer: a module reading stdin to the end would wait forever
/// after the client closed its side. Reopen it read-only so the client's close is an EOF.
fn make_stdin_read_only() {
    use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
    use nix::sys::stat::{fstat, Mode, SFlag};
    let is_fifo = fstat(0).map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO).unwrap_or(false);
    let read_write = fcntl(0, FcntlArg::F_GETFL).map(|fl| OFlag::from_bits_truncate(fl) & OFlag::O_ACCMODE == OFlag::O_RDWR).unwrap_or(false);
    if !(is_fifo && read_write) {
        return;
    }
    match open("/proc/self/fd/0", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => {
            let _ = nix::unistd::dup2(fd, 0);
            let _ = nix::unistd::close(fd);
        }
        Err(e) => log::warn!("could not reopen stdin read-only ({e}); a module reading to EOF may block"),
    }
}

/// Compiles OCI wasm layers once; containerd-shim-wasm stores the result in containerd's
/// content store and hands it back (as a precompiled layer) to later containers.
pub struct OciLayerCompiler;

impl Compiler for OciLayerCompiler {
    fn cache_key(&self) -> impl Hash {
        format!("{}-{}", aot::engine_fingerprint(), env!("CARGO_PKG_VERSION"))
    }

    async fn compile(&self, layers: &[WasmLayer]) -> Result<Vec<Option<Vec<u8>>>> {
        let scratch = node_cache().map(|c| c.path_via_proc()).unwrap_or_else(std::env::temp_dir);
        let mut out = Vec::with_capacity(layers.len());
        for layer in layers {
            let digest = layer.config.digest().to_string();
            let compiled = match aot::classify(&layer.layer) {
                ModuleKind::Bytecode => match wasmedge_sdk::Module::from_bytes(None, &layer.layer) {
                    // Invalid modules are left as they are; run_wasi reports them precisely.
                    Err(e) => {
                        log::warn!("aot: OCI layer {digest} is not a valid module ({e}); not compiling");
                        None
                    }
                    Ok(_) => {
                        let started = std::time::Instant::now();
                        match aot::compile(&layer.layer, &scratch) {
                            Ok(native) => {
                                log::info!("aot: compiled OCI layer {digest} in {} ms", started.elapsed().as_millis());
                                Some(native)
                            }
                            Err(e) => {
                                log::error!("aot: compiling OCI layer {digest} failed ({e:#}); it will be interpreted");
                                None
                            }
                        }
                    }
                },
                _ => None,
            };
            out.push(compiled);
        }
        Ok(out)
    }
}
