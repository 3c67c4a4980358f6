//! The reconciler: one pass reads the EdgeCanary, its two Deployments and the pods' metrics,
//! judges the step ([`decide`]), writes the status, then makes the Deployments match it.
//!
//! The status is written before the Deployments are changed, so the status is always the
//! intent: a pass that fails half-way is finished by the next one, and a restarted controller
//! resumes from the status alone.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};

use super::crd::{EdgeCanary, EdgeCanarySpec, EdgeCanaryStatus, Phase, VersionObservation};
use super::decide::{decide, CanaryStats, Decision, HoldReason, Observed, StepState};
use super::lease::Leadership;
use super::replicas::split_replicas;
use super::scrape::Scraper;
use super::telemetry::Metrics;
use super::window::{advance_window, start_window, totals_by_version, Counters};

pub const FIELD_MANAGER: &str = "wasm-weight-controller";
/// Where a Deployment's pods say which version they run (the HTTP mode labels its metrics
/// with it); a `version` label is accepted too.
pub const VERSION_ANNOTATION: &str = "wasmedge.io/version";
/// Set on the stable Deployment when it took the canary's template: `<canary>/<version>`.
pub const PROMOTED_FROM_ANNOTATION: &str = "wasmedge.io/promoted-from";

#[derive(Debug)]
pub enum Error {
    Kube(kube::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Kube(e) => write!(f, "Kubernetes API: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub scraper: Scraper,
    pub leadership: Leadership,
}

/// Often enough to see a step's end promptly, rarely enough to leave the API server alone.
pub fn requeue_interval(spec: &EdgeCanarySpec) -> Duration {
    Duration::from_secs((spec.step_seconds / 4).clamp(1, 10))
}

pub async fn reconcile(
    canary_resource: Arc<EdgeCanary>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let namespace = canary_resource
        .namespace()
        .unwrap_or_else(|| "default".to_string());
    // The cached object can lag behind our own last status write; judging a step from an
    // older status could repeat or undo it. One GET per pass reads what we wrote.
    let canaries: Api<EdgeCanary> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(fresh) = canaries.get_opt(&canary_resource.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let ec = &fresh;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let spec = &ec.spec;
    let previous = ec.status.clone();
    let mut status = previous.clone().unwrap_or_default();
    let mut events = Vec::new();

    let setup = match spec.validate() {
        Err(why) => Err(why),
        Ok(()) => load_pair(&deployments, spec).await?,
    };
    let pair = match setup {
        Ok(pair) => pair,
        Err(why) => return fail(ec, &ctx, previous.as_ref(), status, &why).await,
    };

    let starts_rollout = previous.is_none()
        || status.phase == Phase::Failed
        || (status.phase.is_finished()
            && status.canary_version.as_deref() != Some(pair.canary_version.as_str())
            && status.stable_version.as_deref() != Some(pair.canary_version.as_str()));
    if starts_rollout && pair.stable_version == pair.canary_version {
        let why = format!(
            "nothing to roll out: both Deployments run version {}",
            pair.canary_version
        );
        return fail(ec, &ctx, previous.as_ref(), status, &why).await;
    }
    if starts_rollout {
        status = new_rollout(spec, &pair);
        events.push(normal(
            "RolloutStarted",
            "Start",
            &format!(
                "canary {} ({}) starts at {} % against stable {} ({})",
                spec.canary_deployment,
                pair.canary_version,
                spec.steps[0],
                spec.stable_deployment,
                pair.stable_version
            ),
        ));
    }

    match status.phase {
        Phase::Progressing | Phase::Paused => {
            // totalReplicas may have changed since the step began.
            let weight = status.desired_weight;
            apply_split(spec, &mut status, weight);
            converge_weight(&deployments, spec, &pair, &status).await?;
            observe_and_decide(ec, &ctx, &pair, &mut status, &mut events).await?;
        }
        Phase::Promoting => {
            promote_step(&deployments, spec, &pair, &mut status, &mut events).await?
        }
        Phase::RolledBack | Phase::Promoted | Phase::Failed => {}
    }
    status.observed_generation = ec.metadata.generation;
    let ready = status.phase == Phase::Promoted;
    let message = status.message.clone().unwrap_or_default();
    let reason = format!("{:?}", status.phase);
    set_condition(
        &mut status,
        "Ready",
        ready,
        &reason,
        &message,
        ec.metadata.generation,
    );
    ctx.metrics
        .set_weight(&namespace, &ec.name_any(), status.effective_weight);

    // The reads above can take long when the API server is slow or gone; if the Lease lapsed
    // meanwhile, another replica may be acting: write nothing.
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    finish(ec, &ctx, previous.as_ref(), status.clone(), events).await?;
    // Now that the status says so, make the Deployments match it.
    match status.phase {
        Phase::Progressing | Phase::Paused | Phase::RolledBack => {
            converge_weight(&deployments, spec, &pair, &status).await?
        }
        Phase::Promoted => ensure_replicas(&deployments, &pair.canary, 0).await?,
        Phase::Promoting | Phase::Failed => {}
    }
    Ok(Action::requeue(requeue_interval(spec)))
}

/// Phase Failed with the reason; the event only when the reason is new. Checked again after
/// 30 s, or at once when the spec changes.
async fn fail(
    ec: &EdgeCanary,
    ctx: &Context,
    previous: Option<&EdgeCanaryStatus>,
    mut status: EdgeCanaryStatus,
    why: &str,
) -> Result<Action, Error> {
    let mut events = Vec::new();
    if status.phase != Phase::Failed || status.message.as_deref() != Some(why) {
        events.push(warning("Failed", "Validate", why));
    }
    status.phase = Phase::Failed;
    status.message = Some(why.to_string());
    status.observed_generation = ec.metadata.generation;
    set_condition(
        &mut status,
        "Ready",
        false,
        "Failed",
        why,
        ec.metadata.generation,
    );
    finish(ec, ctx, previous, status, events).await?;
    Ok(Action::requeue(Duration::from_secs(30)))
}

pub fn error_policy(_: Arc<EdgeCanary>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = super::error_chain(error), "reconcile failed");
    ctx.metrics.reconcile_errors.inc();
    Action::requeue(Duration::from_secs(5))
}

/// The two Deployments and the versions their pods report.
struct Pair {
    stable: Deployment,
    canary: Deployment,
    stable_version: String,
    canary_version: String,
}

/// `Ok(Err(why))`: the Deployments are unusable for a rollout (missing, no version, …).
async fn load_pair(
    deployments: &Api<Deployment>,
    spec: &EdgeCanarySpec,
) -> Result<Result<Pair, String>, Error> {
    let Some(stable) = deployments.get_opt(&spec.stable_deployment).await? else {
        return Ok(Err(format!(
            "Deployment {} (stableDeployment) not found",
            spec.stable_deployment
        )));
    };
    let Some(canary) = deployments.get_opt(&spec.canary_deployment).await? else {
        return Ok(Err(format!(
            "Deployment {} (canaryDeployment) not found",
            spec.canary_deployment
        )));
    };
    let (Some(stable_version), Some(canary_version)) = (version_of(&stable), version_of(&canary))
    else {
        return Ok(Err(format!(
            "the pod templates of {} and {} must carry the annotation {VERSION_ANNOTATION} (or a version label)",
            spec.stable_deployment, spec.canary_deployment
        )));
    };
    Ok(Ok(Pair {
        stable,
        canary,
        stable_version,
        canary_version,
    }))
}

/// The version a Deployment's pods report in their metrics.
pub fn version_of(deployment: &Deployment) -> Option<String> {
    let meta = &deployment.spec.template.metadata.as_ref()?;
    let annotated = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(VERSION_ANNOTATION));
    let labelled = meta.labels.as_ref().and_then(|l| l.get("version"));
    annotated.or(labelled).filter(|v| !v.is_empty()).cloned()
}

fn new_rollout(spec: &EdgeCanarySpec, pair: &Pair) -> EdgeCanaryStatus {
    let split = split_replicas(spec.total_replicas, spec.steps[0]);
    EdgeCanaryStatus {
        phase: Phase::Progressing,
        current_step: 0,
        desired_weight: spec.steps[0],
        effective_weight: split.effective_weight,
        stable_replicas: split.stable,
        canary_replicas: split.canary,
        stable_version: Some(pair.stable_version.clone()),
        canary_version: Some(pair.canary_version.clone()),
        message: Some("rollout started".to_string()),
        ..Default::default()
    }
}

/// Replica counts for the status's weight (0 after a rollback).
async fn converge_weight(
    deployments: &Api<Deployment>,
    spec: &EdgeCanarySpec,
    pair: &Pair,
    status: &EdgeCanaryStatus,
) -> Result<(), Error> {
    let weight = if status.phase == Phase::RolledBack {
        0
    } else {
        status.desired_weight
    };
    let split = split_replicas(spec.total_replicas, weight);
    // Grow before shrinking, so that the Service never has fewer pods than it should.
    if split.canary > replicas_of(&pair.canary) {
        ensure_replicas(deployments, &pair.canary, split.canary).await?;
        ensure_replicas(deployments, &pair.stable, split.stable).await?;
    } else {
        ensure_replicas(deployments, &pair.stable, split.stable).await?;
        ensure_replicas(deployments, &pair.canary, split.canary).await?;
    }
    Ok(())
}

fn replicas_of(deployment: &Deployment) -> i32 {
    deployment.spec.replicas.unwrap_or(1)
}

async fn ensure_replicas(
    deployments: &Api<Deployment>,
    deployment: &Deployment,
    replicas: i32,
) -> Result<(), Error> {
    if replicas_of(deployment) == replicas {
        return Ok(());
    }
    let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
    deployments
        .patch(&deployment.name_any(), &PatchParams::default(), &patch)
        .await?;
    Ok(())
}

/// All of the Deployment's `replicas` pods run its current template and are available.
pub fn rolled_out(deployment: &Deployment, replicas: i32) -> bool {
    let Some(status) = &deployment.status else {
        return replicas == 0;
    };
    let current =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    current
        && replicas_of(deployment) == replicas
        && status.replicas.unwrap_or(0) == replicas
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) >= replicas
}

