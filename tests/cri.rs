//! The CRI path, driven as kubelet drives it: RuntimeService over containerd's socket with
//! runtime handler `wasmedge`, a pod sandbox from the project's own pause image.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cri::{api, Cri};
use common::{images, unique, wasm, Containerd};

const K8S_NS: &str = "k8s.io";

fn pod_config(c: &Containerd, name: &str) -> api::PodSandboxConfig {
    let log_dir = c.dir.join("pod-logs").join(name);
    std::fs::create_dir_all(&log_dir).unwrap();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.to_string(),
            uid: unique("uid"),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: c.cgroup_of(name),
            security_context: Some(api::LinuxSandboxSecurityContext {
                // Host network: no CNI on this test node, and no traffic leaves loopback.
                namespace_options: Some(api::NamespaceOption {
                    network: api::NamespaceMode::Node as i32,
                    pid: api::NamespaceMode::Container as i32,
                    ipc: api::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn wait_exited(cri: &mut Cri, id: &str) -> api::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cri
            .runtime
            .container_status(api::ContainerStatusRequest { container_id: id.to_string(), verbose: false })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status");
        if status.state == api::ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(Instant::now() < deadline, "container {id} did not exit: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Pod {
    name: String,
    id: String,
    config: api::PodSandboxConfig,
}

async fn run_pod(c: &Containerd, cri: &mut Cri, annotations: HashMap<String, String>) -> Pod {
    let name = unique("pod");
    let mut config = pod_config(c, &name);
    config.annotations = annotations;
    let id = cri
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: "wasmedge".to_string() })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log_text()))
        .into_inner()
        .pod_sandbox_id;
    Pod { name, id, config }
}

/// Creates and starts container `main` (attempt `attempt`, as kubelet numbers restarts) of
/// `image` in `pod`, waits for it to exit.
async fn run_container(cri: &mut Cri, pod: &Pod, image: &str, args: &[&str], attempt: u32) -> api::ContainerStatus {
    let request = api::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(api::ContainerConfig {
            metadata: Some(api::ContainerMetadata { name: "main".to_string(), attempt }),
            image: Some(api::ImageSpec { image: image.to_string(), ..Default::default() }),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: vec![api::KeyValue { key: "APP_MODE".into(), value: "from-cri".into() }],
            log_path: format!("main-{attempt}.log"),
            ..Default::default()
        }),
        sandbox_config: Some(pod.config.clone()),
    };
    let id = cri.runtime.create_container(request).await.expect("CreateContainer").into_inner().container_id;
    cri.runtime
        .start_container(api::StartContainerRequest { container_id: id.clone() })
        .await
        .unwrap_or_else(|e| panic!("StartContainer (attempt {attempt}): {}", e.message()));
    wait_exited(cri, &id).await
}

fn container_log(c: &Containerd, pod: &Pod) -> String {
    std::fs::read_to_string(c.dir.join("pod-logs").join(&pod.name).join("main-0.log")).unwrap_or_default()
}

async fn remove_pod(c: &Containerd, cri: &mut Cri, pod: &Pod) {
    cri.runtime.stop_pod_sandbox(api::StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() }).await.expect("StopPodSandbox");
    cri.runtime.remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: pod.id.clone() }).await.expect("RemovePodSandbox");
    let pods = cri.runtime.list_pod_sandbox(api::ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert!(pods.iter().all(|p| p.id != pod.id), "sandbox still listed");
    c.remove_pod_cgroup(&pod.name);
}

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
    let status = run_container(&mut cri, &pod, image, &["env", "APP_MODE"], 0).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let log = container_log(&c, &pod);
    assert!(log.contains(" stdout F APP_MODE=from-cri"), "CRI log: {log}");
    remove_pod(&c, &mut cri, &pod).await;

    // A failing module: its exit code reaches ContainerStatus.
    let pod = run_pod(&c, &mut cri, HashMap::new()).await;
    let status = run_container(&mut cri, &pod, image, &["exit", "3"], 0).await;
    assert_eq!(status.exit_code, 3, "{status:?}");
    remove_pod(&c, &mut cri, &pod).await;

    let containers = cri.runtime.list_containers(api::ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert!(containers.is_empty(), "containers still listed: {containers:?}");
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
    // The first one compiles the module (empty cache), the later ones hit the cache.
    for (attempt, code) in [(0u32, 0), (1, 3), (2, 5)] {
        let status = run_container(&mut cri, &pod, image, &["exit", &code.to_string()], attempt).await;
        assert_eq!(status.exit_code, code, "attempt {attempt}: {status:?}");
    }
    assert_eq!(c.log_text().matches("aot: compiled /app/hello.wasm").count(), 1);
    remove_pod(&c, &mut cri, &pod).await;
    c.assert_clean();
}
