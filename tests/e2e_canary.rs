//! End-to-end canary rollouts on a real cluster (issue 7): the controller runs in this process
//! against the cluster of `CSW_E2E_KUBECONFIG`; the edge function runs in HTTP mode under the
//! wasmedge RuntimeClass; a bounded load generator sends requests to the Service's ClusterIP
//! (so the test must run where ClusterIPs are reachable: on the node, inside its netns).
//!
//! Skipped (with a message) when `CSW_E2E_KUBECONFIG` is not set. Settings:
//! - `CSW_E2E_IMAGE`: the example edge function's image, already on the node
//!   (default `localhost/edge-function:latest`; `imagePullPolicy: Never`).
//! - `CSW_E2E_TOTAL`: total replicas (default 10, the smallest with exact 10/30/50 % steps).
//! - `CSW_E2E_APISERVER_PID`: the kube-apiserver's pid on this machine; the API-outage test
//!   stops it for a while (skipped without it).
//! - `CSW_E2E_CONTROLLER_IMAGE`: the controller's image, already on the node; the in-cluster
//!   test deploys `k8s/controller/` with it (default: the image the manifest names).
//!
//! Each test works in a namespace of its own and deletes it afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use containerd_shim_wasmedge::controller::crd::{EdgeCanary, EdgeCanaryStatus, Phase};
use containerd_shim_wasmedge::controller::{self, Settings};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::{Api, Client, Config, CustomResourceExt};
use serde_json::json;

const STEP_SECONDS: u64 = 10;
static STARTS: AtomicU64 = AtomicU64::new(0);

async fn cluster() -> Option<Client> {
    let Ok(path) = std::env::var("CSW_E2E_KUBECONFIG") else {
        eprintln!(
            "skipped: set CSW_E2E_KUBECONFIG to a cluster's kubeconfig to run the canary e2e tests"
        );
        return None;
    };
    let file = Kubeconfig::read_from(&path).expect("reading CSW_E2E_KUBECONFIG");
    let mut config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    config.default_retry = false; // as the binary runs it
    Some(Client::try_from(config).expect("client"))
}

fn image() -> String {
    std::env::var("CSW_E2E_IMAGE").unwrap_or_else(|_| "localhost/edge-function:latest".to_string())
}

fn total_replicas() -> i32 {
    std::env::var("CSW_E2E_TOTAL")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(10)
}

/// A namespace holding v1 (stable), v2 (canary, failing `failure_percent` % of requests), the
/// Service and the EdgeCanary; deleted when dropped.
struct Scenario {
    client: Client,
    namespace: String,
}

