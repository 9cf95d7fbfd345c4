//! `phantom-proxy`'s work: from the plan admission handed over, check the key-release
//! conditions, read every secret through the provider (OpenBao as the pod), write the files,
//! serve the socket, and refresh on the bindings' interval with jitter. OpenBao down on first
//! start is an error (the pod stays in Init instead of starting without its secrets); OpenBao
//! down later keeps the last good values for a grace period and reports degraded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use phantom_crds::{BindingPlan, DeliveryKind, MIN_REFRESH_INTERVAL, RotationNotice};
use phantom_openbao::OpenBaoClient;
use phantom_openbao::tls::TlsSettings;
use phantom_policies::KeyReleaseSet;
use tracing::Instrument as _;

use crate::attested::BrokerClient;
use crate::files::{parse_mode, write_atomic};
use crate::metrics::ProxyMetrics;
use crate::provider::file::FileProvider;
use crate::provider::openbao::OpenBaoProvider;
use crate::provider::{Provider, SecretProvider};
use crate::socket::{Contents, SocketState};
use crate::{Error, Result};

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
    /// One socket per wrapped container under this directory (`<dir>/<container>/proxy.sock`),
    /// instead of the pod-wide `socket_path`.
    pub sockets_dir: Option<PathBuf>,
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
    /// The attestation broker, for bindings whose key release gates on an AttestationRequirement
    /// (their values come from the broker, never from OpenBao as the pod).
    pub broker: Option<BrokerClient>,
    pub metrics: Arc<ProxyMetrics>,
    /// Revoke the tokens (and the leases of dynamic secrets) when the refresh loop is shut down.
    pub revoke_on_shutdown: bool,
    /// Development only: read secrets from JSON files under this directory instead of OpenBao
    /// (see [`crate::provider::file`]; not secure).
    pub file_root: Option<PathBuf>,
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

/// The broker to ask for `binding`, when its key release gates on an AttestationRequirement; an
/// error when it does and no broker is configured (nothing is released without one).
fn attested<'c>(
    config: &'c ProxyConfig,
    binding: &BindingPlan,
) -> Result<Option<&'c BrokerClient>> {
    let Some(set) = &config.key_release else {
        return Ok(None);
    };
    let requirements = set.requirement_names();
    if requirements.is_empty() {
        return Ok(None);
    }
    config.broker.as_ref().map(Some).ok_or_else(|| {
        Error::Config(format!(
            "SecretBinding {}: key release requires attestation ({}) but this sidecar has no attestation broker (--broker-addr); nothing is released",
            binding.name,
            requirements.join(", ")
        ))
    })
}

/// An item of a broker release, delivered like one read from OpenBao (the values move into
/// zeroizing [`crate::SecretValue`]s).
fn from_broker(
    binding: &BindingPlan,
    item: &phantom_crds::SecretItem,
    payload: &mut phantom_attestation::protocol::Payload,
) -> Result<crate::socket::Delivered> {
    let Some(released) = payload.get_mut(&item.name) else {
        return Err(Error::Delivery(format!(
            "SecretBinding {}: the broker's release has no secret {}",
            binding.name, item.name
        )));
    };
    let data = std::mem::take(&mut released.data)
        .into_iter()
        .map(|(key, value)| (key, crate::SecretValue::new(value)))
        .collect();
    Ok(crate::socket::Delivered {
        value: crate::provider::select(binding, item, &data)?,
        version: released.version,
        lease: None,
    })
}

