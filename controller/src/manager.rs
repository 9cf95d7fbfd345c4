//! Owns the webhook configurations and their certificate. One loop, so the order of a rotation is
//! always: CA Secret, then the configurations' caBundle (old and new CA), then the serving pair.
//! Woken by watch events on the two configurations (a deletion or edit is put back within a
//! second or two), by the breaker changing state, and by a timer (expiry checks, resync).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use zeroize::Zeroizing;

use crate::breaker::State;
use crate::certs::{self, Material, Pair};
use crate::config::Settings;
use crate::gaps::{self, DECISION_KEY};
use crate::metrics::{
    Cause, Certificate, CertificateLabels, Configuration, Metrics, RestorationLabels,
};
use crate::webhooks::{self, MANAGED_BY};
use crate::{Error, Result};

mod classify;

pub use classify::{
    ConfigurationAction, MaterialSource, SecretWrite, SecretWrites, material_source, secret_writes,
};

const SUBJECT_ANNOTATION: &str = "phantom.dev/certificate-subject";

/// What the manager hands the other duties.
#[derive(Debug)]
pub struct Published {
    /// The CA bundle (for the breaker's probes).
    pub bundle: watch::Sender<Option<String>>,
    /// The decision-seal key (for the gap scan).
    pub seal_key: watch::Sender<Option<phantom_seal::Key>>,
}

/// One configuration the manager keeps in shape.
struct Owned<K> {
    api: Api<K>,
    name: String,
    /// What we applied last: an observed object that differs from it was changed by someone else.
    last_applied: Option<Value>,
}

/// The webhook manager's state.
pub struct Manager {
    client: Client,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    material: Option<Material>,
    breaker: watch::Receiver<State>,
    published: Published,
    restored: Arc<Notify>,
    mutating: Owned<MutatingWebhookConfiguration>,
    validating: Owned<ValidatingWebhookConfiguration>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("mutating", &self.mutating.name)
            .field("validating", &self.validating.name)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

impl Manager {
    /// A manager publishing what it holds on `published` and notifying `restored` after it put a
    /// deleted configuration back (pods may have slipped through meanwhile).
    pub fn new(
        client: Client,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        breaker: watch::Receiver<State>,
        published: Published,
        restored: Arc<Notify>,
    ) -> Self {
        Self {
            mutating: Owned {
                api: Api::all(client.clone()),
                name: settings.webhooks.mutating_name.clone(),
                last_applied: None,
            },
            validating: Owned {
                api: Api::all(client.clone()),
                name: settings.webhooks.validating_name.clone(),
                last_applied: None,
            },
            client,
            settings,
            metrics,
            recorder,
            material: None,
            breaker,
            published,
            restored,
        }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    /// What the Secrets hold, or `None` when they are missing or unreadable (then a new CA is
    /// generated: the configurations get its bundle before admission gets the new pair).
    async fn load(&self) -> Result<Option<Material>> {
        let certs = &self.settings.certs;
        let api = self.secrets();
        let read = |name: String| {
            let api = api.clone();
            async move {
                api.get_opt(&name).await.map_err(Error::kube(format!(
                    "reading Secret {}/{name}",
                    self.settings.namespace
                )))
            }
        };
        let (Some(ca), Some(serving)) = (
            read(certs.ca_secret.clone()).await?,
            read(certs.serving_secret.clone()).await?,
        ) else {
            return Ok(None);
        };
        let parsed = (|| {
            let ca_pair =
                certs::pair(text(&ca, "ca.crt")?, Zeroizing::new(text(&ca, "ca.key")?)).ok()?;
            let serving_pair = certs::pair(
                text(&serving, "tls.crt")?,
                Zeroizing::new(text(&serving, "tls.key")?),
            )
            .ok()?;
            Some(Material {
                ca: ca_pair,
                previous_ca_pem: text(&ca, "previous-ca.crt").filter(|s| !s.is_empty()),
                serving: serving_pair,
                subject: serving
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SUBJECT_ANNOTATION).cloned())
                    .unwrap_or_default(),
                decision_key: self.stored_decision_key(&serving),
            })
        })();
        if parsed.is_none() {
            tracing::warn!(namespace = %self.settings.namespace, ca = %certs.ca_secret, serving = %certs.serving_secret, "the webhook certificate Secrets are incomplete or unreadable: generating a new CA and serving certificate");
        }
        Ok(parsed)
    }