async fn observe_and_decide(
    ec: &EdgeCanary,
    ctx: &Context,
    pair: &Pair,
    status: &mut EdgeCanaryStatus,
    events: &mut Vec<Event>,
) -> Result<(), Error> {
    let spec = &ec.spec;
    let namespace = ec.namespace().unwrap_or_default();
    let scrape = ctx
        .scraper
        .scrape_service(
            &ctx.client,
            &namespace,
            &spec.service,
            spec.metrics_port,
            &spec.metrics_path,
        )
        .await?;
    let unavailable = scrape.unavailable();
    let now = Timestamp::now();
    match (&status.step_started_at, &unavailable) {
        // The step's observation begins with its first complete scrape.
        (None, None) => {
            status.window = start_window(&scrape.pods);
            status.step_started_at = Some(Time(now));
        }
        (None, Some(_)) => {}
        (Some(_), _) => status.window = advance_window(&status.window, &scrape.pods),
    }
    set_condition(
        status,
        "MetricsAvailable",
        unavailable.is_none(),
        if unavailable.is_none() {
            "Scraped"
        } else {
            "ScrapeFailed"
        },
        unavailable.as_deref().unwrap_or("all ready pods answered"),
        ec.metadata.generation,
    );

    let totals = totals_by_version(&status.window);
    status.stable = Some(observation(
        &pair.stable_version,
        totals.get(&pair.stable_version),
    ));
    status.canary = Some(observation(
        &pair.canary_version,
        totals.get(&pair.canary_version),
    ));
    let observed = match unavailable {
        Some(why) => Observed::Unavailable(why),
        None => Observed::Canary(totals.get(&pair.canary_version).map(|c| CanaryStats {
            requests: c.requests(),
            successes: c.ok,
            p99_ms: c.p99_ms(),
        })),
    };
    let elapsed_seconds = status.step_started_at.as_ref().map_or(0, |started| {
        now.duration_since(started.0).as_secs().max(0) as u64
    });
    let step = status.current_step as usize;
    let state = StepState {
        step,
        elapsed_seconds,
        canary_ready: rolled_out(
            &pair.canary,
            split_replicas(spec.total_replicas, status.desired_weight).canary,
        ),
    };
    let decision = decide(spec, &state, &observed);
    ctx.metrics.count_decision(decision.kind());
    tracing::info!(canary = %ec.name_any(), step, elapsed_seconds, ?decision, "decided");

    match decision {
        Decision::Hold(reason) => {
            let paused = reason == HoldReason::AwaitingManualPromotion;
            if paused && status.phase != Phase::Paused {
                events.push(normal("Paused", "Pause", &reason.to_string()));
            }
            status.phase = if paused {
                Phase::Paused
            } else {
                Phase::Progressing
            };
            status.message = Some(reason.to_string());
        }
        Decision::NextStep => {
            let from = status.desired_weight;
            status.current_step += 1;
            status.desired_weight = spec.steps[status.current_step as usize];
            status.phase = Phase::Progressing;
            status.window = start_window(&scrape.pods);
            status.step_started_at = Some(Time(now));
            let summary = step_summary(status);
            apply_split(spec, status, status.desired_weight);
            let note = format!(
                "canary weight {from} % -> {} % ({} of {} pods); step {} passed with {summary}",
                status.desired_weight, status.canary_replicas, spec.total_replicas, step
            );
            status.message = Some(note.clone());
            events.push(normal("StepAdvanced", "Scale", &note));
        }
        Decision::Promote => {
            let note = format!(
                "canary healthy through all steps ({}); promoting",
                step_summary(status)
            );
            status.phase = Phase::Promoting;
            status.desired_weight = 100;
            status.message = Some(note.clone());
            events.push(normal("Promoting", "Promote", &note));
        }
        Decision::RollBack(why) => {
            status.phase = Phase::RolledBack;
            status.desired_weight = 0;
            apply_split(spec, status, 0);
            status.message = Some(why.clone());
            events.push(warning(
                "RolledBack",
                "RollBack",
                &format!("{why}; canary scaled to 0"),
            ));
        }
    }
    Ok(())
}

