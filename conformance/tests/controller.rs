//! The controller against the real API server: in-process controllers and admission servers on
//! loopback, every assertion read back from what the API server stores. The cases run one at a
//! time (they stop admission and kill controllers, and every controller writes the status of every
//! policy), each with its own controller namespace, configuration names and enable label.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use phantom_conformance::harness::{Case, run};
use phantom_conformance::wait::until;
use phantom_conformance::{Env, EnvOptions, random_hex};
use phantom_controller::app::Running;
use phantom_controller::breaker::State;
use phantom_controller::config::Settings;
use phantom_controller::gaps::GapReason;
use phantom_crds::wellknown::{CRITICAL_LABEL, DECISION_ANNOTATION, SEAL_ANNOTATION};
use phantom_crds::{PhantomPolicy, condition_types};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const CASE_LABEL: &str = "phantom-test/case";

fn main() {
    run(
        EnvOptions::default(),
        vec![
            Case::new(
                "breaker_opens_fails_open_reports_gap_pods_and_a_broken_edit_never_takes_effect",
                breaker_and_broken_edit,
            ),
            Case::new(
                "deleted_or_altered_configurations_are_restored_within_5_s",
                restoration,
            ),
            Case::new(
                "two_controllers_one_leader_and_failover_within_the_lease",
                leader_failover,
            ),
            Case::new(
                "certificates_rotate_and_admission_keeps_answering",
                certificate_rotation,
            ),
            Case::new(
                "gap_pods_with_an_owner_are_evicted_and_return_through_the_webhook",
                gap_eviction,
            ),
            Case::new(
                "an_object_the_types_refuse_is_reported_and_skipped_never_fatal",
                unreadable_object,
            ),
        ],
    )
}

static SERIAL: Mutex<()> = Mutex::const_new(());

struct Setup {
    settings: Settings,
    case: String,
    enable_key: String,
}

async fn setup(
    env: &Env,
    prefix: &str,
    adjust: impl FnOnce(&mut Settings),
) -> anyhow::Result<Setup> {
    env.install_crds().await?;
    let case = random_hex(3);
    let enable_key = format!("phantom-test/inject-{case}");
    let mut settings = env.controller_settings(prefix, &enable_key)?;
    adjust(&mut settings);
    Ok(Setup {
        settings,
        case,
        enable_key,
    })
}

impl Setup {
    /// A namespace the case's configurations cover.
    async fn covered_namespace(&self, env: &Env, extra: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut labels = vec![
            (self.enable_key.as_str(), "enabled"),
            (CASE_LABEL, self.case.as_str()),
        ];
        labels.extend_from_slice(extra);
        let ns = env.create_namespace("ctl", &labels).await?;
        env.wait_for_default_service_account(&ns).await?;
        Ok(ns)
    }

    /// Removes the case's configurations (its controllers are stopped first).
    async fn remove_configurations(&self, env: &Env) {
        let w = &self.settings.webhooks;
        let _ = Api::<MutatingWebhookConfiguration>::all(env.client())
            .delete(&w.mutating_name, &DeleteParams::default())
            .await;
        let _ = Api::<ValidatingWebhookConfiguration>::all(env.client())
            .delete(&w.validating_name, &DeleteParams::default())
            .await;
    }
}

fn pod(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "phantom.local/busybox:1",
                                  "command": ["sleep", "3600"]}]}
    }))
    .expect("a pod")
}

fn failure_policies(config: &MutatingWebhookConfiguration) -> Vec<String> {
    config
        .webhooks
        .iter()
        .flatten()
        .map(|w| w.failure_policy.clone().unwrap_or_default())
        .collect()
}

async fn wait_for_mutating(
    env: &Env,
    name: &str,
    what: &str,
    ready: impl Fn(&MutatingWebhookConfiguration) -> bool,
) -> anyhow::Result<MutatingWebhookConfiguration> {
    let api = Api::<MutatingWebhookConfiguration>::all(env.client());
    Ok(until(
        format!("MutatingWebhookConfiguration {name}: {what}"),
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let api = api.clone();
            let ready = &ready;
            async move { Ok::<_, kube::Error>(api.get_opt(name).await?.filter(|c| ready(c))) }
        },
    )
    .await?)
}

