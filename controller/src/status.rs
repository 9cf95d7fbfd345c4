//! The status each object should carry, from the policy set in force (pure: a snapshot and the
//! object in, a status out). Conditions keep their `lastTransitionTime` while they do not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use phantom_crds::{AttestationRequirement, PhantomPolicy, SecretBinding, SecretBindingStatus};
use phantom_crds::{CommonStatus, CompileError, condition_types};
use phantom_policies::store::Snapshot;
use phantom_policies::{DeliveryConflict, collisions_in_namespace};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Reasons written into conditions (stable, CamelCase, for alerts and `kubectl wait`).
pub mod reasons {
    pub const COMPILED: &str = "Compiled";
    pub const COMPILE_FAILED: &str = "CompileFailed";
    pub const ENFORCED: &str = "Enforced";
    pub const PREVIOUS_VERSION_ENFORCED: &str = "PreviousVersionEnforced";
    pub const NOT_ENFORCED: &str = "NotEnforced";
    pub const ADMITTED: &str = "AdmittedByPolicy";
    pub const NOT_ADMITTED: &str = "NoPolicyAdmits";
    pub const DISTINCT: &str = "NoConflict";
    pub const CONFLICTS: &str = "ConflictsWithBinding";
}

/// `sha256:` of a spec (what `compiledDigest` reports for the version in force).
pub fn spec_digest(spec: &impl Serialize) -> String {
    let text = serde_json::to_string(spec).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Where an object stands in a snapshot.
struct Standing<'a> {
    errors: Vec<CompileError>,
    /// The spec in force (the current one, or the last good one when held back).
    enforced: Option<serde_json::Value>,
    held_back: bool,
    snapshot: &'a Snapshot,
}

fn standing<'a>(
    snapshot: &'a Snapshot,
    kind: &str,
    id: &str,
    enforced: Option<serde_json::Value>,
) -> Standing<'a> {
    let errors = snapshot
        .errors
        .iter()
        .filter(|e| e.kind == kind && e.name == id)
        .flat_map(|e| e.errors.clone())
        .collect();
    Standing {
        errors,
        held_back: snapshot.held_back.contains(&format!("{kind} {id}")),
        enforced,
        snapshot,
    }
}

fn common(
    standing: &Standing<'_>,
    generation: Option<i64>,
    previous: Option<&CommonStatus>,
    now: &Time,
) -> CommonStatus {
    let prior = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let compiled = standing.errors.is_empty();
    let first_error = standing.errors.first().map(|e| {
        let at = e
            .position
            .as_ref()
            .map(|p| format!(" (line {}, column {})", p.line, p.column))
            .unwrap_or_default();
        format!("{}: {}{at}", e.field, e.message)
    });
    let compiled_condition = condition(
        condition_types::COMPILED,
        compiled,
        if compiled {
            reasons::COMPILED
        } else {
            reasons::COMPILE_FAILED
        },
        match &first_error {
            None => "compiled".into(),
            Some(e) if standing.errors.len() > 1 => {
                format!(
                    "{e} (and {} more in status.errors)",
                    standing.errors.len() - 1
                )
            }
            Some(e) => e.clone(),
        },
        generation,
        prior,
        now,
    );
    let set_digest = standing.snapshot.set.digest();
    let (ready, reason, message) = match (&standing.enforced, compiled, standing.held_back) {
        (Some(_), true, _) => (
            true,
            reasons::ENFORCED,
            format!("in force in policy set {set_digest}"),
        ),
        (Some(_), false, true) => (
            false,
            reasons::PREVIOUS_VERSION_ENFORCED,
            format!(
                "this generation does not compile; the previous version stays in force (policy set {set_digest}); fix the errors in status.errors"
            ),
        ),
        _ => (
            false,
            reasons::NOT_ENFORCED,
            "not in force: no version of this object has compiled; fix the errors in status.errors"
                .into(),
        ),
    };
    CommonStatus {
        conditions: vec![
            compiled_condition,
            condition(
                condition_types::READY,
                ready,
                reason,
                message,
                generation,
                prior,
                now,
            ),
        ],
        observed_generation: generation,
        compiled_digest: standing.enforced.as_ref().map(spec_digest),
        errors: standing.errors.clone(),
    }
}

/// The status of a cluster-scoped object `kind` whose versions in force are `in_force`.
fn cluster_scoped<K: ResourceExt>(
    kind: &str,
    object: &K,
    in_force: &[K],
    spec: impl Fn(&K) -> Option<serde_json::Value>,
    previous: Option<&CommonStatus>,
    snapshot: &Snapshot,
    now: &Time,
) -> CommonStatus {
    let name = object.name_any();
    let enforced = in_force
        .iter()
        .find(|o| o.name_any() == name)
        .and_then(spec);
    let standing = standing(snapshot, kind, &name, enforced);
    common(&standing, object.meta().generation, previous, now)
}

