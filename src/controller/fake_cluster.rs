//! Whole rollouts through [`reconcile`] without a cluster: a fake API server (the few calls the
//! controller makes, kept in memory) and fake pods, each serving its `/metrics` on a loopback
//! address of its own, like pod IPs. Between passes the harness plays the cluster: Deployments
//! roll out at once, their pods appear and vanish, and every pod answers some requests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Config};
use serde_json::{json, Value};

use super::crd::{EdgeCanary, EdgeCanaryStatus, Phase};
use super::lease::Leadership;
use super::reconcile::{apply_merge_patch, reconcile, Context};
use super::scrape::Scraper;
use super::telemetry::Metrics;

const NS: &str = "shop";
const BOUNDS: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10",
];

/// How a version's pods answer: share of 500s and the bucket all their durations fall into.
#[derive(Clone, Copy)]
struct Behaviour {
    failure_percent: u64,
    bucket: usize,
}

const HEALTHY: Behaviour = Behaviour {
    failure_percent: 0,
    bucket: 3,
};

#[derive(Default)]
struct Api {
    deployments: BTreeMap<String, Value>,
    canary: Value,
    slices: Vec<Value>,
    /// (reason, note, reporting instance) of each Event.
    events: Vec<(String, String, String)>,
    lease: Option<Value>,
    lease_version: u64,
    /// Answer 500 to status writes (the API server failing for a while; not 503, which the
    /// client retries for minutes by itself).
    refuse_status: bool,
}

struct Pod {
    ip: Ipv4Addr,
    version: String,
    ok: u64,
    failed: u64,
    buckets: [u64; 15],
}

struct Harness {
    api: Arc<Mutex<Api>>,
    client: Client,
    context: Arc<Context>,
    metrics_port: u16,
    /// Holds `metrics_port` on 127.0.0.1 so that no other test is handed the same port.
    _port_guard: std::net::TcpListener,
    pods: BTreeMap<String, Pod>,
    /// What each pod IP answers on /metrics; absent: 500.
    pages: Arc<Mutex<BTreeMap<Ipv4Addr, String>>>,
    next_ip: u8,
    behaviour: BTreeMap<String, Behaviour>,
}

impl Harness {
    async fn new(v2: Behaviour) -> Harness {
        let api = Arc::new(Mutex::new(Api::default()));
        let api_addr = serve(SocketAddr::from(([127, 0, 0, 1], 0)), {
            let api = api.clone();
            move |method, path, query: String, body| {
                // Watches stay open without events: the passes come from requeues.
                if query.contains("watch=true") {
                    Answer::Hang
                } else {
                    let (status, text) = handle(&api, method, &path, body);
                    Answer::Once(status, text)
                }
            }
        })
        .await;
        let client =
            Client::try_from(Config::new(format!("http://{api_addr}").parse().unwrap())).unwrap();
        // Any free port: every fake pod listens on it, each on its own address.
        let port_guard = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let metrics_port = port_guard.local_addr().unwrap().port();
        let mut harness = Harness {
            api,
            context: context(&client),
            client,
            metrics_port,
            _port_guard: port_guard,
            pods: BTreeMap::new(),
            pages: Arc::new(Mutex::new(BTreeMap::new())),
            next_ip: 2,
            behaviour: BTreeMap::from([("v1".to_string(), HEALTHY), ("v2".to_string(), v2)]),
        };
        {
            let mut api = harness.api.lock().unwrap();
            api.deployments.insert(
                "fn-stable".into(),
                deployment("fn-stable", "stable", "v1", 10),
            );
            api.deployments.insert(
                "fn-canary".into(),
                deployment("fn-canary", "canary", "v2", 0),
            );
            api.canary = json!({
                "apiVersion": "wasmedge.io/v1alpha1", "kind": "EdgeCanary",
                "metadata": {"name": "fn", "namespace": NS, "generation": 1, "uid": "u-1", "resourceVersion": "1"},
                "spec": {"service": "fn", "stableDeployment": "fn-stable", "canaryDeployment": "fn-canary",
                         "totalReplicas": 10, "stepSeconds": 1, "metricsPort": metrics_port}
            });
        }
        harness.play_cluster().await;
        harness
    }

