//! containerd glue: the `Shim`/`Sandbox`/`Compiler` of `containerd-shim-wasm`.
//!
//! `run_wasi` executes inside the container (after `pivot_root`), so everything it needs from
//! the node (config, the AOT cache directory) is prepared by [`init_node`] in the shim binary's
//! `main`, before any container process is forked, and inherited from there.

use std::hash::Hash;
use std::time::Duration;
use std::sync::OnceLock;

use anyhow::Result;
use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source, WasmLayer};
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{Compiler, Shim, Version};

use crate::engine::aot::{self, ModuleKind};
use crate::engine::cache::AotCache;
use crate::engine::slot::SlotSpec;
use crate::engine::{self, exit_code, RunSpec};
use crate::http::{self, Mode, Served};
use crate::engine::wasi::Preopen;
use crate::node_config::NodeConfig;
use crate::policy::{self, PolicySettings, WasiSandboxPolicy};

pub mod bundle;
pub mod cleanup;
pub mod task_proxy;
mod spec;

/// Node state shared by every container this shim process forks.
struct Node {
    cache: Option<AotCache>,
    /// Why the cache is unavailable, reported when a container would have used it.
    cache_error: Option<String>,
    /// The directory of this namespace's bundles, to find a container's own spec.
    task_dir: Option<spec::TaskDir>,
    /// Presets, default and ceiling, or why the admin's policy config is unusable.
    policies: Result<PolicySettings, String>,
}

static NODE: OnceLock<Node> = OnceLock::new();

/// Opens the node's AOT cache. Called once in `main`, before containerd-shim-wasm forks.
/// A cache that cannot be opened (read-only or full disk) is not fatal: modules then run
/// compiled in memory or interpreted, and each container logs why.
pub fn init_node(config: &NodeConfig) {
    // WasmEdge logs to the process's stdout/stderr, which are the container's: keep the
    // module's output its own. Errors reach users through the shim's messages instead.
    wasmedge_sdk::LogManager::log_off();
    // Computed once here, so that every container forked later inherits it instead of
    // reading /proc/cpuinfo on its start path.
    aot::engine_fingerprint();
    let (cache, cache_error) = match AotCache::open(&config.aot_cache_dir, config.aot_cache_max_bytes) {
        Ok(cache) => (Some(cache), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let cache_is_open = cache.is_some();
    let node = Node {
        cache,
        cache_error,
        task_dir: spec::open_task_dir(&config.aot_cache_dir, cache_is_open).map_err(|e| eprintln!("containerd-shim-wasmedge: {e:#}")).ok(),
        policies: config.policy_settings().map_err(|e| format!("{e:#}")),
    };
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
        make_stdin_read_only();
        let (policy, mode) = match container_settings() {
            Ok(settings) => settings,
            Err(message) => {
                exit_on_termination_signals();
                return Ok(report_failure(&message, exit_code::BAD_POLICY));
            }
        };
        log::info!("sandbox policy: {}", policy.summary());
        let entrypoint = ctx.entrypoint();
        let source = match &entrypoint.source {
            Source::File(path) => ModuleSource::File(path.clone()),
            Source::Oci(_) => match entrypoint.source.as_bytes() {
                Ok(bytes) => ModuleSource::Bytes(bytes.into_owned()),
                Err(e) => return Ok(report_failure(&format!("failed to load module: OCI layer: {e:#}"), exit_code::LOAD_FAILED)),
            },
        };
        let run = RunSpec {
            func: entrypoint.func.clone(),
            args: ctx.args().to_vec(),
            envs: allowed_envs(ctx.envs(), &policy),
            preopens: preopens(&policy),
            max_memory_pages: policy.max_memory_pages,
            allowed_hosts: policy.allowed_hosts.clone(),
            max_network_requests: policy.max_network_requests,
        };
        match mode {
            Mode::Command => {
                exit_on_termination_signals();
                Ok(run_command(source, run, policy.execution_timeout_ms))
            }
            Mode::Http(settings) => {
                let slot = SlotSpec { run, timeout: Duration::from_millis(policy.execution_timeout_ms) };
                // Before the server's threads exist: a compiler child is forked now, and the
                // server answers /health while `load` waits for it.
                let loading = source.begin_load();
                let load = move || {
                    let loaded = loading.and_then(engine::Loading::finish).map_err(|e| (e.to_string(), exit_code::LOAD_FAILED))?;
                    log::info!("module ready ({:?})", loaded.path);
                    Ok(loaded.module)
                };
                // A thread of its own: the HTTP runtime must not nest in the caller's executor.
                let served = std::thread::spawn(move || http::serve(settings, slot, load)).join();
                Ok(match served {
                    Ok(Served::Stopped { drained }) => {
                        if !drained {
                            log::warn!("drain timeout passed with requests in flight");
                        }
                        0
                    }
                    Ok(Served::Failed { message, exit_code }) => report_failure(&message, exit_code),
                    Err(_) => report_failure("the HTTP server panicked", exit_code::LOAD_FAILED),
                })
            }
        }
    }

    /// Every file entrypoint is ours to run; a file that is not a usable module is reported
    /// by `run_wasi` with a clear message instead of a generic "cannot handle" from youki.
    async fn can_handle(&self, _ctx: &impl RuntimeContext) -> Result<()> {
        Ok(())
    }
}

/// This container's policy and mode: its annotations (from its own spec) resolved against the
/// node's presets and ceiling. An error is the message to show the user.
fn container_settings() -> std::result::Result<(WasiSandboxPolicy, Mode), String> {
    let node = NODE.get().ok_or("shim node state missing")?;
    let settings = node
        .policies
        .as_ref()
        .map_err(|e| format!("the node's sandbox policy config is invalid: {e}; fix the node config (see README)"))?;
    let annotations = match node.task_dir.as_ref() {
        Some(dir) => spec::own_annotations(dir, node.cache.as_ref().map(AotCache::raw_fd)).map_err(|e| {
            format!("cannot read this container's annotations ({e:#}); refusing to guess its sandbox policy")
        })?,
        None => return Err("cannot find this container's bundle; refusing to guess its sandbox policy".into()),
    };
    let policy = policy::resolve(settings, &annotations).map_err(|e| e.to_string())?;
    let mode = http::settings::from_annotations(&annotations).map_err(|e| e.to_string())?;
    Ok((policy, mode))
}

/// Where the module comes from: a file in the rootfs, or the bytes of OCI wasm layers.
enum ModuleSource {
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
}

impl ModuleSource {
    /// Begins loading (compiling on first use, through the node's AOT cache); see
    /// [`engine::begin_load`].
    fn begin_load(&self) -> std::result::Result<engine::Loading<'static>, engine::LoadError> {
        match self {
            ModuleSource::File(path) => std::fs::read(path)
                .map_err(|e| engine::LoadError(format!("{}: {e}", path.display())))
                .map(|bytes| engine::begin_load(&bytes, Some(path), node_cache())),
            ModuleSource::Bytes(bytes) => Ok(engine::begin_load(bytes, None, node_cache())),
        }
    }
}

