//! The admission webhook against the real API server: a MutatingWebhookConfiguration and a
//! ValidatingWebhookConfiguration point at `phantom-admission` (started in-process on loopback
//! with a certificate from the environment's CA). Every assertion reads what the API server
//! stored (or, for dry runs, what it would store), never the webhook's own reply.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::webhook::Webhook;
use phantom_conformance::{Env, EnvOptions, random_hex};
use phantom_crds::wellknown::{
    BINDINGS_ANNOTATION, CANARY_ANNOTATION, INJECT_DISABLED, INJECT_ENABLED, INJECT_LABEL,
    INJECTED_ANNOTATION, OVERRIDE_ANNOTATION, OVERRIDE_BYPASS, OVERRIDE_LABEL,
    POLICY_DIGEST_ANNOTATION,
};
use phantom_crds::{PhantomPolicy, SecretBinding};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const CASE_LABEL: &str = "phantom-test/case";
const CONFIGURATION: &str = "phantom-conformance";

fn main() {
    run(
        EnvOptions::default(),
        vec![
            Case::new(
                "pods_are_stored_as_their_namespace_decides",
                pods_are_stored_as_their_namespace_decides,
            ),
            Case::new(
                "canary_injects_thirty_percent_of_owners_deterministically",
                canary_is_deterministic,
            ),
            Case::new(
                "a_container_without_command_is_denied_with_the_fix",
                container_without_command,
            ),
            Case::new(
                "webhook_down_refuses_pods_fail_closed",
                webhook_down_fails_closed,
            ),
            Case::new(
                "malformed_reviews_get_4xx_and_the_server_keeps_serving",
                malformed_reviews,
            ),
            Case::new(
                "validate_rejects_broken_policies_and_unadmitted_bindings",
                validate_rejects,
            ),
            Case::new(
                "copies_forgeries_updates_and_debug_containers_cannot_undo_an_injection",
                injected_pods_stay_as_admission_decided,
            ),
            Case::new(
                "overload_is_shed_and_the_real_binary_stays_under_the_charts_memory_limit",
                overload_is_shed_under_the_memory_limit,
            ),
        ],
    )
}

static WEBHOOK: OnceCell<Webhook> = OnceCell::const_new();

/// The suite's webhook: one per test binary, registered for every namespace that carries the
/// inject label (enabled or disabled: the webhook itself must honour the opt-out).
async fn webhook(env: &Env) -> anyhow::Result<&'static Webhook> {
    WEBHOOK
        .get_or_try_init(|| async {
            env.install_crds().await?;
            let hook = env.start_webhook(|_| {}).await?;
            hook.register_mutating(
                env,
                CONFIGURATION,
                json!({"matchExpressions": [{"key": INJECT_LABEL, "operator": "Exists"}]}),
            )
            .await?;
            hook.register_validating(env, CONFIGURATION).await?;
            hook.wait_for("initial sync", |s| s.synced).await?;
            anyhow::Ok(hook)
        })
        .await
}

async fn namespace(env: &Env, case: &str, labels: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut all = labels.to_vec();
    all.push((CASE_LABEL, case));
    let ns = env.create_namespace("adm", &all).await?;
    env.wait_for_default_service_account(&ns).await?;
    Ok(ns)
}

/// A policy scoped to the case's namespaces (policies are cluster-wide; cases run in parallel).
async fn create_policy(
    env: &Env,
    hook: &Webhook,
    name: &str,
    case: &str,
    spec: Value,
) -> anyhow::Result<()> {
    let mut spec = spec;
    spec["match"]["namespaceSelector"] = json!({"matchLabels": {CASE_LABEL: case}});
    let policy: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": name}, "spec": spec
    }))?;
    Api::<PhantomPolicy>::all(env.client())
        .create(&PostParams::default(), &policy)
        .await
        .with_context(|| format!("creating PhantomPolicy {name}"))?;
    hook.wait_for_policy(name).await?;
    Ok(())
}

