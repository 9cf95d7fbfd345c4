//! `phantom-agent` on the real node: the real binary (as root, as its DaemonSet would run with
//! hostPID and the kubelet's pods directory), real pods on kubelet + containerd. A PhantomPolicy
//! puts a namespace in injection mode `daemonset`: its Deployment's pods get no sidecar, and each
//! replica's `phantom-exec` gets the secret from the agent, which logged in to OpenBao once for
//! both (one identity). Callers the agent cannot prove are refused with the reason and nothing of
//! the value: a process on the host holding a pod's valid token (its process is in no pod), a pod
//! of an unlabelled namespace presenting another pod's token, the same pod with its own token (its
//! namespace is not served), and a request with no token. A second ServiceAccount of the same
//! namespace whose binding asks for the path the first identity holds (overlapping paths, its
//! OpenBao policy not allowing it) is refused by OpenBao and never served the first identity's
//! kept read. The socket API through the agent: a process of the app container reads its
//! socket secret, and a watch sees a rotation in OpenBao. The agent SIGKILLed: the running replicas keep going, a new replica waits in Init
//! saying why, and is served once the agent is back. The Deployment deleted: the agent
//! forgets its pods and ends the identity. Needs root (skips with the reason otherwise).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::local::LocalProcess;
use phantom_conformance::node::{BUSYBOX_IMAGE, EXEC_IMAGE};
use phantom_conformance::{AppNamespace, Env, EnvOptions, free_port, wait};
use phantom_crds::wellknown::injected::{
    AGENT_TOKEN_HEADER, AGENT_TOKEN_VOLUME, INIT_CONTAINER, PROXY_CONTAINER,
};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn main() {
    run(
        EnvOptions {
            node: true,
            ..EnvOptions::default()
        },
        vec![Case::new(
            "daemonset_mode_pods_are_served_by_the_node_agent_and_callers_it_cannot_prove_are_refused",
            agent_on_the_node,
        )],
    )
}

const LABEL: &str = "phantom.dev/e2e-agent";

struct Agent {
    process: LocalProcess,
    status: u16,
}

async fn start_agent(env: &Env, socket_dir: &Path) -> anyhow::Result<Agent> {
    let status = free_port()?;
    let mut args = env.node_agent_args(socket_dir, env.openbao().addr(), LABEL, status);
    // A host process is in no pod: refuse it after a short wait, not the default 20 s.
    args.push("--identify-timeout-seconds=3".into());
    let mut process = env.spawn_phantom("phantom-agent", "phantom-agent", &args)?;
    process
        .wait_ready(
            "phantom-agent",
            &format!("http://127.0.0.1:{status}/readyz"),
        )
        .await?;
    Ok(Agent { process, status })
}

/// The value of the metric line starting with `series` (`name{labels}`), 0 when absent.
async fn metric(agent: &Agent, series: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", agent.status))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0))
}