    /// The serving Secret's decision-seal key; `None` when it has none (written before seals
    /// existed) or it is damaged, and then a new one is made.
    fn stored_decision_key(&self, serving: &Secret) -> Option<phantom_seal::Key> {
        let what = format!(
            "in Secret {}/{} ({DECISION_KEY})",
            self.settings.namespace, self.settings.certs.serving_secret
        );
        match gaps::stored_key(serving, &what)? {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(error = %e, "making a new decision-seal key: pods sealed with the damaged one will be reported as admitted without Phantom");
                None
            }
        }
    }

    async fn apply_secret(
        &self,
        name: &str,
        type_: &str,
        data: &[(&str, &str)],
        annotations: Value,
    ) -> Result<()> {
        let encoded: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": self.settings.namespace,
                         "labels": {MANAGED_BY.0: MANAGED_BY.1}, "annotations": annotations},
            "type": type_,
            "data": encoded,
        });
        self.secrets()
            .patch(
                name,
                &PatchParams::apply(&self.settings.field_manager).force(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(Error::kube(format!(
                "writing Secret {}/{name}",
                self.settings.namespace
            )))?;
        Ok(())
    }

    async fn write_ca(&self, m: &Material) -> Result<()> {
        self.apply_secret(
            &self.settings.certs.ca_secret,
            "Opaque",
            &[
                ("ca.crt", &m.ca.cert_pem),
                ("ca.key", &m.ca.key_pem),
                (
                    "previous-ca.crt",
                    m.previous_ca_pem.as_deref().unwrap_or_default(),
                ),
            ],
            json!({}),
        )
        .await
    }

    async fn write_serving(&self, m: &Material) -> Result<()> {
        let bundle = m.bundle();
        let decision_key = m.decision_key.as_ref().map(phantom_seal::Key::encode).ok_or_else(|| {
            Error::Config("the webhook material holds no decision-seal key (renew makes one); this is a bug".into())
        })?;
        self.apply_secret(
            &self.settings.certs.serving_secret,
            "kubernetes.io/tls",
            &[
                ("tls.crt", &m.serving.cert_pem),
                ("tls.key", &m.serving.key_pem),
                ("ca.crt", &bundle),
                (DECISION_KEY, &decision_key),
            ],
            json!({SUBJECT_ANNOTATION: m.subject}),
        )
        .await?;
        if let Some(dir) = &self.settings.certs.write_dir {
            write_files(dir, &m.serving, &bundle, &decision_key)?;
        }
        Ok(())
    }

    fn record_expiry(&self, m: &Material) {
        let now = unix_now();
        for (certificate, pair) in [(Certificate::Ca, &m.ca), (Certificate::Serving, &m.serving)] {
            self.metrics
                .certificate_expiry_seconds
                .get_or_create(&CertificateLabels { certificate })
                .set(pair.not_after - now);
        }
    }

    /// Renews what is due; returns the material and which Secrets to write (the CA Secret is
    /// written here, the serving pair only after the configurations trust its CA).
    async fn renew(&mut self) -> Result<(Material, SecretWrites)> {
        let stored = self.load().await?;
        let source = material_source(stored.is_some(), self.material.is_some());
        match source {
            MaterialSource::Stored => self.material = stored,
            MaterialSource::WriteBack => {
                tracing::warn!(namespace = %self.settings.namespace, "the webhook certificate Secrets were deleted or damaged: writing them back");
            }
            MaterialSource::Fresh => {}
        }
        let (dns, ips) = self.settings.webhooks.admission.subject_names();
        let (material, renewal) = certs::renew(
            self.material.clone(),
            &dns,
            &ips,
            unix_now(),
            self.settings.certs.ca_validity,
            self.settings.certs.serving_validity,
        )?;
        let writes = secret_writes(source, renewal);
        match writes.ca {
            Some(SecretWrite::Rotated) => {
                self.write_ca(&material).await?;
                self.count_rotation(Certificate::Ca);
                tracing::info!(namespace = %self.settings.namespace, secret = %self.settings.certs.ca_secret, not_after = material.ca.not_after, "generated a new webhook CA");
            }
            Some(SecretWrite::WrittenBack) => self.write_ca(&material).await?,
            None => {}
        }
        Ok((material, writes))
    }

    fn count_rotation(&self, certificate: Certificate) {
        self.metrics
            .certificate_rotations
            .get_or_create(&CertificateLabels { certificate })
            .inc();
    }

    /// One pass: certificates, both configurations, then the serving pair.
    pub async fn reconcile(&mut self) -> Result<()> {
        let (material, writes) = self.renew().await?;
        let bundle = material.bundle();
        let open = *self.breaker.borrow() == State::Open;
        let hooks = &self.settings.webhooks;
        let desired_mutating = webhooks::mutating(hooks, &bundle, open);
        let desired_validating = webhooks::validating(hooks, &bundle, open);
        let mut restored = false;
        restored |= self.keep(Configuration::Mutating, desired_mutating).await?;
        restored |= self
            .keep(Configuration::Validating, desired_validating)
            .await?;
        match writes.serving {
            Some(SecretWrite::Rotated) => {
                self.write_serving(&material).await?;
                self.count_rotation(Certificate::Serving);
                tracing::info!(namespace = %self.settings.namespace, secret = %self.settings.certs.serving_secret, subject = %material.subject, not_after = material.serving.not_after, "issued a new admission serving certificate");
            }
            Some(SecretWrite::WrittenBack) => self.write_serving(&material).await?,
            None => {
                if let Some(dir) = &self.settings.certs.write_dir
                    && !(dir.join("tls.crt").exists() && dir.join(DECISION_KEY).exists())
                    && let Some(key) = &material.decision_key
                {
                    write_files(dir, &material.serving, &bundle, &key.encode())?;
                }
            }
        }
        self.record_expiry(&material);
        if let Some(key) = &material.decision_key {
            self.published.seal_key.send_if_modified(|held| {
                let changed = held.as_ref().is_none_or(|h| *h.encode() != *key.encode());
                if changed {
                    *held = Some(key.clone());
                }
                changed
            });
        }
        self.published.bundle.send_if_modified(|held| {
            let changed = held.as_deref() != Some(bundle.as_str());
            *held = Some(bundle);
            changed
        });
        self.material = Some(material);
        if restored {
            self.restored.notify_one();
        }
        Ok(())
    }

    /// Applies `desired` when the configuration is missing or differs; `Ok(true)` when it had
    /// been deleted or altered by someone else (a restoration, with a log line and an Event).
    async fn keep(&mut self, which: Configuration, desired: Value) -> Result<bool> {
        let manager = &self.settings.field_manager;
        let (action, name) = match which {
            Configuration::Mutating => (
                keep(&mut self.mutating, desired, manager).await?,
                &self.mutating.name,
            ),
            Configuration::Validating => (
                keep(&mut self.validating, desired, manager).await?,
                &self.validating.name,
            ),
        };
        let (kind, reference) = reference(which, name, &self.settings.namespace);
        match action {
            ConfigurationAction::Restore { cause, paths } => {
                self.metrics
                    .webhook_restorations
                    .get_or_create(&RestorationLabels {
                        configuration: which,
                        cause,
                    })
                    .inc();
                let note = if cause == Cause::Deleted {
                    format!(
                        "{kind} {name} was deleted; re-created it (the controller owns it: change the controller's settings instead)"
                    )
                } else {
                    format!(
                        "{kind} {name} was altered ({}); put it back (the controller owns it: change the controller's settings instead)",
                        paths.join(", ")
                    )
                };
                tracing::warn!(%kind, %name, cause = cause.as_str(), "webhook configuration restored");
                tokio::spawn(publish(
                    self.recorder.clone(),
                    reference,
                    EventType::Warning,
                    "WebhookConfigurationRestored",
                    note,
                ));
                Ok(true)
            }
            ConfigurationAction::Create => {
                tracing::info!(%kind, %name, "webhook configuration created");
                Ok(false)
            }
            ConfigurationAction::Update | ConfigurationAction::Unchanged => Ok(false),
        }
    }
}

