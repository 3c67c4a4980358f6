use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use wasmedge_sdk::{wat2wasm, Module};

use super::abi::{errno, oflags, rights};
use super::funcs;
use super::mem::Mem;
use super::sys;
use super::*;

// ---------------------------------------------------------------- helpers

fn hello_module() -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/wasm/hello.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make wasm` in the project root",
        path.display()
    );
    Module::from_file(None, &path).expect("load hello.wasm")
}

fn wat_module(wat: &str) -> Module {
    let bytes = wat2wasm(wat.as_bytes()).expect("valid WAT");
    Module::from_bytes(None, bytes).expect("valid module")
}

fn config(args: &[&str]) -> WasiConfig {
    let mut all = vec!["hello".to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    WasiConfig {
        args: all,
        stdout: Stdio::Buffer(Vec::new()),
        stderr: Stdio::Buffer(Vec::new()),
        ..Default::default()
    }
}

struct Ran {
    result: Result<(), Box<WasmEdgeError>>,
    ctx: WasiCtx,
    stdout: String,
    stderr: String,
}

fn run_module(module: &Module, cfg: WasiConfig) -> Ran {
    let ctx = WasiCtx::new(cfg).expect("ctx");
    let (result, mut ctx) = run(module, "_start", ctx, None);
    let stdout = String::from_utf8_lossy(&ctx.take_stdout()).into_owned();
    let stderr = String::from_utf8_lossy(&ctx.take_stderr()).into_owned();
    Ran {
        result,
        ctx,
        stdout,
        stderr,
    }
}

fn run_hello(cfg: WasiConfig) -> Ran {
    run_module(&hello_module(), cfg)
}

fn preopen(guest: &str, host: &Path, readonly: bool) -> Preopen {
    Preopen {
        guest: guest.into(),
        host: host.to_path_buf(),
        readonly,
        bound: None,
    }
}

// ---------------------------------------------------------------- the real hello module

#[test]
fn hello_prints_to_captured_stdout() {
    let r = run_hello(config(&[]));
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(r.stdout, "hello from wasmedge\n");
    assert_eq!(r.stderr, "");
    assert_eq!(r.ctx.exit_code(), Some(0));
    assert!(r.ctx.violations().is_empty());
}

#[test]
fn exit_code_is_reported() {
    let r = run_hello(config(&["exit", "7"]));
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(r.ctx.exit_code(), Some(7));
    assert_eq!(r.stdout, "exiting with 7\n");
}

#[test]
fn args_are_passed_exactly() {
    let r = run_hello(config(&["args", "a b", "", "ü=ñ", "--x"]));
    assert_eq!(r.ctx.exit_code(), Some(0));
    assert_eq!(
        r.stdout,
        "argc=6\nargv[0]=hello\nargv[1]=args\nargv[2]=a b\nargv[3]=\nargv[4]=ü=ñ\nargv[5]=--x\n"
    );
}

#[test]
fn environment_is_exactly_the_given_one() {
    let mut cfg = config(&["env", "FOO", "EMPTY", "HOME", "PATH"]);
    cfg.envs = vec![
        ("FOO".into(), "bar=baz".into()),
        ("EMPTY".into(), String::new()),
    ];
    let r = run_hello(cfg);
    assert_eq!(r.ctx.exit_code(), Some(0));
    assert_eq!(
        r.stdout,
        "FOO=bar=baz\nEMPTY=\nHOME is unset\nPATH is unset\n"
    );

    let mut cfg = config(&["env"]);
    cfg.envs = vec![("B".into(), "2".into()), ("A".into(), "1".into())];
    let r = run_hello(cfg);
    assert_eq!(r.stdout, "A=1\nB=2\nenvc=2\n");
}

#[test]
fn cat_reads_a_file_in_a_preopen() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "file contents\nline 2\n").unwrap();
    let mut cfg = config(&["cat", "/data/f.txt"]);
    cfg.preopens = vec![preopen("/data", dir.path(), true)];
    let r = run_hello(cfg);
    assert_eq!(r.ctx.exit_code(), Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "file contents\nline 2\n");
    assert!(r.ctx.violations().is_empty(), "{:?}", r.ctx.violations());
}

#[test]
fn write_into_readonly_preopen_is_a_violation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.txt");
    std::fs::write(&file, "original").unwrap();
    let mut cfg = config(&["write", "/config/x.txt", "overwritten"]);
    cfg.preopens = vec![preopen("/config", dir.path(), true)];
    let r = run_hello(cfg);
    assert_eq!(r.ctx.exit_code(), Some(2));
    assert!(
        r.stderr.starts_with("write /config/x.txt: "),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.ctx.violations(),
        ["sandbox violation: fs write /config/x.txt"]
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "original");
    // Reading it is still fine.
    let mut cfg = config(&["cat", "/config/x.txt"]);
    cfg.preopens = vec![preopen("/config", dir.path(), true)];
    let r = run_hello(cfg);
    assert_eq!(r.stdout, "original");
    assert!(r.ctx.violations().is_empty());
}

#[test]
fn path_outside_preopens_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&["cat", "/etc/passwd"]);
    cfg.preopens = vec![preopen("/data", dir.path(), false)];
    let r = run_hello(cfg);
    assert_eq!(r.ctx.exit_code(), Some(2));
    assert!(r.stderr.contains("cat /etc/passwd: "), "{}", r.stderr);
    // ENOTCAPABLE, as WASI runtimes answer; the violation below names the path.
    assert!(
        r.stderr.contains("Capabilities insufficient (os error 76)"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
    assert_eq!(r.ctx.violations(), ["permission denied: /etc/passwd"]);

    // Relative paths resolve from "/" too.
    let r = run_hello(config(&["cat", "etc/hostname"]));
    assert_eq!(r.ctx.exit_code(), Some(2));
    assert_eq!(r.ctx.violations(), ["permission denied: /etc/hostname"]);
}

#[test]
fn dotdot_and_symlink_escapes_are_denied() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret.txt"), "secret").unwrap();
    let inner = outer.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", inner.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", inner.join("rel-link")).unwrap();
    std::fs::write(inner.join("ok.txt"), "ok").unwrap();
    std::os::unix::fs::symlink("ok.txt", inner.join("good-link")).unwrap();

    for (path, violation) in [
        (
            "/data/../secret.txt",
            "permission denied: /data/../secret.txt",
        ),
        ("/data/abs-link", "permission denied: /data/abs-link"),
        ("/data/rel-link", "permission denied: /data/rel-link"),
    ] {
        let mut cfg = config(&["cat", path]);
        cfg.preopens = vec![preopen("/data", &inner, false)];
        let r = run_hello(cfg);
        assert_eq!(r.ctx.exit_code(), Some(2), "{path}");
        assert_eq!(r.stdout, "", "{path}");
        assert_eq!(r.ctx.violations(), [violation], "{path}");
    }
    // A symlink staying inside works.
    let mut cfg = config(&["cat", "/data/good-link"]);
    cfg.preopens = vec![preopen("/data", &inner, false)];
    let r = run_hello(cfg);
    assert_eq!(r.stdout, "ok");
    assert!(r.ctx.violations().is_empty());
}

#[test]
fn write_into_rw_preopen_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&["write", "/out/new.txt", "written by wasm"]);
    cfg.preopens = vec![
        preopen("/config", dir.path(), true),
        preopen("/out", dir.path(), false),
    ];
    let r = run_hello(cfg);
    assert_eq!(r.ctx.exit_code(), Some(0), "stderr: {}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
        "written by wasm"
    );
    assert!(r.ctx.violations().is_empty());
}

#[test]
fn sleep_uses_poll_oneoff() {
    let started = Instant::now();
    let r = run_hello(config(&["sleep", "0.1"]));
    let took = started.elapsed();
    assert_eq!(r.ctx.exit_code(), Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "sleeping 0.1\nslept\n");
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn stderr_is_captured_separately() {
    let r = run_hello(config(&["stderr", "oops", "here"]));
    assert_eq!(r.ctx.exit_code(), Some(0));
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr, "oops here\n");
}

#[test]
fn trap_is_an_error_not_an_exit() {
    let r = run_hello(config(&["trap"]));
    let err = r.result.expect_err("a trap must be an error");
    assert!(!is_terminated(&err), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert_eq!(r.ctx.exit_code(), None);
}

#[test]
fn grow_memory_works_with_our_wasi() {
    let r = run_hello(config(&["grow", "3"]));
    assert_eq!(r.ctx.exit_code(), Some(0));
    assert!(r.stdout.starts_with("grow ok "), "{}", r.stdout);
}

#[test]
fn import_object_can_be_reused_across_runs() {
    let module = hello_module();
    let mut object = import_object(WasiCtx::default()).unwrap();
    for code in ["3", "4"] {
        let ctx = WasiCtx::new(config(&["exit", code])).unwrap();
        let (result, mut ctx) = run_reusing(&mut object, &module, "_start", ctx, None);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(ctx.exit_code(), Some(code.parse().unwrap()));
        assert_eq!(
            ctx.take_stdout(),
            format!("exiting with {code}\n").as_bytes()
        );
    }
    let ctx = WasiCtx::new(config(&["trap"])).unwrap();
    let (result, ctx) = run_reusing(&mut object, &module, "_start", ctx, None);
    assert!(result.is_err());
    assert_eq!(ctx.exit_code(), None);
    let ctx = WasiCtx::new(config(&[])).unwrap();
    let (result, mut ctx) = run_reusing(&mut object, &module, "_start", ctx, None);
    assert!(result.is_ok());
    assert_eq!(ctx.take_stdout(), b"hello from wasmedge\n");
}

#[test]
fn missing_function_is_an_error() {
    let ctx = WasiCtx::new(config(&[])).unwrap();
    let (result, ctx) = run(&hello_module(), "no_such_function", ctx, None);
    assert!(result.is_err());
    assert_eq!(ctx.exit_code(), None);
}

#[test]
fn preopen_of_missing_dir_fails_to_build() {
    let mut cfg = config(&[]);
    cfg.preopens = vec![preopen("/x", Path::new("/definitely/not/here"), false)];
    let err = WasiCtx::new(cfg).unwrap_err();
    assert!(err.to_string().contains("/definitely/not/here"), "{err}");
}

// ---------------------------------------------------------------- WAT modules

const STDIN_ECHO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $n i32)
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 7))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $proc_exit (i32.const 100))))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.eqz (local.get $n)) (then (call $proc_exit (i32.const 0))))
      (i32.store (i32.const 4) (local.get $n))
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12))
        (then (call $proc_exit (i32.const 101))))
      (br $again))))
"#;

#[test]
fn stdin_buffer_is_readable() {
    let input: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
    let mut cfg = config(&[]);
    cfg.stdin = Stdio::Buffer(input.clone());
    let mut r = run_module(&wat_module(STDIN_ECHO), cfg);
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(r.ctx.exit_code(), Some(0));
    assert_eq!(r.stdout.as_bytes(), &input[..]);
    // Null stdin: immediate EOF.
    let mut cfg = config(&[]);
    cfg.stdin = Stdio::Null;
    r = run_module(&wat_module(STDIN_ECHO), cfg);
    assert_eq!(r.ctx.exit_code(), Some(0));
    assert_eq!(r.stdout, "");
}

/// Out-of-bounds pointers give EFAULT (21), never a crash. Results are written to stdout as bytes.
const FAULTS: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $put (param $i i32) (param $v i32) (i32.store8 (i32.add (i32.const 2048) (local.get $i)) (local.get $v)))
  (func (export "_start")
    ;; iovec array itself out of bounds
    (call $put (i32.const 0) (call $fd_write (i32.const 1) (i32.const 65532) (i32.const 1) (i32.const 16)))
    ;; iovec buffer out of bounds
    (i32.store (i32.const 0) (i32.const 65000))
    (i32.store (i32.const 4) (i32.const 1000))
    (call $put (i32.const 1) (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
    ;; result pointer out of bounds
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 0))
    (call $put (i32.const 2) (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 65533)))
    ;; huge count (overflowing count*8)
    (call $put (i32.const 3) (call $fd_write (i32.const 1) (i32.const 0) (i32.const 0x20000001) (i32.const 16)))
    (call $put (i32.const 4) (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const -1)))
    (call $put (i32.const 5) (call $random_get (i32.const 65000) (i32.const 1000)))
    (call $put (i32.const 6) (call $args_sizes_get (i32.const 0) (i32.const 65535)))
    (call $put (i32.const 7) (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 65530)))
    (call $put (i32.const 8) (call $path_open (i32.const 3) (i32.const 0) (i32.const 65530) (i32.const 100)
                                (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)))
    (call $put (i32.const 9) (call $poll_oneoff (i32.const 65500) (i32.const 0) (i32.const 1) (i32.const 16)))
    ;; valid calls still work: random_get of 0 bytes at the very end, clock into bounds
    (call $put (i32.const 10) (call $random_get (i32.const 65536) (i32.const 0)))
    (call $put (i32.const 11) (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 65528)))
    (call $put (i32.const 12) (call $clock_time_get (i32.const 9) (i64.const 0) (i32.const 0)))
    (i32.store (i32.const 0) (i32.const 2048))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
"#;

#[test]
fn out_of_bounds_pointers_give_efault() {
    let r = run_module(&wat_module(FAULTS), config(&[]));
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(r.ctx.exit_code(), None);
    let f = errno::FAULT as u8;
    assert_eq!(
        r.stdout.as_bytes(),
        [f, f, f, f, f, f, f, f, f, f, 0, 0, errno::INVAL as u8]
    );
}

#[test]
fn module_without_memory_gets_efault() {
    let wat = r#"
    (module
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
      (func (export "_start")
        (call $proc_exit (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 0)))))"#;
    let r = run_module(&wat_module(wat), config(&[]));
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(r.ctx.exit_code(), Some(errno::FAULT as u32));
}

/// Every preview1 function with its exact signature: instantiation fails on any mismatch.
const ALL_IMPORTS: &str = r#"
(module
  (import "wasi_snapshot_preview1" "args_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_res_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_advise" (func (param i32 i64 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_allocate" (func (param i32 i64 i64) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_datasync" (func (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_rights" (func (param i32 i64 i64) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_size" (func (param i32 i64) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_times" (func (param i32 i64 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pread" (func (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_sync" (func (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_tell" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_set_times" (func (param i32 i32 i32 i32 i64 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_link" (func (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_readlink" (func (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_remove_directory" (func (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_rename" (func (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_unlink_file" (func (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
  (import "wasi_snapshot_preview1" "proc_raise" (func (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))
"#;

#[test]
fn every_preview1_function_is_provided_with_its_signature() {
    let r = run_module(&wat_module(ALL_IMPORTS), config(&[]));
    assert!(r.result.is_ok(), "{:?}", r.result);
    assert_eq!(r.ctx.exit_code(), None);
}

// ---------------------------------------------------------------- direct calls (no wasm)

/// A 64 KiB "linear memory" for calling the functions directly.
struct Guest {
    _buf: Vec<u8>,
    mem: Mem,
    next: u32,
}

impl Guest {
    fn new() -> Guest {
        let mut buf = vec![0u8; 65536];
        let mem = Mem::from_slice(&mut buf);
        Guest {
            _buf: buf,
            mem,
            next: 40000,
        }
    }
    /// Copies `s` to fresh guest memory; returns (ptr, len).
    fn s(&mut self, s: &str) -> (u32, u32) {
        let p = self.next;
        self.mem.write_bytes(p, s.as_bytes()).unwrap();
        self.next += s.len() as u32 + 1;
        (p, s.len() as u32)
    }
    fn u32(&self, at: u32) -> u32 {
        self.mem.read_u32(at).unwrap()
    }
    fn u64(&self, at: u32) -> u64 {
        self.mem.read_u64(at).unwrap()
    }
}

const OUT: u32 = 0;
const RW: u64 = rights::FD_READ
    | rights::FD_WRITE
    | rights::FD_SEEK
    | rights::FD_TELL
    | rights::FD_FILESTAT_GET;

fn open(
    ctx: &mut WasiCtx,
    g: &mut Guest,
    dir: u32,
    path: &str,
    of: u16,
    base: u64,
) -> Result<u32, Errno> {
    let (p, l) = g.s(path);
    funcs::path_open(ctx, &mut g.mem, dir, 1, p, l, of as u32, base, base, 0, OUT)?;
    Ok(g.u32(OUT))
}

fn write(ctx: &mut WasiCtx, g: &mut Guest, fd: u32, data: &str) -> Result<u32, Errno> {
    let (p, l) = g.s(data);
    g.mem.write_u32(100, p).unwrap();
    g.mem.write_u32(104, l).unwrap();
    funcs::fd_write(ctx, &mut g.mem, fd, 100, 1, OUT)?;
    Ok(g.u32(OUT))
}

fn read(ctx: &mut WasiCtx, g: &mut Guest, fd: u32, max: u32) -> Result<Vec<u8>, Errno> {
    g.mem.write_u32(100, 20000).unwrap();
    g.mem.write_u32(104, max).unwrap();
    funcs::fd_read(ctx, &mut g.mem, fd, 100, 1, OUT)?;
    let n = g.u32(OUT);
    Ok(g.mem.slice(20000, n).unwrap().to_vec())
}

fn readdir_names(ctx: &mut WasiCtx, g: &mut Guest, fd: u32, buf_len: u32) -> Vec<String> {
    let mut names = Vec::new();
    let mut cookie = 0u64;
    loop {
        funcs::fd_readdir(ctx, &mut g.mem, fd, 1000, buf_len, cookie, OUT).unwrap();
        let used = g.u32(OUT);
        let mut at = 1000;
        let mut complete = 0;
        while at + 24 <= 1000 + used {
            let next = g.u64(at);
            let namlen = g.u32(at + 16);
            if at + 24 + namlen > 1000 + used {
                break;
            }
            names.push(String::from_utf8(g.mem.slice(at + 24, namlen).unwrap().to_vec()).unwrap());
            cookie = next;
            complete += 1;
            at += 24 + namlen;
        }
        if used < buf_len {
            break;
        }
        assert!(complete > 0, "buffer too small for one entry");
    }
    names.sort();
    names
}

struct Fixture {
    rw: tempfile::TempDir,
    ro: tempfile::TempDir,
    ctx: WasiCtx,
    g: Guest,
}

/// fd 3 = /data (rw), fd 4 = /ro (read-only), fd 5 = virtual "/".
fn fixture() -> Fixture {
    let rw = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("keep.txt"), "keep").unwrap();
    std::fs::create_dir(ro.path().join("sub")).unwrap();
    let cfg = WasiConfig {
        args: vec!["t".into()],
        preopens: vec![
            preopen("/data", rw.path(), false),
            preopen("/ro/", ro.path(), true),
        ],
        stdin: Stdio::Buffer(b"abc".to_vec()),
        stdout: Stdio::Buffer(Vec::new()),
        ..Default::default()
    };
    let ctx = WasiCtx::new(cfg).unwrap();
    Fixture {
        rw,
        ro,
        ctx,
        g: Guest::new(),
    }
}

#[test]
fn prestat_lists_preopens_then_root() {
    let Fixture {
        mut ctx,
        mut g,
        rw: _rw,
        ro: _ro,
    } = fixture();
    let mut names = Vec::new();
    for fd in 3.. {
        match funcs::fd_prestat_get(&mut ctx, &mut g.mem, fd, 8) {
            Ok(()) => {
                assert_eq!(g.mem.read_u8(8).unwrap(), 0);
                let len = g.u32(12);
                funcs::fd_prestat_dir_name(&mut ctx, &mut g.mem, fd, 200, len).unwrap();
                names.push(String::from_utf8(g.mem.slice(200, len).unwrap().to_vec()).unwrap());
            }
            Err(e) => {
                assert_eq!(e, errno::BADF);
                break;
            }
        }
    }
    assert_eq!(names, ["/data", "/ro", "/"]);
    assert_eq!(
        funcs::fd_prestat_get(&mut ctx, &mut g.mem, 0, 8),
        Err(errno::BADF)
    );
    assert_eq!(
        funcs::fd_prestat_dir_name(&mut ctx, &mut g.mem, 3, 200, 2),
        Err(errno::NAMETOOLONG)
    );
}

#[test]
fn root_preopen_is_skipped_when_slash_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WasiConfig {
        preopens: vec![preopen("/", dir.path(), false)],
        ..Default::default()
    };
    let ctx = WasiCtx::new(cfg).unwrap();
    assert_eq!(ctx.fds.len(), 4);
    assert!(matches!(ctx.fds[3].as_ref().unwrap().kind, Kind::Dir(_)));
}

#[test]
fn files_roundtrip_in_rw_preopen() {
    let Fixture {
        rw,
        mut ctx,
        mut g,
        ro: _ro,
    } = fixture();
    let fd = open(
        &mut ctx,
        &mut g,
        3,
        "a.txt",
        oflags::CREAT | oflags::TRUNC,
        RW | rights::FD_FILESTAT_SET_SIZE,
    )
    .unwrap();
    assert_eq!(write(&mut ctx, &mut g, fd, "hello world").unwrap(), 11);
    funcs::fd_seek(&mut ctx, &mut g.mem, fd, 6, 0, 8).unwrap();
    assert_eq!(g.u64(8), 6);
    assert_eq!(read(&mut ctx, &mut g, fd, 100).unwrap(), b"world");
    funcs::fd_tell(&mut ctx, &mut g.mem, fd, 8).unwrap();
    assert_eq!(g.u64(8), 11);
    funcs::fd_filestat_get(&mut ctx, &mut g.mem, fd, 300).unwrap();
    assert_eq!(g.mem.read_u8(316).unwrap(), abi::filetype::REGULAR_FILE);
    assert_eq!(g.u64(332), 11);
    funcs::fd_filestat_set_size(&mut ctx, &mut g.mem, fd, 5).unwrap();
    funcs::fd_close(&mut ctx, &mut g.mem, fd).unwrap();
    assert_eq!(funcs::fd_close(&mut ctx, &mut g.mem, fd), Err(errno::BADF));
    assert_eq!(
        std::fs::read_to_string(rw.path().join("a.txt")).unwrap(),
        "hello"
    );

    // mkdir, rename, readdir, unlink, rmdir
    let (p, l) = g.s("d");
    funcs::path_create_directory(&mut ctx, &mut g.mem, 3, p, l).unwrap();
    assert_eq!(
        funcs::path_create_directory(&mut ctx, &mut g.mem, 3, p, l),
        Err(errno::EXIST)
    );
    let (o, ol) = g.s("a.txt");
    let (n, nl) = g.s("d/b.txt");
    funcs::path_rename(&mut ctx, &mut g.mem, 3, o, ol, 3, n, nl).unwrap();
    assert!(rw.path().join("d/b.txt").exists());
    for i in 0..40 {
        std::fs::write(
            rw.path().join(format!("d/file-with-a-longer-name-{i:02}")),
            "",
        )
        .unwrap();
    }
    let d = open(
        &mut ctx,
        &mut g,
        3,
        "d",
        oflags::DIRECTORY,
        rights::FD_READDIR,
    )
    .unwrap();
    let mut expected: Vec<String> = (0..40)
        .map(|i| format!("file-with-a-longer-name-{i:02}"))
        .collect();
    expected.extend([".", "..", "b.txt"].map(String::from));
    expected.sort();
    assert_eq!(readdir_names(&mut ctx, &mut g, d, 4096), expected);
    // Small buffers force truncated entries and resumption by cookie.
    assert_eq!(readdir_names(&mut ctx, &mut g, d, 70), expected);
    let (u, ul) = g.s("d/b.txt/");
    assert_eq!(
        funcs::path_unlink_file(&mut ctx, &mut g.mem, 3, u, ul),
        Err(errno::NOTDIR)
    );
    let (u, ul) = g.s("d/b.txt");
    funcs::path_unlink_file(&mut ctx, &mut g.mem, 3, u, ul).unwrap();
    assert_eq!(
        funcs::path_remove_directory(&mut ctx, &mut g.mem, 3, p, l),
        Err(errno::NOTEMPTY)
    );
    for i in 0..40 {
        std::fs::remove_file(rw.path().join(format!("d/file-with-a-longer-name-{i:02}"))).unwrap();
    }
    funcs::path_remove_directory(&mut ctx, &mut g.mem, 3, p, l).unwrap();
    assert!(!rw.path().join("d").exists());

    // Opening a missing file without CREAT.
    assert_eq!(
        open(&mut ctx, &mut g, 3, "missing", 0, RW),
        Err(errno::NOENT)
    );
    assert!(ctx.violations().is_empty(), "{:?}", ctx.violations());
}

#[test]
fn symlinks_and_readlink() {
    let Fixture {
        rw,
        mut ctx,
        mut g,
        ro: _ro,
    } = fixture();
    std::fs::write(rw.path().join("t.txt"), "target").unwrap();
    let (t, tl) = g.s("t.txt");
    let (n, nl) = g.s("l");
    funcs::path_symlink(&mut ctx, &mut g.mem, t, tl, 3, n, nl).unwrap();
    funcs::path_readlink(&mut ctx, &mut g.mem, 3, n, nl, 500, 100, OUT).unwrap();
    assert_eq!(g.mem.slice(500, g.u32(OUT)).unwrap(), b"t.txt");
    // Truncated readlink.
    funcs::path_readlink(&mut ctx, &mut g.mem, 3, n, nl, 500, 2, OUT).unwrap();
    assert_eq!(g.u32(OUT), 2);
    // Follow vs no-follow stat.
    funcs::path_filestat_get(&mut ctx, &mut g.mem, 3, 1, n, nl, 300).unwrap();
    assert_eq!(g.mem.read_u8(316).unwrap(), abi::filetype::REGULAR_FILE);
    funcs::path_filestat_get(&mut ctx, &mut g.mem, 3, 0, n, nl, 300).unwrap();
    assert_eq!(g.mem.read_u8(316).unwrap(), abi::filetype::SYMBOLIC_LINK);
    // Hard link through the symlink (follow) links the target.
    let (h, hl) = g.s("hard");
    funcs::path_link(&mut ctx, &mut g.mem, 3, 1, n, nl, 3, h, hl).unwrap();
    assert_eq!(
        std::fs::read_to_string(rw.path().join("hard")).unwrap(),
        "target"
    );
    assert!(!std::fs::symlink_metadata(rw.path().join("hard"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Escaping symlink: creation is fine, following it is denied.
    let (t, tl) = g.s("../../../../etc/passwd");
    let (e, el) = g.s("escape");
    funcs::path_symlink(&mut ctx, &mut g.mem, t, tl, 3, e, el).unwrap();
    assert_eq!(
        open(&mut ctx, &mut g, 3, "escape", 0, rights::FD_READ),
        Err(errno::NOTCAPABLE)
    );
    assert_eq!(
        funcs::path_filestat_get(&mut ctx, &mut g.mem, 3, 1, e, el, 300),
        Err(errno::NOTCAPABLE)
    );
    let (h2, h2l) = g.s("hard2");
    assert_eq!(
        funcs::path_link(&mut ctx, &mut g.mem, 3, 1, e, el, 3, h2, h2l),
        Err(errno::NOTCAPABLE)
    );
    assert_eq!(ctx.violations(), ["permission denied: /data/escape"]);
    // Unlinking the escaping symlink itself is fine (does not follow it).
    funcs::path_unlink_file(&mut ctx, &mut g.mem, 3, e, el).unwrap();
}

#[test]
fn dotdot_in_path_operations_is_confined() {
    let Fixture {
        rw,
        mut ctx,
        mut g,
        ro: _ro,
    } = fixture();
    std::fs::create_dir(rw.path().join("sub")).unwrap();
    // Staying inside through ".." is fine.
    let (p, l) = g.s("sub/../made");
    funcs::path_create_directory(&mut ctx, &mut g.mem, 3, p, l).unwrap();
    assert!(rw.path().join("made").is_dir());
    // Leaving is denied, for every kind of operation.
    let (p, l) = g.s("../x");
    assert_eq!(
        funcs::path_create_directory(&mut ctx, &mut g.mem, 3, p, l),
        Err(errno::NOTCAPABLE)
    );
    let (p, l) = g.s("..");
    assert_eq!(
        funcs::path_remove_directory(&mut ctx, &mut g.mem, 3, p, l),
        Err(errno::NOTCAPABLE)
    );
    let (p, l) = g.s("sub/../../y");
    assert_eq!(
        funcs::path_unlink_file(&mut ctx, &mut g.mem, 3, p, l),
        Err(errno::NOTCAPABLE)
    );
    let (p, l) = g.s("/etc/passwd");
    assert_eq!(
        funcs::path_filestat_get(&mut ctx, &mut g.mem, 3, 1, p, l, 300),
        Err(errno::NOTCAPABLE)
    );
    assert_eq!(
        ctx.violations(),
        [
            "permission denied: /data/../x",
            "permission denied: /data/..",
            "permission denied: /data/sub/../../y",
            "permission denied: /etc/passwd",
        ]
    );
    // "." is the directory itself.
    let (p, l) = g.s(".");
    funcs::path_filestat_get(&mut ctx, &mut g.mem, 3, 1, p, l, 300).unwrap();
    assert_eq!(g.mem.read_u8(316).unwrap(), abi::filetype::DIRECTORY);
}

#[test]
fn readonly_preopen_refuses_every_write() {
    let Fixture {
        rw,
        ro,
        mut ctx,
        mut g,
    } = fixture();
    let nc = Err(errno::NOTCAPABLE);
    // Reading works.
    let fd = open(
        &mut ctx,
        &mut g,
        4,
        "keep.txt",
        0,
        rights::FD_READ | rights::FD_FILESTAT_SET_TIMES,
    )
    .unwrap();
    assert_eq!(read(&mut ctx, &mut g, fd, 10).unwrap(), b"keep");
    // But the read-only descriptor cannot be written through.
    assert_eq!(write(&mut ctx, &mut g, fd, "x").map(|_| ()), nc);
    assert_eq!(
        funcs::fd_filestat_set_times(&mut ctx, &mut g.mem, fd, 0, 0, 2 | 8),
        nc
    );
    assert_eq!(funcs::fd_filestat_set_size(&mut ctx, &mut g.mem, fd, 0), nc);
    assert_eq!(funcs::fd_allocate(&mut ctx, &mut g.mem, fd, 0, 10), nc);
    assert_eq!(funcs::fd_fdstat_set_flags(&mut ctx, &mut g.mem, fd, 1), nc);
    // Opening for writing / creating.
    assert_eq!(
        open(&mut ctx, &mut g, 4, "keep.txt", 0, rights::FD_WRITE).map(|_| ()),
        nc
    );
    assert_eq!(
        open(
            &mut ctx,
            &mut g,
            4,
            "keep.txt",
            oflags::TRUNC,
            rights::FD_READ
        )
        .map(|_| ()),
        nc
    );
    assert_eq!(
        open(
            &mut ctx,
            &mut g,
            4,
            "new.txt",
            oflags::CREAT,
            rights::FD_READ
        )
        .map(|_| ()),
        nc
    );
    let (p, l) = g.s("keep.txt");
    let append = abi::fdflags::APPEND as u32;
    assert_eq!(
        funcs::path_open(
            &mut ctx,
            &mut g.mem,
            4,
            1,
            p,
            l,
            0,
            rights::FD_READ,
            0,
            append,
            OUT
        ),
        nc
    );
    // Path operations.
    let (d, dl) = g.s("newdir");
    assert_eq!(
        funcs::path_create_directory(&mut ctx, &mut g.mem, 4, d, dl),
        nc
    );
    let (s, sl) = g.s("sub");
    assert_eq!(
        funcs::path_remove_directory(&mut ctx, &mut g.mem, 4, s, sl),
        nc
    );
    assert_eq!(funcs::path_unlink_file(&mut ctx, &mut g.mem, 4, p, l), nc);
    assert_eq!(
        funcs::path_filestat_set_times(&mut ctx, &mut g.mem, 4, 0, p, l, 0, 0, 2),
        nc
    );
    let (t, tl) = g.s("t");
    assert_eq!(
        funcs::path_symlink(&mut ctx, &mut g.mem, p, l, 4, t, tl),
        nc
    );
    // Rename and link, in either direction between rw and ro.
    std::fs::write(rw.path().join("moved.txt"), "").unwrap();
    let (r, rl) = g.s("moved.txt");
    assert_eq!(
        funcs::path_rename(&mut ctx, &mut g.mem, 4, p, l, 3, r, rl),
        nc
    );
    assert_eq!(
        funcs::path_rename(&mut ctx, &mut g.mem, 3, r, rl, 4, p, l),
        nc
    );
    assert_eq!(
        funcs::path_link(&mut ctx, &mut g.mem, 4, 0, p, l, 3, r, rl),
        nc
    );
    assert_eq!(
        funcs::path_link(&mut ctx, &mut g.mem, 3, 0, r, rl, 4, t, tl),
        nc
    );
    // A directory opened beneath it inherits read-only.
    let sub = open(
        &mut ctx,
        &mut g,
        4,
        "sub",
        oflags::DIRECTORY,
        rights::DIR_BASE,
    )
    .unwrap();
    assert_eq!(
        open(&mut ctx, &mut g, sub, "f", oflags::CREAT, rights::FD_WRITE).map(|_| ()),
        nc
    );

    assert_eq!(
        ctx.violations(),
        [
            "sandbox violation: fs write /ro/keep.txt",
            "sandbox violation: fs write /ro/new.txt",
            "sandbox violation: fs write /ro/newdir",
            "sandbox violation: fs write /ro/sub",
            "sandbox violation: fs write /ro/t",
            "sandbox violation: fs write /ro/sub/f",
        ]
    );
    // Nothing changed on the host.
    assert_eq!(
        std::fs::read_to_string(ro.path().join("keep.txt")).unwrap(),
        "keep"
    );
    let mut names: Vec<String> = std::fs::read_dir(ro.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["keep.txt", "sub"]);
}

#[test]
fn virtual_root_denies_everything() {
    let Fixture {
        mut ctx,
        mut g,
        rw: _rw,
        ro: _ro,
    } = fixture();
    assert_eq!(
        open(&mut ctx, &mut g, 5, "etc/passwd", 0, rights::FD_READ),
        Err(errno::NOTCAPABLE)
    );
    assert_eq!(
        open(
            &mut ctx,
            &mut g,
            5,
            "tmp/new",
            oflags::CREAT,
            rights::FD_WRITE
        ),
        Err(errno::NOTCAPABLE)
    );
    let (p, l) = g.s("etc");
    assert_eq!(
        funcs::path_filestat_get(&mut ctx, &mut g.mem, 5, 1, p, l, 300),
        Err(errno::NOTCAPABLE)
    );
    assert_eq!(
        funcs::path_create_directory(&mut ctx, &mut g.mem, 5, p, l),
        Err(errno::NOTCAPABLE)
    );
    assert_eq!(
        open(&mut ctx, &mut g, 5, "etc/passwd", 0, rights::FD_READ),
        Err(errno::NOTCAPABLE)
    );
    // Listing "/" shows nothing.
    funcs::fd_readdir(&mut ctx, &mut g.mem, 5, 1000, 1000, 0, OUT).unwrap();
    assert_eq!(g.u32(OUT), 0);
    funcs::fd_fdstat_get(&mut ctx, &mut g.mem, 5, 300).unwrap();
    assert_eq!(g.mem.read_u8(300).unwrap(), abi::filetype::DIRECTORY);
    assert_eq!(
        ctx.violations(),
        [
            "permission denied: /etc/passwd",
            "permission denied: /tmp/new",
            "permission denied: /etc"
        ]
    );
}

#[test]
fn stdio_buffers_and_fd_table() {
    let Fixture {
        mut ctx,
        mut g,
        rw: _rw,
        ro: _ro,
    } = fixture();
    assert_eq!(read(&mut ctx, &mut g, 0, 2).unwrap(), b"ab");
    assert_eq!(read(&mut ctx, &mut g, 0, 10).unwrap(), b"c");
    assert_eq!(read(&mut ctx, &mut g, 0, 10).unwrap(), b"");
    write(&mut ctx, &mut g, 1, "out").unwrap();
    write(&mut ctx, &mut g, 2, "discarded").unwrap();
    assert_eq!(ctx.take_stdout(), b"out");
    assert_eq!(ctx.take_stderr(), b"");
    assert_eq!(write(&mut ctx, &mut g, 0, "x"), Err(errno::BADF));
    assert_eq!(write(&mut ctx, &mut g, 99, "x"), Err(errno::BADF));
    let (s, sl) = g.s("x");
    assert_eq!(
        funcs::fd_seek(&mut ctx, &mut g.mem, 1, 0, 0, 8),
        Err(errno::SPIPE)
    );
    let _ = (s, sl);
    // fdstat of a buffer: not a tty (wasi-libc's isatty needs CHARACTER_DEVICE without SEEK/TELL).
    funcs::fd_fdstat_get(&mut ctx, &mut g.mem, 1, 300).unwrap();
    assert_ne!(g.u64(308) & (rights::FD_SEEK | rights::FD_TELL), 0);
    // renumber 1 -> 2: fd 2 now captures into stdout.
    funcs::fd_renumber(&mut ctx, &mut g.mem, 1, 2).unwrap();
    assert_eq!(write(&mut ctx, &mut g, 1, "x"), Err(errno::BADF));
    write(&mut ctx, &mut g, 2, "moved").unwrap();
    assert_eq!(ctx.take_stdout(), b"moved");
    // New descriptors take the lowest free slot.
    let fd = open(&mut ctx, &mut g, 3, "n", oflags::CREAT, RW).unwrap();
    assert_eq!(fd, 1);
    // args / environ
    funcs::args_sizes_get(&mut ctx, &mut g.mem, 8, 12).unwrap();
    assert_eq!((g.u32(8), g.u32(12)), (1, 2));
    funcs::environ_sizes_get(&mut ctx, &mut g.mem, 8, 12).unwrap();
    assert_eq!((g.u32(8), g.u32(12)), (0, 0));
    funcs::args_get(&mut ctx, &mut g.mem, 16, 600).unwrap();
    assert_eq!(g.u32(16), 600);
    assert_eq!(g.mem.slice(600, 2).unwrap(), b"t\0");
}

#[test]
fn poll_oneoff_clocks_and_fds() {
    let Fixture {
        mut ctx,
        mut g,
        rw: _rw,
        ro: _ro,
    } = fixture();
    // One relative monotonic clock of 20 ms.
    let sub = 2000;
    let mut s = [0u8; 48];
    s[0..8].copy_from_slice(&42u64.to_le_bytes());
    s[8] = abi::eventtype::CLOCK;
    s[16..20].copy_from_slice(&abi::clockid::MONOTONIC.to_le_bytes());
    s[24..32].copy_from_slice(&20_000_000u64.to_le_bytes());
    g.mem.write_bytes(sub, &s).unwrap();
    let t = Instant::now();
    funcs::poll_oneoff(&mut ctx, &mut g.mem, sub, 3000, 1, OUT).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(g.u32(OUT), 1);
    assert_eq!(g.u64(3000), 42);
    assert_eq!(g.mem.read_u16(3008).unwrap(), 0);
    assert_eq!(g.mem.read_u8(3010).unwrap(), abi::eventtype::CLOCK);

    // Same clock plus stdin (a buffer: ready at once) -> only the fd event, immediately.
    let mut f = [0u8; 48];
    f[0..8].copy_from_slice(&7u64.to_le_bytes());
    f[8] = abi::eventtype::FD_READ;
    f[16..20].copy_from_slice(&0u32.to_le_bytes());
    s[24..32].copy_from_slice(&10_000_000_000u64.to_le_bytes());
    g.mem.write_bytes(sub, &s).unwrap();
    g.mem.write_bytes(sub + 48, &f).unwrap();
    let t = Instant::now();
    funcs::poll_oneoff(&mut ctx, &mut g.mem, sub, 3000, 2, OUT).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(g.u32(OUT), 1);
    assert_eq!(g.u64(3000), 7);
    assert_eq!(g.mem.read_u8(3010).unwrap(), abi::eventtype::FD_READ);
    assert_eq!(g.u64(3016), 3);

    // Absolute realtime clock in the past fires at once; a bad fd reports EBADF.
    s[16..20].copy_from_slice(&abi::clockid::REALTIME.to_le_bytes());
    s[24..32].copy_from_slice(&1u64.to_le_bytes());
    s[40..42].copy_from_slice(&abi::SUBCLOCK_ABSTIME.to_le_bytes());
    f[16..20].copy_from_slice(&77u32.to_le_bytes());
    g.mem.write_bytes(sub, &s).unwrap();
    g.mem.write_bytes(sub + 48, &f).unwrap();
    funcs::poll_oneoff(&mut ctx, &mut g.mem, sub, 3000, 2, OUT).unwrap();
    assert_eq!(g.u32(OUT), 2);
    assert_eq!(
        funcs::poll_oneoff(&mut ctx, &mut g.mem, sub, 3000, 0, OUT),
        Err(errno::INVAL)
    );
}

#[test]
fn clocks_and_random() {
    let Fixture {
        mut ctx,
        mut g,
        rw: _rw,
        ro: _ro,
    } = fixture();
    funcs::clock_time_get(&mut ctx, &mut g.mem, 0, 0, 8).unwrap();
    let wall = g.u64(8);
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(host.abs_diff(wall) < 5_000_000_000);
    funcs::clock_time_get(&mut ctx, &mut g.mem, 1, 0, 8).unwrap();
    let a = g.u64(8);
    funcs::clock_time_get(&mut ctx, &mut g.mem, 1, 0, 8).unwrap();
    assert!(g.u64(8) >= a);
    for id in 0..4 {
        funcs::clock_res_get(&mut ctx, &mut g.mem, id, 8).unwrap();
        assert!(g.u64(8) > 0);
        funcs::clock_time_get(&mut ctx, &mut g.mem, id, 0, 8).unwrap();
    }
    assert_eq!(
        funcs::clock_time_get(&mut ctx, &mut g.mem, 4, 0, 8),
        Err(errno::INVAL)
    );
    funcs::random_get(&mut ctx, &mut g.mem, 5000, 4096).unwrap();
    assert!(g.mem.slice(5000, 4096).unwrap().iter().any(|&b| b != 0));
}

#[test]
fn ctx_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<WasiCtx>();
    assert_send::<WasiConfig>();
}

#[test]
fn new_rejects_bad_config() {
    let cfg = WasiConfig {
        envs: vec![("A=B".into(), "x".into())],
        ..Default::default()
    };
    assert!(WasiCtx::new(cfg).is_err());
    let cfg = WasiConfig {
        args: vec!["a\0b".into()],
        ..Default::default()
    };
    assert!(WasiCtx::new(cfg).is_err());
}

// ---------------------------------------------------------------- /proc, /sys, /dev and device nodes

#[test]
fn preopen_host_dirs_resolve_inside_the_root_and_never_into_proc() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("f.txt"), "inside").unwrap();
    let held = std::fs::File::open(&real).unwrap();
    let link = |name: &str, target: &str| {
        let p = dir.path().join(name);
        std::os::unix::fs::symlink(target, &p).unwrap();
        p
    };
    let to_proc_self = link("self", "/proc/self");
    let magic = link("magic", &format!("/proc/self/fd/{}/..", held.as_raw_fd()));
    let to_root = link("root", "/");
    let to_real = link("ok", real.to_str().unwrap());
    let relative = link("ok-rel", "real");

    // Refused both by the check at container start and by every WasiCtx.
    for (host, why) in [
        (&to_proc_self, "resolves into a file system of type proc"),
        (&magic, "links through /proc"),
    ] {
        let msg = bind_preopen_dir(host).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("allowed dir {}", host.display())) && msg.contains(why),
            "{msg}"
        );
        let cfg = WasiConfig {
            preopens: vec![preopen("/config", host, true)],
            ..Default::default()
        };
        let msg = WasiCtx::new(cfg).unwrap_err().to_string();
        assert!(
            msg.starts_with("preopen /config: allowed dir ") && msg.contains(why),
            "{msg}"
        );
    }
    // "/" is no special file system, but /proc, /sys and /dev are mounted beneath it.
    let msg = bind_preopen_dir(&to_root).unwrap_err().to_string();
    assert!(msg.contains(" resolves to /, which contains the "), "{msg}");
    assert!(
        msg.ends_with("; sandboxed modules never see /proc, /sys or /dev"),
        "{msg}"
    );

    // Symlinks to an ordinary directory are fine.
    for host in [&to_real, &relative] {
        bind_preopen_dir(host).unwrap();
        let cfg = WasiConfig {
            preopens: vec![preopen("/config", host, true)],
            ..Default::default()
        };
        let mut ctx = WasiCtx::new(cfg).unwrap();
        let mut g = Guest::new();
        let fd = open(&mut ctx, &mut g, 3, "f.txt", 0, rights::FD_READ).unwrap();
        assert_eq!(read(&mut ctx, &mut g, fd, 100).unwrap(), b"inside");
        assert!(ctx.violations().is_empty(), "{:?}", ctx.violations());
    }
}

#[test]
fn device_nodes_in_a_preopen_are_denied() {
    let Fixture {
        rw,
        mut ctx,
        mut g,
        ro: _ro,
    } = fixture();
    // 1:3 (/dev/null) keeps the test harmless should the check be missing; the check treats it
    // like 1:1 (/dev/mem).
    let node = std::ffi::CString::new(rw.path().join("mem").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    let made = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
    std::os::unix::fs::symlink("mem", rw.path().join("alias")).unwrap();
    let acces = Err(errno::NOTCAPABLE);
    assert_eq!(
        open(&mut ctx, &mut g, 3, "mem", 0, rights::FD_READ).map(|_| ()),
        acces
    );
    assert_eq!(
        open(
            &mut ctx,
            &mut g,
            3,
            "mem",
            0,
            rights::FD_READ | rights::FD_WRITE
        )
        .map(|_| ()),
        acces
    );
    assert_eq!(open(&mut ctx, &mut g, 3, "mem", 0, 0).map(|_| ()), acces);
    assert_eq!(
        open(&mut ctx, &mut g, 3, "alias", 0, rights::FD_READ).map(|_| ()),
        acces
    );
    let (p, l) = g.s("mem");
    assert_eq!(
        funcs::path_filestat_get(&mut ctx, &mut g.mem, 3, 1, p, l, 300),
        acces
    );
    assert_eq!(
        ctx.violations(),
        [
            "permission denied: /data/mem",
            "permission denied: /data/alias"
        ]
    );
    // Removing it is fine.
    funcs::path_unlink_file(&mut ctx, &mut g.mem, 3, p, l).unwrap();
    assert!(!rw.path().join("mem").exists());
}

#[test]
fn open_beneath_refuses_what_is_on_procfs() {
    let proc = std::fs::File::open("/proc").unwrap();
    let proc = proc.as_raw_fd();
    assert_eq!(
        sys::open_beneath(proc, "self/status", libc::O_RDONLY, 0).map(|_| ()),
        Err(libc::EACCES)
    );
    assert_eq!(
        sys::open_beneath(proc, ".", libc::O_PATH | libc::O_DIRECTORY, 0).map(|_| ()),
        Err(libc::EACCES)
    );
    let dir = tempfile::tempdir().unwrap();
    let dir = std::fs::File::open(dir.path()).unwrap();
    sys::open_beneath(dir.as_raw_fd(), ".", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
}

#[test]
fn paths_into_proc_sys_and_dev_beneath_a_preopen_are_denied() {
    // WasiCtx::new leaves the look at mounts to bind_preopen_dir, so a preopen of "/" stands in for
    // an allowed dir with /proc, /sys or /dev mounted (or a symlink to them swapped in) beneath it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "ok").unwrap();
    let cfg = WasiConfig {
        preopens: vec![preopen("/host", Path::new("/"), false)],
        ..Default::default()
    };
    let mut ctx = WasiCtx::new(cfg).unwrap();
    let mut g = Guest::new();
    let acces = Err(errno::NOTCAPABLE);
    assert_eq!(
        open(&mut ctx, &mut g, 3, "proc/self/status", 0, rights::FD_READ).map(|_| ()),
        acces
    );
    assert_eq!(
        open(
            &mut ctx,
            &mut g,
            3,
            "proc",
            oflags::DIRECTORY,
            rights::FD_READDIR
        )
        .map(|_| ()),
        acces
    );
    let (p, l) = g.s("sys/kernel");
    assert_eq!(
        funcs::path_filestat_get(&mut ctx, &mut g.mem, 3, 1, p, l, 300),
        acces
    );
    let (p, l) = g.s("dev/null");
    assert_eq!(
        funcs::path_filestat_get(&mut ctx, &mut g.mem, 3, 1, p, l, 300),
        acces
    );
    // Operations on a name in a directory there: that directory is refused.
    let (p, l) = g.s("proc/self/exe");
    assert_eq!(
        funcs::path_readlink(&mut ctx, &mut g.mem, 3, p, l, 500, 100, OUT),
        acces
    );
    let (p, l) = g.s("proc/self/new");
    assert_eq!(
        funcs::path_create_directory(&mut ctx, &mut g.mem, 3, p, l),
        acces
    );
    assert_eq!(
        ctx.violations(),
        [
            "permission denied: /host/proc/self/status",
            "permission denied: /host/proc",
            "permission denied: /host/sys/kernel",
            "permission denied: /host/dev/null",
            "permission denied: /host/proc/self/exe",
            "permission denied: /host/proc/self/new",
        ]
    );
    // Ordinary files are still reachable.
    let rel = dir.path().join("f.txt");
    let rel = rel.strip_prefix("/").unwrap().to_str().unwrap();
    let fd = open(&mut ctx, &mut g, 3, rel, 0, rights::FD_READ).unwrap();
    assert_eq!(read(&mut ctx, &mut g, fd, 10).unwrap(), b"ok");
}

// ---------------------------------------------------------------- micro-benchmark

/// `cargo test --release --lib engine::wasi::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_instantiate_and_run_hello() {
    let module = hello_module();
    let n = 1000;
    let mut t_ctx = Duration::ZERO;
    let mut t_import = Duration::ZERO;
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let ctx = WasiCtx::new(config(&[])).unwrap();
        t_ctx += t.elapsed();
        let t = Instant::now();
        let object = import_object(ctx).unwrap();
        t_import += t.elapsed();
        drop(object);
    }
    let build = started.elapsed();
    let started = Instant::now();
    for _ in 0..n {
        let ctx = WasiCtx::new(config(&[])).unwrap();
        let (result, mut ctx) = run(&module, "_start", ctx, None);
        assert!(result.is_ok());
        assert_eq!(ctx.take_stdout(), b"hello from wasmedge\n");
    }
    let full = started.elapsed();
    let started = Instant::now();
    let mut object = import_object(WasiCtx::default()).unwrap();
    for _ in 0..n {
        let ctx = WasiCtx::new(config(&[])).unwrap();
        let (result, mut ctx) = run_reusing(&mut object, &module, "_start", ctx, None);
        assert!(result.is_ok());
        assert_eq!(ctx.take_stdout(), b"hello from wasmedge\n");
    }
    let reusing = started.elapsed();
    // For comparison: WasmEdge's built-in WASI module.
    let started = Instant::now();
    for _ in 0..n {
        let wasi = wasmedge_sdk::wasi::WasiModule::create(Some(vec!["hello"]), None, None).unwrap();
        drop(wasi);
    }
    let builtin = started.elapsed();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "wasi bench ({n} iterations): WasiCtx::new {:.1} us, import_object {:.1} us, ctx+import+drop {:.1} us; \
         builtin WasiModule::create+drop {:.1} us; full run of hello (ctx + import + store + instantiate + _start) \
         {:.1} us, with a reused import object {:.1} us",
        us(t_ctx),
        us(t_import),
        us(build),
        us(builtin),
        us(full),
        us(reusing)
    );
}

