//! Container escapes, one test per attack: hostile images (symlinked preopens, ELF modules,
//! patched AOT sections, native entrypoints), a poisoned AOT cache, an unprivileged client on
//! the shim's task API, and the descriptors a container holds. Each through the real shim
//! under the tests' own containerd, asserting the exact refusal and that the node, the cache
//! and other containers are untouched.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::image::{self, Entry};
use common::{images, unique, wasm, Containerd, Options, WASMEDGE_RUNTIME};

const MODULE: &str = "/app/hostile.wasm";

fn hostile_module() -> Vec<u8> {
    std::fs::read(wasm("hostile")).unwrap()
}

/// An image with the hostile module at /app/hostile.wasm and `extra` entries.
fn hostile_image(c: &Containerd, name: &str, extra: Vec<Entry>) -> String {
    let reference = format!("localhost/escape-{name}:test");
    let mut entries = vec![Entry::File {
        path: MODULE,
        bytes: hostile_module(),
        mode: 0o644,
    }];
    entries.extend(extra);
    let archive = image::build(&images().dir, &reference, &entries, &[MODULE]);
    c.import(None, &archive, false);
    reference
}

fn run(c: &Containerd, image: &str, annotations: &[&str], args: &[&str]) -> common::Run {
    let mut flags = vec![];
    for a in annotations {
        flags.extend(["--annotation", a]);
    }
    c.run(WASMEDGE_RUNTIME, image, &unique("escape"), &flags, args)
}

