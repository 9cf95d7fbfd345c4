//! The webhook configurations as they should be (pure: settings, CA bundle and breaker state in,
//! JSON for a server-side apply out) and how far an observed configuration has drifted from them.

use base64::Engine as _;
use phantom_crds::wellknown::{BREAKER_ANNOTATION, OVERRIDE_BYPASS, OVERRIDE_LABEL};
use serde_json::{Value, json};

use crate::config::{AdmissionEndpoint, WebhookSettings};

/// The label every object the controller owns carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "phantom-controller");

/// Name of the webhook for namespaces that are not critical (fails open while the breaker is).
pub const INJECT_WEBHOOK: &str = "inject.phantom.dev";
/// Name of the webhook for critical namespaces (always fails closed).
pub const INJECT_CRITICAL_WEBHOOK: &str = "inject-critical.phantom.dev";
/// Name of the webhook validating Phantom's resources.
pub const VALIDATE_WEBHOOK: &str = "validate.phantom.dev";

fn client_config(endpoint: &AdmissionEndpoint, path: &str, ca_bundle_pem: &str) -> Value {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_bundle_pem);
    match endpoint {
        AdmissionEndpoint::Service {
            namespace,
            name,
            port,
        } => json!({
            "service": {"namespace": namespace, "name": name, "path": path, "port": port},
            "caBundle": ca_bundle,
        }),
        AdmissionEndpoint::Url(base) => json!({
            "url": format!("{}{path}", base.trim_end_matches('/')),
            "caBundle": ca_bundle,
        }),
    }
}

fn failure_policy(fail_open: bool) -> &'static str {
    if fail_open { "Ignore" } else { "Fail" }
}

fn metadata(name: &str, breaker_open: bool) -> Value {
    json!({
        "name": name,
        "labels": {MANAGED_BY.0: MANAGED_BY.1},
        "annotations": {BREAKER_ANNOTATION: if breaker_open { "open" } else { "closed" }},
    })
}

/// The namespaces the injector covers: enabled, not bypassed, not excluded; `critical` picks
/// the critical ones or the others.
fn namespace_selector(settings: &WebhookSettings, critical: bool) -> Value {
    let (enable_key, enable_value) = &settings.selection.enable_label;
    let (critical_key, critical_value) = &settings.critical_label;
    json!({"matchExpressions": [
        {"key": enable_key, "operator": "In", "values": [enable_value]},
        {"key": OVERRIDE_LABEL, "operator": "NotIn", "values": [OVERRIDE_BYPASS]},
        // Labelled by the API server itself from 1.21 on; on older servers the enable label
        // alone keeps kube-system out unless someone labels it.
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": settings.excluded_namespaces},
        {"key": critical_key, "operator": if critical { "In" } else { "NotIn" }, "values": [critical_value]},
    ]})
}

/// What the injector is sent: pod CREATE (policy and injection), pod UPDATE (Phantom's
/// annotations and containers stay as written, new images go to the policies again) and new
/// ephemeral containers (none may reach what Phantom delivered). `pods/ephemeralcontainers` is
/// served from Kubernetes 1.16 (alpha, feature gate `EphemeralContainers`; GA in 1.25): an API
/// server without it accepts the rule and never sends such a request.
pub fn pod_rules() -> Value {
    json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
            "resources": ["pods", "pods/ephemeralcontainers"], "scope": "Namespaced"}])
}

