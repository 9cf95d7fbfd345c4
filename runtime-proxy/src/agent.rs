//! `phantom-agent`: the per-node agent of injection mode `daemonset`. Pods in that mode get no
//! sidecar; their wrapped containers' `phantom-exec` asks the agent's socket (a hostPath
//! directory) for the container's environment, and the same socket API as the sidecar's serves
//! socket secrets and watch events.
//!
//! A request is served only when two proofs agree ([`caller`]): the kernel's (the peer process,
//! pinned by its pidfd, runs in a container of a pod on this node) and the pod's (a projected
//! token of the agent's audience, reviewed by the API server, naming that pod's UID). What the pod
//! gets is read from OpenBao as the pod's own identity ([`identities`]: the pod's token, one
//! shared login per identity on the node, reads coalesced and kept briefly per identity), with
//! the SecretBindings as the cluster has them now; each pod then has its own refresh loop, exactly
//! the sidecar's ([`crate::proxy::refresh_loop`]), so rotation, grace and withdrawal behave alike.
//!
//! The agent's crash is the node's blast radius: running applications keep their variables;
//! new pods wait in Init (their `phantom-init` waits for the agent to answer) until it is back.

pub mod args;
pub mod caller;
pub mod identities;
pub mod metrics;
pub mod serve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt as _};
use phantom_crds::SecretBinding;
use phantom_crds::wellknown::Selection;
use phantom_identity::cgroup::CgroupMode;
use phantom_openbao::tls::TlsSettings;
use phantom_policies::KeyReleaseSet;

use crate::metrics::ProxyMetrics;
use crate::proxy::{ProxyConfig, fetch, refresh_loop};
use crate::socket::SocketState;
use caller::{Caller, PodPlan, Refusal};
use identities::{Identities, IdentityKey, SharedProvider};
use metrics::AgentMetrics;

/// The agent's settings (from [`args::Args`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub socket_dir: PathBuf,
    pub audience: String,
    pub openbao_addr: String,
    pub tls: TlsSettings,
    pub selection: Selection,
    pub proc_root: PathBuf,
    pub cgroup_root: PathBuf,
    pub kubelet_pods_dir: PathBuf,
    /// containerd's task directory: callers' containers named from their bundles.
    pub containerd_tasks_dir: PathBuf,
    /// How long a KV v2 read is served again to pods of the same identity.
    pub keep_reads: Duration,
    /// How long a caller's container may be missing from its pod's status (the kubelet reports
    /// container IDs shortly after the start) before it is refused.
    pub identify_timeout: Duration,
    pub grace: Duration,
    pub refresh_override: Option<Duration>,
    pub status_addr: Option<std::net::SocketAddr>,
}

/// One pod the agent serves.
#[derive(Debug)]
struct Served {
    state: Arc<SocketState>,
    wrapped: Vec<String>,
    identity: IdentityKey,
    refresh: tokio::task::JoinHandle<()>,
}

type Slot = Arc<tokio::sync::OnceCell<Arc<Served>>>;

/// The agent: its view of the node and the pods it serves.
pub struct Agent {
    pub settings: Settings,
    kube: Client,
    pods: Store<Pod>,
    cgroup_mode: CgroupMode,
    identities: Identities,
    served: tokio::sync::Mutex<BTreeMap<String, Slot>>,
    pub metrics: Arc<AgentMetrics>,
}

/// Why a caller was not served: the outcome it is counted as and a message safe to answer with
/// (names only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unserved {
    pub outcome: metrics::CallerOutcome,
    pub message: String,
}

impl Unserved {
    pub fn new(outcome: metrics::CallerOutcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            message: message.into(),
        }
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.settings.node_name)
            .field("identities", &self.identities.len())
            .finish_non_exhaustive()
    }
}