async fn create_binding(env: &Env, hook: &Webhook, namespace: &str) -> anyhow::Result<()> {
    let binding: SecretBinding = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding",
        "metadata": {"name": "db", "namespace": namespace},
        "spec": {"selector": {"podSelector": {}}, "openbao": {"role": "app"},
                 "secrets": [{"name": "password", "path": "app/db", "key": "password",
                              "delivery": [{"kind": "env", "name": "DB_PASSWORD"}]}]}
    }))?;
    Api::<SecretBinding>::namespaced(env.client(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .with_context(|| format!("creating SecretBinding {namespace}/db"))?;
    hook.wait_for_binding(namespace, "db").await?;
    Ok(())
}

fn pod(name: &str, command: Option<&[&str]>) -> Pod {
    let mut container = json!({"name": "app", "image": "phantom.local/busybox:1"});
    if let Some(command) = command {
        container["command"] = json!(command);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container]}
    }))
    .expect("a pod")
}

fn container_names(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let spec = pod.spec.as_ref();
    let names = |cs: Option<&Vec<k8s_openapi::api::core::v1::Container>>| {
        cs.into_iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    (
        names(spec.map(|s| &s.containers)),
        names(spec.and_then(|s| s.init_containers.as_ref())),
    )
}

fn phantom_annotations(pod: &Pod) -> BTreeMap<String, String> {
    pod.annotations()
        .iter()
        .filter(|(k, _)| k.starts_with("phantom.dev/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn create_and_read(env: &Env, namespace: &str, pod: &Pod) -> anyhow::Result<Pod> {
    let api: Api<Pod> = Api::namespaced(env.client(), namespace);
    api.create(&PostParams::default(), pod)
        .await
        .with_context(|| format!("creating pod {namespace}/{}", pod.name_any()))?;
    Ok(api.get(&pod.name_any()).await?)
}

async fn pods_are_stored_as_their_namespace_decides(env: Arc<Env>) -> anyhow::Result<()> {
    let hook = webhook(&env).await?;
    let case = random_hex(4);
    let enabled = namespace(&env, &case, &[(INJECT_LABEL, INJECT_ENABLED)]).await?;
    let plain = namespace(&env, &case, &[]).await?;
    let opted_out = namespace(&env, &case, &[(INJECT_LABEL, INJECT_DISABLED)]).await?;
    let glass = namespace(
        &env,
        &case,
        &[
            (INJECT_LABEL, INJECT_ENABLED),
            (OVERRIDE_LABEL, OVERRIDE_BYPASS),
        ],
    )
    .await?;
    create_policy(&env, hook, &format!("stored-{case}"), &case, json!({})).await?;
    for ns in [&enabled, &plain, &opted_out, &glass] {
        create_binding(&env, hook, ns).await?;
    }
    let submitted = pod("web", Some(&["/bin/web", "--serve"]));

    let injected = create_and_read(&env, &enabled, &submitted).await?;
    let (containers, inits) = container_names(&injected);
    ensure!(
        containers == ["app", "phantom-proxy"],
        "stored containers {containers:?}"
    );
    ensure!(
        inits == ["phantom-init"],
        "stored init containers {inits:?}"
    );
    let app = &injected.spec.as_ref().context("spec")?.containers[0];
    ensure!(
        app.command.as_deref()
            == Some(
                &[
                    "/phantom/bin/phantom-exec",
                    "--container",
                    "app",
                    "--",
                    "/bin/web",
                    "--serve"
                ]
                .map(String::from)[..]
            ),
        "stored command {:?}",
        app.command
    );
    let volumes: Vec<String> = injected
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    for v in ["phantom-bin", "phantom-secrets", "phantom-token"] {
        ensure!(
            volumes.iter().any(|n| n == v),
            "volume {v} missing from {volumes:?}"
        );
    }
    let annotations = phantom_annotations(&injected);
    let digest = hook
        .launched
        .admitter
        .store
        .snapshot()
        .set
        .digest()
        .to_owned();
    ensure!(
        annotations.get(INJECTED_ANNOTATION).map(String::as_str) == Some("true"),
        "{annotations:?}"
    );
    ensure!(
        annotations.get(POLICY_DIGEST_ANNOTATION) == Some(&digest),
        "{annotations:?} vs {digest}"
    );
    ensure!(
        annotations.get(BINDINGS_ANNOTATION).map(String::as_str) == Some("db"),
        "{annotations:?}"
    );
    let proxy = injected
        .spec
        .as_ref()
        .context("spec")?
        .containers
        .iter()
        .find(|c| c.name == "phantom-proxy")
        .context("proxy")?;
    let plan = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == phantom_crds::PLAN_ENV)
        .and_then(|e| e.value.clone())
        .context("PHANTOM_PLAN")?;
    let plan: Vec<phantom_crds::BindingPlan> = serde_json::from_str(&plan)?;
    ensure!(
        plan.len() == 1 && plan[0].name == "db" && plan[0].spec.secrets[0].path == "app/db",
        "the sidecar's plan: {plan:?}"
    );

    for ns in [&plain, &opted_out] {
        let untouched = create_and_read(&env, ns, &submitted).await?;
        let (containers, inits) = container_names(&untouched);
        ensure!(
            containers == ["app"] && inits.is_empty(),
            "{ns}: {containers:?} {inits:?}"
        );
        ensure!(
            untouched.spec.as_ref().context("spec")?.containers[0].command
                == submitted.spec.as_ref().context("spec")?.containers[0].command,
            "{ns}: command changed"
        );
        ensure!(
            phantom_annotations(&untouched).is_empty(),
            "{ns}: {:?}",
            phantom_annotations(&untouched)
        );
    }

    let bypassed = create_and_read(&env, &glass, &submitted).await?;
    let (containers, _) = container_names(&bypassed);
    ensure!(
        containers == ["app"],
        "the override injects nothing: {containers:?}"
    );
    let annotations = phantom_annotations(&bypassed);
    let record = annotations
        .get(OVERRIDE_ANNOTATION)
        .context("override annotation")?;
    ensure!(
        record.contains("created by ") && record.contains(&glass),
        "{record}"
    );
    ensure!(
        !annotations.contains_key(INJECTED_ANNOTATION),
        "{annotations:?}"
    );

    let events: Api<Event> = Api::namespaced(env.client(), &glass);
    phantom_conformance::wait::until(
        "a PhantomOverride Event for the override namespace",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(200),
        || async {
            let list = events.list(&ListParams::default()).await?;
            anyhow::Ok(
                list.items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some("PhantomOverride")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                == Some(glass.as_str())
                    })
                    .then_some(()),
            )
        },
    )
    .await?;
    let metrics = hook.metrics().await?;
    ensure!(
        metrics.contains(&format!(
            "phantom_admission_overrides_total{{namespace=\"{glass}\"}} 1"
        )),
        "override metric missing:\n{metrics}"
    );
    ensure!(metrics.contains(&format!(
        "phantom_admission_injections_total{{namespace=\"{enabled}\"}} 1"
    )));
    Ok(())
}