#[test]
fn an_instance_holds_at_most_max_open_fds_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let mut cfg = config(&[]);
    cfg.preopens = vec![preopen("/data", dir.path(), true)];
    let mut ctx = WasiCtx::new(cfg).unwrap();
    let mut g = Guest::new();
    let held = ctx.fds.iter().flatten().count();
    for _ in held..MAX_OPEN_FDS {
        open(&mut ctx, &mut g, 3, "f", 0, rights::FD_READ).unwrap();
    }
    assert_eq!(
        open(&mut ctx, &mut g, 3, "f", 0, rights::FD_READ),
        Err(errno::MFILE)
    );
    // Closing one makes room again.
    funcs::fd_close(&mut ctx, &mut g.mem, 10).unwrap();
    assert!(open(&mut ctx, &mut g, 3, "f", 0, rights::FD_READ).is_ok());
}

// ---------------------------------------------------------------- disk quota

/// A ctx with `dir` read-write at /data (fd 3) under a quota of `limit` bytes counted from
/// what `dir` holds now.
fn quota_ctx(dir: &Path, limit: u64) -> (WasiCtx, DiskQuota) {
    let bound = std::fs::File::open(dir).unwrap();
    let (quota, _) = DiskQuota::measure(limit, &[std::os::fd::AsFd::as_fd(&bound)]);
    let mut cfg = config(&[]);
    cfg.preopens = vec![preopen("/data", dir, false)];
    cfg.disk = Some(quota.clone());
    (WasiCtx::new(cfg).unwrap(), quota)
}

