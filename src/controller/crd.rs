//! The `EdgeCanary` custom resource (`wasmedge.io/v1alpha1`): what the user asks for (spec) and
//! what the controller has done and seen (status). The status carries everything a restarted
//! controller needs to resume a rollout mid-step.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::window::PodWindow;

/// A canary rollout of one edge function: `canaryDeployment` takes a growing share of the pods
/// behind `service` (weight = replica ratio), step by step, while its own `/metrics` stay
/// healthy; at 100 % the stable Deployment takes the canary's pod template.
// Two printer columns share `type_ = "number"`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "wasmedge.io",
    version = "v1alpha1",
    kind = "EdgeCanary",
    plural = "edgecanaries",
    shortname = "ec",
    namespaced,
    status = "EdgeCanaryStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Weight",
        type_ = "number",
        json_path = ".status.effectiveWeight"
    ),
    printcolumn(name = "Step", type_ = "integer", json_path = ".status.currentStep"),
    printcolumn(
        name = "Canary-Success",
        type_ = "number",
        json_path = ".status.canary.successRate"
    ),
    printcolumn(
        name = "Canary-P99-ms",
        type_ = "number",
        json_path = ".status.canary.p99Ms"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EdgeCanarySpec {
    /// The Service in front of both Deployments (its EndpointSlices list the pods to scrape).
    pub service: String,
    /// Deployment running the current version.
    pub stable_deployment: String,
    /// Deployment running the new version (same app label, so the Service selects both).
    pub canary_deployment: String,
    /// Pods of both Deployments together; the weight is canary pods / total.
    #[schemars(range(min = 2))]
    pub total_replicas: i32,
    /// Canary weights in percent, ascending, ending with 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// How long each step is observed before it may advance.
    #[serde(default = "default_step_seconds")]
    pub step_seconds: u64,
    /// Minimum canary success rate (status < 500) to advance.
    #[serde(default = "default_success_rate_threshold")]
    pub success_rate_threshold: f64,
    /// Maximum canary p99 latency to advance; above it for a whole step rolls back.
    #[serde(default = "default_latency_p99_threshold_ms")]
    pub latency_p99_threshold_ms: f64,
    /// Canary requests in a step needed before it may advance.
    #[serde(default = "default_min_samples_to_promote")]
    pub min_samples_to_promote: u64,
    /// Canary requests in a step needed before it may be rolled back.
    #[serde(default = "default_min_samples_to_rollback")]
    pub min_samples_to_rollback: u64,
    /// false: stop before the 100 % step in phase Paused until `promote` is set.
    #[serde(default = "default_true")]
    pub auto_promote: bool,
    /// The user's go-ahead for a Paused rollout (with `autoPromote: false`).
    #[serde(default)]
    pub promote: bool,
    /// Port of the pods' metrics endpoint.
    #[serde(default = "default_metrics_port")]
    pub metrics_port: u16,
    /// Path of the pods' metrics endpoint.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
}

fn default_steps() -> Vec<u32> {
    vec![10, 30, 50, 100]
}
fn default_step_seconds() -> u64 {
    300
}
fn default_success_rate_threshold() -> f64 {
    0.99
}
fn default_latency_p99_threshold_ms() -> f64 {
    50.0
}
fn default_min_samples_to_promote() -> u64 {
    100
}
fn default_min_samples_to_rollback() -> u64 {
    50
}
fn default_true() -> bool {
    true
}
fn default_metrics_port() -> u16 {
    8080
}
fn default_metrics_path() -> String {
    "/metrics".to_string()
}

impl EdgeCanarySpec {
    /// A spec with every defaulted field at its default (tests, examples).
    pub fn with_defaults(service: &str, stable: &str, canary: &str, total_replicas: i32) -> Self {
        EdgeCanarySpec {
            service: service.to_string(),
            stable_deployment: stable.to_string(),
            canary_deployment: canary.to_string(),
            total_replicas,
            steps: default_steps(),
            step_seconds: default_step_seconds(),
            success_rate_threshold: default_success_rate_threshold(),
            latency_p99_threshold_ms: default_latency_p99_threshold_ms(),
            min_samples_to_promote: default_min_samples_to_promote(),
            min_samples_to_rollback: default_min_samples_to_rollback(),
            auto_promote: true,
            promote: false,
            metrics_port: default_metrics_port(),
            metrics_path: default_metrics_path(),
        }
    }

    /// Everything the schema cannot say; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.service.is_empty()
            || self.stable_deployment.is_empty()
            || self.canary_deployment.is_empty()
        {
            return Err("service, stableDeployment and canaryDeployment must be set".into());
        }
        if self.stable_deployment == self.canary_deployment {
            return Err(
                "stableDeployment and canaryDeployment must be different Deployments".into(),
            );
        }
        if self.total_replicas < 2 {
            return Err(format!(
                "totalReplicas {} is too small: a canary needs at least one stable and one canary pod (use >= 2)",
                self.total_replicas
            ));
        }
        if self.steps.last() != Some(&100) {
            return Err(format!("steps {:?} must end with 100", self.steps));
        }
        if self.steps.len() < 2 {
            return Err(
                "steps must contain at least one weight below 100 before the final 100".into(),
            );
        }
        let mut previous = 0;
        for &weight in &self.steps {
            if weight == 0 || weight > 100 || weight <= previous {
                return Err(format!(
                    "steps {:?} must rise strictly, each within 1..=100",
                    self.steps
                ));
            }
            previous = weight;
        }
        if !(self.success_rate_threshold > 0.0 && self.success_rate_threshold <= 1.0) {
            return Err(format!(
                "successRateThreshold {} must lie in (0, 1]",
                self.success_rate_threshold
            ));
        }
        if !(self.latency_p99_threshold_ms > 0.0 && self.latency_p99_threshold_ms.is_finite()) {
            return Err(format!(
                "latencyP99ThresholdMs {} must be a positive number",
                self.latency_p99_threshold_ms
            ));
        }
        if self.step_seconds == 0 {
            return Err("stepSeconds must be at least 1".into());
        }
        if self.min_samples_to_promote == 0 || self.min_samples_to_rollback == 0 {
            return Err("minSamplesToPromote and minSamplesToRollback must be at least 1".into());
        }
        if !self.metrics_path.starts_with('/') {
            return Err(format!(
                "metricsPath {:?} must start with /",
                self.metrics_path
            ));
        }
        Ok(())
    }
}

