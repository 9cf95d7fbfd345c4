//! The controller's reaction times against the real API server (in-process controller and
//! admission, release build): a deleted MutatingWebhookConfiguration back, an altered one
//! reverted, a new PhantomPolicy's status Ready, admission down → breaker open, and a killed
//! leader's lease taken over. Prints figures; asserts nothing.
//!
//! `cargo bench -p phantom-conformance --bench controller`

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use phantom_conformance::{Env, random_hex};
use phantom_controller::breaker::State;
use phantom_crds::{PhantomPolicy, condition_types};
use serde_json::json;

const ROUNDS: usize = 30;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn report(what: &str, samples: &mut [Duration]) {
    println!(
        "{what:<48} n={:<3} p50 {:>8.1?}  p99 {:>8.1?}  max {:>8.1?}",
        samples.len(),
        percentile(samples, 0.5),
        percentile(samples, 0.99),
        percentile(samples, 1.0)
    );
}

async fn until<T>(mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    phantom_conformance::init_logging(false);
    let env = Env::start().await?;
    env.install_crds().await?;
    let settings = env.controller_settings("bench", "phantom-bench/inject")?;
    let controller = env.start_controller(settings.clone()).await?;
    let hook = env.start_webhook_for(&settings, |_| {}).await?;
    let name = settings.webhooks.mutating_name.clone();
    let api = Api::<MutatingWebhookConfiguration>::all(env.client());
    until(async || api.get_opt(&name).await.ok().flatten()).await;

    let mut restored = Vec::new();
    for _ in 0..ROUNDS {
        let uid = api.get(&name).await?.uid();
        api.delete(&name, &DeleteParams::default()).await?;
        let t = Instant::now();
        until(async || {
            api.get_opt(&name)
                .await
                .ok()
                .flatten()
                .filter(|c| c.uid() != uid)
        })
        .await;
        restored.push(t.elapsed());
    }
    report("deleted configuration → re-created", &mut restored);

    let mut reverted = Vec::new();
    // The edit a person makes: failurePolicy Ignore, by another field manager.
    let edit = json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]);
    for _ in 0..ROUNDS {
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(edit.clone())?),
        )
        .await?;
        let t = Instant::now();
        until(async || {
            api.get(&name).await.ok().filter(|c| {
                c.webhooks
                    .as_ref()
                    .is_some_and(|w| w[0].failure_policy.as_deref() == Some("Fail"))
            })
        })
        .await;
        reverted.push(t.elapsed());
    }
    report("failurePolicy edited → reverted", &mut reverted);

    let policies = Api::<PhantomPolicy>::all(env.client());
    let mut ready = Vec::new();
    for _ in 0..ROUNDS {
        let policy: PhantomPolicy = serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
            "metadata": {"name": format!("bench-{}", random_hex(4))},
            "spec": {"match": {"namespaceSelector": {"matchLabels": {"bench": "none"}}}}
        }))?;
        let t = Instant::now();
        let created = policies.create(&PostParams::default(), &policy).await?;
        until(async || {
            policies
                .get(&created.name_any())
                .await
                .ok()
                .and_then(|p| p.status)
                .filter(|s| s.is_true(condition_types::READY))
        })
        .await;
        ready.push(t.elapsed());
    }
    report("PhantomPolicy created → status Ready", &mut ready);

    let t = Instant::now();
    hook.launched.shutdown().await;
    let mut breaker = controller.breaker.clone();
    breaker.wait_for(|s| *s == State::Open).await?;
    let opened = t.elapsed();
    until(async || {
        api.get(&name).await.ok().filter(|c| {
            c.webhooks
                .as_ref()
                .is_some_and(|w| w[0].failure_policy.as_deref() == Some("Ignore"))
        })
    })
    .await;
    println!(
        "{:<48} {opened:.1?} (probes every {:?}, open after {} failures); failing open after {:.1?}",
        "admission stopped → breaker open",
        settings.breaker.probe_interval,
        settings.breaker.failures_to_open,
        t.elapsed()
    );

    let mut failovers = Vec::new();
    let mut current = controller;
    for round in 0..3 {
        let mut next = settings.clone();
        next.leader.identity = format!("bench-standby-{round}");
        let standby = env.start_controller(next).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        current.kill().await;
        let t = Instant::now();
        let mut leading = standby.leading.clone();
        leading.wait_for(|l| *l).await?;
        failovers.push(t.elapsed());
        current = standby;
    }
    report(
        &format!(
            "leader killed → standby leads (lease {:?})",
            settings.leader.lease_duration
        ),
        &mut failovers,
    );
    current.shutdown().await;
    Ok(())
}
