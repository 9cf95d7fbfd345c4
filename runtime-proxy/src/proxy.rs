//! `phantom-proxy`'s work: from the plan admission handed over, log in to OpenBao as the pod
//! (one login per auth mount and role), read every secret (coalesced), write the files, serve the
//! socket, and refresh on the bindings' interval with jitter. OpenBao down on first start is an
//! error (the pod stays in Init instead of starting without its secrets); OpenBao down later
//! keeps the last good values for a grace period and reports degraded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use phantom_crds::{BindingPlan, DeliveryKind, Engine, RotationNotice, SecretItem};
use phantom_policies::KeyReleaseSet;
use serde_json::Value;

use crate::files::{parse_mode, write_atomic};
use crate::metrics::ProxyMetrics;
use crate::openbao::{OpenBaoClient, Session};
use crate::socket::{Contents, Delivered, SocketState};
use crate::tls::TlsSettings;
use crate::{Error, Result, SecretValue};

/// Settings of one sidecar.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub openbao_addr: String,
    /// How OpenBao is trusted (CA, SPKI pins) and the client certificate.
    pub tls: TlsSettings,
    /// The projected ServiceAccount token (re-read at every login).
    pub token_path: PathBuf,
    /// The memory-backed volume for files.
    pub secrets_dir: PathBuf,
    pub socket_path: PathBuf,
    pub plan: Vec<BindingPlan>,
    /// Containers wrapped by `phantom-exec` (env deliveries without `containers` go to all).
    pub wrapped_containers: Vec<String>,
    /// How long the last good values are served while OpenBao cannot be reached.
    pub grace: Duration,
    /// Overrides the bindings' refresh interval (tests, and operators who must go faster).
    pub refresh_override: Option<Duration>,
    /// The pod's namespace (the bindings' namespace, as key-release conditions see them).
    pub namespace: String,
    /// Key-release conditions checked before each binding's values are read and released.
    pub key_release: Option<KeyReleaseSet>,
    pub metrics: Arc<ProxyMetrics>,
}

/// The policy of a key-release refusal (for the refusal metric).
fn refusing_policy(error: &Error) -> Option<&str> {
    match error {
        Error::KeyRelease { refusal, .. } => Some(&refusal.policy),
        _ => None,
    }
}

/// Checks the key-release conditions for `binding`; without conditions every binding is released.
pub fn check_release(config: &ProxyConfig, binding: &BindingPlan) -> Result<()> {
    let Some(set) = &config.key_release else {
        return Ok(());
    };
    let object = serde_json::json!({
        "metadata": {"name": binding.name, "namespace": config.namespace},
        "spec": binding.spec,
    });
    // No attestation evidence yet: a policy that requires it refuses (fail closed).
    set.check(&object, None)
        .map_err(|refusal| Error::KeyRelease {
            binding: binding.name.clone(),
            refusal,
        })
}

/// Sessions by (OpenBao namespace, auth mount, role): one login per pod identity and place.
pub type SessionKey = (Option<String>, String, String);
pub type Sessions = BTreeMap<SessionKey, Session>;

/// The session for (namespace, auth mount, role): the current one, renewed once two thirds of its lease
/// have passed, or a fresh login (with the token file re-read: the kubelet rotates it) when there
/// is none, it cannot be renewed, or OpenBao's `token_max_ttl` leaves too little of it.
async fn session_for(
    client: &OpenBaoClient,
    config: &ProxyConfig,
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
        .login_kubernetes_in(namespace.as_deref(), mount, role, &config.token_path)
        .await?;
    sessions.insert(key.clone(), fresh.clone());
    Ok(fresh)
}

/// Reads everything the plan names, with one session per (mount, role).
pub async fn fetch(
    client: &OpenBaoClient,
    config: &ProxyConfig,
    sessions: &mut Sessions,
    previous: Option<&Contents>,
) -> Result<Contents> {
    let mut contents = Contents::default();
    for binding in &config.plan {
        check_release(config, binding)?;
        let auth = &binding.spec.openbao;
        let key = (
            auth.namespace.clone(),
            auth.auth_mount.clone(),
            auth.role.clone(),
        );
        let session = session_for(client, config, sessions, &key).await?;
        for item in &binding.spec.secrets {
            let delivered = match item.engine {
                Engine::KvV2 => {
                    let version = item.version.map(u64::from);
                    let secret = match client
                        .read_kv_coalesced(&session, &item.mount, &item.path, version)
                        .await
                    {
                        // A revoked token: log in again once, then read.
                        Err(Error::Read { status: 403, .. }) => {
                            let fresh = client
                                .login_kubernetes_in(
                                    auth.namespace.as_deref(),
                                    &auth.auth_mount,
                                    &auth.role,
                                    &config.token_path,
                                )
                                .await?;
                            sessions.insert(key.clone(), fresh.clone());
                            client
                                .read_kv_coalesced(&fresh, &item.mount, &item.path, version)
                                .await?
                        }
                        other => other?,
                    };
                    Delivered {
                        value: select(binding, item, &secret.data)?,
                        version: secret.version,
                        lease: None,
                    }
                }
                Engine::Dynamic => {
                    let held = previous.and_then(|p| p.secrets.get(&item.name));
                    dynamic(client, &session, binding, item, held).await?
                }
            };
            if contents.secrets.contains_key(&item.name) {
                return Err(Error::Delivery(format!(
                    "two SecretBindings of this pod deliver a secret named {}; rename one (spec.secrets[].name)",
                    item.name
                )));
            }
            for delivery in &item.delivery {
                if delivery.kind == DeliveryKind::Env {
                    let var = delivery.name.clone().unwrap_or_default();
                    let targets = delivery
                        .containers
                        .clone()
                        .unwrap_or_else(|| config.wrapped_containers.clone());
                    for container in targets {
                        contents
                            .env
                            .entry(container)
                            .or_default()
                            .insert(var.clone(), item.name.clone());
                    }
                }
            }
            contents.secrets.insert(item.name.clone(), delivered);
        }
    }
    for container in &config.wrapped_containers {
        contents.env.entry(container.clone()).or_default();
    }
    Ok(contents)
}

