//! Kubernetes-side helpers: namespaces, ServiceAccounts, pod identities minted with TokenRequest
//! (exactly what the kubelet does for a projected token), and the Phantom CRDs.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use crate::env::{REVIEWER_NAMESPACE, REVIEWER_SERVICE_ACCOUNT};
use crate::{Env, Error, OpenBao, Result, wait};

/// Field manager of the environment's server-side applies.
const FIELD_MANAGER: &str = "phantom-conformance";

/// A pod's identity as OpenBao sees it: a ServiceAccount token with audience `openbao`.
#[derive(Clone)]
pub struct PodIdentity {
    pub namespace: String,
    pub service_account: String,
    pub token: String,
}

impl std::fmt::Debug for PodIdentity {
    // The token is a credential: keep it out of test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodIdentity")
            .field("namespace", &self.namespace)
            .field("service_account", &self.service_account)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Env {
    /// Creates a namespace named `<prefix>-<random>` with `labels`; returns its name.
    pub async fn create_namespace(&self, prefix: &str, labels: &[(&str, &str)]) -> Result<String> {
        let name = format!("{prefix}-{}", crate::random_hex(3));
        self.create_namespace_named(&name, labels).await?;
        Ok(name)
    }

    /// Creates the namespace `name` with `labels`.
    pub async fn create_namespace_named(&self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.to_owned());
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(Error::kube(format!("creating namespace {name}")))?;
        Ok(())
    }