fn observation(version: &str, counters: Option<&Counters>) -> VersionObservation {
    let counters = counters.cloned().unwrap_or_default();
    VersionObservation {
        version: version.to_string(),
        samples: counters.requests(),
        success_rate: counters.success_rate().map(|r| (r * 1e6).round() / 1e6),
        p99_ms: counters.p99_ms().map(|p| (p * 1000.0).round() / 1000.0),
    }
}

fn step_summary(status: &EdgeCanaryStatus) -> String {
    let canary = status.canary.clone().unwrap_or_default();
    format!(
        "{} canary requests, success rate {}, p99 {} ms",
        canary.samples,
        canary
            .success_rate
            .map_or("-".into(), |r| format!("{r:.4}")),
        canary.p99_ms.map_or("-".into(), |p| format!("{p:.1}"))
    )
}

fn apply_split(spec: &EdgeCanarySpec, status: &mut EdgeCanaryStatus, weight: u32) {
    let split = split_replicas(spec.total_replicas, weight);
    status.stable_replicas = split.stable;
    status.canary_replicas = split.canary;
    status.effective_weight = split.effective_weight;
}

/// One move of the promotion per pass: (1) the canary carries all traffic with `total`
/// pods; (2) the stable Deployment takes the canary's template and `total` replicas; (3) once
/// that has rolled out, the canary goes to 0 and the rollout is Promoted.
async fn promote_step(
    deployments: &Api<Deployment>,
    spec: &EdgeCanarySpec,
    pair: &Pair,
    status: &mut EdgeCanaryStatus,
    events: &mut Vec<Event>,
) -> Result<(), Error> {
    let total = spec.total_replicas;
    // Not the canary's generation: scaling the canary changes that.
    let promoted_from = format!("{}/{}", pair.canary.name_any(), pair.canary_version);
    let stable_done =
        pair.stable.annotations().get(PROMOTED_FROM_ANNOTATION) == Some(&promoted_from);
    status.desired_weight = 100;
    status.effective_weight = 100.0;

    if !stable_done {
        ensure_replicas(deployments, &pair.canary, total).await?;
        status.canary_replicas = total;
        if !rolled_out(&pair.canary, total) {
            status.message = Some(format!(
                "promoting: waiting for {} to have {total} available pods",
                spec.canary_deployment
            ));
            return Ok(());
        }
        let template = promoted_template(&pair.stable, &pair.canary);
        let current = serde_json::to_value(&pair.stable.spec.template).unwrap_or(Value::Null);
        let wanted = serde_json::to_value(&template).unwrap_or(Value::Null);
        let patch = json!({
            "metadata": { "annotations": { PROMOTED_FROM_ANNOTATION: promoted_from } },
            "spec": { "replicas": total, "template": merge_patch(&current, &wanted) },
        });
        deployments
            .patch(
                &pair.stable.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        status.stable_replicas = total;
        status.message = Some(format!(
            "promoting: {} takes the template of {}",
            spec.stable_deployment, spec.canary_deployment
        ));
        return Ok(());
    }
    if !rolled_out(&pair.stable, total) {
        status.message = Some(format!(
            "promoting: waiting for {} to roll out {total} pods",
            spec.stable_deployment
        ));
        return Ok(());
    }
    ensure_replicas(deployments, &pair.canary, 0).await?;
    status.phase = Phase::Promoted;
    status.stable_replicas = total;
    status.canary_replicas = 0;
    status.stable_version = Some(pair.canary_version.clone());
    let note = format!(
        "{} now runs {} on {total} pods; {} scaled to 0",
        spec.stable_deployment, pair.canary_version, spec.canary_deployment
    );
    status.message = Some(note.clone());
    events.push(normal("Promoted", "Promote", &note));
    Ok(())
}

/// The canary's pod template for the stable Deployment. Selectors cannot change, so the
/// labels either selector uses keep the stable's values (and the canary's own selector labels
/// go, lest the canary Deployment adopt the stable's pods); everything else, including the
/// version annotation and label, comes from the canary.
pub fn promoted_template(stable: &Deployment, canary: &Deployment) -> PodTemplateSpec {
    let selector_keys = |d: &Deployment| -> Vec<String> {
        let selector = &d.spec.selector;
        let mut keys: Vec<String> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        keys.extend(
            selector
                .match_expressions
                .iter()
                .flatten()
                .map(|e| e.key.clone()),
        );
        keys
    };
    let stable_labels = stable
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut template = canary.spec.template.clone();
    let labels = template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    for key in selector_keys(canary)
        .into_iter()
        .chain(selector_keys(stable))
    {
        match stable_labels.get(&key) {
            Some(value) => labels.insert(key, value.clone()),
            None => labels.remove(&key),
        };
    }
    template
}

/// The JSON merge patch (RFC 7386) that turns `current` into `wanted`: changed members are
/// set, vanished ones set to null, arrays replaced whole.
pub fn merge_patch(current: &Value, wanted: &Value) -> Value {
    match (current, wanted) {
        (Value::Object(current), Value::Object(wanted)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in wanted {
                match current.get(key) {
                    Some(old) if old == value => {}
                    Some(old) => {
                        patch.insert(key.clone(), merge_patch(old, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in current.keys().filter(|k| !wanted.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => wanted.clone(),
    }
}

/// RFC 7386's application of a merge patch: for tests of [`merge_patch`] and the fake API server.
#[cfg(test)]
pub(super) fn apply_merge_patch(mut target: Value, patch: &Value) -> Value {
    let Value::Object(members) = patch else {
        return patch.clone();
    };
    if !target.is_object() {
        target = json!({});
    }
    let object = target.as_object_mut().unwrap();
    for (key, value) in members {
        if value.is_null() {
            object.remove(key);
        } else {
            let old = object.remove(key).unwrap_or(Value::Null);
            object.insert(key.clone(), apply_merge_patch(old, value));
        }
    }
    target
}

fn set_condition(
    status: &mut EdgeCanaryStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let value = if ok { "True" } else { "False" };
    let transition = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == value)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    status.conditions.retain(|c| c.type_ != type_);
    // Reasons must be CamelCase identifiers.
    let reason: String = reason
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    status.conditions.push(Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: if reason.is_empty() {
            "Unknown".into()
        } else {
            reason
        },
        message: message.chars().take(1000).collect(),
        last_transition_time: transition,
        observed_generation: generation,
    });
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

fn normal(reason: &str, action: &str, note: &str) -> Event {
    event(EventType::Normal, reason, action, note)
}

fn warning(reason: &str, action: &str, note: &str) -> Event {
    event(EventType::Warning, reason, action, note)
}

fn event(type_: EventType, reason: &str, action: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    }
}

/// Writes the status if it changed, then publishes the events (best effort: an event lost
/// to a flaky API server must not fail the pass whose status already says what happened).
async fn finish(
    ec: &EdgeCanary,
    ctx: &Context,
    previous: Option<&EdgeCanaryStatus>,
    status: EdgeCanaryStatus,
    events: Vec<Event>,
) -> Result<(), Error> {
    if previous != Some(&status) {
        let api: Api<EdgeCanary> =
            Api::namespaced(ctx.client.clone(), &ec.namespace().unwrap_or_default());
        // With the resourceVersion we read, a write based on an outdated status fails (409)
        // instead of overwriting a newer one.
        let patch = Patch::Apply(json!({
            "apiVersion": EdgeCanary::api_version(&()),
            "kind": EdgeCanary::kind(&()),
            "metadata": { "resourceVersion": ec.resource_version() },
            "status": status,
        }));
        api.patch_status(
            &ec.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &patch,
        )
        .await?;
    }
    ctx.metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let reference = ec.object_ref(&());
    for event in events {
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason = %event.reason, "could not publish event");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn deployment(
        name: &str,
        selector: &[(&str, &str)],
        pod_labels: &[(&str, &str)],
        version: &str,
        image: &str,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": name, "generation": 3 },
            "spec": {
                "replicas": 4,
                "selector": { "matchLabels": labels(selector) },
                "template": {
                    "metadata": { "labels": labels(pod_labels), "annotations": { VERSION_ANNOTATION: version, "wasmedge.io/mode": "http" } },
                    "spec": { "runtimeClassName": "wasmedge", "containers": [{ "name": "fn", "image": image }] }
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn promoted_template_keeps_the_stable_identity() {
        let stable = deployment(
            "fn-v1",
            &[("app", "fn"), ("track", "stable")],
            &[("app", "fn"), ("track", "stable"), ("version", "v1")],
            "v1",
            "fn:v1",
        );
        let mut canary = deployment(
            "fn-v2",
            &[("app", "fn"), ("track", "canary"), ("rev", "2")],
            &[
                ("app", "fn"),
                ("track", "canary"),
                ("rev", "2"),
                ("version", "v2"),
                ("tier", "edge"),
            ],
            "v2",
            "fn:v2",
        );
        canary.spec.selector = LabelSelector {
            match_labels: Some(labels(&[("app", "fn"), ("track", "canary")])),
            match_expressions: Some(vec![serde_json::from_value(
                json!({"key": "rev", "operator": "Exists"}),
            )
            .unwrap()]),
        };
        let template = promoted_template(&stable, &canary);
        let meta = template.metadata.as_ref().unwrap();
        assert_eq!(
            meta.labels.clone().unwrap(),
            labels(&[
                ("app", "fn"),
                ("track", "stable"),
                ("version", "v2"),
                ("tier", "edge")
            ])
        );
        assert_eq!(meta.annotations.as_ref().unwrap()[VERSION_ANNOTATION], "v2");
        assert_eq!(
            template.spec.unwrap().containers[0].image.as_deref(),
            Some("fn:v2")
        );
        // Both selectors: the stable still selects its pods, the canary none of them.
        let stable_selects = labels(&[("app", "fn"), ("track", "stable")])
            .iter()
            .all(|(k, v)| meta.labels.as_ref().unwrap().get(k) == Some(v));
        assert!(stable_selects);
        assert_ne!(
            meta.labels
                .as_ref()
                .unwrap()
                .get("track")
                .map(String::as_str),
            Some("canary")
        );
        assert!(!meta.labels.as_ref().unwrap().contains_key("rev"));
    }

    #[test]
    fn merge_patch_turns_one_document_into_the_other() {
        let current = json!({"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2], "d": "gone"});
        let wanted = json!({"a": 1, "b": {"x": 5, "y": 2, "z": 3}, "c": [2]});
        let patch = merge_patch(&current, &wanted);
        assert_eq!(patch, json!({"b": {"x": 5, "z": 3}, "c": [2], "d": null}));
        assert_eq!(apply_merge_patch(current, &patch), wanted);
    }

    #[test]
    fn rolled_out_needs_current_updated_available_pods() {
        let mut d = deployment("fn", &[("app", "fn")], &[("app", "fn")], "v1", "fn:v1");
        assert!(!rolled_out(&d, 4));
        let status =
            |observed: i64, replicas: i32, updated: i32, available: i32| DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ..Default::default()
            };
        d.status = Some(status(3, 4, 4, 4));
        assert!(rolled_out(&d, 4));
        assert!(!rolled_out(&d, 5), "spec asks for another count");
        d.status = Some(status(2, 4, 4, 4));
        assert!(
            !rolled_out(&d, 4),
            "controller has not seen the latest generation"
        );
        d.status = Some(status(3, 5, 4, 4));
        assert!(!rolled_out(&d, 4), "an old pod still runs");
        d.status = Some(status(3, 4, 4, 3));
        assert!(!rolled_out(&d, 4), "a pod is not available");
        d.spec.replicas = Some(0);
        d.status = Some(status(3, 0, 0, 0));
        assert!(rolled_out(&d, 0));
    }

    #[test]
    fn version_from_annotation_then_label() {
        let d = deployment(
            "fn",
            &[("app", "fn")],
            &[("app", "fn"), ("version", "label-v")],
            "annotated-v",
            "fn:v1",
        );
        assert_eq!(version_of(&d).as_deref(), Some("annotated-v"));
        let mut d = d;
        d.spec.template.metadata.as_mut().unwrap().annotations = None;
        assert_eq!(version_of(&d).as_deref(), Some("label-v"));
        d.spec.template.metadata.as_mut().unwrap().labels = None;
        assert_eq!(version_of(&d), None);
    }

    #[test]
    fn requeue_is_a_quarter_step_at_most_ten_seconds() {
        let spec = |s| EdgeCanarySpec {
            step_seconds: s,
            ..EdgeCanarySpec::with_defaults("a", "b", "c", 10)
        };
        assert_eq!(requeue_interval(&spec(300)), Duration::from_secs(10));
        assert_eq!(requeue_interval(&spec(10)), Duration::from_secs(2));
        assert_eq!(requeue_interval(&spec(1)), Duration::from_secs(1));
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut status = EdgeCanaryStatus::default();
        set_condition(&mut status, "Ready", false, "Progressing", "a", Some(1));
        let first = status.conditions[0].last_transition_time.clone();
        std::thread::sleep(Duration::from_millis(5));
        set_condition(&mut status, "Ready", false, "Progressing", "b", Some(2));
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.conditions[0].last_transition_time, first);
        assert_eq!(status.conditions[0].message, "b");
        set_condition(&mut status, "Ready", true, "Promoted", "done", Some(2));
        assert_ne!(status.conditions[0].last_transition_time, first);
    }
}