/// Another instance of the container of `quota`.
fn sharing(dir: &Path, quota: &DiskQuota) -> WasiCtx {
    let mut cfg = config(&[]);
    cfg.preopens = vec![preopen("/data", dir, false)];
    cfg.disk = Some(quota.clone());
    WasiCtx::new(cfg).unwrap()
}

fn create(ctx: &mut WasiCtx, g: &mut Guest, path: &str) -> Result<u32, Errno> {
    open(
        ctx,
        g,
        3,
        path,
        oflags::CREAT,
        RW | rights::FD_ALLOCATE | rights::FD_FILESTAT_SET_SIZE,
    )
}

#[test]
fn writes_stop_at_the_disk_quota_with_a_short_write_then_edquot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ctx, quota) = quota_ctx(dir.path(), ENTRY_BYTES + 100);
    let mut g = Guest::new();
    let f = create(&mut ctx, &mut g, "f").unwrap();
    assert_eq!(quota.used(), ENTRY_BYTES);
    assert_eq!(write(&mut ctx, &mut g, f, &"a".repeat(60)), Ok(60));
    // Like a full disk: what fits is written, then nothing.
    assert_eq!(write(&mut ctx, &mut g, f, &"b".repeat(60)), Ok(40));
    assert_eq!(write(&mut ctx, &mut g, f, "c"), Err(errno::DQUOT));
    assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 100);
    assert_eq!(quota.used(), ENTRY_BYTES + 100);
    assert_eq!(
        ctx.violations(),
        [format!(
            "disk quota exceeded: /data/f (max_disk_bytes {}); raise wasmedge.io/max-disk-bytes or keep less in the read-write dirs",
            ENTRY_BYTES + 100
        )]
    );
    // Overwriting what is there adds nothing and is allowed.
    funcs::fd_seek(&mut ctx, &mut g.mem, f, 0, 0, OUT).unwrap();
    assert_eq!(write(&mut ctx, &mut g, f, &"d".repeat(100)), Ok(100));
}

