//! Leader election on a `coordination.k8s.io/v1` Lease, as kube-controller-manager does it: the
//! holder renews every retry period; another replica takes over once `renewTime +
//! leaseDurationSeconds` has passed. Writes carry the Lease's resourceVersion, so two replicas
//! can never both win the same round. A leader that cannot renew steps down before its lease
//! runs out, so two leaders never act at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

use crate::config::LeaderSettings;
use crate::{Error, Result};

/// What a replica should do with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds a live lease.
    Follow { holder: String },
}

/// Decides from the Lease's spec (pure).
pub fn step(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Step {
    let Some(spec) = spec else {
        return Step::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    let expires = spec.renew_time.as_ref().map(|t| {
        t.0 + Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
        )
    });
    match expires {
        Some(at) if !holder.is_empty() && at > now => Step::Follow { holder },
        _ => Step::TakeOver,
    }
}

/// Campaigns for the Lease until dropped; `leading` says whether this replica leads.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    settings: LeaderSettings,
}

impl Elector {
    pub fn new(api: Api<Lease>, settings: LeaderSettings) -> Self {
        Self { api, settings }
    }

    fn held_spec(&self, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.lease_duration.as_secs().max(1)).unwrap_or(15),
            ),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: `Ok(true)` when this replica holds the lease afterwards.
    pub async fn round(&self) -> Result<bool> {
        let name = &self.settings.lease_name;
        let lease = self
            .api
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("reading Lease {name}")))?;
        let now = Timestamp::now();
        let decided = step(
            lease.as_ref().and_then(|l| l.spec.as_ref()),
            &self.settings.identity,
            now,
        );
        let conflict = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
        let written = match (decided, lease) {
            (Step::Follow { .. }, _) => return Ok(false),
            (Step::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.held_spec(now, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (step, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if step == Step::Renew {
                    spec.renew_time = Some(MicroTime(now));
                    spec.lease_duration_seconds = self.held_spec(now, 0).lease_duration_seconds;
                } else {
                    let transitions = spec.lease_transitions.unwrap_or(0) + 1;
                    *spec = self.held_spec(now, transitions);
                }
                // replace() sends the resourceVersion read above: a concurrent write wins, we
                // get 409 and simply did not win this round.
                self.api.replace(name, &PostParams::default(), &lease).await
            }
            (_, None) => return Ok(false),
        };
        match written {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(Error::Kube {
                action: format!("writing Lease {name}"),
                source: e,
            }),
        }
    }

    /// Campaigns forever, publishing leadership on `leading`. A leader that has not renewed for
    /// two thirds of the lease duration steps down (its lease may be taken over soon after).
    pub async fn run(&self, leading: watch::Sender<bool>) {
        let mut last_renewal: Option<tokio::time::Instant> = None;
        let step_down_after = self.settings.lease_duration * 2 / 3;
        loop {
            match self.round().await {
                Ok(true) => {
                    if !*leading.borrow() {
                        tracing::info!(identity = %self.settings.identity, lease = %self.settings.lease_name, "became the leader");
                    }
                    last_renewal = Some(tokio::time::Instant::now());
                    leading.send_replace(true);
                }
                Ok(false) => {
                    if *leading.borrow() {
                        tracing::warn!(identity = %self.settings.identity, "another replica holds the lease: stepping down");
                    }
                    last_renewal = None;
                    leading.send_replace(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election round failed");
                    if last_renewal.is_some_and(|at| at.elapsed() >= step_down_after) {
                        tracing::warn!(identity = %self.settings.identity, "could not renew the lease in time: stepping down");
                        last_renewal = None;
                        leading.send_replace(false);
                    }
                }
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Gives the lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&self) -> Result<()> {
        let name = &self.settings.lease_name;
        let Some(mut lease) = self
            .api
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("reading Lease {name}")))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(name, &PostParams::default(), &lease)
            .await
            .map_err(Error::kube(format!("releasing Lease {name}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_live_lease_is_followed_an_expired_one_taken_over() {
        let now = Timestamp::from_second(1000).unwrap();
        assert_eq!(step(None, "a", now), Step::Create);
        assert_eq!(step(Some(&spec("a", 990, 15)), "a", now), Step::Renew);
        assert_eq!(
            step(Some(&spec("b", 990, 15)), "a", now),
            Step::Follow { holder: "b".into() }
        );
        assert_eq!(step(Some(&spec("b", 980, 15)), "a", now), Step::TakeOver);
        assert_eq!(
            step(Some(&spec("", 999, 15)), "a", now),
            Step::TakeOver,
            "released"
        );
        assert_eq!(step(Some(&LeaseSpec::default()), "a", now), Step::TakeOver);
    }
}
