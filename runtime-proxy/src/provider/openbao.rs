//! The OpenBao provider: one Kubernetes login per (namespace, auth mount, role), renewed before
//! it expires; KV v2 reads coalesced; dynamic secrets held under their lease and renewed; every
//! token revoked when the pod stops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use phantom_crds::{BindingPlan, Engine, SecretItem};

use super::{SecretProvider, select};
use crate::Result;
use crate::socket::Delivered;
use phantom_openbao::sessions::{Sessions, session_for};
use phantom_openbao::{KvSecret, OpenBaoClient, Session};

/// Reads from OpenBao as the pod.
#[derive(Debug)]
pub struct OpenBaoProvider {
    client: OpenBaoClient,
    /// The projected ServiceAccount token (re-read at every login).
    token_path: PathBuf,
    sessions: Sessions,
    /// KV v2 reads kept for a while and served again (the node agent: every pod of one identity
    /// on the node reads through one provider). `None`: every round reads (the sidecar).
    kept: Option<KeptReads>,
}

/// KV v2 answers by (OpenBao namespace, auth mount, role, KV mount, path, version), each with
/// when it was read.
#[derive(Debug)]
struct KeptReads {
    for_at_most: Duration,
    reads: BTreeMap<KeptKey, (Instant, Arc<KvSecret>)>,
}

type KeptKey = (SessionKeyOf, String, String, Option<u64>);
type SessionKeyOf = (Option<String>, String, String);

impl OpenBaoProvider {
    pub fn new(client: OpenBaoClient, token_path: PathBuf) -> Self {
        Self {
            client,
            token_path,
            sessions: BTreeMap::new(),
            kept: None,
        }
    }

    /// Serves a KV v2 read again for up to `for_at_most` (zero: never). Only for a provider that
    /// reads for one identity: what is kept is what that identity's session may read.
    pub fn keeping_reads(mut self, for_at_most: Duration) -> Self {
        self.kept = (!for_at_most.is_zero()).then(|| KeptReads {
            for_at_most,
            reads: BTreeMap::new(),
        });
        self
    }

    /// The token file the next login reads (the node agent points it at a pod of the identity
    /// that is still running).
    pub fn set_token_path(&mut self, token_path: PathBuf) {
        self.token_path = token_path;
    }

    /// The token file the next login reads.
    pub fn token_path(&self) -> &std::path::Path {
        &self.token_path
    }

    /// A KV v2 read with the session for `key`; a revoked token logs in again once.
    async fn read_kv(&mut self, key: &SessionKeyOf, item: &SecretItem) -> Result<Arc<KvSecret>> {
        let client = &self.client;
        let version = item.version.map(u64::from);
        let session = session_for(client, &self.token_path, &mut self.sessions, key).await?;
        match client
            .read_kv_coalesced(&session, &item.mount, &item.path, version)
            .await
        {
            Err(e) if e.status() == Some(403) => {
                self.sessions.remove(key);
                let fresh = session_for(client, &self.token_path, &mut self.sessions, key).await?;
                Ok(client
                    .read_kv_coalesced(&fresh, &item.mount, &item.path, version)
                    .await?)
            }
            other => Ok(other?),
        }
    }

    fn kept_read(&mut self, key: &KeptKey) -> Option<Arc<KvSecret>> {
        let kept = self.kept.as_mut()?;
        let now = Instant::now();
        kept.reads
            .retain(|_, (at, _)| now.duration_since(*at) < kept.for_at_most);
        kept.reads.get(key).map(|(_, secret)| secret.clone())
    }

    fn keep(&mut self, key: KeptKey, secret: &Arc<KvSecret>) {
        if let Some(kept) = self.kept.as_mut() {
            kept.reads.insert(key, (Instant::now(), secret.clone()));
        }
    }
}

