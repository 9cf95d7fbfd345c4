//! Kubernetes label selectors (matchLabels + matchExpressions), validated at compile time.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Checks operators and values the way the API server does for built-in selectors.
pub(crate) fn validate(selector: &LabelSelector) -> Result<(), String> {
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "matchExpressions[{i}]: operator {} needs at least one value",
                    req.operator
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!(
                    "matchExpressions[{i}]: operator {} takes no values",
                    req.operator
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "matchExpressions[{i}]: unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                ));
            }
        }
    }
    Ok(())
}

/// Whether `labels` satisfy `selector` (an absent selector matches everything).
pub(crate) fn matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|req| {
            let value = labels.get(&req.key);
            let values = req.values.as_deref().unwrap_or_default();
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => !value.is_some_and(|v| values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether a SecretBinding's `selector` selects a pod running as `service_account` with
/// `pod_labels` (both parts must hold; an absent part holds). Admission and the broker decide
/// with this one predicate.
pub fn binding_selects(
    selector: &phantom_crds::WorkloadSelector,
    service_account: &str,
    pod_labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .service_account_name
        .as_deref()
        .is_none_or(|sa| sa == service_account)
        && matches(selector.pod_selector.as_ref(), pod_labels)
}

/// [`binding_selects`] for a pod object (its `spec.serviceAccountName`, `default` when unset, and
/// its labels). A selector with neither part selects nothing here: such a binding does not compile.
pub fn binding_selects_pod(
    selector: &phantom_crds::WorkloadSelector,
    pod: &serde_json::Value,
) -> bool {
    if selector.service_account_name.is_none() && selector.pod_selector.is_none() {
        return false;
    }
    let service_account = pod
        .pointer("/spec/serviceAccountName")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("default");
    binding_selects(selector, service_account, &crate::input::labels(pod))
}
