//! Who a caller of the node agent is, and what its pod may be served (pure).
//!
//! Two proofs, which must agree: the kernel's (the calling process's cgroup names a container of
//! a pod on this node: [`phantom_identity::cgroup`]) and the pod's own (a projected token of the
//! agent's audience, reviewed by the API server, bound to a pod UID). A caller whose process is
//! not in a pod on this node, whose token is another pod's, or whose pod Phantom did not inject
//! in daemonset mode is refused, with the reason, before anything is read from OpenBao.
//!
//! What is served comes from the cluster, not from the caller: the SecretBindings the pod's plan
//! names are taken as they are now in the agent's view, must still select the pod, and must be
//! deliverable by the agent. The plan on the pod (admission's, in the init container, which
//! cannot change after creation) only says which bindings and which containers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt as _;
use phantom_crds::wellknown::Selection;
use phantom_crds::wellknown::injected::{INIT_CONTAINER, WRAPPED_ENV};
use phantom_crds::{
    BindingPlan, DeliveryKind, KEY_RELEASE_ENV, KeyReleasePlan, PLAN_ENV, SecretBinding,
};
use phantom_identity::cgroup::PodCgroups;
use phantom_identity::review::Reviewed;

#[cfg(test)]
mod tests;

/// A caller the agent serves: its pod, its container, and the pod's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    pub service_account: String,
    pub container: String,
}

/// Why a caller is not served. The message is safe to answer with (names only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the calling process is not in a container of a pod on this node (cgroup {cgroup:?})")]
    NotInPod { cgroup: String },
    #[error(
        "the token names pod {token_pod} but the calling process runs in pod {process_pod}; a pod proves itself with its own token"
    )]
    OtherPod {
        token_pod: String,
        process_pod: String,
    },
    #[error("namespace {0} is not one Phantom serves (its labels do not enable Phantom)")]
    NamespaceNotServed(String),
    #[error(
        "pod {0} was not injected by Phantom in daemonset mode (no plan on its {INIT_CONTAINER} container)"
    )]
    NotInjected(String),
    #[error("container {container} of pod {pod} is not wrapped by Phantom")]
    NotWrapped { pod: String, container: String },
    #[error("pod {pod}: its Phantom plan cannot be read ({why})")]
    BadPlan { pod: String, why: String },
    #[error(
        "SecretBinding {namespace}/{binding} named by pod {pod} does not exist or no longer selects it"
    )]
    BindingGone {
        pod: String,
        namespace: String,
        binding: String,
    },
    #[error(
        "SecretBinding {binding} delivers secret {secret} as a file, which the node agent does not deliver in this release; use injection mode sidecar for it"
    )]
    Undeliverable { binding: String, secret: String },
    #[error(
        "key release for pod {pod} gates on attestation ({requirements}), which the node agent does not perform in this release; use injection mode sidecar"
    )]
    Attested { pod: String, requirements: String },
}

/// The pod on this node whose container runs in `cgroup_path`, and that container's name.
pub fn pod_of_process<'p>(
    pods: &'p [std::sync::Arc<Pod>],
    cgroup_path: &str,
) -> Option<(&'p Pod, String)> {
    pods.iter().find_map(|pod| {
        let cgroups = PodCgroups::from_pod(pod)?;
        let container = cgroups.container(cgroup_path)?.to_owned();
        Some((pod.as_ref(), container))
    })
}

/// The caller, if the token's pod is the process's pod, in a namespace Phantom serves.
pub fn identify(
    process_pod: &Pod,
    container: &str,
    reviewed: &Reviewed,
    namespace: Option<&Namespace>,
    selection: &Selection,
) -> Result<Caller, Refusal> {
    let uid = process_pod.uid().unwrap_or_default();
    let name = format!(
        "{}/{}",
        process_pod.namespace().unwrap_or_default(),
        process_pod.name_any()
    );
    if reviewed.pod.uid != uid {
        return Err(Refusal::OtherPod {
            token_pod: format!(
                "{}/{} ({})",
                reviewed.pod.namespace, reviewed.pod.name, reviewed.pod.uid
            ),
            process_pod: format!("{name} ({uid})"),
        });
    }
    let labels = namespace.map(|n| n.labels().clone()).unwrap_or_default();
    if !serves(&labels, selection) {
        return Err(Refusal::NamespaceNotServed(reviewed.pod.namespace.clone()));
    }
    Ok(Caller {
        pod_uid: uid,
        pod_name: process_pod.name_any(),
        namespace: reviewed.pod.namespace.clone(),
        service_account: reviewed.service_account.clone(),
        container: container.to_owned(),
    })
}