/// One HTTP/1.1 request on the agent's socket from this (host) process; the status line and body.
async fn ask(socket: &Path, token: Option<&str>) -> anyhow::Result<String> {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let header = token
        .map(|t| format!("{AGENT_TOKEN_HEADER}: {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!(
                "GET /v1/env?container=app HTTP/1.1\r\nHost: phantom-agent\r\n{header}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .context("the agent did not answer within 30 s")??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn log_of(
    env: &Env,
    ns: &str,
    pod: &str,
    container: &str,
    needle: &str,
) -> anyhow::Result<String> {
    Ok(env
        .log_containing(ns, pod, container, needle, Duration::from_secs(90))
        .await?)
}

/// The kubelet's copy of a pod's agent-audience token directory.
fn agent_token_dir(env: &Env, pod_uid: &str) -> PathBuf {
    env.kubelet_pods_dir()
        .join(pod_uid)
        .join("volumes/kubernetes.io~projected")
        .join(AGENT_TOKEN_VOLUME)
}

async fn agent_on_the_node(env: Arc<Env>) -> anyhow::Result<()> {
    let log = std::sync::Mutex::new(None::<PathBuf>);
    let result = scenario(&env, &log).await;
    result.map_err(|e| {
        let path = log.lock().expect("log lock").clone();
        let text = path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        anyhow::anyhow!("{e:#}\n--- agent log ---\n{text}")
    })
}

async fn scenario(env: &Env, log: &std::sync::Mutex<Option<PathBuf>>) -> anyhow::Result<()> {
    phantom_conformance::bins::require_phantom_images()?;
    let socket_dir = env.dir().join("phantom-agent");
    let socket_dir_text = socket_dir.display().to_string();
    let hook = env
        .node_webhook_with("phantom-agent-e2e", LABEL, |settings| {
            settings.inject.openbao_address = env.openbao().addr().to_owned();
            settings.inject.agent.socket_dir = socket_dir_text.clone();
        })
        .await?;
    let AppNamespace { ns, value, .. } = env
        .phantom_app_namespace(
            &hook,
            "agent",
            LABEL,
            json!({"mode": "daemonset"}),
            json!([{"kind": "env", "name": "DB_PASSWORD", "containers": ["app"]}, {"kind": "socket"}]),
        )
        .await?;
    let mut agent = start_agent(env, &socket_dir).await?;
    *log.lock().expect("log lock") = Some(agent.process.log().to_owned());

    // Two replicas of one identity (namespace + ServiceAccount `app`).
    let script =
        "echo env-sha=$(printf %s \"$DB_PASSWORD\" | sha256sum | cut -d' ' -f1); sleep 3600";
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"hostNetwork": true, "serviceAccountName": "app", "terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                       "command": ["/bin/sh", "-c", script]}]}}}
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(env.client(), &ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let running = env
        .running_pods(&ns, "app=app", 2, Duration::from_secs(150))
        .await?;
    for pod in &running {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let containers: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.as_str()))
            .collect();
        ensure!(
            !containers.contains(&PROXY_CONTAINER),
            "a daemonset-mode pod runs a sidecar: {containers:?}"
        );
        log_of(
            env,
            &ns,
            &name,
            "app",
            &format!("env-sha={}", sha256_hex(&value)),
        )
        .await?;
    }
    // containerd names each container in its bundle, which is how the agent identifies callers
    // before the kubelet reports them.
    for pod in &running {
        let id = app_container_id(pod)?;
        let recorded = phantom_identity::runtime::lookup(&env.containerd_tasks_dir(), &id);
        ensure!(
            recorded
                == Some(phantom_identity::runtime::RuntimeContainer {
                    pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                    container: "app".into(),
                }),
            "containerd's bundle of {id} names {recorded:?}"
        );
    }
    // One identity, one login for both pods.
    ensure!(
        metric(&agent, "phantom_agent_identities").await? == 1.0,
        "identities"
    );
    let logins = metric(
        &agent,
        "phantom_agent_openbao_requests_total{operation=\"login\",result=\"ok\"}",
    )
    .await?;
    ensure!(
        logins == 1.0,
        "the two pods of one identity logged in {logins} times; the agent shares one session"
    );
    let rotated = the_socket_api_serves_a_container_and_its_watch_sees_a_rotation(
        env,
        &running[0],
        &socket_dir.join("agent.sock"),
        &ns,
        &value,
    )
    .await?;
    another_identity_asking_for_the_same_path_gets_only_what_openbao_gives_it(
        env, &agent, &hook, &ns, &value,
    )
    .await?;

    let first = &running[0];
    let first_uid = first.metadata.uid.clone().unwrap_or_default();
    let token = std::fs::read_to_string(agent_token_dir(env, &first_uid).join("token"))
        .context("the kubelet's copy of the first pod's agent token")?;
    let socket = socket_dir.join("agent.sock");

    // A host process with a valid token: its process is in no pod.
    let answer = ask(&socket, Some(token.trim())).await?;
    ensure!(
        answer.starts_with("HTTP/1.1 403")
            && answer.contains("not in a container of a pod on this node"),
        "a host process with a pod's token: {answer}"
    );
    ensure!(
        !answer.contains(value.as_str()),
        "the value reached a host process"
    );
    // No token at all.
    let answer = ask(&socket, None).await?;
    ensure!(
        answer.starts_with("HTTP/1.1 401") && answer.contains(AGENT_TOKEN_HEADER),
        "a request without a token: {answer}"
    );

    // A pod of an unlabelled namespace: with the first pod's token, then with its own.
    let plain = env.create_namespace("agent-plain", &[]).await?;
    env.wait_for_default_service_account(&plain).await?;
    let attempt = |token_dir: &str| {
        format!(
            "PHANTOM_AGENT_TOKEN={token_dir}/token PHANTOM_SOCKET=/agent/agent.sock PHANTOM_EXEC_WAIT_SECONDS=20 \
             /bin-dir/phantom-exec --container app -- /bin/sh -c 'echo stolen=$DB_PASSWORD' 2>&1 | head -c 600; \
             echo; echo attempt-done; sleep 3600"
        )
    };
    let mounts = |extra: serde_json::Value| json!([{"name": "bin", "mountPath": "/bin-dir"}, {"name": "agent", "mountPath": "/agent"}, extra]);
    let thief: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "thief", "namespace": plain},
        "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "initContainers": [{"name": "install", "image": EXEC_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["/phantom-exec", "install", "/bin-dir/phantom-exec"],
                                     "volumeMounts": [{"name": "bin", "mountPath": "/bin-dir"}]}],
                 "containers": [
                     {"name": "other-token", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                      "command": ["/bin/sh", "-c", attempt("/stolen")],
                      "volumeMounts": mounts(json!({"name": "stolen", "mountPath": "/stolen", "readOnly": true}))},
                     {"name": "own-token", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                      "command": ["/bin/sh", "-c", attempt("/own")],
                      "volumeMounts": mounts(json!({"name": "own", "mountPath": "/own", "readOnly": true}))}],
                 "volumes": [
                     {"name": "bin", "emptyDir": {}},
                     {"name": "agent", "hostPath": {"path": socket_dir, "type": "Directory"}},
                     {"name": "stolen", "hostPath": {"path": agent_token_dir(env, &first_uid), "type": "Directory"}},
                     {"name": "own", "projected": {"sources": [{"serviceAccountToken":
                         {"audience": phantom_crds::wellknown::DEFAULT_AGENT_AUDIENCE, "expirationSeconds": 3600, "path": "token"}}]}}]}
    }))?;
    Api::<Pod>::namespaced(env.client(), &plain)
        .create(&PostParams::default(), &thief)
        .await?;
    let other = log_of(env, &plain, "thief", "other-token", "attempt-done").await?;
    ensure!(
        other.contains("the token names pod")
            && other.contains("a pod proves itself with its own token"),
        "another pod's token: {other}"
    );
    let own = log_of(env, &plain, "thief", "own-token", "attempt-done").await?;
    ensure!(
        own.contains(&format!("namespace {plain} is not one Phantom serves")),
        "an unlabelled namespace's pod with its own token: {own}"
    );
    for log in [&other, &own] {
        ensure!(
            !log.contains(value.as_str()) && !log.contains("stolen="),
            "a refused caller got the variable: {log}"
        );
    }
    let refused = metric(&agent, "phantom_agent_callers_total{outcome=\"unproven\"}").await?
        + metric(&agent, "phantom_agent_callers_total{outcome=\"refused\"}").await?
        + metric(
            &agent,
            "phantom_agent_callers_total{outcome=\"not_in_pod\"}",
        )
        .await?;
    ensure!(refused >= 4.0, "refusals counted: {refused}");

    // The agent SIGKILLed: the running replicas keep their variables; a new one waits in Init,
    // saying why, and starts with its secret once the agent is back.
    agent.process.kill();
    let crashed_log = std::fs::read_to_string(agent.process.log())?;
    deployments
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    let old_names: Vec<String> = running
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let newcomer = wait::until(
        "a third replica waiting in Init for the agent",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            for pod in pods
                .list(&ListParams::default().labels("app=app"))
                .await?
                .items
            {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if old_names.contains(&name) {
                    continue;
                }
                let init_log = env
                    .container_log(&ns, &name, INIT_CONTAINER)
                    .await
                    .unwrap_or_default();
                if init_log.contains("waiting up to") && init_log.contains("node agent") {
                    return anyhow::Ok(Some(name));
                }
            }
            Ok(None)
        },
    )
    .await?;
    for name in &old_names {
        let pod = pods.get(name).await?;
        let status = pod.status.unwrap_or_default();
        let restarts: i32 = status
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum();
        ensure!(
            status.phase.as_deref() == Some("Running") && restarts == 0,
            "replica {name} did not keep running through the agent's crash (phase {:?}, {restarts} restarts)",
            status.phase
        );
    }
    agent = start_agent(env, &socket_dir).await?;
    *log.lock().expect("log lock") = Some(agent.process.log().to_owned());
    log_of(
        env,
        &ns,
        &newcomer,
        "app",
        &format!("env-sha={}", sha256_hex(&rotated)),
    )
    .await?;

    // The Deployment gone: its pods are forgotten and the identity ends (its token revoked).
    deployments
        .delete("app", &DeleteParams::foreground())
        .await?;
    wait::until(
        "the agent forgetting the deleted Deployment's pods",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let identities = metric(&agent, "phantom_agent_identities").await?;
            anyhow::Ok((identities == 0.0).then_some(()))
        },
    )
    .await?;

    let agent_log = crashed_log + &std::fs::read_to_string(agent.process.log())?;
    ensure!(
        agent_log.contains("serving a pod") && agent_log.contains("tokens and leases are revoked"),
        "the agent's log: {agent_log}"
    );
    ensure!(
        !agent_log.contains(value.as_str())
            && !agent_log.contains(rotated.as_str())
            && !agent_log.contains(token.trim()),
        "a secret value or a token is in the agent's log"
    );
    let dump = env.etcd_dump()?;
    ensure!(
        !dump.windows(value.len()).any(|w| w == value.as_bytes()),
        "the secret value is in etcd"
    );
    Ok(())
}