/// The value a binding item delivers: one key, or every key as a JSON object.
fn select(
    binding: &BindingPlan,
    item: &SecretItem,
    data: &BTreeMap<String, SecretValue>,
) -> Result<SecretValue> {
    match &item.key {
        Some(k) => data.get(k).cloned().ok_or_else(|| {
            Error::Delivery(format!(
                "SecretBinding {}: secret {} at {}/{} has no key {k:?}; fix spec.secrets[].key or the secret in OpenBao",
                binding.name, item.name, item.mount, item.path
            ))
        }),
        None => {
            let mut map: serde_json::Map<String, Value> = data
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.expose().to_owned())))
                .collect();
            let text = Value::Object(map.clone()).to_string();
            for value in map.values_mut() {
                crate::secret::wipe(value);
            }
            Ok(SecretValue::new(text))
        }
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

/// Revokes every session's token, and with them the leases of dynamic secrets (the pod is going
/// away; its database credentials should not outlive it).
pub async fn revoke_all(client: &OpenBaoClient, sessions: &Sessions) {
    for ((namespace, mount, role), session) in sessions {
        match client.revoke_self(session).await {
            Ok(()) => {
                tracing::info!(?namespace, %mount, %role, "OpenBao token and its leases revoked")
            }
            Err(e) => {
                tracing::warn!(?namespace, %mount, %role, error = %e, "revoking the OpenBao token failed")
            }
        }
    }
}

/// Writes every file delivery whose secret changed since `previous`.
pub fn write_files(
    config: &ProxyConfig,
    contents: &Contents,
    previous: Option<&Contents>,
) -> Result<()> {
    for binding in &config.plan {
        for item in &binding.spec.secrets {
            let Some(current) = contents.secrets.get(&item.name) else {
                continue;
            };
            let unchanged = previous
                .and_then(|p| p.secrets.get(&item.name))
                .is_some_and(|old| old.version == current.version);
            if unchanged {
                continue;
            }
            for delivery in item
                .delivery
                .iter()
                .filter(|d| d.kind == DeliveryKind::File)
            {
                let path = delivery.path.as_deref().unwrap_or(&item.name);
                write_atomic(
                    &config.secrets_dir,
                    path,
                    &current.value,
                    parse_mode(delivery.mode.as_deref())?,
                )?;
            }
        }
    }
    Ok(())
}

fn refresh_interval(config: &ProxyConfig) -> Duration {
    if let Some(d) = config.refresh_override {
        return d;
    }
    let (interval, jitter) = config
        .plan
        .iter()
        .map(|b| {
            (
                Duration::from(b.spec.refresh.interval),
                b.spec.refresh.jitter_percent,
            )
        })
        .min_by_key(|(d, _)| *d)
        .unwrap_or((Duration::from_secs(240), 10));
    // Spread renewals of many pods: up to `jitter` percent added, from a per-process random seed.
    let random = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let extra = interval.as_millis() as u64 * u64::from(jitter) / 100;
    interval + Duration::from_millis(if extra == 0 { 0 } else { random % extra })
}

/// SIGHUP to the applications of the containers that receive a changed secret of a binding
/// with `rotationNotice: sighup` (needs `shareProcessNamespace: true`; the PIDs come from the
/// `phantom-exec` connections). Other notices are the socket's watch events, already sent.
fn notify_applications(config: &ProxyConfig, state: &SocketState, changed: &[&String]) {
    let applications = state.applications();
    for binding in config
        .plan
        .iter()
        .filter(|b| b.spec.rotation_notice == RotationNotice::Sighup)
    {
        let touched = binding
            .spec
            .secrets
            .iter()
            .any(|s| changed.iter().any(|c| **c == s.name));
        if !touched {
            continue;
        }
        for (container, pid) in &applications {
            let sent = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGHUP,
            );
            match sent {
                Ok(()) => {
                    tracing::info!(%container, pid, binding = %binding.name, "SIGHUP sent for a rotated secret")
                }
                Err(e) => {
                    tracing::warn!(%container, pid, error = %e, "SIGHUP failed (is shareProcessNamespace set?)")
                }
            }
        }
    }
}