fn serves(labels: &BTreeMap<String, String>, selection: &Selection) -> bool {
    let has = |(k, v): &(String, String)| labels.get(k) == Some(v);
    has(&selection.enable_label) && !has(&selection.opt_out_label)
}

/// What the agent serves one pod: the bindings as the cluster has them now, the wrapped
/// containers and the key-release plan admission wrote.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub bindings: Vec<BindingPlan>,
    pub wrapped: Vec<String>,
    pub key_release: Option<KeyReleasePlan>,
}

/// The Phantom init container's variables (admission's plan for the pod).
fn plan_env(pod: &Pod) -> BTreeMap<&str, &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.name == INIT_CONTAINER)
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
        .collect()
}

/// The names of the SecretBindings admission planned for `pod` (none when it has no readable
/// plan: [`plan_for`] then says why).
pub fn plan_names(pod: &Pod) -> Vec<String> {
    plan_env(pod)
        .get(PLAN_ENV)
        .and_then(|plan| serde_json::from_str::<Vec<BindingPlan>>(plan).ok())
        .map(|plans| plans.into_iter().map(|p| p.name).collect())
        .unwrap_or_default()
}

/// The plan for `caller`'s pod, from the pod as stored and the SecretBindings of its namespace.
pub fn plan_for(
    pod: &Pod,
    caller: &Caller,
    bindings: &[std::sync::Arc<SecretBinding>],
) -> Result<PodPlan, Refusal> {
    let pod_name = format!("{}/{}", caller.namespace, caller.pod_name);
    let bad = |why: String| Refusal::BadPlan {
        pod: pod_name.clone(),
        why,
    };
    let env = plan_env(pod);
    let Some(plan) = env.get(PLAN_ENV) else {
        return Err(Refusal::NotInjected(pod_name));
    };
    let named: Vec<BindingPlan> =
        serde_json::from_str(plan).map_err(|e| bad(format!("{PLAN_ENV}: {e}")))?;
    let wrapped: Vec<String> = env
        .get(WRAPPED_ENV)
        .map(|w| {
            w.split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if !wrapped.contains(&caller.container) {
        return Err(Refusal::NotWrapped {
            pod: pod_name,
            container: caller.container.clone(),
        });
    }
    let key_release: Option<KeyReleasePlan> = env
        .get(KEY_RELEASE_ENV)
        .map(|k| serde_json::from_str(k))
        .transpose()
        .map_err(|e| bad(format!("{KEY_RELEASE_ENV}: {e}")))?;
    if let Some(plan) = key_release.as_ref().filter(|k| !k.requirements.is_empty()) {
        let names: Vec<&str> = plan.requirements.iter().map(|r| r.name.as_str()).collect();
        return Err(Refusal::Attested {
            pod: pod_name,
            requirements: names.join(", "),
        });
    }
    let pod_value = serde_json::to_value(pod).map_err(|e| bad(e.to_string()))?;
    let mut current = Vec::with_capacity(named.len());
    for binding in &named {
        let found = bindings.iter().find(|b| {
            b.namespace().as_deref() == Some(caller.namespace.as_str())
                && b.name_any() == binding.name
                && phantom_policies::binding_selects_pod(&b.spec.selector, &pod_value)
        });
        let Some(found) = found else {
            return Err(Refusal::BindingGone {
                pod: pod_name,
                namespace: caller.namespace.clone(),
                binding: binding.name.clone(),
            });
        };
        for item in &found.spec.secrets {
            if item.delivery.iter().any(|d| d.kind == DeliveryKind::File) {
                return Err(Refusal::Undeliverable {
                    binding: binding.name.clone(),
                    secret: item.name.clone(),
                });
            }
        }
        current.push(BindingPlan {
            name: binding.name.clone(),
            spec: found.spec.clone(),
        });
    }
    phantom_policies::check_deliveries(&current, &wrapped)
        .map_err(|conflict| bad(conflict.to_string()))?;
    Ok(PodPlan {
        bindings: current,
        wrapped,
        key_release,
    })
}
