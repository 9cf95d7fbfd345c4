//! The sidecar's last gate: key-release conditions, and which policies admit a SecretBinding.

use phantom_crds::TeeType;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compile::PolicySet;
use crate::decide::rule_failure;
use crate::expr::{check_input_bounds, context};
use crate::input::{KeyReleaseInput, labels};
use crate::selector;

/// Why a value was not released: which policy and which condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("key release refused by policy {policy}, condition {condition}: {message}")]
pub struct KeyReleaseRefusal {
    pub policy: String,
    pub condition: String,
    pub message: String,
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
            check_input_bounds(name, value, &self.inner.limits)
                .map_err(|e| refuse("-", "input", e))?;
        }
        let ctx = context(&[
            ("pod", &input.pod),
            ("binding", &input.binding),
            ("attestation", attestation),
        ])
        .map_err(|e| refuse("-", "input", e))?;
        for name in policies {
            let policy = self
                .inner
                .policies
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| {
                    refuse(
                        name,
                        "-",
                        format!(
                            "policy {name} is not in the policy set {} this sidecar enforces",
                            self.digest()
                        ),
                    )
                })?;
            for rule in &policy.key_release {
                if let Some(message) = rule_failure(rule, &ctx) {
                    return Err(refuse(name, &rule.name, message));
                }
            }
            let Some(req_name) = policy
                .object
                .spec
                .key_release
                .as_ref()
                .and_then(|k| k.attestation_requirement_ref.as_ref())
            else {
                continue;
            };
            let requirement = self.inner.requirements.get(&req_name.name).ok_or_else(|| {
                refuse(
                    name,
                    "attestationRequirementRef",
                    format!("AttestationRequirement {} is not compiled", req_name.name),
                )
            })?;
            if attestation.is_null() {
                return Err(refuse(
                    name,
                    "attestationRequirementRef",
                    format!(
                        "AttestationRequirement {} requires verified TEE evidence; the pod presented none",
                        req_name.name
                    ),
                ));
            }
            let tee: Option<TeeType> = attestation
                .get("teeType")
                .cloned()
                .and_then(|t| serde_json::from_value(t).ok());
            if !tee.is_some_and(|t| requirement.object.spec.tee_types.contains(&t)) {
                return Err(refuse(
                    name,
                    "attestationRequirementRef",
                    format!(
                        "the evidence's TEE type is not among those AttestationRequirement {} accepts",
                        req_name.name
                    ),
                ));
            }
            let claims_ctx =
                context(&[("attestation", attestation)]).map_err(|e| refuse(name, "input", e))?;
            for rule in &requirement.conditions {
                if let Some(message) = rule_failure(rule, &claims_ctx) {
                    return Err(refuse(
                        name,
                        &format!("{}/{}", req_name.name, rule.name),
                        message,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Enforced policies that admit a SecretBinding in the namespace `namespace_object`: those
    /// whose namespace selector covers it. A binding no policy admits
    /// never delivers anything, so the validating webhook refuses it.
    pub fn policies_admitting(&self, namespace_object: &Value) -> Vec<String> {
        let ns_labels = labels(namespace_object);
        self.inner
            .policies
            .iter()
            .filter(|p| p.object.spec.enforcement == phantom_crds::Enforcement::Enforce)
            .filter(|p| {
                selector::matches(p.object.spec.match_.namespace_selector.as_ref(), &ns_labels)
            })
            .map(|p| p.name.clone())
            .collect()
    }
}
