//! `make demo`: Phantom's main job end to end, on running pods. A real control plane with a node
//! (kubelet + containerd) and a real OpenBao; `phantom-controller` and `phantom-admission` run as
//! local processes; the platform and app teams' example resources are applied; a Deployment's
//! pod is injected, runs, and proves it holds its secrets (it prints their hashes); the secret is
//! rotated in OpenBao and the running pod sees it; another namespace's identity is refused; etcd
//! holds no value; the webhook configuration is deleted and comes back. One line per step.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use phantom_conformance::local::LocalProcess;
use phantom_conformance::node::{BUSYBOX_IMAGE, EXEC_IMAGE, PROXY_IMAGE};
use phantom_conformance::wait::until;
use phantom_conformance::{Env, EnvOptions, KubernetesRole, free_port, random_hex};
use phantom_crds::{PhantomPolicy, SecretBinding, condition_types};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Parser, Debug)]
#[command(
    name = "phantom-demo",
    version,
    about = "Phantom end to end on running pods: a real local control plane with a node, and OpenBao"
)]
struct Cli {
    /// Keep the environment running at the end until Ctrl-C (to poke at it with kubectl).
    #[arg(long, env = "PHANTOM_DEMO_KEEP")]
    keep: bool,
}

const STEPS: usize = 11;
const APP_NAMESPACE: &str = "payments";
const APP_SERVICE_ACCOUNT: &str = "payments-api";
const PHANTOM_NAMESPACE: &str = "phantom-system";
const WAIT: Duration = Duration::from_secs(90);

struct Progress {
    step: usize,
    started: Instant,
}

