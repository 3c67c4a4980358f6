//! WasmEdge: loading modules (through the AOT cache) and running them.

pub mod aot;
pub mod cache;
pub mod wasi;
pub mod slot;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

pub struct LoadedModule {
    pub module: Module,
    pub path: LoadPath,
}

/// Loads module bytes, compiling bytecode ahead of time through `cache` when possible.
pub fn load_module(bytes: &[u8], file: Option<&Path>, cache: Option<&AotCache>) -> Result<LoadedModule, LoadError> {
    begin_load(bytes, file, cache).finish()
}

/// The first half of [`load_module`], for callers that start threads before the module is
/// ready: everything but the wait for the compiler. On an AOT cache miss the compiler child
/// is forked here, so call it while the process has no busy threads (see
/// [`aot::CompileChild`]); [`Loading::finish`] validates the module meanwhile and collects
/// the compiled code.
pub fn begin_load<'c>(bytes: &[u8], file: Option<&Path>, cache: Option<&'c AotCache>) -> Loading<'c> {
    let origin = file.map(|p| p.display().to_string()).unwrap_or_else(|| "OCI layer".into());
    let done = Loading::Done;
    match aot::classify(bytes) {
        ModuleKind::Unknown => done(Err(LoadError(format!(
            "{origin}: not a WebAssembly module (no \\0asm header, {} bytes)",
            bytes.len()
        )))),
        ModuleKind::NativeAot => done(match file {
            None => Err(LoadError(format!("{origin}: a native AOT library must be shipped as a file"))),
            Some(file) => Module::from_file(None, file)
                .map(|module| LoadedModule { module, path: LoadPath::Precompiled })
                .map_err(|e| LoadError(format!("{origin}: {e}"))),
        }),
        ModuleKind::UniversalAot => done(
            Module::from_bytes(None, bytes)
                .map(|module| LoadedModule { module, path: LoadPath::Precompiled })
                .map_err(|e| LoadError(format!("{origin}: {e}"))),
        ),
        ModuleKind::Bytecode => {
            let Some(cache) = cache else {
                log::warn!("aot: no usable AOT cache; running {origin} in the interpreter (slow)");
                return done(interpreted(bytes, &origin));
            };
            let key = cache_key(bytes);
            match cache.get(&key) {
                Lookup::Hit(native) => match Module::from_bytes(None, &native) {
                    Ok(module) => {
                        log::info!("aot: cache hit for {origin} (key {key}), nothing compiled");
                        return done(Ok(LoadedModule { module, path: LoadPath::CacheHit }));
                    }
                    Err(e) => log::warn!("aot: cached code for {origin} (key {key}) does not load ({e}); recompiling"),
                },
                Lookup::Corrupt(why) => log::warn!("aot: cache entry for {origin} (key {key}) was corrupt ({why}); removed, recompiling"),
                Lookup::Miss => {}
            }
            let child = aot::CompileChild::spawn(bytes, &cache.path_via_proc());
            Loading::Compiling { origin, bytecode: bytes.to_vec(), cache, key, child, started: Instant::now() }
        }
    }
}

/// A load begun by [`begin_load`].
pub enum Loading<'c> {
    Done(Result<LoadedModule, LoadError>),
    /// The compiler child is at work on `bytecode` (key `key` in `cache`).
    Compiling { origin: String, bytecode: Vec<u8>, cache: &'c AotCache, key: String, child: Result<aot::CompileChild>, started: Instant },
}

impl Loading<'_> {
    /// The module, runnable: compiled (and cached), or interpreted when compiling failed.
    pub fn finish(self) -> Result<LoadedModule, LoadError> {
        let (origin, bytes, cache, key, child, started) = match self {
            Loading::Done(result) => return result,
            Loading::Compiling { origin, bytecode, cache, key, child, started } => (origin, bytecode, cache, key, child, started),
        };
        // Validate while the child compiles, so that a broken module is reported as a load
        // error (dropping the child then stops it).
        let bytecode = interpreted(&bytes, &origin)?;
        let native = match child.and_then(aot::CompileChild::wait) {
            Ok(native) => native,
            Err(e) => {
                log::error!("aot: compiling {origin} failed ({e:#}); running it in the interpreter (slow)");
                return Ok(bytecode);
            }
        };
        log::info!("aot: compiled {origin} (key {key}) in {} ms", started.elapsed().as_millis());
        if let Err(e) = cache.put(&key, &native) {
            log::error!("aot: could not store compiled {origin} in the cache ({e:#}); using it from memory");
        }
        let module = Module::from_bytes(None, &native).map_err(|e| LoadError(format!("{origin}: compiled code does not load: {e}")))?;
        Ok(LoadedModule { module, path: LoadPath::Compiled })
    }
}

