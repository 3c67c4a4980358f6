//! WasmEdge: loading modules (through the AOT cache) and running them.

pub mod aot;
pub mod cache;
pub mod declared;
pub mod slot;
pub mod stack;
pub mod wasi;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmedge_sdk::config::{CommonConfigOptions, ConfigBuilder, RuntimeConfigOptions};
use wasmedge_sdk::Module;
use wasmedge_types::error::{CoreError, CoreExecutionError, WasmEdgeError};

use aot::ModuleKind;
use cache::{AotCache, Lookup};

/// Exit codes the shim uses for failures of its own (module exit codes pass through as they are).
pub mod exit_code {
    /// The module could not be read, parsed or validated.
    pub const LOAD_FAILED: i32 = 126;
    /// The module trapped (unreachable, out-of-bounds access, stack overflow, ...).
    pub const TRAP: i32 = 134;
    /// Stopped by SIGTERM.
    pub const TERMINATED: i32 = 128 + 15;
    /// Ran past the policy's execution_timeout_ms.
    pub const TIME_LIMIT: i32 = 124;
    /// Needed more linear memory than the policy's max_memory_pages.
    pub const OUT_OF_MEMORY: i32 = 125;
    /// Refused to start: the sandbox policy annotations are invalid.
    pub const BAD_POLICY: i32 = 78;
}

/// Why a module could not be turned into something runnable. Displayed to users as-is.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failed to load module: {}", self.0)
    }
}

impl std::error::Error for LoadError {}

/// How a module ended up runnable, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadPath {
    /// Native code found in the node cache: nothing compiled.
    CacheHit,
    /// Compiled now (and stored, when the cache accepted it).
    Compiled,
    /// The module arrived already compiled (OCI precompiled layer or an AOT file).
    Precompiled,
    /// No native code could be produced; running in the interpreter.
    Interpreted,
}