#[test]
fn sparse_writes_allocate_and_set_size_count_the_whole_length() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ctx, quota) = quota_ctx(dir.path(), 1 << 20);
    let mut g = Guest::new();
    let f = create(&mut ctx, &mut g, "f").unwrap();
    // One byte at 1 TiB: no way around the quota through a hole.
    let (p, l) = g.s("x");
    g.mem.write_u32(100, p).unwrap();
    g.mem.write_u32(104, l).unwrap();
    assert_eq!(
        funcs::fd_pwrite(&mut ctx, &mut g.mem, f, 100, 1, 1 << 40, OUT),
        Err(errno::DQUOT)
    );
    // The issue's attack: fd_allocate of 256 MiB.
    assert_eq!(
        funcs::fd_allocate(&mut ctx, &mut g.mem, f, 0, 256 << 20),
        Err(errno::DQUOT)
    );
    assert_eq!(
        funcs::fd_filestat_set_size(&mut ctx, &mut g.mem, f, 256 << 20),
        Err(errno::DQUOT)
    );
    assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 0);
    // Within the quota all three work and are counted; shrinking gives the bytes back.
    funcs::fd_allocate(&mut ctx, &mut g.mem, f, 0, 4096).unwrap();
    funcs::fd_filestat_set_size(&mut ctx, &mut g.mem, f, 500_000).unwrap();
    assert_eq!(quota.used(), ENTRY_BYTES + 500_000);
    funcs::fd_pwrite(&mut ctx, &mut g.mem, f, 100, 1, 600_000, OUT).unwrap();
    assert_eq!(quota.used(), ENTRY_BYTES + 600_001);
    funcs::fd_filestat_set_size(&mut ctx, &mut g.mem, f, 0).unwrap();
    assert_eq!(quota.used(), ENTRY_BYTES);
}

