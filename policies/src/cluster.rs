//! The policy sources as the API server holds them (feature `cluster`): reflectors on the three
//! CRDs and plugin modules read from ConfigMaps. The admission webhook and the controller compile
//! what these deliver into their own [`PolicyStore`], so the status the
//! controller writes describes exactly what every webhook replica enforces.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use phantom_crds::{AttestationRequirement, PhantomPolicy, SecretBinding};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::store::{PolicyStore, Snapshot};
use crate::{Modules, ObjectErrors, Sources};
use phantom_crds::CompileError;

/// A reflector whose task logs (never ends on) watch errors; a missing CRD gets an install hint.
/// `changed` is notified on every change after the initial list, and once when that list is
/// complete (`synced` then turns true).
pub fn reflect<K>(
    api: Api<K>,
    changed: Arc<Notify>,
    synced: Arc<AtomicBool>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflect_selected(api, watcher::Config::default(), changed, synced)
}

/// [`reflect`] over the objects `config` selects (a field selector: the pods of one node).
pub fn reflect_selected<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    synced: Arc<AtomicBool>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflect_with(api, (), config, changed, synced)
}

fn reflect_with<K>(
    api: Api<K>,
    dynamic_type: K::DynamicType,
    config: watcher::Config,
    changed: Arc<Notify>,
    synced: Arc<AtomicBool>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    let kind = K::kind(&dynamic_type).to_string();
    let writer = reflector::store::Writer::new(dynamic_type);
    let reader = writer.as_reader();
    let stream = reflector::reflector(writer, watcher::watcher(api, config)).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::InitDone) => {
                    synced.store(true, Ordering::SeqCst);
                    changed.notify_one();
                }
                Ok(Event::Init | Event::InitApply(_)) => {}
                Ok(Event::Apply(_) | Event::Delete(_)) => changed.notify_one(),
                Err(e) => {
                    let text = e.to_string();
                    if text.contains("404") || text.contains("NotFound") {
                        tracing::error!(%kind, error = %text, "the API server does not know this resource: install Phantom's CRDs (kubectl apply -f crds/yaml/ or the chart); retrying with backoff");
                    } else {
                        tracing::warn!(%kind, error = %text, "watch failed; retrying with backoff");
                    }
                }
            }
        }
    });
    (reader, task)
}

/// A reflector on `K`'s objects kept untyped: one object that does not read as `K` must not
/// fail the whole list (and with it every replica's start). `typed` reads them.
fn reflect_untyped<K>(
    client: &Client,
    changed: Arc<Notify>,
    synced: Arc<AtomicBool>,
) -> (Store<DynamicObject>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    reflect_with(api, resource, watcher::Config::default(), changed, synced)
}

/// The objects of `store` that read as `K`; each one that does not goes to `unreadable`.
fn typed<K: DeserializeOwned>(
    store: &Store<DynamicObject>,
    kind: &'static str,
    unreadable: &mut Vec<ObjectErrors>,
) -> Vec<K> {
    let mut objects = Vec::new();
    for object in store.state() {
        match read_as::<K>(&object, kind) {
            Ok(typed) => objects.push(typed),
            // Logged with the compile errors of the pass that reads it (`keep_compiled`).
            Err(errors) => unreadable.push(errors),
        }
    }
    objects
}

/// Reads an untyped object as `K` (a `kind`); one that does not read becomes the
/// [`ObjectErrors`] naming the field and what to do.
pub fn read_as<K: DeserializeOwned>(
    object: &DynamicObject,
    kind: &'static str,
) -> Result<K, ObjectErrors> {
    let id = match &object.metadata.namespace {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    };
    let value = serde_json::to_value(object)
        .map_err(|e| unreadable_object(kind, id.clone(), String::new(), e.to_string()))?;
    serde_path_to_error::deserialize::<_, K>(value.clone()).map_err(|e| {
        let field = e.path().to_string();
        // The value itself, short: objects of these kinds hold names and paths, never secrets.
        let found = found_at(&value, e.path())
            .map(|v| {
                let mut text = v.to_string();
                text.truncate(64);
                format!(" (found {text})")
            })
            .unwrap_or_default();
        unreadable_object(kind, id, field, format!("{}{found}", e.into_inner()))
    })
}