impl Progress {
    fn step(&mut self, line: impl std::fmt::Display) {
        self.step += 1;
        println!(
            "[{:>2}/{STEPS}] {:>5.1}s  {line}",
            self.step,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("            {l}\n")).collect()
}

fn sha(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    phantom_conformance::init_logging(false);
    if let Some(reason) = phantom_conformance::node::unsupported_reason() {
        bail!("the demo runs real pods and cannot here: {reason}");
    }
    let mut p = Progress {
        step: 0,
        started: Instant::now(),
    };

    let env = Env::start_with(EnvOptions {
        node: true,
        ..EnvOptions::default()
    })
    .await
    .context("starting the control plane, the node and OpenBao")?;
    p.step(format!(
        "control plane {} with a node (kubelet + containerd, Phantom's images imported) and OpenBao {} up in {:.1?}",
        env.api_url(),
        env.openbao().addr(),
        env.started_in()
    ));
    env.install_crds().await?;

    let (mut controller, mut admission) = start_phantom(&env, &mut p).await?;
    let (secrets, _postgres) = provision_openbao(&env).await?;
    p.step(format!(
        "OpenBao: secret/payments/db (sha256 {}…) and secret/payments/stripe; database engine → PostgreSQL role payments-readonly; Kubernetes role payments-api = {APP_NAMESPACE}/{APP_SERVICE_ACCOUNT}",
        &sha(&secrets.db)[..12]
    ));

    apply_examples(&env).await?;
    wait_ready(&env).await?;
    let listing = env
        .kubectl()
        .args(["get", "phantompolicies,secretbindings", "-A"])
        .output()
        .context("running kubectl")?;
    p.step(format!(
        "the platform and app teams' resources (crds/examples) applied; the controller compiled them into their status:\n{}",
        indent(&String::from_utf8_lossy(&listing.stdout))
    ));

    let pod = run_app(&env).await?;
    p.step(format!(
        "Deployment payments-api's pod as admission stored it, compared with the Deployment's template:\n{}",
        indent(&injected_diff(&env, &pod).await?)
    ));
    let name = pod.name_any();
    log_shows(&env, &name, &format!("env-sha={}", sha(&secrets.db))).await?;
    log_shows(&env, &name, &format!("file-sha={}", sha(&secrets.db))).await?;
    let user = dynamic_user(&env, &name).await?;
    p.step(format!(
        "pod {name} Running with phantom-proxy; the app's log: DATABASE_PASSWORD and /phantom/secrets/db/password both hash to {}… (OpenBao's value); dynamic PostgreSQL user {user}",
        &sha(&secrets.db)[..12]
    ));

    let rotated = format!("pg-{}", random_hex(16));
    let rotated_at = Instant::now();
    env.openbao()
        .kv_put("secret", "payments/db", json!({"password": rotated}))
        .await?;
    log_shows(&env, &name, &format!("file-sha={}", sha(&rotated))).await?;
    p.step(format!(
        "rotated secret/payments/db in OpenBao: the running pod's file changed to {}… after {:.1?}, no restart",
        &sha(&rotated)[..12],
        rotated_at.elapsed()
    ));

    env.create_namespace_named("intruder", &[]).await?;
    let intruder = env.pod_identity("intruder", APP_SERVICE_ACCOUNT).await?;
    match env
        .openbao()
        .login_kubernetes("kubernetes", "payments-api", &intruder.token)
        .await
    {
        Err(e) if e.openbao_status() == Some(403) => p.step(format!(
            "intruder/{APP_SERVICE_ACCOUNT}: same ServiceAccount name, another namespace → OpenBao refuses the login (403)"
        )),
        Err(e) => bail!("the intruder was refused for an unexpected reason: {e}"),
        Ok(_) => bail!("OpenBao accepted a ServiceAccount of another namespace"),
    }

    let mut logs = vec![
        env.container_log(APP_NAMESPACE, &name, "phantom-proxy")
            .await
            .unwrap_or_default(),
        env.container_log(APP_NAMESPACE, &name, "app")
            .await
            .unwrap_or_default(),
    ];
    for process in [&controller, &admission] {
        logs.push(std::fs::read_to_string(process.log()).unwrap_or_default());
    }
    for value in [&secrets.db, &rotated, &secrets.stripe] {
        ensure!(
            !logs.iter().any(|log| log.contains(value.as_str())),
            "A SECRET VALUE IS IN A LOG (sidecar, app, controller or admission)"
        );
    }
    let dump = env.etcd_dump()?;
    let found = env.etcd_contains_any(&[&secrets.db, &rotated, &secrets.stripe, "payments/db"])?;
    ensure!(
        found.contains(&3),
        "the etcd search is broken: the binding's path (stored on purpose) was not found"
    );
    ensure!(!found.iter().any(|i| *i < 3), "A SECRET VALUE IS IN ETCD");
    p.step(format!(
        "etcd dump ({} KiB; pod specs and Events included) and the sidecar's, app's, controller's and admission's logs: the SecretBinding's path is in etcd (names only); none of the three values is anywhere",
        dump.len() / 1024
    ));

    let mwc = Api::<MutatingWebhookConfiguration>::all(env.client());
    let original = mwc.get("phantom-injector").await?;
    mwc.delete("phantom-injector", &DeleteParams::default())
        .await?;
    let deleted_at = Instant::now();
    until(
        "the controller restoring phantom-injector",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let mwc = mwc.clone();
            let uid = original.uid();
            async move {
                Ok::<_, kube::Error>(
                    mwc.get_opt("phantom-injector")
                        .await?
                        .filter(|c| c.uid() != uid)
                        .map(|_| ()),
                )
            }
        },
    )
    .await?;
    p.step(format!(
        "kubectl delete mutatingwebhookconfiguration phantom-injector → restored by the controller after {:.0?} (Event WebhookConfigurationRestored in {PHANTOM_NAMESPACE})",
        deleted_at.elapsed()
    ));

    controller.check_alive()?;
    admission.check_alive()?;
    println!("demo complete in {:.1?}", p.started.elapsed());
    if cli.keep {
        println!(
            "environment kept: export KUBECONFIG={}  (logs: {} {}; Ctrl-C tears it down)",
            env.kubeconfig().display(),
            controller.log().display(),
            admission.log().display()
        );
        tokio::signal::ctrl_c().await?;
    }
    println!("cleaning up");
    controller.kill();
    admission.kill();
    drop(env);
    Ok(())
}