    /// One reconcile pass on the EdgeCanary as the API server has it, then the cluster reacts.
    async fn pass(&mut self) -> Result<(), super::reconcile::Error> {
        let canary: EdgeCanary =
            serde_json::from_value(self.api.lock().unwrap().canary.clone()).unwrap();
        let result = reconcile(Arc::new(canary), self.context.clone())
            .await
            .map(|_| ());
        self.play_cluster().await;
        result
    }

    fn status(&self) -> EdgeCanaryStatus {
        let canary = self.api.lock().unwrap().canary.clone();
        serde_json::from_value(canary["status"].clone()).unwrap_or_default()
    }

    fn deployment(&self, name: &str) -> Value {
        self.api.lock().unwrap().deployments[name].clone()
    }

    fn event_reasons(&self) -> Vec<String> {
        self.api
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|(reason, _, _)| reason.clone())
            .collect()
    }

    /// Passes (a quarter step apart) until `done`; returns each status after a pass.
    async fn run_until(
        &mut self,
        done: impl Fn(&EdgeCanaryStatus) -> bool,
    ) -> Vec<EdgeCanaryStatus> {
        let mut seen = Vec::new();
        for _ in 0..80 {
            self.pass().await.unwrap();
            seen.push(self.status());
            if done(seen.last().unwrap()) {
                return seen;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        panic!("not done after 80 passes; last status {:?}", seen.last());
    }

    /// Deployments roll out at once; pods follow their replicas; each pod answers 40 requests.
    async fn play_cluster(&mut self) {
        let deployments: Vec<Value> = {
            let mut api = self.api.lock().unwrap();
            for d in api.deployments.values_mut() {
                let replicas = d["spec"]["replicas"].clone();
                d["status"] = json!({"observedGeneration": d["metadata"]["generation"], "replicas": replicas,
                                     "updatedReplicas": replicas, "availableReplicas": replicas});
            }
            api.deployments.values().cloned().collect()
        };
        let mut wanted = BTreeMap::new();
        for d in &deployments {
            let version = d["spec"]["template"]["metadata"]["annotations"]["wasmedge.io/version"]
                .as_str()
                .unwrap()
                .to_string();
            for i in 0..d["spec"]["replicas"].as_i64().unwrap() {
                wanted.insert(
                    format!("{}-{version}-{i}", d["metadata"]["name"].as_str().unwrap()),
                    version.clone(),
                );
            }
        }
        self.pods.retain(|name, _| wanted.contains_key(name));
        for (name, version) in wanted {
            if !self.pods.contains_key(&name) {
                let ip = Ipv4Addr::new(127, 0, 0, self.next_ip);
                self.next_ip += 1;
                let pages = self.pages.clone();
                serve(
                    SocketAddr::new(IpAddr::V4(ip), self.metrics_port),
                    move |_, _, _, _| match pages.lock().unwrap().get(&ip) {
                        Some(page) => Answer::Once(StatusCode::OK, page.clone()),
                        None => Answer::Once(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                    },
                )
                .await;
                self.pods.insert(
                    name,
                    Pod {
                        ip,
                        version,
                        ok: 0,
                        failed: 0,
                        buckets: [0; 15],
                    },
                );
            }
        }
        let mut pages = self.pages.lock().unwrap();
        let mut endpoints = Vec::new();
        for (name, pod) in &mut self.pods {
            let behaviour = self.behaviour[&pod.version];
            let failed = 40 * behaviour.failure_percent / 100;
            pod.failed += failed;
            pod.ok += 40 - failed;
            pod.buckets[behaviour.bucket] += 40;
            pages.insert(pod.ip, exposition_text(pod));
            endpoints.push(
                json!({"addresses": [pod.ip.to_string()], "conditions": {"ready": true},
                                  "targetRef": {"kind": "Pod", "name": name}}),
            );
        }
        self.api.lock().unwrap().slices = vec![
            json!({"metadata": {"name": "fn-x"}, "addressType": "IPv4", "endpoints": endpoints}),
        ];
    }

    /// A pod stops answering /metrics (500) until the next `play_cluster` refreshes its page.
    fn break_metrics_of(&self, pod_prefix: &str) {
        let ip = self
            .pods
            .iter()
            .find(|(name, _)| name.starts_with(pod_prefix))
            .unwrap()
            .1
            .ip;
        self.pages.lock().unwrap().remove(&ip);
    }
}

fn context(client: &Client) -> Arc<Context> {
    let reporter = Reporter {
        controller: "test".into(),
        instance: None,
    };
    Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: Arc::new(Metrics::default()),
        scraper: Scraper::default(),
        leadership: Leadership::always(),
    })
}

