//! The shim under a private containerd, driven like `ctr`.

mod common;

use std::time::{Duration, Instant};

use common::{images, unique, wasm, Containerd, WASMEDGE_RUNTIME};

/// `ctr run IMAGE ID ARGS...` replaces the whole command line, so arg0 comes first.
const HELLO: &str = "/app/hello.wasm";

fn hello_image(c: &Containerd) -> String {
    let data = images().write_file("data.txt", b"data shipped in the image\n");
    // /app/config is the host side of the default policy's read-only /config.
    let archive = images().rootfs(
        "localhost/hello:test",
        &wasm("hello"),
        &[(&data, "/app/config/data.txt")],
    );
    c.import(None, &archive, false);
    "localhost/hello:test".to_string()
}

#[test]
fn hello_prints_and_exit_code_propagates() {
    let c = Containerd::start();
    let image = hello_image(&c);
    let r = c.run_wasm(&image, &unique("hello"), &[]);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello from wasmedge");

    let r = c.run_wasm(&image, &unique("exit"), &[HELLO, "exit", "7"]);
    assert_eq!(
        r.code, 7,
        "ctr run must return the module's exit code; stderr: {}",
        r.stderr
    );
    assert_eq!(r.stdout.trim(), "exiting with 7");
    c.assert_clean();
}

#[test]
fn args_env_and_image_files_reach_the_module() {
    let c = Containerd::start();
    let image = hello_image(&c);
    let id = unique("args");
    let r = c.run(
        WASMEDGE_RUNTIME,
        &image,
        &id,
        &[],
        &[HELLO, "args", "one", "two words"],
    );
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "argc=4",
            "argv[0]=/app/hello.wasm",
            "argv[1]=args",
            "argv[2]=one",
            "argv[3]=two words"
        ]
    );

    // The default policy (edge-strict) lets APP_MODE and REGION through.
    let r = c.run(
        WASMEDGE_RUNTIME,
        &image,
        &unique("env"),
        &["--env", "APP_MODE=hi there", "--env", "REGION=ap-east-1"],
        &[HELLO, "env", "APP_MODE", "REGION", "UNSET_ONE"],
    );
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        [
            "APP_MODE=hi there",
            "REGION=ap-east-1",
            "UNSET_ONE is unset"
        ]
    );

    let r = c.run_wasm(&image, &unique("cat"), &[HELLO, "cat", "/config/data.txt"]);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "data shipped in the image\n");

    let r = c.run_wasm(
        &image,
        &unique("stderr"),
        &[HELLO, "stderr", "to the error stream"],
    );
    assert_eq!(r.code, 0);
    assert!(
        r.stderr.contains("to the error stream"),
        "stderr: {}",
        r.stderr
    );
    assert!(!r.stdout.contains("to the error stream"));
    c.assert_clean();
}

/// Runs the module's endless busy loop, signals it, and returns what `ctr task delete`
/// printed (the exit status). The wait is generous: the test is about whether the signal
/// interrupts compiled code that never calls the host, not about the machine's speed.
fn kill_running_loop(c: &Containerd, image: &str, signal: &str) -> String {
    let id = unique("loop");
    let cgroup = c.cgroup_of(&id);
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        WASMEDGE_RUNTIME,
        "--cgroup",
        &cgroup,
        image,
        &id,
        "/app/hello.wasm",
        "loop",
    ]);
    assert!(
        c.wait_task_status(&id, "RUNNING", Duration::from_secs(60)),
        "loop never ran"
    );
    // Let the module get into its busy loop.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let deleted = c.stop_task(&id, signal, Duration::from_secs(60));
    eprintln!(
        "measured: {signal} to STOPPED and deleted (as ctr sees it) in {:?}",
        started.elapsed()
    );
    deleted
}

