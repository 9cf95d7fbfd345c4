//! The AdmissionReview → mutate fuzz target: generated pods, some carrying Phantom's reserved
//! names, images policy forbids, commands or none, in every kind of namespace, created and then
//! updated. Whatever the input, the answer keeps the product's promises: a well-formed review is
//! always answered; a pod in a Phantom namespace that names Phantom's parts or breaks a policy is
//! refused; an injected pod's secrets volume is mounted only by the sidecar and wrapped
//! containers; the injected pod cannot be created again as it is; an update that swaps the
//! sidecar or puts a forbidden image in is refused. `PROPTEST_CASES` runs more.

use phantom_crds::wellknown::injected::{EXEC_PATH, PROXY_CONTAINER, SECRETS_VOLUME};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::tests::{admitter, message, patch_of, response, review, update};

const RESERVED_ANNOTATIONS: [&str; 3] = [
    "phantom.dev/injected",
    "phantom.dev/decision",
    "phantom.dev/bindings",
];

#[derive(Debug, Clone)]
struct Container {
    name: &'static str,
    image: &'static str,
    command: bool,
    mount: Option<&'static str>,
    env: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Generated {
    namespace: &'static str,
    containers: Vec<Container>,
    annotations: Vec<(&'static str, &'static str)>,
    volumes: Vec<&'static str>,
}

impl Generated {
    fn pod(&self) -> Value {
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|g| {
                let mut c = json!({"name": g.name, "image": g.image});
                if g.command {
                    c["command"] = json!(["/app"]);
                }
                if let Some(volume) = g.mount {
                    c["volumeMounts"] = json!([{"name": volume, "mountPath": "/m"}]);
                }
                if let Some(var) = g.env {
                    c["env"] = json!([{"name": var, "value": "/tmp/x"}]);
                }
                c
            })
            .collect();
        let annotations: serde_json::Map<String, Value> = self
            .annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let volumes: Vec<Value> = self
            .volumes
            .iter()
            .map(|v| json!({"name": v, "emptyDir": {}}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "namespace": self.namespace, "annotations": annotations},
               "spec": {"containers": containers, "volumes": volumes}})
    }

    /// Names the user wrote that only Phantom may write.
    fn claims_phantoms_parts(&self) -> bool {
        self.annotations
            .iter()
            .any(|(k, _)| RESERVED_ANNOTATIONS.contains(k))
            || self.volumes.iter().any(|v| v.starts_with("phantom-"))
            || self.containers.iter().any(|c| {
                c.name.starts_with("phantom-")
                    || c.mount.is_some_and(|m| m.starts_with("phantom-"))
                    || c.env.is_some_and(|e| e.starts_with("PHANTOM_"))
            })
    }

    fn breaks_policy(&self) -> bool {
        self.containers.iter().any(|c| c.image.ends_with(":latest"))
    }
}

fn generated() -> impl Strategy<Value = Generated> {
    let container = (
        prop_oneof![
            4 => Just("app"),
            3 => Just("web"),
            2 => Just("log"),
            1 => Just("phantom-proxy"),
            1 => Just("phantom-init")
        ],
        prop_oneof![4 => Just("web:1"), 1 => Just("web:latest"), 3 => Just("log:2")],
        proptest::bool::weighted(0.85),
        proptest::option::weighted(0.2, prop_oneof![Just(SECRETS_VOLUME), Just("data")]),
        proptest::option::weighted(0.15, prop_oneof![Just("PHANTOM_SOCKET"), Just("MODE")]),
    );
    (
        prop_oneof![
            4 => Just("shop"),
            2 => Just("twins"),
            1 => Just("plain"),
            1 => Just("out"),
            1 => Just("glass")
        ],
        proptest::collection::vec(container, 1..4),
        proptest::collection::vec(
            prop_oneof![
                1 => Just(("phantom.dev/injected", "true")),
                1 => Just(("phantom.dev/decision", "{}")),
                2 => Just(("phantom.dev/command.app", "/app")),
                4 => Just(("team", "payments")),
            ],
            0..2,
        ),
        proptest::collection::vec(
            prop_oneof![1 => Just(SECRETS_VOLUME), 3 => Just("data")],
            0..2,
        ),
    )
        .prop_map(|(namespace, containers, mut annotations, mut volumes)| {
            // Kubernetes refuses duplicate names before admission sees them.
            let mut seen = std::collections::BTreeSet::new();
            let containers = containers
                .into_iter()
                .filter(|(name, ..)| seen.insert(*name))
                .map(|(name, image, command, mount, env)| Container {
                    name,
                    image,
                    command,
                    mount,
                    env,
                })
                .collect();
            annotations.sort();
            annotations.dedup_by_key(|(k, _)| *k);
            volumes.sort();
            volumes.dedup();
            Generated {
                namespace,
                containers,
                annotations,
                volumes,
            }
        })
}