#[test]
fn names_cost_bytes_and_removing_them_gives_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ctx, quota) = quota_ctx(dir.path(), 3 * ENTRY_BYTES);
    let mut g = Guest::new();
    let f = create(&mut ctx, &mut g, "a").unwrap();
    funcs::fd_close(&mut ctx, &mut g.mem, f).unwrap();
    let (p, l) = g.s("d");
    funcs::path_create_directory(&mut ctx, &mut g.mem, 3, p, l).unwrap();
    let (t, tl) = g.s("a");
    let (n, nl) = g.s("link");
    funcs::path_symlink(&mut ctx, &mut g.mem, t, tl, 3, n, nl).unwrap();
    assert_eq!(quota.used(), 3 * ENTRY_BYTES);
    // Full: no file, directory, symlink or hard link more.
    assert_eq!(create(&mut ctx, &mut g, "b"), Err(errno::DQUOT));
    let (p2, l2) = g.s("e");
    assert_eq!(
        funcs::path_create_directory(&mut ctx, &mut g.mem, 3, p2, l2),
        Err(errno::DQUOT)
    );
    let (h, hl) = g.s("hard");
    assert_eq!(
        funcs::path_link(&mut ctx, &mut g.mem, 3, 0, t, tl, 3, h, hl),
        Err(errno::DQUOT)
    );
    assert!(!dir.path().join("b").exists() && !dir.path().join("hard").exists());
    // An existing file opens as before, with O_CREAT too.
    assert!(create(&mut ctx, &mut g, "a").is_ok());
    funcs::path_remove_directory(&mut ctx, &mut g.mem, 3, p, l).unwrap();
    funcs::path_unlink_file(&mut ctx, &mut g.mem, 3, n, nl).unwrap();
    assert_eq!(quota.used(), ENTRY_BYTES);
    assert!(create(&mut ctx, &mut g, "b").is_ok());
}