#[test]
fn kill_interrupts_an_infinite_loop() {
    let c = Containerd::start();
    let image = hello_image(&c);
    // The exit status shows that the signal ended the loop, not a time limit (124).
    let status = kill_running_loop(&c, &image, "SIGTERM");
    assert!(
        status.contains("143"),
        "SIGTERM: expected exit status 143, got: {status}"
    );
    let status = kill_running_loop(&c, &image, "SIGKILL");
    assert!(
        status.contains("137"),
        "SIGKILL: expected exit status 137, got: {status}"
    );
    c.assert_clean();
}

#[test]
fn sigterm_exit_status_is_143() {
    let c = Containerd::start();
    let image = hello_image(&c);
    let id = unique("term");
    let cgroup = c.cgroup_of(&id);
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        WASMEDGE_RUNTIME,
        "--cgroup",
        &cgroup,
        &image,
        &id,
        "/app/hello.wasm",
        "sleep",
        "60",
    ]);
    assert!(c.wait_task_status(&id, "RUNNING", Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(200));
    c.ctr_ok(&["task", "kill", &id]);
    // Well inside the module's 60 s sleep; exit status 143 (not 0) shows the signal ended it.
    assert!(c.wait_task_status(&id, "STOPPED", Duration::from_secs(45)));
    let out = c.ctr(&["task", "delete", &id]);
    // ctr prints the exit status of the deleted task.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("143"),
        "expected exit status 143, got: {text}"
    );
    c.ctr_ok(&["container", "rm", &id]);
    c.assert_clean();
}

#[test]
fn rootfs_image_compiles_once_then_hits_the_aot_cache() {
    let c = Containerd::start();
    let image = hello_image(&c);
    let r = c.run_wasm(&image, &unique("first"), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        c.aot_entries().len(),
        1,
        "first run must store one AOT entry"
    );
    let entry = c.aot_entries().remove(0);
    let written = std::fs::read(&entry).unwrap();

    let r = c.run_wasm(&image, &unique("second"), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello from wasmedge");
    let log = c.log_text();
    assert_eq!(
        log.matches("aot: compiled /app/hello.wasm").count(),
        1,
        "compiled more than once:\n{log}"
    );
    assert_eq!(
        log.matches("aot: cache hit for /app/hello.wasm").count(),
        1,
        "no cache hit:\n{log}"
    );
    assert_eq!(c.aot_entries(), vec![entry.clone()]);
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        written,
        "a cache hit must not rewrite the entry"
    );
    c.assert_clean();
}

#[test]
fn corrupt_cache_entry_is_recompiled_not_loaded() {
    let c = Containerd::start();
    let image = hello_image(&c);
    assert_eq!(c.run_wasm(&image, &unique("fill"), &[]).code, 0);
    let entry = c.aot_entries().remove(0);
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&entry, &bytes).unwrap();

    let r = c.run_wasm(&image, &unique("after-corruption"), &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "hello from wasmedge");
    let log = c.log_text();
    assert!(log.contains("was corrupt (checksum mismatch)"), "{log}");
    assert_eq!(log.matches("aot: compiled /app/hello.wasm").count(), 2);
    c.assert_clean();
}

#[test]
fn wasm_artifact_image_runs_and_is_precompiled_once() {
    let c = Containerd::start();
    let archive = images().artifact("localhost/hello-artifact:test", &wasm("hello"));
    c.import(None, &archive, true);
    for n in 0..2 {
        let r = c.run_wasm(
            "localhost/hello-artifact:test",
            &unique("artifact"),
            &["/hello.wasm", "exit", "3"],
        );
        assert_eq!(r.code, 3, "run {n}: {}", r.stderr);
        assert_eq!(r.stdout.trim(), "exiting with 3");
    }
    let log = c.log_text();
    assert_eq!(
        log.matches("aot: compiled OCI layer sha256:").count(),
        1,
        "the OCI layer must be compiled exactly once:\n{log}"
    );
    assert_eq!(
        log.matches("aot: cache hit for OCI layer sha256:").count(),
        1,
        "{log}"
    );
    c.assert_clean();
}