/// First fetch: files written (only onto a memory-backed volume) and the socket published, or
/// the error that keeps the pod in Init.
pub async fn start(
    config: &ProxyConfig,
    state: &SocketState,
) -> Result<(OpenBaoClient, Sessions, Contents)> {
    let has_files = config.plan.iter().any(|b| {
        b.spec
            .secrets
            .iter()
            .any(|s| s.delivery.iter().any(|d| d.kind == DeliveryKind::File))
    });
    if has_files {
        std::fs::create_dir_all(&config.secrets_dir).map_err(|e| {
            Error::Delivery(format!("creating {}: {e}", config.secrets_dir.display()))
        })?;
        crate::harden::require_memory_backed(&config.secrets_dir)?;
    }
    let client = OpenBaoClient::with_tls(&config.openbao_addr, &config.tls)?
        .with_metrics(config.metrics.clone());
    let mut sessions = BTreeMap::new();
    let contents = fetch(&client, config, &mut sessions, None)
        .await
        .inspect_err(|e| config.metrics.failed(refusing_policy(e)))?;
    config.metrics.fetched(contents.secrets.len());
    write_files(config, &contents, None)?;
    state.publish(contents.clone());
    Ok((client, sessions, contents))
}

/// Refreshes until `shutdown` completes: new versions reach files and watchers; failures beyond
/// the grace period mark the socket degraded (values keep being served). On shutdown the tokens
/// are revoked, and with them the leases of dynamic secrets.
pub async fn refresh_loop(
    config: Arc<ProxyConfig>,
    state: Arc<SocketState>,
    client: OpenBaoClient,
    mut sessions: Sessions,
    mut current: Contents,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut last_success = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = tokio::time::sleep(refresh_interval(&config)) => {}
            () = &mut shutdown => {
                revoke_all(&client, &sessions).await;
                return;
            }
        }
        match fetch(&client, &config, &mut sessions, Some(&current)).await {
            Ok(next) => {
                if let Err(e) = write_files(&config, &next, Some(&current)) {
                    tracing::error!(error = %e, "writing secret files failed");
                }
                let changed: Vec<&String> = next
                    .secrets
                    .iter()
                    .filter(|(n, d)| {
                        current
                            .secrets
                            .get(*n)
                            .is_none_or(|o| o.version != d.version)
                    })
                    .map(|(n, _)| n)
                    .collect();
                config.metrics.fetched(next.secrets.len());
                config.metrics.degraded.set(0);
                if !changed.is_empty() {
                    config.metrics.rotations.inc_by(changed.len() as u64);
                    tracing::info!(secrets = ?changed, "new versions delivered");
                    notify_applications(&config, &state, &changed);
                }
                last_success = Instant::now();
                state.publish(next.clone());
                current = next;
            }
            Err(e) => {
                // A failed login may mean the token rotated under a session: start fresh next time.
                sessions.clear();
                config.metrics.failed(refusing_policy(&e));
                let degraded = last_success.elapsed() > config.grace;
                config.metrics.degraded.set(i64::from(degraded));
                tracing::warn!(error = %e, degraded, "refresh failed; serving the last good values");
                if degraded != current.degraded {
                    current.degraded = degraded;
                    state.publish(current.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(key: Option<&str>) -> (BindingPlan, SecretItem) {
        let spec: phantom_crds::SecretBindingSpec = serde_json::from_value(serde_json::json!({
            "selector": {"podSelector": {}}, "openbao": {"role": "r"},
            "secrets": [{"name": "db", "path": "creds/app", "mount": "database", "engine": "dynamic",
                         "key": key, "delivery": [{"kind": "socket"}]}]
        }))
        .expect("spec");
        let item = spec.secrets[0].clone();
        (
            BindingPlan {
                name: "b".into(),
                spec,
            },
            item,
        )
    }

    #[test]
    fn one_key_or_every_key_as_json() {
        let data: BTreeMap<String, SecretValue> = [
            (
                "username".to_owned(),
                SecretValue::new("v-app-1".to_owned()),
            ),
            ("password".to_owned(), SecretValue::new("pw".to_owned())),
        ]
        .into();
        let (b, item) = binding(Some("password"));
        assert_eq!(select(&b, &item, &data).expect("key").expose(), "pw");
        let (b, item) = binding(None);
        let whole: Value =
            serde_json::from_str(select(&b, &item, &data).expect("all").expose()).expect("JSON");
        assert_eq!(whole["username"], "v-app-1");
        let (b, item) = binding(Some("token"));
        let err = select(&b, &item, &data).expect_err("no such key");
        assert!(err.to_string().contains("has no key \"token\""), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
