use std::collections::BTreeMap;

use base64::Engine as _;
use phantom_policies::wasm::PluginHost;
use phantom_policies::{Modules, Sources};
use proptest::prelude::*;

use super::*;

fn namespace(name: &str, labels: Value) -> (String, Value) {
    (
        name.to_owned(),
        json!({"metadata": {"name": name, "labels": labels}}),
    )
}

pub(super) fn admitter(synced: bool) -> Admitter {
    let store = Arc::new(PolicyStore::new(PluginHost::new().expect("host")));
    let policy: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": "all"},
        "spec": {"rules": {"validations": [
            {"name": "no-latest", "expression": "object.spec.containers.all(c, !c.image.endsWith(':latest'))",
             "message": "pin image tags"}]}}
    }))
    .expect("policy");
    let binding: SecretBinding = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"selector": {"podSelector": {}}, "openbao": {"role": "shop"},
                 "secrets": [{"name": "pw", "path": "shop/db", "key": "password", "delivery": [{"kind": "env", "name": "PW"}]}]}
    }))
    .expect("binding");
    // Two bindings of namespace twins deliver a secret of one name to every pod.
    let twin = |name: &str| -> SecretBinding {
        let mut b = binding.clone();
        b.metadata.name = Some(name.into());
        b.metadata.namespace = Some("twins".into());
        b.spec.secrets[0].delivery[0].name = Some(format!("{}_PW", name.to_uppercase()));
        b
    };
    let snapshot = store.update(
        &Sources {
            policies: vec![policy],
            bindings: vec![binding.clone(), twin("db"), twin("legacy")],
            ..Default::default()
        },
        &Modules::default(),
        synced,
    );
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
    let enabled = json!({"phantom.dev/inject": "enabled"});
    Admitter {
        store,
        cluster: ClusterView::offline(BTreeMap::from([
            namespace("shop", enabled.clone()),
            namespace("twins", enabled.clone()),
            namespace("plain", json!({})),
            namespace("out", json!({"phantom.dev/inject": "disabled"})),
            namespace(
                "glass",
                json!({"phantom.dev/inject": "enabled", "phantom.dev/override": "bypass"}),
            ),
        ])),
        pool: DecisionPool::new(2, Duration::from_secs(1)),
        inject: InjectConfig::default(),
        selection: Selection::default(),
        metrics: Arc::new(Metrics::default()),
        evaluation_timeout: Duration::from_secs(2),
        seal_key: crate::seal::ReloadingSealKey::fixed(
            phantom_seal::Key::generate(0).expect("random"),
        ),
    }
}

pub(super) fn review(namespace: &str, image: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "7d3c", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["dev"]},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "web", "namespace": namespace},
                       "spec": {"containers": [{"name": "app", "image": image, "command": ["/web"]}]}},
            "dryRun": false
        }
    })
}

pub(super) fn response(reply: &Reply) -> Value {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let review: Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["uid"], "7d3c");
    review["response"].clone()
}