impl Scenario {
    async fn new(client: &Client, name: &str, failure_percent: u32) -> Scenario {
        apply_crd(client).await;
        let namespace = format!("ec-e2e-{name}-{}", std::process::id());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the namespace");
        let scenario = Scenario {
            client: client.clone(),
            namespace,
        };
        let total = total_replicas();
        scenario
            .create(deployment("edge-fn-stable", "stable", "v1", total, 0))
            .await;
        scenario
            .create(deployment(
                "edge-fn-canary",
                "canary",
                "v2",
                0,
                failure_percent,
            ))
            .await;
        let services: Api<Service> = Api::namespaced(client.clone(), &scenario.namespace);
        let service = serde_json::from_value(json!({
            "metadata": {"name": "edge-fn"},
            "spec": {"selector": {"app": "edge-fn"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        services
            .create(&PostParams::default(), &service)
            .await
            .expect("creating the Service");
        scenario.wait_available("edge-fn-stable", total).await;
        scenario
    }

    async fn create(&self, deployment: Deployment) {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.create(&PostParams::default(), &deployment)
            .await
            .expect("creating a Deployment");
    }

    async fn create_canary(&self) {
        let canaries: Api<EdgeCanary> = Api::namespaced(self.client.clone(), &self.namespace);
        let canary = serde_json::from_value(json!({
            "apiVersion": "wasmedge.io/v1alpha1",
            "kind": "EdgeCanary",
            "metadata": {"name": "edge-fn"},
            "spec": {
                "service": "edge-fn",
                "stableDeployment": "edge-fn-stable",
                "canaryDeployment": "edge-fn-canary",
                "totalReplicas": total_replicas(),
                "stepSeconds": STEP_SECONDS,
                // Fewer samples than in production so that a 10 s step at 10 % has enough.
                "minSamplesToPromote": 40,
                "minSamplesToRollback": 20,
                // Generous: the node is small and shared; the success rate is what is tested.
                "latencyP99ThresholdMs": 2000
            }
        }))
        .unwrap();
        canaries
            .create(&PostParams::default(), &canary)
            .await
            .expect("creating the EdgeCanary");
    }

    fn controller(&self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let settings = Settings {
            namespace: Some(self.namespace.clone()),
            metrics_addr: None,
            lease: Some((self.namespace.clone(), "wasm-weight-controller".to_string())),
            // A new identity per start, like a new pod: a restart has to take the Lease over.
            identity: format!(
                "e2e-{}-{}",
                std::process::id(),
                STARTS.fetch_add(1, Ordering::Relaxed)
            ),
        };
        tokio::spawn(controller::run(self.client.clone(), settings, false))
    }

    /// The EdgeCanary's status (empty before the controller's first write). A failed read is
    /// retried: the test's own client goes through API outages too, and an unread status must
    /// not look like a step back.
    async fn status(&self) -> EdgeCanaryStatus {
        let canaries: Api<EdgeCanary> = Api::namespaced(self.client.clone(), &self.namespace);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match canaries.get("edge-fn").await {
                Ok(canary) => return canary.status.unwrap_or_default(),
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "[{}] cannot read the EdgeCanary: {error}",
                    self.namespace
                ),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn deployment(&self, name: &str) -> Deployment {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get(name).await.expect("reading a Deployment")
    }

    async fn wait_available(&self, name: &str, replicas: i32) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let d = self.deployment(name).await;
            let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            if available >= replicas {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {available} of {replicas} pods available after 300 s"
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Polls the status until `done` says so; returns every status seen.
    async fn watch_until(
        &self,
        limit: Duration,
        done: impl Fn(&EdgeCanaryStatus) -> bool,
    ) -> Vec<EdgeCanaryStatus> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let status = self.status().await;
            let finished = done(&status);
            if seen.last() != Some(&status) {
                eprintln!(
                    "[{}] phase {:?} step {} weight {} -> {} (stable {}, canary {}) canary {:?}: {}",
                    self.namespace,
                    status.phase,
                    status.current_step,
                    status.desired_weight,
                    status.effective_weight,
                    status.stable_replicas,
                    status.canary_replicas,
                    status.canary.as_ref().map(|c| (c.samples, c.success_rate, c.p99_ms)),
                    status.message.clone().unwrap_or_default()
                );
                seen.push(status);
            }
            if finished {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] not done within {limit:?}; last status {:?}",
                self.namespace,
                seen.last()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Load on the Service, a controller, then the EdgeCanary: the rollout begins.
    async fn start_rollout(&self) -> (Load, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let load = self.load().await;
        let controller = self.controller();
        self.create_canary().await;
        (load, controller)
    }

    /// The reasons of the Events about the EdgeCanary, oldest first.
    async fn event_reasons(&self) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut list = events
            .list(&ListParams::default())
            .await
            .expect("listing Events")
            .items;
        list.retain(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("EdgeCanary"));
        list.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
        list.into_iter().filter_map(|e| e.reason).collect()
    }

    async fn until_finished(&self, limit: Duration) -> Vec<EdgeCanaryStatus> {
        self.watch_until(limit, |s| {
            matches!(s.phase, Phase::Promoted | Phase::RolledBack)
        })
        .await
    }

    /// The nodes running pods of `track` (stable, canary) now.
    async fn nodes_of(&self, track: &str) -> BTreeSet<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        pods.list(&ListParams::default().labels(&format!("track={track}")))
            .await
            .expect("listing pods")
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.spec.and_then(|s| s.node_name))
            .collect()
    }

    /// Deletes the namespace; a failed test leaves it for a look.
    async fn delete(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }

    async fn load(&self) -> Load {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let ip = services
            .get("edge-fn")
            .await
            .unwrap()
            .spec
            .unwrap()
            .cluster_ip
            .expect("a ClusterIP");
        Load::start(format!("http://{ip}:80/"))
    }
}

/// Nodes labelled for the wasmedge runtime.
async fn wasm_node_count(client: &Client) -> usize {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default().labels("wasmedge.io/runtime=true"))
        .await
        .expect("listing nodes")
        .items
        .len()
}

fn deployment(
    name: &str,
    track: &str,
    version: &str,
    replicas: i32,
    failure_percent: u32,
) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "edge-fn", "track": track}},
            "template": {
                "metadata": {
                    "labels": {"app": "edge-fn", "track": track},
                    "annotations": {
                        "wasmedge.io/mode": "http",
                        "wasmedge.io/version": version,
                        "wasmedge.io/allowed-env": "APP_MODE,REGION,FAILURE_PERCENT"
                    }
                },
                "spec": {
                    "runtimeClassName": "wasmedge",
                    "containers": [{
                        "name": "fn",
                        "image": image(),
                        "imagePullPolicy": "Never",
                        "env": [{"name": "FAILURE_PERCENT", "value": failure_percent.to_string()}],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1}
                    }]
                }
            }
        }
    }))
    .unwrap()
}