fn interpreted(bytes: &[u8], origin: &str) -> Result<LoadedModule, LoadError> {
    let module = Module::from_bytes(None, bytes).map_err(|e| LoadError(format!("{origin}: {e}")))?;
    Ok(LoadedModule { module, path: LoadPath::Interpreted })
}

/// sha256(module) + engine fingerprint (WasmEdge version, compile options, CPU).
pub fn cache_key(bytecode: &[u8]) -> String {
    format!("{}-{}", hex::encode(Sha256::digest(bytecode)), aot::engine_fingerprint())
}

/// What a run gets from the container, already filtered by the sandbox policy.
#[derive(Debug, Clone)]
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
/// function once.
pub fn run_command(module: &Module, spec: RunSpec) -> Result<RunReport> {
    let config = ConfigBuilder::new(CommonConfigOptions::default())
        .with_runtime_config(RuntimeConfigOptions::default().max_memory_pages(spec.max_memory_pages))
        .build()?;
    let ctx = wasi::WasiCtx::new(wasi::WasiConfig {
        args: spec.args,
        envs: spec.envs,
        preopens: spec.preopens,
        stdin: wasi::Stdio::Inherit,
        stdout: wasi::Stdio::Inherit,
        stderr: wasi::Stdio::Inherit,
    })?;
    let net = wasi::net::NetCtx::new(spec.allowed_hosts, spec.max_network_requests);
    let (result, ctx, net) = wasi::run_with_network(module, &spec.func, ctx, net, Some(&config));
    let outcome = match result {
        Ok(()) => Outcome::Exited(ctx.exit_code().unwrap_or(0) as i32),
        Err(e) => classify_failure(&e, ctx.memory_pages(), spec.max_memory_pages),
    };
    let mut violations = ctx.violations().to_vec();
    violations.extend(net.violations().iter().cloned());
    Ok(RunReport { outcome, violations })
}

pub(crate) fn classify_failure(e: &WasmEdgeError, memory_pages: Option<u32>, limit_pages: u32) -> Outcome {
    let text = match e {
        WasmEdgeError::Core(CoreError::Execution(exec)) => trap_text(exec),
        other => other.to_string(),
    };
    classify_trap(text, memory_pages, limit_pages)
}

/// A failed run is out of memory when the memory ended at (or within one allocation chunk of)
/// the cap; otherwise it is the trap WasmEdge named.
pub(crate) fn classify_trap(trap: String, memory_pages: Option<u32>, limit_pages: u32) -> Outcome {
    let near_cap = memory_pages.map(|p| p + OOM_SLACK_PAGES >= limit_pages).unwrap_or(false);
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
        let module = Module::from_bytes(None, wasmedge_sdk::wat2wasm(wat.as_bytes()).unwrap()).unwrap();
        let spec = RunSpec {
            func: "_start".into(),
            args: vec![],
            envs: vec![],
            preopens: vec![],
            max_memory_pages,
            allowed_hosts: vec![],
            max_network_requests: 0,
        };
        run_command(&module, spec).unwrap().outcome
    }

    /// WasmEdge instantiates a declared memory larger than the cap at the cap: touching a
    /// page above it traps, and that is reported as running out of memory.
    #[test]
    fn declared_memory_above_the_cap_is_capped() {
        let touch_page_299 = r#"(module (memory (export "memory") 300)
            (func (export "_start") (i32.store (i32.const 19595264) (i32.const 1))))"#;
        assert_eq!(run_wat(touch_page_299, 256), Outcome::OutOfMemory { limit_pages: 256 });
        assert_eq!(run_wat(touch_page_299, 512), Outcome::Exited(0));
    }

    #[test]
    fn growth_beyond_the_cap_is_refused() {
        let grow = r#"(module (memory (export "memory") 1)
            (func (export "_start") (if (i32.ne (memory.grow (i32.const 100)) (i32.const -1)) (then unreachable))))"#;
        assert_eq!(run_wat(grow, 64), Outcome::Exited(0), "memory.grow past the cap must return -1");
    }

    #[test]
    fn traps_are_named() {
        assert_eq!(run_wat(r#"(module (memory 1) (func (export "_start") unreachable))"#, 256), Outcome::Trapped("unreachable".into()));
    }
}