async fn canary_is_deterministic(env: Arc<Env>) -> anyhow::Result<()> {
    let hook = webhook(&env).await?;
    let case = random_hex(4);
    let ns = namespace(&env, &case, &[(INJECT_LABEL, INJECT_ENABLED)]).await?;
    // A fixed policy name and a key without the (random) namespace make the selection, and so
    // the count, the same on every run: the bound below is checked, not sampled.
    let policy = "canary-conformance".to_owned();
    create_policy(
        &env,
        hook,
        &policy,
        &case,
        json!({"injection": {"canary": {"percent": 30, "key": "object.metadata.ownerReferences[0].name"}}}),
    )
    .await?;
    create_binding(&env, hook, &ns).await?;
    let api: Api<Pod> = Api::namespaced(env.client(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let owned =
        |owner: usize, attempt: usize| {
            let mut p = pod(&format!("w{owner}-{attempt}"), Some(&["/bin/web"]));
            p.metadata.owner_references =
                Some(vec![serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("app-{owner}"),
            "uid": format!("00000000-0000-0000-0000-{owner:012}"), "controller": true
        })).expect("owner reference")]);
            p
        };
    let admit = |owner: usize, attempt: usize| {
        let (api, dry_run, p) = (api.clone(), dry_run.clone(), owned(owner, attempt));
        async move {
            let stored = api
                .create(&dry_run, &p)
                .await
                .with_context(|| format!("dry-run create for owner {owner}"))?;
            let selected = container_names(&stored)
                .0
                .iter()
                .any(|c| c == "phantom-proxy");
            let canary = phantom_annotations(&stored)
                .get(CANARY_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            anyhow::Ok((owner, selected, canary))
        }
    };
    let first: Vec<(usize, bool, String)> = futures::stream::iter(0..1000)
        .map(|owner| admit(owner, 0))
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let injected = first.iter().filter(|(_, selected, _)| *selected).count();
    ensure!(
        (270..=330).contains(&injected),
        "30 % canary injected {injected} of 1000 owners"
    );
    for (owner, selected, canary) in &first {
        let side = if *selected { ":in" } else { ":out" };
        ensure!(
            canary.starts_with(&format!("{policy}:30%:bucket=")) && canary.ends_with(side),
            "owner {owner}: annotation {canary:?}"
        );
    }
    let by_owner: BTreeMap<usize, bool> = first.iter().map(|(o, s, _)| (*o, *s)).collect();
    let again: Vec<(usize, bool, String)> = futures::stream::iter(0..200)
        .map(|owner| admit(owner, 1))
        .buffer_unordered(16)
        .try_collect()
        .await?;
    for (owner, selected, _) in again {
        ensure!(
            by_owner[&owner] == selected,
            "owner {owner} changed its canary answer"
        );
    }
    eprintln!("canary: {injected} of 1000 owners injected at 30 %");
    Ok(())
}