/// Where a rollout stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Phase {
    /// Walking the steps, observing each.
    #[default]
    Progressing,
    /// Healthy at the last step before 100 % with `autoPromote: false`; waits for `promote: true`.
    Paused,
    /// The stable Deployment is taking the canary's pod template.
    Promoting,
    /// Done: the stable Deployment runs the new version, the canary has no pods.
    Promoted,
    /// Done: the canary was unhealthy; it has no pods, the stable Deployment has them all.
    RolledBack,
    /// The spec or the Deployments are unusable; the message says why.
    Failed,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack)
    }
}

/// What the controller saw of one version during the current step.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct VersionObservation {
    /// The `version` label of the pods' metrics.
    pub version: String,
    /// Requests answered since the step began (all pods of this version).
    pub samples: u64,
    /// Share of those with status < 500; absent without samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// 99th percentile of their durations, from the histogram; absent without samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct EdgeCanaryStatus {
    #[serde(default)]
    pub phase: Phase,
    /// Index into `spec.steps` of the step being observed.
    #[serde(default)]
    pub current_step: u32,
    /// The weight of the current step, percent.
    #[serde(default)]
    pub desired_weight: u32,
    /// The weight the replica counts give: canary / total × 100.
    #[serde(default)]
    pub effective_weight: f64,
    #[serde(default)]
    pub stable_replicas: i32,
    #[serde(default)]
    pub canary_replicas: i32,
    /// Version of the stable Deployment's pods (the canary's after promotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,
    /// Version of the canary Deployment's pods when this rollout began; a new version starts a
    /// new rollout once this one has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,
    /// When the current step began; its observation time counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<VersionObservation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<VersionObservation>,
    /// Per pod: the counters last scraped and what they added since the step began. Kept in
    /// status so that a restarted controller resumes the step instead of starting it over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub window: Vec<PodWindow>,
    /// The latest decision in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD as YAML, as committed in `k8s/controller/crd.yaml`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let header =
        "# Generated by `wasm-weight-controller crd` from src/controller/crd.rs; do not edit.\n";
    format!(
        "{header}{}",
        serde_yaml::to_string(&EdgeCanary::crd()).expect("CRD serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_matches_the_generated_one() {
        let committed = include_str!("../../k8s/controller/crd.yaml");
        assert!(
            committed == crd_yaml(),
            "k8s/controller/crd.yaml is stale: run `cargo run --release --bin wasm-weight-controller -- crd > k8s/controller/crd.yaml`"
        );
    }

    #[test]
    fn omitted_fields_take_the_seed_defaults() {
        let spec: EdgeCanarySpec = serde_json::from_value(serde_json::json!({
            "service": "fn", "stableDeployment": "fn-v1", "canaryDeployment": "fn-v2", "totalReplicas": 10
        }))
        .unwrap();
        assert_eq!(
            spec,
            EdgeCanarySpec::with_defaults("fn", "fn-v1", "fn-v2", 10)
        );
        assert_eq!(spec.steps, vec![10, 30, 50, 100]);
        assert_eq!(spec.success_rate_threshold, 0.99);
        assert_eq!(spec.latency_p99_threshold_ms, 50.0);
        assert_eq!(
            (spec.min_samples_to_promote, spec.min_samples_to_rollback),
            (100, 50)
        );
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        let base = EdgeCanarySpec::with_defaults("fn", "fn-v1", "fn-v2", 10);
        type Change = Box<dyn Fn(&mut EdgeCanarySpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.total_replicas = 1), "totalReplicas"),
            (Box::new(|s| s.steps = vec![10, 30]), "must end with 100"),
            (Box::new(|s| s.steps = vec![100]), "at least one weight"),
            (Box::new(|s| s.steps = vec![30, 10, 100]), "rise strictly"),
            (Box::new(|s| s.steps = vec![0, 50, 100]), "rise strictly"),
            (
                Box::new(|s| s.success_rate_threshold = 1.5),
                "successRateThreshold",
            ),
            (
                Box::new(|s| s.latency_p99_threshold_ms = 0.0),
                "latencyP99ThresholdMs",
            ),
            (
                Box::new(|s| s.canary_deployment = "fn-v1".into()),
                "different",
            ),
            (
                Box::new(|s| s.metrics_path = "metrics".into()),
                "metricsPath",
            ),
            (Box::new(|s| s.step_seconds = 0), "stepSeconds"),
        ];
        for (change, expected) in cases {
            let mut spec = base.clone();
            change(&mut spec);
            let err = spec.validate().unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
