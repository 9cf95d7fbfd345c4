//! Pods admitted without Phantom: in a namespace the injector covers, yet without a decision
//! record that admission wrote. They were created while the circuit breaker was open, while the
//! webhook configuration was missing, or before Phantom was installed; they run without their
//! secrets' sidecar and without the policies' verdict. Found by [`scan`], reported with an Event
//! and a metric (and by `phantomctl status`), optionally evicted so their owner re-creates them
//! through the webhook.
//!
//! A record counts only when its seal (`phantom-seal`) verifies under the controller's key, was
//! made within two minutes of the pod's creation, and no other live pod carries the same seal: a
//! pod creator can write or copy the annotations onto a pod the webhook never saw, not the seal.
//! After an upgrade from a release without seals, pods created up to [`UNSEALED_GRACE_SECONDS`]
//! after the key was made may keep an unsealed record (admission rolls out meanwhile); on a fresh
//! installation seals are required at once.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
#[cfg(feature = "server")]
use kube::{
    Resource,
    api::EvictParams,
    runtime::events::{Event, EventType, Recorder},
};
use phantom_crds::wellknown::{DECISION_ANNOTATION, OVERRIDE_BYPASS, OVERRIDE_LABEL};
use phantom_seal::{Broken, Key};
use serde::Serialize;

use crate::config::WebhookSettings;
#[cfg(feature = "server")]
use crate::metrics::Metrics;
use crate::{Error, Result};

/// A pod admitted without Phantom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `Kind/name` of the controlling owner (a ReplicaSet, …), which re-creates it when evicted.
    pub owner: Option<String>,
    /// RFC 3339 creation time.
    pub created: Option<String>,
    /// Why its decision record does not count.
    pub reason: GapReason,
}

/// Why a pod counts as admitted without Phantom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GapReason {
    /// No decision record: the webhook was not called.
    Unrecorded,
    /// A decision record without a seal, on a pod created after seals began.
    Unsealed,
    /// A seal that does not verify: the record (or the pod's names, ServiceAccount) was written
    /// or changed by someone other than admission.
    ForgedSeal,
    /// A seal made far from the pod's creation: taken from another pod's admission.
    UntimelySeal,
    /// A seal another live, older pod carries: copied from it.
    CopiedSeal,
}

impl GapReason {
    /// What the reason means, for Events and `phantomctl status`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unrecorded => {
                "admitted without Phantom's webhook (circuit breaker open or webhook configuration missing)"
            }
            Self::Unsealed => {
                "its Phantom decision record carries no seal, so admission did not write it (the webhook was not called)"
            }
            Self::ForgedSeal => {
                "its Phantom decision record's seal does not verify: the record was written or changed by someone other than admission (the webhook was not called)"
            }
            Self::UntimelySeal => {
                "its Phantom decision record's seal was made more than two minutes from the pod's creation: it was taken from another pod (the webhook was not called)"
            }
            Self::CopiedSeal => {
                "its Phantom decision record's seal is also on an older live pod: it was copied from it (the webhook was not called)"
            }
        }
    }
}

/// When a seal key is made for an installation that ran without seals, how long pods with an
/// unsealed record are still accepted: they were admitted by a replica of the previous release
/// while admission rolled out. A fresh installation requires seals at once.
pub const UNSEALED_GRACE_SECONDS: i64 = 15 * 60;

/// The decision-seal key in the serving Secret (entry `decision.key`): `None` when it has none,
/// an error when it is damaged.
pub fn stored_key(serving: &Secret, what: &str) -> Option<Result<Key>> {
    let bytes = serving.data.as_ref()?.get(DECISION_KEY)?;
    let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&bytes.0).into_owned());
    Some(Key::decode(&text, what).map_err(Error::from))
}

/// The serving Secret's entry (and the file beside `tls.key`) holding the decision-seal key.
pub const DECISION_KEY: &str = "decision.key";

/// Whether the injector's configuration covers `namespace`.
pub fn covers(namespace: &Namespace, settings: &WebhookSettings) -> bool {
    let labels = namespace.labels();
    let (key, value) = &settings.selection.enable_label;
    labels.get(key) == Some(value)
        && labels.get(OVERRIDE_LABEL).map(String::as_str) != Some(OVERRIDE_BYPASS)
        && !settings
            .excluded_namespaces
            .iter()
            .any(|n| Some(n.as_str()) == namespace.metadata.name.as_deref())
}

/// Why `pod`'s decision record does not count, before looking for copies; `Ok(seal)` when it
/// counts (the seal's value, when there is one). Without a key only the record's presence counts.
fn judge(pod: &Pod, key: Option<&Key>) -> Result<Option<String>, GapReason> {
    if !pod.annotations().contains_key(DECISION_ANNOTATION) {
        return Err(GapReason::Unrecorded);
    }
    let Some(key) = key else { return Ok(None) };
    match phantom_seal::check(key, pod) {
        Ok(sealed) => Ok(Some(sealed.value)),
        Err(Broken::Unsealed) => {
            let created = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(i64::MAX, |t| t.0.as_second());
            if created < key.sealed_from() {
                Ok(None)
            } else {
                Err(GapReason::Unsealed)
            }
        }
        Err(Broken::Malformed | Broken::Mismatch) => Err(GapReason::ForgedSeal),
        Err(Broken::Untimely { .. }) => Err(GapReason::UntimelySeal),
    }
}