async fn container_without_command(env: Arc<Env>) -> anyhow::Result<()> {
    let hook = webhook(&env).await?;
    let case = random_hex(4);
    let ns = namespace(&env, &case, &[(INJECT_LABEL, INJECT_ENABLED)]).await?;
    create_policy(&env, hook, &format!("command-{case}"), &case, json!({})).await?;
    create_binding(&env, hook, &ns).await?;
    let api: Api<Pod> = Api::namespaced(env.client(), &ns);
    let err = match api.create(&PostParams::default(), &pod("bare", None)).await {
        Ok(_) => bail!("a pod without command was admitted"),
        Err(e) => e.to_string(),
    };
    ensure!(
        err.contains("container app has no command") && err.contains("phantom.dev/command.app"),
        "the refusal says what to add: {err}"
    );
    let mut annotated = pod("annotated", None);
    annotated.metadata.annotations = Some(BTreeMap::from([(
        "phantom.dev/command.app".to_owned(),
        r#"["/bin/sh", "-c", "sleep 3600"]"#.to_owned(),
    )]));
    let stored = create_and_read(&env, &ns, &annotated).await?;
    let command = stored.spec.as_ref().context("spec")?.containers[0]
        .command
        .clone()
        .unwrap_or_default();
    ensure!(
        command[3..] == ["--", "/bin/sh", "-c", "sleep 3600"],
        "stored command {command:?}"
    );
    Ok(())
}

async fn webhook_down_fails_closed(env: Arc<Env>) -> anyhow::Result<()> {
    webhook(&env).await?;
    let case = random_hex(4);
    let ns = namespace(&env, &case, &[("phantom-test/down", &case)]).await?;
    let second = env.start_webhook(|_| {}).await?;
    let configuration = format!("phantom-down-{case}");
    second
        .register_mutating(
            &env,
            &configuration,
            json!({"matchLabels": {"phantom-test/down": case}}),
        )
        .await?;
    let api: Api<Pod> = Api::namespaced(env.client(), &ns);
    // Reachable: the pod is admitted (this namespace does not enable Phantom).
    api.create(&PostParams::default(), &pod("before", Some(&["/bin/web"])))
        .await
        .context("webhook up")?;
    second.launched.shutdown().await;
    let refused = api
        .create(&PostParams::default(), &pod("during", Some(&["/bin/web"])))
        .await;
    Webhook::unregister_mutating(&env, &configuration).await?;
    match refused {
        Ok(_) => bail!("a pod was admitted while its fail-closed webhook was down"),
        Err(e) => ensure!(
            e.to_string().contains("failed calling webhook"),
            "unexpected refusal: {e}"
        ),
    }
    ensure!(
        api.get_opt("during").await?.is_none(),
        "the refused pod is not stored"
    );
    Ok(())
}

fn review(namespace: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": random_hex(8), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": namespace, "operation": "CREATE", "userInfo": {"username": "fuzz"},
                    "object": pod}
    })
}