/// The status of a PhantomPolicy.
pub fn policy_status(policy: &PhantomPolicy, snapshot: &Snapshot, now: &Time) -> CommonStatus {
    cluster_scoped(
        "PhantomPolicy",
        policy,
        &snapshot.sources.policies,
        |p| serde_json::to_value(&p.spec).ok(),
        policy.status.as_ref(),
        snapshot,
        now,
    )
}

/// The status of an AttestationRequirement.
pub fn requirement_status(
    requirement: &AttestationRequirement,
    snapshot: &Snapshot,
    now: &Time,
) -> CommonStatus {
    cluster_scoped(
        "AttestationRequirement",
        requirement,
        &snapshot.sources.requirements,
        |r| serde_json::to_value(&r.spec).ok(),
        requirement.status.as_ref(),
        snapshot,
        now,
    )
}

/// The status of a SecretBinding; `namespace_object` is its namespace (labels decide which
/// policies admit it).
pub fn binding_status(
    binding: &SecretBinding,
    snapshot: &Snapshot,
    namespace_object: &serde_json::Value,
    now: &Time,
) -> SecretBindingStatus {
    let namespace = binding.namespace().unwrap_or_default();
    let id = format!("{namespace}/{}", binding.name_any());
    let enforced = snapshot
        .sources
        .bindings
        .iter()
        .find(|b| {
            b.namespace().as_deref() == Some(namespace.as_str())
                && b.name_any() == binding.name_any()
        })
        .and_then(|b| serde_json::to_value(&b.spec).ok());
    let standing = standing(snapshot, "SecretBinding", &id, enforced);
    let previous = binding.status.as_ref().map(|s| &s.common);
    let mut common = common(&standing, binding.metadata.generation, previous, now);
    let admitted_by = snapshot.set.policies_admitting(namespace_object);
    let prior = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    common.conditions.push(condition(
        condition_types::ADMITTED,
        !admitted_by.is_empty(),
        if admitted_by.is_empty() { reasons::NOT_ADMITTED } else { reasons::ADMITTED },
        if admitted_by.is_empty() {
            format!("no enforced PhantomPolicy selects namespace {namespace}: this binding delivers nothing until one does")
        } else {
            format!("admitted by {}", admitted_by.join(", "))
        },
        binding.metadata.generation,
        prior,
        now,
    ));
    let conflict = first_conflict(binding, snapshot);
    common.conditions.push(condition(
        condition_types::DELIVERIES_DISTINCT,
        conflict.is_none(),
        if conflict.is_some() { reasons::CONFLICTS } else { reasons::DISTINCT },
        match &conflict {
            Some(conflict) => format!("a pod both bindings select is refused at admission: {conflict}"),
            None => format!("no other SecretBinding of namespace {namespace} delivers a secret, variable or file of the same name to the same pods"),
        },
        binding.metadata.generation,
        prior,
        now,
    ));
    SecretBindingStatus {
        common,
        admitted_by,
    }
}

/// The status of an object the API server holds that does not read as its `kind` (see
/// [`phantom_policies::Sources::unreadable`]): the error, and whether a last good version is in
/// force. `id` is `name` or `namespace/name`; `previous` is its status, when that part reads.
pub fn unreadable_status(
    kind: &str,
    id: &str,
    generation: Option<i64>,
    previous: Option<&CommonStatus>,
    snapshot: &Snapshot,
    now: &Time,
) -> CommonStatus {
    let same_id = |name: String, namespace: Option<String>| match namespace {
        Some(namespace) => format!("{namespace}/{name}") == id,
        None => name == id,
    };
    let sources = &snapshot.sources;
    let enforced = match kind {
        "PhantomPolicy" => sources
            .policies
            .iter()
            .find(|p| same_id(p.name_any(), None))
            .and_then(|p| serde_json::to_value(&p.spec).ok()),
        "SecretBinding" => sources
            .bindings
            .iter()
            .find(|b| same_id(b.name_any(), b.namespace()))
            .and_then(|b| serde_json::to_value(&b.spec).ok()),
        _ => sources
            .requirements
            .iter()
            .find(|r| same_id(r.name_any(), None))
            .and_then(|r| serde_json::to_value(&r.spec).ok()),
    };
    common(
        &standing(snapshot, kind, id, enforced),
        generation,
        previous,
        now,
    )
}

/// The first collision of `binding` with another SecretBinding in force in its namespace.
fn first_conflict(binding: &SecretBinding, snapshot: &Snapshot) -> Option<DeliveryConflict> {
    collisions_in_namespace(binding, &snapshot.sources.bindings).next()
}

/// Whether two statuses say the same (conditions compared without their times), so an
/// unchanged status is not written again.
pub fn same(a: &CommonStatus, b: &CommonStatus) -> bool {
    let strip = |s: &CommonStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests;