/// The gap pods among `pods` (pure), checking seals with `key` when given.
pub fn find(
    namespaces: &[Namespace],
    pods: &[Pod],
    settings: &WebhookSettings,
    key: Option<&Key>,
) -> Vec<GapPod> {
    let covered: BTreeSet<&str> = namespaces
        .iter()
        .filter(|ns| covers(ns, settings))
        .filter_map(|ns| ns.metadata.name.as_deref())
        .collect();
    let candidates: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.namespace()
                .is_some_and(|ns| covered.contains(ns.as_str()))
        })
        // Mirror pods of static manifests never pass admission webhooks.
        .filter(|p| !p.annotations().contains_key("kubernetes.io/config.mirror"))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let judged: Vec<(&Pod, Result<Option<String>, GapReason>)> =
        candidates.iter().map(|p| (*p, judge(p, key))).collect();
    // The oldest pod carrying a seal keeps it; every younger one copied it.
    let creation = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let mut first_holder: BTreeMap<&str, &Pod> = BTreeMap::new();
    for (pod, verdict) in &judged {
        if let Ok(Some(seal)) = verdict {
            first_holder
                .entry(seal.as_str())
                .and_modify(|held| {
                    if creation(pod) < creation(held) {
                        *held = pod;
                    }
                })
                .or_insert(pod);
        }
    }
    judged
        .iter()
        .filter_map(|(pod, verdict)| {
            let reason = match verdict {
                Err(reason) => *reason,
                Ok(Some(seal)) if !std::ptr::eq(first_holder[seal.as_str()], *pod) => {
                    GapReason::CopiedSeal
                }
                Ok(_) => return None,
            };
            Some(gap_pod(pod, reason))
        })
        .collect()
}

fn gap_pod(p: &Pod, reason: GapReason) -> GapPod {
    GapPod {
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
        uid: p.uid().unwrap_or_default(),
        owner: p
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind, o.name)),
        created: p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        reason,
    }
}

/// Lists the covered namespaces and their pods and returns the gap pods, checking seals with
/// `key` when given.
pub async fn scan(
    client: &Client,
    settings: &WebhookSettings,
    seal_key: Option<&Key>,
) -> Result<Vec<GapPod>> {
    let (label, value) = &settings.selection.enable_label;
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{label}={value}")))
        .await
        .map_err(Error::kube(format!(
            "listing namespaces labelled {label}={value}"
        )))?
        .items;
    let mut pods = Vec::new();
    for ns in namespaces.iter().filter(|ns| covers(ns, settings)) {
        let name = ns.name_any();
        pods.extend(
            Api::<Pod>::namespaced(client.clone(), &name)
                .list(&ListParams::default())
                .await
                .map_err(Error::kube(format!("listing pods in {name}")))?
                .items,
        );
    }
    Ok(find(&namespaces, &pods, settings, seal_key))
}

/// Reports each gap pod once (Event on the pod), keeps the gauge current, evicts when asked.
#[cfg(feature = "server")]
#[derive(Debug, Default)]
pub struct Reporter {
    reported: BTreeSet<String>,
}

#[cfg(feature = "server")]
impl Reporter {
    /// Scans and reports; returns the gap pods found.
    pub async fn run_once(
        &mut self,
        client: &Client,
        settings: &WebhookSettings,
        recorder: &Recorder,
        metrics: &Metrics,
        key: &Key,
        evict: bool,
    ) -> Result<Vec<GapPod>> {
        let gaps = scan(client, settings, Some(key)).await?;
        metrics
            .gap_pods
            .set(i64::try_from(gaps.len()).unwrap_or(i64::MAX));
        self.reported
            .retain(|uid| gaps.iter().any(|g| &g.uid == uid));
        for gap in &gaps {
            if !self.reported.insert(gap.uid.clone()) {
                continue;
            }
            tracing::warn!(namespace = %gap.namespace, pod = %gap.name, owner = ?gap.owner, reason = ?gap.reason, "pod admitted without Phantom: {}", gap.reason.describe());
            let mut pod = Pod::default();
            pod.metadata.name = Some(gap.name.clone());
            pod.metadata.namespace = Some(gap.namespace.clone());
            pod.metadata.uid = Some(gap.uid.clone());
            let note = if evict && gap.owner.is_some() {
                format!(
                    "{}; evicting it so its owner re-creates it through the webhook",
                    gap.reason.describe()
                )
            } else {
                format!(
                    "{}: Phantom's policies never judged it; delete it so that its owner re-creates it through the webhook",
                    gap.reason.describe()
                )
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "AdmittedWithoutPhantom".into(),
                note: Some(note),
                action: "Audit".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &pod.object_ref(&())).await {
                tracing::warn!(namespace = %gap.namespace, pod = %gap.name, error = %e, "recording an Event failed");
            }
            if evict && gap.owner.is_some() {
                match Api::<Pod>::namespaced(client.clone(), &gap.namespace)
                    .evict(&gap.name, &EvictParams::default())
                    .await
                {
                    Ok(_) => {
                        metrics.gap_pods_evicted.inc();
                    }
                    Err(e) => {
                        tracing::warn!(namespace = %gap.namespace, pod = %gap.name, error = %e, "evicting a gap pod failed (a PodDisruptionBudget may forbid it now); retrying at the next scan");
                        self.reported.remove(&gap.uid);
                    }
                };
            }
        }
        Ok(gaps)
    }
}

#[cfg(test)]
mod tests;
