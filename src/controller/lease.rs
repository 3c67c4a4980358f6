//! Leader election with a `coordination.k8s.io/v1` Lease, so that two controller replicas
//! never patch the same Deployments: the holder renews every few seconds with a
//! resourceVersion-guarded replace; another replica takes over only after the holder has not
//! renewed for the lease duration. A replica stops acting as leader on its own once its last
//! successful renewal is older than it may assume, even if the API server cannot be reached.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

pub const LEASE_DURATION_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long after a successful renewal this replica still acts as leader: well inside the
/// lease duration, so that it has stopped before anybody else may take over.
const ACT_FOR: Duration = Duration::from_secs(10);

/// What the Lease says, as far as the decision needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    pub renewed_at: Option<Timestamp>,
    pub duration_seconds: Option<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LeaseAction {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it.
    TakeOver,
    /// Somebody else holds it and renews: stand by.
    Follow { holder: String },
}

pub fn lease_action(record: Option<&LeaseRecord>, me: &str, now: Timestamp) -> LeaseAction {
    let Some(record) = record else {
        return LeaseAction::Create;
    };
    let holder = match record.holder.as_deref() {
        None | Some("") => return LeaseAction::TakeOver,
        Some(holder) => holder,
    };
    if holder == me {
        return LeaseAction::Renew;
    }
    let duration = SignedDuration::from_secs(
        record
            .duration_seconds
            .unwrap_or(LEASE_DURATION_SECONDS)
            .max(1) as i64,
    );
    match record.renewed_at {
        Some(renewed) if now.duration_since(renewed) < duration => LeaseAction::Follow {
            holder: holder.to_string(),
        },
        _ => LeaseAction::TakeOver,
    }
}

/// Whether this replica may act, shared between the lease loop and the reconciler.
#[derive(Clone, Default)]
pub struct Leadership {
    renewed: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    /// A replica that leads from the start (tests, `--no-leader-election`).
    pub fn always() -> Self {
        let leadership = Leadership::default();
        *leadership.renewed.lock().unwrap() =
            Some(Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        leadership
    }

    pub fn is_leader(&self) -> bool {
        self.renewed
            .lock()
            .unwrap()
            .is_some_and(|at| at.elapsed() < ACT_FOR || at > Instant::now())
    }

    fn renewed_at(&self, at: Instant) {
        *self.renewed.lock().unwrap() = Some(at);
    }

    fn step_down(&self) {
        *self.renewed.lock().unwrap() = None;
    }
}

/// Keeps trying to hold the Lease `namespace/name` as `identity`; runs until the task ends.
pub async fn hold_lease(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
    leadership: Leadership,
) {
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    let mut leading = false;
    loop {
        let attempt_started = Instant::now();
        match try_hold(&leases, name, identity).await {
            Ok(true) => {
                leadership.renewed_at(attempt_started);
                if !leading {
                    tracing::info!(lease = name, identity, "became leader");
                }
                leading = true;
            }
            Ok(false) => {
                leadership.step_down();
                if leading {
                    tracing::warn!(lease = name, identity, "lost the lease");
                }
                leading = false;
            }
            // Leadership lapses by itself after ACT_FOR without a renewal.
            Err(error) => tracing::warn!(
                lease = name,
                error = super::error_chain(&error),
                "lease renewal failed"
            ),
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// One round: true when we hold the Lease afterwards.
async fn try_hold(leases: &Api<Lease>, name: &str, identity: &str) -> Result<bool, kube::Error> {
    let current = leases.get_opt(name).await?;
    let record = current.as_ref().map(|lease| {
        let spec = lease.spec.clone().unwrap_or_default();
        LeaseRecord {
            holder: spec.holder_identity,
            renewed_at: spec.renew_time.or(spec.acquire_time).map(|t| t.0),
            duration_seconds: spec.lease_duration_seconds,
        }
    });
    let now = Timestamp::now();
    let action = lease_action(record.as_ref(), identity, now);
    let result = match (action, current) {
        (LeaseAction::Follow { .. }, _) => return Ok(false),
        (LeaseAction::Create, _) | (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity.to_string()),
                    lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        (action, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if action == LeaseAction::TakeOver {
                spec.holder_identity = Some(identity.to_string());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
            spec.renew_time = Some(MicroTime(now));
            // `lease` still carries the resourceVersion we read: a concurrent writer makes
            // this fail with 409 instead of both believing they lead.
            leases
                .replace(name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: Option<&str>, renewed_secs_ago: Option<i64>, now: Timestamp) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_string),
            renewed_at: renewed_secs_ago.map(|s| now - SignedDuration::from_secs(s)),
            duration_seconds: Some(15),
        }
    }

    #[test]
    fn takeover_table() {
        let now: Timestamp = "2026-11-26T04:00:00Z".parse().unwrap();
        let follow = |h: &str| LeaseAction::Follow {
            holder: h.to_string(),
        };
        let table = [
            ("no lease", None, LeaseAction::Create),
            (
                "ours, fresh",
                Some(record(Some("me"), Some(2), now)),
                LeaseAction::Renew,
            ),
            (
                "ours, expired: still ours to renew",
                Some(record(Some("me"), Some(60), now)),
                LeaseAction::Renew,
            ),
            (
                "other, fresh",
                Some(record(Some("other"), Some(2), now)),
                follow("other"),
            ),
            (
                "other, 14 s ago",
                Some(record(Some("other"), Some(14), now)),
                follow("other"),
            ),
            (
                "other, exactly 15 s ago",
                Some(record(Some("other"), Some(15), now)),
                LeaseAction::TakeOver,
            ),
            (
                "other, long ago",
                Some(record(Some("other"), Some(600), now)),
                LeaseAction::TakeOver,
            ),
            (
                "other, never renewed",
                Some(record(Some("other"), None, now)),
                LeaseAction::TakeOver,
            ),
            (
                "released",
                Some(record(None, Some(1), now)),
                LeaseAction::TakeOver,
            ),
            (
                "empty holder",
                Some(record(Some(""), Some(1), now)),
                LeaseAction::TakeOver,
            ),
            (
                "other, renewed in our future (clock skew)",
                Some(record(Some("other"), Some(-5), now)),
                follow("other"),
            ),
        ];
        for (name, record, expected) in table {
            assert_eq!(
                lease_action(record.as_ref(), "me", now),
                expected,
                "case: {name}"
            );
        }
    }

    #[test]
    fn a_missing_duration_means_the_default() {
        let now: Timestamp = "2026-11-26T04:00:00Z".parse().unwrap();
        let mut r = record(Some("other"), Some(10), now);
        r.duration_seconds = None;
        assert_eq!(
            lease_action(Some(&r), "me", now),
            LeaseAction::Follow {
                holder: "other".into()
            }
        );
    }

    #[test]
    fn leadership_lapses_without_renewal() {
        let leadership = Leadership::default();
        assert!(!leadership.is_leader());
        leadership.renewed_at(Instant::now());
        assert!(leadership.is_leader());
        leadership.renewed_at(Instant::now() - ACT_FOR - Duration::from_secs(1));
        assert!(!leadership.is_leader());
        leadership.step_down();
        assert!(!leadership.is_leader());
        assert!(Leadership::always().is_leader());
    }
}