/// Two identities, one path: ServiceAccount `other` of the same namespace has its own OpenBao
/// role, whose policy reads only `secret/<ns>-other/*`, and a SecretBinding asking for the path
/// the `app` pods hold (and the agent keeps for them, refreshed every 2 s). OpenBao refuses the
/// read for `other`, and the agent serves `other` nothing of what it keeps for `app`: the pod
/// waits with OpenBao's reason, and its own login shows it was asked as itself.
async fn another_identity_asking_for_the_same_path_gets_only_what_openbao_gives_it(
    env: &Env,
    agent: &Agent,
    hook: &phantom_conformance::webhook::Webhook,
    ns: &str,
    value: &str,
) -> anyhow::Result<()> {
    let bao = env.openbao();
    let own_path = format!("{ns}-other/db");
    let own_value = format!("other-{}", phantom_conformance::random_hex(12));
    bao.kv_put("secret", &own_path, json!({ "password": own_value }))
        .await?;
    let policy = format!("{ns}-other");
    bao.put_kv_read_policy(&policy, "secret", &[&format!("{ns}-other/*")])
        .await?;
    bao.put_kubernetes_role(
        "kubernetes",
        &phantom_conformance::KubernetesRole::for_service_account(
            &format!("{ns}-other"),
            ns,
            "other",
            &[&policy],
        ),
    )
    .await?;
    env.ensure_service_account(ns, "other").await?;
    let binding: phantom_crds::SecretBinding = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding",
        "metadata": {"name": "other", "namespace": ns},
        "spec": {"selector": {"serviceAccountName": "other"}, "openbao": {"role": format!("{ns}-other")},
                 "secrets": [{"name": "password", "path": format!("{ns}/db"), "key": "password",
                              "delivery": [{"kind": "env", "name": "DB_PASSWORD", "containers": ["app"]}]}]}
    }))?;
    Api::<phantom_crds::SecretBinding>::namespaced(env.client(), ns)
        .create(&PostParams::default(), &binding)
        .await?;
    hook.wait_for_binding(ns, "other").await?;

    let script = "echo env=$DB_PASSWORD; sleep 3600";
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "other", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "other"}},
                 "template": {"metadata": {"labels": {"app": "other"}},
                              "spec": {"hostNetwork": true, "serviceAccountName": "other", "terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                       "command": ["/bin/sh", "-c", script]}]}}}
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(env.client(), ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(env.client(), ns);
    let pod = wait::until(
        "the other identity's pod created",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=other"))
                .await?;
            Ok::<_, kube::Error>(list.items.into_iter().next())
        },
    )
    .await?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let log = log_of(env, ns, &name, "app", "does not allow reading this path").await?;
    ensure!(
        !log.contains(value) && !log.contains("env="),
        "the other identity was served the app identity's secret: {log}"
    );
    ensure!(
        !log.contains(own_value.as_str()),
        "the other identity's own value is in its log"
    );
    let refused_reads = metric(
        agent,
        "phantom_agent_openbao_requests_total{operation=\"read\",result=\"refused\"}",
    )
    .await?;
    ensure!(
        refused_reads >= 1.0,
        "OpenBao refused no read: the other identity was not asked as itself"
    );
    deployments
        .delete("other", &DeleteParams::foreground())
        .await?;
    Ok(())
}

/// An HTTP client on the agent's socket, run by `python3` as a process of a pod's container: the
/// test (root on the node) joins it to the container's memory cgroup first, which is what a
/// process `kubectl exec`'d into the container is. Reads until the connection closes or `until`
/// appears.
const SOCKET_CLIENT: &str = r#"
import socket, sys
sock_path, token_file, header, path, until = sys.argv[1:6]
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
s.connect(sock_path)
token = open(token_file).read().strip()
s.sendall(("GET %s HTTP/1.1\r\nHost: phantom-agent\r\n%s: %s\r\nConnection: close\r\n\r\n" % (path, header, token)).encode())
buf = b""
while True:
    data = s.recv(65536)
    if not data:
        break
    buf += data
    if until and until.encode() in buf:
        break
sys.stdout.write(buf.decode(errors="replace"))
"#;

/// The memory cgroup directory of container `container_id` (cgroup v1, the test node's layout).
fn container_cgroup_dir(container_id: &str) -> anyhow::Result<PathBuf> {
    fn find(dir: &Path, id: &str, depth: u8) -> Option<PathBuf> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if entry.file_name().to_string_lossy().contains(id) {
                return Some(path);
            }
            if depth > 0
                && let Some(found) = find(&path, id, depth - 1)
            {
                return Some(found);
            }
        }
        None
    }
    find(Path::new("/sys/fs/cgroup/memory"), container_id, 4).with_context(|| {
        format!("no memory cgroup for container {container_id} under /sys/fs/cgroup/memory")
    })
}