fn deployment(name: &str, track: &str, version: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "fn", "track": track}},
            "template": {
                "metadata": {"labels": {"app": "fn", "track": track},
                             "annotations": {"wasmedge.io/version": version, "wasmedge.io/mode": "http"}},
                "spec": {"runtimeClassName": "wasmedge", "containers": [{"name": "fn", "image": format!("fn:{version}")}]}
            }
        }
    })
}

/// What prometheus-client writes for the HTTP mode's two families.
fn exposition_text(pod: &Pod) -> String {
    let v = &pod.version;
    let mut text = format!(
        "# HELP wasmedge_http_requests HTTP requests answered, by status code.\n# TYPE wasmedge_http_requests counter\n\
         wasmedge_http_requests_total{{version=\"{v}\",status=\"200\"}} {}\n\
         wasmedge_http_requests_total{{version=\"{v}\",status=\"500\"}} {}\n\
         # HELP wasmedge_http_request_duration_seconds Time from request to response.\n\
         # TYPE wasmedge_http_request_duration_seconds histogram\n\
         wasmedge_http_request_duration_seconds_sum{{version=\"{v}\"}} 1.5\n\
         wasmedge_http_request_duration_seconds_count{{version=\"{v}\"}} {}\n",
        pod.ok,
        pod.failed,
        pod.buckets.iter().sum::<u64>()
    );
    let mut cumulative = 0;
    for (i, le) in BOUNDS.iter().chain(["+Inf"].iter()).enumerate() {
        cumulative += pod.buckets[i];
        text.push_str(&format!("wasmedge_http_request_duration_seconds_bucket{{le=\"{le}\",version=\"{v}\"}} {cumulative}\n"));
    }
    text.push_str("# EOF\n");
    text
}

