//! `mutate(&Pod, &Decision, &InjectConfig, &Sealing) -> JSON Patch`: the pod spec changes of an
//! injection, and the sealed record of the decision.
//! Pure: knows nothing about HTTP or the API server, so every rule is unit-tested here and the
//! conformance suite checks the same rules on pods stored by a real API server.
//!
//! Only names and paths go into the spec, never a secret value: the sidecar fetches values at run
//! time with the pod's own ServiceAccount token.

use std::collections::BTreeMap;

use json_patch::Patch;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, Pod, PodSpec, Probe,
    ProjectedVolumeSource, SeccompProfile, SecretVolumeSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use phantom_crds::wellknown::injected::*;
use phantom_crds::wellknown::{
    BINDINGS_ANNOTATION, CANARY_ANNOTATION, COMMAND_ANNOTATION, DECISION_ANNOTATION,
    INJECTED_ANNOTATION, POLICY_DIGEST_ANNOTATION,
};
use phantom_crds::{
    BindingPlan, DeliveryKind, InjectionMode, KEY_RELEASE_ENV, KeyReleasePlan, PLAN_ENV,
};
use phantom_policies::{Decision, check_deliveries};
use serde_json::json;

use crate::config::{InjectConfig, resources};
use crate::metrics::Outcome;
use crate::reserved;
use crate::seal::Sealing;
use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// Whether admission injected this pod, judged from the pod as stored (an UPDATE's old object).
/// Never asked of a pod being created: there, Phantom's names are refused ([`reserved::find`]).
pub fn is_injected(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.get(INJECTED_ANNOTATION).is_some_and(|v| v == "true"));
    // A sidecar, or in daemonset mode the init container that carries the agent's plan.
    let has_proxy = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER || c.name == INIT_CONTAINER)
    });
    annotated && has_proxy
}

