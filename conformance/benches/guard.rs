//! `phantom-guard` on the real node: its RSS idle and while protecting a Deployment's pods, and
//! how long a detection takes to become a Kubernetes Event on the victim pod (node root reading a
//! protected pod's environment; the guard, the API server, etcd and the node share the 2 cores).
//! Measured for the static build its image ships (musl, profile `image`), with the glibc release
//! build's idle RSS beside it: loading the eBPF object parses the kernel's BTF (~33 MiB at peak),
//! and glibc's allocator keeps most of that after it is freed, musl's returns it. Prints figures;
//! asserts nothing. Needs root.
//!
//! `cargo bench -p phantom-conformance --bench guard` (PHANTOM_BENCH_PODS, default 20)

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use phantom_conformance::bins::{
    build_release, build_static, built, measured_copy, static_built, status_kib,
};
use phantom_conformance::local::LocalProcess;
use phantom_conformance::node::{BUSYBOX_IMAGE, NODE_NAME, unsupported_reason};
use phantom_conformance::{Env, EnvOptions, free_port, random_hex};
use phantom_crds::PhantomPolicy;
use phantom_testkit::bench::percentiles;
use serde_json::json;

const LABEL: &str = "phantom.dev/bench-guard";

async fn metric(status: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{status}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Starts the guard binary at `binary` (a measured copy) and waits until it is ready, plus 2 s
/// for the first resyncs; returns it with its status port.
async fn start_guard(env: &Env, binary: &std::path::Path) -> (LocalProcess, u16) {
    let status = free_port().expect("port");
    let mut guard = env
        .spawn_phantom_at(
            "phantom-guard",
            binary,
            &[
                format!("--node-name={NODE_NAME}"),
                format!("--status-listen=127.0.0.1:{status}"),
                // The default: a figure for the shipped setting.
                "--resync-milliseconds=1000".into(),
                "--repeat-window-seconds=1".into(),
            ],
        )
        .expect("guard");
    guard
        .wait_ready(
            "phantom-guard",
            &format!("http://127.0.0.1:{status}/readyz"),
        )
        .await
        .expect("guard ready");
    tokio::time::sleep(Duration::from_secs(2)).await;
    (guard, status)
}

/// RSS, anonymous and file-backed RSS of `pid`, in MiB.
fn rss_split(pid: u32) -> (f64, f64, f64) {
    let mib = |field| status_kib(pid, field) as f64 / 1024.0;
    (mib("VmRSS:"), mib("RssAnon:"), mib("RssFile:"))
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(reason) = unsupported_reason() {
        println!("skipped: {reason}");
        return;
    }
    let pods: usize = std::env::var("PHANTOM_BENCH_PODS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    assert!(
        build_release(&["-p", "phantom-probes", "--bin", "phantom-guard"]),
        "building phantom-guard failed"
    );
    assert!(
        build_static("phantom-probes"),
        "building the static phantom-guard failed"
    );
    let image_build = static_built("phantom-guard").expect("the static phantom-guard is built");
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
        env.install_crds().await.expect("CRDs");
        env.create_namespace_named("phantom-system", &[]).await.ok();
        let ns = env
            .create_namespace("bench-guard", &[(LABEL, "on")])
            .await
            .expect("namespace");
        env.wait_for_default_service_account(&ns).await.expect("SA");
        let policy: PhantomPolicy = serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
            "metadata": {"name": format!("bench-guard-{}", random_hex(3))},
            "spec": {"match": {"namespaceSelector": {"matchLabels": {LABEL: "on"}}},
                     "monitoring": {"action": "alert"}}
        }))
        .expect("policy");
        Api::<PhantomPolicy>::all(env.client())
            .create(&PostParams::default(), &policy)
            .await
            .expect("policy created");

        // Measure copies, not the linker's fresh output (see `measured_copy`).
        let copies = tempfile::tempdir().expect("tempdir");
        let glibc = measured_copy(&built("phantom-guard").expect("phantom-guard"), copies.path())
            .expect("copy of phantom-guard");
        let (mut guard, _) = start_guard(&env, &glibc).await;
        let glibc_idle = rss_split(guard.id());
        guard.kill();
        drop(guard);
        let static_dir = copies.path().join("static");
        std::fs::create_dir_all(&static_dir).expect("mkdir");
        let binary = measured_copy(&image_build, &static_dir).expect("copy of the static build");
        let (guard, status) = start_guard(&env, &binary).await;
        let pid = guard.id();
        let idle = rss_split(pid);

        let secret = format!("bench-guard-{}", random_hex(8));
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": ns},
            "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "app"}},
                     "template": {"metadata": {"labels": {"app": "app"}},
                                  "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                           "command": ["/bin/sh", "-c", "sleep 3600"],
                                                           "env": [{"name": "BENCH_SECRET", "value": secret}]}]}}}
        }))
        .expect("deployment");
        Api::<Deployment>::namespaced(env.client(), &ns)
            .create(&PostParams::default(), &deployment)
            .await
            .expect("deployment created");
        let pod_api: Api<Pod> = Api::namespaced(env.client(), &ns);
        wait_for("the pods Running", Duration::from_secs(300), async || {
            pod_api
                .list(&ListParams::default().labels("app=app"))
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                        .count()
                        == pods
                })
                .unwrap_or(false)
        })
        .await;
        wait_for("the guard protecting every pod", Duration::from_secs(30), async || {
            metric(status, "phantom_guard_protected_pods").await == Some(pods as f64)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let threads = metric(status, "phantom_guard_protected_threads").await.unwrap_or(0.0);
        let protecting = status_kib(pid, "VmRSS:");

        // Detection → Event: node root reads one pod's environment; the Event is polled.
        let victim = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|p| {
                std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|env| env.windows(secret.len()).any(|w| w == secret.as_bytes()))
                    && std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "sleep")
            })
            .expect("a protected process");
        let events: Api<Event> = Api::namespaced(env.client(), &ns);
        let count = async || {
            events
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|e| e.reason.as_deref() == Some("MemoryAccessProcEnviron"))
                        .count()
                })
                .unwrap_or(0)
        };
        let mut latencies = Vec::new();
        for _ in 0..20 {
            // Past the repeat window, so each read is its own Event.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let before = count().await;
            let started = Instant::now();
            let _ = std::process::Command::new("cat")
                .arg(format!("/proc/{victim}/environ"))
                .output();
            let deadline = started + Duration::from_secs(10);
            loop {
                if count().await > before {
                    latencies.push(started.elapsed());
                    break;
                }
                assert!(Instant::now() < deadline, "no Event within 10 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let peak = status_kib(pid, "VmHWM:");
        println!("phantom-guard, tracepoint path, on the node (guard, API server, etcd and kubelet share the 2 cores):");
        for (build, (rss, anon, file)) in [("static image build (musl)", idle), ("glibc release build", glibc_idle)] {
            println!(
                "  {build:26} RSS idle (policies listed, nothing protected) {rss:.1} MiB = anonymous {anon:.1} + file-backed {file:.1}"
            );
        }
        println!(
            "  static image build: protecting {pods} pods ({threads} threads) {:.1} MiB; peak {:.1} MiB",
            protecting as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        percentiles(
            "detection → Event readable from the API server (polled every 5 ms)",
            latencies,
        );
    });
}
