//! Ahead-of-time compilation with WasmEdge's LLVM backend.
//!
//! Output is WasmEdge's "universal wasm": the original module plus a `wasmedge` custom section
//! holding native code. It loads from bytes, and a loader that cannot use the native code (other
//! CPU, other WasmEdge) still has the bytecode, so a stale artifact never bricks a container.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use wasmedge_sdk::config::{CommonConfigOptions, CompilerConfigOptions, ConfigBuilder};
use wasmedge_sdk::{CompilerOptimizationLevel, CompilerOutputFormat};

const WASM_MAGIC: &[u8] = b"\0asm";
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Name of the custom section in which WasmEdge stores native code.
const AOT_SECTION: &[u8] = b"wasmedge";

/// What a module file holds, decided from its bytes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// Plain WebAssembly bytecode: needs compiling.
    Bytecode,
    /// Universal wasm that already carries a WasmEdge AOT section.
    UniversalAot,
    /// A native shared library produced by `wasmedge compile` with the `.so` format.
    NativeAot,
    /// Neither wasm nor an AOT artifact.
    Unknown,
}

pub fn classify(bytes: &[u8]) -> ModuleKind {
    if bytes.starts_with(ELF_MAGIC) {
        return ModuleKind::NativeAot;
    }
    if !bytes.starts_with(WASM_MAGIC) || bytes.len() < 8 {
        return ModuleKind::Unknown;
    }
    match has_custom_section(&bytes[8..], AOT_SECTION) {
        Some(true) => ModuleKind::UniversalAot,
        // A malformed section table is left for the loader to report precisely.
        Some(false) | None => ModuleKind::Bytecode,
    }
}

/// Walks the section headers (not their contents). `None` when the table is malformed.
fn has_custom_section(mut rest: &[u8], wanted: &[u8]) -> Option<bool> {
    while !rest.is_empty() {
        let id = rest[0];
        let (size, n) = read_leb_u32(&rest[1..])?;
        let body_start = 1 + n;
        let body_end = body_start.checked_add(size as usize)?;
        let body = rest.get(body_start..body_end)?;
        if id == 0 {
            let (name_len, m) = read_leb_u32(body)?;
            if body.get(m..m + name_len as usize)? == wanted {
                return Some(true);
            }
        }
        rest = &rest[body_end..];
    }
    Some(false)
}

fn read_leb_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Identifies everything that makes compiled code valid: WasmEdge version, compiler options and
/// the CPU the code was generated for. Part of every cache key.
pub fn engine_fingerprint() -> &'static str {
    static FINGERPRINT: OnceLock<String> = OnceLock::new();
    FINGERPRINT.get_or_init(|| {
        let mut h = Sha256::new();
        h.update(format!(
            "wasmedge {}.{}.{}\n",
            wasmedge_sys::utils::version_major_value(),
            wasmedge_sys::utils::version_minor_value(),
            wasmedge_sys::utils::version_patch_value()
        ));
        h.update(COMPILER_OPTIONS_TAG);
        h.update(cpu_identity());
        hex::encode(&h.finalize()[..8])
    })
}

/// Changing compile options must change the fingerprint; keep this in step with `compile`.
const COMPILER_OPTIONS_TAG: &str = "universal-wasm O3 interruptible host-cpu\n";

