//! The node: real pods from locally built images, scheduled, started by the kubelet on a private
//! containerd — a plain Deployment, and Phantom's whole flow: the webhook injects the static
//! `phantom-proxy`/`phantom-exec` images into a Deployment's pods, the kubelet projects the token,
//! the sidecar logs in to OpenBao, the application gets its secret through `phantom-exec` and a
//! rotation reaches it. Needs root (skips with the reason otherwise; CI runs as root).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::node::BUSYBOX_IMAGE;
use phantom_conformance::{AppNamespace, Env, EnvOptions, random_hex, wait};
use serde_json::json;

fn main() {
    run(
        EnvOptions {
            node: true,
            ..EnvOptions::default()
        },
        vec![
            Case::new(
                "a_deployment_runs_real_pods_from_local_images",
                a_deployment_runs_real_pods,
            ),
            Case::new(
                "injected_pods_receive_and_rotate_their_secrets",
                injected_pods_receive_secrets,
            ),
            Case::new(
                "openbao_down_keeps_the_pod_in_init_until_it_is_back",
                openbao_down_keeps_pods_in_init,
            ),
            Case::new(
                "a_pod_gated_on_sev_snp_gets_its_secret_through_the_broker_and_a_debug_report_keeps_it_in_init",
                attested_release_on_the_node,
            ),
        ],
    )
}

async fn a_deployment_runs_real_pods(env: Arc<Env>) -> anyhow::Result<()> {
    let ns = env.create_namespace("node", &[]).await?;
    env.wait_for_default_service_account(&ns).await?;
    let marker = format!("hello-{}", random_hex(4));
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                       "command": ["/bin/sh", "-c", format!("echo {marker}; sleep 3600")]}]}}}
    }))?;
    Api::<Deployment>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    let running = env
        .running_pods(&ns, "app=app", 2, Duration::from_secs(120))
        .await?;
    for pod in running {
        let name = pod.metadata.name.unwrap_or_default();
        env.log_containing(&ns, &name, "app", &marker, Duration::from_secs(30))
            .await
            .with_context(|| format!("pod {name} did not print its marker"))?;
    }
    Ok(())
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Waits until the pod's application log contains `needle`.
async fn log_shows(env: &Env, ns: &str, pod: &str, needle: &str, what: &str) -> anyhow::Result<()> {
    log_of(env, ns, pod, "app", needle, what).await
}

async fn log_of(
    env: &Env,
    ns: &str,
    pod: &str,
    container: &str,
    needle: &str,
    what: &str,
) -> anyhow::Result<()> {
    env.log_containing(ns, pod, container, needle, Duration::from_secs(60))
        .await
        .with_context(|| format!("waiting for {what}"))?;
    Ok(())
}

/// Writes a new version of the secret at `path` and waits until the pod's application logs its
/// file's new hash; returns the new value.
async fn rotate_and_see(
    env: &Env,
    ns: &str,
    pod: &str,
    path: &str,
    what: &str,
) -> anyhow::Result<String> {
    let rotated = format!("rotated-{}", random_hex(12));
    env.openbao()
        .kv_put("secret", path, json!({"password": rotated}))
        .await?;
    log_shows(
        env,
        ns,
        pod,
        &format!("file-sha={}", sha256_hex(&rotated)),
        what,
    )
    .await?;
    Ok(rotated)
}

