//! Many at once: 50 HTTP-mode pods created together through CRI, and containers compiling the
//! same module at the same moment into one AOT cache.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cri::{api, remove_pod, run_container, run_pod, start_container, Cri};
use common::{free_port, images, request, unique, wasm, Containerd, HttpContainer};
use containerd_shim_wasmedge::engine::cache::{AotCache, Lookup};
use containerd_shim_wasmedge::engine::cache_key;

const K8S_NS: &str = "k8s.io";
const EDGE: &str = "localhost/edge-function:concurrency";
const PODS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_http_pods_at_once() {
    let c = Containerd::start();
    c.import(Some(K8S_NS), &images().pause(), false);
    c.import(
        Some(K8S_NS),
        &images().rootfs(EDGE, &wasm("edge-function"), &[]),
        false,
    );
    let mut cri = Cri::connect(c.socket.clone()).await;
    // Compile once first: this test is about many starts, not 50 compilers at once.
    let warm = run_pod(&c, &mut cri, HashMap::new()).await;
    assert_eq!(
        run_container(&mut cri, &warm, EDGE, &[], 0, HashMap::new())
            .await
            .exit_code,
        0
    );
    remove_pod(&c, &mut cri, &warm).await;

    let mut ports: Vec<u16> = vec![];
    while ports.len() < PODS {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let started = Instant::now();
    let c = std::sync::Arc::new(c);
    let mut starting = tokio::task::JoinSet::new();
    for &port in &ports {
        let mut cri = Cri {
            runtime: cri.runtime.clone(),
            images: cri.images.clone(),
        };
        let c = c.clone();
        let annotations = HashMap::from([
            ("wasmedge.io/mode".to_string(), "http".to_string()),
            ("wasmedge.io/http-port".to_string(), port.to_string()),
            ("wasmedge.io/max-concurrency".to_string(), "1".to_string()),
        ]);
        starting.spawn(async move {
            let pod = run_pod(&c, &mut cri, HashMap::new()).await;
            start_container(&mut cri, &pod, EDGE, &[], 0, annotations).await;
            (pod, port)
        });
    }
    let pods = starting.join_all().await;
    let all_started = started.elapsed();

    for (_, port) in &pods {
        let f = HttpContainer {
            id: String::new(),
            port: *port,
        };
        f.wait_ready(Duration::from_secs(180))
            .unwrap_or_else(|seen| panic!("pod on {port} never ready: {seen:?}"));
    }
    let all_ready = started.elapsed();
    for (_, port) in &pods {
        let r = request(
            "POST",
            &format!("http://127.0.0.1:{port}/api/v1/process"),
            Some(r#"{"action":"transform","data":"hi"}"#),
        );
        assert_eq!(
            (r.status, r.json()["result"].as_str().unwrap()),
            (200, "HI"),
            "pod on {port}"
        );
    }
    let listed = cri
        .runtime
        .list_containers(api::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    let running = listed
        .iter()
        .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
        .count();
    assert_eq!(running, PODS, "running containers");

    let removing = Instant::now();
    for (pod, _) in &pods {
        remove_pod(&c, &mut cri, pod).await;
    }
    let all_removed = removing.elapsed();
    println!(
        "{PODS} HTTP-mode pods through CRI: all started in {:.1} s, all ready in {:.1} s, all removed in {:.1} s",
        all_started.as_secs_f64(),
        all_ready.as_secs_f64(),
        all_removed.as_secs_f64()
    );
    c.assert_clean();
}

#[test]
fn containers_compiling_the_same_module_at_once_share_one_valid_entry() {
    let c = Containerd::start();
    let image = "localhost/hello:concurrent-compile";
    c.import(None, &images().rootfs(image, &wasm("hello"), &[]), false);
    // Created at the same time (the shim compiles while creating): each finds the cache empty
    // and compiles.
    let runs: Vec<String> = (0..4).map(|_| unique("compile")).collect();
    std::thread::scope(|s| {
        for id in &runs {
            let c = &c;
            s.spawn(move || {
                let cgroup = c.cgroup_of(id);
                c.ctr_ok(&[
                    "run",
                    "-d",
                    "--runtime",
                    common::WASMEDGE_RUNTIME,
                    "--cgroup",
                    &cgroup,
                    image,
                    id,
                    "/app/hello.wasm",
                    "sleep",
                    "1",
                ]);
            });
        }
    });
    for id in &runs {
        assert!(
            c.wait_task_status(id, "STOPPED", Duration::from_secs(120)),
            "{id} did not finish"
        );
        let status = c.ctr(&["task", "delete", id]);
        let text = String::from_utf8_lossy(&status.stderr).into_owned();
        assert!(!text.contains("non-zero exit code"), "{id}: {text}");
        c.ctr_ok(&["container", "rm", id]);
    }
    let compiled = c
        .log_text()
        .matches("aot: compiled /app/hello.wasm")
        .count();
    assert!(
        compiled >= 2,
        "the starts must have overlapped (compiled {compiled} time(s))"
    );
    assert!(
        c.aot_temp_files().is_empty(),
        "temp files left: {:?}",
        c.aot_temp_files()
    );
    assert_eq!(c.aot_entries().len(), 1, "one module, one entry");
    let cache = AotCache::open(&c.aot_dir, 1 << 30).unwrap();
    let key = cache_key(&std::fs::read(wasm("hello")).unwrap());
    assert!(
        matches!(cache.get(&key), Lookup::Hit(_)),
        "the entry must verify against its checksum"
    );
    c.assert_clean();
}
