//! The foundation suite against the real components: Phantom's CRDs on a real kube-apiserver,
//! pod identities logging in to a real OpenBao through Kubernetes auth, and the first proof that
//! no secret value reaches etcd.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, CustomResourceExt, ResourceExt};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::{Env, EnvOptions, random_hex};
use phantom_crds::{AttestationRequirement, PhantomPolicy, SecretBinding};
use serde_json::{Value, json};

fn main() {
    run(
        EnvOptions::default(),
        vec![
            Case::new(
                "crds_install_and_become_established",
                crds_install_and_become_established,
            ),
            Case::new(
                "every_example_applies_and_reads_back",
                every_example_applies_and_reads_back,
            ),
            Case::new(
                "invalid_objects_are_rejected_naming_the_field",
                invalid_objects_are_rejected_naming_the_field,
            ),
            Case::new(
                "kubectl_shows_the_printer_columns",
                kubectl_shows_the_printer_columns,
            ),
            Case::new(
                "pod_identity_logs_in_to_openbao_and_reads_its_secret",
                pod_identity_logs_in_and_reads,
            ),
            Case::new(
                "other_namespace_or_audience_is_refused_by_openbao",
                other_namespace_or_audience_is_refused,
            ),
            Case::new("no_secret_value_reaches_etcd", no_secret_value_reaches_etcd),
        ],
    )
}

async fn crds_install_and_become_established(env: Arc<Env>) -> anyhow::Result<()> {
    env.install_crds().await?;
    // Installing again is a no-op, not an error (the demo and several suites call it).
    env.install_crds().await?;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(env.client());
    for name in [
        "phantompolicies.phantom.dev",
        "secretbindings.phantom.dev",
        "attestationrequirements.phantom.dev",
    ] {
        let crd = crds
            .get(name)
            .await
            .with_context(|| format!("reading CRD {name}"))?;
        let has_status = crd.spec.versions[0]
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some());
        ensure!(has_status, "{name} has no status subresource");
    }
    Ok(())
}

fn examples() -> anyhow::Result<Vec<(PathBuf, Value)>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
        out.push((path, doc));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Creates `doc` through `api` and reads it back. Cluster-scoped objects get `suffix` appended to
/// their name to keep parallel cases and re-runs apart.
async fn create_and_read<K>(api: Api<K>, suffix: Option<&str>, doc: Value) -> anyhow::Result<(K, K)>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let mut obj: K = serde_json::from_value(doc)?;
    obj.meta_mut().namespace = None;
    if let Some(suffix) = suffix {
        obj.meta_mut().name = Some(format!("{}-{suffix}", obj.name_any()));
    }
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating {}", obj.name_any()))?;
    let read = api.get(&created.name_any()).await?;
    Ok((obj, read))
}

fn same_spec<K: serde::Serialize>(
    path: &std::path::Path,
    sent: &K,
    read: &K,
) -> anyhow::Result<()> {
    let (sent, read) = (serde_json::to_value(sent)?, serde_json::to_value(read)?);
    ensure!(
        sent["spec"] == read["spec"],
        "{}: the API server stored a different spec\nsent: {}\nread: {}",
        path.display(),
        sent["spec"],
        read["spec"]
    );
    Ok(())
}

async fn every_example_applies_and_reads_back(env: Arc<Env>) -> anyhow::Result<()> {
    env.install_crds().await?;
    let ns = env.create_namespace("examples", &[]).await?;
    let examples = examples()?;
    ensure!(
        examples.len() >= 4,
        "expected at least four examples, found {}",
        examples.len()
    );
    for (path, doc) in examples {
        match doc["kind"].as_str() {
            Some("PhantomPolicy") => {
                let (sent, read) =
                    create_and_read::<PhantomPolicy>(Api::all(env.client()), Some(&ns), doc)
                        .await?;
                same_spec(&path, &sent, &read)?;
            }
            Some("SecretBinding") => {
                let (sent, read) =
                    create_and_read::<SecretBinding>(Api::namespaced(env.client(), &ns), None, doc)
                        .await?;
                same_spec(&path, &sent, &read)?;
            }
            Some("AttestationRequirement") => {
                let (sent, read) = create_and_read::<AttestationRequirement>(
                    Api::all(env.client()),
                    Some(&ns),
                    doc,
                )
                .await?;
                same_spec(&path, &sent, &read)?;
            }
            other => bail!("{}: unexpected kind {other:?}", path.display()),
        }
    }
    Ok(())
}

fn api_resource<K: CustomResourceExt>() -> ApiResource {
    let crd = K::crd();
    ApiResource {
        group: crd.spec.group.clone(),
        version: crd.spec.versions[0].name.clone(),
        api_version: format!("{}/{}", crd.spec.group, crd.spec.versions[0].name),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    }
}