async fn malformed_reviews(env: Arc<Env>) -> anyhow::Result<()> {
    let hook = webhook(&env).await?;
    let case = random_hex(4);
    let ns = namespace(&env, &case, &[(INJECT_LABEL, INJECT_ENABLED)]).await?;
    create_policy(&env, hook, &format!("fuzz-{case}"), &case, json!({})).await?;
    create_binding(&env, hook, &ns).await?;
    let client = hook.https_client()?;
    let url = hook.url("/mutate");
    let valid = review(&ns, serde_json::to_value(pod("web", Some(&["/bin/web"])))?).to_string();
    let post = |body: Vec<u8>| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.context("every answer is JSON")?;
            anyhow::Ok((status, body))
        }
    };
    let huge_annotation = "x".repeat(1024 * 1024);
    let mut huge_pod = serde_json::to_value(pod("huge", Some(&["/bin/web"])))?;
    huge_pod["metadata"]["annotations"] = json!({"filler": huge_annotation});
    for (name, body, status, expect) in [
        (
            "truncated",
            valid.as_bytes()[..valid.len() / 3].to_vec(),
            400,
            "not an AdmissionReview",
        ),
        (
            "wrong kind",
            json!({"apiVersion": "v1", "kind": "Pod"})
                .to_string()
                .into_bytes(),
            400,
            "expected kind AdmissionReview",
        ),
        ("empty", Vec::new(), 400, "not an AdmissionReview"),
        (
            "oversized body",
            vec![b' '; 9 * 1024 * 1024],
            413,
            "exceeds",
        ),
    ] {
        let (got, answer) = match post(body).await {
            Ok(answer) => answer,
            // The server answers 413 without reading 9 MiB and closes the connection; a client
            // still uploading may see the close before the answer. Either way nothing was
            // admitted, and the checks below prove the server kept serving.
            Err(e) if status == 413 && format!("{e:#}").contains("writing a body") => continue,
            Err(e) => return Err(e.context(name)),
        };
        ensure!(
            got == status,
            "{name}: status {got}, expected {status}: {answer}"
        );
        ensure!(
            answer["error"].as_str().is_some_and(|m| m.contains(expect)),
            "{name}: {answer}"
        );
    }
    let (status, answer) = post(review(&ns, huge_pod).to_string().into_bytes()).await?;
    ensure!(
        status == 200 && answer["response"]["allowed"] == false,
        "a huge pod is refused, not crashed on: {answer}"
    );
    ensure!(
        answer["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("outside what Phantom's policies may evaluate")),
        "{answer}"
    );

    // Random corruptions of a valid review (a deterministic generator, so a failure reproduces).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let corrupted: Vec<Vec<u8>> = (0..200)
        .map(|_| {
            let mut body = valid.clone().into_bytes();
            for _ in 0..(1 + next() % 4) {
                let at = (next() as usize) % body.len();
                body[at] = (next() % 256) as u8;
            }
            body
        })
        .collect();
    let statuses: Vec<u16> = futures::stream::iter(corrupted)
        .map(&post)
        .buffer_unordered(8)
        .map_ok(|(s, _)| s)
        .try_collect()
        .await?;
    ensure!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "statuses {statuses:?}"
    );
    let (status, answer) = post(valid.into_bytes()).await?;
    ensure!(
        status == 200 && answer["response"]["allowed"] == true,
        "still serving: {answer}"
    );
    let wrong_method = client.get(&url).send().await?.status().as_u16();
    ensure!(wrong_method == 405, "GET /mutate answered {wrong_method}");
    let healthz = reqwest::get(hook.health_url("/healthz"))
        .await?
        .status()
        .as_u16();
    ensure!(healthz == 200, "/healthz answered {healthz}");
    Ok(())
}