impl SecretProvider for OpenBaoProvider {
    async fn read(
        &mut self,
        binding: &BindingPlan,
        item: &SecretItem,
        held: Option<&Delivered>,
    ) -> Result<Delivered> {
        let auth = &binding.spec.openbao;
        let key = (
            auth.namespace.clone(),
            auth.auth_mount.clone(),
            auth.role.clone(),
        );
        if item.engine == Engine::KvV2 {
            let kept_key = (
                key.clone(),
                item.mount.clone(),
                item.path.clone(),
                item.version.map(u64::from),
            );
            if let Some(secret) = self.kept_read(&kept_key) {
                return Ok(Delivered {
                    value: select(binding, item, &secret.data)?,
                    version: secret.version,
                    lease: None,
                });
            }
            let secret = self.read_kv(&key, item).await?;
            self.keep(kept_key, &secret);
            return Ok(Delivered {
                value: select(binding, item, &secret.data)?,
                version: secret.version,
                lease: None,
            });
        }
        let client = &self.client;
        let session = session_for(client, &self.token_path, &mut self.sessions, &key).await?;
        dynamic(client, &session, binding, item, held).await
    }

    /// Revokes every session before forgetting it (a refused one fails to revoke, harmlessly):
    /// none is left valid behind the sidecar's back.
    async fn reset(&mut self) {
        // A refusal ends what the identity was served too: nothing kept outlives it.
        if let Some(kept) = self.kept.as_mut() {
            kept.reads.clear();
        }
        for ((_, mount, role), session) in std::mem::take(&mut self.sessions) {
            if let Err(e) = self.client.revoke_self(&session).await {
                tracing::debug!(%mount, %role, error = %e, "revoking a dropped OpenBao token failed; it ends at its TTL");
            }
        }
    }

    /// Revokes every session's token, and with them the leases of dynamic secrets (the pod is
    /// going away; its database credentials should not outlive it).
    async fn revoke(&mut self) {
        if let Some(kept) = self.kept.as_mut() {
            kept.reads.clear();
        }
        for ((namespace, mount, role), session) in &self.sessions {
            match self.client.revoke_self(session).await {
                Ok(()) => {
                    tracing::info!(?namespace, %mount, %role, "OpenBao token and its leases revoked")
                }
                Err(e) => {
                    tracing::warn!(?namespace, %mount, %role, error = %e, "revoking the OpenBao token failed")
                }
            }
        }
        self.sessions.clear();
    }
}

/// A dynamic secret: the held credentials while their lease has more than a third to run (or
/// can be renewed for long enough), new credentials otherwise — a new version, delivered and
/// announced like a rotation. Leases die with the token that read them, so a new login means
/// new credentials too.
async fn dynamic(
    client: &OpenBaoClient,
    session: &Session,
    binding: &BindingPlan,
    item: &SecretItem,
    held: Option<&Delivered>,
) -> Result<Delivered> {
    if let Some(held) = held
        && let Some(lease) = &held.lease
        && lease.token == session.fingerprint()
        && lease.granted_at.elapsed() < lease.duration
    {
        if !lease.wants_renewal() {
            return Ok(held.clone());
        }
        if lease.renewable {
            match client.renew_lease(session, lease).await {
                Ok(renewed) if renewed.duration * 3 >= lease.duration => {
                    tracing::debug!(secret = %item.name, lease = ?renewed.duration, "lease renewed");
                    return Ok(Delivered {
                        lease: Some(renewed),
                        ..held.clone()
                    });
                }
                Ok(_) => {
                    tracing::info!(secret = %item.name, "lease near its maximum TTL; reading new credentials")
                }
                Err(e) => {
                    tracing::info!(secret = %item.name, error = %e, "lease renewal failed; reading new credentials")
                }
            }
        }
    }
    let secret = client
        .read_dynamic(session, &item.mount, &item.path)
        .await?;
    Ok(Delivered {
        value: select(binding, item, &secret.data)?,
        version: held.map_or(1, |h| h.version + 1),
        lease: Some(secret.lease),
    })
}
