//! A burst of one Deployment's pods on the real node, in injection mode `sidecar` and then in
//! mode `daemonset` (the node agent), in one run: OpenBao requests during the burst (counted by a
//! proxy in front of OpenBao: logins, KV reads, all), the time until every replica's application
//! has its secret, and the memory Phantom holds on the node for those pods once they run (the
//! sidecars' RSS and PSS summed, against the one agent's). Bindings refresh every 10 minutes, so
//! the counts are the burst's own fetches, not refresh rounds. Needs root and `make static`.
//! Prints figures; asserts nothing.
//!
//! `cargo bench -p phantom-conformance --bench agent_burst` (`PHANTOM_BENCH_PODS=<n>`, default
//! 50; the node's kubelet runs at most 110 pods)

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use phantom_conformance::bins::{
    build_release, measured_copy, static_built, status_kib, target_dir,
};
use phantom_conformance::counting_proxy::CountingProxy;
use phantom_conformance::node::{BUSYBOX_IMAGE, unsupported_reason};
use phantom_conformance::webhook::Webhook;
use phantom_conformance::{Env, EnvOptions, free_port, wait};
use serde_json::json;

const DEFAULT_PODS: usize = 50;
const BURST_TIMEOUT: Duration = Duration::from_secs(900);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(reason) = unsupported_reason() {
        println!("skipped: {reason}");
        return;
    }
    if static_built("phantom-proxy").is_none() {
        println!("skipped: the static binaries are not built (`make static`)");
        return;
    }
    let pods = match std::env::var("PHANTOM_BENCH_PODS") {
        Ok(n) => match n.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                eprintln!(
                    "PHANTOM_BENCH_PODS must be 1-100 (the node runs at most 110 pods): {n:?}"
                );
                std::process::exit(2);
            }
        },
        Err(_) => DEFAULT_PODS,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let env = Env::start_with(EnvOptions {
            node: true,
            ..EnvOptions::default()
        })
        .await
        .expect("environment with a node");
        let sidecar = sidecar_mode(&env, pods).await;
        let agent = daemonset_mode(&env, pods).await;
        println!("\n{pods} replicas of one Deployment (one identity), env delivery of one KV v2 secret:");
        println!("| mode | OpenBao requests | logins | KV reads | every replica has its secret | Phantom's memory on the node (RSS / PSS) |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for (mode, figures) in [("sidecar", &sidecar), ("daemonset (agent)", &agent)] {
            println!(
                "| {mode} | {} | {} | {} | {:.1?} | {:.1} MiB / {:.1} MiB ({}) |",
                figures.requests,
                figures.logins,
                figures.reads,
                figures.took,
                figures.rss_kib as f64 / 1024.0,
                figures.pss_kib as f64 / 1024.0,
                figures.memory_of,
            );
        }
        println!(
            "OpenBao requests, sidecar / daemonset: {:.1}x fewer with the agent",
            sidecar.requests as f64 / agent.requests.max(1) as f64
        );
    });
}

struct Figures {
    requests: usize,
    logins: usize,
    reads: usize,
    took: Duration,
    rss_kib: u64,
    pss_kib: u64,
    memory_of: String,
}

fn counts(proxy: &CountingProxy) -> (usize, usize, usize) {
    (
        proxy.count_where(|_| true),
        proxy.count_where(|k| k.starts_with("POST ") && k.ends_with("/login")),
        proxy.count_where(|k| k.starts_with("GET /v1/secret/data/")),
    )
}

