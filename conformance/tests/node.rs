//! The node: real pods from locally built images, scheduled, started by the kubelet on a private
//! containerd. Until the admission server and sidecar exist, a plain Deployment proves it.
//! Needs root (skips with the reason otherwise; CI runs as root).

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::node::BUSYBOX_IMAGE;
use phantom_conformance::{Env, EnvOptions, random_hex, wait};
use serde_json::json;

fn main() {
    run(
        EnvOptions {
            node: true,
            ..EnvOptions::default()
        },
        vec![Case::new(
            "a_deployment_runs_real_pods_from_local_images",
            a_deployment_runs_real_pods,
        )],
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
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let running = wait::until(
        "two Running pods of the Deployment",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let list = pods.list(&ListParams::default().labels("app=app")).await?;
            let names: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            Ok::<_, kube::Error>((names.len() == 2).then_some(names))
        },
    )
    .await?;
    for pod in running {
        let log = wait::until(
            format!("{pod}'s log"),
            Duration::from_secs(30),
            Duration::from_millis(250),
            || async {
                let log = env.container_log(&ns, &pod, "app").await?;
                Ok::<_, phantom_conformance::Error>(log.contains(&marker).then_some(log))
            },
        )
        .await?;
        ensure!(log.contains(&marker), "pod {pod} did not print its marker");
    }
    Ok(())
}