/// Reads everything the plan names through `provider` (or, for attested bindings, the broker),
/// each binding's key-release conditions checked first.
pub async fn fetch<P: SecretProvider>(
    provider: &mut P,
    config: &ProxyConfig,
    previous: Option<&Contents>,
) -> Result<Contents> {
    let mut contents = Contents::default();
    for binding in &config.plan {
        let mut released = match attested(config, binding)? {
            Some(broker) => Some(broker.release(&binding.name).await?),
            None => {
                check_release(config, binding)?;
                None
            }
        };
        for item in &binding.spec.secrets {
            let held = previous.and_then(|p| p.secrets.get(&item.name));
            let delivered = match &mut released {
                Some(payload) => from_broker(binding, item, payload)?,
                None => provider.read(binding, item, held).await?,
            };
            for delivery in &item.delivery {
                match delivery.kind {
                    DeliveryKind::Socket => {
                        contents.socket.insert(item.name.clone());
                    }
                    DeliveryKind::File => {
                        contents.files.insert(item.name.clone());
                    }
                    DeliveryKind::Env => {
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
            }
            contents.secrets.insert(item.name.clone(), delivered);
        }
    }
    for container in &config.wrapped_containers {
        contents.env.entry(container.clone()).or_default();
    }
    Ok(contents)
}

/// Writes every file delivery whose secret changed since `previous` (what is on disk). Every
/// file is attempted; the first failure is returned, and the caller keeps `previous` as what is on
/// disk, so the next round writes the failed files again.
pub fn write_files(
    config: &ProxyConfig,
    contents: &Contents,
    previous: Option<&Contents>,
) -> Result<()> {
    let mut first_failure = None;
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
                let written = parse_mode(delivery.mode.as_deref())
                    .and_then(|mode| write_atomic(&config.secrets_dir, path, &current.value, mode));
                if let Err(e) = written {
                    first_failure.get_or_insert(e);
                }
            }
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// What a failed round means for what the pod is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Unreachable within the grace period: the last good values are served, marked degraded.
    Degraded,
    /// Nothing may be served any more.
    Withdraw(Withdrawal),
}

/// Why a pod's secrets are withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// OpenBao refused the pod (403, a refused login: role or policy revoked, lease gone) or a
    /// key-release condition refuses it now: at once.
    Refused,
    /// OpenBao stayed unreachable longer than the grace period.
    GraceOver,
}

/// Classifies a failed round (pure): refused is withdrawn now, unreachable after the grace
/// period.
pub fn after_failure(error: &Error, failing_for: Duration, grace: Duration) -> Standing {
    let refused = match error {
        Error::KeyRelease { .. } => true,
        Error::BrokerRefused { kind, .. } => {
            !phantom_attestation::protocol::TRANSIENT_REFUSALS.contains(&kind.as_str())
        }
        Error::OpenBao(e) => e.is_session_refused(),
        _ => false,
    };
    if refused {
        Standing::Withdraw(Withdrawal::Refused)
    } else if failing_for > grace {
        Standing::Withdraw(Withdrawal::GraceOver)
    } else {
        Standing::Degraded
    }
}

/// Stops serving: the socket answers 503 with the reason and announces every secret removed,
/// and every secret file is removed. Returns what is served now (nothing).
fn withdraw(config: &ProxyConfig, state: &SocketState, why: Withdrawal, error: &Error) -> Contents {
    let reason = match why {
        Withdrawal::Refused => {
            format!(
                "OpenBao, a key-release condition or the attestation broker refused this pod ({error})"
            )
        }
        Withdrawal::GraceOver => format!(
            "OpenBao has been unreachable for longer than the grace period of {:?} ({error})",
            config.grace
        ),
    };
    tracing::error!(reason = %reason, "secrets withdrawn: removed from the socket and the volume; delivered again once OpenBao serves this pod");
    config.metrics.withdrawals.inc();
    config.metrics.degraded.set(1);
    for binding in &config.plan {
        for item in &binding.spec.secrets {
            for delivery in item
                .delivery
                .iter()
                .filter(|d| d.kind == DeliveryKind::File)
            {
                let path = delivery.path.as_deref().unwrap_or(&item.name);
                if let Ok(file) = crate::files::resolve(&config.secrets_dir, path)
                    && let Err(e) = std::fs::remove_file(&file)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::error!(file = %file.display(), error = %e, "removing a withdrawn secret file failed");
                }
            }
        }
    }
    let withdrawn = Contents {
        degraded: true,
        withdrawn: Some(reason),
        ..Contents::default()
    };
    state.publish(withdrawn.clone());
    withdrawn
}