/// The API calls the controller makes, on the in-memory objects.
fn handle(api: &Mutex<Api>, method: Method, path: &str, body: Value) -> (StatusCode, String) {
    let mut api = api.lock().unwrap();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_found = || {
        (StatusCode::NOT_FOUND, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                     "reason": "NotFound", "code": 404, "message": path}).to_string())
    };
    let conflict = || {
        (StatusCode::CONFLICT, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                   "reason": "Conflict", "code": 409, "message": "the object has been modified"}).to_string())
    };
    match (method, segments.as_slice()) {
        (Method::GET, ["apis", "apps", "v1", "namespaces", NS, "deployments", name]) => {
            match api.deployments.get(*name) {
                Some(d) => (StatusCode::OK, d.to_string()),
                None => not_found(),
            }
        }
        (Method::PATCH, ["apis", "apps", "v1", "namespaces", NS, "deployments", name]) => {
            let Some(d) = api.deployments.get_mut(*name) else {
                return not_found();
            };
            let before = d["spec"].clone();
            *d = apply_merge_patch(d.clone(), &body);
            if d["spec"] != before {
                d["metadata"]["generation"] =
                    json!(d["metadata"]["generation"].as_i64().unwrap() + 1);
            }
            (StatusCode::OK, d.to_string())
        }
        (Method::GET, ["apis", "discovery.k8s.io", "v1", "namespaces", NS, "endpointslices"]) => {
            let list = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {}, "items": api.slices});
            (StatusCode::OK, list.to_string())
        }
        (
            Method::PATCH,
            ["apis", "wasmedge.io", "v1alpha1", "namespaces", NS, "edgecanaries", "fn", "status"],
        ) => {
            if api.refuse_status {
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError",
                                    "code": 500, "message": "etcdserver: leader changed"});
                return (StatusCode::INTERNAL_SERVER_ERROR, status.to_string());
            }
            let current = api.canary["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("1")
                .to_string();
            if body["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|rv| rv != current)
            {
                return conflict();
            }
            api.canary["status"] = body["status"].clone();
            api.canary["metadata"]["resourceVersion"] =
                json!((current.parse::<u64>().unwrap_or(1) + 1).to_string());
            (StatusCode::OK, api.canary.to_string())
        }
        (
            Method::GET,
            ["apis", "wasmedge.io", "v1alpha1", "namespaces", NS, "edgecanaries", "fn"],
        ) => (StatusCode::OK, api.canary.to_string()),
        (Method::GET, ["apis", "wasmedge.io", "v1alpha1", "namespaces", NS, "edgecanaries"]) => {
            let list = json!({"apiVersion": "wasmedge.io/v1alpha1", "kind": "EdgeCanaryList",
                              "metadata": {"resourceVersion": "1"}, "items": [api.canary]});
            (StatusCode::OK, list.to_string())
        }
        (Method::GET, ["apis", "coordination.k8s.io", "v1", "namespaces", NS, "leases", _]) => {
            match &api.lease {
                Some(lease) => (StatusCode::OK, lease.to_string()),
                None => not_found(),
            }
        }
        (
            Method::POST | Method::PUT,
            ["apis", "coordination.k8s.io", "v1", "namespaces", NS, "leases", ..],
        ) => {
            // Create only when there is none, replace only the version read: like the API server.
            let stale = match &api.lease {
                None => false,
                Some(current) => {
                    body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
                }
            };
            if stale {
                return conflict();
            }
            api.lease_version += 1;
            let mut lease = body.clone();
            lease["metadata"]["resourceVersion"] = json!(api.lease_version.to_string());
            api.lease = Some(lease.clone());
            (StatusCode::OK, lease.to_string())
        }
        (
            Method::POST | Method::PATCH,
            ["apis", "events.k8s.io", "v1", "namespaces", NS, "events", ..],
        ) => {
            let text = |key: &str| body[key].as_str().unwrap_or_default().to_string();
            api.events
                .push((text("reason"), text("note"), text("reportingInstance")));
            (StatusCode::CREATED, body.to_string())
        }
        _ => not_found(),
    }
}

enum Answer {
    Once(StatusCode, String),
    /// 200 and a body that never ends (a watch without events).
    Hang,
}

/// A tiny HTTP server answering through `answer(method, path, query, json body)`; returns its
/// address.
async fn serve<F>(addr: SocketAddr, answer: F) -> SocketAddr
where
    F: Fn(Method, String, String, Value) -> Answer + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let answer = answer.clone();
                        async move {
                            let method = request.method().clone();
                            let path = request.uri().path().to_string();
                            let query = request.uri().query().unwrap_or_default().to_string();
                            let bytes = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            let (status, body) = match answer(method, path, query, body) {
                                Answer::Once(status, text) => {
                                    (status, Full::new(Bytes::from(text)).boxed())
                                }
                                Answer::Hang => {
                                    let never = futures::stream::pending::<
                                        Result<hyper::body::Frame<Bytes>, Infallible>,
                                    >();
                                    (
                                        StatusCode::OK,
                                        http_body_util::StreamBody::new(never).boxed(),
                                    )
                                }
                            };
                            let response = Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(body)
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    local
}

