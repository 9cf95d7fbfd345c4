//! Real pods on the node: time from creating a Deployment to its application running (its first
//! log line), over ten pods, without Phantom and with it (sidecar injected, the application's first
//! line printed once `phantom-exec` has its secret). Also the node's start time. Needs root and,
//! for the Phantom half, `make static`. Prints figures only.
//!
//! `cargo bench -p phantom-conformance --bench pod_start`

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use phantom_conformance::node::{BUSYBOX_IMAGE, unsupported_reason};
use phantom_conformance::{Env, EnvOptions};
use serde_json::json;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(reason) = unsupported_reason() {
        println!("skipped: {reason}");
        return;
    }
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
        println!(
            "Env::start() with a node (node Ready, images imported): {:.2?}",
            env.started_in()
        );
        let ns = env.create_namespace("bench", &[]).await.expect("namespace");
        env.wait_for_default_service_account(&ns)
            .await
            .expect("default SA");
        let baseline = time_to_first_line(&env, &ns, "started=", None).await;
        report("without Phantom", &baseline);

        // With Phantom: the webhook injects the sidecar; the application's first line needs its
        // secret (phantom-exec starts it only once the sidecar has delivered).
        if phantom_conformance::bins::static_built("phantom-proxy").is_none() {
            println!("with Phantom: skipped, the static binaries are not built (`make static`)");
            return;
        }
        let label = phantom_crds::wellknown::INJECT_LABEL;
        let hook = env
            .node_webhook("phantom-bench", label, env.openbao().addr().to_owned())
            .await
            .expect("webhook");
        let ns = env
            .phantom_app_namespace(
                &hook,
                "bench-phantom",
                label,
                json!({"mode": "sidecar"}),
                json!([{"kind": "env", "name": "DB_PASSWORD"}]),
            )
            .await
            .expect("namespace, secret, policy and binding")
            .ns;
        let phantom = time_to_first_line(&env, &ns, "started=yes", Some("app")).await;
        report(
            "with Phantom (sidecar injected, secret as env through phantom-exec)",
            &phantom,
        );
        drop(hook);
    });
}

fn report(what: &str, samples: &[Duration]) {
    println!(
        "Deployment created → application's first log line, {what}: n={} min={:.2?} p50={:.2?} max={:.2?}",
        samples.len(),
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
}

/// Ten single-replica Deployments one after another; for each, the time from create to the
/// application's log showing `marker`.
async fn time_to_first_line(
    env: &Env,
    ns: &str,
    marker: &str,
    service_account: Option<&str>,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    for i in 0..10 {
        let name = format!("app{i}");
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1,
                                           "serviceAccountName": service_account.unwrap_or("default"),
                                           "containers": [{"name": "app", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                                           "command": ["/bin/sh", "-c", "echo started=${DB_PASSWORD:+yes}; sleep 3600"]}]}}}
        }))
        .expect("deployment");
        let started = Instant::now();
        Api::<Deployment>::namespaced(env.client(), ns)
            .create(&PostParams::default(), &deployment)
            .await
            .expect("create");
        let pods: Api<Pod> = Api::namespaced(env.client(), ns);
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "pod of {name} did not start within 120 s"
            );
            let list = pods
                .list(&ListParams::default().labels(&format!("app={name}")))
                .await
                .expect("list");
            if let Some(pod) = list.items.first().and_then(|p| p.metadata.name.clone())
                && env
                    .container_log(ns, &pod, "app")
                    .await
                    .unwrap_or_default()
                    .contains(marker)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    samples
}