async fn validate_rejects(env: Arc<Env>) -> anyhow::Result<()> {
    let hook = webhook(&env).await?;
    let case = random_hex(4);
    let broken: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": format!("broken-{case}")},
        "spec": {"match": {"namespaceSelector": {"matchLabels": {CASE_LABEL: case}}},
                 "rules": {"validations": [{"name": "tags", "expression": "object.spec.containers.all(c, c.image.endsWith(':latest')"}]}}
    }))?;
    match Api::<PhantomPolicy>::all(env.client())
        .create(&PostParams::default(), &broken)
        .await
    {
        Ok(_) => bail!("a PhantomPolicy that does not compile was stored"),
        Err(e) => ensure!(
            e.to_string()
                .contains("spec.rules.validations[0].expression"),
            "the refusal carries the compiler's message: {e}"
        ),
    }
    let ns = namespace(&env, &case, &[(INJECT_LABEL, INJECT_ENABLED)]).await?;
    match create_binding(&env, hook, &ns).await {
        Ok(()) => bail!("a SecretBinding no policy admits was stored"),
        Err(e) => ensure!(
            format!("{e:#}").contains("no enforced PhantomPolicy admits namespace"),
            "unexpected refusal: {e:#}"
        ),
    }
    // Once a policy covers the namespace, the same binding is admitted.
    create_policy(&env, hook, &format!("covers-{case}"), &case, json!({})).await?;
    create_binding(&env, hook, &ns).await?;
    Ok(())
}

/// The message of the API server's refusal, or a failure when it admitted the request.
fn refusal<T>(what: &str, result: kube::Result<T>) -> anyhow::Result<String> {
    match result {
        Ok(_) => bail!("{what} was admitted"),
        Err(e) => Ok(e.to_string()),
    }
}

async fn patch_pod(api: &Api<Pod>, name: &str, ops: Value) -> kube::Result<Pod> {
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("a JSON patch");
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
}