impl Agent {
    pub fn new(
        settings: Settings,
        kube: Client,
        pods: Store<Pod>,
        openbao: phantom_openbao::OpenBaoClient,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        let cgroup_mode = phantom_identity::cgroup::detect_cgroup_mode(&settings.cgroup_root);
        let identities = Identities::new(
            openbao,
            settings.keep_reads,
            settings.kubelet_pods_dir.clone(),
        );
        Self {
            settings,
            kube,
            pods,
            cgroup_mode,
            identities,
            served: tokio::sync::Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// How many pods are served now.
    pub async fn pods_served(&self) -> usize {
        self.served.lock().await.len()
    }

    /// The pod and container whose process runs in the cgroup named by `cgroup_text` (a
    /// `/proc/<pid>/cgroup`), waiting up to the identify timeout for the kubelet to report the
    /// container.
    pub async fn process_pod(&self, cgroup_text: &str) -> Result<(Arc<Pod>, String), Refusal> {
        let path = phantom_identity::cgroup::cgroup_path(cgroup_text, self.cgroup_mode).to_owned();
        // The runtime names the container at once; the pod's status only once the kubelet has
        // reported it through the API server (seconds, in a burst of starts).
        let recorded = phantom_identity::runtime::container_id(&path).and_then(|id| {
            phantom_identity::runtime::lookup(&self.settings.containerd_tasks_dir, id)
        });
        let deadline = Instant::now() + self.settings.identify_timeout;
        loop {
            let pods = self.pods.state();
            if let Some(recorded) = &recorded
                && let Some(pod) = pods
                    .iter()
                    .find(|p| p.uid().as_deref() == Some(recorded.pod_uid.as_str()))
            {
                return Ok((pod.clone(), recorded.container.clone()));
            }
            if let Some((pod, container)) = caller::pod_of_process(&pods, &path) {
                let pod = pods
                    .iter()
                    .find(|p| p.uid() == pod.uid())
                    .cloned()
                    .expect("found in the same list");
                return Ok((pod, container));
            }
            if Instant::now() >= deadline {
                return Err(Refusal::NotInPod { cgroup: path });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Serves `caller` (proven) with its pod's state, starting the pod's refresh loop on its
    /// first request.
    pub async fn serve(&self, pod: &Pod, caller: &Caller) -> Result<Arc<SocketState>, Unserved> {
        let slot = self
            .served
            .lock()
            .await
            .entry(caller.pod_uid.clone())
            .or_default()
            .clone();
        let served = slot.get_or_try_init(|| self.start_pod(pod, caller)).await?;
        // Only wrapped containers have the socket mounted; a process of another container that
        // reaches it anyway (through a shared volume) is still refused.
        if !served.wrapped.contains(&caller.container) {
            return Err(Unserved::new(
                metrics::CallerOutcome::Refused,
                Refusal::NotWrapped {
                    pod: format!("{}/{}", caller.namespace, caller.pod_name),
                    container: caller.container.clone(),
                }
                .to_string(),
            ));
        }
        Ok(served.state.clone())
    }

    async fn start_pod(&self, pod: &Pod, caller: &Caller) -> Result<Arc<Served>, Unserved> {
        let refused = |r: Refusal| Unserved::new(metrics::CallerOutcome::Refused, r.to_string());
        let bindings = self.bindings_of(pod, caller).await?;
        let plan = caller::plan_for(pod, caller, &bindings).map_err(refused)?;
        let wrapped = plan.wrapped.clone();
        let config = Arc::new(self.pod_config(caller, plan)?);
        let key = IdentityKey {
            namespace: caller.namespace.clone(),
            service_account: caller.service_account.clone(),
        };
        let identity = self.identities.join(&key, &caller.pod_uid);
        let mut provider = SharedProvider(identity);
        let contents = match fetch(&mut provider, &config, None).await {
            Ok(contents) => contents,
            Err(e) => {
                // Nothing is kept of a pod that was not served; its identity goes with its last pod.
                self.identities.leave(&key, &caller.pod_uid).await;
                return Err(Unserved::new(metrics::CallerOutcome::Failed, e.to_string()));
            }
        };
        let state = SocketState::new(None);
        state.publish(contents.clone());
        let refresh = tokio::spawn(refresh_loop(
            config,
            state.clone(),
            provider,
            contents,
            std::future::pending::<()>(),
        ));
        tracing::info!(pod = %format!("{}/{}", caller.namespace, caller.pod_name), identity = %key, "serving a pod");
        self.metrics.identities.set(self.identities.len() as i64);
        Ok(Arc::new(Served {
            state,
            wrapped,
            identity: key,
            refresh,
        }))
    }

    /// The SecretBindings the pod's plan names, read now (a binding that cannot be read is left
    /// out, and the plan then refuses naming it).
    async fn bindings_of(
        &self,
        pod: &Pod,
        caller: &Caller,
    ) -> Result<Vec<Arc<SecretBinding>>, Unserved> {
        let names = caller::plan_names(pod);
        let api: Api<SecretBinding> = Api::namespaced(self.kube.clone(), &caller.namespace);
        let mut out = Vec::new();
        for name in names {
            match api.get_opt(&name).await {
                Ok(Some(binding)) => out.push(Arc::new(binding)),
                Ok(None) => {}
                Err(e) => {
                    return Err(Unserved::new(
                        metrics::CallerOutcome::Failed,
                        format!(
                            "reading SecretBinding {}/{name} failed: {e}; retry when the API server answers",
                            caller.namespace
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The namespace of a proven caller, read now.
    pub async fn namespace(&self, name: &str) -> Result<Option<Namespace>, Unserved> {
        Api::<Namespace>::all(self.kube.clone())
            .get_opt(name)
            .await
            .map_err(|e| {
                Unserved::new(
                    metrics::CallerOutcome::Failed,
                    format!(
                        "reading namespace {name} failed: {e}; retry when the API server answers"
                    ),
                )
            })
    }

    fn pod_config(&self, caller: &Caller, plan: PodPlan) -> Result<ProxyConfig, Unserved> {
        let key_release = plan
            .key_release
            .as_ref()
            .filter(|k| !k.policies.is_empty())
            .map(|k| KeyReleaseSet::compile(k, Some(&caller.pod_name)))
            .transpose()
            .map_err(|e| {
                Unserved::new(metrics::CallerOutcome::Refused,
                    format!("the pod's key-release conditions do not compile in this agent ({e}); nothing is released"),
                )
            })?;
        Ok(ProxyConfig {
            openbao_addr: self.settings.openbao_addr.clone(),
            tls: self.settings.tls.clone(),
            token_path: identities::Identity::token_path(
                &self.settings.kubelet_pods_dir,
                &caller.pod_uid,
            ),
            // Files are not delivered in daemonset mode (refused by the plan).
            secrets_dir: PathBuf::from("/nonexistent"),
            socket_path: PathBuf::from("/nonexistent"),
            sockets_dir: None,
            plan: plan.bindings,
            wrapped_containers: plan.wrapped,
            grace: self.settings.grace,
            refresh_override: self.settings.refresh_override,
            namespace: caller.namespace.clone(),
            key_release,
            broker: None,
            // Per-pod figures are not exported: the agent's own metrics are.
            metrics: Arc::new(ProxyMetrics::default()),
            revoke_on_shutdown: false,
            file_root: None,
        })
    }

    /// Forgets pods no longer running on this node: their refresh loops stop and an identity's
    /// last pod takes its OpenBao session (and leases) with it.
    pub async fn forget_gone(&self) {
        let running: std::collections::BTreeSet<String> = self
            .pods
            .state()
            .iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .filter_map(|p| p.uid())
            .collect();
        let gone: Vec<(String, Slot)> = {
            let mut served = self.served.lock().await;
            let uids: Vec<String> = served
                .keys()
                .filter(|uid| !running.contains(*uid))
                .cloned()
                .collect();
            uids.into_iter()
                .filter_map(|uid| served.remove(&uid).map(|slot| (uid, slot)))
                .collect()
        };
        for (uid, slot) in gone {
            if let Some(served) = slot.get() {
                served.refresh.abort();
                self.identities.leave(&served.identity, &uid).await;
                tracing::info!(pod_uid = %uid, "pod gone: no longer served");
            }
        }
        self.metrics.pods.set(self.served.lock().await.len() as i64);
        self.metrics.identities.set(self.identities.len() as i64);
    }
}
