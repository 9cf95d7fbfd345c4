//! The Pod Security Standards' `restricted` profile (which includes `baseline`), checked on a pod
//! spec: which rules it breaks. Kubernetes 1.20 has no Pod Security admission, and clusters that
//! enforce the profile (1.25+, or a policy engine) refuse a pod that breaks any rule; an injection
//! must never be the reason. Admission uses [`restricted`] to keep an injected pod within the
//! profile whenever the application's pod was; the tests check every mutated corpus pod with it.
//!
//! Rules as the standard states them (kubernetes.io/docs/concepts/security/pod-security-standards,
//! "latest"); AppArmor and SELinux options are not checked (no injected container sets them).

use k8s_openapi::api::core::v1::{Container, PodSpec, SeccompProfile, SecurityContext};

#[cfg(test)]
mod tests;

/// Capabilities `baseline` lets a container add; `restricted` allows only `NET_BIND_SERVICE`.
const RESTRICTED_ADD: &[&str] = &["NET_BIND_SERVICE"];
/// Volume types `restricted` allows.
const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];
/// Sysctls `baseline` allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Every container of the pod, init containers first, with its kind for messages.
fn containers(spec: &PodSpec) -> impl Iterator<Item = (&'static str, &Container)> {
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c));
    init.chain(spec.containers.iter().map(|c| ("containers", c)))
}

fn confined(profile: Option<&SeccompProfile>) -> Option<bool> {
    profile.map(|p| matches!(p.type_.as_str(), "RuntimeDefault" | "Localhost"))
}

/// The rules of `restricted` that `spec` breaks, each naming the field (empty: it complies).
pub fn restricted(spec: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    for (field, on) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if on == Some(true) {
            out.push(format!("spec.{field} is true"));
        }
    }
    let pod = spec.security_context.as_ref();
    for sysctl in pod.and_then(|p| p.sysctls.as_ref()).into_iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            out.push(format!(
                "spec.securityContext.sysctls sets {}, which is not a safe sysctl",
                sysctl.name
            ));
        }
    }
    for volume in spec.volumes.iter().flatten() {
        let value = serde_json::to_value(volume).unwrap_or_default();
        let kinds: Vec<&String> = value
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .filter(|k| k.as_str() != "name")
            .collect();
        for kind in kinds {
            if !ALLOWED_VOLUMES.contains(&kind.as_str()) {
                out.push(format!(
                    "volume {} is of type {kind} (allowed: {})",
                    volume.name,
                    ALLOWED_VOLUMES.join(", ")
                ));
            }
        }
    }
    let pod_non_root = pod.and_then(|p| p.run_as_non_root);
    let pod_seccomp = confined(pod.and_then(|p| p.seccomp_profile.as_ref()));
    if pod.and_then(|p| p.run_as_user) == Some(0) {
        out.push("spec.securityContext.runAsUser is 0".into());
    }
    if pod_seccomp == Some(false) {
        out.push("spec.securityContext.seccompProfile is Unconfined".into());
    }
    for (kind, c) in containers(spec) {
        container_rules(kind, c, pod_non_root, pod_seccomp, &mut out);
    }
    out
}

fn container_rules(
    kind: &str,
    c: &Container,
    pod_non_root: Option<bool>,
    pod_seccomp: Option<bool>,
    out: &mut Vec<String>,
) {
    let at = format!("{kind}[{}]", c.name);
    let default = SecurityContext::default();
    let sc = c.security_context.as_ref().unwrap_or(&default);
    if sc.privileged == Some(true) {
        out.push(format!("{at} is privileged"));
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        out.push(format!("{at} sets procMount {:?}", sc.proc_mount));
    }
    if sc.allow_privilege_escalation != Some(false) {
        out.push(format!(
            "{at} does not set securityContext.allowPrivilegeEscalation: false"
        ));
    }
    if sc.run_as_non_root.or(pod_non_root) != Some(true) {
        out.push(format!(
            "{at} does not run as non-root (securityContext.runAsNonRoot: true, on it or the pod)"
        ));
    }
    if sc.run_as_user == Some(0) {
        out.push(format!("{at} sets runAsUser 0"));
    }
    match confined(sc.seccomp_profile.as_ref()).or(pod_seccomp) {
        Some(true) => {}
        Some(false) => out.push(format!("{at} sets seccompProfile Unconfined")),
        None => out.push(format!(
            "{at} has no seccompProfile RuntimeDefault or Localhost (on it or the pod)"
        )),
    }
    let caps = sc.capabilities.as_ref();
    if !caps
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|d| d.iter().any(|x| x == "ALL"))
    {
        out.push(format!("{at} does not drop capability ALL"));
    }
    for added in caps.and_then(|c| c.add.as_ref()).into_iter().flatten() {
        if !RESTRICTED_ADD.contains(&added.as_str()) {
            out.push(format!("{at} adds capability {added}"));
        }
    }
    for port in c.ports.iter().flatten() {
        if port.host_port.is_some_and(|p| p != 0) {
            out.push(format!("{at} uses hostPort {:?}", port.host_port));
        }
    }
}