async fn injected_pods_stay_as_admission_decided(env: Arc<Env>) -> anyhow::Result<()> {
    let hook = webhook(&env).await?;
    let case = random_hex(4);
    let ns = namespace(&env, &case, &[(INJECT_LABEL, INJECT_ENABLED)]).await?;
    create_policy(
        &env,
        hook,
        &format!("guard-{case}"),
        &case,
        json!({"rules": {"validations": [{"name": "pinned",
            "expression": "object.spec.containers.all(c, !c.image.endsWith(':latest'))",
            "message": "pin image tags"}]}}),
    )
    .await?;
    create_binding(&env, hook, &ns).await?;
    let api: Api<Pod> = Api::namespaced(env.client(), &ns);
    let stored = create_and_read(&env, &ns, &pod("web", Some(&["/bin/web"]))).await?;
    ensure!(
        phantom_annotations(&stored).contains_key(INJECTED_ANNOTATION),
        "injected first"
    );

    // CREATE: a copy of the stored, injected pod, and a plain pod claiming to be injected.
    let mut copy = stored.clone();
    copy.metadata = kube::core::ObjectMeta {
        name: Some("copy".into()),
        annotations: stored.metadata.annotations.clone(),
        ..Default::default()
    };
    let message = refusal(
        "a copy of an injected pod",
        api.create(&PostParams::default(), &copy).await,
    )?;
    ensure!(message.contains("phantom.dev/"), "{message}");
    let mut forged = pod("forged", Some(&["/bin/web"]));
    forged.metadata.annotations = Some(BTreeMap::from([
        (INJECTED_ANNOTATION.to_owned(), "true".to_owned()),
        (
            "phantom.dev/decision".to_owned(),
            r#"{"outcome":"injected"}"#.to_owned(),
        ),
    ]));
    let message = refusal(
        "a pod claiming to be injected",
        api.create(&PostParams::default(), &forged).await,
    )?;
    ensure!(
        message.contains("reserves it for its injection"),
        "{message}"
    );
    let mut mounting = pod("mounting", Some(&["/bin/web"]));
    let spec = mounting.spec.as_mut().context("spec")?;
    spec.containers.push(serde_json::from_value(json!({
        "name": "thief", "image": "phantom.local/busybox:1", "command": ["/bin/sh"],
        "volumeMounts": [{"name": "phantom-secrets", "mountPath": "/stolen"}]}))?);
    let message = refusal(
        "a pod mounting Phantom's secrets volume",
        api.create(&PostParams::default(), &mounting).await,
    )?;
    ensure!(
        message.contains("container thief mounts volume phantom-secrets"),
        "{message}"
    );

    // UPDATE: `kubectl set image` to an image the policy refuses, then to one it allows.
    let message = refusal(
        "an image swap to :latest",
        patch_pod(&api, "web", json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "phantom.local/busybox:latest"}])).await,
    )?;
    ensure!(message.contains("pin image tags"), "{message}");
    let updated = patch_pod(&api, "web", json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "phantom.local/busybox:2"}]))
        .await
        .context("an image swap the policy allows")?;
    ensure!(
        updated.spec.as_ref().context("spec")?.containers[0]
            .image
            .as_deref()
            == Some("phantom.local/busybox:2")
    );
    let proxy = updated
        .spec
        .as_ref()
        .context("spec")?
        .containers
        .iter()
        .position(|c| c.name == "phantom-proxy")
        .context("the sidecar")?;
    let message = refusal(
        "a swap of the sidecar's image",
        patch_pod(&api, "web", json!([{"op": "replace", "path": format!("/spec/containers/{proxy}/image"), "value": "evil/proxy:1"}])).await,
    )?;
    ensure!(
        message.contains("container phantom-proxy is Phantom's"),
        "{message}"
    );
    let message = refusal(
        "removing the decision annotation",
        patch_pod(
            &api,
            "web",
            json!([{"op": "remove", "path": "/metadata/annotations/phantom.dev~1decision"}]),
        )
        .await,
    )?;
    ensure!(
        message.contains("annotation phantom.dev/decision"),
        "{message}"
    );
    patch_pod(
        &api,
        "web",
        json!([{"op": "add", "path": "/metadata/labels", "value": {"rev": "2"}}]),
    )
    .await
    .context("a label change is not Phantom's business")?;

    // A debug container (1.20: the alpha EphemeralContainers API, feature gate on in this
    // environment) may not share a wrapped container's processes or mount Phantom's volumes.
    let path = format!("/api/v1/namespaces/{ns}/pods/web/ephemeralcontainers");
    let current: Value = env
        .client()
        .request(http::Request::get(&path).body(Vec::new())?)
        .await
        .context("reading the pod's ephemeral containers")?;
    let with = |debug: Value| {
        let mut body = current.clone();
        body["ephemeralContainers"] = json!([debug]);
        body
    };
    let put = |body: Value| {
        let client = env.client();
        let path = path.clone();
        async move {
            let request = http::Request::put(&path)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).expect("json"))
                .expect("a request");
            client.request::<Value>(request).await
        }
    };
    let debug = json!({"name": "debug", "image": "phantom.local/busybox:1", "command": ["/bin/sh"],
                       "targetContainerName": "app", "terminationMessagePolicy": "File",
                       "imagePullPolicy": "IfNotPresent"});
    let message = refusal(
        "a debug container targeting the app",
        put(with(debug.clone())).await,
    )?;
    ensure!(message.contains("targets container app"), "{message}");
    let mut mounting = debug.clone();
    mounting
        .as_object_mut()
        .context("object")?
        .remove("targetContainerName");
    mounting["volumeMounts"] = json!([{"name": "phantom-token", "mountPath": "/t"}]);
    let message = refusal(
        "a debug container mounting the token",
        put(with(mounting)).await,
    )?;
    ensure!(message.contains("phantom-token"), "{message}");
    let mut harmless = debug;
    harmless
        .as_object_mut()
        .context("object")?
        .remove("targetContainerName");
    put(with(harmless))
        .await
        .context("a debug container that reaches nothing of Phantom's")?;
    let metrics = hook.metrics().await?;
    ensure!(
        metrics.contains("phantom_admission_decisions_total{outcome=\"update-allowed\"}"),
        "{metrics}"
    );
    Ok(())
}

/// The chart's memory limit of phantom-admission (`chart/values.yaml`).
const CHART_MEMORY_LIMIT_KIB: u64 = 384 * 1024;