/// A file on the node that a container must never read.
fn node_secret() -> PathBuf {
    let path = images().write_file("node-secret.txt", b"node secret\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

const MODERATE: &str = "wasmedge.io/policy=edge-moderate";

fn moderate_node() -> Containerd {
    Containerd::start_with(Options {
        node_config_extra: "ceiling = \"edge-moderate\"\n".into(),
        ..Default::default()
    })
}

#[test]
fn symlinked_preopens_into_proc_or_out_of_the_rootfs_are_refused() {
    let c = moderate_node();
    let secret = node_secret();
    // Each: (name, the preopen's host path in the image, its symlink target, annotations,
    // refused). Not refused: the link names nothing in the container, so the module simply
    // has no such preopen (the shim's descriptor 4 of old is not there any more).
    let cases: Vec<(&str, &str, String, Vec<&str>, bool)> = vec![
        (
            "fd-of-the-shim",
            "/app/config",
            "/proc/self/fd/4/../../..".into(),
            vec![],
            false,
        ),
        (
            "fd-magic-link",
            "/app/config",
            "/proc/self/fd/1/..".into(),
            vec![],
            true,
        ),
        (
            "the-aot-cache-of-old",
            "/app/cache",
            "/proc/self/fd/4".into(),
            vec![MODERATE],
            false,
        ),
        (
            "proc-self",
            "/app/config",
            "/proc/self".into(),
            vec![],
            true,
        ),
        (
            "proc-self-rw",
            "/app/cache",
            "/proc/self".into(),
            vec![MODERATE],
            true,
        ),
        ("root", "/app/cache", "/".into(), vec![MODERATE], true),
        (
            "up-to-the-node",
            "/app/config",
            format!(
                "../../../../../../../..{}",
                secret.parent().unwrap().display()
            ),
            vec![],
            false,
        ),
        ("sys", "/app/config", "/sys/fs".into(), vec![], true),
        ("dev", "/app/cache", "/dev".into(), vec![MODERATE], true),
    ];
    for (name, host, target, annotations, refused) in &cases {
        let image = hostile_image(&c, name, vec![Entry::Symlink { path: host, target }]);
        let guest = if host.ends_with("config") {
            "/config"
        } else {
            "/cache"
        };
        let read = format!("{guest}/{}", secret.file_name().unwrap().to_str().unwrap());
        let r = run(&c, &image, annotations, &[MODULE, "read", &read]);
        assert!(
            !r.stdout.contains("node secret"),
            "{name}: read the node's file: {}",
            r.stdout
        );
        if !refused {
            assert_eq!(r.code, 2, "{name}: {} {}", r.stdout, r.stderr);
            assert!(
                r.stderr.contains(&format!("permission denied: {read}")),
                "{name}: {}",
                r.stderr
            );
            continue;
        }
        assert_eq!(
            r.code, 78,
            "{name}: must refuse to start: {} {}",
            r.stdout, r.stderr
        );
        assert!(
            r.stderr
                .contains(&format!("sandbox policy: allowed dir {host}")),
            "{name}: the refusal names the path: {}",
            r.stderr
        );
    }
    // The same image layout with real directories runs.
    let image = hostile_image(
        &c,
        "plain",
        vec![Entry::File {
            path: "/app/config/data.txt",
            bytes: b"image data\n".to_vec(),
            mode: 0o644,
        }],
    );
    let r = run(&c, &image, &[], &[MODULE, "read", "/config/data.txt"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "image data\n"),
        "{}",
        r.stderr
    );
    c.assert_clean();
}

#[test]
fn a_symlink_out_of_a_writable_preopen_writes_inside_the_container_only() {
    let c = moderate_node();
    let marker = format!("escape-marker-{}", std::process::id());
    let node_dir = images().dir.join("node-writable");
    std::fs::create_dir_all(&node_dir).unwrap();
    // From the rootfs on the node, this target would be `node_dir`; inside the container it
    // names a directory of the image.
    let target = format!("../../../../../../../..{}", node_dir.display());
    let image = hostile_image(
        &c,
        "rw-up",
        vec![
            Entry::Dir(&node_dir.display().to_string()),
            Entry::Symlink {
                path: "/app/cache",
                target: &target,
            },
        ],
    );
    let r = run(
        &c,
        &image,
        &[MODERATE],
        &[MODULE, "write", &format!("/cache/{marker}"), "owned"],
    );
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(
        !node_dir.join(&marker).exists(),
        "the module wrote on the node"
    );
    c.assert_clean();
}

#[test]
fn elf_files_as_modules_are_refused() {
    let c = Containerd::start();
    let marker = images().dir.join(format!("elf-ran-{}", std::process::id()));
    // A shared object (not executable) in the module's place: it must never be dlopen'ed.
    let so = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let elf = std::fs::read(so.unwrap_or("/bin/true")).unwrap();
    let reference = "localhost/escape-elf-module:test";
    let archive = image::build(
        &images().dir,
        reference,
        &[Entry::File {
            path: "/app.wasm",
            bytes: elf,
            mode: 0o644,
        }],
        &["/app.wasm"],
    );
    c.import(None, &archive, false);
    let r = c.run(
        WASMEDGE_RUNTIME,
        reference,
        &unique("elf"),
        &[],
        &["/app.wasm"],
    );
    assert_eq!(r.code, 126, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("failed to load module: native code in the image is not allowed"),
        "{}",
        r.stderr
    );
    assert!(!marker.exists());
    assert!(
        c.aot_entries().is_empty(),
        "nothing is compiled or cached for it"
    );
    c.assert_clean();
}

#[test]
fn native_entrypoints_are_refused_unless_the_node_allows_them() {
    let busybox_entry = |c: &Containerd| {
        let reference = "localhost/escape-busybox:test";
        let bytes = std::fs::read("/bin/busybox").unwrap();
        let archive = image::build(
            &images().dir,
            reference,
            &[Entry::File {
                path: "/bin/busybox",
                bytes,
                mode: 0o755,
            }],
            &["/bin/busybox"],
        );
        c.import(None, &archive, false);
        reference
    };
    let c = Containerd::start();
    let image = busybox_entry(&c);
    let r = c.run(
        WASMEDGE_RUNTIME,
        image,
        &unique("native"),
        &[],
        &["/bin/busybox", "echo", "ran natively"],
    );
    assert_eq!(r.code, 126, "{} {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("ran natively"));
    assert!(
        r.stderr.contains("native code in the image is not allowed: /bin/busybox is a native executable; RuntimeClass wasmedge runs WebAssembly modules only"),
        "{}",
        r.stderr
    );
    c.assert_clean();
    drop(c);

    // A node admin's opt-in: it runs, and holds nothing of the shim's.
    let c = Containerd::start_with(Options {
        node_config_extra: "allow_native_containers = true\n".into(),
        ..Default::default()
    });
    let image = busybox_entry(&c);
    let r = c.run(
        WASMEDGE_RUNTIME,
        image,
        &unique("native"),
        &[],
        &["/bin/busybox", "ls", "/proc/self/fd"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fds: Vec<&str> = r.stdout.split_whitespace().collect();
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "only stdio and ls's own directory descriptor"
    );
    c.assert_clean();
}

#[test]
fn embedded_aot_sections_are_ignored() {
    let c = Containerd::start();
    // hello's bytecode carrying the native code of another module (one that exits 42): if the
    // shim used an image's AOT section, this would exit 42.
    let dir = images().dir.join("aot-splice");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("evil.wat"),
        r#"(module (func (export "_start") (unreachable)))"#,
    )
    .unwrap();
    let evil_wasm = wasmedge_sdk::wat2wasm(br#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32))) (memory (export "memory") 1) (func (export "_start") (call $exit (i32.const 42))))"#).unwrap();
    std::fs::write(dir.join("evil.wasm"), &evil_wasm).unwrap();
    let out = std::process::Command::new(common::wasmedge_cli())
        .arg("compile")
        .arg(dir.join("evil.wasm"))
        .arg(dir.join("evil-aot.wasm"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evil_aot = std::fs::read(dir.join("evil-aot.wasm")).unwrap();
    let section = &evil_aot[evil_wasm.len()..];
    assert_eq!(
        &evil_aot[..evil_wasm.len()],
        &evil_wasm[..],
        "wasmedge appends its section to the bytecode"
    );
    let hello = std::fs::read(wasm("hello")).unwrap();
    let mut spliced = hello.clone();
    spliced.extend_from_slice(section);
    // And one whose section is garbage (shellcode stand-in).
    let mut garbage = hello.clone();
    garbage.extend_from_slice(&section[..12]);
    garbage.extend(std::iter::repeat_n(0xcc, section.len() - 12));
    for (name, module) in [("spliced", spliced), ("garbage", garbage)] {
        let reference = format!("localhost/escape-aot-{name}:test");
        let archive = image::build(
            &images().dir,
            &reference,
            &[Entry::File {
                path: "/app/hello.wasm",
                bytes: module,
                mode: 0o644,
            }],
            &["/app/hello.wasm"],
        );
        c.import(None, &archive, false);
        let r = c.run(
            WASMEDGE_RUNTIME,
            &reference,
            &unique("aot"),
            &[],
            &["/app/hello.wasm"],
        );
        assert_eq!(
            (r.code, r.stdout.trim()),
            (0, "hello from wasmedge"),
            "{name}: {}",
            r.stderr
        );
    }
    let log = c.log_text();
    assert!(
        log.contains("carries a WasmEdge AOT section; ignored"),
        "{log}"
    );
    // Both are hello's bytecode: one entry, compiled once, hit once.
    assert_eq!(
        log.matches("aot: compiled /app/hello.wasm").count(),
        1,
        "{log}"
    );
    assert_eq!(c.aot_entries().len(), 1);
    c.assert_clean();
}

#[test]
fn a_poisoned_cache_entry_never_runs() {
    // Another module's valid, checksummed code under hello's key (what a container that could
    // write the cache once did): the shim notices it was not compiled from hello and recompiles.
    let c = Containerd::start();
    let hello = std::fs::read(wasm("hello")).unwrap();
    let key = containerd_shim_wasmedge::engine::cache_key(&hello);
    let scratch = tempfile::tempdir().unwrap();
    let other = std::fs::read(wasm("hostile")).unwrap();
    let other_native =
        containerd_shim_wasmedge::engine::aot::compile_checked(&other, scratch.path()).unwrap();
    let cache =
        containerd_shim_wasmedge::engine::cache::AotCache::open(&c.aot_dir, 1 << 30).unwrap();
    cache.put(&key, &other_native).unwrap();
    c.import(
        None,
        &images().rootfs("localhost/hello:test", &wasm("hello"), &[]),
        false,
    );
    let r = c.run_wasm(
        "localhost/hello:test",
        &unique("victim"),
        &["/app/hello.wasm"],
    );
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "hello from wasmedge"),
        "{}",
        r.stderr
    );
    let log = c.log_text();
    assert!(
        log.contains("was corrupt (not compiled from this bytecode); removed, recompiling"),
        "{log}"
    );
    assert_eq!(
        log.matches("aot: compiled /app/hello.wasm").count(),
        1,
        "{log}"
    );
    c.assert_clean();
}

/// The descriptors of process `pid` and what each names.
fn descriptors(pid: i32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, std::fs::read_link(e.path()).ok()?.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

fn task_pid(c: &Containerd, id: &str) -> i32 {
    let out = c.ctr_ok(&["task", "ls"]);
    out.lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no task {id}: {out}"))
}

#[test]
fn containers_hold_no_descriptor_of_the_node() {
    let c = moderate_node();
    let image = hostile_image(
        &c,
        "fds",
        vec![Entry::Dir("/app/config"), Entry::Dir("/app/cache")],
    );
    let hello = images().rootfs("localhost/hello:test", &wasm("hello"), &[]);
    c.import(None, &hello, false);
    let id = unique("fds");
    let cgroup = c.cgroup_of(&id);
    // hello sleeping, under a policy with two preopens, started as ctr would.
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        WASMEDGE_RUNTIME,
        "--cgroup",
        &cgroup,
        "--annotation",
        MODERATE,
        &image,
        &id,
        "/app/hostile.wasm",
        "spin",
    ]);
    assert!(c.wait_task_status(&id, "RUNNING", Duration::from_secs(60)));
    let pid = task_pid(&c, &id);
    // The module is running (spinning) by the time its process has dropped the shim's fds.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let fds = loop {
        let fds = descriptors(pid);
        if fds.len() <= 5 || std::time::Instant::now() > deadline {
            break fds;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let numbers: Vec<i32> = fds.iter().take(3).map(|(fd, _)| *fd).collect();
    assert_eq!(numbers, [0, 1, 2], "{fds:?}");
    // The paths as the container sees them (its root is the rootfs).
    let mut others: Vec<&str> = fds[3..].iter().map(|(_, target)| target.as_str()).collect();
    others.sort();
    assert_eq!(
        others,
        ["/app/cache", "/app/config"],
        "stdio and the two preopens only: {fds:?}"
    );
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_task_status(&id, "STOPPED", Duration::from_secs(20)));
    c.ctr_ok(&["task", "delete", &id]);
    c.ctr_ok(&["container", "rm", &id]);

    // The pod's sandbox container (native by design) holds only its stdio too.
    c.import(None, &images().pause(), false);
    let id = unique("pause");
    let cgroup = c.cgroup_of(&id);
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        WASMEDGE_RUNTIME,
        "--cgroup",
        &cgroup,
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        common::PAUSE_IMAGE,
        &id,
    ]);
    assert!(c.wait_task_status(&id, "RUNNING", Duration::from_secs(20)));
    let fds: Vec<i32> = descriptors(task_pid(&c, &id))
        .iter()
        .map(|(fd, _)| *fd)
        .collect();
    assert_eq!(fds, [0, 1, 2]);
    c.ctr_ok(&["task", "kill", &id]);
    assert!(c.wait_task_status(&id, "STOPPED", Duration::from_secs(20)));
    c.ctr_ok(&["task", "delete", &id]);
    c.ctr_ok(&["container", "rm", &id]);
    c.assert_clean();
}

/// In a child running as uid/gid 65534: connects to `path` and sends a ttrpc `State` request;
/// returns what happened ("refused: …", "closed", or "answered").
fn unprivileged_call(path: &Path) -> String {
    let (mut reader, writer) = std::io::pipe().unwrap();
    // SAFETY: the child only makes syscalls and writes to the pipe, then _exits.
    match unsafe { libc::fork() } {
        0 => {
            drop(reader);
            let outcome = (|| -> String {
                // SAFETY: plain syscalls.
                if unsafe { libc::setgroups(0, std::ptr::null()) } != 0
                    || unsafe { libc::setgid(65534) } != 0
                    || unsafe { libc::setuid(65534) } != 0
                {
                    return "setuid failed".into();
                }
                let mut stream = match std::os::unix::net::UnixStream::connect(path) {
                    Ok(s) => s,
                    Err(e) => return format!("refused: {e}"),
                };
                use std::io::{Read, Write};
                // A ttrpc request frame: Task.State of a container that need not exist.
                let payload = ttrpc_state_request();
                let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&1u32.to_be_bytes());
                frame.extend_from_slice(&[1, 0]);
                frame.extend_from_slice(&payload);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                if stream.write_all(&frame).is_err() {
                    return "closed".into();
                }
                let mut header = [0u8; 10];
                match stream.read_exact(&mut header) {
                    Ok(()) => "answered".into(),
                    Err(_) => "closed".into(),
                }
            })();
            use std::io::Write;
            let mut w = writer;
            let _ = w.write_all(outcome.as_bytes());
            // SAFETY: ends the child.
            unsafe { libc::_exit(0) }
        }
        child => {
            drop(writer);
            let mut out = String::new();
            use std::io::Read;
            let _ = reader.read_to_string(&mut out);
            // SAFETY: reaps our own child.
            unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
            out
        }
    }
}

