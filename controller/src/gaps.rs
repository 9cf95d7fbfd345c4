//! Pods admitted without Phantom: in a namespace the injector covers, yet without the decision
//! annotation admission writes on every pod it sees. They were created while the circuit breaker
//! was open, while the webhook configuration was missing, or before Phantom was installed; they
//! run without their secrets' sidecar. Found by [`scan`], reported with an Event and a metric (and
//! by `phantomctl status`), optionally evicted so their owner re-creates them through the webhook.

use std::collections::BTreeSet;

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
}

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

/// The gap pods among `pods` (pure).
pub fn find(namespaces: &[Namespace], pods: &[Pod], settings: &WebhookSettings) -> Vec<GapPod> {
    let covered: BTreeSet<&str> = namespaces
        .iter()
        .filter(|ns| covers(ns, settings))
        .filter_map(|ns| ns.metadata.name.as_deref())
        .collect();
    pods.iter()
        .filter(|p| {
            p.namespace()
                .is_some_and(|ns| covered.contains(ns.as_str()))
        })
        .filter(|p| !p.annotations().contains_key(DECISION_ANNOTATION))
        // Mirror pods of static manifests never pass admission webhooks.
        .filter(|p| !p.annotations().contains_key("kubernetes.io/config.mirror"))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| GapPod {
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
        })
        .collect()
}

/// Lists the covered namespaces and their pods and returns the gap pods.
pub async fn scan(client: &Client, settings: &WebhookSettings) -> Result<Vec<GapPod>> {
    let (key, value) = &settings.selection.enable_label;
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{key}={value}")))
        .await
        .map_err(Error::kube(format!(
            "listing namespaces labelled {key}={value}"
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
    Ok(find(&namespaces, &pods, settings))
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
        evict: bool,
    ) -> Result<Vec<GapPod>> {
        let gaps = scan(client, settings).await?;
        metrics
            .gap_pods
            .set(i64::try_from(gaps.len()).unwrap_or(i64::MAX));
        self.reported
            .retain(|uid| gaps.iter().any(|g| &g.uid == uid));
        for gap in &gaps {
            if !self.reported.insert(gap.uid.clone()) {
                continue;
            }
            tracing::warn!(namespace = %gap.namespace, pod = %gap.name, owner = ?gap.owner, "pod admitted without Phantom (webhook not called): it has no Phantom sidecar");
            let mut pod = Pod::default();
            pod.metadata.name = Some(gap.name.clone());
            pod.metadata.namespace = Some(gap.namespace.clone());
            pod.metadata.uid = Some(gap.uid.clone());
            let note = if evict && gap.owner.is_some() {
                "admitted without Phantom's webhook (circuit breaker open or webhook configuration missing); evicting it so its owner re-creates it with its secrets"
            } else {
                "admitted without Phantom's webhook (circuit breaker open or webhook configuration missing): it has no Phantom sidecar; delete it so that its owner re-creates it through the webhook"
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "AdmittedWithoutPhantom".into(),
                note: Some(note.into()),
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
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::AdmissionEndpoint;

    fn ns(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn pod(namespace: &str, name: &str, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {
            "name": name, "namespace": namespace, "uid": format!("uid-{name}"),
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u", "controller": true}]
        }}))
        .unwrap()
    }

    #[test]
    fn only_unannotated_pods_of_covered_namespaces_are_gaps() {
        let settings = WebhookSettings::new(AdmissionEndpoint::Url("https://127.0.0.1:1".into()));
        let namespaces = [
            ns("shop", json!({"phantom.dev/inject": "enabled"})),
            ns("plain", json!({})),
            ns("out", json!({"phantom.dev/inject": "disabled"})),
            ns(
                "glass",
                json!({"phantom.dev/inject": "enabled", "phantom.dev/override": "bypass"}),
            ),
            ns("kube-system", json!({"phantom.dev/inject": "enabled"})),
        ];
        let decided = json!({DECISION_ANNOTATION: "{\"outcome\":\"injected\"}"});
        let pods = [
            pod("shop", "seen", decided.clone()),
            pod("shop", "missed", json!({})),
            pod(
                "shop",
                "static",
                json!({"kubernetes.io/config.mirror": "x"}),
            ),
            pod("plain", "a", json!({})),
            pod("out", "b", json!({})),
            pod("glass", "c", json!({})),
            pod("kube-system", "d", json!({})),
        ];
        let gaps = find(&namespaces, &pods, &settings);
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].name, "missed");
        assert_eq!(gaps[0].owner.as_deref(), Some("ReplicaSet/web-1"));
    }
}
