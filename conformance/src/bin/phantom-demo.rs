//! `make demo`: Phantom's main job end to end on a real control plane and a real OpenBao, one
//! line per step. At this stage of the project: the CRDs a platform team writes, a pod identity
//! minted exactly as the kubelet would, its login to OpenBao through Kubernetes auth, the
//! refusal of another namespace's identity, and the proof that the secret never reached etcd.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use kube::Api;
use kube::api::{Patch, PatchParams};
use phantom_conformance::{Env, EnvOptions, KubernetesRole, random_hex};
use phantom_crds::{AttestationRequirement, PhantomPolicy, SecretBinding};
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Parser, Debug)]
#[command(
    name = "phantom-demo",
    version,
    about = "Phantom end to end on a real local control plane and OpenBao"
)]
struct Cli {
    /// Keep the environment running at the end until Ctrl-C (to poke at it with kubectl).
    #[arg(long, env = "PHANTOM_DEMO_KEEP")]
    keep: bool,
}

const STEPS: usize = 9;
const APP_NAMESPACE: &str = "payments";
const APP_SERVICE_ACCOUNT: &str = "payments-api";

struct Progress {
    step: usize,
    started: Instant,
}

impl Progress {
    fn step(&mut self, line: impl std::fmt::Display) {
        self.step += 1;
        println!(
            "[{}/{STEPS}] {:>5.1}s  {line}",
            self.step,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("          {l}\n")).collect()
}

fn fingerprint(value: &str) -> String {
    hex::encode(&Sha256::digest(value.as_bytes())[..8])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    phantom_conformance::init_logging(false);
    let mut p = Progress {
        step: 0,
        started: Instant::now(),
    };

    let tools = tokio::task::spawn_blocking(phantom_conformance::Tools::ensure).await??;
    p.step(format!(
        "tools ready: kube-apiserver 1.20.2, etcd, OpenBao 2.7.2 ({})",
        tools.bao.display()
    ));

    let env = Env::start_with(EnvOptions::default())
        .await
        .context("starting the control plane and OpenBao")?;
    p.step(format!(
        "control plane {} and OpenBao {} up in {:.1?}; OpenBao's Kubernetes auth trusts this API server",
        env.api_url(),
        env.openbao().addr(),
        env.started_in()
    ));

    env.install_crds().await?;
    p.step("CRDs PhantomPolicy, SecretBinding, AttestationRequirement installed and Established");

    apply_examples(&env).await?;
    let listing = env
        .kubectl()
        .args([
            "get",
            "phantompolicies,secretbindings,attestationrequirements",
            "-A",
        ])
        .output()
        .context("running kubectl")?;
    p.step(format!(
        "platform, app and security teams' resources applied (crds/examples):\n{}",
        indent(&String::from_utf8_lossy(&listing.stdout))
    ));

    p.step(decide_for_a_pod(&env).await?);

    let bao = env.openbao();
    let secret = format!("pg-{}", random_hex(16));
    bao.kv_put("secret", "payments/db", json!({ "password": secret }))
        .await?;
    bao.put_kv_read_policy("payments-api", "secret", &["payments/*"])
        .await?;
    bao.put_kubernetes_role(
        "kubernetes",
        &KubernetesRole::for_service_account(
            "payments-api",
            APP_NAMESPACE,
            APP_SERVICE_ACCOUNT,
            &["payments-api"],
        ),
    )
    .await?;
    p.step(format!(
        "OpenBao: secret/payments/db written (sha256 {}…); role payments-api = {APP_NAMESPACE}/{APP_SERVICE_ACCOUNT}, audience openbao",
        fingerprint(&secret)
    ));

    let identity = env.pod_identity(APP_NAMESPACE, APP_SERVICE_ACCOUNT).await?;
    let token = bao
        .login_kubernetes("kubernetes", "payments-api", &identity.token)
        .await?;
    let read = bao.kv_get(&token, "secret", "payments/db").await?;
    let got = read["password"].as_str().unwrap_or_default();
    ensure!(
        got == secret,
        "the pod identity read a different value than was written"
    );
    p.step(format!(
        "pod identity {APP_NAMESPACE}/{APP_SERVICE_ACCOUNT} (TokenRequest, as the kubelet mints it) logged in and read the secret: sha256 {}… matches",
        fingerprint(got)
    ));

    env.create_namespace_named("intruder", &[]).await?;
    let intruder = env.pod_identity("intruder", APP_SERVICE_ACCOUNT).await?;
    match bao
        .login_kubernetes("kubernetes", "payments-api", &intruder.token)
        .await
    {
        Err(e) if e.openbao_status() == Some(403) => p.step(format!(
            "intruder/{APP_SERVICE_ACCOUNT} refused by OpenBao with 403: same name, wrong namespace"
        )),
        Err(e) => bail!("the intruder was refused for an unexpected reason: {e}"),
        Ok(_) => bail!("OpenBao accepted a ServiceAccount of another namespace"),
    }

    let dump = env.etcd_dump()?;
    let found = env.etcd_contains_any(&[&secret, "payments/db"])?;
    ensure!(
        found.contains(&1),
        "the etcd search is broken: the binding's path (stored on purpose) was not found"
    );
    ensure!(!found.contains(&0), "THE SECRET VALUE IS IN ETCD");
    p.step(format!(
        "etcd dump: {} KiB, {} keys; the SecretBinding's path is there (names only), the secret value is not",
        dump.len() / 1024,
        dump.split(|b| *b == b'\n').filter(|l| l.starts_with(b"/registry/")).count()
    ));

    println!("demo complete in {:.1?}", p.started.elapsed());
    if cli.keep {
        println!(
            "environment kept: export KUBECONFIG={}  (Ctrl-C tears it down)",
            env.kubeconfig().display()
        );
        tokio::signal::ctrl_c().await?;
    }
    println!("cleaning up");
    drop(env);
    Ok(())
}

/// Compiles what the cluster holds with the policy engine and decides for a payments pod.
async fn decide_for_a_pod(env: &Env) -> anyhow::Result<String> {
    use phantom_policies::{AdmissionInput, Modules, PolicySet, RequestInfo, Sources};
    let lp = kube::api::ListParams::default();
    let sources = Sources {
        policies: Api::<PhantomPolicy>::all(env.client())
            .list(&lp)
            .await?
            .items,
        bindings: Api::<SecretBinding>::all(env.client())
            .list(&lp)
            .await?
            .items,
        requirements: Api::<AttestationRequirement>::all(env.client())
            .list(&lp)
            .await?
            .items,
    };
    let host = phantom_policies::wasm::PluginHost::new().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (set, errors) = PolicySet::compile(&sources, &host, &Modules::default());
    ensure!(
        errors.is_empty(),
        "the example policies do not compile: {errors:?}"
    );
    let namespace = serde_json::to_value(
        Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client())
            .get(APP_NAMESPACE)
            .await?,
    )?;
    let pod = json!({"metadata": {"generateName": "payments-api-7d4b9c-", "namespace": APP_NAMESPACE,
                                  "labels": {"app.kubernetes.io/name": "payments-api", "team": "payments"}},
                     "spec": {"serviceAccountName": APP_SERVICE_ACCOUNT,
                              "containers": [{"name": "api", "image": "payments:1.0", "command": ["/api"]}]}});
    let d = set.decide(&AdmissionInput {
        object: pod,
        old_object: None,
        namespace_object: Some(namespace),
        request: RequestInfo {
            operation: "CREATE".into(),
            namespace: APP_NAMESPACE.into(),
            ..Default::default()
        },
    });
    ensure!(
        d.allowed,
        "the example policy refused the demo pod: {:?}",
        d.denials
    );
    let canary = d.matched.first().and_then(|o| o.canary.clone());
    let why = match (&canary, d.inject) {
        (_, true) => format!(
            "inject as {} via {}, bindings {:?}, eBPF {:?}, key release checked by {:?}",
            d.injection
                .as_ref()
                .map(|i| serde_json::to_value(i.mode).unwrap_or_default())
                .unwrap_or_default(),
            d.deciding_policy.as_deref().unwrap_or("?"),
            d.bindings.iter().map(|b| &b.name).collect::<Vec<_>>(),
            d.monitoring.detections,
            d.key_release_policies
        ),
        (Some(c), false) if !c.selected => {
            format!("not injected: outside the {}% canary", c.percent)
        }
        _ => format!("not injected: {:?}", d.warnings),
    };
    Ok(format!(
        "policy engine compiled the cluster's resources (set {}…); a payments-api pod: {why}{}",
        &d.policy_digest[..19],
        canary
            .map(|c| format!(
                " (canary key {:?} → bucket {} of 100, in if < {})",
                c.key, c.bucket, c.percent
            ))
            .unwrap_or_default()
    ))
}

