//! The hostile-module suite: each attack through the real shim under containerd, stopped by
//! the sandbox policy with the exact error text, with neighbours and the node unharmed.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cri::{container_log, remove_pod, run_container, run_pod, Cri};
use common::{images, unique, wasm, Containerd, WASMEDGE_RUNTIME};

const HOSTILE: &str = "localhost/hostile:test";
const MODULE: &str = "/app/hostile.wasm";

fn setup() -> Containerd {
    let c = Containerd::start();
    let data = images().write_file("hostile-data.txt", b"original\n");
    c.import(
        None,
        &images().rootfs(
            HOSTILE,
            &wasm("hostile"),
            &[(&data, "/app/config/data.txt")],
        ),
        false,
    );
    c
}

/// Runs the hostile module with annotations (and extra ctr flags), returns the run.
fn attack(c: &Containerd, annotations: &[&str], flags: &[&str], args: &[&str]) -> common::Run {
    let mut all: Vec<String> = vec![];
    for a in annotations {
        all.push("--annotation".into());
        all.push(a.to_string());
    }
    all.extend(flags.iter().map(|f| f.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut argv = vec![MODULE];
    argv.extend_from_slice(args);
    c.run(WASMEDGE_RUNTIME, HOSTILE, &unique("attack"), &all, &argv)
}

fn neighbour_still_fine(c: &Containerd) {
    let r = attack(c, &[], &["--env", "APP_MODE=ok"], &["env"]);
    assert_eq!(
        r.code, 0,
        "a later container must run normally: {}",
        r.stderr
    );
    assert!(r.stdout.contains("APP_MODE=ok"));
}

#[test]
fn memory_bomb_is_stopped_at_the_page_limit() {
    let c = setup();
    let r = attack(&c, &["wasmedge.io/max-memory-pages=128"], &[], &["membomb"]);
    assert_eq!(r.code, 125, "stdout {} stderr {}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("WasmEdge: out of memory (max_memory_pages 128 = 8 MiB)"),
        "stderr: {}",
        r.stderr
    );
    neighbour_still_fine(&c);
    c.assert_clean();
}

#[test]
fn infinite_loop_hits_the_time_limit() {
    let c = setup();
    let started = Instant::now();
    let r = attack(
        &c,
        &["wasmedge.io/execution-timeout-ms=700"],
        &[],
        &["spin"],
    );
    assert_eq!(r.code, 124, "stderr {}", r.stderr);
    assert!(
        r.stderr
            .contains("WasmEdge: time limit exceeded (execution_timeout_ms 700)"),
        "stderr: {}",
        r.stderr
    );
    // The limit covers the call, not the module's first compile (before the container starts):
    // a generous bound only shows that the run did not go on unlimited.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
    neighbour_still_fine(&c);
    c.assert_clean();
}

#[test]
fn reads_outside_the_allowed_dirs_are_denied() {
    let c = setup();
    let r = attack(&c, &[], &[], &["read", "/etc/passwd"]);
    assert_eq!(r.code, 2, "the read must fail: {}", r.stdout);
    assert!(
        r.stderr.contains("permission denied: /etc/passwd"),
        "stderr: {}",
        r.stderr
    );
    // The module image's own files outside /config are not visible either.
    let r = attack(&c, &[], &[], &["read", "/app/hostile.wasm"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("permission denied: /app/hostile.wasm"),
        "stderr: {}",
        r.stderr
    );
    // The allowed read-only dir is readable.
    let r = attack(&c, &[], &[], &["read", "/config/data.txt"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "original\n"),
        "stderr {}",
        r.stderr
    );
    c.assert_clean();
}

#[test]
fn writes_into_a_read_only_dir_are_violations() {
    let c = setup();
    let r = attack(&c, &[], &[], &["write", "/config/data.txt", "tampered"]);
    assert_eq!(r.code, 2, "the write must fail: {}", r.stdout);
    assert!(
        r.stderr
            .contains("sandbox violation: fs write /config/data.txt"),
        "stderr: {}",
        r.stderr
    );
    let r = attack(&c, &[], &[], &["write", "/config/new.txt", "x"]);
    assert!(
        r.stderr
            .contains("sandbox violation: fs write /config/new.txt"),
        "stderr: {}",
        r.stderr
    );
    let r = attack(&c, &[], &[], &["read", "/config/data.txt"]);
    assert_eq!(r.stdout, "original\n", "the file must be unchanged");
    c.assert_clean();
}

#[test]
fn only_allowed_env_vars_reach_the_module() {
    let c = setup();
    let r = attack(
        &c,
        &[],
        &[
            "--env",
            "SECRET_TOKEN=hunter2",
            "--env",
            "APP_MODE=prod",
            "--env",
            "REGION=eu",
        ],
        &["env"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.lines().collect::<Vec<_>>(),
        ["APP_MODE=prod", "REGION=eu"]
    );
    let log = c.log_text();
    assert!(log.contains("env var not allowed: SECRET_TOKEN"), "{log}");
    assert!(log.contains("env var not allowed: PATH"), "{log}");
    // An override that narrows the list.
    let r = attack(
        &c,
        &["wasmedge.io/allowed-env=REGION"],
        &["--env", "APP_MODE=prod", "--env", "REGION=eu"],
        &["env"],
    );
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), ["REGION=eu"]);
    c.assert_clean();
}

#[test]
fn bad_annotations_refuse_the_start_with_the_reason() {
    let c = setup();
    let cases: [(&str, &[&str]); 4] = [
        (
            "wasmedge.io/max-memory-page=64",
            &[
                "invalid annotation wasmedge.io/max-memory-page=\"64\"",
                "did you mean wasmedge.io/max-memory-pages?",
            ],
        ),
        (
            "wasmedge.io/max-memory-pages=lots",
            &[
                "invalid annotation wasmedge.io/max-memory-pages=\"lots\"",
                "not a whole number",
            ],
        ),
        (
            "wasmedge.io/policy=edge-lax",
            &[
                "invalid annotation wasmedge.io/policy=\"edge-lax\"",
                "unknown policy preset",
                "edge-moderate, edge-strict",
            ],
        ),
        (
            "wasmedge.io/max-memory-pages=4096",
            &[
                "invalid annotation wasmedge.io/max-memory-pages=\"4096\"",
                "above the node ceiling of 512 pages",
            ],
        ),
    ];
    for (annotation, expected) in cases {
        let r = attack(&c, &[annotation], &[], &["env"]);
        assert_eq!(r.code, 78, "{annotation}: {}", r.stderr);
        for e in expected {
            assert!(
                r.stderr.contains(e),
                "{annotation}: expected {e:?} in: {}",
                r.stderr
            );
        }
        assert!(r.stdout.is_empty(), "the module must not run: {}", r.stdout);
    }
    c.assert_clean();
}

#[test]
fn a_stricter_node_ceiling_caps_presets() {
    let c = Containerd::start_with(common::Options {
        node_config_extra: "ceiling = \"edge-strict\"\n".into(),
        ..Default::default()
    });
    let data = images().write_file("hostile-data.txt", b"original\n");
    c.import(
        None,
        &images().rootfs(
            HOSTILE,
            &wasm("hostile"),
            &[(&data, "/app/config/data.txt")],
        ),
        false,
    );
    let r = attack(&c, &["wasmedge.io/policy=edge-moderate"], &[], &["env"]);
    assert_eq!(r.code, 78, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("invalid annotation wasmedge.io/policy=\"edge-moderate\""),
        "{}",
        r.stderr
    );
    let r = attack(
        &c,
        &[
            "wasmedge.io/policy=edge-moderate",
            "wasmedge.io/max-memory-pages=256",
        ],
        &[],
        &["env"],
    );
    assert_eq!(
        r.code, 78,
        "other fields are still above the ceiling: {}",
        r.stderr
    );
    c.assert_clean();
}

/// A loopback HTTP server that answers `pong` and counts the connections it accepted.
struct CountingServer {
    addr: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingServer {
    fn start(ip: &str) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong",
                );
            }
        });
        Self { addr, connections }
    }

    fn url(&self) -> String {
        format!("http://{}/ping", self.addr)
    }

    fn count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn network_only_to_allowed_hosts_and_within_the_budget() {
    // Loopback only: the container shares the host's network namespace (--net-host).
    let allowed = CountingServer::start("127.0.0.1");
    let denied = CountingServer::start("127.0.0.2");
    let c = Containerd::start_with(common::Options {
        node_config_extra: "[ceiling]\nmaxMemoryPages = 512\nexecutionTimeoutMs = 30000\nallowedHosts = [\"127.0.0.1\", \"api.example.com\"]\nallowedEnvVars = [\"APP_MODE\", \"REGION\"]\nallowedDirs = [{ hostPath = \"/app/config\", guestPath = \"/config\", readonly = true }]\nmaxNetworkRequests = 50\n".into(),
        ..Default::default()
    });
    let data = images().write_file("hostile-data.txt", b"original\n");
    c.import(
        None,
        &images().rootfs(
            HOSTILE,
            &wasm("hostile"),
            &[(&data, "/app/config/data.txt")],
        ),
        false,
    );
    let allow = "wasmedge.io/allowed-hosts=127.0.0.1";

    let r = attack(&c, &[allow], &["--net-host"], &["fetch", &allowed.url()]);
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "fetched: pong"),
        "stderr {}",
        r.stderr
    );
    assert_eq!(allowed.count(), 1);

    // Not in the policy: refused before any connection is made.
    let r = attack(&c, &[allow], &["--net-host"], &["fetch", &denied.url()]);
    assert_eq!(r.code, 3, "stdout {} stderr {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("host not allowed: 127.0.0.2"),
        "stderr: {}",
        r.stderr
    );
    // The default policy allows only api.example.com: loopback is refused too.
    let r = attack(&c, &[], &["--net-host"], &["fetch", &allowed.url()]);
    assert!(
        r.stderr.contains("host not allowed: 127.0.0.1"),
        "stderr: {}",
        r.stderr
    );
    assert_eq!(
        denied.count(),
        0,
        "the denied server must receive zero connections"
    );
    assert_eq!(allowed.count(), 1);

    // A flood stops at max_network_requests.
    let r = attack(
        &c,
        &[allow, "wasmedge.io/max-network-requests=5"],
        &["--net-host"],
        &["flood", &allowed.url(), "20"],
    );
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "flood: 5 ok, 15 refused"),
        "stderr {}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("network request limit reached: 5 (max_network_requests)"),
        "stderr: {}",
        r.stderr
    );
    assert_eq!(allowed.count(), 6);

    // A host outside the node ceiling cannot even be requested.
    let r = attack(
        &c,
        &["wasmedge.io/allowed-hosts=127.0.0.2"],
        &["--net-host"],
        &["fetch", &denied.url()],
    );
    assert_eq!(r.code, 78, "{}", r.stderr);
    assert!(
        r.stderr.contains("wasmedge.io/allowed-hosts"),
        "{}",
        r.stderr
    );
    assert_eq!(denied.count(), 0);
    c.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_annotations_reach_the_shim_through_cri() {
    let c = Containerd::start();
    c.import(Some("k8s.io"), &images().pause(), false);
    c.import(
        Some("k8s.io"),
        &images().rootfs("localhost/hostile-cri:test", &wasm("hostile"), &[]),
        false,
    );
    let mut cri = Cri::connect(c.socket.clone()).await;
    for (pod_annotations, container_annotations, expect_code, expect_text) in [
        // A typo in a pod annotation refuses the container with the reason in its log.
        (
            vec![("wasmedge.io/max-memory-pagez", "64")],
            vec![],
            78,
            "did you mean wasmedge.io/max-memory-pages?",
        ),
        // The container annotation overrides the pod's: the memory bomb hits the lower cap.
        (
            vec![("wasmedge.io/max-memory-pages", "512")],
            vec![("wasmedge.io/max-memory-pages", "64")],
            125,
            "WasmEdge: out of memory (max_memory_pages 64 = 4 MiB)",
        ),
    ] {
        let to_map = |v: Vec<(&str, &str)>| {
            v.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let pod = run_pod(&c, &mut cri, to_map(pod_annotations)).await;
        let status = run_container(
            &mut cri,
            &pod,
            "localhost/hostile-cri:test",
            &["membomb"],
            0,
            to_map(container_annotations),
        )
        .await;
        assert_eq!(status.exit_code, expect_code, "{status:?}");
        let log = container_log(&c, &pod, 0);
        assert!(
            log.contains(expect_text),
            "expected {expect_text:?} in the container log: {log}"
        );
        remove_pod(&c, &mut cri, &pod).await;
    }
    c.assert_clean();
}