async fn injected_pods_receive_secrets(env: Arc<Env>) -> anyhow::Result<()> {
    use phantom_crds::wellknown::INJECT_LABEL;
    use phantom_crds::wellknown::injected::PROXY_CONTAINER;

    phantom_conformance::bins::require_phantom_images()?;
    let hook = env
        .node_webhook(
            "phantom-node-e2e",
            INJECT_LABEL,
            env.openbao().addr().to_owned(),
        )
        .await?;
    let AppNamespace { ns, path, value } = env
        .phantom_app_namespace(
            &hook,
            "e2e",
            INJECT_LABEL,
            json!({"mode": "sidecar"}),
            json!([{"kind": "env", "name": "DB_PASSWORD", "containers": ["app"]}, {"kind": "file", "path": "db/password"}]),
        )
        .await?;

    // No pod network on this node: the pod shares the host's, where OpenBao listens on loopback.
    let script = "echo env-sha=$(printf %s \"$DB_PASSWORD\" | sha256sum | cut -d' ' -f1); \
                  while :; do echo file-sha=$(sha256sum < /phantom/secrets/db/password | cut -d' ' -f1); sleep 1; done";
    // A second wrapped container of the same uid, which the binding gives the file but not the
    // variable: it sees only its own socket, and that socket will not answer for `app`.
    let peer = "echo peer-env=${DB_PASSWORD:-none}; echo peer-sockets=$(ls -A /phantom/socket); \
                /phantom/bin/phantom-exec --container app -- /bin/sh -c 'echo stolen=$DB_PASSWORD' 2>&1 | head -c 400; \
                echo; echo peer-asked; sleep 3600";
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"hostNetwork": true, "serviceAccountName": "app", "terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                       "command": ["/bin/sh", "-c", script]},
                                                      {"name": "peer", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                       "command": ["/bin/sh", "-c", peer]}]}}}
    }))?;
    Api::<Deployment>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let pod = env
        .running_pod(&ns, "app=app", Duration::from_secs(120))
        .await?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let containers: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
        .collect();
    ensure!(
        containers.iter().any(|c| c == PROXY_CONTAINER),
        "the pod runs the sidecar: {containers:?}"
    );
    log_shows(
        &env,
        &ns,
        &name,
        &format!("env-sha={}", sha256_hex(&value)),
        "the secret as an environment variable",
    )
    .await?;
    log_shows(
        &env,
        &ns,
        &name,
        &format!("file-sha={}", sha256_hex(&value)),
        "the secret file",
    )
    .await?;

    log_of(
        &env,
        &ns,
        &name,
        "peer",
        "peer-asked",
        "the peer container's attempt",
    )
    .await?;
    let peer_log = env.container_log(&ns, &name, "peer").await?;
    ensure!(
        peer_log.contains("peer-env=none")
            && peer_log.contains("peer-sockets=proxy.sock\n")
            && peer_log.contains("serves container peer"),
        "the peer container must get neither the variable nor another container's socket: {peer_log}"
    );
    ensure!(
        !peer_log.contains(value.as_str()) && !peer_log.contains("stolen="),
        "the peer container read the app's variable: {peer_log}"
    );

    // Rotation in OpenBao reaches the running application's file.
    let rotated = rotate_and_see(&env, &ns, &name, &path, "the rotated secret file").await?;

    // The sidecar killed: the kubelet restarts it, the application keeps running with its secret.
    let sidecar_id = pods
        .get(&name)
        .await?
        .status
        .and_then(|s| s.container_statuses)
        .into_iter()
        .flatten()
        .find(|c| c.name == PROXY_CONTAINER)
        .and_then(|c| c.container_id)
        .context("the sidecar's container id")?;
    env.kill_container(&sidecar_id)?;
    let restarted = wait::until(
        "the kubelet restarting the killed sidecar",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let statuses = pods
                .get(&name)
                .await?
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            let proxy = statuses.iter().find(|c| c.name == PROXY_CONTAINER);
            let app = statuses.iter().find(|c| c.name == "app");
            Ok::<_, kube::Error>(
                proxy
                    .filter(|p| p.restart_count >= 1 && p.ready)
                    .map(|_| app.map_or(-1, |a| a.restart_count)),
            )
        },
    )
    .await?;
    ensure!(
        restarted == 0,
        "the application restarted {restarted} times"
    );
    let rotated_again = rotate_and_see(
        &env,
        &ns,
        &name,
        &path,
        "a rotation delivered by the restarted sidecar",
    )
    .await?;

    // Nothing of it in Kubernetes: not in etcd (pod specs, events and all), not in the sidecar's log.
    let dump = env.etcd_dump()?;
    for secret in [&value, &rotated, &rotated_again] {
        ensure!(
            !dump.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret value is in etcd"
        );
    }
    let proxy_log = env.container_log(&ns, &name, PROXY_CONTAINER).await?;
    ensure!(
        proxy_log.contains("secrets delivered"),
        "the sidecar's log: {proxy_log}"
    );
    ensure!(
        !proxy_log.contains(value.as_str()) && !proxy_log.contains(rotated.as_str()),
        "a secret value is in the sidecar's log"
    );
    Ok(())
}

