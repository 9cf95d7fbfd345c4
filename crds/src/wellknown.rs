//! Labels and annotations that form Phantom's contract with users and between its components
//! (admission writes them, the controller and `phantomctl` read them). One place, so that a
//! rename cannot leave a reader behind.

/// Namespace label that enables Phantom: `phantom.dev/inject=enabled`; `disabled` opts out.
pub const INJECT_LABEL: &str = "phantom.dev/inject";
/// Value of [`INJECT_LABEL`] that enables injection.
pub const INJECT_ENABLED: &str = "enabled";
/// Value of [`INJECT_LABEL`] that opts a namespace out.
pub const INJECT_DISABLED: &str = "disabled";

/// Break-glass label, honoured on namespaces only: `phantom.dev/override=bypass`.
pub const OVERRIDE_LABEL: &str = "phantom.dev/override";
/// Value of [`OVERRIDE_LABEL`] that bypasses injection.
pub const OVERRIDE_BYPASS: &str = "bypass";

/// Pod annotation set on every injected pod (`"true"`); its presence makes admission idempotent.
pub const INJECTED_ANNOTATION: &str = "phantom.dev/injected";
/// Pod annotation with the decision as compact JSON (inject, policy, mode, reason).
pub const DECISION_ANNOTATION: &str = "phantom.dev/decision";
/// Pod annotation with the digest of the policy set that decided.
pub const POLICY_DIGEST_ANNOTATION: &str = "phantom.dev/policy-digest";
/// Pod annotation listing the SecretBindings (names in the pod's namespace), comma-separated.
pub const BINDINGS_ANNOTATION: &str = "phantom.dev/bindings";
/// Pod annotation with each matched policy's canary outcome.
pub const CANARY_ANNOTATION: &str = "phantom.dev/canary";
/// Pod annotation recording that the namespace override bypassed injection, and who asked.
pub const OVERRIDE_ANNOTATION: &str = "phantom.dev/override";
/// Pod annotation sealing the decision record: a MAC (keyed by a secret only admission and the
/// controller hold) over the annotations of [`DECISION_RECORD`] and the pod's immutable identity,
/// so that the gap scan can tell a record admission wrote from one a pod creator copied or forged.
pub const SEAL_ANNOTATION: &str = "phantom.dev/decision-seal";
/// The annotations that record admission's decision on a pod, in the order the seal covers them.
pub const DECISION_RECORD: [&str; 6] = [
    INJECTED_ANNOTATION,
    DECISION_ANNOTATION,
    POLICY_DIGEST_ANNOTATION,
    BINDINGS_ANNOTATION,
    CANARY_ANNOTATION,
    OVERRIDE_ANNOTATION,
];
/// Pod annotation giving a container's entrypoint when its spec has no `command`:
/// `phantom.dev/command` (every wrapped container) or `phantom.dev/command.<container>`, a JSON
/// array of strings.
pub const COMMAND_ANNOTATION: &str = "phantom.dev/command";

/// Namespace label marking a namespace critical: `phantom.dev/critical=true`. The controller's
/// circuit breaker never fails open for these (their pods wait for the webhook instead).
pub const CRITICAL_LABEL: &str = "phantom.dev/critical";
/// Value of [`CRITICAL_LABEL`] that marks a namespace critical.
pub const CRITICAL_TRUE: &str = "true";

/// Annotation on the webhook configurations with the circuit breaker's state (`closed`/`open`).
pub const BREAKER_ANNOTATION: &str = "phantom.dev/circuit-breaker";

/// Which namespaces Phantom acts in (admission, the controller's webhook configuration and gap
/// scan, `phantomctl`). The webhook configuration's namespaceSelector is the coarse filter;
/// admission checks again so that a broader configuration (or a namespace
/// relabelled after the fact) cannot make Phantom act where it was not asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `key=value` a namespace must carry for Phantom to act.
    pub enable_label: (String, String),
    /// `key=value` that opts a namespace out even when it carries the enable label.
    pub opt_out_label: (String, String),
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            enable_label: (INJECT_LABEL.into(), INJECT_ENABLED.into()),
            opt_out_label: (INJECT_LABEL.into(), INJECT_DISABLED.into()),
        }
    }
}