/// `Pss:` of `/proc/<pid>/smaps_rollup` in KiB (shared pages split between their users), 0 when
/// unreadable.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The pids of processes whose `comm` is `name`.
fn pids_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// Creates a Deployment of `pods` replicas and waits until every replica's application printed
/// that it has its secret; the time that took.
async fn burst(env: &Env, ns: &str, pods: usize) -> Duration {
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "burst", "namespace": ns},
        "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "burst"}},
                 "template": {"metadata": {"labels": {"app": "burst"}},
                              "spec": {"hostNetwork": true, "serviceAccountName": "app", "terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                       "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}},
                                                       "command": ["/bin/sh", "-c", "echo started=${DB_PASSWORD:+yes}; sleep 3600"]}]}}}
    }))
    .expect("deployment");
    let started = Instant::now();
    Api::<Deployment>::namespaced(env.client(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");
    let api: Api<Pod> = Api::namespaced(env.client(), ns);
    let done = std::sync::Mutex::new(std::collections::BTreeSet::new());
    wait::until(
        format!("{pods} replicas with their secret"),
        BURST_TIMEOUT,
        Duration::from_millis(500),
        || async {
            for pod in api
                .list(&ListParams::default().labels("app=burst"))
                .await?
                .items
            {
                let name = pod.metadata.name.unwrap_or_default();
                if done.lock().expect("lock").contains(&name) {
                    continue;
                }
                if env
                    .container_log(ns, &name, "app")
                    .await
                    .unwrap_or_default()
                    .contains("started=yes")
                {
                    done.lock().expect("lock").insert(name);
                }
            }
            let n = done.lock().expect("lock").len();
            anyhow::Ok((n >= pods).then_some(()))
        },
    )
    .await
    .expect("the burst");
    started.elapsed()
}

async fn remove(env: &Env, ns: &str) {
    Api::<Deployment>::namespaced(env.client(), ns)
        .delete("burst", &DeleteParams::foreground())
        .await
        .expect("delete the Deployment");
    let api: Api<Pod> = Api::namespaced(env.client(), ns);
    wait::until(
        "the burst's pods gone",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || async {
            let left = api.list(&ListParams::default()).await?.items.len();
            anyhow::Ok((left == 0).then_some(()))
        },
    )
    .await
    .expect("pods removed");
}

async fn sidecar_mode(env: &Env, pods: usize) -> Figures {
    let label = "phantom.dev/bench-burst-sidecar";
    let proxy = CountingProxy::start(env.openbao().addr())
        .await
        .expect("counting proxy");
    let hook = env
        .node_webhook("phantom-bench-burst-sidecar", label, proxy.url())
        .await
        .expect("webhook");
    let figures = measured_burst(env, &hook, &proxy, label, "sidecar", pods, || {
        let sidecars = pids_named("phantom-proxy");
        (
            sidecars.iter().map(|&p| status_kib(p, "VmRSS:")).sum(),
            sidecars.iter().map(|&p| pss_kib(p)).sum(),
            format!("{} sidecars", sidecars.len()),
        )
    })
    .await;
    drop(hook);
    figures
}

async fn daemonset_mode(env: &Env, pods: usize) -> Figures {
    let label = "phantom.dev/bench-burst-agent";
    assert!(
        build_release(&[
            "-p",
            "phantom-runtime-proxy",
            "--features",
            "agent",
            "--bin",
            "phantom-agent"
        ]),
        "building phantom-agent (release)"
    );
    let binary = measured_copy(&target_dir().join("release/phantom-agent"), env.dir())
        .expect("a copy of phantom-agent");
    let proxy = CountingProxy::start(env.openbao().addr())
        .await
        .expect("counting proxy");
    let socket_dir = env.dir().join("bench-agent");
    let status = free_port().expect("a port");
    let mut agent = env
        .spawn_phantom_at(
            "phantom-agent-bench",
            &binary,
            &env.node_agent_args(&socket_dir, &proxy.url(), label, status),
        )
        .expect("start phantom-agent");
    agent
        .wait_ready(
            "phantom-agent",
            &format!("http://127.0.0.1:{status}/readyz"),
        )
        .await
        .expect("agent ready");
    let socket_dir_text = socket_dir.display().to_string();
    let hook = env
        .node_webhook_with("phantom-bench-burst-agent", label, |settings| {
            settings.inject.openbao_address = proxy.url();
            settings.inject.agent.socket_dir = socket_dir_text.clone();
        })
        .await
        .expect("webhook");
    let pid = agent.id();
    let figures = measured_burst(env, &hook, &proxy, label, "daemonset", pods, || {
        (
            status_kib(pid, "VmRSS:"),
            pss_kib(pid),
            format!("one agent, release build of {}", short(&binary)),
        )
    })
    .await;
    drop(hook);
    figures
}

/// A namespace in injection mode `mode` (its binding refreshed every 10 minutes, so refresh
/// rounds stay out of the count), a burst of `pods` replicas, OpenBao's requests as `proxy`
/// counted them, and Phantom's memory as `memory` samples it (RSS KiB, PSS KiB, of what) while
/// the replicas run; the Deployment is removed afterwards.
async fn measured_burst(
    env: &Env,
    hook: &Webhook,
    proxy: &CountingProxy,
    label: &str,
    mode: &str,
    pods: usize,
    memory: impl FnOnce() -> (u64, u64, String),
) -> Figures {
    let ns = env
        .phantom_app_namespace_refreshed(
            hook,
            &format!("burst-{mode}"),
            label,
            json!({ "mode": mode }),
            json!([{"kind": "env", "name": "DB_PASSWORD", "containers": ["app"]}]),
            "10m",
        )
        .await
        .expect("namespace, secret, policy and binding")
        .ns;
    let took = burst(env, &ns, pods).await;
    let (requests, logins, reads) = counts(proxy);
    let (rss_kib, pss_kib, memory_of) = memory();
    remove(env, &ns).await;
    Figures {
        requests,
        logins,
        reads,
        took,
        rss_kib,
        pss_kib,
        memory_of,
    }
}

fn short(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