async fn apply_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "edgecanaries.wasmedge.io",
        &PatchParams::apply("csw-e2e").force(),
        &Patch::Apply(EdgeCanary::crd()),
    )
    .await
    .expect("applying the CRD");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let crd = crds
            .get("edgecanaries.wasmedge.io")
            .await
            .expect("reading the CRD");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        assert!(Instant::now() < deadline, "CRD not established within 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A bounded load generator: ~40 requests/s, a new connection each (kube-proxy balances
/// connections, so that is what spreads requests by pod share), at most 20 minutes and
/// 50 000 requests, stopped when dropped.
struct Load {
    stop: Arc<AtomicBool>,
    statuses: Arc<std::sync::Mutex<BTreeMap<u16, u64>>>,
    sent: Arc<AtomicU64>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let http: HttpClient<_, Empty<Bytes>> = HttpClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        let (stop2, statuses2, sent2) = (stop.clone(), statuses.clone(), sent.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            while !stop2.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(1200)
                && sent2.load(Ordering::Relaxed) < 50_000
            {
                tick.tick().await;
                sent2.fetch_add(1, Ordering::Relaxed);
                let (http, url, statuses) = (http.clone(), url.clone(), statuses2.clone());
                tokio::spawn(async move {
                    let answer = tokio::time::timeout(Duration::from_secs(5), async {
                        let response = http.get(url.parse().unwrap()).await.ok()?;
                        let status = response.status().as_u16();
                        let _ = response.into_body().collect().await;
                        Some(status)
                    })
                    .await;
                    let status = answer.ok().flatten().unwrap_or(0);
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                });
            }
        });
        Load {
            stop,
            statuses,
            sent,
        }
    }

    fn summary(&self) -> String {
        format!(
            "{} sent, by status (0 = no answer): {:?}",
            self.sent.load(Ordering::Relaxed),
            self.statuses.lock().unwrap()
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The desired weights in the order they were first seen.
fn weights(seen: &[EdgeCanaryStatus]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for status in seen {
        // Before the controller's first write the status is empty: no weight yet.
        if status.stable_version.is_some()
            && status.phase != Phase::Failed
            && out.last() != Some(&status.desired_weight)
        {
            out.push(status.desired_weight);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthy_canary_walks_every_step_and_is_promoted() {
    let Some(client) = cluster().await else {
        return;
    };
    let scenario = Scenario::new(&client, "promote", 0).await;
    let (load, controller) = scenario.start_rollout().await;
    // With several wasm nodes the rollout spans them: at the 50 % step both tracks' pods run
    // on every wasm node the scheduler spreads them to (at least two).
    let wasm_nodes = wasm_node_count(&client).await;
    let mut seen = scenario
        .watch_until(Duration::from_secs(600), |s| {
            s.effective_weight >= 50.0 || matches!(s.phase, Phase::Promoted | Phase::RolledBack)
        })
        .await;
    let (stable_on, canary_on) = (
        scenario.nodes_of("stable").await,
        scenario.nodes_of("canary").await,
    );
    eprintln!("at 50 %: stable pods on {stable_on:?}, canary pods on {canary_on:?}");
    if wasm_nodes >= 2 {
        let spanned: BTreeSet<_> = stable_on.union(&canary_on).collect();
        assert!(
            spanned.len() >= 2 && canary_on.len() >= 2,
            "the rollout should span the {wasm_nodes} wasm nodes: stable on {stable_on:?}, canary on {canary_on:?}"
        );
    } else {
        eprintln!("skipped: the rollout's spread over nodes (only {wasm_nodes} wasm node)");
    }
    seen.extend(scenario.until_finished(Duration::from_secs(600)).await);
    eprintln!("load: {}", load.summary());
    let last = seen.last().unwrap();
    assert_eq!(last.phase, Phase::Promoted, "{:?}", last.message);
    assert_eq!(weights(&seen), vec![10, 30, 50, 100]);
    assert_eq!(last.stable_version.as_deref(), Some("v2"));

    let stable = scenario.deployment("edge-fn-stable").await;
    let template = stable.spec.template.metadata.unwrap();
    assert_eq!(template.annotations.unwrap()["wasmedge.io/version"], "v2");
    assert_eq!(template.labels.unwrap()["track"], "stable");
    let canary = scenario.deployment("edge-fn-canary").await;
    assert_eq!(canary.spec.replicas, Some(0));
    controller.abort();
    drop(load);
    scenario.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_canary_is_rolled_back_within_one_step() {
    let Some(client) = cluster().await else {
        return;
    };
    let scenario = Scenario::new(&client, "rollback", 100).await;
    let (load, controller) = scenario.start_rollout().await;
    let seen = scenario.until_finished(Duration::from_secs(300)).await;
    eprintln!("load: {}", load.summary());
    let last = seen.last().unwrap();
    assert_eq!(last.phase, Phase::RolledBack, "{:?}", last.message);
    // Within the first step: it never went past 10 %.
    assert_eq!(
        weights(&seen)
            .into_iter()
            .filter(|w| *w > 0)
            .collect::<Vec<_>>(),
        vec![10]
    );
    // The rollback came from the success rate, with enough samples.
    let canary = last.canary.clone().unwrap();
    assert!(
        canary.samples >= 20 && canary.success_rate.unwrap() < 0.8 * 0.99,
        "{canary:?}"
    );

    let total = total_replicas();
    scenario.wait_available("edge-fn-stable", total).await;
    let canary_deployment = scenario.deployment("edge-fn-canary").await;
    assert_eq!(canary_deployment.spec.replicas, Some(0));
    let stable = scenario.deployment("edge-fn-stable").await;
    assert_eq!(stable.spec.replicas, Some(total));
    controller.abort();
    drop(load);
    scenario.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_controller_resumes_from_status() {
    let Some(client) = cluster().await else {
        return;
    };
    let scenario = Scenario::new(&client, "restart", 0).await;
    let (load, first) = scenario.start_rollout().await;
    scenario
        .watch_until(Duration::from_secs(300), |s| s.current_step >= 1)
        .await;
    first.abort();
    let _ = first.await;
    let at_restart = scenario.status().await;
    assert!(at_restart.current_step >= 1 && at_restart.step_started_at.is_some());
    // Nobody acts while no controller runs; then a new one, which knows nothing but the
    // status, takes the expired Lease over and goes on from that step.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let idle = scenario.status().await;
    assert_eq!(idle.current_step, at_restart.current_step);

    let second = scenario.controller();
    let seen = scenario.until_finished(Duration::from_secs(600)).await;
    eprintln!("load: {}", load.summary());
    assert_eq!(seen.last().unwrap().phase, Phase::Promoted);
    let min_step = seen.iter().map(|s| s.current_step).min().unwrap();
    assert!(
        min_step >= at_restart.current_step,
        "the restarted controller went back to step {min_step}"
    );
    second.abort();
    drop(load);
    scenario.delete().await;
}

/// The kube-apiserver stopped (SIGSTOP) while the guard lives: requests hang, as when the
/// API server or the network to it is gone; continued when dropped, also on a failed assert.
struct ApiServerStopped(nix::unistd::Pid);

impl ApiServerStopped {
    fn stop(pid: i32) -> ApiServerStopped {
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
            .expect("stopping the kube-apiserver");
        ApiServerStopped(pid)
    }
}

impl Drop for ApiServerStopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_server_outage_mid_rollout_changes_no_decision() {
    let Some(client) = cluster().await else {
        return;
    };
    let Some(apiserver) = std::env::var("CSW_E2E_APISERVER_PID")
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        eprintln!("skipped: set CSW_E2E_APISERVER_PID to stop the kube-apiserver mid-rollout");
        return;
    };
    let scenario = Scenario::new(&client, "outage", 0).await;
    let (load, controller) = scenario.start_rollout().await;
    let mut seen = scenario
        .watch_until(Duration::from_secs(300), |s| s.current_step >= 1)
        .await;
    let before = seen.last().unwrap().clone();
    // Longer than the Lease (15 s) and than the controller may act without renewing it (10 s),
    // shorter than the node's grace period (kubelet's own lease, 40 s).
    let outage = Duration::from_secs(25);
    eprintln!(
        "[{}] kube-apiserver (pid {apiserver}) stopped for {outage:?} at step {}",
        scenario.namespace, before.current_step
    );
    {
        let _stopped = ApiServerStopped::stop(apiserver);
        tokio::time::sleep(outage).await;
    }
    seen.extend(scenario.until_finished(Duration::from_secs(600)).await);
    eprintln!("load: {}", load.summary());
    // A healthy canary stays healthy through the outage: no rollback, no step skipped or
    // repeated, no step back; it ends promoted.
    assert!(
        seen.iter().all(|s| s.phase != Phase::RolledBack),
        "rolled back: {seen:?}"
    );
    assert_eq!(weights(&seen), vec![10, 30, 50, 100]);
    assert!(
        seen.windows(2)
            .all(|w| w[1].current_step >= w[0].current_step),
        "went back a step: {seen:?}"
    );
    assert_eq!(seen.last().unwrap().phase, Phase::Promoted);
    let reasons = scenario.event_reasons().await;
    assert!(
        !reasons.iter().any(|r| r == "RolledBack"),
        "events: {reasons:?}"
    );
    controller.abort();
    drop(load);
    scenario.delete().await;
}

/// `k8s/controller/` as shipped (RBAC, two replicas with leader election, the project's image),
/// limited to the test's namespace: the leader is deleted mid-rollout, the other replica takes
/// the Lease over and finishes the rollout, and neither logs a permission error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_cluster_controller_survives_losing_its_leader() {
    let Some(client) = cluster().await else {
        return;
    };
    let scenario = Scenario::new(&client, "in-cluster", 0).await;
    let deployed = ControllerDeployment::apply(&client, &scenario.namespace).await;
    let load = scenario.load().await;
    scenario.create_canary().await;
    let mut seen = scenario
        .watch_until(Duration::from_secs(300), |s| s.current_step >= 1)
        .await;
    let leader = deployed.leader().await.expect("a replica holds the Lease");
    eprintln!("[{}] deleting the leader {leader}", scenario.namespace);
    deployed
        .pods
        .delete(
            &leader,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("deleting the leader");
    seen.extend(scenario.until_finished(Duration::from_secs(600)).await);
    eprintln!("load: {}", load.summary());
    assert_eq!(
        seen.last().unwrap().phase,
        Phase::Promoted,
        "{:?}",
        seen.last().unwrap().message
    );
    assert_eq!(weights(&seen), vec![10, 30, 50, 100]);
    let new_leader = deployed.leader().await.expect("a replica holds the Lease");
    assert_ne!(new_leader, leader);
    let reasons = scenario.event_reasons().await;
    assert!(
        reasons.iter().any(|r| r == "StepAdvanced") && reasons.iter().any(|r| r == "Promoted"),
        "events: {reasons:?}"
    );
    for pod in deployed
        .pods
        .list(&ListParams::default().labels(CONTROLLER_LABEL))
        .await
        .unwrap()
        .items
    {
        let name = pod.metadata.name.unwrap();
        let logs = deployed
            .pods
            .logs(&name, &LogParams::default())
            .await
            .unwrap_or_default();
        assert!(
            !logs.contains("forbidden"),
            "{name} was refused something by RBAC:\n{logs}"
        );
    }
    drop(load);
    deployed.delete().await;
    scenario.delete().await;
}

const CONTROLLER_NAMESPACE: &str = "wasmedge-system";
const CONTROLLER_LABEL: &str = "app.kubernetes.io/name=wasm-weight-controller";

/// The objects of `k8s/controller/rbac.yaml` and `deployment.yaml`, applied as they are except
/// for the image (when `CSW_E2E_CONTROLLER_IMAGE` is set) and `--namespace`.
struct ControllerDeployment {
    client: Client,
    rbac: Vec<(kube::discovery::ApiResource, DynamicObject)>,
    pods: Api<Pod>,
}

impl ControllerDeployment {
    async fn apply(client: &Client, watched_namespace: &str) -> ControllerDeployment {
        let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/controller");
        let apply = PatchParams::apply("csw-e2e").force();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_yaml::from_str(
            &std::fs::read_to_string(manifests.join("namespace.yaml")).unwrap(),
        )
        .unwrap();
        namespaces
            .patch(CONTROLLER_NAMESPACE, &apply, &Patch::Apply(&namespace))
            .await
            .expect("applying namespace.yaml");
        let mut rbac = Vec::new();
        let text = std::fs::read_to_string(manifests.join("rbac.yaml")).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let object: DynamicObject =
                serde::Deserialize::deserialize(document).expect("rbac.yaml");
            let types = object.types.clone().expect("apiVersion and kind");
            let gvk = GroupVersionKind::try_from(&types).unwrap();
            let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
                .await
                .expect("discovering an RBAC kind");
            let api: Api<DynamicObject> = match capabilities.scope {
                kube::discovery::Scope::Namespaced => {
                    Api::namespaced_with(client.clone(), CONTROLLER_NAMESPACE, &resource)
                }
                kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            let name = object.metadata.name.clone().unwrap();
            api.patch(&name, &apply, &Patch::Apply(&object))
                .await
                .unwrap_or_else(|e| panic!("applying {} {name}: {e}", types.kind));
            rbac.push((resource, object));
        }
        let mut deployment: Deployment = serde_yaml::from_str(
            &std::fs::read_to_string(manifests.join("deployment.yaml")).unwrap(),
        )
        .unwrap();
        let container = &mut deployment.spec.template.spec.as_mut().unwrap().containers[0];
        if let Ok(image) = std::env::var("CSW_E2E_CONTROLLER_IMAGE") {
            container.image = Some(image);
        }
        container
            .args
            .get_or_insert_with(Vec::new)
            .extend(["--namespace".to_string(), watched_namespace.to_string()]);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
        deployments
            .patch("wasm-weight-controller", &apply, &Patch::Apply(&deployment))
            .await
            .expect("applying deployment.yaml");
        // Both replicas Ready: /readyz answers only once the controller can list EdgeCanaries.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let d = deployments.get("wasm-weight-controller").await.unwrap();
            let status = d.status.unwrap_or_default();
            let current = status.updated_replicas == Some(2) && status.replicas == Some(2);
            if current && status.ready_replicas == Some(2) {
                break;
            }
            if Instant::now() > deadline {
                let pods: Api<Pod> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
                let mut report = String::new();
                for pod in pods
                    .list(&ListParams::default().labels(CONTROLLER_LABEL))
                    .await
                    .unwrap()
                    .items
                {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let logs = pods
                        .logs(
                            &name,
                            &LogParams {
                                tail_lines: Some(20),
                                ..Default::default()
                            },
                        )
                        .await
                        .unwrap_or_else(|e| e.to_string());
                    report += &format!(
                        "\n{name}: {:?}\n{logs}",
                        pod.status.map(|s| s.container_statuses)
                    );
                }
                panic!("the controller's Deployment is not ready after 180 s: {status:?}{report}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let pods = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
        ControllerDeployment {
            client: client.clone(),
            rbac,
            pods,
        }
    }

    /// The pod named in the controller's Lease, once that is a pod that exists and is not
    /// being deleted (within a minute).
    async fn leader(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), CONTROLLER_NAMESPACE);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let holder = leases
                .get_opt("wasm-weight-controller")
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec?.holder_identity);
            let pods = self
                .pods
                .list(&ListParams::default().labels(CONTROLLER_LABEL))
                .await
                .ok()?
                .items;
            let alive = |h: &String| {
                pods.iter().any(|p| {
                    p.metadata.name.as_ref() == Some(h) && p.metadata.deletion_timestamp.is_none()
                })
            };
            if let Some(holder) = holder.filter(alive) {
                return Some(holder);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn delete(self) {
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), CONTROLLER_NAMESPACE);
        let _ = deployments
            .delete("wasm-weight-controller", &DeleteParams::foreground())
            .await;
        for (resource, object) in self.rbac {
            let name = object.metadata.name.unwrap();
            let api: Api<DynamicObject> = match object.metadata.namespace {
                Some(namespace) => Api::namespaced_with(self.client.clone(), &namespace, &resource),
                None => Api::all_with(self.client.clone(), &resource),
            };
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
    }
}
