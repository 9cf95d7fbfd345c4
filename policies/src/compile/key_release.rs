//! `spec.keyRelease`: compiled into a [`super::PolicySet`] and, from the plan admission hands
//! over, into the sidecar's [`crate::KeyReleaseSet`] — one compilation for both.

use std::collections::BTreeMap;

use phantom_crds::{AttestationRequirement, KeyRelease, KeyReleasePlan};

use super::errors::Errors;
use super::{CompiledRequirement, ObjectErrors, Rule, requirement};
use crate::expr::{Limits, Scope};

/// `spec.keyRelease` of a policy: its conditions, and a check that the requirement it names
/// compiled. Shared by [`PolicySet`] and the sidecar's [`crate::KeyReleaseSet`].
pub(super) fn compile_conditions(
    errors: &mut Errors,
    kr: &KeyRelease,
    requirements: &BTreeMap<String, CompiledRequirement>,
    limits: &Limits,
) -> Vec<Rule> {
    let rules = errors.rules(
        "spec.keyRelease.conditions",
        &kr.conditions,
        Scope::KeyRelease,
        limits,
    );
    if let Some(r) = &kr.attestation_requirement_ref
        && !requirements.contains_key(&r.name)
    {
        errors.push(
            "spec.keyRelease.attestationRequirementRef.name",
            format!(
                "AttestationRequirement {} does not exist or does not compile",
                r.name
            ),
        );
    }
    rules
}

/// One policy's compiled key-release part.
#[derive(Debug, Clone)]
pub(crate) struct ReleaseRules {
    pub policy: String,
    pub rules: Vec<Rule>,
    /// The AttestationRequirement it names.
    pub requirement: Option<String>,
}

/// A key-release plan, compiled: the policies' parts and the requirements they name.
#[derive(Debug, Clone)]
pub(crate) struct CompiledKeyRelease {
    pub policies: Vec<ReleaseRules>,
    pub requirements: BTreeMap<String, CompiledRequirement>,
}

/// Compiles a sidecar's key-release plan: the requirements, then each policy's conditions.
pub(crate) fn compile_plan(
    plan: &KeyReleasePlan,
    limits: &Limits,
) -> Result<CompiledKeyRelease, Vec<ObjectErrors>> {
    let mut report = Vec::new();
    let mut requirements = BTreeMap::new();
    for r in &plan.requirements {
        let object = AttestationRequirement::new(&r.name, r.spec.clone());
        match requirement::compile(&object, limits) {
            Ok(c) => {
                requirements.insert(r.name.clone(), c);
            }
            Err(errors) => report.push(ObjectErrors {
                kind: "AttestationRequirement",
                name: r.name.clone(),
                errors,
            }),
        }
    }
    let mut policies = Vec::new();
    for p in &plan.policies {
        let mut errors = Errors::default();
        let rules = compile_conditions(&mut errors, &p.key_release, &requirements, limits);
        if errors.0.is_empty() {
            let requirement = p
                .key_release
                .attestation_requirement_ref
                .as_ref()
                .map(|r| r.name.clone());
            policies.push(ReleaseRules {
                policy: p.name.clone(),
                rules,
                requirement,
            });
        } else {
            report.push(ObjectErrors {
                kind: "PhantomPolicy",
                name: p.name.clone(),
                errors: errors.0,
            });
        }
    }
    if report.is_empty() {
        Ok(CompiledKeyRelease {
            policies,
            requirements,
        })
    } else {
        Err(report)
    }
}
