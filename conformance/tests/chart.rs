//! The Helm chart: rendered and linted (`--strict`) with Helm v4's SDK, its rendered output
//! checked in (a drift test), and applied to the real API server with `kubectl`. Its RBAC is then
//! proven sufficient by running the controller and admission in-process *as the chart's
//! ServiceAccounts* (impersonated): they create the webhook configurations, the certificate
//! Secrets, the Lease, the published set and every status, and admit a pod; and insufficient
//! where it should be (admission cannot read the CA key). The guard's and the node agent's
//! ServiceAccounts make the API calls their binaries make, and cannot read Secrets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use phantom_conformance::chart::{chart_dir, lint, render};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::wait::until;
use phantom_conformance::{Env, EnvOptions, random_hex};
use phantom_crds::wellknown::DECISION_ANNOTATION;
use phantom_crds::{PhantomPolicy, condition_types};
use serde_json::json;

fn main() {
    run(
        EnvOptions::default(),
        vec![
            Case::new(
                "the_chart_lints_strictly_and_its_rendered_output_is_checked_in",
                lint_and_drift,
            ),
            Case::new(
                "the_rendered_chart_applies_and_its_rbac_is_enough_for_the_controller_and_admission",
                apply_and_rbac,
            ),
        ],
    )
}

/// Values the checked-in rendering uses: the defaults, with a pin, a CA and the broker so every
/// optional block renders.
fn showcase_values() -> serde_json::Value {
    json!({
        "openbao": {
            "address": "https://openbao.eu.example:8200",
            "spkiSha256": ["sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="],
            "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "cidrs": ["203.0.113.0/24"]
        },
        "networkPolicy": {"webhookFrom": ["198.51.100.0/24"]},
        "broker": {
            "enabled": true,
            "tlsSecret": "phantom-broker-tls",
            "spkiSha256": ["sha256//BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB="],
            "jurisdiction": "DE",
            "collateralConfigMap": "phantom-collateral"
        },
        "guard": {"enabled": true, "maxAction": "alert"},
        "agent": {"enabled": true}
    })
}

async fn lint_and_drift(env: Arc<Env>) -> anyhow::Result<()> {
    let tools = env.tools();
    lint(tools, None).context("the defaults")?;
    lint(tools, Some(&showcase_values())).context("the showcase values")?;

    let rendered = render(tools, "phantom", "phantom-system", Some(&showcase_values()))?;
    phantom_testkit::check_generated(&chart_dir().join("rendered.yaml"), &rendered)
        .map_err(anyhow::Error::msg)?;

    // Managed-cluster add-on constraints: no hooks, no lookup.
    for entry in std::fs::read_dir(chart_dir().join("templates"))? {
        let entry = entry?;
        let text = std::fs::read_to_string(entry.path())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        ensure!(!text.contains("helm.sh/hook"), "{name} uses a Helm hook");
        ensure!(!text.contains("lookup"), "{name} uses lookup");
    }

    // A broker without its certificate or pins is refused, naming the value to set.
    for (values, says) in [
        (json!({"broker": {"enabled": true}}), "broker.tlsSecret"),
        (
            json!({"broker": {"enabled": true, "tlsSecret": "t"}}),
            "broker.spkiSha256",
        ),
        (
            json!({"broker": {"enabled": true, "tlsSecret": "t",
                "spkiSha256": ["sha256//BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB="]}}),
            "openbao.spkiSha256",
        ),
    ] {
        match render(tools, "phantom", "phantom-system", Some(&values)) {
            Ok(_) => bail!("an incomplete broker rendered: {values}"),
            Err(e) => ensure!(e.to_string().contains(says), "{says}: {e}"),
        }
    }

    // Unknown values are refused, naming the key.
    match render(
        tools,
        "phantom",
        "phantom-system",
        Some(&json!({"controler": {"replicas": 1}})),
    ) {
        Ok(_) => bail!("a misspelt value was accepted"),
        Err(e) => ensure!(e.to_string().contains("controler"), "{e}"),
    }

    // The bootstrap token goes into the preflight Job's environment and nowhere else; the chart
    // writes no Secret at all.
    let token = format!("s.bootstrap{}", random_hex(8));
    let with_token = render(
        tools,
        "phantom",
        "phantom-system",
        Some(&json!({"bootstrapToken": token})),
    )?;
    ensure!(
        with_token.matches(&token).count() == 1,
        "the token appears once"
    );
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&with_token)
        .map(|d| serde::Deserialize::deserialize(d).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "the chart writes no Secret"
    );
    let job = docs
        .iter()
        .find(|d| d["kind"] == "Job")
        .context("the preflight Job")?;
    let env_vars = &job["spec"]["template"]["spec"]["containers"][0]["env"];
    ensure!(
        env_vars
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "PHANTOM_BOOTSTRAP_TOKEN" && e["value"] == token.as_str()),
        "{env_vars}"
    );
    Ok(())
}