/// The patch injecting Phantom into `pod` as `decision` says (`decision.inject` must be true);
/// `plan` holds the specs of the SecretBindings the decision names, handed to the sidecar.
/// A pod that cannot be injected (one carrying Phantom's reserved names, a container without a
/// command and no `phantom.dev/command` annotation, bindings whose deliveries collide, an
/// unavailable mode) is an [`Error::Inject`] whose message says what to change.
pub fn mutate(
    pod: &Pod,
    decision: &Decision,
    plan: &[BindingPlan],
    key_release: Option<&KeyReleasePlan>,
    config: &InjectConfig,
    sealing: &Sealing,
) -> Result<Patch> {
    if let Some(reserved) = reserved::find(pod) {
        return Err(Error::Inject(reserved.to_string()));
    }
    let injection = decision.injection.clone().unwrap_or_default();
    let policy = decision.deciding_policy.as_deref().unwrap_or("-");
    // daemonset: no sidecar; the wrapped containers ask the node agent, which proves who they
    // are from the kernel and their own token.
    let agent = injection.mode == InjectionMode::Daemonset;
    if agent {
        refuse_for_agent(plan, key_release, policy)?;
    }
    let mut out = pod.clone();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let spec = out.spec.get_or_insert_with(PodSpec::default);
    let targets = target_containers(spec, injection.containers.as_deref(), policy)?;

    // init-only: the sidecar writes the files and exits before the application starts, so there
    // is no socket to ask and nothing to wrap; only file deliveries can work.
    let init_only = injection.mode == InjectionMode::InitOnly;
    if init_only {
        refuse_live_deliveries(plan, policy)?;
    }
    check_deliveries(plan, &targets).map_err(|conflict| Error::Inject(conflict.to_string()))?;
    let mut run_as_user = None;
    let pod_context = spec.security_context.as_ref();
    let pod_user = pod_context.and_then(|p| p.run_as_user);
    let pod_non_root = pod_context.and_then(|p| p.run_as_non_root);
    for c in spec
        .containers
        .iter_mut()
        .filter(|c| targets.contains(&c.name))
    {
        if !agent {
            let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
            mounts.push(sub_mount(SECRETS_VOLUME, FILES_SUBPATH, SECRETS_DIR));
            let env = c.env.get_or_insert_with(Vec::new);
            env.push(literal("PHANTOM_SECRETS_DIR", SECRETS_DIR));
        }
        let own_user = c.security_context.as_ref().and_then(|s| s.run_as_user);
        if !agent
            && own_user.or(pod_user).is_none()
            && c.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root)
                .or(pod_non_root)
                == Some(true)
        {
            return Err(Error::Inject(format!(
                "container {} runs as non-root without a runAsUser, so its user is whatever its image says, which admission cannot know; Phantom's sidecar must run as that same user (it writes the secret files 0400 and its socket answers only its own uid). Set securityContext.runAsUser (on the container or the pod) to the image's user",
                c.name
            )));
        }
        run_as_user = run_as_user.or(own_user);
        if init_only {
            continue;
        }
        let command = match &c.command {
            Some(command) if !command.is_empty() => command.clone(),
            _ => command_from_annotation(&annotations, &c.name)?,
        };
        let mut wrapped = vec![
            EXEC_PATH.to_owned(),
            "--container".to_owned(),
            c.name.clone(),
            "--".to_owned(),
        ];
        wrapped.extend(command);
        c.command = Some(wrapped);
        let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
        mounts.push(mount(BIN_VOLUME, BIN_DIR));
        if agent {
            // The node's agent socket; the agent learns the container from the caller's cgroup
            // and the pod from the token, so one socket serves every container.
            mounts.push(mount(AGENT_VOLUME, AGENT_DIR));
            mounts.push(mount(AGENT_TOKEN_VOLUME, AGENT_TOKEN_DIR));
            let env = c.env.get_or_insert_with(Vec::new);
            env.push(literal("PHANTOM_SOCKET", AGENT_SOCKET_PATH));
            env.push(literal(
                AGENT_TOKEN_ENV,
                &format!("{AGENT_TOKEN_DIR}/token"),
            ));
            continue;
        }
        // Its own socket directory only: the socket it reaches is the proof of who it is.
        mounts.push(sub_mount(
            SECRETS_VOLUME,
            &format!("{SOCKETS_SUBPATH}/{}", c.name),
            SOCKET_DIR,
        ));
        c.env
            .get_or_insert_with(Vec::new)
            .push(literal("PHANTOM_SOCKET", SOCKET_PATH));
    }

    let tmpfs = injection
        .tmpfs_size_limit
        .clone()
        .unwrap_or_else(|| config.default_tmpfs_size.clone());
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    if !init_only {
        volumes.push(empty_dir(BIN_VOLUME, None, "64Mi"));
    }
    if !agent {
        volumes.push(empty_dir(SECRETS_VOLUME, Some("Memory"), &tmpfs));
    }
    volumes.push(token_volume(
        TOKEN_VOLUME,
        &config.openbao_audience,
        config.token_expiration_seconds,
    ));
    if agent {
        volumes.push(Volume {
            name: AGENT_VOLUME.into(),
            host_path: Some(HostPathVolumeSource {
                path: config.agent.socket_dir.clone(),
                // The agent makes it; a node without the agent keeps the pod in Init, saying so.
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        });
        volumes.push(token_volume(
            AGENT_TOKEN_VOLUME,
            &config.agent.audience,
            config.token_expiration_seconds,
        ));
    }
    let broker = config
        .broker
        .as_ref()
        .filter(|_| key_release.is_some_and(|k| !k.requirements.is_empty()));
    if let Some(broker) = broker {
        volumes.push(token_volume(
            BROKER_TOKEN_VOLUME,
            &broker.audience,
            config.token_expiration_seconds,
        ));
    }
    // The agent presents its own client certificate; the pod needs none.
    if let Some(secret) = config
        .openbao_client_cert_secret
        .as_ref()
        .filter(|_| !agent)
    {
        volumes.push(Volume {
            name: CLIENT_CERT_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                // Readable by the sidecar whatever uid it runs as; only the sidecar mounts it.
                default_mode: Some(0o444),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let host_network = spec.host_network == Some(true);

    let security = injected_security(spec, run_as_user);
    if agent {
        let init = agent_init_container(config, plan, key_release, &targets, &security)?;
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .insert(0, init);
        return finish(pod, out, decision, sealing);
    }
    let init = init_container(config, &targets, &security);
    let mut proxy = proxy_container(decision, plan, key_release, &targets, config, &security)?;
    if config.proxy_status_port != 0 && !host_network {
        add_status_port(&mut proxy, config.proxy_status_port, injection.mode);
    }
    if let Some(resources) = injection.sidecar_resources.clone() {
        proxy.resources = Some(resources);
    }
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    match injection.mode {
        InjectionMode::Sidecar => {
            inits.insert(0, init);
            spec.containers.push(proxy);
        }
        InjectionMode::NativeSidecar => {
            proxy.restart_policy = Some("Always".into());
            inits.insert(0, init);
            inits.insert(1, proxy);
        }
        InjectionMode::InitOnly => {
            proxy.args = Some(vec!["--once".into()]);
            inits.insert(0, proxy);
        }
        InjectionMode::Daemonset => unreachable!("returned above"),
    }
    finish(pod, out, decision, sealing)
}

/// Records the decision on the injected pod, seals it and diffs it against the request's pod.
fn finish(pod: &Pod, mut out: Pod, decision: &Decision, sealing: &Sealing) -> Result<Patch> {
    let mut recorded = decision_annotations(decision, Outcome::Injected);
    recorded.insert(INJECTED_ANNOTATION.into(), "true".into());
    out.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(recorded);
    sealing.seal(&mut out)?;
    Ok(diff(pod, &out))
}

/// A patch adding `annotations` to the pod and sealing them (decisions that do not inject are
/// recorded too).
pub fn annotate(
    pod: &Pod,
    annotations: BTreeMap<String, String>,
    sealing: &Sealing,
) -> Result<Patch> {
    let mut out = pod.clone();
    out.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(annotations);
    sealing.seal(&mut out)?;
    Ok(diff(pod, &out))
}

/// The annotations recording `decision`: the outcome, the deciding policy and mode, the policy
/// digest, the bindings and every canary outcome. Names and digests only.
pub fn decision_annotations(decision: &Decision, outcome: Outcome) -> BTreeMap<String, String> {
    let mode = decision.injection.as_ref().map(|i| i.mode);
    let summary = json!({
        "outcome": outcome.as_str(),
        "policy": decision.deciding_policy,
        "mode": mode,
        "matched": decision.matched.iter().map(|m| &m.policy).collect::<Vec<_>>(),
    });
    let mut out = BTreeMap::from([
        (DECISION_ANNOTATION.to_owned(), summary.to_string()),
        (
            POLICY_DIGEST_ANNOTATION.to_owned(),
            decision.policy_digest.clone(),
        ),
    ]);
    if !decision.bindings.is_empty() {
        let names: Vec<&str> = decision.bindings.iter().map(|b| b.name.as_str()).collect();
        out.insert(BINDINGS_ANNOTATION.into(), names.join(","));
    }
    let canaries: Vec<String> = decision
        .matched
        .iter()
        .filter_map(|m| {
            m.canary.as_ref().map(|c| {
                let side = if c.selected { "in" } else { "out" };
                format!("{}:{}%:bucket={}:{side}", m.policy, c.percent, c.bucket)
            })
        })
        .collect();
    if !canaries.is_empty() {
        out.insert(CANARY_ANNOTATION.into(), canaries.join(","));
    }
    out
}

fn diff(before: &Pod, after: &Pod) -> Patch {
    let before = serde_json::to_value(before).unwrap_or_default();
    let after = serde_json::to_value(after).unwrap_or_default();
    json_patch::diff(&before, &after)
}

/// What the node agent cannot do yet (daemonset mode): write files into the pod's volume, and
/// ask the attestation broker for attested key release. Refused here with what to change; the
/// agent refuses the same plans again, since a pod creator is not bound to come through here.
fn refuse_for_agent(
    plan: &[BindingPlan],
    key_release: Option<&KeyReleasePlan>,
    policy: &str,
) -> Result<()> {
    for binding in plan {
        for item in &binding.spec.secrets {
            if item.delivery.iter().any(|d| d.kind == DeliveryKind::File) {
                return Err(Error::Inject(format!(
                    "PhantomPolicy {policy} injects in daemonset mode, where the node agent delivers environment variables and socket secrets; SecretBinding {} delivers secret {} as a file, which needs the pod's sidecar in this release. Deliver it as env or socket, or use injection mode sidecar",
                    binding.name, item.name
                )));
            }
        }
    }
    if let Some(requirements) = key_release
        .map(|k| &k.requirements)
        .filter(|r| !r.is_empty())
    {
        let names: Vec<&str> = requirements.iter().map(|r| r.name.as_str()).collect();
        return Err(Error::Inject(format!(
            "PhantomPolicy {policy} injects in daemonset mode, but key release for this pod gates on attestation ({}), which the node agent does not perform in this release; use injection mode sidecar for attested pods",
            names.join(", ")
        )));
    }
    Ok(())
}

/// In init-only mode every delivery must be a file: env and socket need the running sidecar.
fn refuse_live_deliveries(plan: &[BindingPlan], policy: &str) -> Result<()> {
    for binding in plan {
        for item in &binding.spec.secrets {
            if let Some(live) = item.delivery.iter().find(|d| d.kind != DeliveryKind::File) {
                return Err(Error::Inject(format!(
                    "PhantomPolicy {policy} injects in init-only mode, where the sidecar exits before the application starts; SecretBinding {} delivers secret {} as {:?}, which needs the running sidecar. Deliver it as a file, or use injection mode sidecar",
                    binding.name, item.name, live.kind
                )));
            }
        }
    }
    Ok(())
}

fn target_containers(
    spec: &PodSpec,
    listed: Option<&[String]>,
    policy: &str,
) -> Result<Vec<String>> {
    let names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
    let targets: Vec<String> = match listed {
        None => names.clone(),
        Some(listed) => names
            .iter()
            .filter(|n| listed.contains(n))
            .cloned()
            .collect(),
    };
    if targets.is_empty() {
        return Err(Error::Inject(format!(
            "PhantomPolicy {policy} wraps containers {:?} (spec.injection.containers) but the pod has only {names:?}; rename a container or fix the policy",
            listed.unwrap_or_default()
        )));
    }
    Ok(targets)
}

/// The entrypoint of `container` from `phantom.dev/command.<container>` or `phantom.dev/command`.
/// Phantom never asks an image registry for an image's ENTRYPOINT: that would make admission
/// depend on registry availability and credentials.
fn command_from_annotation(
    annotations: &BTreeMap<String, String>,
    container: &str,
) -> Result<Vec<String>> {
    let specific = format!("{COMMAND_ANNOTATION}.{container}");
    let Some((key, raw)) = annotations
        .get_key_value(&specific)
        .or_else(|| annotations.get_key_value(COMMAND_ANNOTATION))
    else {
        return Err(Error::Inject(format!(
            "container {container} has no command, and Phantom wraps the command with phantom-exec without asking image registries for the ENTRYPOINT. Set spec.containers[{container}].command, or add the pod annotation {specific}: '[\"/path/to/entrypoint\"]' (a JSON array with the image's ENTRYPOINT; args stay as they are)"
        )));
    };
    match serde_json::from_str::<Vec<String>>(raw) {
        Ok(command) if !command.is_empty() && !command[0].is_empty() => Ok(command),
        _ => Err(Error::Inject(format!(
            "pod annotation {key} must be a non-empty JSON array of strings such as '[\"/app/server\", \"--port\", \"8080\"]'"
        ))),
    }
}

fn sub_mount(volume: &str, sub_path: &str, path: &str) -> VolumeMount {
    VolumeMount {
        sub_path: Some(sub_path.into()),
        ..mount(volume, path)
    }
}

fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The status port, with a liveness probe on `/healthz`. No readiness probe: a sidecar serving
/// last good values while OpenBao is away should not take the pod out of its Services; degraded
/// shows in `phantom_proxy_degraded` and on the socket's `/v1/healthz`.
fn add_status_port(proxy: &mut Container, port: u16, mode: InjectionMode) {
    if mode == InjectionMode::InitOnly {
        return;
    }
    let port = i32::from(port);
    proxy
        .env
        .get_or_insert_with(Vec::new)
        .push(literal("PHANTOM_STATUS_ADDR", &format!("0.0.0.0:{port}")));
    proxy.ports = Some(vec![ContainerPort {
        name: Some(STATUS_PORT_NAME.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }]);
    proxy.liveness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Default::default()
    });
}

fn literal(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn empty_dir(name: &str, medium: Option<&str>, size: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(Into::into),
            size_limit: Some(Quantity(size.into())),
        }),
        ..Default::default()
    }
}

/// A projected ServiceAccount token for `audience`: the kubelet binds it to the pod and rotates it.
fn token_volume(name: &str, audience: &str, expiration_seconds: i64) -> Volume {
    Volume {
        name: name.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(audience.to_owned()),
                    expiration_seconds: Some(expiration_seconds),
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
            default_mode: Some(0o400),
        }),
        ..Default::default()
    }
}