/// Applies the examples a GitOps repo would hold, in the demo's application namespace.
async fn apply_examples(env: &Env) -> anyhow::Result<()> {
    env.create_namespace_named(APP_NAMESPACE, &[("phantom.dev/inject", "enabled")])
        .await?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/examples");
    let pp = PatchParams::apply("phantom-demo");
    let read = |name: &str| -> anyhow::Result<serde_json::Value> {
        let path = dir.join(name);
        Ok(serde_yaml::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?)
    };
    let policy: PhantomPolicy = serde_json::from_value(read("phantompolicy-payments.yaml")?)?;
    Api::<PhantomPolicy>::all(env.client())
        .patch("payments-injection", &pp, &Patch::Apply(&policy))
        .await
        .context("applying the PhantomPolicy")?;
    let binding: SecretBinding = serde_json::from_value(read("secretbinding-payments-api.yaml")?)?;
    Api::<SecretBinding>::namespaced(env.client(), APP_NAMESPACE)
        .patch("payments-api", &pp, &Patch::Apply(&binding))
        .await
        .context("applying the SecretBinding")?;
    let requirement: AttestationRequirement =
        serde_json::from_value(read("attestationrequirement-eu-sev-snp.yaml")?)?;
    Api::<AttestationRequirement>::all(env.client())
        .patch("eu-sev-snp", &pp, &Patch::Apply(&requirement))
        .await
        .context("applying the AttestationRequirement")?;
    Ok(())
}