/// Records an Event (in the background callers spawn it in; a failure is logged).
pub async fn publish(
    recorder: Recorder,
    reference: ObjectReference,
    type_: EventType,
    reason: &'static str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "recording an Event failed");
    }
}

/// Events about these cluster-scoped objects are recorded in the controller's namespace, with the
/// reference naming that namespace too: API servers before 1.22 refuse an Event whose
/// `regarding.namespace` differs from its own, and operators find them with
/// `kubectl get events -n <controller namespace>`.
fn reference(
    which: Configuration,
    name: &str,
    events_namespace: &str,
) -> (&'static str, ObjectReference) {
    let kind = which.as_str();
    (
        kind,
        ObjectReference {
            api_version: Some("admissionregistration.k8s.io/v1".into()),
            kind: Some(kind.into()),
            name: Some(name.into()),
            namespace: Some(events_namespace.into()),
            ..ObjectReference::default()
        },
    )
}

/// Reads the configuration, classifies it against `desired`, and applies `desired` unless it is
/// unchanged.
async fn keep<K>(
    owned: &mut Owned<K>,
    desired: Value,
    field_manager: &str,
) -> Result<ConfigurationAction>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    let observed = owned
        .api
        .get_opt(&owned.name)
        .await
        .map_err(Error::kube(format!("reading {kind} {}", owned.name)))?
        .map(|o| serde_json::to_value(o).unwrap_or_default());
    let action = classify::configuration(observed.as_ref(), &desired, owned.last_applied.as_ref());
    match (&action, &observed) {
        (ConfigurationAction::Unchanged, _) => {}
        // Replaced whole, not applied: an apply keeps fields other managers own, and a selector
        // term or match condition someone added is exactly what must go.
        (ConfigurationAction::Update | ConfigurationAction::Restore { .. }, Some(observed)) => {
            let mut replacement = desired.clone();
            replacement["metadata"]["resourceVersion"] =
                observed["metadata"]["resourceVersion"].clone();
            let replacement: K = serde_json::from_value(replacement).map_err(|e| {
                Error::Config(format!(
                    "the desired {kind} {} is not a valid object: {e}",
                    owned.name
                ))
            })?;
            owned
                .api
                .replace(
                    &owned.name,
                    &PostParams {
                        field_manager: Some(field_manager.to_owned()),
                        ..PostParams::default()
                    },
                    &replacement,
                )
                .await
                .map_err(Error::kube(format!("replacing {kind} {}", owned.name)))?;
        }
        _ => {
            owned
                .api
                .patch(
                    &owned.name,
                    &PatchParams::apply(field_manager).force(),
                    &Patch::Apply(&desired),
                )
                .await
                .map_err(Error::kube(format!("applying {kind} {}", owned.name)))?;
        }
    }
    owned.last_applied = Some(desired);
    Ok(action)
}

