//! HTTP function mode through the real shim under a private containerd: the seed's responses,
//! per-request isolation, failures confined to their request, metrics, overload, drain.
//! Containers use the host network and a free loopback port; only 127.0.0.1 is addressed.

mod common;

use std::time::{Duration, Instant};

use common::{images, unique, wasm, Containerd, HttpContainer};

const EDGE: &str = "localhost/edge-function:test";
const EDGE_MODULE: &str = "/app/edge-function.wasm";
const HOSTILE: &str = "localhost/hostile-http:test";
const HOSTILE_MODULE: &str = "/app/hostile.wasm";

fn with_edge_function() -> Containerd {
    let c = Containerd::start();
    c.import(
        None,
        &images().rootfs(EDGE, &wasm("edge-function"), &[]),
        false,
    );
    c
}

fn with_hostile() -> Containerd {
    let c = Containerd::start();
    c.import(
        None,
        &images().rootfs(HOSTILE, &wasm("hostile"), &[]),
        false,
    );
    c
}

fn start_hostile(c: &Containerd, annotations: &[&str]) -> HttpContainer {
    let f = c.start_http(
        HOSTILE,
        &unique("hostile"),
        annotations,
        &[HOSTILE_MODULE, "serve"],
    );
    f.wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|seen| panic!("never ready (saw {seen:?}); log:\n{}", c.log_text()));
    f
}

/// The value of one sample line of `/metrics` (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

fn stop(c: &Containerd, f: &HttpContainer) -> String {
    c.stop_task(&f.id, "SIGTERM", Duration::from_secs(30))
}

/// A request that takes 1.5 s, started on its own thread (its reply has `"id": "slow"`).
fn slow_request_in_flight(f: &HttpContainer) -> std::thread::JoinHandle<common::Reply> {
    let url = f.url("/state?id=slow&ms=1500");
    std::thread::spawn(move || common::request("GET", &url, None))
}

#[test]
fn seed_requests_get_the_seed_responses_and_metrics_count_them() {
    let c = with_edge_function();
    let f = c.start_http(
        EDGE,
        &unique("edge"),
        &["wasmedge.io/version=v1"],
        &[EDGE_MODULE],
    );
    // The shim compiles the module before the container starts; /ready turns true once the
    // first instance exists.
    f.wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|seen| panic!("never ready: {seen:?}\n{}", c.log_text()));
    assert_eq!(f.get("/health").status, 200);
    assert!(
        c.log_text()
            .contains("aot: compiled /app/edge-function.wasm"),
        "{}",
        c.log_text()
    );

    let first = f.get("/api/v1/process?x=1");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.json(),
        serde_json::json!({"path": "/api/v1/process", "region": "", "coldStart": true})
    );
    let second = f.get("/api/v1/process");
    assert_eq!(
        second.json()["coldStart"],
        false,
        "only the container's first request is cold"
    );

    let transform = f.post(
        "/api/v1/process",
        r#"{"action":"transform","data":"hello"}"#,
    );
    assert_eq!(transform.status, 200);
    assert_eq!(
        transform.json(),
        serde_json::json!({"action": "transform", "result": "HELLO", "region": ""})
    );
    let hash = f.post("/api/v1/process", r#"{"action":"hash","data":"hello"}"#);
    assert_eq!(hash.json()["result"], "310f923099");
    let put = f.send("PUT", "/api/v1/process", Some("{}"));
    assert_eq!(put.status, 405);
    assert_eq!(
        put.json(),
        serde_json::json!({"error": "method not allowed"})
    );

    let metrics = f.get("/metrics").body;
    assert_eq!(
        sample(
            &metrics,
            r#"wasmedge_http_requests_total{version="v1",status="200"}"#
        ),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"wasmedge_http_requests_total{version="v1",status="405"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"wasmedge_http_request_duration_seconds_count{version="v1"}"#
        ),
        5.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"wasmedge_instance_start_seconds_count{version="v1"}"#
        ),
        5.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"wasmedge_http_requests_in_flight{version="v1"}"#
        ),
        0.0
    );
    assert!(
        sample(
            &metrics,
            r#"wasmedge_memory_bytes{version="v1",kind="pss"}"#
        ) > 0.0
    );

    let status = stop(&c, &f);
    assert!(
        !status.contains("non-zero exit code"),
        "SIGTERM must end HTTP mode with exit 0: {status}"
    );
    c.assert_clean();
}

