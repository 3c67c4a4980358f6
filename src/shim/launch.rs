//! What a container will run, decided in the shim daemon before the container exists.
//!
//! The spec (from the bundle containerd wrote), the node's policy settings and the module
//! (read through [`ImageFs`] or from containerd's content store) are all at hand here, so the
//! container's init process gets a finished [`Launch`] and needs nothing of the node.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::image_fs::ImageFs;
use super::oci_layers::OciModule;
use super::{node, node_cache};
use crate::engine::wasi::Preopen;
use crate::engine::{
    self, aot, declared, exit_code, stack, LoadError, ModuleCode, PreparedModule, RunSpec,
};
use crate::http::{self, Mode};
use crate::policy::{self, WasiSandboxPolicy};

/// CRI marks the pod's sandbox container with this annotation.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

#[derive(Debug, Serialize, Deserialize)]
pub enum Launch {
    /// Exec the entrypoint as runc would: the pod's sandbox (pause) container, or a native
    /// container the node admin allows.
    Native,
    Wasm(Box<WasmLaunch>),
    /// Refused before anything of the image runs: the container reports `message` and exits.
    Refused {
        message: String,
        exit_code: i32,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WasmLaunch {
    pub module: PreparedModule,
    /// [`stack::ANCHOR_WAT`] compiled by this node, when the module runs as native code: the
    /// container installs the stack guard with it (see `engine::stack`).
    pub fault_anchor: Option<PreparedModule>,
    pub run: RunSpec,
    pub mode: Mode,
    pub timeout: Duration,
}

impl Launch {
    fn refused(message: impl Into<String>, exit_code: i32) -> Launch {
        let message = message.into();
        log::error!("{message}");
        Launch::Refused { message, exit_code }
    }
}

/// The launch of the container of `bundle` (spec `spec`); `layers` are the wasm layers
/// of its image when it is a wasm OCI artifact.
pub fn prepare(bundle: &Path, spec: &Spec, layers: Vec<OciModule>) -> Launch {
    let node = node();
    let annotations: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
    if annotations.get(CONTAINER_TYPE).map(String::as_str) == Some("sandbox") {
        return Launch::Native;
    }
    let args: Vec<String> = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let arg0 = args.first().map(String::as_str).unwrap_or("");
    let (module_path, func) = arg0.split_once('#').unwrap_or((arg0, "_start"));
    let fs = match ImageFs::open(bundle, spec) {
        Ok(fs) => fs,
        Err(e) => {
            return Launch::refused(
                format!("cannot read the container's rootfs: {e}"),
                exit_code::LOAD_FAILED,
            )
        }
    };
    let file = if layers.is_empty() {
        fs.find(module_path)
    } else {
        None
    };
    if let Some(f) = file.as_ref().filter(|f| f.is_native_executable()) {
        if node.config.allow_native_containers {
            log::info!(
                "running {} natively (allow_native_containers)",
                f.path.display()
            );
            return Launch::Native;
        }
        return Launch::refused(
            format!(
                "{}: {} is a native executable; RuntimeClass wasmedge runs WebAssembly modules only (a node admin may set allow_native_containers)",
                engine::NATIVE_CODE_REFUSED,
                f.path.display()
            ),
            exit_code::LOAD_FAILED,
        );
    }
    let (policy, mode) = match settings(&annotations) {
        Ok(settings) => settings,
        Err(message) => return Launch::refused(message, exit_code::BAD_POLICY),
    };
    log::info!("sandbox policy: {}", policy.summary());
    let trust = node.config.trust_image_native_code;
    let compile = |bytecode: &[u8]| {
        aot::compile_in_zygote(
            bytecode.to_vec(),
            &node.config.aot_cache_dir,
            node.config.compile_budget(),
        )
    };
    // What a module declares, checked before anything is compiled or instantiated.
    let check_declared = |bytes: &[u8], origin: &str| {
        declared::check_tables(bytes, origin, policy.max_memory_pages)?;
        match mode {
            Mode::Http(_) => declared::check_no_start_function(bytes, origin),
            Mode::Command => Ok(()),
        }
    };
    let module = match (layers.as_slice(), file) {
        ([layer], _) => {
            let origin = format!("OCI layer {}", layer.digest);
            check_declared(&layer.bytes, &origin).and_then(|()| {
                engine::prepare_module(&layer.bytes, &origin, None, node_cache(), trust, compile)
            })
        }
        ([], Some(mut file)) => match file.read_all(node.config.max_module_bytes) {
            Ok(bytes) => {
                let origin = file.path.display().to_string();
                check_declared(&bytes, &origin).and_then(|()| {
                    engine::prepare_module(
                        &bytes,
                        &origin,
                        Some(&file.path),
                        node_cache(),
                        trust,
                        compile,
                    )
                })
            }
            Err(e) => Err(LoadError(format!("{}: {e}", file.path.display()))),
        },
        ([], None) => Err(LoadError(format!(
            "{module_path}: module not found in the image"
        ))),
        (_, _) => Err(LoadError(
            "the image has several wasm layers; one module per container is supported".into(),
        )),
    };
    let module = match module {
        Ok(module) => module,
        Err(e) => return Launch::refused(e.to_string(), exit_code::LOAD_FAILED),
    };
    log::info!("module ready ({:?}), calling {func}", module.path);
    let fault_anchor = match module.code {
        ModuleCode::Native(_) => fault_anchor(&compile),
        _ => None,
    };
    let envs = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let run = RunSpec {
        func: func.to_string(),
        args,
        envs: allowed_envs(&envs, &policy),
        preopens: preopens(&policy, &fs),
        max_memory_pages: policy.max_memory_pages,
        allowed_hosts: policy.allowed_hosts.clone(),
        max_network_requests: policy.max_network_requests,
        max_disk_bytes: policy.max_disk_bytes,
        disk: None,
    };
    Launch::Wasm(Box::new(WasmLaunch {
        module,
        fault_anchor,
        run,
        mode,
        timeout: Duration::from_millis(policy.execution_timeout_ms),
    }))
}

/// Compiles bytecode the way the node does (see [`aot::compile_in_zygote`]).
type Compile = dyn Fn(&[u8]) -> Result<Vec<u8>, aot::CompileError>;

/// The stack guard's anchor module, compiled like any module (once per node, then cached).
fn fault_anchor(compile: &Compile) -> Option<PreparedModule> {
    let Some(wasm) = stack::anchor_wasm() else {
        log::error!("stack guard: the anchor module does not assemble");
        return None;
    };
    match engine::prepare_module(
        &wasm,
        "the stack guard's anchor",
        None,
        node_cache(),
        false,
        compile,
    ) {
        Ok(anchor) if matches!(anchor.code, ModuleCode::Native(_)) => Some(anchor),
        Ok(_) => {
            log::warn!(
                "stack guard: the anchor could not be compiled; deep recursion ends the container"
            );
            None
        }
        Err(e) => {
            log::error!("stack guard: {e}");
            None
        }
    }
}

/// This container's policy and mode: its annotations resolved against the node's presets and
/// ceiling. An error is the message to show the user.
fn settings(annotations: &HashMap<String, String>) -> Result<(WasiSandboxPolicy, Mode), String> {
    let settings = node().policies.as_ref().map_err(|e| {
        format!(
            "the node's sandbox policy config is invalid: {e}; fix the node config (see README)"
        )
    })?;
    let policy = policy::resolve(settings, annotations).map_err(|e| e.to_string())?;
    let mode = http::settings::from_annotations(annotations, &node().config.http_ceiling)
        .map_err(|e| e.to_string())?;
    Ok((policy, mode))
}

/// Only the policy's variables reach the module; each dropped one is logged by name.
fn allowed_envs(envs: &[String], policy: &WasiSandboxPolicy) -> Vec<(String, String)> {
    let mut kept = vec![];
    for entry in envs {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        if policy
            .allowed_env_vars
            .iter()
            .any(|allowed| allowed == name)
        {
            kept.push((name.to_string(), value.to_string()));
        } else {
            log::info!("env var not allowed: {name}");
        }
    }
    kept
}

/// The policy's directories. The container opens them (its mounts are in place only there):
/// one it does not have is left out, one that resolves anywhere unsafe refuses the start.
fn preopens(policy: &WasiSandboxPolicy, fs: &ImageFs) -> Vec<Preopen> {
    for d in &policy.allowed_dirs {
        if !fs.is_dir(Path::new(&d.host_path)) {
            log::info!("allowed dir {} is not a directory of the image; {} is available only if a volume provides it", d.host_path, d.guest_path);
        }
    }
    policy
        .allowed_dirs
        .iter()
        .map(|d| Preopen {
            guest: d.guest_path.clone(),
            host: d.host_path.clone().into(),
            readonly: d.readonly,
            bound: None,
        })
        .collect()
}
