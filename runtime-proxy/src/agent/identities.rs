//! One OpenBao provider per pod identity (namespace + ServiceAccount) on this node, shared by
//! every pod of that identity: one login per (identity, OpenBao namespace, auth mount, role),
//! renewed once; KV v2 reads coalesced and kept for a short while, so a rolling restart of a
//! Deployment reads each path once, not once per pod. Nothing one identity's provider holds is
//! ever asked for by another: the key of the map is the identity the caller proved.
//!
//! Logins read the pod's OpenBao-audience token from the kubelet's copy of its projected volume
//! (`<kubelet pods dir>/<pod uid>/volumes/kubernetes.io~projected/phantom-token/token`), which the
//! kubelet keeps fresh while the pod lives. When the pod whose token the provider uses goes, the
//! next one of the identity takes over; when the last goes, the identity's tokens (and the leases
//! of its dynamic secrets) are revoked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phantom_crds::wellknown::injected::TOKEN_VOLUME;
use phantom_crds::{BindingPlan, SecretItem};
use phantom_openbao::OpenBaoClient;

use crate::Result;
use crate::provider::SecretProvider;
use crate::provider::openbao::OpenBaoProvider;
use crate::socket::Delivered;

/// Who a pod is to OpenBao.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentityKey {
    pub namespace: String,
    pub service_account: String,
}

impl std::fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)
    }
}

/// The provider of one identity and the pods (by UID) that use it.
#[derive(Debug)]
pub struct Identity {
    pub key: IdentityKey,
    provider: tokio::sync::Mutex<OpenBaoProvider>,
    pods: Mutex<BTreeSet<String>>,
    kubelet_pods_dir: PathBuf,
}

impl Identity {
    /// The kubelet's copy of `pod_uid`'s OpenBao-audience token.
    pub fn token_path(kubelet_pods_dir: &Path, pod_uid: &str) -> PathBuf {
        kubelet_pods_dir
            .join(pod_uid)
            .join("volumes/kubernetes.io~projected")
            .join(TOKEN_VOLUME)
            .join("token")
    }

    /// How many pods use this identity now.
    pub fn pods(&self) -> usize {
        self.pods.lock().expect("pods lock").len()
    }
}

/// Every identity with a pod on this node.
#[derive(Debug)]
pub struct Identities {
    client: OpenBaoClient,
    keep_reads: Duration,
    kubelet_pods_dir: PathBuf,
    by_key: Mutex<BTreeMap<IdentityKey, Arc<Identity>>>,
}

impl Identities {
    pub fn new(client: OpenBaoClient, keep_reads: Duration, kubelet_pods_dir: PathBuf) -> Self {
        Self {
            client,
            keep_reads,
            kubelet_pods_dir,
            by_key: Mutex::new(BTreeMap::new()),
        }
    }

    /// The identity's provider, with `pod_uid` counted as one of its pods.
    pub fn join(&self, key: &IdentityKey, pod_uid: &str) -> Arc<Identity> {
        let mut by_key = self.by_key.lock().expect("identities lock");
        let identity = by_key.entry(key.clone()).or_insert_with(|| {
            Arc::new(Identity {
                key: key.clone(),
                provider: tokio::sync::Mutex::new(
                    OpenBaoProvider::new(
                        self.client.clone(),
                        Identity::token_path(&self.kubelet_pods_dir, pod_uid),
                    )
                    .keeping_reads(self.keep_reads),
                ),
                pods: Mutex::new(BTreeSet::new()),
                kubelet_pods_dir: self.kubelet_pods_dir.clone(),
            })
        });
        identity
            .pods
            .lock()
            .expect("pods lock")
            .insert(pod_uid.to_owned());
        identity.clone()
    }

    /// `pod_uid` is gone: when it was the identity's last pod on this node, its tokens and leases
    /// are revoked and it is forgotten. Returns whether the identity ended.
    pub async fn leave(&self, key: &IdentityKey, pod_uid: &str) -> bool {
        let ended = {
            let mut by_key = self.by_key.lock().expect("identities lock");
            let Some(identity) = by_key.get(key).cloned() else {
                return false;
            };
            let left = {
                let mut pods = identity.pods.lock().expect("pods lock");
                pods.remove(pod_uid);
                pods.len()
            };
            if left == 0 {
                by_key.remove(key);
                Some(identity)
            } else {
                None
            }
        };
        match ended {
            Some(identity) => {
                identity.provider.lock().await.revoke().await;
                tracing::info!(identity = %key, "the identity's last pod on this node is gone: its OpenBao tokens and leases are revoked");
                true
            }
            None => false,
        }
    }

    /// How many identities have pods here.
    pub fn len(&self) -> usize {
        self.by_key.lock().expect("identities lock").len()
    }

    /// Whether no identity has a pod here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One pod's view of its identity's provider: what its refresh rounds read through.
#[derive(Debug, Clone)]
pub struct SharedProvider(pub Arc<Identity>);

impl SecretProvider for SharedProvider {
    async fn read(
        &mut self,
        binding: &BindingPlan,
        item: &SecretItem,
        held: Option<&Delivered>,
    ) -> Result<Delivered> {
        let identity = &self.0;
        let mut provider = identity.provider.lock().await;
        // Log in with the token of a pod that is still here.
        let current = provider.token_path().to_owned();
        let live: Vec<String> = identity
            .pods
            .lock()
            .expect("pods lock")
            .iter()
            .cloned()
            .collect();
        let still_here = live
            .iter()
            .any(|uid| Identity::token_path(&identity.kubelet_pods_dir, uid) == current);
        if !still_here && let Some(uid) = live.first() {
            provider.set_token_path(Identity::token_path(&identity.kubelet_pods_dir, uid));
        }
        provider.read(binding, item, held).await
    }

    async fn reset(&mut self) {
        self.0.provider.lock().await.reset().await;
    }

    /// One pod stopping revokes nothing: the identity's session serves its other pods, and
    /// [`Identities::leave`] revokes it with the last.
    async fn revoke(&mut self) {}
}