/// How soon a round whose files could not all be written is retried (at most the interval).
pub const FILE_RETRY: Duration = Duration::from_secs(5);

fn refresh_interval(config: &ProxyConfig) -> Duration {
    // Spread renewals of many pods: up to `jitter` percent added, from a per-process random seed.
    let random = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    next_interval(&config.plan, config.refresh_override, random)
}

/// The wait before the next round: the override, or the shortest binding interval (never below
/// [`MIN_REFRESH_INTERVAL`]) plus up to its jitter percentage, picked by `random`.
fn next_interval(
    plan: &[BindingPlan],
    refresh_override: Option<Duration>,
    random: u64,
) -> Duration {
    if let Some(d) = refresh_override {
        return d;
    }
    let (interval, jitter) = plan
        .iter()
        .map(|b| {
            (
                Duration::from(b.spec.refresh.interval),
                b.spec.refresh.jitter_percent,
            )
        })
        .min_by_key(|(d, _)| *d)
        .unwrap_or((Duration::from_secs(240), 10));
    // Admission only hands over bindings that compiled (and so respect the floor); a plan from
    // elsewhere still never makes this a hot loop. `start` warns about it once.
    let interval = interval.max(MIN_REFRESH_INTERVAL);
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
            let Some(pid) = crate::socket::signallable(Some(*pid)) else {
                continue;
            };
            let sent = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
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
pub async fn start(config: &ProxyConfig, state: &SocketState) -> Result<(Provider, Contents)> {
    for binding in &config.plan {
        let interval = Duration::from(binding.spec.refresh.interval);
        if interval < MIN_REFRESH_INTERVAL {
            tracing::warn!(binding = %binding.name, ?interval, minimum = ?MIN_REFRESH_INTERVAL, "the binding's refresh interval is below the minimum; refreshing at the minimum");
        }
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
    let mut provider = match &config.file_root {
        Some(root) => {
            tracing::warn!(root = %root.display(), "the file provider is for development only: values come from plain files and no identity is checked");
            Provider::File(FileProvider::new(root))
        }
        None => Provider::OpenBao(OpenBaoProvider::new(
            OpenBaoClient::with_tls(&config.openbao_addr, &config.tls)?
                .with_observer(config.metrics.clone()),
            config.token_path.clone(),
        )),
    };
    let contents = fetch(&mut provider, config, None)
        .await
        .inspect_err(|e| config.metrics.failed(refusing_policy(e)))?;
    config.metrics.fetched(contents.secrets.len());
    write_files(config, &contents, None)?;
    state.publish(contents.clone());
    Ok((provider, contents))
}

/// Refreshes until `shutdown` completes: new versions reach files and watchers; failures beyond
/// the grace period mark the socket degraded (values keep being served). On shutdown the tokens
/// are revoked, and with them the leases of dynamic secrets.
pub async fn refresh_loop(
    config: Arc<ProxyConfig>,
    state: Arc<SocketState>,
    mut provider: impl SecretProvider,
    mut current: Contents,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let revoke = config.revoke_on_shutdown;
    let mut last_success = Instant::now();
    let mut round: u64 = 0;
    let mut shutdown = std::pin::pin!(shutdown);
    // What the files hold: `current` unless a write failed, then the contents they were last
    // written from, so that the failed files count as changed until a round writes them.
    let mut on_disk = current.clone();
    loop {
        let interval = refresh_interval(&config);
        let stale_files = on_disk.secrets.iter().any(|(name, d)| {
            current
                .secrets
                .get(name)
                .is_some_and(|c| c.version != d.version)
        });
        let wait = if stale_files {
            interval.min(FILE_RETRY)
        } else {
            interval
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => {
                if revoke {
                    provider.revoke().await;
                }
                return;
            }
        }
        round += 1;
        let span = tracing::info_span!("refresh", round, bindings = config.plan.len());
        async {
            match fetch(&mut provider, &config, Some(&current)).await {
                Ok(next) => {
                    match write_files(&config, &next, Some(&on_disk)) {
                        Ok(()) => on_disk = next.clone(),
                        Err(e) => {
                            config.metrics.file_write_failures.inc();
                            tracing::error!(error = %e, retry_in = ?FILE_RETRY.min(refresh_interval(&config)), "writing secret files failed; the next round writes them again");
                        }
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
                    if current.withdrawn.is_some() {
                        tracing::info!("OpenBao serves this pod again: its secrets are delivered again");
                    }
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
                    config.metrics.failed(refusing_policy(&e));
                    // OpenBao refusing the session (revoked, expired, role changed): revoke what
                    // is held and log in afresh next time. An outage keeps the sessions: they are
                    // still valid, and so are the leases of dynamic secrets read with them.
                    if matches!(&e, Error::OpenBao(e) if e.is_session_refused()) {
                        provider.reset().await;
                    }
                    match after_failure(&e, last_success.elapsed(), config.grace) {
                        Standing::Degraded => {
                            config.metrics.degraded.set(1);
                            tracing::warn!(error = %e, grace = ?config.grace, "refresh failed; serving the last good values for the grace period");
                            if !current.degraded {
                                current.degraded = true;
                                state.publish(current.clone());
                            }
                        }
                        Standing::Withdraw(why) => {
                            if current.withdrawn.is_none() {
                                current = withdraw(&config, &state, why, &e);
                                on_disk = Contents::default();
                            }
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(interval: &str, jitter: u8) -> Vec<BindingPlan> {
        serde_json::from_value(serde_json::json!([{
            "name": "app",
            "spec": {
                "selector": {"serviceAccountName": "app"},
                "openbao": {"role": "app"},
                "secrets": [],
                "refresh": {"interval": interval, "jitterPercent": jitter}
            }
        }]))
        .expect("plan")
    }

    #[test]
    fn refused_is_withdrawn_at_once_and_unreachable_after_the_grace_period() {
        let grace = Duration::from_secs(900);
        let refused = Error::OpenBao(phantom_openbao::Error::Read {
            addr: "https://openbao".into(),
            path: "secret/data/app".into(),
            status: 403,
            errors: "permission denied".into(),
            hint: "",
        });
        assert_eq!(
            after_failure(&refused, Duration::ZERO, grace),
            Standing::Withdraw(Withdrawal::Refused)
        );
        let away = Error::OpenBao(phantom_openbao::Error::Unreachable {
            addr: "https://openbao".into(),
            cause: "connection refused".into(),
            source: None,
        });
        assert_eq!(
            after_failure(&away, Duration::from_secs(10), grace),
            Standing::Degraded
        );
        assert_eq!(
            after_failure(&away, grace + Duration::from_secs(1), grace),
            Standing::Withdraw(Withdrawal::GraceOver)
        );
        let missing = Error::Delivery("secret file".into());
        assert_eq!(
            after_failure(&missing, Duration::ZERO, grace),
            Standing::Degraded
        );
    }

    #[test]
    fn a_broker_verdict_withdraws_and_a_transient_refusal_degrades() {
        let grace = Duration::from_secs(900);
        let refusal = |kind: &str| Error::BrokerRefused {
            binding: "app".into(),
            kind: kind.into(),
            message: "why".into(),
        };
        assert_eq!(
            after_failure(&refusal("requirement"), Duration::ZERO, grace),
            Standing::Withdraw(Withdrawal::Refused)
        );
        for transient in phantom_attestation::protocol::TRANSIENT_REFUSALS {
            assert_eq!(
                after_failure(&refusal(transient), Duration::ZERO, grace),
                Standing::Degraded
            );
        }
    }

    #[test]
    fn a_gated_binding_without_a_broker_releases_nothing_and_says_why() {
        let plan: phantom_crds::KeyReleasePlan = serde_json::from_value(serde_json::json!({
            "policyDigest": "d",
            "policies": [{"name": "p", "keyRelease": {"attestationRequirementRef": {"name": "prod-snp"}}}],
            "requirements": [{"name": "prod-snp", "spec": {"teeTypes": ["sev-snp"], "sevSnp": {
                "measurements": ["5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"],
                "minTcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 209}}}}],
            "pod": {"metadata": {"namespace": "shop"}}
        }))
        .expect("plan");
        let set = KeyReleaseSet::compile(&plan, Some("api-0")).expect("compiles");
        assert_eq!(set.requirement_names(), ["prod-snp"]);
        let binding = &plan_with_secret()[0];
        let config = ProxyConfig {
            key_release: Some(set),
            ..test_config(plan_with_secret())
        };
        let err = attested(&config, binding).unwrap_err().to_string();
        assert!(
            err.contains("SecretBinding app")
                && err.contains("prod-snp")
                && err.contains("--broker-addr"),
            "{err}"
        );
    }

    #[test]
    fn a_broker_item_moves_into_the_delivery_with_its_key_selected() {
        let binding = &plan_with_secret()[0];
        let item = &binding.spec.secrets[0];
        let mut payload: phantom_attestation::protocol::Payload = [(
            "db".to_owned(),
            phantom_attestation::protocol::PayloadItem {
                version: 4,
                data: [("password".to_owned(), "from-the-broker".to_owned())].into(),
            },
        )]
        .into();
        let delivered = from_broker(binding, item, &mut payload).expect("delivered");
        assert_eq!(delivered.value.expose(), "from-the-broker");
        assert_eq!(delivered.version, 4);
        assert!(payload["db"].data.is_empty(), "moved, not copied");
        let err = from_broker(binding, item, &mut Default::default()).unwrap_err();
        assert!(err.to_string().contains("has no secret db"), "{err}");
    }

    fn plan_with_secret() -> Vec<BindingPlan> {
        serde_json::from_value(serde_json::json!([{
            "name": "app",
            "spec": {
                "selector": {"serviceAccountName": "app"},
                "openbao": {"role": "app"},
                "secrets": [{"name": "db", "path": "shop/db", "key": "password", "delivery": [{"kind": "file", "path": "db"}]}]
            }
        }]))
        .expect("plan")
    }

    fn test_config(plan: Vec<BindingPlan>) -> ProxyConfig {
        ProxyConfig {
            openbao_addr: "https://openbao.example:8200".into(),
            tls: TlsSettings::default(),
            token_path: "/nonexistent".into(),
            secrets_dir: "/nonexistent".into(),
            socket_path: "/nonexistent".into(),
            sockets_dir: None,
            plan,
            wrapped_containers: Vec::new(),
            grace: Duration::from_secs(900),
            refresh_override: None,
            namespace: "shop".into(),
            key_release: None,
            broker: None,
            metrics: Arc::default(),
            revoke_on_shutdown: false,
            file_root: None,
        }
    }

    #[test]
    fn a_zero_interval_never_becomes_a_hot_loop() {
        assert_eq!(next_interval(&plan("0s", 0), None, 7), MIN_REFRESH_INTERVAL);
        assert_eq!(
            next_interval(&plan("10ms", 50), None, 0),
            MIN_REFRESH_INTERVAL
        );
    }

    #[test]
    fn the_shortest_interval_gets_at_most_its_jitter() {
        let plan = plan("10s", 10);
        for random in [0, 1, 999, u64::MAX] {
            let wait = next_interval(&plan, None, random);
            assert!(
                (Duration::from_secs(10)..Duration::from_secs(11)).contains(&wait),
                "{wait:?}"
            );
        }
        assert_eq!(
            next_interval(&plan, Some(Duration::from_secs(2)), 5),
            Duration::from_secs(2)
        );
    }
}
