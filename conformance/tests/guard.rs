//! `phantom-guard` on the real node: the real binary (as root, as its DaemonSet would run with
//! hostPID), real pods on kubelet + containerd. The victim is a Phantom-injected Deployment whose
//! app holds its OpenBao secret as an environment variable, in a namespace whose PhantomPolicy
//! protects its pods. Node root and an attacker pod (hostPID, privileged, `SYS_PTRACE`) read the
//! app's environment by `PTRACE_ATTACH`, `process_vm_readv`, `/proc/<pid>/mem` and
//! `/proc/<pid>/environ`. With `action: alert` every route works and each is reported on the
//! victim pod as a Warning Event naming the accessor (pid, comm, uid; pod and container); with
//! `action: block` each attacker is killed before the value reaches its user space (it is in
//! nothing the attacker wrote out) and the victim keeps running (not left stopped by the
//! attach); an unprotected pod attacked the same way: nothing reported, nothing blocked. The
//! guard killed and restarted: protection back, within a measured bound. Needs root (skips with
//! the reason otherwise).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::node::{BUSYBOX_IMAGE, MEMORY_READER_IMAGE, NODE_NAME};
use phantom_conformance::{AppNamespace, Env, EnvOptions, free_port, random_hex, wait};
use phantom_crds::PhantomPolicy;
use serde_json::json;

fn main() {
    run(
        EnvOptions {
            node: true,
            ..EnvOptions::default()
        },
        vec![Case::new(
            "the_guard_reports_and_blocks_reads_of_protected_pods_memory_on_the_node",
            guard_on_the_node,
        )],
    )
}

const LABEL: &str = "phantom.dev/e2e-guard";

fn sleeper(name: &str, ns: &str, secret: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                 "command": ["/bin/sh", "-c", "sleep 3600"],
                                 "env": [{"name": "GUARD_E2E_SECRET", "value": secret}]}]}
    }))?)
}

async fn running(pods: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    wait::until(
        format!("pod {name} Running"),
        Duration::from_secs(120),
        Duration::from_millis(300),
        || async {
            let phase = pods.get(name).await?.status.and_then(|s| s.phase);
            Ok::<_, kube::Error>((phase.as_deref() == Some("Running")).then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// The host pid of the `sleep` process whose environment holds `secret` (found by reading every
/// process's environment: do it while the guard only alerts).
async fn host_pid(secret: &str) -> anyhow::Result<u32> {
    let pid = wait::until(
        "the pod's process on the host",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let found = std::fs::read_dir("/proc")?
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .find(|pid| {
                    std::fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.windows(secret.len()).any(|w| w == secret.as_bytes()))
                        // Only the container's process, not a shell of this test.
                        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .is_ok_and(|c| c.trim() == "sleep")
                });
            Ok::<_, std::io::Error>(found)
        },
    )
    .await?;
    Ok(pid)
}

/// The Warning Events on pod `name` whose reason starts with `MemoryAccess`.
async fn detections(env: &Env, ns: &str, name: &str) -> anyhow::Result<Vec<Event>> {
    let list = Api::<Event>::namespaced(env.client(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name)
                && e.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("MemoryAccess"))
        })
        .collect())
}

/// Waits for an Event on `name` whose message contains every one of `needles`.
async fn event_saying(env: &Env, ns: &str, name: &str, needles: &[&str]) -> anyhow::Result<Event> {
    let found = wait::until(
        format!("a MemoryAccess Event on {ns}/{name} saying {needles:?}"),
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let events = detections(env, ns, name).await?;
            Ok::<_, anyhow::Error>(events.into_iter().find(|e| {
                let message = e.message.as_deref().unwrap_or_default();
                needles.iter().all(|n| message.contains(n))
            }))
        },
    )
    .await;
    match found {
        Ok(found) => Ok(found),
        Err(e) => {
            let all = Api::<Event>::namespaced(env.client(), ns)
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(|e| {
                    format!(
                        "{:?} {:?}: {:?}",
                        e.involved_object.name, e.reason, e.message
                    )
                })
                .collect::<Vec<_>>();
            anyhow::bail!("{e}; the namespace's Events: {all:#?}")
        }
    }
}

fn read_environ(pid: u32) -> anyhow::Result<std::process::Output> {
    Ok(Command::new("cat")
        .arg(format!("/proc/{pid}/environ"))
        .output()?)
}

struct Guard {
    process: phantom_conformance::local::LocalProcess,
    status: u16,
}

