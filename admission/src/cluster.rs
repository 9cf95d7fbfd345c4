//! The webhook's view of the cluster: namespace objects (from a reflector, falling back to a GET
//! for a namespace created a moment ago), plugin modules from ConfigMaps, and Events. Offline
//! views serve unit tests and the bench without an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use phantom_crds::PhantomPolicy;
use phantom_policies::Modules;
use serde_json::Value;

/// Where the webhook reads namespaces and modules and records Events.
#[derive(Clone)]
pub struct ClusterView {
    client: Option<Client>,
    namespaces: Option<Store<Namespace>>,
    fixed: BTreeMap<String, Value>,
    recorder: Option<Recorder>,
}

impl std::fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterView")
            .field("online", &self.client.is_some())
            .field("fixed_namespaces", &self.fixed.len())
            .finish()
    }
}

impl ClusterView {
    /// A view backed by the API server: `namespaces` is the reflector's store.
    pub fn new(client: Client, namespaces: Store<Namespace>, reporter: &str) -> Self {
        Self {
            recorder: Some(Recorder::new(client.clone(), Reporter::from(reporter))),
            client: Some(client),
            namespaces: Some(namespaces),
            fixed: BTreeMap::new(),
        }
    }

    /// A view of fixed namespace objects (name → object), no API server, no Events.
    pub fn offline(namespaces: BTreeMap<String, Value>) -> Self {
        Self {
            client: None,
            namespaces: None,
            fixed: namespaces,
            recorder: None,
        }
    }

    /// The namespace object, `Ok(None)` when it does not exist.
    pub async fn namespace(&self, name: &str) -> Result<Option<Value>, String> {
        if let Some(ns) = self.fixed.get(name) {
            return Ok(Some(ns.clone()));
        }
        if let Some(ns) = self
            .namespaces
            .as_ref()
            .and_then(|s| s.get(&ObjectRef::new(name)))
        {
            return serde_json::to_value(&*ns)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        let Some(client) = &self.client else {
            return Ok(None);
        };
        Api::<Namespace>::all(client.clone())
            .get_opt(name)
            .await
            .map_err(|e| format!("reading namespace {name}: {e}"))?
            .map(|ns| serde_json::to_value(ns).map_err(|e| e.to_string()))
            .transpose()
    }

    /// The stored pod `namespace/name`, `Ok(None)` when it does not exist (always, offline).
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<Option<Value>, String> {
        let Some(client) = &self.client else {
            return Ok(None);
        };
        Api::<Pod>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("reading pod {namespace}/{name}: {e}"))?
            .map(|pod| serde_json::to_value(pod).map_err(|e| e.to_string()))
            .transpose()
    }

    /// Module bytes of every ConfigMap-sourced plugin of `policies` (none offline).
    pub async fn modules(&self, policies: &[PhantomPolicy]) -> Modules {
        match &self.client {
            Some(client) => phantom_policies::cluster::fetch_modules(client, policies).await,
            None => Modules::default(),
        }
    }

    /// Records a Warning Event about namespace `namespace`, inside it, in the background (admission never waits
    /// on it; a failure is logged).
    pub fn warn_on_namespace(&self, namespace: &str, reason: &str, note: String) {
        let Some(recorder) = self.recorder.clone() else {
            return;
        };
        let mut ns = Namespace::default();
        ns.metadata.name = Some(namespace.to_owned());
        let mut reference: ObjectReference = ns.object_ref(&());
        // Recorded inside the namespace itself: `kubectl get events -n <ns>` shows it to the
        // namespace's owners, and API servers before 1.22 refuse a regarding namespace that
        // differs from the Event's own.
        reference.namespace = Some(namespace.to_owned());
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Admit".into(),
            secondary: None,
        };
        let namespace = namespace.to_owned();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(%namespace, error = %e, "recording an Event failed");
            }
        });
    }
}
