//! `phantom-agent`'s command line (every flag also a `PHANTOM_*` variable), parsed once into
//! [`Settings`]. Values out of range are refused with the flag's name; nothing is clamped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use phantom_crds::wellknown::{Selection, parse_label};
use phantom_openbao::tls::TlsArgs;
use phantom_process::LogFormat;

use super::Settings;
use crate::{Error, Result};

/// Phantom's node agent (injection mode `daemonset`): serves the environment of the wrapped
/// containers of this node's daemonset-mode pods over one Unix socket, each caller proven by the
/// kernel (its process's cgroup) and by its pod's projected token, reading from OpenBao as the
/// pod's own identity with one shared login and cache per identity. Runs as a DaemonSet with
/// hostPID.
#[derive(Parser, Debug, Clone)]
#[command(name = "phantom-agent", version)]
pub struct Args {
    /// This node's name (downward API `spec.nodeName`): the agent serves the pods scheduled here.
    #[arg(long, env = "PHANTOM_NODE_NAME")]
    pub node_name: String,
    /// The host directory of the agent's socket (`agent.sock`), mounted into daemonset-mode pods;
    /// must match phantom-admission's --agent-socket-dir.
    #[arg(
        long,
        env = "PHANTOM_SOCKET_DIR",
        default_value = phantom_crds::wellknown::DEFAULT_AGENT_SOCKET_DIR
    )]
    pub socket_dir: PathBuf,
    /// The audience of the tokens pods prove themselves with; must match phantom-admission's
    /// --agent-audience.
    #[arg(
        long,
        env = "PHANTOM_AGENT_AUDIENCE",
        default_value = phantom_crds::wellknown::DEFAULT_AGENT_AUDIENCE
    )]
    pub audience: String,
    /// OpenBao address (`https://openbao.example:8200`).
    #[arg(long, env = "PHANTOM_OPENBAO_ADDR")]
    pub openbao_addr: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Namespace label (key=value) that enables Phantom (as phantom-admission's).
    #[arg(long, env = "PHANTOM_ENABLE_LABEL", default_value = "phantom.dev/inject=enabled", value_parser = parse_label)]
    pub enable_label: (String, String),
    /// Namespace label (key=value) that opts a namespace out (as phantom-admission's).
    #[arg(long, env = "PHANTOM_OPT_OUT_LABEL", default_value = "phantom.dev/inject=disabled", value_parser = parse_label)]
    pub opt_out_label: (String, String),
    /// The host's /proc (hostPID): callers' cgroups are read there.
    #[arg(long, env = "PHANTOM_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// The host's cgroup filesystem (which cgroup version the node runs).
    #[arg(long, env = "PHANTOM_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// The kubelet's pods directory (its `--root-dir` + `/pods`), read-only: logins use the
    /// kubelet's copy of each pod's OpenBao-audience token.
    #[arg(
        long,
        env = "PHANTOM_KUBELET_PODS_DIR",
        default_value = "/var/lib/kubelet/pods"
    )]
    pub kubelet_pods_dir: PathBuf,
    /// containerd's task directory for Kubernetes' containers, read-only: a caller's container
    /// is named from its bundle (`<dir>/<container id>/config.json`) as soon as it runs, without
    /// waiting for the kubelet to report it in the pod's status (which remains the fallback).
    #[arg(
        long,
        env = "PHANTOM_CONTAINERD_TASKS_DIR",
        default_value = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
    )]
    pub containerd_tasks_dir: PathBuf,
    /// Seconds a KV v2 read is served again to other pods of the same identity (0: never; every
    /// pod's rounds read OpenBao).
    #[arg(long, env = "PHANTOM_KEEP_READS_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub keep_reads_seconds: u64,
    /// Seconds a caller's container may be missing from its pod's status (the kubelet reports a
    /// container's ID shortly after it starts) before the caller is refused.
    #[arg(long, env = "PHANTOM_IDENTIFY_TIMEOUT_SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub identify_timeout_seconds: u64,
    /// Seconds the last good values are served while OpenBao is unreachable before a pod reports
    /// degraded.
    #[arg(long, env = "PHANTOM_GRACE_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(0..=7 * 86_400))]
    pub grace_seconds: u64,
    /// Overrides the bindings' refresh interval, in seconds.
    #[arg(long, env = "PHANTOM_REFRESH_SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub refresh_seconds: Option<u64>,
    /// Plain-HTTP address for /metrics, /healthz and /readyz (unset: off). Nothing secret is served there.
    #[arg(long, env = "PHANTOM_STATUS_ADDR", default_value = "0.0.0.0:9469")]
    pub status_addr: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "PHANTOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl TryFrom<Args> for Settings {
    type Error = Error;

    fn try_from(args: Args) -> Result<Self> {
        let config = |message: String| Error::Config(message);
        if args.node_name.trim().is_empty() {
            return Err(config(
                "PHANTOM_NODE_NAME (--node-name) is empty; set it from the downward API (spec.nodeName)".into(),
            ));
        }
        if args.audience.trim().is_empty() {
            return Err(config(
                "PHANTOM_AGENT_AUDIENCE (--audience) is empty; any token would then do: use phantom-admission's --agent-audience".into(),
            ));
        }
        for (flag, dir) in [
            ("PHANTOM_SOCKET_DIR (--socket-dir)", &args.socket_dir),
            (
                "PHANTOM_KUBELET_PODS_DIR (--kubelet-pods-dir)",
                &args.kubelet_pods_dir,
            ),
            (
                "PHANTOM_CONTAINERD_TASKS_DIR (--containerd-tasks-dir)",
                &args.containerd_tasks_dir,
            ),
        ] {
            if !dir.is_absolute() {
                return Err(config(format!(
                    "{flag} {} is not an absolute path",
                    dir.display()
                )));
            }
        }
        let tls = args
            .tls
            .settings()
            .map_err(|e| config(format!("the OpenBao TLS flags: {e}")))?;
        Ok(Self {
            node_name: args.node_name,
            socket_dir: args.socket_dir,
            audience: args.audience,
            openbao_addr: args.openbao_addr.trim_end_matches('/').to_owned(),
            tls,
            selection: Selection {
                enable_label: args.enable_label,
                opt_out_label: args.opt_out_label,
            },
            proc_root: args.proc_root,
            cgroup_root: args.cgroup_root,
            kubelet_pods_dir: args.kubelet_pods_dir,
            containerd_tasks_dir: args.containerd_tasks_dir,
            keep_reads: Duration::from_secs(args.keep_reads_seconds),
            identify_timeout: Duration::from_secs(args.identify_timeout_seconds),
            grace: Duration::from_secs(args.grace_seconds),
            refresh_override: args.refresh_seconds.map(Duration::from_secs),
            status_addr: args.status_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flags: &[(&str, &str)]) -> Result<Settings> {
        let mut fixed = vec!["--openbao-addr=https://openbao.example:8200/"];
        if !flags.iter().any(|(f, _)| *f == "node-name") {
            fixed.push("--node-name=node-1");
        }
        let args = Args::try_parse_from(phantom_testkit::argv("phantom-agent", &fixed, flags))
            .expect("flags parse");
        Settings::try_from(args)
    }

    #[test]
    fn defaults_match_admission_and_the_kubelet() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.node_name, "node-1");
        assert_eq!(s.openbao_addr, "https://openbao.example:8200");
        assert_eq!(s.socket_dir, PathBuf::from("/var/run/phantom-agent"));
        assert_eq!(s.audience, "phantom-agent");
        assert_eq!(s.kubelet_pods_dir, PathBuf::from("/var/lib/kubelet/pods"));
        assert_eq!(
            s.containerd_tasks_dir,
            PathBuf::from("/run/containerd/io.containerd.runtime.v2.task/k8s.io")
        );
        assert_eq!(s.keep_reads, Duration::from_secs(10));
        assert_eq!(s.identify_timeout, Duration::from_secs(20));
        assert_eq!(s.grace, Duration::from_secs(900));
        assert_eq!(s.refresh_override, None);
        assert_eq!(s.selection, Selection::default());
        assert_eq!(s.status_addr, Some("0.0.0.0:9469".parse().unwrap()));
    }

    #[test]
    fn values_become_typed_settings() {
        let s = settings(&[
            ("keep-reads-seconds", "0"),
            ("refresh-seconds", "30"),
            ("enable-label", "team/secrets=on"),
        ])
        .unwrap();
        assert!(s.keep_reads.is_zero());
        assert_eq!(s.refresh_override, Some(Duration::from_secs(30)));
        assert_eq!(
            s.selection.enable_label,
            ("team/secrets".into(), "on".into())
        );
    }

    #[test]
    fn bad_values_are_refused_by_name_not_clamped() {
        for (flags, says) in [
            (vec![("node-name", " ")], "PHANTOM_NODE_NAME"),
            (vec![("audience", "")], "PHANTOM_AGENT_AUDIENCE"),
            (vec![("socket-dir", "run/agent")], "PHANTOM_SOCKET_DIR"),
            (
                vec![("kubelet-pods-dir", "pods")],
                "PHANTOM_KUBELET_PODS_DIR",
            ),
            (vec![("openbao-spki-sha256", "nope")], "TLS"),
        ] {
            let error = settings(&flags).unwrap_err().to_string();
            assert!(error.contains(says), "{says}: {error}");
        }
        for (flag, value) in [
            ("keep-reads-seconds", "3601"),
            ("identify-timeout-seconds", "0"),
            ("refresh-seconds", "0"),
        ] {
            let parsed = Args::try_parse_from(phantom_testkit::argv(
                "phantom-agent",
                &["--node-name=n", "--openbao-addr=https://o:8200"],
                &[(flag, value)],
            ));
            assert!(parsed.is_err(), "--{flag}={value} accepted");
        }
    }
}