#[test]
fn an_unlinked_file_stays_counted_while_it_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ctx, quota) = quota_ctx(dir.path(), ENTRY_BYTES + 1000);
    let mut g = Guest::new();
    let f = create(&mut ctx, &mut g, "f").unwrap();
    assert_eq!(write(&mut ctx, &mut g, f, &"x".repeat(1000)), Ok(1000));
    let (p, l) = g.s("f");
    funcs::path_unlink_file(&mut ctx, &mut g.mem, 3, p, l).unwrap();
    // Write, keep open, unlink, repeat must not fill the disk.
    assert_eq!(quota.used(), 1000);
    assert_eq!(create(&mut ctx, &mut g, "g").map(|_| ()), Ok(()));
    let g_fd = ctx.fds.len() as u32 - 1;
    assert_eq!(write(&mut ctx, &mut g, g_fd, "y"), Err(errno::DQUOT));
    funcs::fd_close(&mut ctx, &mut g.mem, f).unwrap();
    assert_eq!(quota.used(), ENTRY_BYTES);
    assert_eq!(write(&mut ctx, &mut g, g_fd, &"y".repeat(1000)), Ok(1000));
}

#[test]
fn instances_of_one_container_share_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old"), vec![0u8; 3000]).unwrap();
    let (mut one, quota) = quota_ctx(dir.path(), 2 * ENTRY_BYTES + 5000);
    assert_eq!(quota.used(), ENTRY_BYTES + 3000, "what was there counts");
    let mut two = sharing(dir.path(), &quota);
    let mut g = Guest::new();
    let a = create(&mut one, &mut g, "shared").unwrap();
    assert_eq!(write(&mut one, &mut g, a, &"1".repeat(1500)), Ok(1500));
    let b = open(
        &mut two,
        &mut g,
        3,
        "shared",
        oflags::CREAT,
        RW | rights::FD_SEEK,
    )
    .unwrap();
    funcs::fd_seek(&mut two, &mut g.mem, b, 0, 2, OUT).unwrap();
    assert_eq!(write(&mut two, &mut g, b, &"2".repeat(1000)), Ok(500));
    assert_eq!(
        write(&mut one, &mut g, a, "1"),
        Ok(1),
        "overwrites within the file"
    );
    drop(one);
    drop(two);
    assert_eq!(quota.used(), 2 * ENTRY_BYTES + 5000);
    // Truncating and renaming over a file give its bytes back.
    let mut three = sharing(dir.path(), &quota);
    open(&mut three, &mut g, 3, "shared", oflags::TRUNC, RW).unwrap();
    assert_eq!(quota.used(), 2 * ENTRY_BYTES + 3000);
    let (o, ol) = g.s("old");
    let (s, sl) = g.s("shared");
    funcs::path_rename(&mut three, &mut g.mem, 3, s, sl, 3, o, ol).unwrap();
    assert_eq!(quota.used(), ENTRY_BYTES);
}