async fn start_guard(env: &Env) -> anyhow::Result<Guard> {
    let status = free_port()?;
    let mut process = env.spawn_phantom(
        "phantom-guard",
        "phantom-guard",
        &[
            format!("--node-name={NODE_NAME}"),
            format!("--status-listen=127.0.0.1:{status}"),
            "--resync-milliseconds=200".into(),
            "--repeat-window-seconds=1".into(),
        ],
    )?;
    process
        .wait_ready(
            "phantom-guard",
            &format!("http://127.0.0.1:{status}/readyz"),
        )
        .await?;
    Ok(Guard { process, status })
}

async fn metrics(guard: &Guard) -> anyhow::Result<String> {
    Ok(
        reqwest::get(format!("http://127.0.0.1:{}/metrics", guard.status))
            .await?
            .text()
            .await?,
    )
}

async fn guard_on_the_node(env: Arc<Env>) -> anyhow::Result<()> {
    let log = std::sync::Mutex::new(None::<std::path::PathBuf>);
    let result = scenario(&env, &log).await;
    result.map_err(|e| {
        let path = log.lock().expect("log lock").clone();
        let text = path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        anyhow::anyhow!("{e:#}\n--- guard log ---\n{text}")
    })
}

/// The four routes the attacker tries, as `memory-reader` names them, with the detection each is
/// reported as.
const ROUTES: [(&str, &str); 4] = [
    ("ptrace", "ptrace"),
    ("process-vm-readv", "process-vm"),
    ("proc-mem", "proc-mem"),
    ("proc-environ", "proc-environ"),
];

/// An attacker pod `name` (hostPID, privileged, `SYS_PTRACE`) that tries every route against each
/// `(label, pid, needle)` target once, printing `exit <label> <route>=<status>` after each.
fn attacker(name: &str, ns: &str, targets: &[(&str, u32, &str)]) -> anyhow::Result<Pod> {
    let mut script = String::from("sleep 1; ");
    for (label, pid, needle) in targets {
        for (route, _) in ROUTES {
            script.push_str(&format!(
                "memory-reader {route} {pid} {needle}; echo \"exit {label} {route}=$?\"; "
            ));
        }
    }
    script.push_str("echo attacks-done; sleep 3600");
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"hostNetwork": true, "hostPID": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "attacker", "image": MEMORY_READER_IMAGE, "imagePullPolicy": "Never",
                                 "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_PTRACE"]}},
                                 "command": ["/bin/sh", "-c", script]}]}
    }))?)
}

/// Runs `attacker` to the end of its script and returns its log, with `secrets` redacted from
/// any error (the log holds them when an attack succeeds).
async fn attack(env: &Env, ns: &str, pod: Pod, secrets: &[&str]) -> anyhow::Result<String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    Api::<Pod>::namespaced(env.client(), ns)
        .create(&PostParams::default(), &pod)
        .await?;
    let redact = |text: &str| {
        secrets
            .iter()
            .fold(text.to_owned(), |t, s| t.replace(s, "<secret>"))
    };
    let done = wait::until(
        format!("attacker {ns}/{name} done"),
        Duration::from_secs(90),
        Duration::from_millis(300),
        || async {
            let log = env
                .container_log(ns, &name, "attacker")
                .await
                .unwrap_or_default();
            anyhow::Ok(log.contains("attacks-done").then_some(log))
        },
    )
    .await;
    match done {
        Ok(log) => Ok(log),
        Err(e) => {
            let log = env
                .container_log(ns, &name, "attacker")
                .await
                .unwrap_or_default();
            anyhow::bail!("{e}; its log so far:\n{}", redact(&log))
        }
    }
}

/// Whether `pid` is stopped (`T`) or traced (`t`), from `/proc/<pid>/stat` (which the guard does
/// not watch: it holds no memory contents).
fn stopped(pid: u32) -> anyhow::Result<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    Ok(matches!(state, Some('T' | 't')))
}