async fn wait_for_state(controller: &Running, state: State) -> anyhow::Result<()> {
    let mut rx = controller.breaker.clone();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| *s == state))
        .await
        .with_context(|| format!("the breaker did not become {} within 20 s", state.as_str()))??;
    Ok(())
}

async fn events(
    env: &Env,
    namespace: &str,
    reason: &str,
    name: &str,
) -> anyhow::Result<Vec<Event>> {
    let all = Api::<Event>::namespaced(env.client(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(all
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}

async fn wait_for_event(
    env: &Env,
    namespace: &str,
    reason: &str,
    name: &str,
) -> anyhow::Result<Event> {
    Ok(until(
        format!("an Event {reason} about {name} in {namespace}"),
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async move {
            Ok::<_, anyhow::Error>(
                events(env, namespace, reason, name)
                    .await?
                    .into_iter()
                    .next(),
            )
        },
    )
    .await?)
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn policy_status(
    env: &Env,
    name: &str,
    what: &str,
    ready: impl Fn(&PhantomPolicy) -> bool,
) -> anyhow::Result<PhantomPolicy> {
    let api = Api::<PhantomPolicy>::all(env.client());
    Ok(until(
        format!("PhantomPolicy {name}: {what}"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let api = api.clone();
            let ready = &ready;
            async move { Ok::<_, kube::Error>(api.get_opt(name).await?.filter(|p| ready(p))) }
        },
    )
    .await?)
}

fn condition_reason(p: &PhantomPolicy, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .condition(type_)
        .map(|c| c.reason.clone())
}

/// A dry-run pod without a team label: `Err(message)` when admission refused it.
async fn dry_run_unlabelled(env: &Env, ns: &str) -> anyhow::Result<Result<Pod, String>> {
    let api: Api<Pod> = Api::namespaced(env.client(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api
        .create(
            &dry_run,
            &pod(&format!("probe-{}", random_hex(3)), json!({})),
        )
        .await
    {
        Ok(p) => Ok(Ok(p)),
        Err(kube::Error::Api(status)) => Ok(Err(status.message)),
        Err(e) => Err(e.into()),
    }
}

async fn breaker_and_broken_edit(env: Arc<Env>) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let s = setup(&env, "brk", |_| {}).await?;
    let controller = env.start_controller(s.settings.clone()).await?;
    let hook = env.start_webhook_for(&s.settings, |_| {}).await?;
    let name = &s.settings.webhooks.mutating_name;
    wait_for_mutating(&env, name, "created, failing closed", |c| {
        failure_policies(c) == ["Fail", "Fail"]
    })
    .await?;
    let ns = s.covered_namespace(&env, &[]).await?;
    let critical = s
        .covered_namespace(&env, &[(CRITICAL_LABEL, "true")])
        .await?;

    // v1 of a policy: pods need a team label.
    let policy_name = format!("team-{}", s.case);
    let v1: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": policy_name},
        "spec": {"match": {"namespaceSelector": {"matchLabels": {CASE_LABEL: s.case}}},
                 "rules": {"validations": [{"name": "team",
                     "expression": "has(object.metadata.labels) && 'team' in object.metadata.labels",
                     "message": "pods need a team label"}]}}
    }))?;
    Api::<PhantomPolicy>::all(env.client())
        .create(&PostParams::default(), &v1)
        .await
        .context("creating the policy")?;
    let enforced = policy_status(&env, &policy_name, "Ready", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.is_true(condition_types::READY))
    })
    .await?;
    let v1_digest = enforced
        .status
        .as_ref()
        .and_then(|s| s.compiled_digest.clone());
    ensure!(v1_digest.is_some(), "the status names the compiled digest");
    hook.wait_for_policy(&policy_name).await?;
    let refused = dry_run_unlabelled(&env, &ns).await?;
    ensure!(
        matches!(&refused, Err(m) if m.contains("pods need a team label")),
        "v1 refuses an unlabelled pod: {refused:?}"
    );

    // A pod admission saw: its decision record carries admission's seal.
    let sealed = Api::<Pod>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &pod("sealed", json!({"team": "a"})))
        .await
        .context("a labelled pod through the webhook")?;
    ensure!(
        sealed.annotations().contains_key(SEAL_ANNOTATION),
        "admission seals its record: {:?}",
        sealed.annotations()
    );

    // Admission goes away: the breaker opens, non-critical namespaces fail open.
    hook.launched.shutdown().await;
    wait_for_state(&controller, State::Open).await?;
    let opened = wait_for_mutating(
        &env,
        name,
        "failing open except for critical namespaces",
        |c| failure_policies(c) == ["Ignore", "Fail"],
    )
    .await?;
    ensure!(
        opened
            .annotations()
            .get("phantom.dev/circuit-breaker")
            .map(String::as_str)
            == Some("open"),
        "the configuration records the breaker: {:?}",
        opened.annotations()
    );
    wait_for_event(&env, &s.settings.namespace, "CircuitBreakerOpened", name).await?;
    ensure!(
        metric(
            &controller.metrics.encode(),
            "phantom_controller_breaker_open "
        ) == Some(1.0),
        "breaker metric"
    );
    let gap = Api::<Pod>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &pod("gap", json!({"team": "a"})))
        .await
        .context("a pod in a non-critical namespace is admitted while the breaker is open")?;
    ensure!(
        !gap.annotations().contains_key(DECISION_ANNOTATION),
        "admitted without Phantom: {:?}",
        gap.annotations()
    );
    // Pods the webhook never saw, dressed as decided: a record written by hand, and the sealed
    // pod's record copied whole.
    let mut forged = pod("forged", json!({}));
    forged.metadata.annotations = Some(BTreeMap::from([(
        DECISION_ANNOTATION.to_owned(),
        r#"{"outcome":"not-selected","policy":null,"mode":null,"matched":[]}"#.to_owned(),
    )]));
    let mut copied = pod("copied", json!({}));
    copied.metadata.annotations = sealed.metadata.annotations.clone();
    for dressed in [&forged, &copied] {
        Api::<Pod>::namespaced(env.client(), &ns)
            .create(&PostParams::default(), dressed)
            .await
            .with_context(|| {
                format!("creating {} while the breaker is open", dressed.name_any())
            })?;
    }
    match Api::<Pod>::namespaced(env.client(), &critical)
        .create(&PostParams::default(), &pod("held", json!({"team": "a"})))
        .await
    {
        Ok(_) => bail!("a pod in a critical namespace was admitted without Phantom"),
        Err(e) => ensure!(e.to_string().contains("inject-critical.phantom.dev"), "{e}"),
    }

    // With validation failing open, a broken edit gets stored: it is reported, never enforced.
    let mut v2 = Api::<PhantomPolicy>::all(env.client())
        .get(&policy_name)
        .await?;
    v2.spec.rules.validations[0].expression = "object.metadata.labels.(".into();
    Api::<PhantomPolicy>::all(env.client())
        .replace(&policy_name, &PostParams::default(), &v2)
        .await
        .context("storing a broken edit while validation fails open")?;
    let held = policy_status(&env, &policy_name, "the broken generation reported", |p| {
        p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
            && condition_reason(p, condition_types::COMPILED).as_deref() == Some("CompileFailed")
    })
    .await?;
    let status = held.status.clone().unwrap_or_default();
    ensure!(
        condition_reason(&held, condition_types::READY).as_deref()
            == Some("PreviousVersionEnforced"),
        "{status:?}"
    );
    ensure!(
        status.compiled_digest == v1_digest,
        "v1 is still what is enforced: {status:?}"
    );
    let error = status
        .errors
        .first()
        .context("the status lists the error")?;
    ensure!(
        error.field == "spec.rules.validations[0].expression",
        "{error:?}"
    );
    ensure!(
        error.position.is_some(),
        "the error has a position: {error:?}"
    );
    wait_for_event(&env, &s.settings.namespace, "CompileFailed", &policy_name).await?;

    // Admission comes back (a new process: it reads the published set) and the breaker closes.
    let hook = env.start_webhook_for(&s.settings, |_| {}).await?;
    wait_for_state(&controller, State::Closed).await?;
    wait_for_mutating(&env, name, "failing closed again", |c| {
        failure_policies(c) == ["Fail", "Fail"]
    })
    .await?;
    wait_for_event(&env, &s.settings.namespace, "CircuitBreakerClosed", name).await?;

    // The pods admitted while the breaker was open are reported, the dressed-up ones too; the
    // pod admission sealed is not.
    for (name, says) in [
        ("gap", "admitted without Phantom's webhook"),
        ("forged", "carries no seal"),
        ("copied", "seal does not verify"),
    ] {
        let reported = wait_for_event(&env, &ns, "AdmittedWithoutPhantom", name).await?;
        ensure!(
            reported.note.as_deref().unwrap_or_default().contains(says),
            "{name}: {reported:?}"
        );
    }
    ensure!(
        metric(&controller.metrics.encode(), "phantom_controller_gap_pods ") == Some(3.0),
        "gap pod metric: {}",
        controller.metrics.encode()
    );
    let dir = s.settings.certs.write_dir.clone().context("write_dir")?;
    let key_text = std::fs::read_to_string(dir.join(phantom_controller::gaps::DECISION_KEY))?;
    let key = phantom_seal::Key::decode(&key_text, "the controller's decision.key")?;
    let gaps =
        phantom_controller::gaps::scan(&env.client(), &s.settings.webhooks, Some(&key)).await?;
    let mut found: Vec<(&str, GapReason)> = gaps
        .iter()
        .filter(|g| g.namespace == ns)
        .map(|g| (g.name.as_str(), g.reason))
        .collect();
    found.sort();
    ensure!(
        found
            == [
                ("copied", GapReason::ForgedSeal),
                ("forged", GapReason::Unsealed),
                ("gap", GapReason::Unrecorded),
            ],
        "{gaps:?}"
    );

    // phantomctl status reports it too, and exits 1 (something needs attention).
    let w = &s.settings.webhooks;
    let out = std::process::Command::new(phantom_conformance::bins::built("phantomctl")?)
        .args(["status", "--namespace", &s.settings.namespace])
        .args(["--lease", &s.settings.leader.lease_name])
        .args([
            "--mutating-webhook",
            &w.mutating_name,
            "--validating-webhook",
            &w.validating_name,
        ])
        .args(["--enable-label", &format!("{}=enabled", s.enable_key)])
        .args(["--serving-secret", &s.settings.certs.serving_secret])
        .env("KUBECONFIG", env.kubeconfig())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(1),
        "phantomctl status exit {:?}: {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(text.contains(&format!("{ns}/gap (owner none")), "{text}");
    ensure!(text.contains(&format!("{ns}/forged (owner none")), "{text}");
    ensure!(!text.contains("decision seals not checked"), "{text}");
    ensure!(text.contains("PreviousVersionEnforced"), "{text}");
    ensure!(text.contains("circuit breaker closed"), "{text}");

    // The restarted admission enforces v1: the broken v2 never took effect.
    hook.wait_for("initial sync", |snap| snap.synced).await?;
    hook.wait_for_policy(&policy_name).await?;
    let refused = dry_run_unlabelled(&env, &ns).await?;
    ensure!(
        matches!(&refused, Err(m) if m.contains("pods need a team label")),
        "the previous version stays in force in a freshly started admission: {refused:?}"
    );

    Api::<PhantomPolicy>::all(env.client())
        .delete(&policy_name, &DeleteParams::default())
        .await?;
    controller.shutdown().await;
    hook.launched.shutdown().await;
    s.remove_configurations(&env).await;
    Ok(())
}

