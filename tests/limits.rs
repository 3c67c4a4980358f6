//! Every limit holds against a hostile module or client, through the real shim under a private
//! containerd (HTTP and command mode): time in host calls, stack, captured output, request
//! bodies, tables, the compiler's budget and the node's ceilings of the HTTP knobs. Each test
//! asserts the status or exit code, the message, a bound on time or memory where the product
//! promises one (generous: the product's own bounds are the limit plus milliseconds), and that
//! the function goes on serving. Loopback only.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{images, unique, wasm, Containerd, HttpContainer, Options, WASMEDGE_RUNTIME};

const HOSTILE: &str = "localhost/hostile-limits:test";
const HOSTILE_MODULE: &str = "/app/hostile.wasm";

/// A node ceiling that lets a module reach loopback servers of the tests.
/// (edge-strict, the default preset, plus 127.0.0.1).
const LOOPBACK_CEILING: &str = "[ceiling]\nmaxMemoryPages = 512\nexecutionTimeoutMs = 30000\nallowedHosts = [\"127.0.0.1\", \"api.example.com\"]\nallowedEnvVars = [\"APP_MODE\", \"REGION\"]\nallowedDirs = [{ hostPath = \"/app/config\", guestPath = \"/config\", readonly = true }]\nmaxNetworkRequests = 50\n";

fn with_hostile(node_config_extra: &str) -> Containerd {
    let c = Containerd::start_with(Options {
        node_config_extra: node_config_extra.into(),
        ..Default::default()
    });
    c.import(
        None,
        &images().rootfs(HOSTILE, &wasm("hostile"), &[]),
        false,
    );
    c
}

fn serve(c: &Containerd, annotations: &[&str]) -> HttpContainer {
    let f = c.start_http(
        HOSTILE,
        &unique("limits"),
        annotations,
        &[HOSTILE_MODULE, "serve"],
    );
    f.wait_ready(Duration::from_secs(120))
        .unwrap_or_else(|seen| panic!("never ready (saw {seen:?}); log:\n{}", c.log_text()));
    f
}

fn error_of(reply: &common::Reply) -> String {
    reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// After an attack: the next function request gets its normal response.
fn still_serves(f: &HttpContainer) {
    let reply = f.get("/after");
    assert_eq!(
        reply.status, 200,
        "the next request must be served normally: {}",
        reply.body
    );
    assert_eq!(reply.json()["path"], "/after");
}

/// The container's peak memory (its cgroup's), asserted below `bound` bytes.
fn peak_memory_below(c: &Containerd, f: &HttpContainer, bound: u64) -> u64 {
    let peak = c
        .peak_memory_bytes(&f.id)
        .expect("the container's memory cgroup");
    assert!(peak < bound, "the container peaked at {} MiB", peak >> 20);
    peak
}

/// A loopback server that accepts connections and never answers.
fn silent_server() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[test]
fn http_host_calls_end_at_the_call_deadline_and_free_their_slot() {
    let c = with_hostile(LOOPBACK_CEILING);
    let f = serve(
        &c,
        &[
            "wasmedge.io/execution-timeout-ms=1000",
            "wasmedge.io/max-concurrency=4",
            "wasmedge.io/allowed-hosts=127.0.0.1",
        ],
    );
    // Requests sleeping 12 s in poll_oneoff, one per slot, twice in a row: each ends at its
    // limit and frees its slot for the next round (before: 504 after 12.1 s, and the slots
    // stayed taken, so further requests got 503).
    let mut slowest = Duration::ZERO;
    for round in 0..2 {
        let sleepers: Vec<_> = (0..4)
            .map(|_| {
                let url = f.url("/sleep?ms=12000");
                std::thread::spawn(move || {
                    let started = Instant::now();
                    (common::request("GET", &url, None), started.elapsed())
                })
            })
            .collect();
        for sleeper in sleepers {
            let (reply, took) = sleeper.join().unwrap();
            slowest = slowest.max(took);
            assert_eq!(reply.status, 504, "round {round}: {}", reply.body);
            assert!(
                error_of(&reply).contains("time limit exceeded (execution_timeout_ms 1000)"),
                "{}",
                reply.body
            );
            // The 1 s limit and a busy machine's margin; far below the 12 s asked for.
            assert!(
                took < Duration::from_secs(8),
                "a sleeping request took {took:?}, its limit is 1 s"
            );
        }
    }
    eprintln!("measured: 2 rounds of 4 requests sleeping 12 s on 4 slots, limit 1 s: all 504, the slowest after {slowest:?}");
    still_serves(&f);

    // fetch to a server that never answers gets the time left of the call (before: 10 s).
    let (_server, port) = silent_server();
    let started = Instant::now();
    let reply = f.get(&format!("/fetch?url=http://127.0.0.1:{port}/"));
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "a stalled fetch took {:?}",
        started.elapsed()
    );
    eprintln!(
        "measured: fetch to a silent server, limit 1 s: 504 after {:?}",
        started.elapsed()
    );
    still_serves(&f);
    c.stop_task(&f.id, "SIGTERM", Duration::from_secs(30));
    c.assert_clean();
}

