//! `phantom-proxy`'s work: from the plan admission handed over, log in to OpenBao as the pod
//! (one login per auth mount and role), read every secret (coalesced), write the files, serve the
//! socket, and refresh on the bindings' interval with jitter. OpenBao down on first start is an
//! error (the pod stays in Init instead of starting without its secrets); OpenBao down later
//! keeps the last good values for a grace period and reports degraded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use phantom_crds::{BindingPlan, DeliveryKind, RotationNotice};
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

/// What this release of the sidecar cannot deliver yet, said up front instead of failing later
/// with a confusing OpenBao answer.
pub fn unsupported(plan: &[BindingPlan]) -> Option<String> {
    for binding in plan {
        if let Some(item) = binding
            .spec
            .secrets
            .iter()
            .find(|s| s.engine == phantom_crds::Engine::Dynamic)
        {
            return Some(format!(
                "SecretBinding {}: secret {} uses a dynamic engine, which this phantom-proxy does not read yet (KV v2 only); use engine kv-v2",
                binding.name, item.name
            ));
        }
    }
    None
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
            let version = item.version.map(u64::from);
            let secret = match client
                .read_kv_coalesced(&session, &item.mount, &item.path, version)
                .await
            {
                // An expired token: log in again once, then read.
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
            let value = match &item.key {
                Some(k) => secret.data.get(k).cloned().ok_or_else(|| Error::Delivery(format!(
                    "SecretBinding {}: secret {} at {}/{} has no key {k:?}; fix spec.secrets[].key or the secret in OpenBao",
                    binding.name, item.name, item.mount, item.path
                )))?,
                None => {
                    let map: serde_json::Map<String, Value> = secret
                        .data
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.expose().to_owned())))
                        .collect();
                    SecretValue::new(Value::Object(map).to_string())
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
            contents.secrets.insert(
                item.name.clone(),
                Delivered {
                    value,
                    version: secret.version,
                },
            );
        }
    }
    for container in &config.wrapped_containers {
        contents.env.entry(container.clone()).or_default();
    }
    Ok(contents)
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
    if let Some(message) = unsupported(&config.plan) {
        return Err(Error::Delivery(message));
    }
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
    let contents = fetch(&client, config, &mut sessions)
        .await
        .inspect_err(|e| config.metrics.failed(refusing_policy(e)))?;
    config.metrics.fetched(contents.secrets.len());
    write_files(config, &contents, None)?;
    state.publish(contents.clone());
    Ok((client, sessions, contents))
}

/// Refreshes forever: new versions reach files and watchers; failures beyond the grace period
/// mark the socket degraded (values keep being served).
pub async fn refresh_loop(
    config: Arc<ProxyConfig>,
    state: Arc<SocketState>,
    client: OpenBaoClient,
    mut sessions: Sessions,
    mut current: Contents,
) {
    let mut last_success = Instant::now();
    loop {
        tokio::time::sleep(refresh_interval(&config)).await;
        match fetch(&client, &config, &mut sessions).await {
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

    fn plan(extra: serde_json::Value) -> Vec<BindingPlan> {
        let mut spec = serde_json::json!({
            "selector": {"podSelector": {}}, "openbao": {"role": "r"},
            "secrets": [{"name": "s", "path": "p", "delivery": [{"kind": "socket"}]}]
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        vec![BindingPlan {
            name: "b".into(),
            spec: serde_json::from_value(spec).expect("spec"),
        }]
    }

    #[test]
    fn unsupported_features_are_named_up_front() {
        assert_eq!(unsupported(&plan(serde_json::json!({}))), None);
        let ns = unsupported(&plan(
            serde_json::json!({"openbao": {"role": "r", "namespace": "team-a"}}),
        ));
        assert_eq!(ns, None, "OpenBao namespaces are supported");
        let dynamic = unsupported(&plan(serde_json::json!({"secrets": [
            {"name": "db", "path": "creds/app", "mount": "database", "engine": "dynamic", "delivery": [{"kind": "socket"}]}]})));
        assert!(dynamic.is_some_and(|m| m.contains("dynamic engine") && m.contains("db")));
    }
}