async fn restoration(env: Arc<Env>) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let s = setup(&env, "rst", |_| {}).await?;
    let controller = env.start_controller(s.settings.clone()).await?;
    let hook = env.start_webhook_for(&s.settings, |_| {}).await?;
    let name = s.settings.webhooks.mutating_name.clone();
    let api = Api::<MutatingWebhookConfiguration>::all(env.client());
    let original = wait_for_mutating(&env, &name, "created", |_| true).await?;
    let bundle = original
        .webhooks
        .as_ref()
        .and_then(|w| w[0].client_config.ca_bundle.clone());
    let ca = std::fs::read_to_string(s.settings.certs.write_dir.as_ref().unwrap().join("ca.crt"))?;
    ensure!(
        bundle.map(|b| b.0) == Some(ca.clone().into_bytes()),
        "the caBundle is the controller's CA"
    );

    // Deleted → re-created.
    api.delete(&name, &DeleteParams::default()).await?;
    let deleted_at = Instant::now();
    let restored =
        wait_for_mutating(&env, &name, "re-created", |c| c.uid() != original.uid()).await?;
    let took = deleted_at.elapsed();
    ensure!(took < Duration::from_secs(5), "restored after {took:?}");
    ensure!(failure_policies(&restored) == ["Fail", "Fail"]);
    eprintln!("deleted MutatingWebhookConfiguration restored after {took:?}");
    wait_for_event(
        &env,
        &s.settings.namespace,
        "WebhookConfigurationRestored",
        &name,
    )
    .await?;

    // Altered by someone else → put back.
    let edit = json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]);
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(edit)?),
    )
    .await
    .context("altering the failurePolicy")?;
    let altered_at = Instant::now();
    wait_for_mutating(&env, &name, "failurePolicy reverted", |c| {
        failure_policies(c) == ["Fail", "Fail"]
    })
    .await?;
    let took = altered_at.elapsed();
    ensure!(took < Duration::from_secs(5), "reverted after {took:?}");

    // Narrowed by someone else (a selector no pod matches, an extra namespace term: both switch
    // injection off without touching a field the controller sets) → put back, terms removed.
    let never = json!({"matchLabels": {"phantom-test/never": "set"}});
    let mut narrowed = serde_json::to_value(api.get(&name).await?)?;
    narrowed["webhooks"][0]["objectSelector"] = never.clone();
    narrowed["webhooks"][0]["namespaceSelector"]["matchLabels"] = never["matchLabels"].clone();
    api.replace(
        &name,
        &PostParams::default(),
        &serde_json::from_value(narrowed)?,
    )
    .await
    .context("narrowing the selectors")?;
    let narrowed_at = Instant::now();
    wait_for_mutating(&env, &name, "selectors restored", |c| {
        c.webhooks.iter().flatten().all(|w| {
            w.object_selector
                .as_ref()
                .is_none_or(|s| s.match_labels.is_none() && s.match_expressions.is_none())
                && w.namespace_selector
                    .as_ref()
                    .is_some_and(|s| s.match_labels.is_none())
        })
    })
    .await?;
    eprintln!(
        "narrowed MutatingWebhookConfiguration restored after {:?}",
        narrowed_at.elapsed()
    );

    // The validating configuration too.
    let validating = Api::<ValidatingWebhookConfiguration>::all(env.client());
    let vname = s.settings.webhooks.validating_name.clone();
    validating.delete(&vname, &DeleteParams::default()).await?;
    until(
        format!("ValidatingWebhookConfiguration {vname} re-created"),
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let (validating, vname) = (validating.clone(), vname.clone());
            async move { validating.get_opt(&vname).await.map(|c| c.map(|_| ())) }
        },
    )
    .await?;

    // The serving Secret is written back from the leader's memory, unchanged.
    let secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client(), &s.settings.namespace);
    let serving = secrets.get(&s.settings.certs.serving_secret).await?;
    secrets
        .delete(&s.settings.certs.serving_secret, &DeleteParams::default())
        .await?;
    let back = until(
        "the serving Secret written back",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let (secrets, name) = (secrets.clone(), s.settings.certs.serving_secret.clone());
            async move { secrets.get_opt(&name).await }
        },
    )
    .await?;
    ensure!(back.data == serving.data, "the same pair, not a new CA");

    let text = controller.metrics.encode();
    for (configuration, cause) in [
        ("MutatingWebhookConfiguration", "deleted"),
        ("MutatingWebhookConfiguration", "altered"),
        ("ValidatingWebhookConfiguration", "deleted"),
    ] {
        let series = format!(
            "phantom_controller_webhook_restorations_total{{configuration=\"{configuration}\",cause=\"{cause}\"}} "
        );
        let times = if cause == "altered" { 2.0 } else { 1.0 };
        ensure!(
            metric(&text, &series) == Some(times),
            "{series} in:\n{text}"
        );
    }
    ensure!(
        metric(&text, "phantom_controller_breaker_open ") == Some(0.0),
        "our own changes never opened the breaker"
    );

    controller.shutdown().await;
    hook.launched.shutdown().await;
    s.remove_configurations(&env).await;
    Ok(())
}