#[test]
fn malformed_modules_fail_with_a_clear_message_and_leave_nothing() {
    let c = Containerd::start();
    let hello = std::fs::read(wasm("hello")).unwrap();
    let truncated = images().write_file("truncated.wasm", &hello[..hello.len() / 3]);
    let archive = images().rootfs("localhost/truncated:test", &truncated, &[]);
    c.import(None, &archive, false);
    let r = c.run_wasm("localhost/truncated:test", &unique("truncated"), &[]);
    assert_eq!(r.code, 126, "stdout {} stderr {}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("failed to load module: /app/truncated.wasm"),
        "stderr: {}",
        r.stderr
    );

    let artifact = images().artifact("localhost/truncated-artifact:test", &truncated);
    c.import(None, &artifact, true);
    let r = c.run_wasm(
        "localhost/truncated-artifact:test",
        &unique("truncated-oci"),
        &[],
    );
    assert_eq!(r.code, 126, "stderr {}", r.stderr);
    assert!(
        r.stderr.contains("failed to load module"),
        "stderr: {}",
        r.stderr
    );
    assert!(
        c.aot_entries().is_empty(),
        "nothing may be cached for a broken module"
    );
    c.assert_clean();
}

#[test]
fn a_trap_is_reported_with_its_reason() {
    let c = Containerd::start();
    let image = hello_image(&c);
    let r = c.run_wasm(&image, &unique("trap"), &[HELLO, "trap"]);
    assert_eq!(r.code, 134, "{}", r.stderr);
    assert!(
        r.stderr.contains("wasm trap: unreachable"),
        "stderr: {}",
        r.stderr
    );
    c.assert_clean();
}

#[test]
fn linux_containers_still_run_natively_under_the_shim() {
    // A pod's sandbox container (CRI marks it so; the pause image is an ELF binary): the shim
    // runs it like runc would (pods need this). Other native entrypoints: tests/escapes.rs.
    let c = Containerd::start();
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
    c.ctr_ok(&["task", "kill", &id]);
    // Well inside the module's 60 s sleep; exit status 143 (not 0) shows the signal ended it.
    assert!(c.wait_task_status(&id, "STOPPED", Duration::from_secs(45)));
    c.ctr_ok(&["task", "delete", &id]);
    c.ctr_ok(&["container", "rm", &id]);
    c.assert_clean();
}