/// Starts `phantom-controller`, waits for it to lead and write the certificate, then
/// `phantom-admission` serving that certificate.
async fn start_phantom(
    env: &Env,
    p: &mut Progress,
) -> anyhow::Result<(LocalProcess, LocalProcess)> {
    env.create_namespace_named(PHANTOM_NAMESPACE, &[]).await?;
    let port = free_port()?;
    let cert_dir = env.dir().join("admission-tls");
    let mut controller = env.spawn_phantom(
        "phantom-controller",
        "phantom-controller",
        &[
            "--namespace".into(),
            PHANTOM_NAMESPACE.into(),
            "--identity".into(),
            "demo-controller".into(),
            "--admission-url".into(),
            format!("https://127.0.0.1:{port}"),
            "--cert-dir".into(),
            cert_dir.display().to_string(),
            "--metrics-listen".into(),
            format!("127.0.0.1:{}", free_port()?),
            "--breaker-probe-ms".into(),
            "500".into(),
        ],
    )?;
    let cert = cert_dir.join("tls.crt");
    until(
        "phantom-controller leading and writing admission's certificate",
        WAIT,
        Duration::from_millis(100),
        || {
            let ready = cert.exists()
                && cert_dir.join("tls.key").exists()
                && cert_dir.join("decision.key").exists();
            let alive = controller.check_alive();
            async move { alive.map(|()| ready.then_some(())) }
        },
    )
    .await?;
    let mwc = until(
        "phantom-controller creating the MutatingWebhookConfiguration",
        WAIT,
        Duration::from_millis(100),
        || {
            let api = Api::<MutatingWebhookConfiguration>::all(env.client());
            async move { api.get_opt("phantom-injector").await }
        },
    )
    .await?;
    p.step(format!(
        "phantom-controller (local process) leads Lease {PHANTOM_NAMESPACE}/phantom-controller; created MutatingWebhookConfiguration phantom-injector ({} webhooks, failurePolicy Fail) and ValidatingWebhookConfiguration phantom-validator, generated the webhook CA, admission's certificate and the key admission seals its decisions with",
        mwc.webhooks.as_ref().map_or(0, Vec::len)
    ));

    let health = free_port()?;
    let mut admission = env.spawn_phantom(
        "phantom-admission",
        "phantom-admission",
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--health-listen".into(),
            format!("127.0.0.1:{health}"),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            cert_dir.join("tls.key").display().to_string(),
            "--decision-key".into(),
            cert_dir.join("decision.key").display().to_string(),
            "--tls-reload-seconds".into(),
            "1".into(),
            "--proxy-image".into(),
            PROXY_IMAGE.into(),
            "--exec-image".into(),
            EXEC_IMAGE.into(),
            "--image-pull-policy".into(),
            "Never".into(),
            "--openbao-addr".into(),
            env.openbao().addr().into(),
            "--published-policy-set".into(),
            format!("{PHANTOM_NAMESPACE}/phantom-policy-set"),
        ],
    )?;
    let readyz = format!("http://127.0.0.1:{health}/readyz");
    let ready = until(
        "phantom-admission ready",
        WAIT,
        Duration::from_millis(100),
        || {
            let alive = admission.check_alive();
            let readyz = readyz.clone();
            async move {
                alive?;
                let response = reqwest::get(&readyz).await.ok();
                Ok::<_, phantom_conformance::Error>(match response {
                    Some(r) if r.status().is_success() => r.text().await.ok(),
                    _ => None,
                })
            }
        },
    )
    .await?;
    p.step(format!(
        "phantom-admission (local process) serving the controller's certificate on 127.0.0.1:{port}; {}",
        ready.trim()
    ));
    Ok((controller, admission))
}

struct Secrets {
    db: String,
    stripe: String,
}

/// What the app's binding reads: two KV secrets and dynamic PostgreSQL credentials.
async fn provision_openbao(env: &Env) -> anyhow::Result<(Secrets, phantom_conformance::Postgres)> {
    let bao = env.openbao();
    let secrets = Secrets {
        db: format!("pg-{}", random_hex(16)),
        stripe: format!("sk_live_{}", random_hex(16)),
    };
    bao.kv_put("secret", "payments/db", json!({"password": secrets.db}))
        .await?;
    bao.kv_put(
        "secret",
        "payments/stripe",
        json!({"api_key": secrets.stripe}),
    )
    .await?;
    let pg = env.start_postgres().await?;
    bao.write("sys/mounts/database", json!({"type": "database"}))
        .await?;
    let (admin, password) = pg.admin();
    bao.write(
        "database/config/pg",
        json!({"plugin_name": "postgresql-database-plugin", "connection_url": pg.openbao_connection_url(),
               "username": admin, "password": password, "allowed_roles": "payments-readonly"}),
    )
    .await?;
    bao.write(
        "database/roles/payments-readonly",
        json!({"db_name": "pg", "default_ttl": "1h", "max_ttl": "24h",
               "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';"]}),
    )
    .await?;
    bao.put_policy(
        "payments-api",
        r#"path "secret/data/payments/*" { capabilities = ["read"] }
path "database/creds/payments-readonly" { capabilities = ["read"] }"#,
    )
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
    Ok((secrets, pg))
}

