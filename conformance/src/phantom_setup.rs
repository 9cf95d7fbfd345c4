//! Phantom set up on the node the way a platform team would: the admission webhook configured
//! with the locally imported images, a PhantomPolicy for the labelled namespaces and a
//! SecretBinding for the application's ServiceAccount. Shared by the node suite and the
//! pod-start bench.

use kube::Api;
use kube::api::PostParams;
use phantom_crds::{PhantomPolicy, SecretBinding};
use serde_json::{Value, json};

use crate::node::{EXEC_IMAGE, PROXY_IMAGE};
use crate::webhook::Webhook;
use crate::{Env, Error, Result};

/// What [`Env::phantom_app_namespace`] set up.
#[derive(Debug)]
pub struct AppNamespace {
    pub ns: String,
    /// The secret's KV path under `secret/`.
    pub path: String,
    /// Its value (for assertions; never print it).
    pub value: String,
}

impl Env {
    /// A webhook injecting `phantom.local` images (`imagePullPolicy: Never`) with OpenBao at
    /// `openbao`, acting on namespaces labelled `label=enabled` (registered as `name`).
    pub async fn node_webhook(&self, name: &str, label: &str, openbao: String) -> Result<Webhook> {
        self.node_webhook_with(name, label, |settings| {
            settings.inject.openbao_address = openbao;
        })
        .await
    }

    /// [`Env::node_webhook`] with more settings (`configure` sets at least the OpenBao address).
    pub async fn node_webhook_with(
        &self,
        name: &str,
        label: &str,
        configure: impl FnOnce(&mut phantom_admission::app::Settings),
    ) -> Result<Webhook> {
        self.install_crds().await?;
        let hook = self
            .start_webhook(|settings| {
                settings.inject.proxy_image = PROXY_IMAGE.into();
                settings.inject.exec_image = EXEC_IMAGE.into();
                settings.inject.image_pull_policy = "Never".into();
                settings.selection.enable_label = (label.into(), "enabled".into());
                configure(settings);
            })
            .await?;
        hook.register_mutating(self, name, json!({"matchLabels": {label: "enabled"}}))
            .await?;
        Ok(hook)
    }

    /// A Phantom namespace `<prefix>-…` labelled `label=enabled`, with the application's secret
    /// in OpenBao ([`Env::provision_app_secret`]), a PhantomPolicy `<ns>-phantom` with
    /// `injection`, and a SecretBinding `db` giving ServiceAccount `app` (created here) that
    /// secret as `password` with `deliveries`, refreshed every 2 s; returns once `hook` enforces
    /// both.
    pub async fn phantom_app_namespace(
        &self,
        hook: &Webhook,
        prefix: &str,
        label: &str,
        injection: Value,
        deliveries: Value,
    ) -> Result<AppNamespace> {
        self.phantom_app_namespace_refreshed(hook, prefix, label, injection, deliveries, "2s")
            .await
    }

    /// [`Env::phantom_app_namespace`] with the binding refreshed every `refresh` (a duration
    /// such as `"10m"`): benches counting OpenBao requests keep refreshes out of the count.
    pub async fn phantom_app_namespace_refreshed(
        &self,
        hook: &Webhook,
        prefix: &str,
        label: &str,
        injection: Value,
        deliveries: Value,
        refresh: &str,
    ) -> Result<AppNamespace> {
        let ns = self.create_namespace(prefix, &[(label, "enabled")]).await?;
        self.wait_for_default_service_account(&ns).await?;
        let (path, value) = self.provision_app_secret(&ns).await?;
        let spec = json!({
            "selector": {"serviceAccountName": "app"}, "openbao": {"role": format!("{ns}-app")},
            "refresh": {"interval": refresh, "jitterPercent": 0},
            "secrets": [{"name": "password", "path": path, "key": "password", "delivery": deliveries}]
        });
        self.bind_app_secret(hook, &ns, label, injection, spec)
            .await?;
        Ok(AppNamespace { ns, path, value })
    }

    async fn bind_app_secret(
        &self,
        hook: &Webhook,
        ns: &str,
        label: &str,
        injection: Value,
        binding_spec: Value,
    ) -> Result<()> {
        self.ensure_service_account(ns, "app").await?;
        let policy_name = format!("{ns}-phantom");
        let policy: PhantomPolicy = serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
            "metadata": {"name": policy_name},
            "spec": {"match": {"namespaceSelector": {"matchLabels": {label: "enabled"}}},
                     "injection": injection}
        }))
        .map_err(|e| Error::Io {
            context: "building the PhantomPolicy".into(),
            source: std::io::Error::other(e),
        })?;
        Api::<PhantomPolicy>::all(self.client())
            .create(&PostParams::default(), &policy)
            .await
            .map_err(Error::kube("creating the PhantomPolicy"))?;
        let binding: SecretBinding = serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding",
            "metadata": {"name": "db", "namespace": ns},
            "spec": binding_spec
        }))
        .map_err(|e| Error::Io {
            context: "building the SecretBinding".into(),
            source: std::io::Error::other(e),
        })?;
        Api::<SecretBinding>::namespaced(self.client(), ns)
            .create(&PostParams::default(), &binding)
            .await
            .map_err(Error::kube("creating the SecretBinding"))?;
        hook.wait_for_policy(&policy_name).await?;
        hook.wait_for_binding(ns, "db").await
    }
}
