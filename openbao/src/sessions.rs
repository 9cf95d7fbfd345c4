//! Kubernetes-auth sessions kept alive: one login per (OpenBao namespace, auth mount, role),
//! renewed before it expires and replaced (the old token revoked) when it cannot be. The sidecar
//! keeps one per pod identity; the broker one for its own.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{OpenBaoClient, Result, Session};

/// Sessions by (OpenBao namespace, auth mount, role): one login per pod identity and place.
pub type SessionKey = (Option<String>, String, String);
pub type Sessions = BTreeMap<SessionKey, Session>;

/// The session for (namespace, auth mount, role): the current one, renewed once two thirds of its lease
/// have passed, or a fresh login (with the token file re-read: the kubelet rotates it) when there
/// is none, it cannot be renewed, or OpenBao's `token_max_ttl` leaves too little of it.
pub async fn session_for(
    client: &OpenBaoClient,
    token_path: &Path,
    sessions: &mut Sessions,
    key: &SessionKey,
) -> Result<Session> {
    let (namespace, mount, role) = key;
    if let Some(current) = sessions.get(key) {
        if !current.wants_renewal() {
            return Ok(current.clone());
        }
        if current.renewable {
            match client.renew_self(current).await {
                Ok(renewed) if renewed.lease_duration * 3 >= current.lease_duration => {
                    tracing::debug!(%mount, %role, lease = ?renewed.lease_duration, "OpenBao token renewed");
                    sessions.insert(key.clone(), renewed.clone());
                    return Ok(renewed);
                }
                Ok(_) => {
                    tracing::debug!(%mount, %role, "token near its maximum TTL; logging in again")
                }
                Err(e) => {
                    tracing::info!(%mount, %role, error = %e, "token renewal failed; logging in again")
                }
            }
        }
    }
    let fresh = client
        .login_kubernetes_in(namespace.as_deref(), mount, role, token_path)
        .await?;
    // The session replaced is revoked, not left to its TTL: its token and the leases read with
    // it end now (the dynamic secrets read with it are read anew with the fresh one this round).
    if let Some(replaced) = sessions.insert(key.clone(), fresh.clone())
        && let Err(e) = client.revoke_self(&replaced).await
    {
        tracing::debug!(%mount, %role, error = %e, "revoking the replaced OpenBao token failed; it ends at its TTL");
    }
    Ok(fresh)
}
