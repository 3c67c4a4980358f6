//! wasm-weight-controller: canary rollouts of edge functions without a service mesh or sidecar.
//!
//! The weight is the canary's share of the pods behind one Service; the verdict comes from the
//! pods' own `/metrics`. Data flows one way: [`scrape`] (EndpointSlices → pod metrics) →
//! [`exposition`] (text format) → [`window`] (per-step counters, restarts and vanished pods
//! handled) → [`decide`] (one pure judgement) → [`reconcile`] (status, then Deployments,
//! Events) with [`replicas`] for the weight arithmetic, [`lease`] so that only one replica acts
//! and [`telemetry`] for the controller's own endpoints.

pub mod crd;
pub mod decide;
pub mod exposition;
pub mod lease;
pub mod reconcile;
pub mod replicas;
pub mod scrape;
pub mod telemetry;
pub mod window;

#[cfg(test)]
mod fake_cluster;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{predicates, reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, Client};

use crd::EdgeCanary;
use lease::Leadership;
use reconcile::{error_policy, reconcile, Context};
use telemetry::Metrics;

pub const CONTROLLER_NAME: &str = "wasm-weight-controller";

/// How the controller runs; the binary fills it from its flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch EdgeCanaries in this namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: not served.
    pub metrics_addr: Option<SocketAddr>,
    /// The Lease `(namespace, name)` to hold; `None`: act without leader election.
    pub lease: Option<(String, String)>,
    /// This replica's name in the Lease and in Events.
    pub identity: String,
}

/// Runs until SIGTERM/SIGINT (when `shutdown_on_signal`) or until the returned future is dropped.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown_on_signal: bool,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let leadership = match &settings.lease {
        None => Leadership::always(),
        Some(_) => Leadership::default(),
    };
    // Ended with `run`, also when its future is dropped: a stopped controller must not go on
    // renewing the Lease.
    let mut background = AbortOnDrop(Vec::new());
    if let Some(addr) = settings.metrics_addr {
        let metrics = metrics.clone();
        background.0.push(tokio::spawn(async move {
            if let Err(error) = telemetry::serve(addr, metrics).await {
                tracing::error!(%error, "metrics endpoint stopped");
            }
        }));
    }
    if let Some((namespace, name)) = settings.lease.clone() {
        let (client, identity, leadership) = (
            client.clone(),
            settings.identity.clone(),
            leadership.clone(),
        );
        background.0.push(tokio::spawn(async move {
            lease::hold_lease(client, &namespace, &name, &identity, leadership).await
        }));
    }
    {
        let (leadership, metrics) = (leadership.clone(), metrics.clone());
        background.0.push(tokio::spawn(async move {
            loop {
                metrics.leader.set(leadership.is_leader() as i64);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }));
    }

    let reporter = Reporter {
        controller: CONTROLLER_NAME.into(),
        instance: Some(settings.identity.clone()),
    };
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        scraper: scrape::Scraper::default(),
        leadership,
    });
    let canaries: Api<EdgeCanary> = match &settings.namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    };
    // Only spec changes start a pass: the controller's own status writes would otherwise
    // trigger a pass each; the periodic requeue does the observing.
    let (reader, writer) = reflector::store();
    let stream = watcher(canaries.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let mut controller = Controller::for_stream(stream, reader);
    if shutdown_on_signal {
        controller = controller.shutdown_on_signal();
    }
    // Not ready (/readyz) until the API server answers and knows the CRD; say which is missing.
    while let Err(error) = canaries
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        match &error {
            kube::Error::Api(status) if status.code == 404 => {
                tracing::warn!(
                    "edgecanaries.wasmedge.io is not served: apply k8s/controller/crd.yaml"
                )
            }
            _ => tracing::warn!(
                error = error_chain(&error),
                "cannot list edgecanaries.wasmedge.io; retrying"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    metrics.ready.store(true, Ordering::Relaxed);
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile result");
            }
        })
        .await;
    drop(background);
    Ok(())
}

/// An error with its causes, `outer: inner: root`: kube's own message alone is often just
/// "client error (Connect)", which hides why (no route, refused, TLS).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_names_every_cause_once() {
        let root = std::io::Error::other("Network is unreachable (os error 101)");
        let outer = anyhow::Error::new(root).context("client error (Connect)");
        let chain = super::error_chain(outer.as_ref());
        assert_eq!(
            chain,
            "client error (Connect): Network is unreachable (os error 101)"
        );
    }
}