#[test]
fn a_failing_request_fails_alone() {
    let c = with_hostile();
    let f = start_hostile(
        &c,
        &[
            "wasmedge.io/execution-timeout-ms=300",
            "wasmedge.io/max-memory-pages=64",
            "wasmedge.io/max-body-bytes=64",
        ],
    );

    let trap = f.get("/trap");
    assert_eq!(
        (trap.status, trap.json()["error"].as_str().unwrap()),
        (500, "wasm trap: unreachable")
    );
    assert_eq!(
        f.get("/after-trap").status,
        200,
        "the next request is served"
    );

    let started = Instant::now();
    let slow = f.get("/spin");
    assert_eq!(slow.status, 504, "{}", slow.body);
    assert!(
        slow.json()["error"]
            .as_str()
            .unwrap()
            .contains("time limit exceeded (execution_timeout_ms 300)"),
        "{}",
        slow.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout took {:?}",
        started.elapsed()
    );
    assert_eq!(f.get("/after-timeout").status, 200);

    let oom = f.get("/membomb");
    assert_eq!(oom.status, 500);
    assert!(
        oom.json()["error"]
            .as_str()
            .unwrap()
            .contains("out of memory (max_memory_pages 64"),
        "{}",
        oom.body
    );

    let garbage = f.get("/garbage");
    assert_eq!(garbage.status, 500);
    assert!(
        garbage.body.contains("bad function response"),
        "{}",
        garbage.body
    );
    let exit = f.get("/exit?code=3");
    assert_eq!(
        (exit.status, exit.json()["error"].as_str().unwrap()),
        (500, "the function exited with code 3")
    );

    let denied = f.get("/read?path=/etc/passwd");
    assert_eq!(denied.status, 403, "{}", denied.body);
    let big = f.post("/echo", &"x".repeat(65));
    assert_eq!(big.status, 413, "{}", big.body);
    assert_eq!(f.post("/echo", &"x".repeat(64)).status, 200);

    let metrics = f.get("/metrics").body;
    for (field, n) in [
        ("execution_timeout_ms", 1.0),
        ("max_memory_pages", 1.0),
        ("allowed_dirs", 1.0),
    ] {
        let series =
            format!(r#"wasmedge_policy_denials_total{{version="unknown",field="{field}"}}"#);
        assert_eq!(sample(&metrics, &series), n, "{series} in\n{metrics}");
    }
    assert_eq!(
        sample(
            &metrics,
            r#"wasmedge_http_requests_total{version="unknown",status="500"}"#
        ),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"wasmedge_http_requests_total{version="unknown",status="504"}"#
        ),
        1.0
    );
    stop(&c, &f);
    c.assert_clean();
}

