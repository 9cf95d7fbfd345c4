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

fn admitter(synced: bool) -> Admitter {
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
    let snapshot = store.update(
        &Sources {
            policies: vec![policy],
            bindings: vec![binding],
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
    }
}

fn review(namespace: &str, image: &str) -> Value {
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

fn response(reply: &Reply) -> Value {
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

fn patch_of(response: &Value) -> Vec<Value> {
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
