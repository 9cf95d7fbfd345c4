//! `phantom-guard` on the real node: the real binary (as root, as its DaemonSet would run with
//! hostPID), a namespace whose PhantomPolicy protects its pods, real pods on kubelet + containerd.
//! A protected pod's environment read by node root and by a hostPID pod: reported on the victim
//! pod as a Warning Event naming the accessor (pid, comm, uid; pod and container for the pod);
//! with `action: block` the reader is killed before it prints the secret and the victim keeps
//! running; an unprotected pod on the same node: nothing reported; the guard killed and restarted:
//! protection back, within a measured bound. Needs root (skips with the reason otherwise).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::node::{BUSYBOX_IMAGE, NODE_NAME};
use phantom_conformance::{Env, EnvOptions, free_port, random_hex, wait};
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

/// The host pid of the process whose environment holds `secret`.
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

async fn scenario(
    env: &Env,
    log: &std::sync::Mutex<Option<std::path::PathBuf>>,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    let protected_ns = env.create_namespace("guard", &[(LABEL, "on")]).await?;
    let plain_ns = env.create_namespace("guard-plain", &[]).await?;
    let attacker_ns = env.create_namespace("guard-attacker", &[]).await?;
    let policy_name = format!("guard-{}", random_hex(3));
    let policy: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": policy_name},
        "spec": {"match": {"namespaceSelector": {"matchLabels": {LABEL: "on"}}},
                 "monitoring": {"action": "alert", "alertLabels": {"team": "e2e"}}}
    }))?;
    let policies: Api<PhantomPolicy> = Api::all(env.client());
    policies.create(&PostParams::default(), &policy).await?;
    for ns in [&protected_ns, &plain_ns, &attacker_ns] {
        env.wait_for_default_service_account(ns).await?;
    }

    env.create_namespace_named("phantom-system", &[]).await.ok();
    let mut guard = start_guard(env).await?;
    *log.lock().expect("log lock") = Some(guard.process.log().to_owned());
    let secret = format!("guard-e2e-{}", random_hex(12));
    let plain_secret = format!("guard-plain-{}", random_hex(12));
    let victims: Api<Pod> = Api::namespaced(env.client(), &protected_ns);
    let plain: Api<Pod> = Api::namespaced(env.client(), &plain_ns);
    victims
        .create(
            &PostParams::default(),
            &sleeper("victim", &protected_ns, &secret)?,
        )
        .await?;
    plain
        .create(
            &PostParams::default(),
            &sleeper("plain", &plain_ns, &plain_secret)?,
        )
        .await?;
    running(&victims, "victim").await?;
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
        "victim",
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

    // 2. alert: a hostPID pod does the same; the Event names its pod and container.
    let attacker: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader", "namespace": attacker_ns},
        "spec": {"hostNetwork": true, "hostPID": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "shell", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                 "securityContext": {"privileged": true},
                                 "command": ["/bin/sh", "-c", format!("sleep 2; cat /proc/{victim}/environ > /dev/null; sleep 3600")]}]}
    }))?;
    Api::<Pod>::namespaced(env.client(), &attacker_ns)
        .create(&PostParams::default(), &attacker)
        .await?;
    event_saying(
        env,
        &protected_ns,
        "victim",
        &[&format!("pod {attacker_ns}/reader, container shell")],
    )
    .await?;

    // 3. block: the reader is killed before it prints anything; the victim keeps running.
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
    event_saying(
        env,
        &protected_ns,
        "victim",
        &["killed before the call returned"],
    )
    .await?;
    ensure!(
        std::path::Path::new(&format!("/proc/{victim}")).exists(),
        "the victim was hurt"
    );

    // 4. The unprotected pod: read, nothing reported.
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
    for needle in [
        &format!(
            "phantom_guard_detections_total{{namespace=\"{protected_ns}\",detection=\"proc-environ\",action=\"alerted\"}}"
        ),
        &format!(
            "phantom_guard_detections_total{{namespace=\"{protected_ns}\",detection=\"proc-environ\",action=\"killed\"}}"
        ),
        &"phantom_guard_mode{mode=\"".to_string(),
    ] {
        ensure!(
            text.contains(needle.as_str()),
            "metrics lack {needle}:\n{text}"
        );
    }

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