/// Parses `key=value`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Parses `namespace/name` of an object a flag names; empty means none.
pub fn parse_object_name(s: &str) -> Result<Option<(String, String)>, String> {
    match s.split_once('/') {
        _ if s.is_empty() => Ok(None),
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(Some((namespace.to_owned(), name.to_owned())))
        }
        _ => Err(format!("expected namespace/name or nothing, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_namespace_slash_name_or_nothing() {
        assert_eq!(parse_object_name(""), Ok(None));
        assert_eq!(
            parse_object_name("phantom-system/phantom-policy-set"),
            Ok(Some(("phantom-system".into(), "phantom-policy-set".into())))
        );
        for bad in ["name", "/name", "namespace/", "a/b/c"] {
            assert!(parse_object_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_label("a=b"), Ok(("a".into(), "b".into())));
        assert!(parse_label("=b").is_err());
    }
}

/// The audience a pod's projected token carries for the attestation broker.
pub const BROKER_AUDIENCE: &str = "phantom-broker";

/// The node agent's socket directory on the node, by default (phantom-admission mounts it into
/// daemonset-mode pods; phantom-agent binds its socket there).
pub const DEFAULT_AGENT_SOCKET_DIR: &str = "/var/run/phantom-agent";
/// The audience of the token pods present to the node agent, by default.
pub const DEFAULT_AGENT_AUDIENCE: &str = "phantom-agent";

/// The memory-access guard's heartbeat: one Lease per node, `phantom-guard-<node>` in the guard's
/// namespace, labelled [`guard::LEASE_LABEL`]`=true`, its annotations saying how it runs.
pub mod guard {
    pub const LEASE_PREFIX: &str = "phantom-guard-";
    pub const LEASE_LABEL: &str = "phantom.dev/guard-heartbeat";
    /// `lsm-block`, `lsm-alert`, `tracepoint-kill` or `tracepoint-alert`.
    pub const MODE_ANNOTATION: &str = "phantom.dev/guard-mode";
    /// Why BPF LSM is not in use (the kernel's answer), or `in use`.
    pub const LSM_ANNOTATION: &str = "phantom.dev/guard-lsm";
    pub const PROTECTED_PODS_ANNOTATION: &str = "phantom.dev/guard-protected-pods";
    /// How long a heartbeat holds; the guard renews every third of it.
    pub const LEASE_SECONDS: i32 = 30;
}

/// Names of the objects admission adds to a pod.
pub mod injected {
    /// Init container copying `phantom-exec` into [`BIN_VOLUME`].
    pub const INIT_CONTAINER: &str = "phantom-init";
    /// The sidecar (`phantom-proxy`).
    pub const PROXY_CONTAINER: &str = "phantom-proxy";
    /// Memory-backed volume with `phantom-exec`.
    pub const BIN_VOLUME: &str = "phantom-bin";
    /// Memory-backed volume with secret files and the socket.
    pub const SECRETS_VOLUME: &str = "phantom-secrets";
    /// Projected ServiceAccount token with the OpenBao audience.
    pub const TOKEN_VOLUME: &str = "phantom-token";
    /// Where [`BIN_VOLUME`] is mounted.
    pub const BIN_DIR: &str = "/phantom/bin";
    /// `phantom-exec` inside [`BIN_DIR`].
    pub const EXEC_PATH: &str = "/phantom/bin/phantom-exec";
    /// Where a target container sees the secret files ([`FILES_SUBPATH`] of [`SECRETS_VOLUME`]).
    pub const SECRETS_DIR: &str = "/phantom/secrets";
    /// The directory of [`SECRETS_VOLUME`] holding the files, mounted by every target.
    pub const FILES_SUBPATH: &str = "files";
    /// The directory of [`SECRETS_VOLUME`] holding one socket directory per wrapped container
    /// (`sockets/<container>/proxy.sock`); each is mounted into its container alone, so the
    /// socket a connection arrives on says which container asks.
    pub const SOCKETS_SUBPATH: &str = "sockets";
    /// Where a wrapped container sees its own socket directory.
    pub const SOCKET_DIR: &str = "/phantom/socket";
    /// A wrapped container's socket, inside [`SOCKET_DIR`].
    pub const SOCKET_PATH: &str = "/phantom/socket/proxy.sock";
    /// Where the sidecar mounts the whole of [`SECRETS_VOLUME`].
    pub const VOLUME_DIR: &str = "/phantom/volume";
    /// Where [`TOKEN_VOLUME`] is mounted (the sidecar only).
    pub const TOKEN_DIR: &str = "/var/run/secrets/phantom.dev/serviceaccount";
    /// The OpenBao client certificate (a `kubernetes.io/tls` Secret), for mTLS listeners.
    pub const CLIENT_CERT_VOLUME: &str = "phantom-openbao-client";
    /// Where [`CLIENT_CERT_VOLUME`] is mounted (the sidecar only).
    pub const CLIENT_CERT_DIR: &str = "/var/run/secrets/phantom.dev/openbao-client";
    /// Projected ServiceAccount token with the attestation broker's audience (pods whose key
    /// release gates on an AttestationRequirement).
    pub const BROKER_TOKEN_VOLUME: &str = "phantom-broker-token";
    /// Where [`BROKER_TOKEN_VOLUME`] is mounted (the sidecar only).
    pub const BROKER_TOKEN_DIR: &str = "/var/run/secrets/phantom.dev/broker";
    /// Name of the sidecar's status port (`/metrics`, `/healthz`, `/readyz`).
    pub const STATUS_PORT_NAME: &str = "phantom-status";
    /// Injection mode `daemonset`: the node agent's socket directory (a hostPath volume).
    pub const AGENT_VOLUME: &str = "phantom-agent";
    /// Where [`AGENT_VOLUME`] is mounted (read-only) in the wrapped and init containers.
    pub const AGENT_DIR: &str = "/var/run/phantom.dev/agent";
    /// The agent's socket inside [`AGENT_DIR`] (and inside the agent's host directory).
    pub const AGENT_SOCKET_NAME: &str = "agent.sock";
    /// The agent's socket as a wrapped container sees it.
    pub const AGENT_SOCKET_PATH: &str = "/var/run/phantom.dev/agent/agent.sock";
    /// Projected ServiceAccount token with the node agent's audience: what a wrapped container
    /// proves its pod with to the agent.
    pub const AGENT_TOKEN_VOLUME: &str = "phantom-agent-token";
    /// Where [`AGENT_TOKEN_VOLUME`] is mounted (the wrapped containers).
    pub const AGENT_TOKEN_DIR: &str = "/var/run/secrets/phantom.dev/agent";
    /// The variable naming the agent token file for `phantom-exec`.
    pub const AGENT_TOKEN_ENV: &str = "PHANTOM_AGENT_TOKEN";
    /// The header `phantom-exec` sends the agent token in.
    pub const AGENT_TOKEN_HEADER: &str = "x-phantom-agent-token";
    /// The variable on [`INIT_CONTAINER`] listing the wrapped containers (the agent reads the
    /// plan, the key-release plan and this from the pod as stored).
    pub const WRAPPED_ENV: &str = "PHANTOM_WRAPPED_CONTAINERS";
}