async fn leader_failover(env: Arc<Env>) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    // No admission in this case: without the breaker, its probes would only add noise.
    let s = setup(&env, "ldr", |s| s.breaker.enabled = false).await?;
    let mut second = s.settings.clone();
    second.leader.identity = format!("{}-second", s.settings.namespace);
    let a = env.start_controller(s.settings.clone()).await?;
    let b = env.start_controller(second).await?;
    until(
        "one of two controllers leads",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || {
            let lead = *a.leading.borrow() || *b.leading.borrow();
            async move { Ok::<_, anyhow::Error>(lead.then_some(())) }
        },
    )
    .await?;
    for _ in 0..20 {
        ensure!(
            !(*a.leading.borrow() && *b.leading.borrow()),
            "two controllers led at once"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, follower) = if *a.leading.borrow() { (a, b) } else { (b, a) };
    ensure!(!*follower.leading.borrow(), "exactly one leader");

    leader.kill().await;
    let killed_at = Instant::now();
    let mut leading = follower.leading.clone();
    tokio::time::timeout(Duration::from_secs(15), leading.wait_for(|l| *l))
        .await
        .context("the follower did not take over within 15 s")??;
    let took = killed_at.elapsed();
    // The dead leader renewed at most one retry period before the kill; the follower notices
    // the expiry at its next retry; one more second covers API calls on a loaded CI machine.
    let bound = s.settings.leader.lease_duration
        + s.settings.leader.retry_period * 2
        + Duration::from_secs(1);
    ensure!(
        took <= bound,
        "took over after {took:?}, more than the lease + two retries + 1 s ({bound:?})"
    );
    eprintln!(
        "failover after {took:?} (lease {:?})",
        s.settings.leader.lease_duration
    );

    // The new leader acts: a deleted configuration comes back.
    let name = s.settings.webhooks.mutating_name.clone();
    let original = wait_for_mutating(&env, &name, "created", |_| true).await?;
    Api::<MutatingWebhookConfiguration>::all(env.client())
        .delete(&name, &DeleteParams::default())
        .await?;
    wait_for_mutating(&env, &name, "re-created by the new leader", |c| {
        c.uid() != original.uid()
    })
    .await?;

    follower.shutdown().await;
    s.remove_configurations(&env).await;
    Ok(())
}