pub(super) fn patch_of(response: &Value) -> Vec<Value> {
    let Some(encoded) = response["patch"].as_str() else {
        return Vec::new();
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64 patch");
    serde_json::from_slice(&bytes).expect("patch json")
}

async fn mutate_json(a: &Admitter, body: Value) -> Value {
    response(&a.mutate(body.to_string().as_bytes()).await)
}

#[tokio::test]
async fn namespaces_decide_whether_phantom_acts() {
    let a = admitter(true);
    let injected = mutate_json(&a, review("shop", "web:1")).await;
    assert_eq!(injected["allowed"], true);
    let patch = serde_json::to_string(&patch_of(&injected)).expect("text");
    assert!(
        patch.contains("phantom-proxy") && patch.contains("phantom-exec"),
        "{patch}"
    );

    for ns in ["plain", "out"] {
        let untouched = mutate_json(&a, review(ns, "web:1")).await;
        assert_eq!(untouched["allowed"], true);
        assert!(patch_of(&untouched).is_empty(), "{ns}: {untouched}");
    }

    let bypassed = mutate_json(&a, review("glass", "web:1")).await;
    assert_eq!(bypassed["allowed"], true);
    let ops = patch_of(&bypassed);
    assert_eq!(ops.len(), 1, "only the override is recorded: {bypassed}");
    assert!(ops[0].to_string().contains("created by alice"));
    assert!(
        bypassed["auditAnnotations"]["override"]
            .as_str()
            .is_some_and(|s| s.contains("alice"))
    );
    let metrics = a.metrics.encode();
    assert!(metrics.contains(r#"phantom_admission_overrides_total{namespace="glass"} 1"#));
    assert!(metrics.contains(r#"phantom_admission_injections_total{namespace="shop"} 1"#));
    assert!(metrics.contains(r#"phantom_admission_decisions_total{outcome="not-selected"} 1"#));
    assert!(metrics.contains(r#"phantom_admission_decisions_total{outcome="opted-out"} 1"#));
}

#[tokio::test]
async fn policy_denials_and_an_unloaded_store_refuse_the_pod() {
    let a = admitter(true);
    let denied = mutate_json(&a, review("shop", "web:latest")).await;
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["status"]["message"], "all/no-latest: pin image tags");

    let cold = admitter(false);
    let refused = mutate_json(&cold, review("shop", "web:1")).await;
    assert_eq!(refused["allowed"], false);
    assert!(
        refused["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not loaded yet"))
    );
}

#[tokio::test]
async fn wrong_kinds_and_truncated_bodies_are_400_with_a_message() {
    let a = admitter(true);
    let valid = review("shop", "web:1").to_string();
    for (body, expect) in [
        (
            valid[..valid.len() / 2].to_owned(),
            "not an AdmissionReview",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Pod"}).to_string(),
            "expected kind AdmissionReview",
        ),
        (
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
            "no request",
        ),
        ("".to_owned(), "not an AdmissionReview"),
    ] {
        let reply = a.mutate(body.as_bytes()).await;
        assert_eq!(reply.status, 400, "{body}");
        let message: Value = serde_json::from_slice(&reply.body).expect("json error");
        assert!(
            message["error"]
                .as_str()
                .is_some_and(|m| m.contains(expect)),
            "{message}"
        );
    }
    let mut deployment = review("shop", "web:1");
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let refused = mutate_json(&a, deployment).await;
    assert_eq!(refused["allowed"], false);
    assert!(
        a.metrics
            .encode()
            .contains(r#"phantom_admission_bad_requests_total{endpoint="mutate"} 4"#)
    );
}

#[tokio::test]
async fn validate_reports_compile_errors_and_unadmitted_bindings() {
    let a = admitter(true);
    let resource = |kind: &str, namespace: Option<&str>, object: Value| {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "7d3c", "kind": {"group": "phantom.dev", "version": "v1alpha1", "kind": kind},
                        "resource": {"group": "phantom.dev", "version": "v1alpha1", "resource": "x"},
                        "namespace": namespace, "operation": "CREATE", "userInfo": {}, "object": object}
        })
    };
    let broken = json!({"apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": "broken"},
        "spec": {"rules": {"validations": [{"name": "r", "expression": "object.spec.(("}]}}});
    let refused = response(
        &a.validate(
            resource("PhantomPolicy", None, broken)
                .to_string()
                .as_bytes(),
        )
        .await,
    );
    assert_eq!(refused["allowed"], false);
    let message = refused["status"]["message"].as_str().expect("message");
    assert!(
        message.contains("PhantomPolicy broken: spec.rules.validations[0].expression"),
        "{message}"
    );

    let binding = |ns: &str| {
        json!({"apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"selector": {"podSelector": {}}, "openbao": {"role": "r"},
                 "secrets": [{"name": "pw", "path": "p", "delivery": [{"kind": "socket"}]}]}})
    };
    let admitted = response(
        &a.validate(
            resource("SecretBinding", Some("shop"), binding("shop"))
                .to_string()
                .as_bytes(),
        )
        .await,
    );
    assert_eq!(
        admitted["allowed"], true,
        "policy `all` has no namespace selector: {admitted}"
    );

    let strict = admitter(true);
    let scoped: PhantomPolicy =
        serde_json::from_value(json!({"apiVersion": "phantom.dev/v1alpha1",
        "kind": "PhantomPolicy", "metadata": {"name": "scoped"},
        "spec": {"match": {"namespaceSelector": {"matchLabels": {"team": "pay"}}}}}))
        .expect("policy");
    strict.store.update(
        &Sources {
            policies: vec![scoped],
            ..Default::default()
        },
        &Modules::default(),
        true,
    );
    let refused = response(
        &strict
            .validate(
                resource("SecretBinding", Some("shop"), binding("shop"))
                    .to_string()
                    .as_bytes(),
            )
            .await,
    );
    assert_eq!(refused["allowed"], false);
    assert!(
        refused["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no enforced PhantomPolicy admits namespace shop"))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_crash_and_get_an_answer(bytes in proptest::collection::vec(any::<u8>(), 0..2048), cut in 0usize..2000) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let a = admitter(true);
        let valid = review("shop", "web:1").to_string();
        let truncated = &valid.as_bytes()[..cut.min(valid.len())];
        for body in [&bytes[..], truncated] {
            let reply = rt.block_on(a.mutate(body));
            prop_assert!(reply.status == 400 || reply.status == 200, "status {}", reply.status);
            let parsed: Value = serde_json::from_slice(&reply.body).expect("always JSON");
            if reply.status == 400 {
                prop_assert!(parsed["error"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
    }
}

#[tokio::test]
async fn key_release_conditions_see_the_namespace_a_replicaset_pod_will_be_stored_in() {
    let a = admitter(true);
    let policy: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": "same-namespace"},
        "spec": {"keyRelease": {"conditions": [{"name": "same-namespace",
            "expression": "binding.metadata.namespace == pod.metadata.namespace"}]}}
    }))
    .expect("policy");
    let mut sources = a.store.snapshot().sources.clone();
    sources.policies.push(policy);
    a.store.update(&sources, &Modules::default(), true);

    // As a ReplicaSet creates it: generateName, no namespace in the object.
    let mut body = review("shop", "web:1");
    body["request"]["object"]["metadata"] = json!({"generateName": "web-7d4b9c-"});
    let injected = mutate_json(&a, body).await;
    let patch = patch_of(&injected);
    let plan = patch
        .iter()
        .flat_map(|op| op["value"]["env"].as_array().cloned().unwrap_or_default())
        .find(|e| e["name"] == phantom_crds::KEY_RELEASE_ENV)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
        .expect("the sidecar gets a key-release plan");
    let plan: phantom_crds::KeyReleasePlan = serde_json::from_str(&plan).expect("plan");
    assert_eq!(plan.pod["metadata"]["namespace"], "shop");
    let set =
        phantom_policies::KeyReleaseSet::compile(&plan, Some("web-7d4b9c-x1")).expect("compiles");
    let binding = json!({"metadata": {"name": "db", "namespace": "shop"}, "spec": {}});
    set.check(&binding, None)
        .expect("the condition holds for the pod's own namespace");
    let other = json!({"metadata": {"name": "db", "namespace": "elsewhere"}, "spec": {}});
    assert!(set.check(&other, None).is_err());
}

fn stored_after(a: &Admitter, created: &Value) -> Value {
    let mut pod = created["request"]["object"].clone();
    let ops: json_patch::Patch =
        serde_json::from_value(Value::Array(patch_of(&response_blocking(a, created))))
            .expect("patch");
    json_patch::patch(&mut pod, &ops).expect("the patch applies");
    pod
}

fn response_blocking(a: &Admitter, body: &Value) -> Value {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(mutate_json(a, body.clone()))
    })
}

pub(super) fn update(
    namespace: &str,
    old: &Value,
    new: &Value,
    sub_resource: Option<&str>,
) -> Value {
    let mut body = review(namespace, "unused");
    let request = &mut body["request"];
    request["operation"] = json!("UPDATE");
    request["name"] = json!("web");
    request["oldObject"] = old.clone();
    request["object"] = new.clone();
    if let Some(sub) = sub_resource {
        request["subResource"] = json!(sub);
    }
    body
}

pub(super) fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_created_looking_injected_is_refused_and_policy_runs_on_every_create() {
    let a = admitter(true);
    let stored = stored_after(&a, &review("shop", "web:1"));
    // `kubectl get pod -o yaml` of an injected pod, created again (say, in a Deployment).
    let mut copy = review("shop", "web:1");
    copy["request"]["object"] = stored.clone();
    let refused = mutate_json(&a, copy).await;
    assert_eq!(refused["allowed"], false);
    assert!(message(&refused).contains("phantom.dev/"), "{refused}");
    // A plain pod that only claims to be injected, with an image policy forbids.
    let mut forged = review("shop", "web:latest");
    forged["request"]["object"]["metadata"]["annotations"] =
        json!({"phantom.dev/injected": "true", "phantom.dev/decision": "{}"});
    let refused = mutate_json(&a, forged).await;
    assert!(
        message(&refused).contains("annotation phantom.dev/"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_of_injected_pods_keep_phantoms_parts_and_put_new_images_to_the_policies() {
    let a = admitter(true);
    let stored = stored_after(&a, &review("shop", "web:1"));
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut new = stored.clone();
        edit(&mut new);
        new
    };
    let relabelled = edited(&|p| p["metadata"]["labels"] = json!({"rev": "2"}));
    assert_eq!(
        mutate_json(&a, update("shop", &stored, &relabelled, None)).await["allowed"],
        true
    );

    let pinned = edited(&|p| p["spec"]["containers"][0]["image"] = json!("web:2"));
    let allowed = mutate_json(&a, update("shop", &stored, &pinned, None)).await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    assert!(patch_of(&allowed).is_empty(), "an UPDATE is never patched");

    let latest = edited(&|p| p["spec"]["containers"][0]["image"] = json!("web:latest"));
    let denied = mutate_json(&a, update("shop", &stored, &latest, None)).await;
    assert_eq!(denied["allowed"], false);
    assert!(
        message(&denied).contains("container(s) app")
            && message(&denied).contains("pin image tags"),
        "{denied}"
    );

    let proxy = stored["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["name"] == "phantom-proxy")
        .expect("the sidecar");
    let swapped = edited(&|p| p["spec"]["containers"][proxy]["image"] = json!("evil/proxy:1"));
    let denied = mutate_json(&a, update("shop", &stored, &swapped, None)).await;
    assert!(
        message(&denied).contains("container phantom-proxy is Phantom's"),
        "{denied}"
    );

    let hidden = edited(&|p| {
        p["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("phantom.dev/decision");
    });
    let denied = mutate_json(&a, update("shop", &stored, &hidden, None)).await;
    assert!(
        message(&denied).contains("annotation phantom.dev/decision"),
        "{denied}"
    );
    let metrics = a.metrics.encode();
    assert!(
        metrics.contains(r#"phantom_admission_decisions_total{outcome="update-allowed"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_container_may_not_target_a_wrapped_container_of_an_injected_pod() {
    let a = admitter(true);
    let stored = stored_after(&a, &review("shop", "web:1"));
    let with_debug = |target: Option<&str>| {
        let mut new = stored.clone();
        let mut debug = json!({"name": "debug", "image": "busybox:1"});
        if let Some(target) = target {
            debug["targetContainerName"] = json!(target);
        }
        new["spec"]["ephemeralContainers"] = json!([debug]);
        new
    };
    let review = |new: &Value| update("shop", &stored, new, Some("ephemeralcontainers"));
    let denied = mutate_json(&a, review(&with_debug(Some("app")))).await;
    assert_eq!(denied["allowed"], false);
    assert!(
        message(&denied).contains("targets container app"),
        "{denied}"
    );
    let allowed = mutate_json(&a, review(&with_debug(None))).await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    // The alpha API of 1.16-1.21 sends an EphemeralContainers object, not the pod: offline,
    // the pod cannot be read, and the container is refused (fail closed).
    let mut alpha = review(&with_debug(None));
    alpha["request"]["kind"]["kind"] = json!("EphemeralContainers");
    alpha["request"]["object"] = json!({"kind": "EphemeralContainers", "apiVersion": "v1",
        "metadata": {"name": "web"}, "ephemeralContainers": [{"name": "debug", "image": "busybox:1"}]});
    alpha["request"]["oldObject"] = json!({"kind": "EphemeralContainers", "apiVersion": "v1",
        "metadata": {"name": "web"}, "ephemeralContainers": []});
    let refused = mutate_json(&a, alpha).await;
    assert_eq!(refused["allowed"], false);
    assert!(message(&refused).contains("does not exist"), "{refused}");
}

#[tokio::test]
async fn two_bindings_delivering_one_secret_name_refuse_the_pod_naming_both() {
    let a = admitter(true);
    let refused = mutate_json(&a, review("twins", "web:1")).await;
    assert_eq!(refused["allowed"], false);
    let text = message(&refused);
    assert!(
        text.contains("SecretBinding db (secret pw)")
            && text.contains("SecretBinding legacy (secret pw)"),
        "{text}"
    );
}
