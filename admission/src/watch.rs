//! Keeps the [`PolicyStore`] in step with the cluster: reflectors on the three CRDs (and on
//! namespaces, for their labels), a debounced recompilation on every change, published only once
//! every watch delivered its initial list, so a half-loaded set never decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use phantom_crds::{AttestationRequirement, PhantomPolicy, SecretBinding};
use phantom_policies::Sources;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::cluster::ClusterView;
use crate::metrics::Metrics;
use crate::store::PolicyStore;

/// The running watches.
#[derive(Debug)]
pub struct Watches {
    /// The cluster view backed by the namespace reflector, for the [`Admitter`](crate::review::Admitter).
    pub cluster: ClusterView,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn reflect<K>(
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
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff();
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

/// Starts the watches and the recompilation loop; `debounce` groups bursts of changes.
pub fn start(
    client: Client,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    debounce: Duration,
) -> Watches {
    let changed = Arc::new(Notify::new());
    let flags: [Arc<AtomicBool>; 4] = Default::default();
    let (policies, t1) = reflect(
        Api::<PhantomPolicy>::all(client.clone()),
        changed.clone(),
        flags[0].clone(),
    );
    let (bindings, t2) = reflect(
        Api::<SecretBinding>::all(client.clone()),
        changed.clone(),
        flags[1].clone(),
    );
    let (requirements, t3) = reflect(
        Api::<AttestationRequirement>::all(client.clone()),
        changed.clone(),
        flags[2].clone(),
    );
    let (namespaces, t4) = reflect(
        Api::<Namespace>::all(client.clone()),
        Arc::new(Notify::new()),
        flags[3].clone(),
    );
    let cluster = ClusterView::new(client, namespaces, "phantom-admission");

    let compile = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            loop {
                changed.notified().await;
                tokio::time::sleep(debounce).await;
                if !flags[..3].iter().all(|f| f.load(Ordering::SeqCst)) {
                    continue;
                }
                let sources = Sources {
                    policies: policies.state().iter().map(|p| (**p).clone()).collect(),
                    bindings: bindings.state().iter().map(|b| (**b).clone()).collect(),
                    requirements: requirements.state().iter().map(|r| (**r).clone()).collect(),
                };
                let modules = cluster.modules(&sources.policies).await;
                let store = store.clone();
                let snapshot = match tokio::task::spawn_blocking(move || {
                    store.update(&sources, &modules, true)
                })
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "policy compilation panicked; the previous set stays in force");
                        continue;
                    }
                };
                metrics.policy_generation.set(snapshot.generation as i64);
                metrics.policy_errors.set(snapshot.errors.len() as i64);
                metrics
                    .policies_held_back
                    .set(snapshot.held_back.len() as i64);
                for e in &snapshot.errors {
                    tracing::warn!(kind = e.kind, name = %e.name, errors = %e.to_string().trim_end(), "object does not compile");
                }
                tracing::info!(
                    digest = %snapshot.set.digest(), generation = snapshot.generation,
                    policies = snapshot.set.policy_names().len(), held_back = ?snapshot.held_back,
                    "policy set published"
                );
            }
        })
    };
    Watches {
        cluster,
        tasks: vec![t1, t2, t3, t4, compile],
    }
}
