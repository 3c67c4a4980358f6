//! wasm-weight-controller: canary rollouts of edge functions by replica ratio, judged from the
//! pods' own metrics (see README "Canary rollouts").
//!
//! Usage: wasm-weight-controller run [--kubeconfig PATH] [--namespace NS] [--metrics-addr ADDR]
//!        wasm-weight-controller crd > k8s/controller/crd.yaml

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use containerd_shim_wasmedge::controller::{self, crd::crd_yaml, Settings, CONTROLLER_NAME};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

#[derive(Parser)]
#[command(
    about = "Canary rollouts of wasm edge functions by replica ratio, judged from the pods' /metrics"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (in a cluster, or from a kubeconfig).
    Run {
        /// Kubeconfig to use; default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Watch EdgeCanaries in this namespace only (default: all namespaces).
        #[arg(long)]
        namespace: Option<String>,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8081")]
        metrics_addr: SocketAddr,
        /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else the
        /// kubeconfig's namespace).
        #[arg(long)]
        lease_namespace: Option<String>,
        /// Act without leader election (only with a single replica).
        #[arg(long)]
        no_leader_election: bool,
    },
    /// Print the EdgeCanary CRD (YAML).
    Crd,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().command {
        Command::Crd => {
            print!("{}", crd_yaml());
            Ok(())
        }
        Command::Run {
            kubeconfig,
            namespace,
            metrics_addr,
            lease_namespace,
            no_leader_election,
        } => {
            tracing::subscriber::set_global_default(
                tracing_subscriber::fmt()
                    .with_writer(std::io::stderr)
                    .with_max_level(tracing::Level::INFO)
                    .finish(),
            )?;
            let config = match &kubeconfig {
                Some(path) => {
                    let file = Kubeconfig::read_from(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
                }
                None => Config::infer()
                    .await
                    .context("no in-cluster config and no kubeconfig")?,
            };
            let mut config = config;
            // kube retries 429/503 by itself for minutes; a pass stuck that long could still
            // write after this replica lost the Lease. Fail fast instead: the pass is retried
            // after 5 s, and the leadership check comes first again.
            config.default_retry = false;
            let lease_namespace = lease_namespace
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| config.default_namespace.clone());
            let client = Client::try_from(config)?;
            let settings = Settings {
                namespace,
                metrics_addr: Some(metrics_addr),
                lease: (!no_leader_election)
                    .then(|| (lease_namespace, CONTROLLER_NAME.to_string())),
                identity: identity(),
            };
            tracing::info!(identity = %settings.identity, namespace = ?settings.namespace, "starting");
            controller::run(client, settings, true).await
        }
    }
}

/// The pod's name in a cluster (downward API), else host and process id.
fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME") {
        return pod;
    }
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    format!("{}-{}", host.trim(), std::process::id())
}