/// Creates a raw object and returns the API server's rejection message (fails if it was accepted).
async fn rejection(
    env: &Env,
    ar: &ApiResource,
    namespace: Option<&str>,
    doc: Value,
) -> anyhow::Result<String> {
    let obj: DynamicObject = serde_json::from_value(doc)?;
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(env.client(), ns, ar),
        None => Api::all_with(env.client(), ar),
    };
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => bail!(
            "the API server accepted an invalid {} {}",
            ar.kind,
            obj.name_any()
        ),
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(status.message),
        Err(e) => bail!("expected a 422 rejection, got: {e}"),
    }
}

fn binding_doc(name: &str, secret: Value) -> Value {
    json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding", "metadata": {"name": name},
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": "app"}, "secrets": [secret]}
    })
}

async fn invalid_objects_are_rejected_naming_the_field(env: Arc<Env>) -> anyhow::Result<()> {
    env.install_crds().await?;
    let ns = env.create_namespace("invalid", &[]).await?;
    let policies = api_resource::<PhantomPolicy>();
    let bindings = api_resource::<SecretBinding>();
    let requirements = api_resource::<AttestationRequirement>();
    let policy = |name: &str, spec: Value| json!({"apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy", "metadata": {"name": format!("{name}-{ns}")}, "spec": spec});

    let cases: Vec<(&ApiResource, Option<&str>, Value, &str)> = vec![
        (
            &policies,
            None,
            policy(
                "canary-150",
                json!({"injection": {"canary": {"percent": 150}}}),
            ),
            "spec.injection.canary.percent",
        ),
        (
            &policies,
            None,
            policy(
                "canary-neg",
                json!({"injection": {"canary": {"percent": -1}}}),
            ),
            "spec.injection.canary.percent",
        ),
        (
            &policies,
            None,
            policy(
                "bad-sha",
                json!({"rules": {"plugins": [{"name": "p", "module": {"path": "/p.wasm"}, "sha256": "not-a-digest"}]}}),
            ),
            "spec.rules.plugins[0].sha256",
        ),
        (
            &policies,
            None,
            policy("bad-mode", json!({"injection": {"mode": "teleport"}})),
            "spec.injection.mode",
        ),
        (
            &policies,
            None,
            policy("bad-enforcement", json!({"enforcement": "maybe"})),
            "spec.enforcement",
        ),
        (
            &bindings,
            Some(&ns),
            binding_doc(
                "smoke",
                json!({"name": "s", "path": "a/b", "delivery": [{"kind": "smoke-signal"}]}),
            ),
            "spec.secrets[0].delivery[0].kind",
        ),
        (
            &bindings,
            Some(&ns),
            binding_doc(
                "empty-path",
                json!({"name": "s", "path": "", "delivery": [{"kind": "socket"}]}),
            ),
            "spec.secrets[0].path",
        ),
        (
            &bindings,
            Some(&ns),
            binding_doc(
                "no-delivery",
                json!({"name": "s", "path": "a/b", "delivery": []}),
            ),
            "spec.secrets[0].delivery",
        ),
        (
            &bindings,
            Some(&ns),
            binding_doc(
                "bad-env",
                json!({"name": "s", "path": "a/b", "delivery": [{"kind": "env", "name": "1-NOT-AN-ENV"}]}),
            ),
            "spec.secrets[0].delivery[0].name",
        ),
        (
            &requirements,
            None,
            json!({"apiVersion": "phantom.dev/v1alpha1", "kind": "AttestationRequirement", "metadata": {"name": format!("bad-measure-{ns}")},
                   "spec": {"teeTypes": ["sev-snp"], "sevSnp": {"measurements": ["abc"]}}}),
            "spec.sevSnp.measurements[0]",
        ),
        (
            &requirements,
            None,
            json!({"apiVersion": "phantom.dev/v1alpha1", "kind": "AttestationRequirement", "metadata": {"name": format!("bad-tee-{ns}")},
                   "spec": {"teeTypes": ["sgx"]}}),
            "spec.teeTypes[0]",
        ),
    ];
    for (ar, namespace, doc, field) in cases {
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let message = rejection(&env, ar, namespace, doc)
            .await
            .with_context(|| format!("object {name}"))?;
        // 1.20 leaves list indexes out of its field paths; newer servers keep them.
        let without_indexes = strip_list_indexes(field);
        ensure!(
            message.contains(field) || message.contains(&without_indexes),
            "rejection of {name} does not name {field}: {message}"
        );
    }
    Ok(())
}

