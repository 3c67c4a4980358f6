//! Ahead-of-time compilation with WasmEdge's LLVM backend.
//!
//! Output is WasmEdge's "universal wasm": the original module plus a `wasmedge` custom section
//! holding native code. It loads from bytes, and a loader that cannot use the native code (other
//! CPU, other WasmEdge) still has the bytecode, so a stale artifact never bricks a container.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
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
        let (id, name, len) = section_header(rest)?;
        if id == 0 && name == Some(wanted) {
            return Some(true);
        }
        rest = &rest[len..];
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
    FINGERPRINT
        .get_or_init(|| fingerprint_of(&engine_version(), COMPILER_OPTIONS_TAG, &cpu_identity()))
}

/// The version of the libwasmedge this process loaded, read from the library at run time: the
/// AOT format follows it (0.14 wrote binary version 1, 0.17 writes 2 and would run a version 1
/// section in the interpreter), so cache entries of another engine are never looked up.
pub fn engine_version() -> String {
    format!(
        "{}.{}.{}",
        wasmedge_sys::utils::version_major_value(),
        wasmedge_sys::utils::version_minor_value(),
        wasmedge_sys::utils::version_patch_value()
    )
}

fn fingerprint_of(version: &str, options: &str, cpu: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("wasmedge {version}\n"));
    h.update(options);
    h.update(cpu);
    hex::encode(&h.finalize()[..8])
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

/// Why no native code came out of [`compile_checked`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompileError {
    /// The module is not valid WebAssembly: the loader's or validator's message.
    Invalid(String),
    /// The compiler failed on a valid module (the module can still be interpreted).
    Failed(String),
    /// The compiler ran out of its [`CompileBudget`] (or died trying): the module does not run
    /// on this node, interpreting it would cost even more.
    OverBudget(String),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Invalid(m) | CompileError::Failed(m) | CompileError::OverBudget(m) => {
                f.write_str(m)
            }
        }
    }
}

/// What one compile may cost the node (node config `max_compile_seconds`,
/// `max_compile_memory_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompileBudget {
    /// Wall-clock and CPU seconds.
    pub seconds: u64,
    /// Private memory of the compiler process (RLIMIT_DATA).
    pub memory_bytes: u64,
}

impl std::fmt::Display for CompileBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max_compile_seconds {}, max_compile_memory_bytes {} MiB",
            self.seconds,
            self.memory_bytes >> 20
        )
    }
}

/// The loader configuration for machine code: since WasmEdge 0.17 the loader uses a module's
/// AOT section (or a shared library's code) only in AOT run mode; in the default mode the same
/// bytes load as bytecode and run in the interpreter, silently.
pub fn native_loader_config() -> wasmedge_sdk::WasmEdgeResult<wasmedge_sdk::config::Config> {
    ConfigBuilder::new(CommonConfigOptions::default().run_mode(wasmedge_sdk::RunMode::Aot)).build()
}

/// Validates `wasm`, then compiles it: an invalid module is reported as such instead of as a
/// compiler failure.
pub fn compile_checked(wasm: &[u8], scratch_dir: &Path) -> Result<Vec<u8>, CompileError> {
    wasmedge_sdk::Module::from_bytes(None, wasm)
        .map_err(|e| CompileError::Invalid(e.to_string()))?;
    compile(wasm, scratch_dir).map_err(|e| CompileError::Failed(format!("{e:#}")))
}