fn certificates(bundle_pem: &[u8]) -> usize {
    String::from_utf8_lossy(bundle_pem)
        .matches("BEGIN CERTIFICATE")
        .count()
}

async fn certificate_rotation(env: Arc<Env>) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let s = setup(&env, "crt", |s| {
        s.certs.ca_validity = Duration::from_secs(12);
        s.certs.serving_validity = Duration::from_secs(6);
        s.certs.check_interval = Duration::from_millis(300);
    })
    .await?;
    let controller = env.start_controller(s.settings.clone()).await?;
    let hook = env.start_webhook_for(&s.settings, |_| {}).await?;
    let ns = s.covered_namespace(&env, &[]).await?;
    let dir = s.settings.certs.write_dir.clone().context("write_dir")?;
    let first_cert = std::fs::read_to_string(dir.join("tls.crt"))?;
    let name = s.settings.webhooks.mutating_name.clone();
    let first = wait_for_mutating(&env, &name, "created", |_| true).await?;
    let first_bundle = first
        .webhooks
        .as_ref()
        .and_then(|w| w[0].client_config.ca_bundle.clone())
        .context("caBundle")?;
    ensure!(certificates(&first_bundle.0) == 1);

    // The CA has a third of its life left after 8 s: a new one joins the bundle beside the old.
    let rotated = wait_for_mutating(&env, &name, "a second CA in the caBundle", |c| {
        c.webhooks
            .as_ref()
            .and_then(|w| w[0].client_config.ca_bundle.as_ref())
            .is_some_and(|b| certificates(&b.0) == 2)
    })
    .await?;
    let bundle = rotated
        .webhooks
        .as_ref()
        .and_then(|w| w[0].client_config.ca_bundle.clone())
        .context("caBundle")?;
    ensure!(
        String::from_utf8_lossy(&bundle.0).ends_with(&*String::from_utf8_lossy(&first_bundle.0)),
        "the old CA stays trusted"
    );
    let now_cert = std::fs::read_to_string(dir.join("tls.crt"))?;
    ensure!(
        now_cert != first_cert,
        "the serving certificate was re-issued"
    );
    let secret =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client(), &s.settings.namespace)
            .get(&s.settings.certs.serving_secret)
            .await?;
    ensure!(secret.type_.as_deref() == Some("kubernetes.io/tls"));
    ensure!(
        !secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key("ca.key")),
        "admission's Secret never holds the CA key"
    );

    // Through all of it the API server keeps reaching admission (the pod gets a decision).
    for _ in 0..3 {
        let stored = dry_run_labelled(&env, &ns).await?;
        ensure!(
            stored.annotations().contains_key(DECISION_ANNOTATION),
            "{:?}",
            stored.annotations()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let text = hook.metrics().await?;
    ensure!(
        text.contains("phantom_admission_certificate_reloads_total{outcome=\"ok\"}"),
        "admission reloaded the pair:\n{text}"
    );
    ensure!(
        controller.breaker.borrow().to_owned() == State::Closed,
        "the probe trusted every rotation"
    );

    controller.shutdown().await;
    hook.launched.shutdown().await;
    s.remove_configurations(&env).await;
    Ok(())
}

async fn dry_run_labelled(env: &Env, ns: &str) -> anyhow::Result<Pod> {
    let api: Api<Pod> = Api::namespaced(env.client(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(
        &dry_run,
        &pod(&format!("rot-{}", random_hex(3)), json!({"team": "a"})),
    )
    .await
    .context("a dry-run pod through admission")
}

async fn gap_eviction(env: Arc<Env>) -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    let _serial = SERIAL.lock().await;
    let s = setup(&env, "evc", |s| s.gaps.evict = true).await?;
    let controller = env.start_controller(s.settings.clone()).await?;
    let hook = env.start_webhook_for(&s.settings, |_| {}).await?;
    let ns = s.covered_namespace(&env, &[]).await?;
    hook.wait_for("initial sync", |snap| snap.synced).await?;

    // Admission down, breaker open: a Deployment's pod is created without Phantom.
    hook.launched.shutdown().await;
    wait_for_state(&controller, State::Open).await?;
    wait_for_mutating(
        &env,
        &s.settings.webhooks.mutating_name,
        "failing open",
        |c| failure_policies(c) == ["Ignore", "Fail"],
    )
    .await?;
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web", "team": "a"}},
                              "spec": {"containers": [{"name": "app", "image": "phantom.local/busybox:1",
                                                       "command": ["sleep", "3600"]}]}}}
    }))?;
    Api::<Deployment>::namespaced(env.client(), &ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    let gap = until(
        "the Deployment's pod created without Phantom",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default().labels("app=web")).await?;
                Ok::<_, kube::Error>(list.items.into_iter().next())
            }
        },
    )
    .await?;
    ensure!(!gap.annotations().contains_key(DECISION_ANNOTATION));

    // Admission back: the breaker closes, the gap pod is evicted, its ReplicaSet re-creates it
    // through the webhook.
    let hook = env.start_webhook_for(&s.settings, |_| {}).await?;
    wait_for_state(&controller, State::Closed).await?;
    let replaced = until(
        "the gap pod evicted and replaced by a pod that passed the webhook",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let pods = pods.clone();
            let gap_uid = gap.uid();
            async move {
                let list = pods.list(&ListParams::default().labels("app=web")).await?;
                let gone = !list.items.iter().any(|p| p.uid() == gap_uid);
                Ok::<_, kube::Error>(
                    list.items
                        .into_iter()
                        .find(|p| gone && p.annotations().contains_key(DECISION_ANNOTATION)),
                )
            }
        },
    )
    .await?;
    ensure!(replaced.uid() != gap.uid());
    // The replacement's record is sealed under its generateName (admission never sees the
    // generated name) and verifies on the stored pod: it is not a gap pod.
    let dir = s.settings.certs.write_dir.clone().context("write_dir")?;
    let key_text = std::fs::read_to_string(dir.join(phantom_controller::gaps::DECISION_KEY))?;
    let key = phantom_seal::Key::decode(&key_text, "the controller's decision.key")?;
    ensure!(
        replaced.metadata.generate_name.is_some()
            && replaced.annotations().contains_key(SEAL_ANNOTATION),
        "{:?}",
        replaced.metadata
    );
    phantom_seal::check(&key, &replaced)
        .map_err(|broken| anyhow::anyhow!("the replacement's seal: {broken}"))?;
    let gaps =
        phantom_controller::gaps::scan(&env.client(), &s.settings.webhooks, Some(&key)).await?;
    ensure!(
        !gaps.iter().any(|g| g.namespace == ns),
        "the replacement is not a gap pod: {gaps:?}"
    );
    ensure!(
        metric(
            &controller.metrics.encode(),
            "phantom_controller_gap_pods_evicted_total "
        ) == Some(1.0),
        "{}",
        controller.metrics.encode()
    );

    controller.shutdown().await;
    hook.launched.shutdown().await;
    s.remove_configurations(&env).await;
    Ok(())
}

