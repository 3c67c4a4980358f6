//! The controller's own `/metrics` (prometheus-client) and `/healthz` `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub namespace: String,
    pub name: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    pub decisions: Family<DecisionLabels, Counter>,
    pub canary_weight: Family<CanaryLabels, Gauge<f64, AtomicU64>>,
    pub leader: Gauge,
    /// Set once the API server has answered (a lease round or a reconcile): `/readyz`.
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wasm_weight_controller");
        let reconciles = Counter::default();
        let reconcile_errors = Counter::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let canary_weight = Family::<CanaryLabels, Gauge<f64, AtomicU64>>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed",
            reconcile_errors.clone(),
        );
        registry.register("decisions", "Step decisions, by kind", decisions.clone());
        registry.register(
            "canary_weight_percent",
            "Effective canary weight per EdgeCanary",
            canary_weight.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            decisions,
            canary_weight,
            leader,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn count_decision(&self, kind: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: kind.to_string(),
            })
            .inc();
    }

    pub fn set_weight(&self, namespace: &str, name: &str, weight: f64) {
        let labels = CanaryLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.canary_weight.get_or_create(&labels).set(weight);
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the task ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics /healthz /readyz");
    loop {
        let (stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond<B>(request: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "API server not reached yet\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_their_labels() {
        let metrics = Metrics::default();
        metrics.reconciles.inc();
        metrics.count_decision("next_step");
        metrics.set_weight("default", "fn", 30.0);
        let text = metrics.encode();
        for expected in [
            "wasm_weight_controller_reconciles_total 1",
            "wasm_weight_controller_decisions_total{decision=\"next_step\"} 1",
            "wasm_weight_controller_canary_weight_percent{namespace=\"default\",name=\"fn\"} 30.0",
            "wasm_weight_controller_leader 0",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in\n{text}");
        }
        // Our own parser reads what we expose.
        let parsed = super::super::exposition::parse(&text);
        assert!(parsed.malformed.is_empty(), "{:?}", parsed.malformed);
    }

    #[test]
    fn readiness_follows_the_flag() {
        let metrics = Metrics::default();
        let request = Request::get("/readyz").body(()).unwrap();
        assert_eq!(
            respond(&request, &metrics).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        metrics.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond(&request, &metrics).status(), StatusCode::OK);
        assert_eq!(
            respond(&Request::get("/healthz").body(()).unwrap(), &metrics).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Request::get("/nope").body(()).unwrap(), &metrics).status(),
            StatusCode::NOT_FOUND
        );
    }
}
