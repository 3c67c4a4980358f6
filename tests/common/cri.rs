//! A CRI client on containerd's socket, used the way kubelet uses it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1 as api;

use super::{unique, Containerd};

pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

impl Cri {
    pub async fn connect(socket: PathBuf) -> Cri {
        let channel = Endpoint::try_from("http://[::1]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .expect("connect to CRI socket");
        Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }
}

pub fn pod_config(c: &Containerd, name: &str) -> api::PodSandboxConfig {
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

pub async fn wait_exited(cri: &mut Cri, id: &str) -> api::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cri
            .runtime
            .container_status(api::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status");
        if status.state == api::ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Pod {
    pub name: String,
    pub id: String,
    pub config: api::PodSandboxConfig,
}

pub async fn run_pod(c: &Containerd, cri: &mut Cri, annotations: HashMap<String, String>) -> Pod {
    let name = unique("pod");
    let mut config = pod_config(c, &name);
    config.annotations = annotations;
    let id = cri
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "wasmedge".to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", c.log_text()))
        .into_inner()
        .pod_sandbox_id;
    Pod { name, id, config }
}

/// Creates and starts container `main` (attempt `attempt`, as kubelet numbers restarts) of
/// `image` in `pod`, waits for it to exit.
pub async fn run_container(
    cri: &mut Cri,
    pod: &Pod,
    image: &str,
    args: &[&str],
    attempt: u32,
    annotations: HashMap<String, String>,
) -> api::ContainerStatus {
    let id = start_container(cri, pod, image, args, attempt, annotations).await;
    wait_exited(cri, &id).await
}

/// Creates and starts container `main` of `image` in `pod`; returns its id.
pub async fn start_container(
    cri: &mut Cri,
    pod: &Pod,
    image: &str,
    args: &[&str],
    attempt: u32,
    annotations: HashMap<String, String>,
) -> String {
    let request = api::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "main".to_string(),
                attempt,
            }),
            image: Some(api::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: vec![api::KeyValue {
                key: "APP_MODE".into(),
                value: "from-cri".into(),
            }],
            log_path: format!("main-{attempt}.log"),
            annotations,
            ..Default::default()
        }),
        sandbox_config: Some(pod.config.clone()),
    };
    let id = cri
        .runtime
        .create_container(request)
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(api::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer (attempt {attempt}): {}", e.message()));
    id
}

/// The CRI log of container `main`, attempt `attempt`.
pub fn container_log(c: &Containerd, pod: &Pod, attempt: u32) -> String {
    std::fs::read_to_string(
        c.dir
            .join("pod-logs")
            .join(&pod.name)
            .join(format!("main-{attempt}.log")),
    )
    .unwrap_or_default()
}

pub async fn remove_pod(c: &Containerd, cri: &mut Cri, pod: &Pod) {
    cri.runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .expect("StopPodSandbox");
    cri.runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .expect("RemovePodSandbox");
    let pods = cri
        .runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.iter().all(|p| p.id != pod.id), "sandbox still listed");
    c.remove_pod_cgroup(&pod.name);
}
