//! `phantomctl policy lint`: compile errors, and warnings about expressions that compile yet fail
//! on pods every cluster has. A canary key that reads a label without `has()` refuses every pod
//! lacking that label ("No such key"), which a policy author rarely means and only finds out when
//! pods stop starting; lint evaluates each key on the common pod shapes below and says so.

use phantom_policies::{AdmissionInput, PolicySet, RequestInfo};
use serde_json::{Value, json};

/// Pod shapes every cluster has, each with what a warning calls it.
fn common_pods() -> Vec<(&'static str, Value)> {
    vec![
        (
            "a Deployment's pod (generateName, owner ReplicaSet, labels app and pod-template-hash only)",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"generateName": "web-7d4b9c-", "namespace": "default",
                                "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                     "name": "web-7d4b9c", "uid": "1", "controller": true}]},
                   "spec": {"containers": [{"name": "web", "image": "web:1"}]}}),
        ),
        (
            "a bare pod without labels or annotations",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "debug", "namespace": "default"},
                   "spec": {"containers": [{"name": "debug", "image": "busybox:1"}]}}),
        ),
    ]
}

/// One warning per policy whose canary key fails on a common pod (the first such pod).
pub fn canary_key_warnings(set: &PolicySet) -> Vec<String> {
    let mut warned: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (shape, pod) in common_pods() {
        let input = AdmissionInput {
            object: pod,
            old_object: None,
            namespace_object: Some(json!({"metadata": {"name": "default", "labels": {}}})),
            request: RequestInfo {
                operation: "CREATE".into(),
                namespace: "default".into(),
                ..RequestInfo::default()
            },
        };
        for (policy, error) in set.failing_canary_keys(&input) {
            if warned.contains(&policy) {
                continue;
            }
            out.push(format!(
                "warning: PhantomPolicy {policy}: spec.injection.canary.key fails on {shape} ({error}), and a pod whose key fails is refused. Guard what may be absent with has(), e.g. has(object.metadata.labels) && 'app.kubernetes.io/name' in object.metadata.labels ? object.metadata.labels['app.kubernetes.io/name'] : object.metadata.generateName, or drop the key to use the pod's workload"
            ));
            warned.push(policy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use phantom_policies::wasm::PluginHost;
    use phantom_policies::{Modules, Sources};

    use super::*;

    fn set(key: &str) -> PolicySet {
        let policy = serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
            "metadata": {"name": "p"},
            "spec": {"injection": {"canary": {"percent": 10, "key": key}}}
        }))
        .expect("policy");
        PolicySet::compile_all(
            &Sources {
                policies: vec![policy],
                ..Default::default()
            },
            &PluginHost::new().expect("host"),
            &Modules::default(),
        )
        .expect("compiles")
    }

    #[test]
    fn a_key_reading_a_label_without_has_is_warned_about_once() {
        let warnings =
            canary_key_warnings(&set("object.metadata.labels['app.kubernetes.io/name']"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("PhantomPolicy p") && warnings[0].contains("a Deployment's pod"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn a_guarded_key_passes() {
        let guarded = "has(object.metadata.labels) && 'app.kubernetes.io/name' in object.metadata.labels ? object.metadata.labels['app.kubernetes.io/name'] : (has(object.metadata.generateName) ? object.metadata.generateName : object.metadata.name)";
        assert_eq!(canary_key_warnings(&set(guarded)), Vec::<String>::new());
    }
}