    /// Creates a ServiceAccount unless it exists.
    pub async fn ensure_service_account(&self, namespace: &str, name: &str) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        if api
            .get_opt(name)
            .await
            .map_err(Error::kube(format!(
                "reading ServiceAccount {namespace}/{name}"
            )))?
            .is_some()
        {
            return Ok(());
        }
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some(name.to_owned());
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(Error::kube(format!(
                "creating ServiceAccount {namespace}/{name}"
            ))(e)),
        }
    }

    /// Mints a token for a ServiceAccount through the TokenRequest API.
    pub async fn token_request(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        ttl: Duration,
    ) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                expiration_seconds: Some(ttl.as_secs() as i64),
                ..Default::default()
            },
            ..Default::default()
        };
        let resp = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(Error::kube(format!(
                "TokenRequest for {namespace}/{service_account}"
            )))?;
        Ok(resp.status.map(|s| s.token).unwrap_or_default())
    }

    /// A token bound to the pod `namespace/pod` (UID `pod_uid`), as the kubelet projects it: the
    /// API server's TokenReview then names the pod.
    pub async fn pod_bound_token(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
        pod_uid: &str,
        audience: &str,
    ) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_owned()],
                expiration_seconds: Some(600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.to_owned()),
                    uid: Some(pod_uid.to_owned()),
                }),
            },
            ..Default::default()
        };
        let resp = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(Error::kube(format!(
                "TokenRequest for {namespace}/{service_account} bound to pod {pod}"
            )))?;
        Ok(resp.status.map(|s| s.token).unwrap_or_default())
    }

    /// A KV v2 secret `secret/<ns>/db` with a random `password`, an OpenBao policy `<ns>` reading
    /// `secret/<ns>/*`, and a Kubernetes auth role `<ns>-app` for ServiceAccount `<ns>/app`.
    /// Returns the path and the value (for assertions; never print it).
    pub async fn provision_app_secret(&self, ns: &str) -> Result<(String, String)> {
        Self::provision_app_secret_on(self.openbao(), ns).await
    }

    /// [`Env::provision_app_secret`] on another OpenBao server (TLS tests).
    pub async fn provision_app_secret_on(bao: &OpenBao, ns: &str) -> Result<(String, String)> {
        let value = format!("s3cr3t-{}", crate::random_hex(16));
        let path = format!("{ns}/db");
        bao.kv_put("secret", &path, serde_json::json!({ "password": value }))
            .await?;
        bao.put_kv_read_policy(ns, "secret", &[&format!("{ns}/*")])
            .await?;
        bao.put_kubernetes_role(
            "kubernetes",
            &crate::KubernetesRole::for_service_account(&format!("{ns}-app"), ns, "app", &[ns]),
        )
        .await?;
        Ok((path, value))
    }

    /// The identity a pod running as `namespace/service_account` presents to OpenBao (the
    /// ServiceAccount is created if missing; the token has audience `openbao` and lives 10 minutes).
    pub async fn pod_identity(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<PodIdentity> {
        self.ensure_service_account(namespace, service_account)
            .await?;
        let token = self
            .token_request(
                namespace,
                service_account,
                &["openbao"],
                Duration::from_secs(600),
            )
            .await?;
        Ok(PodIdentity {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            token,
        })
    }

    /// Gives OpenBao a reviewer identity (ServiceAccount bound to `system:auth-delegator`) and
    /// points its Kubernetes auth method at this API server.
    pub(crate) async fn configure_openbao_kubernetes_auth(&self) -> Result<()> {
        self.configure_kubernetes_auth_on(self.openbao()).await
    }

    /// Points `bao`'s Kubernetes auth method at this API server, with the shared reviewer.
    pub async fn configure_kubernetes_auth_on(&self, bao: &OpenBao) -> Result<()> {
        self.ensure_service_account(REVIEWER_NAMESPACE, REVIEWER_SERVICE_ACCOUNT)
            .await?;
        let binding = ClusterRoleBinding {
            metadata: kube::api::ObjectMeta {
                name: Some("openbao-token-reviewer".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "system:auth-delegator".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: REVIEWER_SERVICE_ACCOUNT.into(),
                namespace: Some(REVIEWER_NAMESPACE.into()),
                ..Default::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(self.client())
            .patch(
                "openbao-token-reviewer",
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&binding),
            )
            .await
            .map_err(Error::kube(
                "binding OpenBao's reviewer to system:auth-delegator",
            ))?;
        let reviewer_jwt = self
            .token_request(
                REVIEWER_NAMESPACE,
                REVIEWER_SERVICE_ACCOUNT,
                &[],
                Duration::from_secs(24 * 3600),
            )
            .await?;
        bao.configure_kubernetes_auth(
            "kubernetes",
            self.api_url(),
            &self.ca().cert_pem,
            &reviewer_jwt,
        )
        .await
    }

    /// Installs (server-side apply) Phantom's three CRDs and waits until they are Established.
    pub async fn install_crds(&self) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        for file in phantom_crds::all_crds() {
            let name = file.crd.name_any();
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&file.crd),
            )
            .await
            .map_err(Error::kube(format!("applying CRD {name}")))?;
        }
        for file in phantom_crds::all_crds() {
            let name = file.crd.name_any();
            wait::until(
                format!("CRD {name} to be Established"),
                Duration::from_secs(30),
                Duration::from_millis(100),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let crd = api.get(&name).await?;
                        let established = crd
                            .status
                            .and_then(|s| s.conditions)
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        Ok::<_, kube::Error>(established.then_some(()))
                    }
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until the controller-manager has created the namespace's `default` ServiceAccount
    /// and its token Secret (1.20's ServiceAccount admission refuses a pod that mounts the token
    /// before the token controller has added it: "No API token found").
    pub async fn wait_for_default_service_account(&self, namespace: &str) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        wait::until(
            format!(
                "the default ServiceAccount of {namespace} (is kube-controller-manager running?)"
            ),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let sa = api.get_opt("default").await?;
                Ok::<_, kube::Error>(
                    sa.filter(|sa| sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
                        .map(|_| ()),
                )
            },
        )
        .await
    }

    /// Waits up to `timeout` for a Running pod of `namespace` matching `label_selector` (a
    /// Deployment's pod, whose name is not known in advance) and returns it.
    pub async fn running_pod(
        &self,
        namespace: &str,
        label_selector: &str,
        timeout: Duration,
    ) -> Result<k8s_openapi::api::core::v1::Pod> {
        let mut pods = self
            .running_pods(namespace, label_selector, 1, timeout)
            .await?;
        Ok(pods.remove(0))
    }

    /// Waits up to `timeout` until at least `count` pods of `namespace` matching `label_selector`
    /// are Running, and returns `count` of them.
    pub async fn running_pods(
        &self,
        namespace: &str,
        label_selector: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<k8s_openapi::api::core::v1::Pod>> {
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client(), namespace);
        let params = kube::api::ListParams::default().labels(label_selector);
        wait::until(
            format!("{count} Running pod(s) {label_selector} in {namespace}"),
            timeout,
            Duration::from_millis(300),
            || async {
                let list = api.list(&params).await?;
                let running: Vec<_> = list
                    .items
                    .into_iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .take(count)
                    .collect();
                Ok::<_, kube::Error>((running.len() == count).then_some(running))
            },
        )
        .await
    }

    /// Waits up to `timeout` until `container`'s log in `namespace/pod` contains `needle`, and
    /// returns the log.
    pub async fn log_containing(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String> {
        wait::until(
            format!("{needle:?} in {namespace}/{pod}'s {container} log"),
            timeout,
            Duration::from_millis(300),
            || async {
                let log = self
                    .container_log(namespace, pod, container)
                    .await
                    .unwrap_or_default();
                Ok::<_, Error>(log.contains(needle).then_some(log))
            },
        )
        .await
    }

    /// A container's log as the kubelet wrote it (`/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`;
    /// `kubectl logs` cannot reach a loopback-only kubelet). Empty when nothing was written yet.
    pub async fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<String> {
        let uid = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(self.client(), namespace)
            .get(pod)
            .await
            .map_err(Error::kube(format!("reading pod {namespace}/{pod}")))?
            .metadata
            .uid
            .unwrap_or_default();
        let dir = std::path::Path::new("/var/log/pods")
            .join(format!("{namespace}_{pod}_{uid}"))
            .join(container);
        let mut text = String::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        Ok(text)
    }

    /// Indexes of the `needles` that appear in an etcd dump, raw or base64-encoded. Indexes
    /// rather than the needles themselves, so a failing assertion does not print a secret.
    pub fn etcd_contains_any(&self, needles: &[&str]) -> Result<Vec<usize>> {
        use base64::Engine as _;
        let dump = self.etcd_dump()?;
        let contains = |n: &[u8]| !n.is_empty() && dump.windows(n.len()).any(|w| w == n);
        Ok(needles
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                contains(n.as_bytes())
                    || contains(
                        base64::engine::general_purpose::STANDARD
                            .encode(n)
                            .as_bytes(),
                    )
            })
            .map(|(i, _)| i)
            .collect())
    }
}
