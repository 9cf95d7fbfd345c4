//! Which pods the node guard protects, and how: the monitoring half of the policy set, compiled
//! without the WASM host (like [`crate::KeyReleaseSet`] for the sidecar), so `phantom-guard`
//! carries only the CEL interpreter.
//!
//! A pod is protected when an enforced PhantomPolicy with `monitoring.enabled` matches it by
//! namespace selector, object selector and match conditions — evaluated on the pod as stored.
//! Canary buckets and SecretBindings, which narrow *injection*, do not narrow protection: the
//! guard errs towards protecting. A match condition that does not compile or errors counts as
//! matching, for the same reason: a broken policy may never switch a check off.

use kube::ResourceExt as _;
use phantom_crds::{Enforcement, PhantomPolicy};
use serde_json::{Value, json};

use crate::decide::MonitoringScope;
use crate::expr::{Expect, Expression, Limits, Scope, check_input_bounds, context};
use crate::input::labels;
use crate::selector;

#[derive(Debug, Clone)]
struct Monitored {
    name: String,
    object: PhantomPolicy,
    /// `None`: did not compile (counts as matching).
    conditions: Vec<Option<Expression>>,
}

/// The compiled monitoring policies.
#[derive(Debug, Clone, Default)]
pub struct MonitoringSet {
    policies: Vec<Monitored>,
    limits: Limits,
}

/// Why a policy protects more than it says (for the guard's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoringWarning {
    pub policy: String,
    pub message: String,
}

/// The scope of one pod, and which policies gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMonitoring {
    pub scope: MonitoringScope,
    pub policies: Vec<String>,
}

impl PodMonitoring {
    pub fn is_protected(&self) -> bool {
        !self.scope.detections.is_empty()
    }
}

impl MonitoringSet {
    /// Compiles the enforced, enabled monitoring policies of `policies`.
    pub fn compile(policies: &[PhantomPolicy]) -> (Self, Vec<MonitoringWarning>) {
        let limits = Limits::default();
        let mut warnings = Vec::new();
        let mut out = Vec::new();
        for policy in policies {
            let spec = &policy.spec;
            if spec.enforcement != Enforcement::Enforce
                || !spec.monitoring.as_ref().is_some_and(|m| m.enabled)
            {
                continue;
            }
            let name = policy.name_any();
            let conditions = spec
                .match_
                .match_conditions
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    match Expression::compile(&c.expression, Scope::Admission, Expect::Bool, &limits)
                    {
                        Ok(e) => Some(e),
                        Err(e) => {
                            warnings.push(MonitoringWarning {
                                policy: name.clone(),
                                message: format!(
                                    "spec.match.matchConditions[{i}] does not compile ({}); it counts as matching, so the policy protects every pod its selectors match",
                                    e.message
                                ),
                            });
                            None
                        }
                    }
                })
                .collect();
            out.push(Monitored {
                name,
                object: policy.clone(),
                conditions,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        (
            Self {
                policies: out,
                limits,
            },
            warnings,
        )
    }

    /// How `pod` (as stored) in `namespace_object` is protected.
    pub fn scope(&self, pod: &Value, namespace_object: &Value) -> PodMonitoring {
        let (pod_labels, ns_labels) = (labels(pod), labels(namespace_object));
        let request = json!({
            "operation": "CREATE",
            "namespace": pod.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
        });
        // Built once, only if some policy has conditions; an object too large to evaluate is
        // protected (conditions count as matching).
        let ctx = std::cell::OnceCell::new();
        let ctx = || {
            ctx.get_or_init(|| {
                for (name, value) in [("object", pod), ("namespaceObject", namespace_object)] {
                    check_input_bounds(name, value, &self.limits).ok()?;
                }
                context(&[
                    ("object", pod),
                    ("oldObject", &Value::Null),
                    ("namespaceObject", namespace_object),
                    ("request", &request),
                ])
                .ok()
            })
            .as_ref()
        };
        let mut out = PodMonitoring::default();
        for policy in &self.policies {
            let spec = &policy.object.spec;
            if !selector::matches(spec.match_.namespace_selector.as_ref(), &ns_labels)
                || !selector::matches(spec.match_.object_selector.as_ref(), &pod_labels)
            {
                continue;
            }
            let matches = policy
                .conditions
                .iter()
                .all(|condition| match (condition, ctx()) {
                    (Some(expr), Some(ctx)) => expr.eval_bool(ctx).unwrap_or(true),
                    _ => true,
                });
            if !matches {
                continue;
            }
            let Some(monitoring) = &spec.monitoring else {
                continue;
            };
            out.scope.add(monitoring);
            out.policies.push(policy.name.clone());
        }
        out
    }

    /// The policies in the set (for status and logs).
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.name.as_str())
    }
}

#[cfg(test)]
mod tests;
