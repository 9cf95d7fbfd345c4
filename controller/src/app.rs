//! Wires the controller together: metrics port, CRD check, leader election, and — while this
//! replica leads — the policy compiler, the status controllers, the webhook manager, the circuit
//! breaker's probe and the gap scanner. Losing the lease stops all of them at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::ListParams;
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::{Api, Client};
use phantom_crds::PhantomPolicy;
use phantom_policies::store::PolicyStore;
use phantom_policies::wasm::PluginHost;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::breaker::{self, Breaker, State};
use crate::config::Settings;
use crate::leader::Elector;
use crate::manager::{self, Manager, Published};
use crate::metrics::{self, Metrics, StateLabels};
use crate::reconcile::{self, Context};
use crate::{Error, Result, gaps};

/// A running controller replica.
#[derive(Debug)]
pub struct Running {
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    /// Whether this replica leads.
    pub leading: watch::Receiver<bool>,
    /// The circuit breaker's state (while leading).
    pub breaker: watch::Receiver<State>,
    /// The policy set this replica compiled (while leading).
    pub store: Arc<PolicyStore>,
    elector: Arc<Elector>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops every task and gives the lease up so another replica takes over at once.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if let Err(e) = self.elector.release().await {
            tracing::warn!(error = %e, "releasing the lease failed; another replica takes over when it expires");
        }
    }

    /// Stops every task without releasing the lease, as a crash would.
    pub async fn kill(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Checks that the API server serves Phantom's CRDs; logs an install hint until it does.
async fn wait_for_crds(client: Client, ready: Arc<AtomicBool>) {
    let api = Api::<PhantomPolicy>::all(client);
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => {
                ready.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) if Error::is_not_found(&e) => {
                tracing::error!(
                    "{}",
                    Error::MissingCrd {
                        resource: "phantompolicies.phantom.dev".into()
                    }
                );
            }
            Err(e) => tracing::warn!(error = %e, "checking for Phantom's CRDs failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Starts a replica.
pub async fn launch(client: Client, settings: Settings) -> Result<Running> {
    if !(1..=30).contains(&settings.webhooks.timeout_seconds) {
        return Err(Error::Config(format!(
            "the webhook timeout must be 1–30 seconds (the API server's limit), got {}",
            settings.webhooks.timeout_seconds
        )));
    }
    if settings.leader.retry_period >= settings.leader.lease_duration {
        return Err(Error::Config(
            "the leader retry period must be shorter than the lease duration".into(),
        ));
    }
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    let metrics_addr = match settings.metrics_listen {
        Some(addr) => {
            let server = metrics::serve(addr, metrics.clone(), ready.clone())?;
            let bound = server.addr;
            // Serves for as long as the task lives: aborting it at shutdown drops the server.
            tasks.spawn(async move {
                let _server = server;
                std::future::pending::<()>().await
            });
            Some(bound)
        }
        None => None,
    };
    tasks.spawn(wait_for_crds(client.clone(), ready.clone()));

    let elector = Arc::new(Elector::new(
        Api::<Lease>::namespaced(client.clone(), &settings.namespace),
        settings.leader.clone(),
    ));
    let (leading_tx, leading) = watch::channel(false);
    {
        let elector = elector.clone();
        tasks.spawn(async move {
            elector.run(leading_tx).await;
        });
    }
    let store = Arc::new(PolicyStore::new(
        PluginHost::new().map_err(|e| Error::Config(e.to_string()))?,
    ));
    let (breaker_tx, breaker) = watch::channel(State::Closed);
    let breaker_tx = Arc::new(breaker_tx);
    {
        let (client, settings, metrics, store, ready) = (
            client.clone(),
            settings.clone(),
            metrics.clone(),
            store.clone(),
            ready.clone(),
        );
        let mut leading = leading.clone();
        tasks.spawn(async move {
            loop {
                if leading.wait_for(|l| *l).await.is_err() {
                    return;
                }
                metrics.leader.set(1);
                let mut duties = lead(client.clone(), settings.clone(), metrics.clone(), store.clone(), ready.clone(), breaker_tx.clone());
                tokio::select! {
                    _ = leading.wait_for(|l| !*l) => {}
                    _ = duties.join_next() => {
                        tracing::error!("a leader task ended unexpectedly; restarting the leader's duties");
                    }
                }
                duties.abort_all();
                while duties.join_next().await.is_some() {}
                metrics.leader.set(0);
                breaker_tx.send_replace(State::Closed);
            }
        });
    }
    Ok(Running {
        metrics,
        metrics_addr,
        leading,
        breaker,
        store,
        elector,
        tasks,
    })
}

/// The leader's duties, each a task of the returned set.
fn lead(
    client: Client,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    store: Arc<PolicyStore>,
    crds_served: Arc<AtomicBool>,
    breaker_tx: Arc<watch::Sender<State>>,
) -> JoinSet<()> {
    let mut duties = JoinSet::new();
    let recorder = Recorder::new(
        client.clone(),
        Reporter::from(settings.field_manager.clone()),
    );
    let (bundle_tx, bundle) = watch::channel(None::<String>);
    let (seal_key_tx, mut seal_key) = watch::channel(None::<phantom_seal::Key>);
    let restored = Arc::new(Notify::new());
    let scan_now = Arc::new(Notify::new());

    {
        let (client, store, metrics, crds_served) = (
            client.clone(),
            store.clone(),
            metrics.clone(),
            crds_served.clone(),
        );
        let (settings, recorder_metrics) = (settings.clone(), metrics.clone());
        duties.spawn(async move {
            while !crds_served.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let ctx = Arc::new(Context::new(client.clone(), store.clone(), metrics, &settings.field_manager, &settings.namespace));
            let namespace = settings.namespace.clone();
            let name = settings.published_set.clone();
            match phantom_policies::cluster::read_published(&client, &namespace, &name).await {
                Ok(Some(sources)) => store.remember(&sources),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "the published policy set is unreadable; it is rewritten from what compiles now"),
            }
            let (publish_tx, publish_rx) = watch::channel(None);
            let published_store = store.clone();
            let compile = phantom_policies::cluster::keep_compiled(client.clone(), store, settings.debounce, move |snapshot| {
                recorder_metrics.policy_generation.set(i64::try_from(snapshot.generation).unwrap_or(i64::MAX));
                recorder_metrics.policy_errors.set(i64::try_from(snapshot.errors.len()).unwrap_or(i64::MAX));
                publish_tx.send_replace(Some(published_store.snapshot()));
            });
            let publish = publish_set(client, namespace, name, settings.field_manager.clone(), publish_rx);
            futures::join!(compile, reconcile::run(ctx), publish);
        });
    }
    duties.spawn(
        Manager::new(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            recorder.clone(),
            breaker_tx.subscribe(),
            Published {
                bundle: bundle_tx,
                seal_key: seal_key_tx,
            },
            restored.clone(),
        )
        .run(),
    );
    if settings.breaker.enabled {
        duties.spawn(probe_loop(
            settings.clone(),
            metrics.clone(),
            recorder.clone(),
            bundle,
            breaker_tx,
            scan_now.clone(),
        ));
    }
    duties.spawn(async move {
        let mut reporter = gaps::Reporter::default();
        loop {
            // Seals are checked from the first scan on: the key is what the manager holds.
            let Ok(key) = seal_key.wait_for(Option::is_some).await.map(|k| k.clone()) else {
                return;
            };
            let Some(key) = key else { continue };
            if let Err(e) = reporter
                .run_once(
                    &client,
                    &settings.webhooks,
                    &recorder,
                    &metrics,
                    &key,
                    settings.gaps.evict,
                )
                .await
            {
                tracing::warn!(error = %e, "scanning for pods admitted without Phantom failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(settings.gaps.scan_interval) => {}
                _ = scan_now.notified() => {}
                _ = restored.notified() => {}
            }
        }
    });
    duties
}

/// Writes each newly compiled set's objects into the published ConfigMap (only when its digest
/// changed), retrying a failed write after 5 s.
async fn publish_set(
    client: Client,
    namespace: String,
    name: String,
    field_manager: String,
    mut snapshots: watch::Receiver<Option<Arc<phantom_policies::store::Snapshot>>>,
) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};
    let api = Api::<ConfigMap>::namespaced(client, &namespace);
    let mut written: Option<String> = None;
    loop {
        let latest = snapshots.borrow_and_update().clone();
        if let Some(snapshot) = latest
            && written.as_deref() != Some(snapshot.set.digest())
        {
            let body =
                phantom_policies::cluster::published_config_map(&namespace, &name, &snapshot);
            match api
                .patch(
                    &name,
                    &PatchParams::apply(&field_manager).force(),
                    &Patch::Apply(&body),
                )
                .await
            {
                Ok(_) => written = Some(snapshot.set.digest().to_owned()),
                Err(e) => {
                    tracing::warn!(configmap = %format!("{namespace}/{name}"), error = %e, "publishing the policy set failed; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// Probes admission and drives the breaker; a transition is logged, counted, recorded as an Event
/// on the MutatingWebhookConfiguration and, on closing, triggers a gap scan.
async fn probe_loop(
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    mut bundle: watch::Receiver<Option<String>>,
    breaker_tx: Arc<watch::Sender<State>>,
    scan_now: Arc<Notify>,
) {
    let b = &settings.breaker;
    let mut breaker = Breaker::new(b.failures_to_open, b.successes_to_close);
    let base = settings.webhooks.admission.base_url();
    let mut client: Option<reqwest::Client> = None;
    loop {
        if bundle.has_changed().unwrap_or(false) || client.is_none() {
            let pem = bundle.borrow_and_update().clone();
            client = match pem.map(|pem| breaker::client(&pem, b.probe_timeout)) {
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "building the probe's client failed");
                    None
                }
                None => None,
            };
        }
        if let Some(http) = &client {
            let result = breaker::probe(http, &base).await;
            if let Err(reason) = &result {
                tracing::debug!(%reason, "admission probe failed");
            }
            if let Some(state) = breaker.observe(result.is_ok()) {
                metrics.breaker_open.set(i64::from(state == State::Open));
                metrics
                    .breaker_transitions
                    .get_or_create(&StateLabels { state })
                    .inc();
                let (type_, reason, note) = match state {
                    State::Open => (
                        EventType::Warning,
                        "CircuitBreakerOpened",
                        format!(
                            "admission at {base} failed {} probes in a row ({}): pods in namespaces not labelled {}={} are admitted WITHOUT Phantom until it recovers; they will be reported as gap pods",
                            b.failures_to_open,
                            result.err().unwrap_or_default(),
                            settings.webhooks.critical_label.0,
                            settings.webhooks.critical_label.1
                        ),
                    ),
                    State::Closed => (
                        EventType::Normal,
                        "CircuitBreakerClosed",
                        format!(
                            "admission at {base} answers again: the webhooks fail closed again"
                        ),
                    ),
                };
                if state == State::Open {
                    tracing::error!(%base, "circuit breaker OPEN: admission is down; non-critical namespaces fail open");
                } else {
                    tracing::info!(%base, "circuit breaker closed: admission answers again");
                }
                breaker_tx.send_replace(state);
                tokio::spawn(manager::publish(
                    recorder.clone(),
                    manager::mutating_reference(
                        &settings.webhooks.mutating_name,
                        &settings.namespace,
                    ),
                    type_,
                    reason,
                    note,
                ));
                if state == State::Closed {
                    scan_now.notify_one();
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(b.probe_interval) => {}
            _ = bundle.changed() => {}
        }
    }
}
