//! Whether the SecretBindings that apply to one pod can all be delivered together. Each binding
//! is valid on its own (the compiler checks that); together they can still ask for the
//! impossible: two secrets under one name (the socket API and status address secrets by name),
//! one environment variable or file written by two secrets, or an environment variable for a
//! container that is never wrapped, which would leave the pod "injected" without that secret.
//! Admission refuses such a pod with the conflict named, the sidecar refuses such a plan at start
//! (a plan written by an older admission), and the controller reports bindings that can collide.

use std::collections::BTreeMap;
use std::fmt;

use kube::ResourceExt;
use phantom_crds::{BindingPlan, DeliveryKind, SecretBinding, WorkloadSelector};

/// A binding and one of its secrets, as conflicts name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub binding: String,
    pub secret: String,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBinding {} (secret {})", self.binding, self.secret)
    }
}

/// The first reason the bindings cannot be delivered to one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryConflict {
    /// Two secrets share a name.
    SecretName { first: Source, second: Source },
    /// Two secrets set one environment variable of one container.
    EnvVar {
        container: String,
        var: String,
        first: Source,
        second: Source,
    },
    /// Two secrets write one file.
    File {
        path: String,
        first: Source,
        second: Source,
    },
    /// An environment delivery names a container Phantom does not wrap.
    NotWrapped {
        source: Source,
        container: String,
        wrapped: Vec<String>,
    },
}

impl fmt::Display for DeliveryConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecretName { first, second } => write!(
                f,
                "{first} and {second} both deliver a secret named {} to this pod; rename one (spec.secrets[].name) or narrow a binding's spec.selector so that no pod gets both",
                first.secret
            ),
            Self::EnvVar {
                container,
                var,
                first,
                second,
            } => write!(
                f,
                "{first} and {second} both set environment variable {var} of container {container}; rename one (spec.secrets[].delivery[].name) or narrow a binding's spec.selector"
            ),
            Self::File {
                path,
                first,
                second,
            } => write!(
                f,
                "{first} and {second} both write file {path}; change one (spec.secrets[].delivery[].path) or narrow a binding's spec.selector"
            ),
            Self::NotWrapped {
                source,
                container,
                wrapped,
            } => write!(
                f,
                "{source} delivers an environment variable to container {container} (spec.secrets[].delivery[].containers), which Phantom does not wrap in this pod (wrapped: {}); fix the container name, or list it in the PhantomPolicy's spec.injection.containers",
                if wrapped.is_empty() {
                    "none".to_owned()
                } else {
                    wrapped.join(", ")
                }
            ),
        }
    }
}

impl std::error::Error for DeliveryConflict {}

/// Checks that `plan` can be delivered to a pod whose wrapped containers are `wrapped` (empty
/// for init-only pods, where nothing is wrapped and environment deliveries are refused anyway).
/// Returns the first conflict, in plan order, so the message is stable (boxed: it is large).
pub fn check_deliveries(
    plan: &[BindingPlan],
    wrapped: &[String],
) -> Result<(), Box<DeliveryConflict>> {
    let mut names: BTreeMap<&str, Source> = BTreeMap::new();
    let mut vars: BTreeMap<(String, String), Source> = BTreeMap::new();
    let mut files: BTreeMap<&str, Source> = BTreeMap::new();
    for binding in plan {
        for item in &binding.spec.secrets {
            let here = Source {
                binding: binding.name.clone(),
                secret: item.name.clone(),
            };
            if let Some(first) = names.insert(&item.name, here.clone()) {
                return Err(Box::new(DeliveryConflict::SecretName {
                    first,
                    second: here,
                }));
            }
            for delivery in &item.delivery {
                match delivery.kind {
                    DeliveryKind::Env => {
                        let var = delivery.name.clone().unwrap_or_default();
                        let targets = delivery.containers.as_deref().unwrap_or(wrapped);
                        for container in targets {
                            if !wrapped.contains(container) {
                                return Err(Box::new(DeliveryConflict::NotWrapped {
                                    source: here,
                                    container: container.clone(),
                                    wrapped: wrapped.to_vec(),
                                }));
                            }
                            let key = (container.clone(), var.clone());
                            if let Some(first) = vars.insert(key, here.clone())
                                && first != here
                            {
                                return Err(Box::new(DeliveryConflict::EnvVar {
                                    container: container.clone(),
                                    var,
                                    first,
                                    second: here,
                                }));
                            }
                        }
                    }
                    DeliveryKind::File => {
                        let path = delivery.path.as_deref().unwrap_or(&item.name);
                        if let Some(first) = files.insert(path, here.clone())
                            && first != here
                        {
                            return Err(Box::new(DeliveryConflict::File {
                                path: path.to_owned(),
                                first,
                                second: here,
                            }));
                        }
                    }
                    DeliveryKind::Socket => {}
                }
            }
        }
    }
    Ok(())
}

/// Stands for "every container the pod's policy wraps" when bindings are compared without a pod
/// (not a valid container name, so no delivery lists it).
const ANY_WRAPPED: &str = "(any wrapped container)";

/// Whether two SecretBindings of one namespace would collide in a pod that both select: the
/// first conflict, or `None` when they cannot collide or provably select no pod in common
/// (different `serviceAccountName`s, or one `matchLabels` key with different values).
pub fn may_collide(first: &BindingPlan, second: &BindingPlan) -> Option<DeliveryConflict> {
    if selectors_disjoint(&first.spec.selector, &second.spec.selector) {
        return None;
    }
    let mut containers: Vec<String> = [first, second]
        .iter()
        .flat_map(|b| &b.spec.secrets)
        .flat_map(|item| &item.delivery)
        .flat_map(|d| d.containers.iter().flatten().cloned())
        .collect();
    containers.sort();
    containers.dedup();
    containers.push(ANY_WRAPPED.to_owned());
    check_deliveries(&[first.clone(), second.clone()], &containers)
        .err()
        .map(|conflict| *conflict)
}

/// The collisions of `binding` with each other SecretBinding of its namespace among `bindings`
/// (the status reports the first, validation warns about each).
pub fn collisions_in_namespace<'a>(
    binding: &'a SecretBinding,
    bindings: &'a [SecretBinding],
) -> impl Iterator<Item = DeliveryConflict> + 'a {
    let plan = |b: &SecretBinding| BindingPlan {
        name: b.name_any(),
        spec: b.spec.clone(),
    };
    let this = plan(binding);
    bindings
        .iter()
        .filter(move |other| {
            other.namespace() == binding.namespace() && other.name_any() != binding.name_any()
        })
        .filter_map(move |other| may_collide(&plan(other), &this))
}

fn selectors_disjoint(a: &WorkloadSelector, b: &WorkloadSelector) -> bool {
    if let (Some(x), Some(y)) = (&a.service_account_name, &b.service_account_name)
        && x != y
    {
        return true;
    }
    let labels = |s: &WorkloadSelector| {
        s.pod_selector
            .as_ref()
            .and_then(|p| p.match_labels.clone())
            .unwrap_or_default()
    };
    let (x, y) = (labels(a), labels(b));
    x.iter().any(|(k, v)| y.get(k).is_some_and(|w| w != v))
}

#[cfg(test)]
mod tests;
