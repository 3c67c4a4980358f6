//! The CRI path, driven as kubelet drives it: RuntimeService over containerd's socket with
//! runtime handler `wasmedge`, a pod sandbox from the project's own pause image.

mod common;

use std::collections::HashMap;

use common::cri::{api, container_log, remove_pod, run_container, run_pod, Cri};
use common::{images, wasm, Containerd};

const K8S_NS: &str = "k8s.io";

fn hello_image(c: &Containerd) -> &'static str {
    let archive = images().rootfs("localhost/hello-cri:test", &wasm("hello"), &[]);
    c.import(Some(K8S_NS), &archive, false);
    "localhost/hello-cri:test"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_wasm_container_through_cri() {
    let c = Containerd::start();
    c.import(Some(K8S_NS), &images().pause(), false);
    let image = hello_image(&c);
    let mut cri = Cri::connect(c.socket.clone()).await;

    // A module that prints an allowed variable and exits 0: output in the CRI log file.
    let pod = run_pod(&c, &mut cri, HashMap::new()).await;
    let status = run_container(
        &mut cri,
        &pod,
        image,
        &["env", "APP_MODE"],
        0,
        HashMap::new(),
    )
    .await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let log = container_log(&c, &pod, 0);
    assert!(
        log.contains(" stdout F APP_MODE=from-cri"),
        "CRI log: {log}"
    );
    remove_pod(&c, &mut cri, &pod).await;

    // A failing module: its exit code reaches ContainerStatus.
    let pod = run_pod(&c, &mut cri, HashMap::new()).await;
    let status = run_container(&mut cri, &pod, image, &["exit", "3"], 0, HashMap::new()).await;
    assert_eq!(status.exit_code, 3, "{status:?}");
    remove_pod(&c, &mut cri, &pod).await;

    let containers = cri
        .runtime
        .list_containers(api::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(
        containers.is_empty(),
        "containers still listed: {containers:?}"
    );
    c.assert_clean();
}

/// Kubelet creates containers one after another in the same pod (several containers, restarts):
/// a wasm container that compiled its module must not break the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_containers_in_one_pod() {
    let c = Containerd::start();
    c.import(Some(K8S_NS), &images().pause(), false);
    let image = hello_image(&c);
    let mut cri = Cri::connect(c.socket.clone()).await;
    let pod = run_pod(&c, &mut cri, HashMap::new()).await;
    // The first one compiles the module (empty cache), the later ones hit the cache. The
    // containers join the pod's pid namespace (CRI's default pid mode for a container is POD),
    // so each one starts at a higher pid there: six of them walk past the small pid numbers
    // that youki once looked up in the host's /proc (see src/shim/bundle.rs).
    for (attempt, code) in [(0u32, 0), (1, 3), (2, 5), (3, 0), (4, 7), (5, 0)] {
        let status = run_container(
            &mut cri,
            &pod,
            image,
            &["exit", &code.to_string()],
            attempt,
            HashMap::new(),
        )
        .await;
        assert_eq!(status.exit_code, code, "attempt {attempt}: {status:?}");
    }
    assert_eq!(
        c.log_text()
            .matches("aot: compiled /app/hello.wasm")
            .count(),
        1
    );
    remove_pod(&c, &mut cri, &pod).await;
    c.assert_clean();
}