/// Applies the examples a GitOps repo would hold. The binding refreshes every 4 minutes; the demo
/// shortens that to 3 s so the rotation shows within the demo.
async fn apply_examples(env: &Env) -> anyhow::Result<()> {
    env.create_namespace_named(APP_NAMESPACE, &[("phantom.dev/inject", "enabled")])
        .await?;
    env.wait_for_default_service_account(APP_NAMESPACE).await?;
    env.ensure_service_account(APP_NAMESPACE, APP_SERVICE_ACCOUNT)
        .await?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/examples");
    let pp = PatchParams::apply("phantom-demo");
    let read = |name: &str| -> anyhow::Result<Value> {
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
    let mut binding = read("secretbinding-payments-api.yaml")?;
    binding["spec"]["refresh"] = json!({"interval": "3s", "jitterPercent": 0});
    let binding: SecretBinding = serde_json::from_value(binding)?;
    // Admission refuses a binding until a policy admitting its namespace is in force: retry, as
    // a GitOps tool would, until the policy just applied is compiled.
    until(
        "SecretBinding payments-api admitted",
        WAIT,
        Duration::from_millis(200),
        || async {
            match Api::<SecretBinding>::namespaced(env.client(), APP_NAMESPACE)
                .patch("payments-api", &pp, &Patch::Apply(&binding))
                .await
            {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(s)) if s.code == 400 || s.code == 403 => Err(format!("{s:?}")),
                Err(e) => Err(format!("{e:?}")),
            }
        },
    )
    .await?;
    Ok(())
}

