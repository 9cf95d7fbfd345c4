//! Phantom's admission webhook started in-process against an [`Env`], with its serving
//! certificate signed by the environment's CA and webhook configurations pointing at
//! `https://127.0.0.1:<port>` (no Service or DNS needed on a loopback control plane).

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use phantom_admission::app::{Launched, Settings, launch};
use phantom_policies::store::Snapshot;
use serde_json::{Value, json};

use crate::{Env, Error, Result};

/// A running webhook and its TLS material.
#[derive(Debug)]
pub struct Webhook {
    pub launched: Launched,
    /// PEM of the CA that signed the serving certificate (the configurations' caBundle).
    pub ca_pem: String,
    pub cert_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
    /// The decision-seal key file admission reads.
    pub seal_key_path: std::path::PathBuf,
}

/// The files admission serves from: the pair and the decision-seal key.
#[derive(Debug, Clone)]
pub struct ServingFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub seal_key: std::path::PathBuf,
}

impl Env {
    /// Writes a new decision-seal key into the environment's directory (admission without a
    /// controller to make one) and returns its path.
    pub fn new_seal_key(&self) -> Result<std::path::PathBuf> {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let key = phantom_seal::Key::generate(now)
            .map_err(|e| Error::Setup(format!("making a decision-seal key: {e}")))?;
        let path = self
            .dir()
            .join(format!("decision-{}.key", crate::random_hex(4)));
        crate::process::write(&path, &key.encode())?;
        Ok(path)
    }
}

const FIELD_MANAGER: &str = "phantom-conformance";

/// Server-side applies the webhook configuration `config` of kind `K` named `name`.
async fn apply_config<K>(env: &Env, name: &str, config: &Value) -> Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::all(env.client())
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(config),
        )
        .await
        .map_err(Error::kube(format!("applying {} {name}", K::kind(&()))))?;
    Ok(())
}

impl Env {
    /// Starts a webhook on loopback with a fresh serving certificate; `configure` adjusts the
    /// settings (images, labels, timeouts) before launch.
    pub async fn start_webhook(&self, configure: impl FnOnce(&mut Settings)) -> Result<Webhook> {
        let id = crate::random_hex(4);
        let cert = self
            .ca()
            .serving_cert("phantom-admission", &["localhost"])?;
        let files = ServingFiles {
            cert: self.dir().join(format!("admission-{id}.crt")),
            key: self.dir().join(format!("admission-{id}.key")),
            seal_key: self.new_seal_key()?,
        };
        crate::process::write(&files.cert, &cert.cert_pem)?;
        crate::process::write(&files.key, &cert.key_pem)?;
        self.start_webhook_serving(files, self.ca().cert_pem.clone(), configure)
            .await
    }

    /// Starts a webhook on loopback serving `files`, whose pair `ca_pem` signed (reloaded when
    /// the files change).
    pub async fn start_webhook_serving(
        &self,
        files: ServingFiles,
        ca_pem: String,
        configure: impl FnOnce(&mut Settings),
    ) -> Result<Webhook> {
        self.start_webhook_serving_as(self.client(), files, ca_pem, configure)
            .await
    }

    /// [`Env::start_webhook_serving`] talking to the API server as `client`.
    pub async fn start_webhook_serving_as(
        &self,
        client: kube::Client,
        files: ServingFiles,
        ca_pem: String,
        configure: impl FnOnce(&mut Settings),
    ) -> Result<Webhook> {
        let ServingFiles {
            cert: cert_path,
            key: key_path,
            seal_key: seal_key_path,
        } = files;
        let mut settings =
            Settings::new(cert_path.clone(), key_path.clone(), seal_key_path.clone());
        settings.server.listen = ([127, 0, 0, 1], 0).into();
        settings.server.health_listen = ([127, 0, 0, 1], 0).into();
        settings.server.shutdown_grace = Duration::from_secs(2);
        settings.cert_reload_interval = Duration::from_millis(200);
        settings.debounce = Duration::from_millis(20);
        configure(&mut settings);
        let launched = launch(client, settings).await?;
        Ok(Webhook {
            launched,
            ca_pem,
            cert_path,
            key_path,
            seal_key_path,
        })
    }
}

