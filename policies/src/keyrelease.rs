//! The sidecar's last gate: key-release conditions, and which policies admit a SecretBinding.

use std::collections::BTreeMap;

use phantom_crds::{KeyReleasePlan, KeyReleasePolicyPlan, RequirementPlan, TeeType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compile::{
    CompiledKeyRelease, CompiledRequirement, PolicySet, ReleaseRules, Rule, compile_plan,
};
use crate::decide::rule_failure;
use crate::expr::{Limits, check_input_bounds, context};
use crate::input::{KeyReleaseInput, key_release_pod_view, labels};
use crate::selector;

/// Why a value was not released: which policy and which condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("key release refused by policy {policy}, condition {condition}: {message}")]
pub struct KeyReleaseRefusal {
    pub policy: String,
    pub condition: String,
    pub message: String,
}

/// A policy name, with its conditions and requirement when the caller knows the policy.
type Resolved<'a> = (&'a str, Option<(&'a [Rule], Option<&'a str>)>);

/// Checks `policies` in order against one release; `None` in the list is a policy name the
/// caller does not know, which refuses.
fn check(
    policies: &[Resolved<'_>],
    requirements: &BTreeMap<String, CompiledRequirement>,
    limits: &Limits,
    digest: &str,
    input: &KeyReleaseInput,
) -> Result<(), KeyReleaseRefusal> {
    let refuse = |policy: &str, condition: &str, message: String| KeyReleaseRefusal {
        policy: policy.to_owned(),
        condition: condition.to_owned(),
        message,
    };
    let null = Value::Null;
    let attestation = input.attestation.as_ref().unwrap_or(&null);
    for (name, value) in [
        ("pod", &input.pod),
        ("binding", &input.binding),
        ("attestation", attestation),
    ] {
        check_input_bounds(name, value, limits).map_err(|e| refuse("-", "input", e))?;
    }
    let ctx = context(&[
        ("pod", &input.pod),
        ("binding", &input.binding),
        ("attestation", attestation),
    ])
    .map_err(|e| refuse("-", "input", e))?;
    for (name, compiled) in policies {
        let Some((rules, requirement)) = compiled else {
            return Err(refuse(
                name,
                "-",
                format!("policy {name} is not in the policy set {digest} this sidecar enforces"),
            ));
        };
        for rule in *rules {
            if let Some(message) = rule_failure(rule, &ctx) {
                return Err(refuse(name, &rule.name, message));
            }
        }
        let Some(req_name) = requirement else {
            continue;
        };
        let requirement = requirements.get(*req_name).ok_or_else(|| {
            refuse(
                name,
                "attestationRequirementRef",
                format!("AttestationRequirement {req_name} is not compiled"),
            )
        })?;
        if attestation.is_null() {
            return Err(refuse(
                name,
                "attestationRequirementRef",
                format!(
                    "AttestationRequirement {req_name} requires verified TEE evidence; the pod presented none"
                ),
            ));
        }
        let tee: Option<TeeType> = attestation
            .get("tee")
            .cloned()
            .and_then(|t| serde_json::from_value(t).ok());
        if !tee.is_some_and(|t| requirement.object.spec.tee_types.contains(&t)) {
            return Err(refuse(
                name,
                "attestationRequirementRef",
                format!(
                    "the evidence's TEE type is not among those AttestationRequirement {req_name} accepts"
                ),
            ));
        }
        let claims_ctx =
            context(&[("attestation", attestation)]).map_err(|e| refuse(name, "input", e))?;
        for rule in &requirement.conditions {
            if let Some(message) = rule_failure(rule, &claims_ctx) {
                return Err(refuse(name, &format!("{req_name}/{}", rule.name), message));
            }
        }
    }
    Ok(())
}

/// The key-release conditions one sidecar enforces, compiled from the [`KeyReleasePlan`] admission
/// handed over. Needs no plugin host: key release is CEL and attestation claims only.
#[derive(Debug, Clone)]
pub struct KeyReleaseSet {
    policy_digest: String,
    policies: Vec<ReleaseRules>,
    requirements: BTreeMap<String, CompiledRequirement>,
    limits: Limits,
    pod: Value,
}

impl KeyReleaseSet {
    /// Compiles `plan`; `pod_name` fills in `pod.metadata.name` (generated names are unknown at
    /// admission). Fails with every compile error: a sidecar must not release under conditions it
    /// cannot check.
    pub fn compile(plan: &KeyReleasePlan, pod_name: Option<&str>) -> crate::Result<Self> {
        let limits = Limits::default();
        let CompiledKeyRelease {
            policies,
            requirements,
        } = compile_plan(plan, &limits).map_err(crate::Error::Compile)?;
        let mut pod = plan.pod.clone();
        if let (Some(name), Some(metadata)) = (
            pod_name,
            pod.get_mut("metadata").and_then(Value::as_object_mut),
        ) {
            metadata.insert("name".into(), Value::String(name.to_owned()));
        }
        Ok(Self {
            policy_digest: plan.policy_digest.clone(),
            policies,
            requirements,
            limits,
            pod,
        })
    }

    /// The AttestationRequirements the plan gates on: when there are any, the values come from
    /// the attestation broker, which checks them with verified evidence (a check here would be
    /// no gate: the node's owner controls the sidecar).
    pub fn requirement_names(&self) -> Vec<&str> {
        self.requirements.keys().map(String::as_str).collect()
    }

    /// Names of the policies whose conditions are checked.
    pub fn policy_names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.policy.as_str()).collect()
    }

    /// Checks every policy's conditions for releasing `binding`'s values (`binding` as the
    /// SecretBinding object: `metadata` and `spec`), with the verified `attestation` claims if the
    /// pod presented evidence.
    pub fn check(
        &self,
        binding: &Value,
        attestation: Option<&Value>,
    ) -> Result<(), KeyReleaseRefusal> {
        let policies: Vec<_> = self
            .policies
            .iter()
            .map(|p| {
                (
                    p.policy.as_str(),
                    Some((p.rules.as_slice(), p.requirement.as_deref())),
                )
            })
            .collect();
        check(
            &policies,
            &self.requirements,
            &self.limits,
            &self.policy_digest,
            &KeyReleaseInput {
                pod: self.pod.clone(),
                binding: binding.clone(),
                attestation: attestation.cloned(),
            },
        )
    }
}

