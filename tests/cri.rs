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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_wasm_container_through_cri() {
    let c = Containerd::start();
    c.import(Some(K8S_NS), &images().pause(), false);
    let data = images().write_file("cri-data.txt", b"cri file\n");
    let archive = images().rootfs("localhost/hello-cri:test", &wasm("hello"), &[(&data, "/app/data.txt")]);
    c.import(Some(K8S_NS), &archive, false);

    let mut cri = Cri::connect(c.socket.clone()).await;
    let pod_name = unique("pod");
    let config = pod_config(&c, &pod_name);
    let pod_id = cri
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: "wasmedge".to_string() })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log_text()))
        .into_inner()
        .pod_sandbox_id;

    let run_container = |name: &'static str, args: Vec<&'static str>| {
        let config = config.clone();
        let pod_id = pod_id.clone();
        api::CreateContainerRequest {
            pod_sandbox_id: pod_id,
            config: Some(api::ContainerConfig {
                metadata: Some(api::ContainerMetadata { name: name.to_string(), attempt: 0 }),
                image: Some(api::ImageSpec { image: "localhost/hello-cri:test".to_string(), ..Default::default() }),
                args: args.into_iter().map(String::from).collect(),
                envs: vec![api::KeyValue { key: "GREETING".into(), value: "from-cri".into() }],
                log_path: format!("{name}.log"),
                annotations: HashMap::new(),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        }
    };

    // A module that prints its environment and a file from the image, then exits 0.
    let req = run_container("hello", vec!["env", "GREETING"]);
    let id = cri.runtime.create_container(req).await.expect("CreateContainer").into_inner().container_id;
    cri.runtime.start_container(api::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    let status = wait_exited(&mut cri, &id).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let log = std::fs::read_to_string(c.dir.join("pod-logs").join(&pod_name).join("hello.log")).unwrap();
    assert!(log.contains(" stdout F GREETING=from-cri"), "CRI log: {log}");

    // A failing module: the exit code reaches ContainerStatus.
    let req = run_container("fails", vec!["exit", "3"]);
    let id = cri.runtime.create_container(req).await.expect("CreateContainer").into_inner().container_id;
    cri.runtime.start_container(api::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    let status = wait_exited(&mut cri, &id).await;
    assert_eq!(status.exit_code, 3, "{status:?}");

    cri.runtime.stop_pod_sandbox(api::StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.expect("StopPodSandbox");
    cri.runtime.remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.expect("RemovePodSandbox");
    let pods = cri.runtime.list_pod_sandbox(api::ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert!(pods.iter().all(|p| p.id != pod_id), "sandbox still listed");
    let containers = cri.runtime.list_containers(api::ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert!(containers.is_empty(), "containers still listed: {containers:?}");
    c.remove_pod_cgroup(&pod_name);
    c.assert_clean();
}