/// The code a container runs, made ready by the shim daemon before the container exists: the
/// container loads exactly this and never looks at the cache or the image's file again.
#[derive(Debug, Serialize, Deserialize)]
pub enum ModuleCode {
    /// Universal wasm whose native code this node compiled (or, only with the node's
    /// `trust_image_native_code`, the image's own).
    Native(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Bytecode without AOT sections, for the interpreter.
    Bytecode(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A native shared library from the image, by its path in the container (only with
    /// `trust_image_native_code`).
    SharedLibrary(PathBuf),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreparedModule {
    /// Where the module came from, for messages (`/app/hello.wasm`, `OCI layer sha256:…`).
    pub origin: String,
    pub path: LoadPath,
    pub code: ModuleCode,
}

impl PreparedModule {
    /// The WasmEdge module, in the container.
    pub fn load(&self) -> Result<Module, LoadError> {
        let loaded = match &self.code {
            ModuleCode::Native(bytes) => {
                aot::native_loader_config().and_then(|c| Module::from_bytes(Some(&c), bytes))
            }
            ModuleCode::Bytecode(bytes) => Module::from_bytes(None, bytes),
            ModuleCode::SharedLibrary(path) => {
                aot::native_loader_config().and_then(|c| Module::from_file(Some(&c), path))
            }
        };
        loaded.map_err(|e| LoadError(format!("{}: {e}", self.origin)))
    }
}

/// Shown when an image brings machine code and the node does not trust image code.
pub const NATIVE_CODE_REFUSED: &str = "native code in the image is not allowed";

/// Turns an image's module into what the container may run. Only machine code that this
/// node's compiler produced from the module's own bytecode is used: AOT sections the image
/// brings are stripped and ELF files refused, unless the node admin set `trust_native`.
/// `compile` validates and compiles bytecode (in a separate process, see
/// [`aot::compile_in_zygote`]); `file` is the module's path in the container, if it is a file.
pub fn prepare_module(
    bytes: &[u8],
    origin: &str,
    file: Option<&Path>,
    cache: Option<&AotCache>,
    trust_native: bool,
    compile: impl FnOnce(&[u8]) -> Result<Vec<u8>, aot::CompileError>,
) -> Result<PreparedModule, LoadError> {
    let ready = |path, code| {
        Ok(PreparedModule {
            origin: origin.to_string(),
            path,
            code,
        })
    };
    let bytecode = match aot::classify(bytes) {
        ModuleKind::Unknown => {
            return Err(LoadError(format!("{origin}: not a WebAssembly module (no \\0asm header, {} bytes)", bytes.len())))
        }
        ModuleKind::NativeAot if trust_native => match file {
            Some(file) => return ready(LoadPath::Precompiled, ModuleCode::SharedLibrary(file.to_path_buf())),
            None => return Err(LoadError(format!("{origin}: a native AOT library must be shipped as a file"))),
        },
        ModuleKind::NativeAot => {
            return Err(LoadError(format!(
                "{NATIVE_CODE_REFUSED}: {origin} is an ELF file; ship the module's WebAssembly bytecode (the node compiles it), or a node admin sets trust_image_native_code"
            )))
        }
        ModuleKind::UniversalAot if trust_native => return ready(LoadPath::Precompiled, ModuleCode::Native(bytes.to_vec())),
        ModuleKind::UniversalAot => {
            log::warn!("aot: {origin} carries a WasmEdge AOT section; ignored (only code compiled on this node runs), compiling its bytecode");
            aot::strip_aot_sections(bytes)
        }
        ModuleKind::Bytecode => bytes.to_vec(),
    };
    let Some(cache) = cache else {
        log::warn!("aot: no usable AOT cache; running {origin} in the interpreter (slow)");
        return ready(LoadPath::Interpreted, ModuleCode::Bytecode(bytecode));
    };
    let key = cache_key(&bytecode);
    match cache.get(&key) {
        Lookup::Hit(native) if aot::strip_aot_sections(&native) == bytecode => {
            log::info!("aot: cache hit for {origin} (key {key}), nothing compiled");
            return ready(LoadPath::CacheHit, ModuleCode::Native(native));
        }
        Lookup::Hit(_) => {
            cache.remove_entry(&key);
            log::warn!("aot: cache entry for {origin} (key {key}) was corrupt (not compiled from this bytecode); removed, recompiling");
        }
        Lookup::Corrupt(why) => log::warn!(
            "aot: cache entry for {origin} (key {key}) was corrupt ({why}); removed, recompiling"
        ),
        Lookup::Miss => {}
    }
    let started = Instant::now();
    match compile(&bytecode) {
        Ok(native) => {
            log::info!(
                "aot: compiled {origin} (key {key}) in {} ms",
                started.elapsed().as_millis()
            );
            if let Err(e) = cache.put(&key, &native) {
                log::error!("aot: could not store compiled {origin} in the cache ({e:#}); using it from memory");
            }
            ready(LoadPath::Compiled, ModuleCode::Native(native))
        }
        Err(aot::CompileError::Invalid(why) | aot::CompileError::OverBudget(why)) => {
            Err(LoadError(format!("{origin}: {why}")))
        }
        Err(aot::CompileError::Failed(why)) => {
            log::error!(
                "aot: compiling {origin} failed ({why}); running it in the interpreter (slow)"
            );
            ready(LoadPath::Interpreted, ModuleCode::Bytecode(bytecode))
        }
    }
}

/// sha256(module) + engine fingerprint (WasmEdge version, compile options, CPU).
pub fn cache_key(bytecode: &[u8]) -> String {
    format!(
        "{}-{}",
        hex::encode(Sha256::digest(bytecode)),
        aot::engine_fingerprint()
    )
}

/// What a run gets from the container, already filtered by the sandbox policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub func: String,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub preopens: Vec<wasi::Preopen>,
    /// Cap of the module's linear memory, in 64 KiB pages.
    pub max_memory_pages: u32,
    /// Hosts the module may reach through `edge_http.fetch`.
    pub allowed_hosts: Vec<String>,
    /// Budget of outbound requests for the run.
    pub max_network_requests: u32,
    /// Bytes the read-write preopens may hold (see `wasi::DiskQuota`).
    pub max_disk_bytes: u64,
    /// That quota, counted from what the directories held when the container started; set
    /// where the preopens are bound (`None`: no read-write preopen, nothing to count).
    #[serde(skip)]
    pub disk: Option<wasi::DiskQuota>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Returned from the entry function or called `proc_exit`.
    Exited(i32),
    /// Trapped; the message names the trap.
    Trapped(String),
    /// The module needed more linear memory than the policy allows.
    OutOfMemory { limit_pages: u32 },
    /// Stopped at the policy's wall-clock limit (per call in HTTP mode).
    TimedOut { limit_ms: u64 },
}

impl Outcome {
    /// The message users see when the run did not end normally (None for an exit), naming the
    /// policy field involved and the fix.
    pub fn failure_message(&self) -> Option<String> {
        match self {
            Outcome::Exited(_) => None,
            Outcome::Trapped(trap) => Some(format!("wasm trap: {trap}")),
            Outcome::OutOfMemory { limit_pages } => Some(format!(
                "WasmEdge: out of memory (max_memory_pages {limit_pages} = {} MiB); raise wasmedge.io/max-memory-pages or use less memory",
                limit_pages / 16
            )),
            Outcome::TimedOut { limit_ms } => Some(time_limit_message(*limit_ms)),
        }
    }

    /// The process exit code of a command-mode run that ended this way.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Trapped(_) => exit_code::TRAP,
            Outcome::OutOfMemory { .. } => exit_code::OUT_OF_MEMORY,
            Outcome::TimedOut { .. } => exit_code::TIME_LIMIT,
        }
    }
}

pub fn time_limit_message(limit_ms: u64) -> String {
    format!("WasmEdge: time limit exceeded (execution_timeout_ms {limit_ms}); raise wasmedge.io/execution-timeout-ms or make the module faster")
}

pub struct RunReport {
    pub outcome: Outcome,
    /// Sandbox denials, in order (`permission denied: /etc/passwd`, ...).
    pub violations: Vec<String>,
}

/// Pages of slack under the cap within which a trap counts as running out of memory: a
/// refused `memory.grow` shows up in Rust guests as an abort (a trap) with the memory at the
/// cap minus less than one allocation chunk.
const OOM_SLACK_PAGES: u32 = 16;

/// Instantiates `module` with the project's WASI (stdio of the process) and calls its entry
/// function once, within `timeout` (instantiation included): the same deadline as a call of
/// HTTP mode (see [`slot`]), for guest code and host calls alike.
pub fn run_command(
    module: &Module,
    mut spec: RunSpec,
    timeout: std::time::Duration,
) -> Result<RunReport> {
    let config = ConfigBuilder::new(CommonConfigOptions::default())
        .with_runtime_config(
            RuntimeConfigOptions::default().max_memory_pages(spec.max_memory_pages),
        )
        .build()?;
    let mut ctx = wasi::WasiCtx::new(wasi::WasiConfig {
        args: spec.args.clone(),
        envs: spec.envs.clone(),
        // Taken, not cloned: the bound directories must not stay open beside the instance's.
        preopens: std::mem::take(&mut spec.preopens),
        stdin: wasi::Stdio::Inherit,
        stdout: wasi::Stdio::Inherit,
        stderr: wasi::Stdio::Inherit,
        max_buffered: None,
        disk: spec.disk.clone(),
    })?;
    let mut net = wasi::net::NetCtx::new(spec.allowed_hosts.clone(), spec.max_network_requests);
    ctx.set_time_limit(Some(timeout));
    net.set_time_limit(Some(timeout));
    let ((result, ctx, net), exhausted) = stack::guarded(|| {
        wasi::run_with_network(module, &spec.func, ctx, net, Some(&config), Some(timeout))
    });
    let outcome = slot::ended(
        result,
        exhausted,
        &ctx,
        &net,
        ctx.memory_pages(),
        timeout,
        spec.max_memory_pages,
    );
    let mut violations = ctx.violations().to_vec();
    violations.extend(net.violations().iter().cloned());
    Ok(RunReport {
        outcome,
        violations,
    })
}

pub(crate) fn classify_failure(
    e: &WasmEdgeError,
    memory_pages: Option<u32>,
    limit_pages: u32,
) -> Outcome {
    let text = match e {
        WasmEdgeError::Core(CoreError::Execution(exec)) => trap_text(exec),
        other => other.to_string(),
    };
    classify_trap(text, memory_pages, limit_pages)
}

/// A failed run is out of memory when the memory ended at (or within one allocation chunk of)
/// the cap; otherwise it is the trap WasmEdge named.
pub(crate) fn classify_trap(trap: String, memory_pages: Option<u32>, limit_pages: u32) -> Outcome {
    let near_cap = memory_pages
        .map(|p| p + OOM_SLACK_PAGES >= limit_pages)
        .unwrap_or(false);
    if near_cap {
        log::info!("run failed ({trap}) with memory at {memory_pages:?} of {limit_pages} pages: out of memory");
        return Outcome::OutOfMemory { limit_pages };
    }
    Outcome::Trapped(trap)
}

fn trap_text(e: &CoreExecutionError) -> String {
    match e {
        CoreExecutionError::Unreachable => "unreachable".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_wat(wat: &str, max_memory_pages: u32) -> Outcome {
        let module =
            Module::from_bytes(None, wasmedge_sdk::wat2wasm(wat.as_bytes()).unwrap()).unwrap();
        let spec = RunSpec {
            func: "_start".into(),
            args: vec![],
            envs: vec![],
            preopens: vec![],
            max_memory_pages,
            allowed_hosts: vec![],
            max_network_requests: 0,
            max_disk_bytes: 0,
            disk: None,
        };
        run_command(&module, spec, std::time::Duration::from_secs(60))
            .unwrap()
            .outcome
    }

    /// WasmEdge instantiates a declared memory larger than the cap at the cap: touching a
    /// page above it traps, and that is reported as running out of memory.
    #[test]
    fn declared_memory_above_the_cap_is_capped() {
        let touch_page_299 = r#"(module (memory (export "memory") 300)
            (func (export "_start") (i32.store (i32.const 19595264) (i32.const 1))))"#;
        assert_eq!(
            run_wat(touch_page_299, 256),
            Outcome::OutOfMemory { limit_pages: 256 }
        );
        assert_eq!(run_wat(touch_page_299, 512), Outcome::Exited(0));
    }

    #[test]
    fn growth_beyond_the_cap_is_refused() {
        let grow = r#"(module (memory (export "memory") 1)
            (func (export "_start") (if (i32.ne (memory.grow (i32.const 100)) (i32.const -1)) (then unreachable))))"#;
        assert_eq!(
            run_wat(grow, 64),
            Outcome::Exited(0),
            "memory.grow past the cap must return -1"
        );
    }

    #[test]
    fn traps_are_named() {
        assert_eq!(
            run_wat(
                r#"(module (memory 1) (func (export "_start") unreachable))"#,
                256
            ),
            Outcome::Trapped("unreachable".into())
        );
    }
}