/// `spec.a[0].b[12]` → `spec.a.b`.
fn strip_list_indexes(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

async fn kubectl_shows_the_printer_columns(env: Arc<Env>) -> anyhow::Result<()> {
    env.install_crds().await?;
    let ns = env.create_namespace("kubectl", &[]).await?;
    let name = format!("columns-{ns}");
    let api: Api<PhantomPolicy> = Api::all(env.client());
    let policy: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy", "metadata": {"name": name},
        "spec": {"injection": {"mode": "init-only", "canary": {"percent": 30}}, "enforcement": "monitor"}
    }))?;
    api.create(&PostParams::default(), &policy).await?;
    let out = env.kubectl().args(["get", "pp", &name]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "kubectl get pp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "READY",
        "MODE",
        "ENFORCEMENT",
        "CANARY",
        "AGE",
        "init-only",
        "monitor",
        "30",
    ] {
        ensure!(
            text.contains(expected),
            "`kubectl get pp` lacks {expected}:\n{text}"
        );
    }
    let out = env.kubectl().args(["get", "phantom", "-A"]).output()?;
    ensure!(
        out.status.success(),
        "the `phantom` category is not known to kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Writes a KV secret at `<ns>/<name>` and a role `<ns>-app` letting `<ns>/app` read it.
async fn pod_identity_logs_in_and_reads(env: Arc<Env>) -> anyhow::Result<()> {
    let ns = env.create_namespace("login", &[]).await?;
    let (path, value) = env.provision_app_secret(&ns).await?;
    let identity = env.pod_identity(&ns, "app").await?;
    let token = env
        .openbao()
        .login_kubernetes("kubernetes", &format!("{ns}-app"), &identity.token)
        .await?;
    let data = env.openbao().kv_get(&token, "secret", &path).await?;
    ensure!(
        data["password"] == value.as_str(),
        "read back a different value than was written"
    );
    // The identity's Debug output must not show the token.
    ensure!(
        !format!("{identity:?}").contains(&identity.token),
        "PodIdentity's Debug output shows the token"
    );
    Ok(())
}

async fn other_namespace_or_audience_is_refused(env: Arc<Env>) -> anyhow::Result<()> {
    let ns = env.create_namespace("owner", &[]).await?;
    let other = env.create_namespace("intruder", &[]).await?;
    let (_, _) = env.provision_app_secret(&ns).await?;
    let role = format!("{ns}-app");

    let intruder = env.pod_identity(&other, "app").await?;
    let err = env
        .openbao()
        .login_kubernetes("kubernetes", &role, &intruder.token)
        .await
        .err();
    ensure!(
        err.as_ref().and_then(|e| e.openbao_status()) == Some(403),
        "a ServiceAccount of another namespace was not refused with 403: {err:?}"
    );

    // The right ServiceAccount with a token for the API server's audience instead of OpenBao's.
    env.ensure_service_account(&ns, "app").await?;
    let wrong_aud = env
        .token_request(
            &ns,
            "app",
            &["https://kubernetes.default.svc"],
            std::time::Duration::from_secs(600),
        )
        .await?;
    let err = env
        .openbao()
        .login_kubernetes("kubernetes", &role, &wrong_aud)
        .await
        .err();
    ensure!(
        err.as_ref()
            .and_then(|e| e.openbao_status())
            .is_some_and(|s| s == 403 || s == 400),
        "a token for another audience was not refused: {err:?}"
    );
    Ok(())
}

async fn no_secret_value_reaches_etcd(env: Arc<Env>) -> anyhow::Result<()> {
    env.install_crds().await?;
    let ns = env.create_namespace("etcd-proof", &[]).await?;
    let (path, value) = env.provision_app_secret(&ns).await?;

    // The full foundation flow: a binding naming the secret, a pod identity reading it.
    let binding: SecretBinding = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding", "metadata": {"name": "app", "namespace": ns},
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": format!("{ns}-app")},
                 "secrets": [{"name": "db", "path": path, "key": "password", "delivery": [{"kind": "env", "name": "DB_PASSWORD"}]}]}
    }))?;
    Api::<SecretBinding>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &binding)
        .await?;
    let identity = env.pod_identity(&ns, "app").await?;
    let token = env
        .openbao()
        .login_kubernetes("kubernetes", &format!("{ns}-app"), &identity.token)
        .await?;
    ensure!(env.openbao().kv_get(&token, "secret", &path).await?["password"] == value.as_str());

    // Positive control: a value that *is* stored in Kubernetes is found by the same search.
    let control = format!("control-{}", random_hex(16));
    let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
    cm.metadata.name = Some("control".into());
    cm.data = Some([("v".to_owned(), control.clone())].into());
    Api::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &cm)
        .await?;

    let found = env.etcd_contains_any(&[&value, &control])?;
    ensure!(
        found.contains(&1),
        "the etcd search is broken: the control value stored in a ConfigMap was not found"
    );
    ensure!(
        !found.contains(&0),
        "the secret value was found in the etcd dump"
    );
    // Nor in any component's log (API server, controller-manager, etcd, OpenBao).
    for log in env.component_logs() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        ensure!(
            !text.contains(&value),
            "the secret value appears in {}",
            log.display()
        );
    }
    Ok(())
}