#[test]
fn edge_function_answers_a_request_on_stdin() {
    let c = Containerd::start();
    c.import(
        None,
        &images().rootfs("localhost/edge-function:test", &wasm("edge-function"), &[]),
        false,
    );
    let request = r#"{"path":"/api/v1/process","method":"POST","headers":{"x-region":"ap-east-1"},"body":"{\"action\":\"transform\",\"data\":\"hello\"}","query":{}}"#;
    let r = c.run_with_stdin(
        WASMEDGE_RUNTIME,
        "localhost/edge-function:test",
        &unique("edge"),
        &["/app/edge-function.wasm"],
        request.as_bytes(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let response: serde_json::Value =
        serde_json::from_str(r.stdout.trim()).expect("one JSON response");
    assert_eq!(response["status_code"], 200);
    let body: serde_json::Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["result"], "HELLO");
    assert_eq!(body["region"], "ap-east-1");

    let r = c.run_with_stdin(
        WASMEDGE_RUNTIME,
        "localhost/edge-function:test",
        &unique("edge"),
        &["/app/edge-function.wasm"],
        br#"{"path":"/","method":"PUT","headers":{},"query":{}}"#,
    );
    let response: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(response["status_code"], 405);
    assert_eq!(response["body"], r#"{"error":"method not allowed"}"#);
    c.assert_clean();
}

#[test]
fn modules_compiled_ahead_of_time_are_compiled_again_unless_the_node_trusts_image_code() {
    // A universal-wasm file made by `wasmedge compile` (AOT section inside): by default only
    // its bytecode is used, compiled on this node; with trust_image_native_code, as it is.
    let aot = images().dir.join("hello-aot.wasm");
    let out = std::process::Command::new(common::wasmedge_cli())
        .arg("compile")
        .arg(wasm("hello"))
        .arg(&aot)
        .output()
        .expect("wasmedge compile");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = images().rootfs("localhost/hello-aot:test", &aot, &[]);

    let c = Containerd::start();
    c.import(None, &image, false);
    let r = c.run_wasm(
        "localhost/hello-aot:test",
        &unique("aot"),
        &["/app/hello-aot.wasm", "exit", "4"],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    let log = c.log_text();
    assert!(
        log.contains("aot: /app/hello-aot.wasm carries a WasmEdge AOT section; ignored"),
        "{log}"
    );
    assert!(log.contains("aot: compiled /app/hello-aot.wasm"), "{log}");
    assert_eq!(c.aot_entries().len(), 1);
    c.assert_clean();
    drop(c);

    let c = Containerd::start_with(common::Options {
        node_config_extra: "trust_image_native_code = true\n".into(),
        ..Default::default()
    });
    c.import(None, &image, false);
    let r = c.run_wasm(
        "localhost/hello-aot:test",
        &unique("aot"),
        &["/app/hello-aot.wasm", "exit", "4"],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    let log = c.log_text();
    assert!(log.contains("module ready (Precompiled)"), "{log}");
    assert!(
        !log.contains("aot: compiled /app/hello-aot.wasm"),
        "a trusted AOT module is not compiled again:\n{log}"
    );
    assert!(c.aot_entries().is_empty());
    c.assert_clean();
}

#[test]
fn unwritable_cache_falls_back_loudly_and_still_runs() {
    // A cache path that cannot be created (a regular file is in the way): the shim runs the
    // module in the interpreter and says why, instead of failing the container.
    let blocker = images().write_file("not-a-dir", b"");
    let c = Containerd::start_with(common::Options {
        aot_cache_dir: Some(blocker.join("cache")),
        ..Default::default()
    });
    let image = hello_image(&c);
    let r = c.run_wasm(&image, &unique("nocache"), &[HELLO, "exit", "6"]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    let log = c.log_text();
    assert!(log.contains("aot cache unavailable"), "{log}");
    assert!(log.contains("module ready (Interpreted)"), "{log}");
    c.assert_clean();
}

#[test]
fn relative_preopen_names_work_as_with_wasmedge_dir() {
    // `wasmedge --dir data:/app/config` and `--dir .:/app/config` in annotation form: WASI
    // preopen names are any string, and wasi-libc resolves relative paths against them.
    let c = Containerd::start_with(common::Options {
        // edge-strict (the default preset) plus the two mappings.
        node_config_extra: "[ceiling]\nmaxMemoryPages = 256\nexecutionTimeoutMs = 5000\nallowedHosts = [\"api.example.com\"]\nallowedEnvVars = [\"APP_MODE\", \"REGION\"]\nallowedDirs = [{ hostPath = \"/app/config\", guestPath = \"/config\", readonly = true }, { hostPath = \"/app/config\", guestPath = \"data\", readonly = true }, { hostPath = \"/app/config\", guestPath = \".\", readonly = true }]\nmaxNetworkRequests = 50\n".into(),
        ..Default::default()
    });
    let image = hello_image(&c);
    let r = c.run(
        WASMEDGE_RUNTIME,
        &image,
        &unique("rel"),
        &[
            "--annotation",
            "wasmedge.io/allowed-dirs=/app/config:data:ro",
        ],
        &[HELLO, "cat", "data/data.txt"],
    );
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "data shipped in the image\n"),
        "{}",
        r.stderr
    );
    let r = c.run(
        WASMEDGE_RUNTIME,
        &image,
        &unique("rel"),
        &["--annotation", "wasmedge.io/allowed-dirs=/app/config:.:ro"],
        &[HELLO, "cat", "data.txt"],
    );
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "data shipped in the image\n"),
        "{}",
        r.stderr
    );
    // Absolute names stay what they were.
    let r = c.run(
        WASMEDGE_RUNTIME,
        &image,
        &unique("rel"),
        &[
            "--annotation",
            "wasmedge.io/allowed-dirs=/app/config:data:ro",
        ],
        &[HELLO, "cat", "/config/data.txt"],
    );
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    c.assert_clean();
}
