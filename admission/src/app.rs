//! Wiring: watches, store, admitter and server, started together. The binary and the
//! conformance suite both start the webhook through [`launch`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use phantom_policies::DecisionPool;
use phantom_policies::wasm::PluginHost;

use crate::Result;
use crate::config::{InjectConfig, Selection};
use crate::metrics::Metrics;
use crate::review::Admitter;
use crate::seal::ReloadingSealKey;
use crate::server::{Running, ServerOptions};
use crate::tls::ReloadingCertificate;
use crate::watch::Watches;
use phantom_policies::store::PolicyStore;

/// Everything the webhook is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerOptions,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The decision-seal key file (`decision.key` of the serving certificate's Secret).
    pub seal_key_path: PathBuf,
    /// How often the certificate files are checked for changes.
    pub cert_reload_interval: Duration,
    pub inject: InjectConfig,
    pub selection: Selection,
    /// Decisions evaluated at once (each on a blocking thread).
    pub concurrency: usize,
    /// Budget of one evaluation including queueing; beyond it the pod is refused.
    pub evaluation_timeout: Duration,
    /// Bursts of CRD changes within this window compile once.
    pub debounce: Duration,
    /// `(namespace, name)` of the ConfigMap where the controller publishes the set in force; read
    /// at start so that an object broken now is enforced at its last good version.
    pub published_set: Option<(String, String)>,
}

impl Settings {
    /// Defaults with the given serving certificate and decision-seal key.
    pub fn new(cert_path: PathBuf, key_path: PathBuf, seal_key_path: PathBuf) -> Self {
        Self {
            server: ServerOptions::default(),
            cert_path,
            key_path,
            seal_key_path,
            cert_reload_interval: Duration::from_secs(5),
            inject: InjectConfig::default(),
            selection: Selection::default(),
            concurrency: 8,
            evaluation_timeout: Duration::from_secs(2),
            debounce: Duration::from_millis(100),
            published_set: None,
        }
    }
}

/// A started webhook.
#[derive(Debug)]
pub struct Launched {
    pub server: Running,
    pub admitter: Arc<Admitter>,
    _watches: Watches,
    _cert_watch: tokio::task::JoinHandle<()>,
    _seal_key_watch: tokio::task::JoinHandle<()>,
}

impl Launched {
    /// Graceful shutdown: stop accepting, finish in-flight reviews, stop the watches.
    pub async fn shutdown(self) {
        self._cert_watch.abort();
        self._seal_key_watch.abort();
        self.server.shutdown().await;
    }
}

/// Starts watches, the policy store and both listeners.
pub async fn launch(client: Client, settings: Settings) -> Result<Launched> {
    let certificate = ReloadingCertificate::load(&settings.cert_path, &settings.key_path)?;
    let seal_key = ReloadingSealKey::load(&settings.seal_key_path)?;
    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(PolicyStore::new(PluginHost::new()?));
    if let Some((namespace, name)) = &settings.published_set {
        match phantom_policies::cluster::read_published(&client, namespace, name).await {
            Ok(Some(sources)) => {
                tracing::info!(configmap = %format!("{namespace}/{name}"), policies = sources.policies.len(), "remembering the published policy set's versions");
                store.remember(&sources);
            }
            Ok(None) => {
                tracing::info!(configmap = %format!("{namespace}/{name}"), "no published policy set yet (no controller has run)")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the published policy set is unreadable; starting from the current objects only")
            }
        }
    }
    let watches = crate::watch::start(client, store.clone(), metrics.clone(), settings.debounce);
    let admitter = Arc::new(Admitter {
        store,
        cluster: watches.cluster.clone(),
        pool: DecisionPool::new(settings.concurrency, settings.evaluation_timeout),
        inject: settings.inject,
        selection: settings.selection,
        metrics: metrics.clone(),
        evaluation_timeout: settings.evaluation_timeout,
        seal_key: seal_key.clone(),
    });
    let cert_watch = certificate
        .clone()
        .watch(settings.cert_reload_interval, metrics.clone());
    let seal_key_watch = seal_key.watch(settings.cert_reload_interval, metrics);
    let server = crate::server::start(admitter.clone(), certificate, settings.server).await?;
    Ok(Launched {
        server,
        admitter,
        _watches: watches,
        _cert_watch: cert_watch,
        _seal_key_watch: seal_key_watch,
    })
}