/// The MutatingWebhookConfiguration: pod CREATE and UPDATE in covered namespaces, failing closed, except
/// that non-critical namespaces fail open while the breaker is open.
pub fn mutating(settings: &WebhookSettings, ca_bundle_pem: &str, breaker_open: bool) -> Value {
    let webhook = |name: &str, critical: bool| {
        json!({
            "name": name,
            "clientConfig": client_config(&settings.admission, "/mutate", ca_bundle_pem),
            "rules": pod_rules(),
            "namespaceSelector": namespace_selector(settings, critical),
            "objectSelector": {},
            "matchPolicy": "Equivalent",
            "failurePolicy": failure_policy(breaker_open && !critical),
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": settings.timeout_seconds,
            "reinvocationPolicy": "Never",
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata(&settings.mutating_name, breaker_open),
        "webhooks": [webhook(INJECT_WEBHOOK, false), webhook(INJECT_CRITICAL_WEBHOOK, true)],
    })
}

/// The ValidatingWebhookConfiguration for Phantom's three resources. It fails open with the
/// breaker too: a broken object that slips in then is still never enforced (the compiled set
/// keeps its last good version and the status says why).
pub fn validating(settings: &WebhookSettings, ca_bundle_pem: &str, breaker_open: bool) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": metadata(&settings.validating_name, breaker_open),
        "webhooks": [{
            "name": VALIDATE_WEBHOOK,
            "clientConfig": client_config(&settings.admission, "/validate", ca_bundle_pem),
            "rules": [{"apiGroups": ["phantom.dev"], "apiVersions": ["v1alpha1"],
                       "operations": ["CREATE", "UPDATE"],
                       "resources": ["phantompolicies", "secretbindings", "attestationrequirements"],
                       "scope": "*"}],
            "namespaceSelector": {},
            "objectSelector": {},
            "matchPolicy": "Equivalent",
            "failurePolicy": failure_policy(breaker_open),
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": settings.timeout_seconds,
        }],
    })
}

/// The fields of `desired` whose value differs in `observed`, as JSON paths. Fields the
/// controller does not set are not compared (API server defaults, other managers' labels),
/// except what narrows the requests a webhook sees: its selectors must be exactly as desired
/// (an added term or `matchLabels` is drift), and `matchConditions`, which the controller never
/// sets, must be absent or empty. Lists match element by element (an extra webhook is drift).
pub fn drift(desired: &Value, observed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    compare(desired, observed, String::new(), &mut out);
    let (Some(want), Some(have)) = (
        desired["webhooks"].as_array(),
        observed["webhooks"].as_array(),
    ) else {
        return out;
    };
    for (i, (w, h)) in want.iter().zip(have).enumerate() {
        for selector in NARROWING_SELECTORS {
            let path = format!(".webhooks[{i}].{selector}");
            if !out.contains(&path) && significant(&w[selector]) != significant(&h[selector]) {
                out.push(path);
            }
        }
        if significant(&h["matchConditions"]).is_some() {
            out.push(format!(".webhooks[{i}].matchConditions"));
        }
    }
    out
}

/// Selectors compared exactly: anything extra in them hides requests from the webhook.
const NARROWING_SELECTORS: [&str; 2] = ["namespaceSelector", "objectSelector"];