/// `init-only` injection with OpenBao unreachable: the sidecar (an init container) fails with the
/// address and the cause in its container status, so the pod waits in Init and the application
/// never starts without its secret; OpenBao back → the pod starts and reads its file. A webhook of
/// its own (another namespace label, OpenBao behind a proxy the test stops and starts).
async fn openbao_down_keeps_pods_in_init(env: Arc<Env>) -> anyhow::Result<()> {
    use phantom_conformance::counting_proxy::CountingProxy;

    const LABEL: &str = "phantom.dev/e2e-outage";
    phantom_conformance::bins::require_phantom_images()?;
    // An address where nothing listens yet: OpenBao is "down".
    let down = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let hook = env
        .node_webhook("phantom-node-outage", LABEL, format!("http://{down}"))
        .await?;
    let AppNamespace { ns, value, .. } = env
        .phantom_app_namespace(
            &hook,
            "outage",
            LABEL,
            json!({"mode": "init-only"}),
            json!([{"kind": "file", "path": "db/password"}]),
        )
        .await?;

    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": ns},
        "spec": {"hostNetwork": true, "serviceAccountName": "app", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                 "command": ["/bin/sh", "-c", "echo file-sha=$(sha256sum < /phantom/secrets/db/password | cut -d' ' -f1); sleep 3600"]}]}
    }))?;
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    pods.create(&PostParams::default(), &pod).await?;
    let message = init_failure(&pods, "app", "unreachable").await?;
    ensure!(
        message.contains(&format!("http://{down}")),
        "the message names the address: {message}"
    );
    let phase = pods.get("app").await?.status.and_then(|s| s.phase);
    ensure!(
        phase.as_deref() == Some("Pending"),
        "the pod is {phase:?}, not waiting in Init"
    );

    // OpenBao back on the same address: the kubelet's next retry delivers and the app starts.
    let _back = CountingProxy::start_on(env.openbao().addr(), down).await?;
    wait::until(
        "the pod Running once OpenBao is back",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let phase = pods.get("app").await?.status.and_then(|s| s.phase);
            Ok::<_, kube::Error>((phase.as_deref() == Some("Running")).then_some(()))
        },
    )
    .await?;
    log_shows(
        &env,
        &ns,
        "app",
        &format!("file-sha={}", sha256_hex(&value)),
        "the secret file",
    )
    .await?;
    Ok(())
}

/// The init container's terminated message containing `needle`, once the kubelet reports it.
async fn init_failure(pods: &Api<Pod>, pod: &str, needle: &str) -> anyhow::Result<String> {
    use phantom_crds::wellknown::injected::PROXY_CONTAINER;
    let message = wait::until(
        format!("the sidecar's failure naming {needle:?} in {pod}'s init container status"),
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let status = pods.get(pod).await?.status.unwrap_or_default();
            let message = status
                .init_container_statuses
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.name == PROXY_CONTAINER)
                .flat_map(|c| [c.state, c.last_state])
                .flatten()
                .filter_map(|s| s.terminated.and_then(|t| t.message))
                .find(|m| m.contains(needle));
            Ok::<_, kube::Error>(message)
        },
    )
    .await?;
    Ok(message)
}