/// [`compile_checked`] in a fresh process forked from the shim's zygote (forked itself while the
/// shim was single-threaded): LLVM's memory goes away with it, a compiler crash only ends it,
/// and the untrusted bytecode is never parsed by the shim daemon. The process confines itself
/// first (see [`confine_compiler`]). `scratch_parent` receives its private scratch directory,
/// removed afterwards. Blocks until it is done, at most `budget.seconds` (then the kernel ends
/// the process, as it does when the process needs more memory than the budget).
pub fn compile_in_zygote(
    wasm: Vec<u8>,
    scratch_parent: &Path,
    budget: CompileBudget,
) -> Result<Vec<u8>, CompileError> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Job {
        #[serde(with = "serde_bytes")]
        wasm: Vec<u8>,
        scratch_dir: std::path::PathBuf,
        budget: CompileBudget,
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Compiled(#[serde(with = "serde_bytes")] Vec<u8>);
    fn run(job: Job) -> Result<Compiled, CompileError> {
        confine_compiler(&job.scratch_dir, job.budget).map_err(|e| {
            CompileError::Failed(format!(
                "AOT compile failed: cannot confine the compiler: {e}"
            ))
        })?;
        compile_checked(&job.wasm, Path::new("/")).map(Compiled)
    }
    let scratch_dir = scratch_parent.join(format!(
        ".compile-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    if let Err(e) = std::fs::create_dir(&scratch_dir) {
        return Err(CompileError::Failed(format!(
            "AOT compile failed: scratch dir {}: {e}",
            scratch_dir.display()
        )));
    }
    let job = Job {
        wasm,
        scratch_dir: scratch_dir.clone(),
        budget,
    };
    let started = std::time::Instant::now();
    let worker = zygote::Zygote::global().spawn();
    let result = match worker.try_run(run, job) {
        Ok(result) => result.map(|Compiled(native)| native),
        // The kernel's end of an over-budget compile (SIGALRM, SIGXCPU; an allocation past
        // RLIMIT_DATA aborts LLVM) shows here only as the process having ended.
        Err(_) if started.elapsed().as_secs() >= budget.seconds => Err(CompileError::OverBudget(format!(
            "AOT compile failed: the compiler ran out of time after {} s (node budget: {budget}); make the module smaller or raise max_compile_seconds in the node config",
            started.elapsed().as_secs()
        ))),
        Err(e) => Err(CompileError::OverBudget(format!(
            "AOT compile failed: the compiler process ended ({e}), likely out of memory (node budget: {budget}); make the module smaller or raise max_compile_memory_bytes in the node config"
        ))),
    };
    drop(worker);
    let _ = std::fs::remove_dir_all(&scratch_dir);
    result
}

/// The uid and gid the compiler runs as (`nobody`).
const COMPILER_ID: u32 = 65534;
/// Size of the compiler's scratch file system (its output is a few times the module's size).
const COMPILER_SCRATCH_BYTES: u64 = 2 << 30;

/// Leaves the compiler process with nothing to attack should a module exploit WasmEdge's
/// loader or LLVM: no network, no file system but a private tmpfs over its scratch directory
/// (its root; no other process of the node sees it, so none can swap its output), not root,
/// no way back to privileges, and the node's compile budget (wall and CPU time, memory).
fn confine_compiler(scratch_dir: &Path, budget: CompileBudget) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::resource::{setrlimit, Resource};
    use nix::unistd::{chdir, chroot, setgid, setgroups, setuid, Gid, Uid};
    let (uid, gid) = (Uid::from_raw(COMPILER_ID), Gid::from_raw(COMPILER_ID));
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)?;
    // Nothing mounted here propagates back to the node.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let options =
        format!("mode=0700,uid={COMPILER_ID},gid={COMPILER_ID},size={COMPILER_SCRATCH_BYTES}");
    mount(
        Some("tmpfs"),
        scratch_dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )?;
    let seconds = budget.seconds.max(1);
    setrlimit(Resource::RLIMIT_CPU, seconds, seconds)?;
    setrlimit(
        Resource::RLIMIT_DATA,
        budget.memory_bytes,
        budget.memory_bytes,
    )?;
    // SAFETY: plain syscall; SIGALRM's default action ends the process at the wall-clock bound.
    unsafe { libc::alarm(seconds.min(u32::MAX as u64) as u32) };
    chroot(scratch_dir)?;
    chdir("/")?;
    setgroups(&[])?;
    setgid(gid)?;
    setuid(uid)?;
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `wasm` without WasmEdge AOT sections: an image's module is always compiled from its
/// bytecode on the node, never run with machine code it brought along. A malformed section
/// table is returned as it is, for the loader to reject.
pub fn strip_aot_sections(wasm: &[u8]) -> Vec<u8> {
    if !wasm.starts_with(WASM_MAGIC) || wasm.len() < 8 {
        return wasm.to_vec();
    }
    let mut out = wasm[..8].to_vec();
    let mut rest = &wasm[8..];
    while !rest.is_empty() {
        let Some((id, name, len)) = section_header(rest) else {
            return wasm.to_vec();
        };
        if !(id == 0 && name == Some(AOT_SECTION)) {
            out.extend_from_slice(&rest[..len]);
        }
        rest = &rest[len..];
    }
    out
}

/// The id, custom-section name and whole length (header included) of the section at the start
/// of `bytes`; None when it is malformed.
fn section_header(bytes: &[u8]) -> Option<(u8, Option<&[u8]>, usize)> {
    let id = *bytes.first()?;
    let (size, n) = read_leb_u32(&bytes[1..])?;
    let body_start = 1 + n;
    let body_end = body_start.checked_add(size as usize)?;
    let body = bytes.get(body_start..body_end)?;
    let name = if id == 0 {
        let (name_len, m) = read_leb_u32(body)?;
        Some(body.get(m..m.checked_add(name_len as usize)?)?)
    } else {
        None
    };
    Some((id, name, body_end))
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
        assert_eq!(
            classify(&module_with_custom(b"wasmedge")),
            ModuleKind::UniversalAot
        );
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
    fn compile_checked_tells_invalid_modules_from_compiler_failures() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = wasmedge_sdk::wat2wasm(br#"(module (func (export "_start")))"#).unwrap();
        let native = compile_checked(&wasm, dir.path()).unwrap();
        assert_eq!(classify(&native), ModuleKind::UniversalAot);
        assert_eq!(
            strip_aot_sections(&native),
            wasm.to_vec(),
            "compiled output carries the bytecode it came from"
        );
        let err = compile_checked(b"\0asm\x01\0\0\0\x01\xff", dir.path()).unwrap_err();
        assert!(matches!(err, CompileError::Invalid(_)), "{err:?}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "scratch files left"
        );
    }

    /// The zygote is a fork of the test process: safe only while no other test thread is inside
    /// WasmEdge (a lock it holds, its logger's, would stay held in the fork and the compiler
    /// would hang). So the checks run in a fresh copy of this binary that runs this test alone.
    #[test]
    fn the_zygote_compiler_is_confined_and_compiles() {
        if !crate::test_support::in_a_process_of_its_own(
            "engine::aot::tests::the_zygote_compiler_is_confined_and_compiles",
        ) {
            return;
        }
        let parent = tempfile::tempdir().unwrap();
        let budget = CompileBudget {
            seconds: 120,
            memory_bytes: 1 << 30,
        };
        let wasm = wasmedge_sdk::wat2wasm(br#"(module (func (export "_start")))"#).unwrap();
        let native = compile_in_zygote(wasm.to_vec(), parent.path(), budget).unwrap();
        assert_eq!(strip_aot_sections(&native), wasm.to_vec());
        assert!(matches!(
            compile_in_zygote(b"\0asm\x01\0\0\0\x01\xff".to_vec(), parent.path(), budget),
            Err(CompileError::Invalid(_))
        ));
        // LLVM cannot even start in 8 MiB of heap: the budget holds, and says which one it was.
        let starved = CompileBudget {
            seconds: 120,
            memory_bytes: 8 << 20,
        };
        match compile_in_zygote(wasm.to_vec(), parent.path(), starved) {
            Err(CompileError::OverBudget(m)) => {
                assert!(m.contains("max_compile_memory_bytes 8 MiB"), "{m}")
            }
            other => panic!("expected the memory budget to end the compile: {other:?}"),
        }
        assert_eq!(
            std::fs::read_dir(parent.path()).unwrap().count(),
            0,
            "scratch dirs removed"
        );

        // What a compromised compiler process could still do.
        fn probe(dir: std::path::PathBuf) -> Result<(u32, bool, bool, bool), String> {
            confine_compiler(
                &dir,
                CompileBudget {
                    seconds: 60,
                    memory_bytes: 1 << 30,
                },
            )
            .map_err(|e| e.to_string())?;
            let uid = nix::unistd::getuid().as_raw();
            let sees_files = std::path::Path::new("/etc/passwd").exists()
                || std::path::Path::new("/proc/self").exists();
            let network = std::net::TcpStream::connect_timeout(
                &"127.0.0.1:22".parse().unwrap(),
                std::time::Duration::from_millis(200),
            )
            .map(|_| true)
            .unwrap_or_else(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
            let regains_root = nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_ok();
            std::fs::write("/output", b"compiled")
                .map_err(|e| format!("scratch not writable: {e}"))?;
            Ok((uid, sees_files, network, regains_root))
        }
        let dir = parent.path().join("probe");
        std::fs::create_dir(&dir).unwrap();
        let worker = zygote::Zygote::global().spawn();
        let (uid, sees_files, network, regains_root) =
            worker.try_run(probe, dir.clone()).unwrap().unwrap();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the compiler's files are in its own tmpfs, not on the node"
        );
        assert_eq!(uid, COMPILER_ID);
        assert!(
            !sees_files,
            "the compiler must see only its scratch directory"
        );
        assert!(!network, "the compiler has no network (not even loopback)");
        assert!(!regains_root);
    }

    #[test]
    fn aot_sections_are_stripped_and_nothing_else() {
        let plain = module_with_custom(b"name");
        assert_eq!(strip_aot_sections(&plain), plain);
        let mut patched = plain.clone();
        patched.extend_from_slice(&module_with_custom(b"wasmedge")[8..]);
        assert_eq!(classify(&patched), ModuleKind::UniversalAot);
        assert_eq!(strip_aot_sections(&patched), plain);
        let mut broken = module_with_custom(b"wasmedge");
        broken.truncate(broken.len() - 3);
        assert_eq!(
            strip_aot_sections(&broken),
            broken,
            "malformed: left for the loader to reject"
        );
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(engine_fingerprint(), engine_fingerprint());
        assert_eq!(engine_fingerprint().len(), 16);
    }

    #[test]
    fn the_engine_is_the_pinned_wasmedge_and_its_version_keys_the_cache() {
        // The library loaded at run time, not only the headers built against.
        assert_eq!(engine_version(), "0.17.1");
        let cpu = cpu_identity();
        assert_eq!(
            engine_fingerprint(),
            fingerprint_of("0.17.1", COMPILER_OPTIONS_TAG, &cpu)
        );
        assert_ne!(
            fingerprint_of("0.14.1", COMPILER_OPTIONS_TAG, &cpu),
            fingerprint_of("0.17.1", COMPILER_OPTIONS_TAG, &cpu),
            "entries of another engine must never be looked up"
        );
    }
}