async fn scenario(
    env: &Env,
    log: &std::sync::Mutex<Option<std::path::PathBuf>>,
) -> anyhow::Result<()> {
    phantom_conformance::bins::require_phantom_images()?;
    let hook = env
        .node_webhook("phantom-guard-e2e", LABEL, env.openbao().addr().to_owned())
        .await?;
    let AppNamespace {
        ns: protected_ns,
        value: secret,
        ..
    } = env
        .phantom_app_namespace(
            &hook,
            "guard",
            LABEL,
            json!({"mode": "sidecar"}),
            json!([{"kind": "env", "name": "DB_PASSWORD", "containers": ["app"]}]),
        )
        .await?;
    let plain_ns = env.create_namespace("guard-plain", &[]).await?;
    let attacker_ns = env.create_namespace("guard-attacker", &[]).await?;
    // Monitoring in a policy of its own, beside the injection policy: policies merge.
    let policy_name = format!("guard-{}", random_hex(3));
    let policy: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": policy_name},
        "spec": {"match": {"namespaceSelector": {"matchLabels": {LABEL: "enabled"}}},
                 "monitoring": {"action": "alert", "alertLabels": {"team": "e2e"}}}
    }))?;
    let policies: Api<PhantomPolicy> = Api::all(env.client());
    policies.create(&PostParams::default(), &policy).await?;
    hook.wait_for_policy(&policy_name).await?;
    for ns in [&plain_ns, &attacker_ns] {
        env.wait_for_default_service_account(ns).await?;
    }

    env.create_namespace_named("phantom-system", &[]).await.ok();
    let mut guard = start_guard(env).await?;
    *log.lock().expect("log lock") = Some(guard.process.log().to_owned());
    let plain_secret = format!("guard-plain-{}", random_hex(12));
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": protected_ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"hostNetwork": true, "serviceAccountName": "app", "terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                       "command": ["/bin/sh", "-c", "exec sleep 3600"]}]}}}
    }))?;
    Api::<Deployment>::namespaced(env.client(), &protected_ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    let plain: Api<Pod> = Api::namespaced(env.client(), &plain_ns);
    plain
        .create(
            &PostParams::default(),
            &sleeper("plain", &plain_ns, &plain_secret)?,
        )
        .await?;
    let victims: Api<Pod> = Api::namespaced(env.client(), &protected_ns);
    let victim_pod = env
        .running_pod(&protected_ns, "app=app", Duration::from_secs(120))
        .await?;
    let victim_name = victim_pod.metadata.name.clone().unwrap_or_default();
    running(&plain, "plain").await?;
    let victim = host_pid(&secret).await?;
    let plain_pid = host_pid(&plain_secret).await?;
    wait::until(
        "the guard protecting the victim pod",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let text = metrics(&guard).await?;
            anyhow::Ok(
                text.contains("phantom_guard_protected_pods 1")
                    .then_some(()),
            )
        },
    )
    .await?;

    // 1. alert: node root reads the environment; allowed, reported with its identity.
    let read = read_environ(victim)?;
    ensure!(read.status.success(), "alert must allow the read");
    let event = event_saying(
        env,
        &protected_ns,
        &victim_name,
        &[
            "proc-environ access",
            "not in a pod on this node",
            "allowed (action alert)",
            "\"cat\"",
        ],
    )
    .await?;
    ensure!(
        event.type_.as_deref() == Some("Warning")
            && event.reason.as_deref() == Some("MemoryAccessProcEnviron"),
        "{event:?}"
    );

    // 2. alert: the attacker pod gets the secret by every route (the attacks are real), and each
    // route is reported on the victim pod with the attacker's pod and container.
    let needle = "DB_PASSWORD=";
    let plain_needle = "GUARD_E2E_SECRET=";
    let alert_log = attack(
        env,
        &attacker_ns,
        attacker("reader-alert", &attacker_ns, &[("victim", victim, needle)])?,
        &[&secret],
    )
    .await?;
    for (route, detection) in ROUTES {
        ensure!(
            alert_log.contains(&format!("{route}: found {needle}{secret}\n"))
                && alert_log.contains(&format!("exit victim {route}=0")),
            "under alert, the {route} attack must work: {}",
            alert_log.replace(&secret, "<secret>")
        );
        event_saying(
            env,
            &protected_ns,
            &victim_name,
            &[
                &format!("{detection} access to process {victim}"),
                "\"memory-reader\"",
                &format!("pod {attacker_ns}/reader-alert, container attacker"),
                "allowed (action alert)",
            ],
        )
        .await?;
    }

    // 3. block: wait until the guard applies it (node root's reader killed), then the attacker
    // pod tries every route against the victim and against the unprotected pod.
    policies
        .patch(
            &policy_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"monitoring": {"action": "block"}}})),
        )
        .await?;
    let killed = wait::until(
        "a reader of the victim's environment killed",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let out = read_environ(victim)?;
            use std::os::unix::process::ExitStatusExt as _;
            anyhow::Ok((out.status.signal() == Some(9)).then_some(out))
        },
    )
    .await?;
    ensure!(
        !String::from_utf8_lossy(&killed.stdout).contains(&secret),
        "the killed reader printed the secret"
    );
    let block_log = attack(
        env,
        &attacker_ns,
        attacker(
            "reader-block",
            &attacker_ns,
            &[
                ("victim", victim, needle),
                ("plain", plain_pid, plain_needle),
            ],
        )?,
        &[&secret, &plain_secret],
    )
    .await?;
    let shown = block_log
        .replace(&secret, "<secret>")
        .replace(&plain_secret, "<plain secret>");
    ensure!(
        !block_log.contains(&secret),
        "a blocked attacker wrote the secret out: {shown}"
    );
    for (route, detection) in ROUTES {
        ensure!(
            block_log.contains(&format!("exit victim {route}=137")),
            "under block, the {route} attacker must be killed (137): {shown}"
        );
        // The unprotected pod in the same setup: nothing blocked.
        ensure!(
            block_log.contains(&format!("{route}: found {plain_needle}{plain_secret}\n"))
                && block_log.contains(&format!("exit plain {route}=0")),
            "the {route} attack on the unprotected pod must work: {shown}"
        );
        event_saying(
            env,
            &protected_ns,
            &victim_name,
            &[
                &format!("{detection} access to process {victim}"),
                &format!("pod {attacker_ns}/reader-block, container attacker"),
                "killed before the call returned",
            ],
        )
        .await?;
    }
    // The victim keeps running: not left stopped by the attach that ran before the kill landed,
    // not restarted.
    wait::until(
        "the victim resumed after the blocked ptrace attach",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { anyhow::Ok((!stopped(victim)?).then_some(())) },
    )
    .await?;
    let victim_now = victims.get(&victim_name).await?;
    let restarts: i32 = victim_now
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    ensure!(
        restarts == 0 && victim_now.status.and_then(|s| s.phase).as_deref() == Some("Running"),
        "the victim was hurt ({restarts} restarts)"
    );

    // 4. The unprotected pod: read by every route above and by node root, nothing reported.
    let read = read_environ(plain_pid)?;
    ensure!(
        read.status.success() && String::from_utf8_lossy(&read.stdout).contains(&plain_secret),
        "reading an unprotected pod failed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        detections(env, &plain_ns, "plain").await?.is_empty(),
        "an unprotected pod was reported"
    );
    let text = metrics(&guard).await?;
    for (_, detection) in ROUTES {
        for action in ["alerted", "killed"] {
            let needle = format!(
                "phantom_guard_detections_total{{namespace=\"{protected_ns}\",detection=\"{detection}\",action=\"{action}\"}}"
            );
            ensure!(text.contains(&needle), "metrics lack {needle}:\n{text}");
        }
    }
    ensure!(
        text.contains("phantom_guard_mode{mode=\""),
        "metrics lack the mode:\n{text}"
    );
    // 4b. Its heartbeat says how it runs (phantomctl status reads it).
    let lease = wait::until(
        "the guard's heartbeat Lease",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
                env.client(),
                "phantom-system",
            )
            .get_opt(&format!("phantom-guard-{NODE_NAME}"))
            .await?;
            let protects_one = lease.as_ref().is_some_and(|l| {
                l.metadata.annotations.as_ref().is_some_and(|a| {
                    a.get(phantom_crds::wellknown::guard::PROTECTED_PODS_ANNOTATION)
                        .map(String::as_str)
                        == Some("1")
                })
            });
            Ok::<_, kube::Error>(lease.filter(|_| protects_one))
        },
    )
    .await?;
    let annotations = lease.metadata.annotations.unwrap_or_default();
    ensure!(
        annotations
            .get(phantom_crds::wellknown::guard::MODE_ANNOTATION)
            .is_some_and(|m| m.starts_with("tracepoint-") || m.starts_with("lsm-"))
            && annotations
                .get(phantom_crds::wellknown::guard::PROTECTED_PODS_ANNOTATION)
                .map(String::as_str)
                == Some("1"),
        "the heartbeat's annotations: {annotations:?}"
    );

    // 5. The guard killed: its programs go with it (reads pass); restarted: protection back.
    guard.process.kill();
    drop(guard);
    let restarted = Instant::now();
    guard = start_guard(env).await?;
    *log.lock().expect("log lock") = Some(guard.process.log().to_owned());
    wait::until(
        "a reader killed again after the guard's restart",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let out = read_environ(victim)?;
            use std::os::unix::process::ExitStatusExt as _;
            anyhow::Ok((out.status.signal() == Some(9)).then_some(()))
        },
    )
    .await?;
    println!(
        "guard restart → protection back in {:.2} s (start, policy and pod lists, first resync)",
        restarted.elapsed().as_secs_f64()
    );
    guard.process.check_alive()?;
    let log = std::fs::read_to_string(guard.process.log())?;
    ensure!(!log.contains(&secret), "the guard's log holds the secret");
    Ok(())
}