/// A SecretBinding the API server stored but Phantom's types refuse (`refresh.interval: soon`).
/// The CRD schema refuses it now, so it is written while the schema's pattern is taken out (as
/// an older CRD version, or an edit while validation was off, would let it in), then put back.
async fn unreadable_object(env: Arc<Env>) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let s = setup(&env, "unr", |_| {}).await?;
    let ns = s.covered_namespace(&env, &[]).await?;
    let resource = kube::core::ApiResource::erase::<phantom_crds::SecretBinding>(&());
    let bindings = Api::<kube::core::DynamicObject>::namespaced_with(env.client(), &ns, &resource);
    let binding = |name: &str, interval: &str| -> anyhow::Result<kube::core::DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"podSelector": {}}, "openbao": {"role": "app"},
                     "refresh": {"interval": interval},
                     "secrets": [{"name": name, "path": "app/db", "key": "password",
                                  "delivery": [{"kind": "file", "path": name}]}]}
        }))?)
    };
    let refused = bindings
        .create(&PostParams::default(), &binding("early", "soon")?)
        .await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("spec.refresh.interval")),
        "the CRD schema refuses what the types refuse: {refused:?}"
    );

    let crds = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(env.client());
    let pattern = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/refresh/properties/interval/pattern";
    let remove: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": pattern}]))?;
    crds.patch(
        "secretbindings.phantom.dev",
        &PatchParams::default(),
        &Patch::Json::<()>(remove),
    )
    .await
    .context("taking the pattern out of the SecretBinding CRD")?;
    let broken = binding("broken", "soon")?;
    until(
        "the API server to store a SecretBinding with refresh.interval: soon",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let (bindings, broken) = (bindings.clone(), broken.clone());
            async move {
                anyhow::Ok(
                    bindings
                        .create(&PostParams::default(), &broken)
                        .await
                        .ok()
                        .map(|_| ()),
                )
            }
        },
    )
    .await?;
    env.install_crds().await?;
    bindings
        .create(&PostParams::default(), &binding("good", "4m")?)
        .await
        .context("a readable binding beside it")?;

    // Replicas started now list the unreadable object with the others: they sync, report it,
    // and enforce the rest.
    let controller = env.start_controller(s.settings.clone()).await?;
    let hook = env.start_webhook_for(&s.settings, |_| {}).await?;
    let broken_id = format!("{ns}/broken");
    hook.wait_for("synced, the unreadable binding reported", |snapshot| {
        snapshot.synced && snapshot.errors.iter().any(|e| e.name == broken_id)
    })
    .await?;
    let snapshot = hook.launched.admitter.store.snapshot();
    ensure!(
        snapshot
            .sources
            .bindings
            .iter()
            .any(|b| b.name_any() == "good"),
        "the readable binding is in force"
    );
    let errors = snapshot
        .errors
        .iter()
        .find(|e| e.name == broken_id)
        .context("the error")?;
    ensure!(
        errors.errors[0].field == "spec.refresh.interval",
        "the error names the field: {errors}"
    );
    // 1.20 validates the whole object on a status write, so the controller says it in an
    // Event (newer servers get the status: the same message).
    let events: Api<Event> = Api::namespaced(env.client(), &ns);
    let note = until(
        "an Unreadable Event on the binding",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await?;
                anyhow::Ok(list.items.into_iter().find_map(|e| {
                    (e.reason.as_deref() == Some("Unreadable")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken"))
                    .then(|| e.note.unwrap_or_default())
                }))
            }
        },
    )
    .await?;
    ensure!(
        note.contains("spec.refresh.interval") && note.contains("kubectl edit"),
        "{note}"
    );
    let good = until(
        "the readable binding's status",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let bindings = bindings.clone();
            async move {
                let object = bindings.get("good").await?;
                anyhow::Ok(
                    object
                        .data
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .cloned(),
                )
            }
        },
    )
    .await?;
    ensure!(
        good.iter()
            .any(|c| c["type"] == condition_types::READY && c["status"] == "True"),
        "{good:?}"
    );

    bindings.delete("broken", &DeleteParams::default()).await?;
    bindings.delete("good", &DeleteParams::default()).await?;
    controller.shutdown().await;
    hook.launched.shutdown().await;
    s.remove_configurations(&env).await;
    Ok(())
}
