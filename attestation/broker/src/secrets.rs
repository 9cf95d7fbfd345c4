//! The broker's own reads from OpenBao. TEE-gated paths are readable only by the broker's role
//! (bound to its ServiceAccount), never by the pods' own roles, so the only way to the value is
//! through a release decision.

use std::path::PathBuf;

use phantom_attestation::protocol::{Payload, PayloadItem};
use phantom_crds::{Engine, SecretBinding};
use phantom_openbao::sessions::{SessionKey, Sessions, session_for};
use phantom_openbao::{OpenBaoClient, Session};
use tokio::sync::Mutex;

use crate::{Error, Result};

/// Where and as whom the broker logs in to OpenBao.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: Option<String>,
    pub auth_mount: String,
    pub role: String,
    /// The broker's projected ServiceAccount token (re-read at every login).
    pub token_path: PathBuf,
}

/// Reads a binding's secrets as the broker.
#[derive(Debug)]
pub struct SecretReader {
    client: OpenBaoClient,
    identity: Identity,
    sessions: Mutex<Sessions>,
}

impl SecretReader {
    pub fn new(client: OpenBaoClient, identity: Identity) -> Self {
        Self {
            client,
            identity,
            sessions: Mutex::default(),
        }
    }

    pub fn client(&self) -> &OpenBaoClient {
        &self.client
    }

    fn key(&self) -> SessionKey {
        (
            self.identity.namespace.clone(),
            self.identity.auth_mount.clone(),
            self.identity.role.clone(),
        )
    }

    /// The broker's session: logged in, renewed, or replaced as needed.
    pub async fn session(&self) -> Result<Session> {
        let mut sessions = self.sessions.lock().await;
        Ok(session_for(
            &self.client,
            &self.identity.token_path,
            &mut sessions,
            &self.key(),
        )
        .await?)
    }

    async fn forget(&self) {
        self.sessions.lock().await.clear();
    }

    /// Every secret `binding` names, as OpenBao holds it (the sidecar selects keys).
    pub async fn read(&self, binding: &SecretBinding) -> Result<Payload> {
        let name = format!(
            "{}/{}",
            binding.metadata.namespace.as_deref().unwrap_or_default(),
            binding.metadata.name.as_deref().unwrap_or_default()
        );
        if binding.spec.openbao.namespace != self.identity.namespace {
            return Err(Error::OpenBaoNamespace {
                binding: name,
                binding_namespace: binding.spec.openbao.namespace.clone(),
                broker_namespace: self.identity.namespace.clone(),
            });
        }
        let mut payload = Payload::new();
        for item in &binding.spec.secrets {
            if item.engine == Engine::Dynamic {
                return Err(Error::DynamicGated {
                    binding: name,
                    item: item.name.clone(),
                });
            }
            let version = item.version.map(u64::from);
            let session = self.session().await?;
            let secret = match self
                .client
                .read_kv(&session, &item.mount, &item.path, version)
                .await
            {
                // A revoked token: log in again once, then read.
                Err(e) if e.is_session_refused() => {
                    self.forget().await;
                    let fresh = self.session().await?;
                    self.client
                        .read_kv(&fresh, &item.mount, &item.path, version)
                        .await?
                }
                other => other?,
            };
            payload.insert(
                item.name.clone(),
                PayloadItem {
                    version: secret.version,
                    data: secret
                        .data
                        .iter()
                        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                        .collect(),
                },
            );
        }
        Ok(payload)
    }
}