#[test]
fn concurrent_requests_never_see_each_other() {
    let c = with_hostile();
    for warm in ["0", "4"] {
        let f = start_hostile(
            &c,
            &[
                "wasmedge.io/max-concurrency=4",
                &format!("wasmedge.io/warm-pool={warm}"),
            ],
        );
        let port = f.port;
        let clients: Vec<_> = (0..8)
            .map(|client| {
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let id = format!("{client}-{i}");
                        let r = common::request(
                            "GET",
                            &format!("http://127.0.0.1:{port}/state?id={id}&ms=2"),
                            None,
                        );
                        assert_eq!(r.status, 200, "{}", r.body);
                        let v = r.json();
                        assert_eq!(v["id"], id.as_str(), "a response went to the wrong request");
                        assert_eq!(v["calls"], 1, "an instance was reused");
                        assert_eq!(v["dirty"], 0, "memory of an earlier request was visible");
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client thread");
        }
        let metrics = f.get("/metrics").body;
        assert_eq!(
            sample(
                &metrics,
                r#"wasmedge_http_requests_total{version="unknown",status="200"}"#
            ),
            200.0,
            "{metrics}"
        );
        stop(&c, &f);
    }
    c.assert_clean();
}

#[test]
fn overload_is_answered_with_503_and_service_resumes() {
    let c = with_hostile();
    let f = start_hostile(
        &c,
        &[
            "wasmedge.io/max-concurrency=1",
            "wasmedge.io/execution-timeout-ms=1000",
        ],
    );
    let port = f.port;
    // One slot, a queue of 16: 30 spinning requests at once overflow it.
    let clients: Vec<_> = (0..30)
        .map(|_| {
            std::thread::spawn(move || {
                common::request("GET", &format!("http://127.0.0.1:{port}/spin"), None).status
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| *s == 503 || *s == 504),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "overload must be refused with 503: {statuses:?}"
    );
    assert!(
        statuses.contains(&504),
        "admitted requests run to their time limit: {statuses:?}"
    );
    assert_eq!(f.get("/after").status, 200, "served again after the burst");
    assert_eq!(f.get("/health").status, 200);
    stop(&c, &f);
    c.assert_clean();
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    let c = with_hostile();
    let f = start_hostile(&c, &[]);
    let in_flight = slow_request_in_flight(&f);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    c.ctr_ok(&["task", "kill", "-s", "SIGTERM", &f.id]);
    let reply = in_flight.join().unwrap();
    assert_eq!(
        reply.status, 200,
        "the in-flight request must complete: {}",
        reply.body
    );
    assert_eq!(reply.json()["id"], "slow");
    assert!(c.wait_task_status(&f.id, "STOPPED", Duration::from_secs(10)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        started.elapsed()
    );
    let info = c.ctr_ok(&["task", "ls"]);
    assert!(
        info.lines()
            .any(|l| l.starts_with(&f.id) && l.contains("STOPPED")),
        "{info}"
    );
    let deleted = c.ctr(&["task", "delete", &f.id]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&deleted.stdout),
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(
        !text.contains("non-zero exit code"),
        "must exit 0 after draining: {text}"
    );
    c.ctr_ok(&["container", "rm", &f.id]);
    c.assert_clean();
}

#[test]
fn during_the_shutdown_delay_new_requests_are_served_and_ready_is_false() {
    // Kubernetes sends SIGTERM while proxies may still route new connections to the pod; the
    // server keeps accepting for wasmedge.io/shutdown-delay-ms (default 5 s in a pod), and a
    // second SIGTERM cuts the delay short.
    let c = with_hostile();
    let f = start_hostile(&c, &["wasmedge.io/shutdown-delay-ms=30000"]);
    let in_flight = slow_request_in_flight(&f);
    std::thread::sleep(Duration::from_millis(300));
    let first_signal = Instant::now();
    c.ctr_ok(&["task", "kill", "-s", "SIGTERM", &f.id]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.get("/ready").status != 503 {
        assert!(Instant::now() < deadline, "/ready stayed 200 after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let late = f.get("/state?id=late&ms=1");
    assert_eq!(
        late.status, 200,
        "a request after SIGTERM, within the delay, is served: {}",
        late.body
    );
    assert_eq!(late.json()["id"], "late");
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "in-flight request: {}", reply.body);
    assert_eq!(
        c.ctr_ok(&["task", "ls"])
            .lines()
            .find(|l| l.starts_with(&f.id))
            .map(|l| l.contains("RUNNING")),
        Some(true),
        "the task must still run during the delay"
    );
    let deleted = c.stop_task(&f.id, "SIGTERM", Duration::from_secs(60));
    // The delay would have lasted 30 s from the first signal.
    assert!(
        first_signal.elapsed() < Duration::from_secs(30),
        "stopped only after {:?}: the second SIGTERM did not cut the delay short",
        first_signal.elapsed()
    );
    assert!(
        !deleted.contains("non-zero exit code"),
        "must exit 0: {deleted}"
    );
    c.assert_clean();
}
