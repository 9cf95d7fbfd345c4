//! Verdicts on Phantom's own resources, from the snapshot in force. Pure: the caller fetches the
//! namespace object and plugin modules.

use kube::ResourceExt;
use phantom_crds::{AttestationRequirement, PhantomPolicy, SecretBinding};
use phantom_policies::{ModuleResolver, PolicySet, Sources, collisions_in_namespace};
use serde_json::Value;

use phantom_policies::store::Snapshot;

fn compile_errors(
    sources: &Sources,
    snapshot: &Snapshot,
    modules: &dyn ModuleResolver,
) -> Result<(), String> {
    let host = snapshot.set.plugin_host();
    let (_, errors) = PolicySet::compile(sources, host, modules);
    if errors.is_empty() {
        return Ok(());
    }
    Err(errors
        .iter()
        .map(|e| e.to_string().trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("; "))
}

/// A PhantomPolicy is admitted when it compiles against the AttestationRequirements in force.
pub fn policy(
    policy: &PhantomPolicy,
    snapshot: &Snapshot,
    modules: &dyn ModuleResolver,
) -> Result<(), String> {
    let sources = Sources {
        policies: vec![policy.clone()],
        requirements: snapshot.sources.requirements.clone(),
        bindings: Vec::new(),
        unreadable: Vec::new(),
    };
    compile_errors(&sources, snapshot, modules)
}

/// An AttestationRequirement is admitted when it compiles.
pub fn requirement(
    requirement: &AttestationRequirement,
    snapshot: &Snapshot,
    modules: &dyn ModuleResolver,
) -> Result<(), String> {
    let sources = Sources {
        requirements: vec![requirement.clone()],
        ..Default::default()
    };
    compile_errors(&sources, snapshot, modules)
}

/// A SecretBinding is admitted when it compiles and an enforced PhantomPolicy covers its
/// namespace: a binding no policy admits would never deliver anything, and the application team
/// would only find out when their pod starts without its secrets.
pub fn binding(
    binding: &SecretBinding,
    namespace_object: &Value,
    snapshot: &Snapshot,
    modules: &dyn ModuleResolver,
) -> Result<Vec<String>, String> {
    let sources = Sources {
        bindings: vec![binding.clone()],
        ..Default::default()
    };
    compile_errors(&sources, snapshot, modules)?;
    let admitting = snapshot.set.policies_admitting(namespace_object);
    if admitting.is_empty() {
        let namespace = binding.namespace().unwrap_or_default();
        let labels = namespace_object
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(Value::Null);
        return Err(format!(
            "SecretBinding {namespace}/{}: no enforced PhantomPolicy admits namespace {namespace} (labels {labels}); ask the platform team for a PhantomPolicy whose spec.match.namespaceSelector selects this namespace, or label the namespace so that an existing one does",
            binding.name_any()
        ));
    }
    Ok(admitting)
}

/// Warnings for a SecretBinding whose deliveries may collide with another binding of its
/// namespace: a pod both select is refused at admission, so the author hears of it now. A
/// warning, not a refusal: their selectors may never meet in practice.
pub fn binding_conflicts(binding: &SecretBinding, snapshot: &Snapshot) -> Vec<String> {
    collisions_in_namespace(binding, &snapshot.sources.bindings)
        .map(|conflict| format!("a pod both SecretBindings select will be refused: {conflict}"))
        .collect()
}