fn found_at<'a>(
    value: &'a serde_json::Value,
    path: &serde_path_to_error::Path,
) -> Option<&'a serde_json::Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(value, |v, segment| match segment {
        Segment::Seq { index } => v.get(index),
        Segment::Map { key } => v.get(key),
        Segment::Enum { .. } | Segment::Unknown => Some(v),
    })
}

fn unreadable_object(
    kind: &'static str,
    name: String,
    field: String,
    error: String,
) -> ObjectErrors {
    let field = if field.is_empty() || field == "." {
        "(object)".to_owned()
    } else {
        field
    };
    ObjectErrors {
        kind,
        name,
        errors: vec![CompileError {
            message: format!(
                "the object passed the API server's schema but is not a valid {kind} ({error}); Phantom skips it and keeps its last good version in force. Fix {field} (kubectl edit) or delete the object",
            ),
            field,
            position: None,
        }],
    }
}

/// Reflectors on PhantomPolicies, SecretBindings and AttestationRequirements.
#[derive(Debug)]
pub struct SourceWatch {
    policies: Store<DynamicObject>,
    bindings: Store<DynamicObject>,
    requirements: Store<DynamicObject>,
    synced: [Arc<AtomicBool>; 3],
    /// Notified on every change (and when the initial lists are in).
    pub changed: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SourceWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SourceWatch {
    /// Starts the three reflectors.
    pub fn start(client: &Client) -> Self {
        let changed = Arc::new(Notify::new());
        let synced: [Arc<AtomicBool>; 3] = Default::default();
        let (policies, t1) =
            reflect_untyped::<PhantomPolicy>(client, changed.clone(), synced[0].clone());
        let (bindings, t2) =
            reflect_untyped::<SecretBinding>(client, changed.clone(), synced[1].clone());
        let (requirements, t3) =
            reflect_untyped::<AttestationRequirement>(client, changed.clone(), synced[2].clone());
        Self {
            policies,
            bindings,
            requirements,
            synced,
            changed,
            tasks: vec![t1, t2, t3],
        }
    }

    /// The current objects, or `None` until every reflector delivered its initial list (a
    /// half-loaded set must never decide or be reported). Objects that do not read as their type
    /// are in [`Sources::unreadable`].
    pub fn sources(&self) -> Option<Sources> {
        if !self.synced.iter().all(|f| f.load(Ordering::SeqCst)) {
            return None;
        }
        let mut unreadable = Vec::new();
        Some(Sources {
            policies: typed(&self.policies, "PhantomPolicy", &mut unreadable),
            bindings: typed(&self.bindings, "SecretBinding", &mut unreadable),
            requirements: typed(
                &self.requirements,
                "AttestationRequirement",
                &mut unreadable,
            ),
            unreadable,
        })
    }
}

/// Module bytes of every ConfigMap-sourced plugin of `policies`. Missing ConfigMaps or keys are
/// left out: compilation then reports them against the plugin that needs them.
pub async fn fetch_modules(client: &Client, policies: &[PhantomPolicy]) -> Modules {
    let mut modules = Modules::default();
    let refs = policies
        .iter()
        .flat_map(|p| &p.spec.rules.plugins)
        .filter_map(|plugin| plugin.module.config_map.as_ref());
    let mut fetched: BTreeMap<(String, String), Option<ConfigMap>> = BTreeMap::new();
    for r in refs {
        let id = (r.namespace.clone(), r.name.clone());
        if !fetched.contains_key(&id) {
            let cm = Api::<ConfigMap>::namespaced(client.clone(), &r.namespace)
                .get_opt(&r.name)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(configmap = %format!("{}/{}", r.namespace, r.name), error = %e, "reading a plugin module failed");
                    None
                });
            fetched.insert(id.clone(), cm);
        }
        if let Some(bytes) = fetched[&id]
            .as_ref()
            .and_then(|cm| cm.binary_data.as_ref())
            .and_then(|d| d.get(&r.key))
        {
            modules.config_maps.insert(
                format!("{}/{}/{}", r.namespace, r.name, r.key),
                bytes.0.clone(),
            );
        }
    }
    modules
}