#[test]
fn command_mode_shares_the_deadline() {
    let c = with_hostile("");
    let r = c.run(
        WASMEDGE_RUNTIME,
        HOSTILE,
        &unique("sleep"),
        &["--annotation", "wasmedge.io/execution-timeout-ms=1000"],
        &[HOSTILE_MODULE, "sleep", "12000"],
    );
    assert_eq!(r.code, 124, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("WasmEdge: time limit exceeded (execution_timeout_ms 1000)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("sleeping") && !r.stdout.contains("woke up"),
        "{}",
        r.stdout
    );
    // "woke up" would follow the 12 s sleep: the sleep was cut. (No bound on the whole `ctr
    // run`: it includes the container's create and the module's first compile.)
    eprintln!("measured: command-mode sleep of 12 s, limit 1 s: exit 124, ctr run took {:?} (create included)", r.elapsed);
    c.assert_clean();
}

#[test]
fn deep_recursion_is_a_trap_in_both_modes() {
    let c = with_hostile("");
    let r = c.run_wasm(HOSTILE, &unique("recurse"), &[HOSTILE_MODULE, "recurse"]);
    assert_eq!(r.code, 134, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("wasm trap: call stack exhausted"),
        "{}",
        r.stderr
    );

    let f = serve(&c, &["wasmedge.io/max-concurrency=2"]);
    for _ in 0..3 {
        let reply = f.get("/recurse");
        assert_eq!(
            (reply.status, error_of(&reply).as_str()),
            (500, "wasm trap: call stack exhausted"),
            "{}",
            reply.body
        );
        still_serves(&f);
    }
    c.stop_task(&f.id, "SIGTERM", Duration::from_secs(30));
    c.assert_clean();
}

#[test]
fn a_response_larger_than_the_memory_cap_is_refused_and_not_held() {
    let c = with_hostile("");
    // 16 MiB of memory; the module writes 1 GiB to stdout (before: the container grew to
    // 1054 MiB).
    let f = serve(&c, &["wasmedge.io/max-memory-pages=256"]);
    let reply = f.get("/bigout?mib=1024");
    assert_eq!(
        reply.status,
        500,
        "{}",
        &reply.body[..reply.body.len().min(300)]
    );
    assert!(
        error_of(&reply).starts_with(
            "response too large: the function wrote 1073741824 bytes, at most 16777216"
        ),
        "{}",
        reply.body
    );
    still_serves(&f);
    // The response's 16 MiB, the instance's 16 MiB, the runtime; far from the 1 GiB written.
    let peak = peak_memory_below(&c, &f, 256 << 20);
    eprintln!(
        "measured: 1 GiB to stdout under a 16 MiB cap: 500, container peak {} MiB",
        peak >> 20
    );
    c.stop_task(&f.id, "SIGTERM", Duration::from_secs(30));
    c.assert_clean();
}

/// Sends a request head announcing a 1 MiB body and 10 bytes of it, then stalls.
fn stalled_body(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: fn\r\nContent-Length: 1048576\r\n\r\n0123456789")
        .unwrap();
    s
}

fn status_of(mut s: TcpStream, wait: Duration) -> Option<u16> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[test]
fn request_bodies_are_admitted_before_they_are_read_and_time_out() {
    let c = with_hostile("");
    // Body budget: 2 workers x 2 bodies x 1 MiB = 4 MiB.
    let f = serve(
        &c,
        &[
            "wasmedge.io/max-concurrency=2",
            "wasmedge.io/max-body-bytes=1048576",
        ],
    );
    let declared_too_large = {
        let mut s = TcpStream::connect(("127.0.0.1", f.port)).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: fn\r\nContent-Length: 1048577\r\n\r\n")
            .unwrap();
        status_of(s, Duration::from_secs(10))
    };
    assert_eq!(
        declared_too_large,
        Some(413),
        "a body declared over the limit is refused before it is read"
    );

    // 40 clients announce 1 MiB each and stall (before: 300 such bodies held 326 MiB).
    let started = Instant::now();
    let stalled: Vec<TcpStream> = (0..40).map(|_| stalled_body(f.port)).collect();
    let mut statuses: Vec<Option<u16>> = stalled
        .into_iter()
        .map(|s| status_of(s, Duration::from_secs(60)))
        .collect();
    statuses.sort();
    let count = |code| statuses.iter().filter(|s| **s == Some(code)).count();
    assert_eq!(
        count(503),
        36,
        "beyond the 4 MiB body budget: 503 at once; got {statuses:?}"
    );
    assert_eq!(
        count(408),
        4,
        "admitted bodies that never arrive time out: {statuses:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the body timeout is 10 s; took {:?}",
        started.elapsed()
    );
    let peak = peak_memory_below(&c, &f, 256 << 20);
    eprintln!(
        "measured: 40 stalled 1 MiB bodies: 36 x 503, 4 x 408 after {:?}, container peak {} MiB",
        started.elapsed(),
        peak >> 20
    );
    still_serves(&f);
    assert_eq!(f.post("/echo", "small").status, 200);
    c.stop_task(&f.id, "SIGTERM", Duration::from_secs(30));
    c.assert_clean();
}

#[test]
fn a_huge_table_is_refused_before_it_is_instantiated() {
    let c = Containerd::start();
    let module = wasmedge_sdk::wat2wasm(br#"(module (table 60000000 funcref) (memory (export "memory") 1) (func (export "_start")))"#).unwrap();
    let path = images().write_file("table-60m.wasm", &module);
    let image = "localhost/table-60m:test";
    c.import(None, &images().rootfs(image, &path, &[]), false);
    let id = unique("table");
    let r = c.run(
        WASMEDGE_RUNTIME,
        image,
        &id,
        &["--annotation", "wasmedge.io/max-memory-pages=16"],
        &["/app/table-60m.wasm"],
    );
    assert_eq!(r.code, 126, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("failed to load module: /app/table-60m.wasm: table too large: table 0 declares 60000000 elements; at most 65536 elements with max_memory_pages 16"),
        "{}",
        r.stderr
    );
    assert!(
        !c.log_text().contains("aot: compiled /app/table-60m.wasm"),
        "refused before compiling"
    );
    c.assert_clean();
}

#[test]
fn http_mode_refuses_a_start_function_that_no_time_limit_reaches() {
    let c = Containerd::start();
    // A start function that never returns: it would run inside every request's instantiation.
    let module = wasmedge_sdk::wat2wasm(br#"(module (memory (export "memory") 1) (func $spin (loop (br 0))) (start $spin) (func (export "_start")))"#).unwrap();
    let path = images().write_file("start-spin.wasm", &module);
    let image = "localhost/start-spin:test";
    c.import(None, &images().rootfs(image, &path, &[]), false);
    let r = c.run(
        WASMEDGE_RUNTIME,
        image,
        &unique("start"),
        &["--annotation", "wasmedge.io/mode=http"],
        &["/app/start-spin.wasm"],
    );
    assert_eq!(r.code, 126, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("failed to load module: /app/start-spin.wasm: the module has a start function (function 0); HTTP mode runs it at every request's instantiation, outside the request's time limit"),
        "{}",
        r.stderr
    );
    c.assert_clean();
}

/// One function of `instructions` arithmetic steps over 2000 locals: seconds of LLVM time.
fn slow_to_compile(instructions: u32) -> Vec<u8> {
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let locals = 2000;
    let mut body = vec![];
    leb(1, &mut body);
    leb(locals, &mut body);
    body.push(0x7f);
    for i in 0..instructions {
        let (a, b) = ((i * 7) % locals, (i * 13 + 5) % locals);
        body.push(0x20);
        leb(a, &mut body);
        body.push(0x20);
        leb(b, &mut body);
        body.push(0x6c); // i32.mul
        body.push(0x20);
        leb((a + 1) % locals, &mut body);
        body.push(0x6a); // i32.add
        body.push(0x21);
        leb(b, &mut body);
    }
    body.push(0x0b);
    let section = |id: u8, payload: &[u8]| {
        let mut s = vec![id];
        leb(payload.len() as u32, &mut s);
        s.extend_from_slice(payload);
        s
    };
    let mut code = vec![];
    leb(1, &mut code);
    leb(body.len() as u32, &mut code);
    code.extend_from_slice(&body);
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend(section(1, &[1, 0x60, 0, 0]));
    m.extend(section(3, &[1, 0]));
    m.extend(section(
        7,
        &[1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 0],
    ));
    m.extend(section(10, &code));
    m
}

#[test]
fn the_compiler_has_a_budget_of_time_and_memory() {
    let module = images().write_file("slow-compile.wasm", &slow_to_compile(600_000));
    let image = "localhost/slow-compile:test";
    // Time: a module that needs several seconds of compiling, under a 1 s budget.
    let c = Containerd::start_with(Options {
        node_config_extra: "max_compile_seconds = 1\n".into(),
        ..Default::default()
    });
    c.import(None, &images().rootfs(image, &module, &[]), false);
    let r = c.run(
        WASMEDGE_RUNTIME,
        image,
        &unique("slowc"),
        &[],
        &["/app/slow-compile.wasm"],
    );
    assert_eq!(r.code, 126, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("AOT compile failed: the compiler ran out of time after 1 s"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("max_compile_seconds 1"), "{}", r.stderr);
    assert!(
        r.elapsed < Duration::from_secs(60),
        "the 1 s budget took {:?}",
        r.elapsed
    );
    eprintln!(
        "measured: {} MB module under a 1 s compile budget: exit 126 after {:?}",
        std::fs::metadata(&module).unwrap().len() / 1_000_000,
        r.elapsed
    );
    assert!(c.aot_entries().is_empty(), "nothing cached");
    c.assert_clean();
    drop(c);

    // Memory: any module, under a budget LLVM cannot even start in.
    let c = Containerd::start_with(Options {
        node_config_extra: "max_compile_memory_bytes = 8388608\n".into(),
        ..Default::default()
    });
    c.import(
        None,
        &images().rootfs(HOSTILE, &wasm("hostile"), &[]),
        false,
    );
    let r = c.run_wasm(HOSTILE, &unique("memc"), &[HOSTILE_MODULE, "env"]);
    assert_eq!(r.code, 126, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("AOT compile failed: the compiler process ended"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("max_compile_memory_bytes 8 MiB"),
        "{}",
        r.stderr
    );
    c.assert_clean();
}

#[test]
fn http_knobs_are_held_to_the_node_ceiling() {
    let c = with_hostile("[http_ceiling]\nmax_concurrency = 8\nwarm_pool = 2\nmax_body_bytes = 2097152\ndrain_timeout_ms = 30000\n");
    for (annotation, reason) in [
        (
            "wasmedge.io/max-concurrency=256",
            "above the node ceiling of 8 concurrent requests",
        ),
        (
            "wasmedge.io/max-body-bytes=67108864",
            "above the node ceiling of 2097152 bytes",
        ),
        (
            "wasmedge.io/drain-timeout-ms=600000",
            "above the node ceiling of 30000 ms",
        ),
    ] {
        let r = c.run(
            WASMEDGE_RUNTIME,
            HOSTILE,
            &unique("knob"),
            &[
                "--annotation",
                "wasmedge.io/mode=http",
                "--annotation",
                annotation,
            ],
            &[HOSTILE_MODULE, "serve"],
        );
        assert_eq!(r.code, 78, "{annotation}: {} {}", r.stdout, r.stderr);
        let key = annotation.split('=').next().unwrap();
        assert!(
            r.stderr.contains(key) && r.stderr.contains(reason),
            "{annotation}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("ask the node admin to raise the ceiling"),
            "{}",
            r.stderr
        );
    }
    // A key of the project's prefix in another case is refused, not ignored.
    let r = c.run(
        WASMEDGE_RUNTIME,
        HOSTILE,
        &unique("case"),
        &["--annotation", "WasmEdge.io/policy=allow-all"],
        &[HOSTILE_MODULE, "env"],
    );
    assert_eq!(r.code, 78, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("WasmEdge.io/policy"), "{}", r.stderr);
    c.assert_clean();
}

/// The hostile module with a read-write /app/cache that already holds 256 KiB.
fn with_a_cache_dir(c: &Containerd) -> &'static str {
    const IMAGE: &str = "localhost/hostile-disk:test";
    let archive = common::image::build(
        &images().dir,
        IMAGE,
        &[
            common::image::Entry::File {
                path: HOSTILE_MODULE,
                bytes: std::fs::read(wasm("hostile")).unwrap(),
                mode: 0o644,
            },
            common::image::Entry::Dir("/app/cache"),
            common::image::Entry::File {
                path: "/app/cache/old",
                bytes: vec![0; 256 << 10],
                mode: 0o644,
            },
        ],
        &[HOSTILE_MODULE],
    );
    c.import(None, &archive, false);
    IMAGE
}

const CACHE_RW: &str = "wasmedge.io/allowed-dirs=/app/cache:/cache:rw";
const ONE_MIB_OF_DISK: &str = "wasmedge.io/max-disk-bytes=1048576";
const DQUOT: &str = "Quota exceeded (os error 19)";

#[test]
fn the_read_write_dirs_hold_at_most_their_quota() {
    let c = Containerd::start_with(Options::default());
    let image = with_a_cache_dir(&c);
    let flags = [
        "--annotation",
        "wasmedge.io/policy=edge-moderate",
        "--annotation",
        CACHE_RW,
        "--annotation",
        ONE_MIB_OF_DISK,
    ];

    // Appending until refused: the quota less what the dir held (256 KiB and a name) and the
    // new file's name, then EDQUOT, reported with the field and the fix.
    let r = c.run(
        WASMEDGE_RUNTIME,
        image,
        &unique("fill"),
        &flags,
        &[HOSTILE_MODULE, "fill", "/cache/f"],
    );
    let expected = (1 << 20) - (256 << 10) - 2 * 4096;
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains(&format!("wrote {expected} bytes, then: {DQUOT}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("disk quota exceeded: /cache/f (max_disk_bytes 1048576); raise wasmedge.io/max-disk-bytes"),
        "{}",
        r.stderr
    );
    eprintln!(
        "measured: appending to a read-write dir under a 1 MiB quota: {}",
        r.stdout.trim()
    );

    // The issue's fd_allocate of 256 MiB, a 1 TiB sparse size, and files kept open after
    // their names are gone (the bytes stay counted: one 512 KiB round fits, not two).
    let r = c.run(
        WASMEDGE_RUNTIME,
        image,
        &unique("tricks"),
        &flags,
        &[HOSTILE_MODULE, "disk-tricks", "/cache"],
    );
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    for said in [
        "fd_allocate 256 MiB: errno 19".to_string(),
        format!("set_len 1 TiB: {DQUOT}"),
        format!("unlinked-but-open: 1 rounds, then: {DQUOT}"),
    ] {
        assert!(r.stdout.contains(&said), "missing {said:?} in {}", r.stdout);
    }
    eprintln!(
        "measured: disk tricks under a 1 MiB quota: {}",
        r.stdout.trim()
    );

    // Above the node ceiling (64 MiB unless the admin says otherwise): refused before start.
    let r = c.run(
        WASMEDGE_RUNTIME,
        image,
        &unique("ceiling"),
        &[
            "--annotation",
            CACHE_RW,
            "--annotation",
            "wasmedge.io/policy=edge-moderate",
            "--annotation",
            "wasmedge.io/max-disk-bytes=134217728",
        ],
        &[HOSTILE_MODULE, "fill", "/cache/f"],
    );
    assert_eq!(r.code, 78, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "wasmedge.io/max-disk-bytes=\"134217728\": above the node ceiling of 67108864 bytes"
        ),
        "{}",
        r.stderr
    );
    c.assert_clean();
}

#[test]
fn http_instances_share_their_container_s_disk_quota() {
    let c = Containerd::start_with(Options::default());
    let image = with_a_cache_dir(&c);
    let f = c.start_http(
        image,
        &unique("disk"),
        &[
            "wasmedge.io/policy=edge-moderate",
            CACHE_RW,
            ONE_MIB_OF_DISK,
        ],
        &[HOSTILE_MODULE, "serve"],
    );
    f.wait_ready(Duration::from_secs(120))
        .unwrap_or_else(|seen| panic!("never ready (saw {seen:?}); log:\n{}", c.log_text()));
    // Each request is a fresh instance; the second finds the room the first left: none.
    let first = f.get("/fill?path=/cache/a");
    assert_eq!(first.status, 200, "{}", first.body);
    let expected = (1 << 20) - (256 << 10) - 2 * 4096;
    let fill_said = |reply: &common::Reply, wrote: u64| {
        let said = reply.json()["fill"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            said.starts_with(&format!("wrote {wrote} bytes, then: {DQUOT}")),
            "{}",
            reply.body
        );
    };
    fill_said(&first, expected);
    let second = f.get("/fill?path=/cache/b");
    assert_eq!(second.status, 200, "{}", second.body);
    fill_said(&second, 0);
    let metrics = f.get("/metrics");
    assert!(
        metrics.body.contains("field=\"max_disk_bytes\"} 2"),
        "{}",
        metrics.body
    );
    still_serves(&f);
    c.stop_task(&f.id, "SIGTERM", Duration::from_secs(30));
    c.assert_clean();
}