/// Writes `tls.key`, `tls.crt`, `ca.crt` and `decision.key` into `dir` (each atomically, the keys
/// 0600), for an admission process that reads files.
pub fn write_files(dir: &Path, serving: &Pair, bundle: &str, decision_key: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, content, mode) in [
        ("tls.key", serving.key_pem.as_str(), 0o600),
        ("tls.crt", serving.cert_pem.as_str(), 0o644),
        ("ca.crt", bundle, 0o644),
        (DECISION_KEY, decision_key, 0o600),
    ] {
        let target = dir.join(name);
        let temporary = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io(&temporary))?;
        file.write_all(content.as_bytes()).map_err(io(&temporary))?;
        std::fs::rename(&temporary, &target).map_err(io(&target))?;
    }
    Ok(())
}

fn named<K>(api: Api<K>, name: &str) -> impl futures::Stream<Item = ()> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .filter_map(|event| async move {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                Some(())
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "watching a webhook configuration failed; retrying");
                None
            }
        }
    })
}

impl Manager {
    /// Runs until dropped: reconciles on every event, breaker change and tick; a failed pass is
    /// retried after a second.
    pub async fn run(mut self) {
        let mutating = named(self.mutating.api.clone(), &self.mutating.name);
        let validating = named(self.validating.api.clone(), &self.validating.name);
        let mut events = std::pin::pin!(futures::stream::select(mutating, validating));
        let tick = self
            .settings
            .certs
            .check_interval
            .min(self.settings.webhooks.resync);
        let mut breaker = self.breaker.clone();
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconciling the webhook configurations failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tokio::select! {
                _ = events.next() => {}
                _ = breaker.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }
}

/// The Event reference of the MutatingWebhookConfiguration `name` (breaker transitions).
pub fn mutating_reference(name: &str, events_namespace: &str) -> ObjectReference {
    reference(Configuration::Mutating, name, events_namespace).1
}