impl Webhook {
    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.launched.server.addr)
    }

    /// `http://127.0.0.1:<port><path>` of the health listener.
    pub fn health_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.launched.server.health_addr)
    }

    fn ca_bundle(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// Registers (server-side apply) a MutatingWebhookConfiguration `name` with the controller's
    /// pod rules (CREATE, UPDATE, ephemeral containers) in the namespaces `namespace_selector`
    /// selects, failing closed.
    pub async fn register_mutating(
        &self,
        env: &Env,
        name: &str,
        namespace_selector: Value,
    ) -> Result<()> {
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "inject.phantom.dev",
                "clientConfig": {"url": self.url("/mutate"), "caBundle": self.ca_bundle()},
                "rules": phantom_controller::webhooks::pod_rules(),
                "namespaceSelector": namespace_selector,
                "failurePolicy": "Fail",
                "sideEffects": "NoneOnDryRun",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
                "reinvocationPolicy": "Never"
            }]
        });
        apply_config::<MutatingWebhookConfiguration>(env, name, &config).await
    }

    /// Registers a ValidatingWebhookConfiguration `name` for Phantom's three resources.
    pub async fn register_validating(&self, env: &Env, name: &str) -> Result<()> {
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "validate.phantom.dev",
                "clientConfig": {"url": self.url("/validate"), "caBundle": self.ca_bundle()},
                "rules": [{"apiGroups": ["phantom.dev"], "apiVersions": ["v1alpha1"],
                           "operations": ["CREATE", "UPDATE"],
                           "resources": ["phantompolicies", "secretbindings", "attestationrequirements"],
                           "scope": "*"}],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10
            }]
        });
        apply_config::<ValidatingWebhookConfiguration>(env, name, &config).await
    }

    /// Deletes the MutatingWebhookConfiguration `name`.
    pub async fn unregister_mutating(env: &Env, name: &str) -> Result<()> {
        Api::<MutatingWebhookConfiguration>::all(env.client())
            .delete(name, &DeleteParams::default())
            .await
            .map_err(Error::kube(format!(
                "deleting MutatingWebhookConfiguration {name}"
            )))?;
        Ok(())
    }

    /// Waits until the policy set in force satisfies `ready` (say, includes a new policy).
    pub async fn wait_for(&self, what: &str, ready: impl Fn(&Snapshot) -> bool) -> Result<()> {
        let store = self.launched.admitter.store.clone();
        crate::wait::until(
            format!("the webhook's policy set: {what}"),
            Duration::from_secs(30),
            Duration::from_millis(20),
            || {
                let ok = ready(&store.snapshot());
                async move { Ok::<_, Error>(ok.then_some(())) }
            },
        )
        .await
    }

    /// Waits until the policy set enforces the PhantomPolicy `name`.
    pub async fn wait_for_policy(&self, name: &str) -> Result<()> {
        self.wait_for(&format!("policy {name} enforced"), |s| {
            s.synced && s.set.policy_names().contains(&name)
        })
        .await
    }

    /// Waits until the policy set holds the SecretBinding `namespace/name`.
    pub async fn wait_for_binding(&self, namespace: &str, name: &str) -> Result<()> {
        use kube::ResourceExt;
        self.wait_for(&format!("binding {namespace}/{name} known"), |s| {
            s.sources
                .bindings
                .iter()
                .any(|b| b.name_any() == name && b.namespace().as_deref() == Some(namespace))
        })
        .await
    }

    /// The webhook's `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let url = self.health_url("/metrics");
        let http = |source| Error::Http {
            what: format!("GET {url}"),
            source,
        };
        reqwest::get(&url)
            .await
            .map_err(http)?
            .text()
            .await
            .map_err(http)
    }

    /// An HTTPS client trusting the webhook's CA.
    pub fn https_client(&self) -> Result<reqwest::Client> {
        let http = |source| Error::Http {
            what: "building a client trusting the webhook's CA".into(),
            source,
        };
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).map_err(http)?;
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(http)
    }
}