// ---------------------------------------------------------------- WASI testsuite findings

fn fdstat_rights(ctx: &mut WasiCtx, g: &mut Guest, fd: u32) -> (u64, u64) {
    funcs::fd_fdstat_get(ctx, &mut g.mem, fd, 200).unwrap();
    (g.u64(208), g.u64(216))
}

#[test]
fn a_preopen_has_directory_rights_and_opens_itself_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&[]);
    cfg.preopens = vec![preopen("fs-tests.dir", dir.path(), false)];
    let mut ctx = WasiCtx::new(cfg).unwrap();
    let mut g = Guest::new();
    let (base, inheriting) = fdstat_rights(&mut ctx, &mut g, 3);
    assert_eq!(
        (base, inheriting),
        (rights::DIR_BASE, rights::DIR_INHERITING)
    );
    assert_eq!(base & (rights::FD_SEEK | rights::FD_FILESTAT_SET_SIZE), 0);
    // What the Rust tests do first: "." as a directory, with the preopen's own rights.
    let (p, l) = g.s(".");
    let dir_flags = oflags::DIRECTORY as u32;
    funcs::path_open(
        &mut ctx, &mut g.mem, 3, 0, p, l, dir_flags, base, inheriting, 0, OUT,
    )
    .unwrap();
    let dot = g.u32(OUT);
    assert_eq!(fdstat_rights(&mut ctx, &mut g, dot), (base, inheriting));
    // Empty rights are valid; a directory opened for writing is not.
    funcs::path_open(&mut ctx, &mut g.mem, 3, 0, p, l, dir_flags, 0, 0, 0, OUT).unwrap();
    let rw = rights::FD_READ | rights::FD_WRITE;
    assert_eq!(
        funcs::path_open(&mut ctx, &mut g.mem, 3, 0, p, l, dir_flags, rw, 0, 0, OUT),
        Err(errno::ISDIR)
    );
    // A file gets file rights only, within what its directory passes on.
    let f = open(&mut ctx, &mut g, 3, "f", oflags::CREAT, rights::ALL).unwrap();
    assert_eq!(fdstat_rights(&mut ctx, &mut g, f).0, rights::FILE_BASE);
}

