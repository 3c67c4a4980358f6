//! WasmEdge: loading modules (through the AOT cache) and running them.

pub mod aot;
pub mod cache;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};
use wasmedge_sdk::config::{CommonConfigOptions, ConfigBuilder, RuntimeConfigOptions};
use wasmedge_sdk::vm::SyncInst;
use wasmedge_sdk::wasi::WasiModule;
use wasmedge_sdk::{Module, Store, Vm};
use wasmedge_types::error::{CoreCommonError, CoreError, CoreExecutionError, WasmEdgeError};

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
/// `file` is where the bytes came from, when they came from a file (needed for `.so` AOT).
pub fn load_module(bytes: &[u8], file: Option<&Path>, cache: Option<&AotCache>) -> Result<LoadedModule, LoadError> {
    let origin = file.map(|p| p.display().to_string()).unwrap_or_else(|| "OCI layer".into());
    match aot::classify(bytes) {
        ModuleKind::Unknown => Err(LoadError(format!(
            "{origin}: not a WebAssembly module (no \\0asm header, {} bytes)",
            bytes.len()
        ))),
        ModuleKind::NativeAot => {
            let file = file.ok_or_else(|| LoadError(format!("{origin}: a native AOT library must be shipped as a file")))?;
            let module = Module::from_file(None, file).map_err(|e| LoadError(format!("{origin}: {e}")))?;
            Ok(LoadedModule { module, path: LoadPath::Precompiled })
        }
        ModuleKind::UniversalAot => {
            let module = Module::from_bytes(None, bytes).map_err(|e| LoadError(format!("{origin}: {e}")))?;
            Ok(LoadedModule { module, path: LoadPath::Precompiled })
        }
        ModuleKind::Bytecode => load_bytecode(bytes, &origin, cache),
    }
}

fn load_bytecode(bytes: &[u8], origin: &str, cache: Option<&AotCache>) -> Result<LoadedModule, LoadError> {
    let Some(cache) = cache else {
        log::warn!("aot: no usable AOT cache; running {origin} in the interpreter (slow)");
        return interpreted(bytes, origin);
    };
    let key = cache_key(bytes);
    match cache.get(&key) {
        Lookup::Hit(native) => match Module::from_bytes(None, &native) {
            Ok(module) => {
                log::info!("aot: cache hit for {origin} (key {key}), nothing compiled");
                return Ok(LoadedModule { module, path: LoadPath::CacheHit });
            }
            Err(e) => log::warn!("aot: cached code for {origin} (key {key}) does not load ({e}); recompiling"),
        },
        Lookup::Corrupt(why) => log::warn!("aot: cache entry for {origin} (key {key}) was corrupt ({why}); removed, recompiling"),
        Lookup::Miss => {}
    }
    // Validate before compiling so that a broken module is reported as a load error.
    let bytecode = interpreted(bytes, origin)?;
    let started = Instant::now();
    let native = match aot::compile(bytes, &cache.path_via_proc()) {
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

fn interpreted(bytes: &[u8], origin: &str) -> Result<LoadedModule, LoadError> {
    let module = Module::from_bytes(None, bytes).map_err(|e| LoadError(format!("{origin}: {e}")))?;
    Ok(LoadedModule { module, path: LoadPath::Interpreted })
}

/// sha256(module) + engine fingerprint (WasmEdge version, compile options, CPU).
pub fn cache_key(bytecode: &[u8]) -> String {
    format!("{}-{}", hex::encode(Sha256::digest(bytecode)), aot::engine_fingerprint())
}

/// What a command-mode run gets from the container.
pub struct RunSpec<'a> {
    pub func: &'a str,
    pub args: Vec<String>,
    pub envs: Vec<String>,
    /// WasmEdge preopen strings, `guest:host[:readonly]`.
    pub preopens: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Returned from the entry function or called `proc_exit`.
    Exited(i32),
    /// Trapped; the message names the trap.
    Trapped(String),
}

/// Instantiates `module` with WASI and calls its entry function once.
pub fn run_command(module: &Module, spec: &RunSpec) -> Result<Outcome> {
    let config = ConfigBuilder::new(CommonConfigOptions::default())
        .with_runtime_config(RuntimeConfigOptions::default())
        .build()?;
    let args: Vec<&str> = spec.args.iter().map(String::as_str).collect();
    let envs: Vec<&str> = spec.envs.iter().map(String::as_str).collect();
    let preopens: Vec<&str> = spec.preopens.iter().map(String::as_str).collect();
    let mut wasi = WasiModule::create(Some(args), Some(envs), Some(preopens))?;
    let wasi_name = wasi.name().to_string();
    let mut instances: HashMap<String, &mut dyn SyncInst> = HashMap::new();
    instances.insert(wasi_name, wasi.as_mut());
    let mut vm = Vm::new(Store::new(Some(&config), instances)?);
    vm.register_module(None, module.clone())
        .map_err(|e| anyhow!("instantiating module: {e}"))?;
    let result = vm.run_func(None, spec.func, []);
    drop(vm);
    match result {
        Ok(_) => Ok(Outcome::Exited(wasi.exit_code() as i32)),
        Err(e) => match *e {
            WasmEdgeError::Core(CoreError::Common(CoreCommonError::Terminated)) => {
                Ok(Outcome::Exited(wasi.exit_code() as i32))
            }
            WasmEdgeError::Core(CoreError::Execution(ref exec)) => Ok(Outcome::Trapped(trap_text(exec))),
            other => Ok(Outcome::Trapped(other.to_string())),
        },
    }
}

fn trap_text(e: &CoreExecutionError) -> String {
    match e {
        CoreExecutionError::Unreachable => "unreachable".to_string(),
        other => other.to_string(),
    }
}