/// The security context of Phantom's containers: as locked down as the `restricted` Pod Security
/// profile asks, within what the application's pod lets them run as. They run as the wrapped
/// containers' user (`run_as_user`, else the pod's, which they inherit); with a known non-root
/// user they say `runAsNonRoot`, and when every application container confines itself with a
/// seccomp profile (and the pod sets none for all) they use the runtime's default profile, so an
/// injection never takes a pod out of the profile.
fn injected_security(spec: &PodSpec, run_as_user: Option<i64>) -> SecurityContext {
    let pod = spec.security_context.as_ref();
    let user = run_as_user.or(pod.and_then(|p| p.run_as_user));
    let confined = |c: &Container| {
        c.security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
            .is_some_and(|p| p.type_ != "Unconfined")
    };
    let app_confined = pod.and_then(|p| p.seccomp_profile.as_ref()).is_none()
        && !spec.containers.is_empty()
        && spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .all(confined);
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        run_as_user,
        run_as_non_root: user.is_some_and(|u| u != 0).then_some(true),
        seccomp_profile: app_confined.then(|| SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Copies `phantom-exec` into place and lays out the secrets volume (`files/`, one socket
/// directory per wrapped container) as the sidecar's user, before any other container starts.
fn init_container(
    config: &InjectConfig,
    wrapped: &[String],
    security: &SecurityContext,
) -> Container {
    let mut command = vec![
        "/phantom-exec".to_owned(),
        "install".to_owned(),
        EXEC_PATH.to_owned(),
        "--volume".to_owned(),
        VOLUME_DIR.to_owned(),
    ];
    command.extend(wrapped.iter().cloned());
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(config.exec_image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(command),
        volume_mounts: Some(vec![
            VolumeMount {
                read_only: None,
                ..mount(BIN_VOLUME, BIN_DIR)
            },
            VolumeMount {
                read_only: None,
                ..mount(SECRETS_VOLUME, VOLUME_DIR)
            },
        ]),
        resources: Some(resources("10m", "8Mi", "16Mi")),
        security_context: Some(security.clone()),
        ..Default::default()
    }
}

/// daemonset mode: copies `phantom-exec` into place and waits for the node agent to answer, so
/// that a node without a running agent holds the pod in Init with a message. It carries the
/// plans the agent reads from the pod as stored (container specs cannot change after creation)
/// and mounts the OpenBao-audience token, which the agent reads from the kubelet's copy to log
/// in as the pod; no container of the application mounts it.
fn agent_init_container(
    config: &InjectConfig,
    plan: &[BindingPlan],
    key_release: Option<&KeyReleasePlan>,
    wrapped: &[String],
    security: &SecurityContext,
) -> Result<Container> {
    let mut env = vec![
        literal(
            PLAN_ENV,
            &serde_json::to_string(plan)
                .map_err(|e| Error::Config(format!("encoding the agent's plan: {e}")))?,
        ),
        literal(WRAPPED_ENV, &wrapped.join(",")),
    ];
    if let Some(key_release) = key_release.filter(|k| !k.policies.is_empty()) {
        let json = serde_json::to_string(key_release)
            .map_err(|e| Error::Config(format!("encoding the agent's key-release plan: {e}")))?;
        env.push(literal(KEY_RELEASE_ENV, &json));
    }
    Ok(Container {
        name: INIT_CONTAINER.into(),
        image: Some(config.exec_image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(vec![
            "/phantom-exec".to_owned(),
            "install".to_owned(),
            EXEC_PATH.to_owned(),
            "--agent".to_owned(),
            AGENT_SOCKET_PATH.to_owned(),
        ]),
        env: Some(env),
        volume_mounts: Some(vec![
            VolumeMount {
                read_only: None,
                ..mount(BIN_VOLUME, BIN_DIR)
            },
            mount(TOKEN_VOLUME, TOKEN_DIR),
            mount(AGENT_VOLUME, AGENT_DIR),
        ]),
        resources: Some(resources("10m", "8Mi", "16Mi")),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(security.clone()),
        ..Default::default()
    })
}

/// The sidecar. It runs as the wrapped containers' user (when they set one) so that the 0400 files
/// it writes are readable by the application and the socket's SO_PEERCRED check can expect one uid.
fn proxy_container(
    decision: &Decision,
    plan: &[BindingPlan],
    key_release: Option<&KeyReleasePlan>,
    targets: &[String],
    config: &InjectConfig,
    security: &SecurityContext,
) -> Result<Container> {
    let plan_json = serde_json::to_string(plan)
        .map_err(|e| Error::Config(format!("encoding the sidecar's plan: {e}")))?;
    let bindings: Vec<&str> = decision.bindings.iter().map(|b| b.name.as_str()).collect();
    let token_path = format!("{TOKEN_DIR}/token");
    let mut env = vec![
        field("PHANTOM_POD_NAME", "metadata.name"),
        field("PHANTOM_POD_NAMESPACE", "metadata.namespace"),
        field("PHANTOM_POD_UID", "metadata.uid"),
        field("PHANTOM_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        literal("PHANTOM_BINDINGS", &bindings.join(",")),
        literal("PHANTOM_WRAPPED_CONTAINERS", &targets.join(",")),
        literal(
            "PHANTOM_KEY_RELEASE_POLICIES",
            &decision.key_release_policies.join(","),
        ),
        literal("PHANTOM_POLICY_DIGEST", &decision.policy_digest),
        literal("PHANTOM_OPENBAO_ADDR", &config.openbao_address),
        literal("PHANTOM_TOKEN_PATH", &token_path),
        literal(
            "PHANTOM_SECRETS_DIR",
            &format!("{VOLUME_DIR}/{FILES_SUBPATH}"),
        ),
        literal(
            "PHANTOM_SOCKETS_DIR",
            &format!("{VOLUME_DIR}/{SOCKETS_SUBPATH}"),
        ),
        literal(PLAN_ENV, &plan_json),
    ];
    if let Some(pem) = &config.openbao_ca_pem {
        env.push(literal("PHANTOM_OPENBAO_CA_PEM", pem));
    }
    if !config.openbao_spki_pins.is_empty() {
        env.push(literal(
            "PHANTOM_OPENBAO_SPKI_SHA256",
            &config.openbao_spki_pins.join(","),
        ));
    }
    let mut mounts = vec![
        VolumeMount {
            read_only: None,
            ..mount(SECRETS_VOLUME, VOLUME_DIR)
        },
        mount(TOKEN_VOLUME, TOKEN_DIR),
    ];
    if config.openbao_client_cert_secret.is_some() {
        env.push(literal(
            "PHANTOM_OPENBAO_CLIENT_CERT",
            &format!("{CLIENT_CERT_DIR}/tls.crt"),
        ));
        env.push(literal(
            "PHANTOM_OPENBAO_CLIENT_KEY",
            &format!("{CLIENT_CERT_DIR}/tls.key"),
        ));
        mounts.push(mount(CLIENT_CERT_VOLUME, CLIENT_CERT_DIR));
    }
    if let Some(key_release) = key_release.filter(|k| !k.policies.is_empty()) {
        let json = serde_json::to_string(key_release)
            .map_err(|e| Error::Config(format!("encoding the sidecar's key-release plan: {e}")))?;
        env.push(literal(KEY_RELEASE_ENV, &json));
        if let Some(broker) = config
            .broker
            .as_ref()
            .filter(|_| !key_release.requirements.is_empty())
        {
            env.push(literal("PHANTOM_BROKER_ADDR", &broker.address));
            env.push(literal(
                "PHANTOM_BROKER_SPKI_SHA256",
                &broker.spki_pins.join(","),
            ));
            env.push(literal(
                "PHANTOM_BROKER_TOKEN_PATH",
                &format!("{BROKER_TOKEN_DIR}/token"),
            ));
            mounts.push(mount(BROKER_TOKEN_VOLUME, BROKER_TOKEN_DIR));
        }
    }
    Ok(Container {
        name: PROXY_CONTAINER.into(),
        image: Some(config.proxy_image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(vec!["/phantom-proxy".into()]),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: Some(config.proxy_resources.clone()),
        // Its error (OpenBao unreachable, a refused login or key release) becomes the container
        // status message, readable with `kubectl describe pod` while the pod waits.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(security.clone()),
        ..Default::default()
    })
}