/// Keeps `store` compiled from the cluster until the task is dropped: after every change (bursts
/// grouped by `debounce`) and once the initial lists are complete, compiles the current objects
/// with their plugin modules and publishes the result; `published` sees each snapshot.
pub async fn keep_compiled(
    client: Client,
    store: Arc<PolicyStore>,
    debounce: std::time::Duration,
    mut published: impl FnMut(&Snapshot) + Send,
) {
    let watch = SourceWatch::start(&client);
    let mut compiled: Option<String> = None;
    loop {
        watch.changed.notified().await;
        tokio::time::sleep(debounce).await;
        let Some(sources) = watch.sources() else {
            continue;
        };
        // Status writes (the controller's own) change no spec: nothing to recompile.
        let digest = sources.digest();
        if compiled.as_deref() == Some(digest.as_str()) {
            continue;
        }
        compiled = Some(digest);
        let modules = fetch_modules(&client, &sources.policies).await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.update(&sources, &modules, true)).await {
            Ok(snapshot) => {
                for e in &snapshot.errors {
                    tracing::warn!(kind = e.kind, name = %e.name, errors = %e.to_string().trim_end(), "object does not compile");
                }
                tracing::info!(
                    digest = %snapshot.set.digest(), generation = snapshot.generation,
                    policies = snapshot.set.policy_names().len(), held_back = ?snapshot.held_back,
                    "policy set published"
                );
                published(&snapshot);
            }
            Err(e) => {
                tracing::error!(error = %e, "policy compilation panicked; the previous set stays in force");
            }
        }
    }
}

/// Key of the published set in its ConfigMap.
pub const PUBLISHED_KEY: &str = "sources.json";

fn bare<K: Resource + serde::Serialize + Clone>(obj: &K) -> serde_json::Value {
    let mut value = serde_json::to_value(obj).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.retain(|k, _| {
                matches!(k.as_str(), "name" | "namespace" | "generation" | "labels")
            });
        }
    }
    value
}

/// The ConfigMap body publishing the objects a snapshot enforces (their specs only), so that a
/// replica starting later remembers the last good version of an object that is broken now.
pub fn published_config_map(namespace: &str, name: &str, snapshot: &Snapshot) -> serde_json::Value {
    let sources = &snapshot.sources;
    let body = serde_json::json!({
        "digest": snapshot.set.digest(),
        "policies": sources.policies.iter().map(bare).collect::<Vec<_>>(),
        "bindings": sources.bindings.iter().map(bare).collect::<Vec<_>>(),
        "requirements": sources.requirements.iter().map(bare).collect::<Vec<_>>(),
    });
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {phantom_crds::wellknown::POLICY_DIGEST_ANNOTATION: snapshot.set.digest()}},
        "data": {PUBLISHED_KEY: body.to_string()},
    })
}

/// Reads a published set: `Ok(None)` when the ConfigMap does not exist yet.
pub async fn read_published(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Sources>, String> {
    let Some(cm) = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading ConfigMap {namespace}/{name}: {e}"))?
    else {
        return Ok(None);
    };
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(PUBLISHED_KEY))
        .ok_or_else(|| format!("ConfigMap {namespace}/{name} has no key {PUBLISHED_KEY}"))?;
    #[derive(serde::Deserialize)]
    struct Published {
        policies: Vec<PhantomPolicy>,
        bindings: Vec<SecretBinding>,
        requirements: Vec<AttestationRequirement>,
    }
    let p: Published = serde_json::from_str(text).map_err(|e| {
        format!(
            "ConfigMap {namespace}/{name} key {PUBLISHED_KEY} is not a published policy set: {e}"
        )
    })?;
    Ok(Some(Sources {
        policies: p.policies,
        bindings: p.bindings,
        requirements: p.requirements,
        unreadable: Vec::new(),
    }))
}
