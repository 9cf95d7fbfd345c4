//! Phantom's controller started in-process against an [`Env`], and admission started to serve
//! the certificate the controller issued, on the loopback port the controller's webhook
//! configurations point at. Each controller gets its own namespace (Secrets, Lease, published
//! set), configuration names and enable label, so several can share one environment.

use std::time::Duration;

use phantom_controller::app::{Running, launch};
use phantom_controller::config::{AdmissionEndpoint, Settings};

use crate::webhook::{ServingFiles, Webhook};
use crate::{Env, Error, Result};

impl Env {
    /// Settings for a controller in a new namespace `<prefix>-<random>` whose configurations are
    /// named after it, cover namespaces labelled `<enable_key>=enabled`, and point at admission on
    /// a free loopback port; the serving pair is also written under the environment's directory.
    /// Timings are short (probes every 300 ms, 4 s leases) so the suites stay quick.
    pub fn controller_settings(&self, prefix: &str, enable_key: &str) -> Result<Settings> {
        let id = format!("{prefix}-{}", crate::random_hex(3));
        let port = crate::env::free_port()?;
        let mut s = Settings::new(
            &id,
            AdmissionEndpoint::Url(format!("https://127.0.0.1:{port}")),
            &format!("{id}-first"),
        );
        s.webhooks.mutating_name = format!("{id}-injector");
        s.webhooks.validating_name = format!("{id}-validator");
        s.webhooks.selection.enable_label = (enable_key.to_owned(), "enabled".to_owned());
        s.webhooks.resync = Duration::from_secs(5);
        s.certs.write_dir = Some(self.dir().join(format!("controller-{id}")));
        s.certs.check_interval = Duration::from_secs(1);
        s.breaker.probe_interval = Duration::from_millis(300);
        s.breaker.probe_timeout = Duration::from_secs(1);
        s.leader.lease_duration = Duration::from_secs(4);
        s.leader.retry_period = Duration::from_millis(500);
        s.gaps.scan_interval = Duration::from_secs(3);
        s.debounce = Duration::from_millis(50);
        Ok(s)
    }

    /// Starts a controller replica (creating its namespace the first time).
    pub async fn start_controller(&self, settings: Settings) -> Result<Running> {
        self.start_controller_as(self.client(), settings).await
    }

    /// [`Env::start_controller`] talking to the API server as `client` (a ServiceAccount's
    /// permissions, to test RBAC; the namespace is created as the admin).
    pub async fn start_controller_as(
        &self,
        client: kube::Client,
        settings: Settings,
    ) -> Result<Running> {
        let exists = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client())
            .get_opt(&settings.namespace)
            .await
            .map_err(Error::kube(format!(
                "reading namespace {}",
                settings.namespace
            )))?
            .is_some();
        if !exists {
            self.create_namespace_named(&settings.namespace, &[])
                .await?;
        }
        Ok(launch(client, settings).await?)
    }

    /// Starts admission where `settings`' configurations point, serving the pair the controller
    /// wrote (waiting for it), reading the controller's published set at start.
    pub async fn start_webhook_for(
        &self,
        settings: &Settings,
        configure: impl FnOnce(&mut phantom_admission::app::Settings),
    ) -> Result<Webhook> {
        self.start_webhook_as(self.client(), settings, configure)
            .await
    }

    /// [`Env::start_webhook_for`] with `client`'s permissions (a ServiceAccount's, to test RBAC).
    pub async fn start_webhook_as(
        &self,
        client: kube::Client,
        settings: &Settings,
        configure: impl FnOnce(&mut phantom_admission::app::Settings),
    ) -> Result<Webhook> {
        let dir = settings
            .certs
            .write_dir
            .clone()
            .ok_or_else(|| {
                Error::Setup(
                    "starting admission for a controller: its settings write no certificate files (certs.write_dir)".into(),
                )
            })?;
        let (cert, key, ca) = (dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt"));
        let seal_key = dir.join(phantom_controller::gaps::DECISION_KEY);
        crate::wait::until(
            format!(
                "the controller's serving certificate and decision-seal key in {}",
                dir.display()
            ),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let ready = cert.exists() && key.exists() && ca.exists() && seal_key.exists();
                async move { Ok::<_, Error>(ready.then_some(())) }
            },
        )
        .await?;
        let ca_pem =
            std::fs::read_to_string(&ca).map_err(Error::io(format!("reading {}", ca.display())))?;
        let base = settings.webhooks.admission.base_url();
        let listen: std::net::SocketAddr = base
            .trim_start_matches("https://")
            .parse()
            .map_err(|e| {
                Error::Setup(format!(
                    "starting admission for a controller: the admission URL {base} is not https://IP:port: {e}"
                ))
            })?;
        let selection = settings.webhooks.selection.clone();
        let published = (settings.namespace.clone(), settings.published_set.clone());
        let files = ServingFiles {
            cert,
            key,
            seal_key,
        };
        self.start_webhook_serving_as(client, files, ca_pem, |s| {
            s.server.listen = listen;
            s.selection = selection;
            s.published_set = Some(published);
            configure(s);
        })
        .await
    }
}