fn apply(pod: &Value, answer: &Value) -> Value {
    let mut pod = pod.clone();
    let ops: json_patch::Patch =
        serde_json::from_value(Value::Array(patch_of(answer))).expect("the patch is a JSON patch");
    json_patch::patch(&mut pod, &ops).expect("the patch applies to the pod it answers");
    pod
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod["metadata"]["annotations"][key].as_str()
}

/// What must hold of an injected pod, whoever wrote the input.
fn check_injected(pod: &Value) -> Result<(), TestCaseError> {
    prop_assert!(
        annotation(pod, "phantom.dev/decision").is_some(),
        "injected without a decision"
    );
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let mounts_secrets = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == SECRETS_VOLUME);
        let wrapped = c["command"][0] == EXEC_PATH;
        prop_assert!(
            !mounts_secrets || wrapped || c["name"] == PROXY_CONTAINER,
            "container {} mounts the secrets without being wrapped",
            c["name"]
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_reviews_keep_the_promises(g in generated(), new_image in prop_oneof![Just("web:2"), Just("web:latest")], swap_sidecar in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let a = admitter(true);
        let pod = g.pod();
        let mut body = review(g.namespace, "unused");
        body["request"]["object"] = pod.clone();
        let answer = response(&rt.block_on(a.mutate(body.to_string().as_bytes())));
        let phantom_namespace = matches!(g.namespace, "shop" | "twins");
        if phantom_namespace && (g.claims_phantoms_parts() || g.breaks_policy()) {
            prop_assert_eq!(&answer["allowed"], &json!(false), "{}", answer);
            prop_assert!(!message(&answer).is_empty());
            return Ok(());
        }
        if answer["allowed"] != json!(true) {
            prop_assert!(!message(&answer).is_empty(), "a refusal says why: {}", answer);
            return Ok(());
        }
        let stored = apply(&pod, &answer);
        // Outside Phantom's namespaces a pod is left as its author wrote it, claims and all:
        // nothing there is delivered, and the gap scan does not look there.
        if !phantom_namespace || annotation(&stored, "phantom.dev/injected") != Some("true") {
            return Ok(());
        }
        check_injected(&stored)?;

        // The injected pod, created again as it is, is refused.
        let mut again = review(g.namespace, "unused");
        again["request"]["object"] = stored.clone();
        let answer = response(&rt.block_on(a.mutate(again.to_string().as_bytes())));
        prop_assert_eq!(&answer["allowed"], &json!(false), "{}", answer);

        // An update: a wrapped container's image changes, and maybe the sidecar's.
        let mut new = stored.clone();
        let containers = new["spec"]["containers"].as_array_mut().expect("containers");
        let wrapped = containers.iter().position(|c| c["command"][0] == EXEC_PATH);
        if let Some(i) = wrapped {
            containers[i]["image"] = json!(new_image);
        }
        if let Some(proxy) = containers
            .iter_mut()
            .find(|c| swap_sidecar && c["name"] == PROXY_CONTAINER)
        {
            proxy["image"] = json!("evil/proxy:1");
        }
        let answer = response(&rt.block_on(a.mutate(update(g.namespace, &stored, &new, None).to_string().as_bytes())));
        if swap_sidecar || (wrapped.is_some() && new_image.ends_with(":latest")) {
            prop_assert_eq!(&answer["allowed"], &json!(false), "{}", answer);
        }
        prop_assert!(patch_of(&answer).is_empty(), "an UPDATE is never patched");
    }
}
