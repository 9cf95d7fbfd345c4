//! The names Phantom's injection writes into a pod, which nothing a user creates may carry.
//!
//! Admission never sees its own output on CREATE (the webhook is registered with
//! `reinvocationPolicy: Never`), so a pod that arrives carrying Phantom's annotations, containers,
//! volumes, environment or wrapper was written that way by whoever created it: copied from
//! `kubectl get pod -o yaml` of an injected pod, or crafted to look injected so that policy does
//! not run, to hide from the gap scan, or to point `phantom-exec` at another socket. Such a pod is
//! refused with the name to remove, not stripped: stripping cannot undo a copied injection (the
//! wrapped commands, a frozen plan) without guessing, and a refusal loses nothing.

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, VolumeMount};
use phantom_crds::wellknown::injected::*;
use phantom_crds::wellknown::{DECISION_RECORD, SEAL_ANNOTATION};
use phantom_crds::{KEY_RELEASE_ENV, PLAN_ENV};

#[cfg(test)]
mod tests;

/// Annotations only admission writes: what it decided and why, and the seal over that record.
pub const ANNOTATIONS: [&str; 7] = [
    DECISION_RECORD[0],
    DECISION_RECORD[1],
    DECISION_RECORD[2],
    DECISION_RECORD[3],
    DECISION_RECORD[4],
    DECISION_RECORD[5],
    SEAL_ANNOTATION,
];

/// Containers admission adds.
pub const CONTAINERS: [&str; 2] = [PROXY_CONTAINER, INIT_CONTAINER];

/// Volumes admission adds; a user container mounting one by name would get the secrets, the
/// token or the wrapper once admission adds the volume.
pub const VOLUMES: [&str; 7] = [
    BIN_VOLUME,
    SECRETS_VOLUME,
    TOKEN_VOLUME,
    CLIENT_CERT_VOLUME,
    BROKER_TOKEN_VOLUME,
    AGENT_VOLUME,
    AGENT_TOKEN_VOLUME,
];

/// Environment variables admission sets on wrapped containers (and the plans it hands the
/// sidecar): a user-set copy would redirect `phantom-exec` or shadow Phantom's value.
pub const ENV: [&str; 6] = [
    "PHANTOM_SOCKET",
    "PHANTOM_SECRETS_DIR",
    PLAN_ENV,
    KEY_RELEASE_ENV,
    AGENT_TOKEN_ENV,
    WRAPPED_ENV,
];

/// Where a reserved name was found; [`std::fmt::Display`] says what to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    Annotation(String),
    Container(String),
    Volume(String),
    Mount { container: String, volume: String },
    Env { container: String, var: String },
    Wrapper { container: String },
}

impl std::fmt::Display for Reserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = "Phantom reserves it for its injection, and a pod that arrives carrying it is refused rather than taken as already injected";
        match self {
            Self::Annotation(key) => write!(
                f,
                "the pod carries annotation {key}; {why}. Remove it (a pod copied from an injected one: start again from its Deployment's template)"
            ),
            Self::Container(name) => write!(
                f,
                "the pod has a container named {name}; {why}. Remove it or rename it (Phantom adds its own)"
            ),
            Self::Volume(name) => write!(f, "the pod has a volume named {name}; {why}. Rename it"),
            Self::Mount { container, volume } => write!(
                f,
                "container {container} mounts volume {volume}; {why}. Remove the volumeMount: Phantom mounts its volumes into the containers it wraps"
            ),
            Self::Env { container, var } => write!(
                f,
                "container {container} sets environment variable {var}; {why}. Remove it"
            ),
            Self::Wrapper { container } => write!(
                f,
                "container {container}'s command already runs {BIN_DIR}; {why}. Give the application's own command: Phantom wraps it"
            ),
        }
    }
}

/// The first reserved name `pod` carries, in a stable order (annotations, volumes, then each
/// container, init container and ephemeral container in turn).
pub fn find(pod: &Pod) -> Option<Reserved> {
    if let Some(key) = pod
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| ANNOTATIONS.contains(&k.as_str()))
    {
        return Some(Reserved::Annotation(key.clone()));
    }
    let spec = pod.spec.as_ref()?;
    if let Some(volume) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| VOLUMES.contains(&v.name.as_str()))
    {
        return Some(Reserved::Volume(volume.name.clone()));
    }
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| Parts {
        name: &c.name,
        mounts: c.volume_mounts.as_deref(),
        env: c.env.as_deref(),
        command: c.command.as_deref(),
    });
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(Parts::of)
        .chain(ephemeral)
        .find_map(in_container)
}

/// What the checks read of one container, of any kind (regular, init, ephemeral).
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub name: &'a str,
    pub mounts: Option<&'a [VolumeMount]>,
    pub env: Option<&'a [EnvVar]>,
    pub command: Option<&'a [String]>,
}

impl<'a> Parts<'a> {
    fn of(c: &'a Container) -> Self {
        Self {
            name: &c.name,
            mounts: c.volume_mounts.as_deref(),
            env: c.env.as_deref(),
            command: c.command.as_deref(),
        }
    }
}

/// A reserved name in one container.
pub fn in_container(parts: Parts<'_>) -> Option<Reserved> {
    let Parts {
        name,
        mounts,
        env,
        command,
    } = parts;
    let container = || name.to_owned();
    if CONTAINERS.contains(&name) {
        return Some(Reserved::Container(container()));
    }
    if let Some(mount) = mounts
        .into_iter()
        .flatten()
        .find(|m| VOLUMES.contains(&m.name.as_str()))
    {
        return Some(Reserved::Mount {
            container: container(),
            volume: mount.name.clone(),
        });
    }
    if let Some(var) = env
        .into_iter()
        .flatten()
        .find(|e| ENV.contains(&e.name.as_str()))
    {
        return Some(Reserved::Env {
            container: container(),
            var: var.name.clone(),
        });
    }
    // A copied injection, said plainly. Not a boundary on its own: a shell can run the wrapper
    // too, so what a caller of the socket gets is the sidecar's decision, not this one's.
    let wrapped = command
        .and_then(<[String]>::first)
        .is_some_and(|first| std::path::Path::new(first).starts_with(BIN_DIR));
    wrapped.then(|| Reserved::Wrapper {
        container: container(),
    })
}