/// Command mode: one run of the entry function; its exit code is the container's.
fn run_command(source: ModuleSource, spec: RunSpec, execution_timeout_ms: u64) -> i32 {
    let loaded = match source.begin_load().and_then(engine::Loading::finish) {
        Ok(loaded) => loaded,
        Err(e) => return report_failure(&e.to_string(), exit_code::LOAD_FAILED),
    };
    log::info!("module ready ({:?}), calling {}", loaded.path, spec.func);
    start_time_limit(execution_timeout_ms);
    let report = match engine::run_command(&loaded.module, spec) {
        Ok(report) => report,
        Err(e) => return report_failure(&format!("failed to start module: {e:#}"), exit_code::LOAD_FAILED),
    };
    for violation in &report.violations {
        log::warn!("{violation}");
        eprintln!("{violation}");
    }
    match report.outcome.failure_message() {
        None => report.outcome.exit_code(),
        Some(message) => report_failure(&message, report.outcome.exit_code()),
    }
}

/// Only the policy's variables reach the module; each dropped one is logged by name.
fn allowed_envs(envs: &[String], policy: &WasiSandboxPolicy) -> Vec<(String, String)> {
    let mut kept = vec![];
    for entry in envs {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        if policy.allowed_env_vars.iter().any(|allowed| allowed == name) {
            kept.push((name.to_string(), value.to_string()));
        } else {
            log::info!("env var not allowed: {name}");
        }
    }
    kept
}

/// The policy's directories that exist in this container; a missing one is logged, not fatal
/// (the module simply cannot see it).
fn preopens(policy: &WasiSandboxPolicy) -> Vec<Preopen> {
    policy
        .allowed_dirs
        .iter()
        .filter(|d| {
            let exists = std::path::Path::new(&d.host_path).is_dir();
            if !exists {
                log::info!("allowed dir {} is not in the container; {} is not available", d.host_path, d.guest_path);
            }
            exists
        })
        .map(|d| Preopen { guest: d.guest_path.clone(), host: d.host_path.clone().into(), readonly: d.readonly })
        .collect()
}

/// Wall-clock limit of the whole run. A watchdog thread ends the process: that stops busy
/// loops and blocking calls alike, with nothing to unwind.
fn start_time_limit(timeout_ms: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(timeout_ms));
        report_failure(&engine::time_limit_message(timeout_ms), exit_code::TIME_LIMIT);
        // SAFETY: _exit ends the process without running destructors, as intended here.
        unsafe { libc::_exit(exit_code::TIME_LIMIT) }
    });
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