async fn apply_and_rbac(env: Arc<Env>) -> anyhow::Result<()> {
    let id = random_hex(3);
    let ns = format!("phantom-{id}");
    let release = format!("ph-{id}");
    env.create_namespace_named(&ns, &[]).await?;
    let rendered = render(
        env.tools(),
        &release,
        &ns,
        Some(&json!({
            "openbao": {
                "address": env.openbao().addr(),
                "spkiSha256": ["sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
            },
            // Kubernetes 1.20 serves PodDisruptionBudgets as policy/v1beta1 only.
            "admission": {"podDisruptionBudget": {"apiVersion": "policy/v1beta1"}},
            "broker": {
                "enabled": true,
                "tlsSecret": "phantom-broker-tls",
                "spkiSha256": ["sha256//BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB="]
            },
            "guard": {"enabled": true},
            "agent": {"enabled": true}
        })),
    )?;
    let mut crds = String::new();
    for entry in std::fs::read_dir(chart_dir().join("crds"))? {
        crds.push_str("---\n");
        crds.push_str(&std::fs::read_to_string(entry?.path())?);
    }
    env.kubectl_apply(&crds).context("the chart's CRDs")?;
    let applied = env.kubectl_apply(&rendered)?;
    for expected in [
        "deployment.apps/phantom-controller created",
        "deployment.apps/phantom-admission created",
        "service/phantom-admission created",
        "poddisruptionbudget.policy/phantom-admission created",
        "networkpolicy.networking.k8s.io/phantom created",
        "job.batch/phantom-preflight-1 created",
        "serviceaccount/phantom-controller created",
        "deployment.apps/phantom-broker created",
        "service/phantom-broker created",
        "daemonset.apps/phantom-guard created",
        "daemonset.apps/phantom-agent created",
    ] {
        ensure!(applied.contains(expected), "{expected} in:\n{applied}");
    }

    // The guard's ServiceAccount reads what it watches and writes Events, nothing more.
    let guard_client = env.client_as_service_account(&ns, "phantom-guard").await?;
    Api::<Pod>::all(guard_client.clone())
        .list(&kube::api::ListParams::default().fields("spec.nodeName=node-x"))
        .await
        .context("the guard lists its node's pods")?;
    Api::<PhantomPolicy>::all(guard_client.clone())
        .list(&Default::default())
        .await
        .context("the guard lists PhantomPolicies")?;
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": format!("guard-rbac.{id}"), "namespace": ns},
        "eventTime": "2026-12-03T00:00:00.000000Z",
        "reportingController": "phantom.dev/guard", "reportingInstance": "phantom.dev/guard/node-x",
        "action": "Alert", "reason": "MemoryAccessProcEnviron", "type": "Warning",
        "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "x", "namespace": ns},
        "note": "rbac check"
    }))?;
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(guard_client.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await
        .context("the guard creates Events")?;
    let heartbeat = phantom_probes::guard::daemon::heartbeat::lease(
        "node-x",
        "tracepoint-kill",
        "EPERM",
        0,
        k8s_openapi::jiff::Timestamp::now(),
    );
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(guard_client.clone(), &ns)
        .patch(
            "phantom-guard-node-x",
            &kube::api::PatchParams::apply("phantom-guard").force(),
            &kube::api::Patch::Apply(&heartbeat),
        )
        .await
        .context("the guard applies its heartbeat Lease")?;
    cannot_list_secrets(guard_client, &ns, "the guard").await?;

    agent_rbac(&env, &ns).await?;

    // The controller and admission, in-process, with exactly the chart's permissions.
    let controller_client = env
        .client_as_service_account(&ns, "phantom-controller")
        .await?;
    let admission_client = env
        .client_as_service_account(&ns, "phantom-admission")
        .await?;
    let enable_key = format!("phantom-test/inject-{id}");
    let mut settings = env.controller_settings("rbac", &enable_key)?;
    settings.namespace = ns.clone();
    settings.webhooks.excluded_namespaces.push(ns.clone());
    // The chart grants the webhook configurations by name: the controller's default names.
    let defaults =
        phantom_controller::config::WebhookSettings::new(settings.webhooks.admission.clone());
    settings.webhooks.mutating_name = defaults.mutating_name;
    settings.webhooks.validating_name = defaults.validating_name;
    let controller = env
        .start_controller_as(controller_client.clone(), settings.clone())
        .await?;
    let mut leading = controller.leading.clone();
    tokio::time::timeout(Duration::from_secs(20), leading.wait_for(|l| *l))
        .await
        .context("the controller never led with the chart's Role (leases)")??;
    let hook = env
        .start_webhook_as(admission_client.clone(), &settings, |_| {})
        .await?;
    hook.wait_for("initial sync with the chart's ClusterRole", |s| s.synced)
        .await?;
    until(
        "the MutatingWebhookConfiguration created by the controller's ServiceAccount",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let api = Api::<MutatingWebhookConfiguration>::all(env.client());
            let name = settings.webhooks.mutating_name.clone();
            async move { api.get_opt(&name).await }
        },
    )
    .await?;

    // A policy gets its status; the published set is written.
    let app_ns = env
        .create_namespace(
            "rbac-app",
            &[
                (enable_key.as_str(), "enabled"),
                ("phantom-test/case", id.as_str()),
            ],
        )
        .await?;
    env.wait_for_default_service_account(&app_ns).await?;
    let name = format!("rbac-{id}");
    let policy: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": name},
        "spec": {"match": {"namespaceSelector": {"matchLabels": {"phantom-test/case": id}}}}
    }))?;
    Api::<PhantomPolicy>::all(env.client())
        .create(&PostParams::default(), &policy)
        .await?;
    until(
        format!("PhantomPolicy {name} Ready, written by the controller's ServiceAccount"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let api = Api::<PhantomPolicy>::all(env.client());
            let name = name.clone();
            async move {
                Ok::<_, kube::Error>(
                    api.get(&name)
                        .await?
                        .status
                        .filter(|s| s.is_true(condition_types::READY))
                        .map(|_| ()),
                )
            }
        },
    )
    .await?;
    until(
        "the published policy set written by the controller's ServiceAccount",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let api = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(env.client(), &ns);
            let name = settings.published_set.clone();
            async move { api.get_opt(&name).await }
        },
    )
    .await?;

    // Admission, as its ServiceAccount, admits a pod (dry run) through the API server.
    hook.wait_for_policy(&name).await?;
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "app", "image": "phantom.local/busybox:1", "command": ["true"]}]}
    }))?;
    let stored = Api::<Pod>::namespaced(env.client(), &app_ns)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await?;
    ensure!(
        stored.annotations().contains_key(DECISION_ANNOTATION),
        "{:?}",
        stored.annotations()
    );

    // Least privilege: admission may not read the CA key.
    match Api::<Secret>::namespaced(admission_client, &ns)
        .get(&settings.certs.ca_secret)
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => bail!("admission's ServiceAccount reading the CA Secret: {other:?}"),
    }

    // Least privilege: the controller may not read or edit another product's webhooks.
    let foreign = format!("other-product-{id}");
    Api::<MutatingWebhookConfiguration>::all(env.client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": foreign}, "webhooks": []
            }))?,
        )
        .await?;
    let as_controller = Api::<MutatingWebhookConfiguration>::all(controller_client.clone());
    match as_controller.get(&foreign).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => bail!("the controller's ServiceAccount reading {foreign}: {other:?}"),
    }
    let edit = kube::api::Patch::Merge(json!({"metadata": {"labels": {"taken": "over"}}}));
    match as_controller
        .patch(&foreign, &kube::api::PatchParams::default(), &edit)
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => bail!("the controller's ServiceAccount editing {foreign}: {other:?}"),
    }
    let _ = Api::<MutatingWebhookConfiguration>::all(env.client())
        .delete(&foreign, &kube::api::DeleteParams::default())
        .await;

    // The broker, as its ServiceAccount: it reviews tokens, reads the policy set, pods and
    // namespaces, and nothing else.
    let broker_client = env.client_as_service_account(&ns, "phantom-broker").await?;
    let review =
        Api::<k8s_openapi::api::authentication::v1::TokenReview>::all(broker_client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {"token": "not-a-token", "audiences": ["phantom-broker"]}
                }))?,
            )
            .await
            .context("the broker's ServiceAccount creating a TokenReview")?;
    ensure!(
        review.status.and_then(|s| s.authenticated) != Some(true),
        "a garbage token was authenticated"
    );
    Api::<PhantomPolicy>::all(broker_client.clone())
        .list(&Default::default())
        .await
        .context("the broker's ServiceAccount listing PhantomPolicies")?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(broker_client.clone())
        .get(&app_ns)
        .await
        .context("the broker's ServiceAccount reading a namespace")?;
    match Api::<Secret>::namespaced(broker_client, &ns)
        .get(&settings.certs.ca_secret)
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => bail!("the broker's ServiceAccount reading the CA Secret: {other:?}"),
    }

    controller.shutdown().await;
    hook.launched.shutdown().await;
    let w = &settings.webhooks;
    let delete = kube::api::DeleteParams::default();
    let _ = Api::<MutatingWebhookConfiguration>::all(env.client())
        .delete(&w.mutating_name, &delete)
        .await;
    let _ =
        Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
            env.client(),
        )
        .delete(&w.validating_name, &delete)
        .await;
    Ok(())
}