/// Attested key release on the real node: a namespace whose policy gates key release on an
/// SEV-SNP AttestationRequirement, the real broker next to a TLS OpenBao whose gated path only the
/// broker's role reads, and the test-only attestation-agent emulator where a CoCo pod's agent
/// listens. The injected sidecar (init-only) finds no configfs-tsm in its container, asks the
/// agent for a report binding the broker's challenge, and receives the sealed secret; the app
/// reads it from its file. The same pod with a debug report stays in Init with the broker's
/// reason in its status. The pod's own role gets 403 on the gated path; the broker's log, the
/// sidecars' logs, the namespace's events and etcd hold no value.
async fn attested_release_on_the_node(env: Arc<Env>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Event;
    use phantom_admission::config::BrokerConfig;
    use phantom_conformance::attestation_agent::AgentEmulator;
    use phantom_conformance::broker::BrokerCaseOptions;
    use phantom_crds::wellknown::injected::PROXY_CONTAINER;

    const LABEL: &str = "phantom.dev/e2e-attested";
    phantom_conformance::bins::require_phantom_images()?;
    let agent = AgentEmulator::start(
        phantom_attestation::aa::DEFAULT_URL
            .trim_start_matches("http://")
            .parse()?,
    )
    .await?;
    let case = env
        .start_broker_case_with(BrokerCaseOptions {
            namespace_labels: vec![(LABEL.into(), "enabled".into())],
            injection: Some(json!({"mode": "init-only"})),
            foreign_binding: false,
        })
        .await?;
    let ns = case.ns.clone();
    let openbao_ca = std::fs::read_to_string(case.bao.dir.join("ca.crt"))?;
    let hook = env
        .node_webhook_with("phantom-node-attested", LABEL, |settings| {
            settings.inject.openbao_address = case.bao.addr.clone();
            settings.inject.openbao_ca_pem = Some(openbao_ca);
            settings.inject.openbao_spki_pins = vec![hex::encode(case.client.pin)];
            settings.inject.broker = Some(BrokerConfig {
                address: format!("https://127.0.0.1:{}", case.port),
                spki_pins: vec![hex::encode(case.broker_pin)],
                audience: phantom_attestation::protocol::DEFAULT_AUDIENCE.into(),
            });
        })
        .await?;
    hook.wait_for_policy(&ns).await?;
    hook.wait_for_binding(&ns, "api").await?;

    let pod = |name: &str| -> anyhow::Result<Pod> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"hostNetwork": true, "serviceAccountName": "app", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["/bin/sh", "-c", "echo file-sha=$(sha256sum < /phantom/secrets/db | cut -d' ' -f1); sleep 3600"]}]}
        }))?)
    };
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);

    // 1. An attested pod: the secret arrives through the broker.
    pods.create(&PostParams::default(), &pod("attested")?)
        .await?;
    let delivered = log_of(
        &env,
        &ns,
        "attested",
        "app",
        &format!("file-sha={}", sha256_hex(&case.value)),
        "the gated secret's file",
    )
    .await;
    if let Err(e) = delivered {
        let sidecar = env
            .container_log(&ns, "attested", PROXY_CONTAINER)
            .await
            .unwrap_or_default();
        let broker = std::fs::read_to_string(case.process.log()).unwrap_or_default();
        anyhow::bail!("{e}\n--- sidecar ---\n{sidecar}\n--- broker ---\n{broker}");
    }
    ensure!(agent.served() >= 1, "the sidecar never asked the agent");

    // 2. The same pod whose TEE reports debug: the broker refuses, the pod waits in Init with
    //    the broker's reason.
    agent.set_debug(true);
    pods.create(&PostParams::default(), &pod("debug")?).await?;
    let message = init_failure(&pods, "debug", "forbids debug").await?;
    ensure!(
        message.contains(&format!("{ns}-snp")),
        "the message names the AttestationRequirement: {message}"
    );
    let phase = pods.get("debug").await?.status.and_then(|s| s.phase);
    ensure!(
        phase.as_deref() == Some("Pending"),
        "the debug pod is {phase:?}, not waiting in Init"
    );

    // 3. The pod's own OpenBao role cannot go around the broker.
    case.own_role_is_refused(&env).await?;

    // 4. Nothing but the app's memory-backed volume holds the value.
    let broker_log = std::fs::read_to_string(case.process.log())?;
    ensure!(
        broker_log.contains("secrets released") && broker_log.contains("forbids debug"),
        "the broker's audit records are missing:\n{broker_log}"
    );
    ensure!(
        !broker_log.contains(&case.value),
        "the broker's log holds the value"
    );
    for name in ["attested", "debug"] {
        let log = env
            .container_log(&ns, name, PROXY_CONTAINER)
            .await
            .unwrap_or_default();
        ensure!(
            !log.contains(&case.value),
            "{name}'s sidecar log holds the value"
        );
    }
    let events = Api::<Event>::namespaced(env.client(), &ns)
        .list(&ListParams::default())
        .await?;
    let events = serde_json::to_string(&events.items)?;
    ensure!(!events.contains(&case.value), "an event holds the value");
    ensure!(
        env.etcd_contains_any(&[&case.value])?.is_empty(),
        "etcd holds the value"
    );
    Ok(())
}