fn ttrpc_state_request() -> Vec<u8> {
    use containerd_shim_protos::protobuf::Message;
    let state = containerd_shim_protos::shim::shim::StateRequest {
        id: "any".into(),
        ..Default::default()
    };
    let request = containerd_shim_protos::ttrpc::Request {
        service: "containerd.task.v2.Task".into(),
        method: "State".into(),
        payload: state.write_to_bytes().unwrap(),
        timeout_nano: 5_000_000_000,
        ..Default::default()
    };
    request.write_to_bytes().unwrap()
}

#[test]
fn the_task_api_answers_containerd_only() {
    let c = Containerd::start();
    c.import(
        None,
        &images().rootfs("localhost/hello:test", &wasm("hello"), &[]),
        false,
    );
    let id = unique("api");
    let cgroup = c.cgroup_of(&id);
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        WASMEDGE_RUNTIME,
        "--cgroup",
        &cgroup,
        "localhost/hello:test",
        &id,
        "/app/hello.wasm",
        "sleep",
        "60",
    ]);
    assert!(c.wait_task_status(&id, "RUNNING", Duration::from_secs(60)));
    let bundle = c
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(&c.namespace)
        .join(&id);
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    let public = PathBuf::from(address.trim().trim_start_matches("unix://"));
    assert!(public.exists(), "the shim's socket {}", public.display());
    // containerd puts it in a root-only directory; the shim also checks the peer's uid (unit
    // test in task_proxy.rs).
    let outcome = unprivileged_call(&public);
    assert!(
        outcome == "closed" || outcome.starts_with("refused: "),
        "an unprivileged process must get nothing from the shim: {outcome}"
    );
    let shim = c.shim_pids()[0];
    let private = PathBuf::from(containerd_shim_wasmedge::shim::task_proxy::PRIVATE_DIR)
        .join(format!("{shim}.sock"));
    assert!(private.exists(), "{}", private.display());
    let outcome = unprivileged_call(&private);
    assert!(
        outcome.starts_with("refused: ") && outcome.contains("ermission denied"),
        "{outcome}"
    );
    // containerd itself still drives the task.
    assert!(c.ctr_ok(&["task", "ls"]).contains(&id));
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(c.wait_task_status(&id, "STOPPED", Duration::from_secs(20)));
    c.ctr_ok(&["task", "delete", &id]);
    c.ctr_ok(&["container", "rm", &id]);
    c.assert_clean();
    assert!(c.wait_no_shims(Duration::from_secs(20)).is_empty());
    assert!(
        !private.exists(),
        "the private socket is removed with its shim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_one_pod_hold_no_descriptor_of_the_node() {
    use common::cri::{remove_pod, run_container, run_pod, start_container, Cri};
    use std::collections::HashMap;
    // A pod as kubelet makes it: the sandbox container, a wasm module, and a native sidecar
    // (allowed on this node) that lists its own descriptors.
    let c = Containerd::start_with(Options {
        node_config_extra: "allow_native_containers = true\n".into(),
        ..Default::default()
    });
    c.import(Some("k8s.io"), &images().pause(), false);
    let busybox = image::build(
        &images().dir,
        "localhost/escape-busybox-cri:test",
        &[Entry::File {
            path: "/bin/busybox",
            bytes: std::fs::read("/bin/busybox").unwrap(),
            mode: 0o755,
        }],
        &["/bin/busybox"],
    );
    c.import(Some("k8s.io"), &busybox, false);
    let module = image::build(
        &images().dir,
        "localhost/escape-module-cri:test",
        &[
            Entry::File {
                path: MODULE,
                bytes: hostile_module(),
                mode: 0o644,
            },
            Entry::Dir("/app/config"),
        ],
        &[MODULE],
    );
    c.import(Some("k8s.io"), &module, false);
    let mut cri = Cri::connect(c.socket.clone()).await;
    let pod = run_pod(&c, &mut cri, HashMap::new()).await;
    let long = HashMap::from([(
        "wasmedge.io/execution-timeout-ms".to_string(),
        "30000".to_string(),
    )]);
    let wasm_id = start_container(
        &mut cri,
        &pod,
        "localhost/escape-module-cri:test",
        &["spin"],
        0,
        long,
    )
    .await;
    let sidecar = run_container(
        &mut cri,
        &pod,
        "localhost/escape-busybox-cri:test",
        &["ls", "/proc/self/fd"],
        1,
        HashMap::new(),
    )
    .await;
    assert_eq!(sidecar.exit_code, 0, "{sidecar:?}");
    let log = common::cri::container_log(&c, &pod, 1);
    let listed: Vec<&str> = log
        .lines()
        .filter_map(|l| l.rsplit(' ').next())
        .filter(|w| !w.is_empty())
        .collect();
    assert_eq!(
        listed,
        ["0", "1", "2", "3"],
        "the sidecar holds stdio and ls's directory only: {log}"
    );
    let tasks = c.ctr_ns("k8s.io", &["task", "ls"]);
    let tasks = String::from_utf8_lossy(&tasks.stdout).into_owned();
    let pid: i32 = tasks
        .lines()
        .find(|l| l.starts_with(&wasm_id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{tasks}"));
    let fds = descriptors(pid);
    let targets: Vec<&str> = fds.iter().skip(3).map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        targets,
        ["/app/config"],
        "the module holds stdio and its preopen only: {fds:?}"
    );
    remove_pod(&c, &mut cri, &pod).await;
    c.assert_clean();
}