/// The node agent's ServiceAccount does what the agent does (watch its node's pods, read a
/// caller's namespace and its bindings, review its token) and cannot read Secrets.
async fn agent_rbac(env: &Env, ns: &str) -> anyhow::Result<()> {
    let agent = env.client_as_service_account(ns, "phantom-agent").await?;
    Api::<Pod>::all(agent.clone())
        .list(&kube::api::ListParams::default().fields("spec.nodeName=node-x"))
        .await
        .context("the agent lists its node's pods")?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(agent.clone())
        .get_opt(ns)
        .await
        .context("the agent reads a caller's namespace")?;
    Api::<phantom_crds::SecretBinding>::namespaced(agent.clone(), ns)
        .get_opt("no-such-binding")
        .await
        .context("the agent reads a caller's SecretBindings")?;
    let token = env
        .token_request(
            ns,
            "phantom-agent",
            &["phantom-agent"],
            Duration::from_secs(600),
        )
        .await?;
    let review: k8s_openapi::api::authentication::v1::TokenReview =
        serde_json::from_value(json!({"spec": {"token": token, "audiences": ["phantom-agent"]}}))?;
    Api::<k8s_openapi::api::authentication::v1::TokenReview>::all(agent.clone())
        .create(&PostParams::default(), &review)
        .await
        .context("the agent reviews a pod's token")?;
    cannot_list_secrets(agent, ns, "the agent").await
}

/// Listing Secrets in `ns` as `client` is refused with 403 (`who`'s ServiceAccount).
async fn cannot_list_secrets(client: kube::Client, ns: &str, who: &str) -> anyhow::Result<()> {
    let secrets = Api::<Secret>::namespaced(client, ns)
        .list(&Default::default())
        .await;
    ensure!(
        secrets
            .as_ref()
            .is_err_and(|e| e.to_string().contains("403")),
        "{who}'s ServiceAccount may list Secrets: {secrets:?}"
    );
    Ok(())
}