/// Waits for the controller's status: the policy Ready and the binding Admitted.
async fn wait_ready(env: &Env) -> anyhow::Result<()> {
    until(
        "PhantomPolicy payments-injection Ready and SecretBinding payments-api Admitted",
        WAIT,
        Duration::from_millis(200),
        || async {
            let policy = Api::<PhantomPolicy>::all(env.client())
                .get("payments-injection")
                .await?;
            let binding = Api::<SecretBinding>::namespaced(env.client(), APP_NAMESPACE)
                .get("payments-api")
                .await?;
            let ready = policy
                .status
                .is_some_and(|s| s.is_true(condition_types::READY))
                && binding
                    .status
                    .is_some_and(|s| s.common.is_true(condition_types::ADMITTED));
            Ok::<_, kube::Error>(ready.then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// Creates the payments-api Deployment and returns its Running pod. The app prints the hashes of
/// what it received (never the values); no pod network on this node, so it uses the host's,
/// where OpenBao listens on loopback.
async fn run_app(env: &Env) -> anyhow::Result<Pod> {
    let script = "echo env-sha=$(printf %s \"$DATABASE_PASSWORD\" | sha256sum | cut -d' ' -f1); \
                  echo dynamic-user=$(sed -n 's/.*\"username\":\"\\([^\"]*\\)\".*/\\1/p' /phantom/secrets/db/dynamic.json); \
                  while :; do echo file-sha=$(sha256sum < /phantom/secrets/db/password | cut -d' ' -f1); sleep 1; done";
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "payments-api", "namespace": APP_NAMESPACE},
        "spec": {"replicas": 1,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": "payments-api"}},
                 "template": {"metadata": {"labels": {"app.kubernetes.io/name": "payments-api", "team": "payments"}},
                              "spec": {"hostNetwork": true, "serviceAccountName": APP_SERVICE_ACCOUNT,
                                       "terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                       "command": ["/bin/sh", "-c", script]}]}}}
    }))?;
    Api::<Deployment>::namespaced(env.client(), APP_NAMESPACE)
        .create(&PostParams::default(), &deployment)
        .await
        .context("creating the Deployment")?;
    env.running_pod(APP_NAMESPACE, "app.kubernetes.io/name=payments-api", WAIT)
        .await
        .context("payments-api's pod Running")
}

/// What admission changed, read from the stored pod against the Deployment's template: one line
/// per addition or change.
async fn injected_diff(env: &Env, pod: &Pod) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::Container;
    let deployment = Api::<Deployment>::namespaced(env.client(), APP_NAMESPACE)
        .get("payments-api")
        .await?;
    let template = deployment.spec.map(|s| s.template).unwrap_or_default();
    let before = template.spec.unwrap_or_default();
    let after = pod.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    let before_annotations = template
        .metadata
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    for (k, v) in pod.annotations() {
        if k.starts_with("phantom.dev/") && before_annotations.get(k) != Some(v) {
            let mut v = v.clone();
            if v.len() > 90 {
                v.truncate(87);
                v.push_str("...");
            }
            out.push(format!("+ annotation {k}: {v}"));
        }
    }
    let describe = |c: &Container| {
        let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let mounts: Vec<String> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name.starts_with("phantom"))
            .map(|m| m.mount_path.clone())
            .collect();
        format!(
            "{} ({}) env {env:?} mounts {mounts:?}",
            c.name,
            c.image.as_deref().unwrap_or("?")
        )
    };
    for c in after.init_containers.iter().flatten() {
        out.push(format!("+ init container {}", describe(c)));
    }
    for c in &after.containers {
        match before.containers.iter().find(|b| b.name == c.name) {
            None => out.push(format!("+ container {}", describe(c))),
            Some(b) => {
                if b.command != c.command {
                    let first = |cmd: &Option<Vec<String>>| {
                        cmd.iter()
                            .flatten()
                            .take(5)
                            .map(|arg| match arg.char_indices().nth(24) {
                                Some((cut, _)) => format!("{}…", &arg[..cut]),
                                None => arg.clone(),
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    out.push(format!(
                        "~ container {}: command `{} …` → `{} …`",
                        c.name,
                        first(&b.command),
                        first(&c.command)
                    ));
                }
                let added: Vec<&str> = c
                    .env
                    .iter()
                    .flatten()
                    .map(|e| e.name.as_str())
                    .filter(|n| !b.env.iter().flatten().any(|e| e.name == *n))
                    .collect();
                if !added.is_empty() {
                    out.push(format!("~ container {}: + env {added:?}", c.name));
                }
            }
        }
    }
    for v in after
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name.starts_with("phantom"))
    {
        let kind = if v.empty_dir.is_some() {
            "emptyDir (memory)"
        } else if v.projected.is_some() {
            "projected ServiceAccount token, audience openbao"
        } else {
            "other"
        };
        out.push(format!("+ volume {}: {kind}", v.name));
    }
    Ok(out.join("\n"))
}

/// Waits until the app's log contains `needle`.
async fn log_shows(env: &Env, pod: &str, needle: &str) -> anyhow::Result<()> {
    log_find(env, pod, needle, |log| log.contains(needle).then_some(())).await
}

/// The dynamic PostgreSQL user the app found in its credentials file.
async fn dynamic_user(env: &Env, pod: &str) -> anyhow::Result<String> {
    log_find(env, pod, "the dynamic user", |log| {
        log.lines()
            .find_map(|l| l.split_once("dynamic-user=").map(|(_, user)| user.trim()))
            .filter(|user| !user.is_empty())
            .map(str::to_owned)
    })
    .await
}

/// Waits until `find` finds what it looks for in the app's log; a timeout says what each of the
/// pod's containers is doing (waiting why, or how it ended).
async fn log_find<T>(
    env: &Env,
    pod: &str,
    what: &str,
    find: impl Fn(&str) -> Option<T>,
) -> anyhow::Result<T> {
    let found = until(
        format!("{what} in {pod}'s application log"),
        WAIT,
        Duration::from_millis(250),
        || async {
            let log = env
                .container_log(APP_NAMESPACE, pod, "app")
                .await
                .unwrap_or_default();
            Ok::<_, phantom_conformance::Error>(find(&log))
        },
    )
    .await;
    match found {
        Ok(found) => Ok(found),
        Err(e) => {
            let states = container_states(env, pod).await;
            Err(anyhow::Error::new(e).context(format!("pod {pod}'s containers: {states}")))
        }
    }
}

/// One line per container of `pod`: running, or waiting/terminated with the kubelet's reason.
async fn container_states(env: &Env, pod: &str) -> String {
    let pod = match Api::<Pod>::namespaced(env.client(), APP_NAMESPACE)
        .get(pod)
        .await
    {
        Ok(pod) => pod,
        Err(e) => return format!("unknown ({e})"),
    };
    let status = pod.status.unwrap_or_default();
    let statuses = status
        .init_container_statuses
        .unwrap_or_default()
        .into_iter()
        .chain(status.container_statuses.unwrap_or_default());
    statuses
        .map(|c| {
            let state = c.state.unwrap_or_default();
            let detail = match (state.waiting, state.terminated) {
                (Some(w), _) => format!(
                    "waiting: {} {}",
                    w.reason.unwrap_or_default(),
                    w.message.unwrap_or_default()
                ),
                (None, Some(t)) => format!(
                    "terminated ({}): {} {}",
                    t.exit_code,
                    t.reason.unwrap_or_default(),
                    t.message.unwrap_or_default()
                ),
                (None, None) => "running".to_owned(),
            };
            format!("\n  {}: {}", c.name, detail.trim())
        })
        .collect()
}