fn weights(seen: &[EdgeCanaryStatus]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for status in seen {
        if out.last() != Some(&status.desired_weight) {
            out.push(status.desired_weight);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_walks_every_step_and_is_promoted() {
    let mut h = Harness::new(HEALTHY).await;
    let seen = h.run_until(|s| s.phase == Phase::Promoted).await;
    assert_eq!(weights(&seen), vec![10, 30, 50, 100]);
    // Every step's replicas: 1/9, 3/7, 5/5, then the promotion.
    let splits: Vec<(i32, i32)> = seen
        .iter()
        .map(|s| (s.stable_replicas, s.canary_replicas))
        .collect();
    for split in [(9, 1), (7, 3), (5, 5), (10, 0)] {
        assert!(splits.contains(&split), "{split:?} missing in {splits:?}");
    }
    let last = seen.last().unwrap();
    assert_eq!(
        (last.effective_weight, last.stable_version.as_deref()),
        (100.0, Some("v2"))
    );

    let stable = h.deployment("fn-stable");
    let template = &stable["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["wasmedge.io/version"],
        "v2"
    );
    assert_eq!(
        template["metadata"]["labels"],
        json!({"app": "fn", "track": "stable"})
    );
    assert_eq!(template["spec"]["containers"][0]["image"], "fn:v2");
    assert_eq!(stable["spec"]["replicas"], 10);
    assert_eq!(h.deployment("fn-canary")["spec"]["replicas"], 0);
    assert_eq!(
        h.event_reasons(),
        vec![
            "RolloutStarted",
            "StepAdvanced",
            "StepAdvanced",
            "Promoting",
            "Promoted"
        ]
    );
    // The canary's observation is a true p99 inside the 5 ms bucket (all requests take 2.5-5 ms).
    let p99 = seen
        .iter()
        .rev()
        .find_map(|s| s.canary.as_ref()?.p99_ms)
        .unwrap();
    assert!(p99 > 2.5 && p99 <= 5.0, "{p99}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back_in_the_first_step() {
    let mut h = Harness::new(Behaviour {
        failure_percent: 50,
        bucket: 3,
    })
    .await;
    let seen = h.run_until(|s| s.phase.is_finished()).await;
    let last = seen.last().unwrap();
    assert_eq!(last.phase, Phase::RolledBack);
    assert_eq!(weights(&seen), vec![10, 0]);
    assert!(
        last.message
            .as_deref()
            .unwrap()
            .contains("success rate 0.5000"),
        "{:?}",
        last.message
    );
    assert_eq!(h.deployment("fn-canary")["spec"]["replicas"], 0);
    assert_eq!(h.deployment("fn-stable")["spec"]["replicas"], 10);
    assert_eq!(
        h.deployment("fn-stable")["spec"]["template"]["metadata"]["annotations"]
            ["wasmedge.io/version"],
        "v1"
    );
    assert_eq!(h.event_reasons(), vec!["RolloutStarted", "RolledBack"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_canary_is_rolled_back_at_the_end_of_the_step() {
    // Every canary request takes 50-100 ms: p99 ≈ 99.5 ms > 50 ms.
    let mut h = Harness::new(Behaviour {
        failure_percent: 0,
        bucket: 7,
    })
    .await;
    let seen = h.run_until(|s| s.phase.is_finished()).await;
    let last = seen.last().unwrap();
    assert_eq!(last.phase, Phase::RolledBack);
    assert!(
        last.message.as_deref().unwrap().contains("p99"),
        "{:?}",
        last.message
    );
    assert_eq!(last.current_step, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_metrics_and_api_errors_hold_and_a_new_controller_resumes() {
    let mut h = Harness::new(HEALTHY).await;
    h.run_until(|s| s.current_step == 1).await;
    let replicas_at_step_1 = h.deployment("fn-canary")["spec"]["replicas"].clone();

    // A canary pod's /metrics fails: hold, whatever the time, and say why.
    for _ in 0..6 {
        h.break_metrics_of("fn-canary");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let canary: EdgeCanary =
            serde_json::from_value(h.api.lock().unwrap().canary.clone()).unwrap();
        reconcile(Arc::new(canary), h.context.clone())
            .await
            .unwrap();
        let status = h.status();
        assert_eq!((status.phase, status.current_step), (Phase::Progressing, 1));
        assert!(
            status
                .message
                .as_deref()
                .unwrap()
                .starts_with("metrics unavailable"),
            "{:?}",
            status.message
        );
        let available = status
            .conditions
            .iter()
            .find(|c| c.type_ == "MetricsAvailable")
            .unwrap();
        assert_eq!(available.status, "False");
    }

    // The API server refuses status writes just when the step could advance: the pass fails
    // and changes nothing, the Deployments included.
    h.play_cluster().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    h.api.lock().unwrap().refuse_status = true;
    for _ in 0..3 {
        assert!(h.pass().await.is_err());
    }
    h.api.lock().unwrap().refuse_status = false;
    assert_eq!(h.status().current_step, 1);
    assert_eq!(
        h.deployment("fn-canary")["spec"]["replicas"],
        replicas_at_step_1
    );

    // A controller that knows nothing but the status goes on from step 1.
    h.context = context(&h.client);
    let seen = h.run_until(|s| s.phase == Phase::Promoted).await;
    // (Its first pass may already advance: the step had ended while the writes failed.)
    assert!(
        seen.iter().all(|s| s.desired_weight >= 30),
        "{:?}",
        weights(&seen)
    );
    assert_eq!(weights(&seen).last(), Some(&100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_promote_it_pauses_before_100_until_told() {
    let mut h = Harness::new(HEALTHY).await;
    h.api.lock().unwrap().canary["spec"]["autoPromote"] = json!(false);
    h.run_until(|s| s.phase == Phase::Paused).await;
    // Paused stays paused, at the last step before 100 %, with both versions running.
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        h.pass().await.unwrap();
        let status = h.status();
        assert_eq!((status.phase, status.desired_weight), (Phase::Paused, 50));
        assert!(
            status.message.as_deref().unwrap().contains("spec.promote"),
            "{:?}",
            status.message
        );
    }
    assert_eq!(h.deployment("fn-canary")["spec"]["replicas"], 5);
    {
        let mut api = h.api.lock().unwrap();
        api.canary["spec"]["promote"] = json!(true);
        api.canary["metadata"]["generation"] = json!(2);
    }
    h.run_until(|s| s.phase == Phase::Promoted).await;
    assert!(h.event_reasons().contains(&"Paused".to_string()));
    assert_eq!(
        h.deployment("fn-stable")["spec"]["template"]["metadata"]["annotations"]
            ["wasmedge.io/version"],
        "v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_running_controllers_one_leader() {
    let mut h = Harness::new(HEALTHY).await;
    let settings = |identity: &str| super::Settings {
        namespace: Some(NS.to_string()),
        metrics_addr: None,
        lease: Some((NS.to_string(), "wasm-weight-controller".to_string())),
        identity: identity.to_string(),
    };
    let a = tokio::spawn(super::run(h.client.clone(), settings("replica-a"), false));
    let b = tokio::spawn(super::run(h.client.clone(), settings("replica-b"), false));
    // The controllers run on their own (watch, requeues, Lease); the harness plays the cluster.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // The leader records the Promoted event after it wrote the status: wait for both.
    while h.status().phase != Phase::Promoted
        || !h.event_reasons().contains(&"Promoted".to_string())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not promoted in 120 s: {:?} {:?}",
            h.status(),
            h.event_reasons()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        h.play_cluster().await;
    }
    let holder = h.api.lock().unwrap().lease.as_ref().unwrap()["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(holder == "replica-a" || holder == "replica-b", "{holder}");
    let events = h.api.lock().unwrap().events.clone();
    assert!(
        events.iter().all(|(_, _, instance)| *instance == holder),
        "{events:?}"
    );
    assert_eq!(
        h.event_reasons(),
        vec![
            "RolloutStarted",
            "StepAdvanced",
            "StepAdvanced",
            "Promoting",
            "Promoted"
        ]
    );
    a.abort();
    b.abort();
}
