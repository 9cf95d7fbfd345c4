//! Keeps the [`PolicyStore`] in step with the cluster: reflectors on the three CRDs (and on
//! namespaces, for their labels), a debounced recompilation on every change, published only once
//! every watch delivered its initial list, so a half-loaded set never decides.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use phantom_policies::cluster::{keep_compiled, reflect};
use phantom_policies::store::PolicyStore;
use tokio::sync::Notify;

use crate::cluster::ClusterView;
use crate::metrics::Metrics;

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

/// Starts the watches and the recompilation loop; `debounce` groups bursts of changes.
pub fn start(
    client: Client,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    debounce: Duration,
) -> Watches {
    let (namespaces, namespace_task) = reflect(
        Api::<Namespace>::all(client.clone()),
        Arc::new(Notify::new()),
        Arc::default(),
    );
    let cluster = ClusterView::new(client.clone(), namespaces, "phantom-admission");
    let compile = tokio::spawn(keep_compiled(client, store, debounce, move |snapshot| {
        metrics.policy_generation.set(snapshot.generation as i64);
        metrics.policy_errors.set(snapshot.errors.len() as i64);
        metrics
            .policies_held_back
            .set(snapshot.held_back.len() as i64);
    }));
    Watches {
        cluster,
        tasks: vec![namespace_task, compile],
    }
}