/// The host CPU as the code generator sees it: vendor, family, model and feature flags.
fn cpu_identity() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first_cpu = info.split("\n\n").next().unwrap_or("");
    first_cpu
        .lines()
        .filter(|l| {
            ["vendor_id", "cpu family", "model\t", "flags"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Compiles bytecode to universal wasm. `scratch_dir` receives WasmEdge's temporary files.
pub fn compile(wasm: &[u8], scratch_dir: &Path) -> Result<Vec<u8>> {
    let config = ConfigBuilder::new(CommonConfigOptions::default())
        .with_compiler_config(
            CompilerConfigOptions::new()
                .out_format(CompilerOutputFormat::Wasm)
                .optimization_level(CompilerOptimizationLevel::O3)
                .interruptible(true),
        )
        .build()
        .context("building AOT compiler config")?;
    let compiler = wasmedge_sdk::Compiler::new(Some(&config)).context("creating AOT compiler")?;
    let stem = format!(
        ".compile-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let result = compiler
        .compile_from_bytes(wasm, &stem, scratch_dir)
        .map_err(|e| anyhow::anyhow!("AOT compile failed: {e}"))
        .and_then(|out| {
            let bytes = std::fs::read(&out).context("reading AOT output");
            let _ = std::fs::remove_file(&out);
            bytes
        });
    // WasmEdge may leave intermediate files named after the output.
    if let Ok(entries) = std::fs::read_dir(scratch_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&stem) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    result
}

/// [`compile`] in a forked child process that hands the result back through a pipe.
///
/// The long-running container process never maps LLVM's heap (the compile's memory goes away
/// with the child), and a compiler crash does not take the container down: the module then
/// runs interpreted. Fork it before the process starts threads of its own: a lock another
/// thread holds at the fork (the loader's, taken by `pthread_create`) would stay held in the
/// child forever. Dropping it unwaited kills it.
pub struct CompileChild {
    pid: nix::unistd::Pid,
    output: Option<std::fs::File>,
}

impl CompileChild {
    pub fn spawn(wasm: &[u8], scratch_dir: &Path) -> Result<CompileChild> {
        use std::io::Write;
        use std::os::fd::{FromRawFd, IntoRawFd};

        use nix::unistd::{fork, pipe, ForkResult};

        let (read_end, write_end) = pipe().context("pipe for the compiler child")?;
        // SAFETY: the child only compiles, writes to the pipe and _exits; it never returns
        // into the caller's state.
        match unsafe { fork() }.context("forking the compiler child")? {
            ForkResult::Child => {
                drop(read_end);
                // SAFETY: the write end is ours alone in the child.
                let mut out = unsafe { std::fs::File::from_raw_fd(write_end.into_raw_fd()) };
                let (status, payload) = match compile(wasm, scratch_dir) {
                    Ok(native) => (0u8, native),
                    Err(e) => (1u8, format!("{e:#}").into_bytes()),
                };
                let ok = out.write_all(&[status]).and_then(|()| out.write_all(&payload)).is_ok();
                // SAFETY: _exit skips destructors of state shared with the parent, as intended.
                unsafe { libc::_exit(if ok { 0 } else { 2 }) }
            }
            ForkResult::Parent { child } => {
                drop(write_end);
                Ok(CompileChild { pid: child, output: Some(std::fs::File::from(read_end)) })
            }
        }
    }

    /// The compiled code, or why there is none.
    pub fn wait(mut self) -> Result<Vec<u8>> {
        use std::io::Read;

        use nix::sys::wait::{waitpid, WaitStatus};

        let mut reader = self.output.take().expect("waited once");
        let mut buf = Vec::new();
        let read = reader.read_to_end(&mut buf);
        let status = waitpid(self.pid, None).context("waiting for the compiler child")?;
        read.context("reading the compiler child's output")?;
        match (status, buf.split_first()) {
            (WaitStatus::Exited(_, 0), Some((0, native))) => Ok(native.to_vec()),
            (_, Some((1, message))) => bail!("{}", String::from_utf8_lossy(message)),
            (status, _) => bail!("AOT compile failed: compiler process ended with {status:?}"),
        }
    }
}

impl Drop for CompileChild {
    fn drop(&mut self) {
        if self.output.is_some() {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (module) with one custom section named `name`.
    fn module_with_custom(name: &[u8]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(b"payload");
        m.push(0);
        m.push(body.len() as u8);
        m.extend(body);
        m
    }

    #[test]
    fn classifies_kinds() {
        assert_eq!(classify(b"\0asm\x01\0\0\0"), ModuleKind::Bytecode);
        assert_eq!(classify(&module_with_custom(b"name")), ModuleKind::Bytecode);
        assert_eq!(classify(&module_with_custom(b"wasmedge")), ModuleKind::UniversalAot);
        assert_eq!(classify(b"\x7fELF\x02\x01"), ModuleKind::NativeAot);
        assert_eq!(classify(b"hello"), ModuleKind::Unknown);
        assert_eq!(classify(b""), ModuleKind::Unknown);
    }

    #[test]
    fn truncated_section_table_is_bytecode_for_the_loader_to_reject() {
        let mut m = module_with_custom(b"wasmedge");
        m.truncate(m.len() - 3);
        assert_eq!(classify(&m), ModuleKind::Bytecode);
    }

    #[test]
    fn child_compiles_valid_and_reports_invalid_modules() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = wasmedge_sdk::wat2wasm(br#"(module (func (export "_start")))"#).unwrap();
        let native = CompileChild::spawn(&wasm, dir.path()).unwrap().wait().unwrap();
        assert_eq!(classify(&native), ModuleKind::UniversalAot);
        let err = CompileChild::spawn(b"\0asm\x01\0\0\0\x01\xff", dir.path()).unwrap().wait().unwrap_err();
        assert!(format!("{err:#}").contains("AOT compile failed"), "{err:#}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "scratch files left");
    }

    #[test]
    fn an_unwaited_compile_child_is_killed_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = wasmedge_sdk::wat2wasm(br#"(module (func (export "_start")))"#).unwrap();
        let child = CompileChild::spawn(&wasm, dir.path()).unwrap();
        let pid = child.pid;
        drop(child);
        // Reaped: no such child any more.
        assert_eq!(nix::sys::wait::waitpid(pid, None).unwrap_err(), nix::errno::Errno::ECHILD);
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(engine_fingerprint(), engine_fingerprint());
        assert_eq!(engine_fingerprint().len(), 16);
    }
}
