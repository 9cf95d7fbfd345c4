//! What a pod UPDATE or a new ephemeral container may change once a pod is stored (pure).
//!
//! Kubernetes lets a stored pod's images change (`kubectl set image`), its metadata, and
//! (through `pods/ephemeralcontainers`) debug containers be added. Each can undo what admission
//! decided at CREATE: an image swapped into a wrapped container runs under `phantom-exec` and
//! receives the secrets; a swapped sidecar image is no longer Phantom; an edited decision
//! annotation hides the pod from the gap scan; a debug container that mounts the secrets volume
//! or shares a wrapped container's processes reads what was delivered. [`classify`] says which of
//! these an UPDATE is, so the reviewer refuses, lets the policy decide again, or lets it through.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use phantom_crds::wellknown::injected::{INIT_CONTAINER, PROXY_CONTAINER};
use serde_json::Value;

use crate::reserved;

#[cfg(test)]
mod tests;

/// What an UPDATE of a pod changes, as far as Phantom guards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing Phantom guards: labels, other annotations, tolerations, deadlines, finalizers.
    Unguarded,
    /// One of the annotations only admission writes was added, changed or removed.
    Annotation(String),
    /// The image of a container Phantom added.
    PhantomImage { container: String },
    /// The images of these application containers: the policies decide again.
    Images(Vec<String>),
}

/// Classifies an UPDATE from the stored pod `old` to `new`.
pub fn classify(old: &Pod, new: &Pod) -> Change {
    let annotation = |pod: &Pod, key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
    };
    if let Some(key) = reserved::ANNOTATIONS
        .iter()
        .find(|key| annotation(old, key) != annotation(new, key))
    {
        return Change::Annotation((*key).to_owned());
    }
    let changed = changed_images(old.spec.as_ref(), new.spec.as_ref());
    if let Some(container) = changed
        .iter()
        .find(|c| [PROXY_CONTAINER, INIT_CONTAINER].contains(&c.as_str()))
    {
        return Change::PhantomImage {
            container: container.clone(),
        };
    }
    if changed.is_empty() {
        Change::Unguarded
    } else {
        Change::Images(changed)
    }
}

/// Containers (regular and init) whose image differs, by name; one that appears or disappears
/// counts as changed (the API server refuses that, so it only shows up in crafted reviews).
fn changed_images(old: Option<&PodSpec>, new: Option<&PodSpec>) -> Vec<String> {
    let images = |spec: Option<&PodSpec>| -> BTreeSet<(String, Option<String>)> {
        spec.into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .map(|c| (c.name.clone(), c.image.clone()))
            .collect()
    };
    let (before, after) = (images(old), images(new));
    let names: BTreeSet<String> = before
        .symmetric_difference(&after)
        .map(|(name, _)| name.clone())
        .collect();
    names.into_iter().collect()
}

/// The facts about a stored pod that decide whether a debug container may join it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFacts {
    pub injected: bool,
    /// Containers whose environment or files hold delivered secrets: the wrapped ones and the
    /// sidecar.
    pub holders: Vec<String>,
    pub shares_processes: bool,
}

impl PodFacts {
    /// Reads the facts off a pod as stored. Wrapped containers are those mounting the secrets
    /// volume (every target does, in every injection mode).
    pub fn of(pod: &Pod, injected: bool) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let holders = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter(|c| {
                c.name == PROXY_CONTAINER
                    || c.volume_mounts
                        .iter()
                        .flatten()
                        .any(|m| m.name == phantom_crds::wellknown::injected::SECRETS_VOLUME)
            })
            .map(|c| c.name.clone())
            .collect();
        Self {
            injected,
            holders,
            shares_processes: spec.share_process_namespace == Some(true),
        }
    }
}

/// The ephemeral containers of a `pods/ephemeralcontainers` request body, as JSON: a Pod
/// (`spec.ephemeralContainers`, API servers from 1.22) or an `EphemeralContainers` object
/// (`ephemeralContainers`, the alpha API of 1.16–1.21).
pub fn ephemeral_containers(object: &Value) -> Vec<Value> {
    object
        .pointer("/spec/ephemeralContainers")
        .or_else(|| object.get("ephemeralContainers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Why the ephemeral containers in `new` that are not in `old` may not join the pod, if they may
/// not. A pod Phantom did not inject holds nothing of Phantom's, so anything goes there.
pub fn ephemeral_refusal(pod: &PodFacts, old: &[Value], new: &[Value]) -> Option<String> {
    if !pod.injected {
        return None;
    }
    let name = |c: &Value| c.get("name").and_then(Value::as_str).map(str::to_owned);
    let existing: BTreeSet<String> = old.iter().filter_map(name).collect();
    for added in new
        .iter()
        .filter(|c| name(c).is_none_or(|n| !existing.contains(&n)))
    {
        let container = name(added).unwrap_or_default();
        let typed: Option<k8s_openapi::api::core::v1::EphemeralContainer> =
            serde_json::from_value(added.clone()).ok();
        let Some(typed) = typed else {
            return Some(format!(
                "ephemeral container {container} cannot be read; refusing it (fail closed)"
            ));
        };
        if let Some(reserved) = reserved::in_container(reserved::Parts {
            name: &typed.name,
            mounts: typed.volume_mounts.as_deref(),
            env: typed.env.as_deref(),
            command: typed.command.as_deref(),
        }) {
            return Some(format!("ephemeral container {container}: {reserved}"));
        }
        let cure = "debug a copy instead (kubectl debug --copy-to=<name>: the copy is admitted as a new pod and gets its own injection), or debug the application without a target container";
        if pod.shares_processes {
            return Some(format!(
                "ephemeral container {container} would join a pod that shares one process namespace (spec.shareProcessNamespace), where it can read the environment and files of the containers holding Phantom's secrets; {cure}"
            ));
        }
        if let Some(target) = typed
            .target_container_name
            .as_ref()
            .filter(|t| pod.holders.contains(t))
        {
            return Some(format!(
                "ephemeral container {container} targets container {target} (targetContainerName), whose processes hold Phantom-delivered secrets in their environment and files; {cure}"
            ));
        }
    }
    None
}