/// The ID of `pod`'s `app` container, from its status, without the `containerd://` scheme.
fn app_container_id(pod: &Pod) -> anyhow::Result<String> {
    let id = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|c| c.name == "app")
        .and_then(|c| c.container_id.as_deref())
        .context("the app container's ID")?;
    Ok(id.trim_start_matches("containerd://").to_owned())
}

/// Starts [`SOCKET_CLIENT`] inside `pod`'s `app` container's cgroup, asking `path`.
fn client_in_container(
    env: &Env,
    pod: &Pod,
    socket: &Path,
    path: &str,
    until: &str,
) -> anyhow::Result<tokio::process::Child> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let procs = container_cgroup_dir(&app_container_id(pod)?)?.join("cgroup.procs");
    let token_file = agent_token_dir(env, &uid).join("token");
    Ok(tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec python3 -c \"$PHANTOM_CLIENT\" \"$@\"",
            procs.display()
        ))
        .arg("sh")
        .arg(socket)
        .arg(token_file)
        .arg(AGENT_TOKEN_HEADER)
        .arg(path)
        .arg(until)
        .env("PHANTOM_CLIENT", SOCKET_CLIENT)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

async fn output_of(child: tokio::process::Child, what: &str) -> anyhow::Result<String> {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .with_context(|| format!("{what}: no answer within 60 s"))??;
    ensure!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The socket API through the agent, as the sidecar's: a process of the wrapped container reads
/// the socket-delivered secret, and a watch open across a rotation in OpenBao sees it change;
/// the next read has the new value. Returns the new value (for the log checks).
async fn the_socket_api_serves_a_container_and_its_watch_sees_a_rotation(
    env: &Env,
    pod: &Pod,
    socket: &Path,
    ns: &str,
    value: &str,
) -> anyhow::Result<String> {
    let read = output_of(
        client_in_container(env, pod, socket, "/v1/secrets/password", "")?,
        "reading the socket secret",
    )
    .await?;
    ensure!(
        read.starts_with("HTTP/1.1 200") && read.contains(value),
        "the container's read of its socket secret: {}",
        read.replace(value, "<value>")
    );
    let watch = client_in_container(env, pod, socket, "/v1/watch", "\"changed\"")?;
    // Let the watch subscribe before the rotation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rotated = format!("s3cr3t-{}", phantom_conformance::random_hex(16));
    env.openbao()
        .kv_put(
            "secret",
            &format!("{ns}/db"),
            json!({ "password": rotated }),
        )
        .await?;
    let events = output_of(watch, "watching across a rotation").await?;
    ensure!(
        events.contains("\"changed\"") && events.contains("password"),
        "the watch saw no change: {events}"
    );
    ensure!(
        !events.contains(value) && !events.contains(rotated.as_str()),
        "a watch event carries a value"
    );
    let reread = output_of(
        client_in_container(env, pod, socket, "/v1/secrets/password", "")?,
        "reading the rotated socket secret",
    )
    .await?;
    ensure!(
        reread.contains(rotated.as_str()),
        "after the rotation the socket serves: {}",
        reread.replace(value, "<old value>")
    );
    Ok(rotated)
}