/// `value` without empty maps, empty lists and nulls (how the API server may store "nothing"),
/// `None` when nothing is left.
fn significant(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(map) => {
            let kept: serde_json::Map<String, Value> = map
                .iter()
                .filter_map(|(k, v)| significant(v).map(|v| (k.clone(), v)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .map(|v| significant(v).unwrap_or(Value::Null))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

fn compare(desired: &Value, observed: &Value, path: String, out: &mut Vec<String>) {
    match (desired, observed) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let child = format!("{path}.{key}");
                match have.get(key) {
                    Some(found) => compare(value, found, child, out),
                    None if significant(value).is_none() => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(want), Value::Array(have)) if want.len() == have.len() => {
            for (i, (w, h)) in want.iter().zip(have).enumerate() {
                compare(w, h, format!("{path}[{i}]"), out);
            }
        }
        (want, have) if want == have => {}
        _ => out.push(if path.is_empty() { ".".into() } else { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdmissionEndpoint;

    fn settings() -> WebhookSettings {
        WebhookSettings::new(AdmissionEndpoint::Service {
            namespace: "phantom-system".into(),
            name: "phantom-admission".into(),
            port: 443,
        })
    }

    fn failure_policies(config: &Value) -> Vec<(String, String)> {
        config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["name"].as_str().unwrap().to_owned(),
                    w["failurePolicy"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_breaker_opens_every_namespace_but_the_critical_ones() {
        let closed = mutating(&settings(), "PEM", false);
        assert_eq!(
            failure_policies(&closed),
            [
                (INJECT_WEBHOOK.into(), "Fail".into()),
                (INJECT_CRITICAL_WEBHOOK.into(), "Fail".into())
            ]
        );
        let open = mutating(&settings(), "PEM", true);
        assert_eq!(
            failure_policies(&open),
            [
                (INJECT_WEBHOOK.into(), "Ignore".into()),
                (INJECT_CRITICAL_WEBHOOK.into(), "Fail".into())
            ]
        );
        assert_eq!(open["metadata"]["annotations"][BREAKER_ANNOTATION], "open");
        assert_eq!(
            failure_policies(&validating(&settings(), "PEM", true)),
            [(VALIDATE_WEBHOOK.into(), "Ignore".into())]
        );
    }

    #[test]
    fn selectors_exclude_system_bypassed_and_split_critical_namespaces() {
        let config = mutating(&settings(), "PEM", false);
        let plain = &config["webhooks"][0]["namespaceSelector"]["matchExpressions"];
        let critical = &config["webhooks"][1]["namespaceSelector"]["matchExpressions"];
        assert_eq!(plain[0]["key"], "phantom.dev/inject");
        assert_eq!(
            plain[1],
            json!({"key": "phantom.dev/override", "operator": "NotIn", "values": ["bypass"]})
        );
        assert!(
            plain[2]["values"]
                .as_array()
                .unwrap()
                .contains(&json!("kube-system"))
        );
        assert_eq!(plain[3]["operator"], "NotIn");
        assert_eq!(critical[3]["operator"], "In");
        assert_eq!(
            config["webhooks"][0]["clientConfig"]["service"]["path"],
            "/mutate"
        );
        let url = mutating(
            &WebhookSettings::new(AdmissionEndpoint::Url("https://127.0.0.1:9443/".into())),
            "PEM",
            false,
        );
        assert_eq!(
            url["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:9443/mutate"
        );
    }

    #[test]
    fn drift_ignores_server_defaults_and_names_what_changed() {
        let desired = mutating(&settings(), "PEM", false);
        let mut observed = desired.clone();
        observed["metadata"]["uid"] = json!("1234");
        observed["metadata"]["labels"]["team"] = json!("x");
        observed["webhooks"][0]["matchConditions"] = json!([]);
        assert!(drift(&desired, &observed).is_empty());

        observed["webhooks"][0]["failurePolicy"] = json!("Ignore");
        observed["webhooks"][1]["timeoutSeconds"] = json!(30);
        assert_eq!(
            drift(&desired, &observed),
            [".webhooks[0].failurePolicy", ".webhooks[1].timeoutSeconds"]
        );

        let mut fewer = desired.clone();
        fewer["webhooks"].as_array_mut().unwrap().pop();
        assert_eq!(drift(&desired, &fewer), [".webhooks"]);
        assert_eq!(drift(&desired, &Value::Null), ["."]);
    }

    #[test]
    fn whatever_narrows_what_a_webhook_sees_is_drift() {
        let desired = mutating(&settings(), "PEM", false);
        let narrowed = |edit: &dyn Fn(&mut Value)| {
            let mut observed = desired.clone();
            edit(&mut observed["webhooks"][0]);
            drift(&desired, &observed)
        };
        assert_eq!(
            narrowed(&|w| w["objectSelector"] = json!({"matchLabels": {"skip": "no"}})),
            [".webhooks[0].objectSelector"]
        );
        assert_eq!(
            narrowed(&|w| w["namespaceSelector"]["matchLabels"] = json!({"team": "a"})),
            [".webhooks[0].namespaceSelector"]
        );
        assert_eq!(
            narrowed(&|w| w["matchConditions"] = json!([{"name": "skip", "expression": "false"}])),
            [".webhooks[0].matchConditions"]
        );
        assert_eq!(
            narrowed(&|w| w["matchPolicy"] = json!("Exact")),
            [".webhooks[0].matchPolicy"]
        );
        assert_eq!(
            narrowed(&|w| w["rules"][0]["operations"] = json!(["CREATE"])),
            [".webhooks[0].rules[0].operations"]
        );
        // Stored as nothing is the same as nothing.
        assert!(
            narrowed(&|w| {
                w.as_object_mut().unwrap().remove("objectSelector");
            })
            .is_empty()
        );
        let validating = validating(&settings(), "PEM", false);
        let mut observed = validating.clone();
        observed["webhooks"][0]["namespaceSelector"] = json!({"matchLabels": {"x": "y"}});
        assert_eq!(
            drift(&validating, &observed),
            [".webhooks[0].namespaceSelector"]
        );
    }
}