impl PolicySet {
    /// Checks the key-release conditions of `policies` (from [`crate::Decision::key_release_policies`])
    /// for one release. A policy unknown to this set refuses: the sidecar must not release under
    /// rules it cannot check.
    pub fn check_key_release(
        &self,
        policies: &[String],
        input: &KeyReleaseInput,
    ) -> Result<(), KeyReleaseRefusal> {
        let resolved: Vec<_> = policies
            .iter()
            .map(|name| {
                let compiled = self
                    .inner
                    .policies
                    .iter()
                    .find(|p| &p.name == name)
                    .map(|p| {
                        (
                            p.key_release.as_slice(),
                            p.object
                                .spec
                                .key_release
                                .as_ref()
                                .and_then(|k| k.attestation_requirement_ref.as_ref())
                                .map(|r| r.name.as_str()),
                        )
                    });
                (name.as_str(), compiled)
            })
            .collect();
        check(
            &resolved,
            &self.inner.requirements,
            &self.inner.limits,
            self.digest(),
            input,
        )
    }

    /// What admission hands the sidecar for `policies` (the decision's key-release policies):
    /// their conditions, the requirements they name and the pod as the conditions see it.
    pub fn key_release_plan(&self, policies: &[String], pod: &Value) -> KeyReleasePlan {
        let mut plan = KeyReleasePlan {
            policy_digest: self.digest().to_owned(),
            pod: key_release_pod_view(pod),
            ..KeyReleasePlan::default()
        };
        // In the caller's order, so the sidecar refuses for the same policy the set would.
        for policy in policies.iter().filter_map(|name| self.inner.policy(name)) {
            let Some(kr) = &policy.object.spec.key_release else {
                continue;
            };
            if let Some(r) = &kr.attestation_requirement_ref
                && let Some(req) = self.inner.requirements.get(&r.name)
                && !plan.requirements.iter().any(|p| p.name == r.name)
            {
                plan.requirements.push(RequirementPlan {
                    name: r.name.clone(),
                    spec: req.object.spec.clone(),
                });
            }
            plan.policies.push(KeyReleasePolicyPlan {
                name: policy.name.clone(),
                key_release: kr.clone(),
            });
        }
        plan
    }

    /// Enforced policies that admit a SecretBinding in the namespace `namespace_object`: those
    /// whose namespace selector covers it. A binding no policy admits
    /// never delivers anything, so the validating webhook refuses it.
    pub fn policies_admitting(&self, namespace_object: &Value) -> Vec<String> {
        let ns_labels = labels(namespace_object);
        self.inner
            .namespace_candidates(&ns_labels)
            .filter(|p| p.object.spec.enforcement == phantom_crds::Enforcement::Enforce)
            .filter(|p| {
                selector::matches(p.object.spec.match_.namespace_selector.as_ref(), &ns_labels)
            })
            .map(|p| p.name.clone())
            .collect()
    }
}