#[test]
fn rights_are_enforced_and_can_only_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&[]);
    cfg.preopens = vec![preopen("d", dir.path(), false)];
    let mut ctx = WasiCtx::new(cfg).unwrap();
    let mut g = Guest::new();
    let f = open(&mut ctx, &mut g, 3, "f", oflags::CREAT, RW).unwrap();
    assert_eq!(write(&mut ctx, &mut g, f, "data"), Ok(4));
    let (base, inheriting) = fdstat_rights(&mut ctx, &mut g, f);
    let fewer = base & !(rights::FD_READ | rights::FD_WRITE);
    funcs::fd_fdstat_set_rights(&mut ctx, &mut g.mem, f, fewer, inheriting).unwrap();
    assert_eq!(write(&mut ctx, &mut g, f, "more"), Err(errno::NOTCAPABLE));
    assert_eq!(read(&mut ctx, &mut g, f, 4), Err(errno::NOTCAPABLE));
    assert_eq!(
        funcs::fd_fdstat_set_rights(&mut ctx, &mut g.mem, f, base, inheriting),
        Err(errno::NOTCAPABLE),
        "rights once dropped do not come back"
    );
    // Truncating through path_open needs PATH_FILESTAT_SET_SIZE on the directory.
    let trunc = oflags::TRUNC;
    assert!(open(&mut ctx, &mut g, 3, "f", trunc, 0).is_ok());
    let (dir_base, dir_inheriting) = fdstat_rights(&mut ctx, &mut g, 3);
    let no_size = dir_base & !rights::PATH_FILESTAT_SET_SIZE;
    funcs::fd_fdstat_set_rights(&mut ctx, &mut g.mem, 3, no_size, dir_inheriting).unwrap();
    assert_eq!(
        open(&mut ctx, &mut g, 3, "f", trunc, 0),
        Err(errno::NOTCAPABLE)
    );
    // A directory's descriptor has no seek right, and seeking it says so.
    let sub = open(&mut ctx, &mut g, 3, ".", oflags::DIRECTORY, rights::FD_SEEK).unwrap();
    assert_eq!(fdstat_rights(&mut ctx, &mut g, sub).0 & rights::FD_SEEK, 0);
    assert_eq!(
        funcs::fd_seek(&mut ctx, &mut g.mem, sub, 0, 1, OUT),
        Err(errno::NOTCAPABLE)
    );
}

#[test]
fn symlinks_without_follow_trailing_slashes_and_absolute_targets() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("target", dir.path().join("dangling")).unwrap();
    std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
    std::fs::create_dir(dir.path().join("existing")).unwrap();
    let mut cfg = config(&[]);
    cfg.preopens = vec![preopen("d", dir.path(), false)];
    let mut ctx = WasiCtx::new(cfg).unwrap();
    let mut g = Guest::new();
    // Opening a symlink itself (no LOOKUP_SYMLINK_FOLLOW) is ELOOP, as O_NOFOLLOW is.
    for name in ["dangling", "loop"] {
        let (p, l) = g.s(name);
        assert_eq!(
            funcs::path_open(&mut ctx, &mut g.mem, 3, 0, p, l, 0, 0, 0, 0, OUT),
            Err(errno::LOOP),
            "{name}"
        );
    }
    let (src, src_len) = g.s("source");
    for (dest, expected) in [("new/", errno::NOENT), ("existing/", errno::EXIST)] {
        let (p, l) = g.s(dest);
        assert_eq!(
            funcs::path_symlink(&mut ctx, &mut g.mem, src, src_len, 3, p, l),
            Err(expected),
            "symlink to {dest}"
        );
    }
    let f = open(&mut ctx, &mut g, 3, "file", oflags::CREAT, 0).unwrap();
    funcs::fd_close(&mut ctx, &mut g.mem, f).unwrap();
    let (file, file_len) = g.s("file");
    let (p, l) = g.s("link/");
    assert_eq!(
        funcs::path_link(&mut ctx, &mut g.mem, 3, 0, file, file_len, 3, p, l),
        Err(errno::NOENT)
    );
    assert!(!dir.path().join("new").exists() && !dir.path().join("link").exists());
    // A symlink to an absolute path could only lead out: refused, and reported.
    let (root, root_len) = g.s("/");
    let (p, l) = g.s("to-root");
    assert_eq!(
        funcs::path_symlink(&mut ctx, &mut g.mem, root, root_len, 3, p, l),
        Err(errno::NOTCAPABLE)
    );
    assert!(std::fs::symlink_metadata(dir.path().join("to-root")).is_err());
    assert_eq!(ctx.violations(), ["permission denied: d/to-root"]);
}

#[test]
fn socket_calls_say_ebadf_on_the_virtual_root_and_enotsock_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = WasiCtx::new(config(&[])).unwrap();
    let mut g = Guest::new();
    // Without preopens fd 3 is the virtual root: to a module, no descriptor.
    assert_eq!(
        funcs::sock_shutdown(&mut ctx, &mut g.mem, 3, 1),
        Err(errno::BADF)
    );
    assert_eq!(
        funcs::sock_shutdown(&mut ctx, &mut g.mem, 9, 1),
        Err(errno::BADF)
    );
    assert_eq!(
        funcs::sock_shutdown(&mut ctx, &mut g.mem, 1, 1),
        Err(errno::NOTSOCK)
    );
    let mut cfg = config(&[]);
    cfg.preopens = vec![preopen("d", dir.path(), false)];
    let mut ctx = WasiCtx::new(cfg).unwrap();
    assert_eq!(
        funcs::sock_shutdown(&mut ctx, &mut g.mem, 3, 1),
        Err(errno::NOTSOCK)
    );
}