/// An AdmissionReview of `bytes` whose pod carries `values` JSON values (the densest a body can
/// be: two bytes per value) and a string filling the rest.
fn heavy_review(namespace: &str, bytes: usize, values: usize) -> Vec<u8> {
    let dense = format!("[{}0]", "0,".repeat(values.saturating_sub(1)));
    let mut pod = serde_json::to_value(pod("heavy", Some(&["/bin/web"]))).expect("pod");
    pod["dense"] = json!("");
    let skeleton = review(namespace, pod.clone()).to_string();
    let filler = bytes.saturating_sub(skeleton.len() + dense.len() + 16);
    pod["metadata"]["annotations"] = json!({"filler": "x".repeat(filler)});
    let text = review(namespace, pod).to_string();
    text.replace(r#""dense":"""#, &format!(r#""dense":{dense}"#))
        .into_bytes()
}

/// The real `phantom-admission` binary under the densest load its port accepts: it sheds what
/// its budget cannot hold (503), stays alive, and stays under the chart's memory limit.
async fn overload_is_shed_under_the_memory_limit(env: Arc<Env>) -> anyhow::Result<()> {
    env.install_crds().await?;
    let binary = phantom_conformance::bins::built("phantom-admission")?;
    let dir = tempfile::tempdir()?;
    let cert = env.ca().serving_cert("phantom-admission", &["localhost"])?;
    std::fs::write(dir.path().join("tls.crt"), &cert.cert_pem)?;
    std::fs::write(dir.path().join("tls.key"), &cert.key_pem)?;
    let (port, health) = (
        phantom_conformance::free_port()?,
        phantom_conformance::free_port()?,
    );
    let mut child = std::process::Command::new(&binary)
        .env("KUBECONFIG", env.kubeconfig())
        .env("PHANTOM_LISTEN", format!("127.0.0.1:{port}"))
        .env("PHANTOM_HEALTH_LISTEN", format!("127.0.0.1:{health}"))
        .env("PHANTOM_TLS_CERT", dir.path().join("tls.crt"))
        .env("PHANTOM_TLS_KEY", dir.path().join("tls.key"))
        .env("PHANTOM_DECISION_KEY", env.new_seal_key()?)
        .env("PHANTOM_PUBLISHED_POLICY_SET", "")
        .env("PHANTOM_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("admission.log"))?)
        .spawn()
        .context("starting phantom-admission")?;
    let pid = child.id();
    let http = reqwest::Client::new();
    let ready = phantom_conformance::wait::until(
        "phantom-admission ready",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || {
            let http = http.clone();
            async move {
                anyhow::Ok(
                    http.get(format!("http://127.0.0.1:{health}/readyz"))
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ()),
                )
            }
        },
    )
    .await;
    if let Err(e) = ready {
        let _ = child.kill();
        bail!(
            "{e}\n{}",
            std::fs::read_to_string(dir.path().join("admission.log"))?
        );
    }
    let idle_kib = phantom_conformance::bins::status_kib(pid, "VmRSS");

    let ca = reqwest::Certificate::from_pem(env.ca().cert_pem.as_bytes())?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let url = format!("https://127.0.0.1:{port}/mutate");
    let max_body = 8 * 1024 * 1024;
    let bodies = [
        bytes::Bytes::from(heavy_review("default", max_body - 1024, 190_000)),
        bytes::Bytes::from(heavy_review("default", max_body - 1024, 1)),
    ];
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for wave in 0..3 {
        let requests = (0..48).map(|i| {
            let (client, url, body) = (client.clone(), url.clone(), bodies[i % 2].clone());
            async move {
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        });
        for status in futures::future::join_all(requests).await {
            *statuses.entry(status).or_default() += 1;
        }
        ensure!(
            child.try_wait()?.is_none(),
            "phantom-admission died in wave {wave}:\n{}",
            std::fs::read_to_string(dir.path().join("admission.log"))?
        );
    }
    let peak_kib = phantom_conformance::bins::status_kib(pid, "VmHWM");
    let small = client
        .post(&url)
        .json(&review(
            "default",
            serde_json::to_value(pod("after", Some(&["/bin/web"])))?,
        ))
        .send()
        .await?;
    let small_status = small.status();
    let metrics = http
        .get(format!("http://127.0.0.1:{health}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "overload: idle {idle_kib} KiB, peak {peak_kib} KiB under 144 requests of 8 MiB; answers {statuses:?}"
    );
    ensure!(
        small_status.is_success(),
        "a normal review is answered after the load: {small_status}"
    );
    ensure!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "some requests were shed: {statuses:?}"
    );
    ensure!(
        metrics.contains("phantom_admission_shed_total{reason=\"memory\"}"),
        "{metrics}"
    );
    ensure!(
        peak_kib < CHART_MEMORY_LIMIT_KIB,
        "peak {peak_kib} KiB reaches the chart's limit of {CHART_MEMORY_LIMIT_KIB} KiB"
    );
    Ok(())
}
