//! `phantom-guard`'s command line (every flag also a `PHANTOM_*` variable), parsed once into
//! [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use phantom_process::LogFormat;

use crate::{Error, Result};

/// Phantom's memory-access guard: eBPF programs that detect — and, where a policy says `block`,
/// stop — reads of protected pods' memory on this node (ptrace, process_vm_readv/writev,
/// `/proc/<pid>/mem`, `environ`, `maps`). Runs as a privileged DaemonSet with hostPID; reports each
/// detection as a Warning Event on the victim pod, a `phantom_guard_*` metric and a log line.
#[derive(Parser, Debug, Clone)]
#[command(name = "phantom-guard", version)]
pub struct Args {
    /// This node's name (downward API `spec.nodeName`): the guard protects the pods scheduled here.
    #[arg(long, env = "PHANTOM_NODE_NAME")]
    pub node_name: String,
    /// The strongest action the guard takes: `alert` turns every policy's `block` into `alert`
    /// (a node-wide dry run).
    #[arg(long, env = "PHANTOM_MAX_ACTION", value_enum, default_value_t = MaxAction::Block)]
    pub max_action: MaxAction,
    /// Try the BPF LSM path first (`off`: syscall tracepoints only).
    #[arg(long, env = "PHANTOM_LSM", value_enum, default_value_t = Lsm::Auto)]
    pub lsm: Lsm,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "PHANTOM_STATUS_LISTEN", default_value = "0.0.0.0:9468")]
    pub status_listen: SocketAddr,
    /// How often the protected set is compared with the pods' processes, in milliseconds (new
    /// processes are covered by the kernel at exec; this catches those that exist already).
    #[arg(long, env = "PHANTOM_RESYNC_MILLISECONDS", default_value_t = 1000)]
    pub resync_milliseconds: u64,
    /// Identical detections within this many seconds are folded into one report with a count.
    #[arg(long, env = "PHANTOM_REPEAT_WINDOW_SECONDS", default_value_t = 10)]
    pub repeat_window_seconds: u64,
    /// The guard's own namespace (downward API), where its heartbeat Lease lives.
    #[arg(long, env = "PHANTOM_NAMESPACE", default_value = "phantom-system")]
    pub namespace: String,
    /// The host's /proc (hostPID).
    #[arg(long, env = "PHANTOM_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// The host's cgroup filesystem.
    #[arg(long, env = "PHANTOM_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Log format (`json`: one object per line, detections included, for a SIEM).
    #[arg(long, env = "PHANTOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--max-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaxAction {
    Alert,
    Block,
}

/// `--lsm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lsm {
    Auto,
    Off,
}

/// What `phantom-guard` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub node_name: String,
    pub namespace: String,
    pub may_stop: bool,
    pub try_lsm: bool,
    pub status_listen: SocketAddr,
    pub resync: Duration,
    pub repeat_window: Duration,
    pub proc_root: PathBuf,
    pub cgroup_root: PathBuf,
}

/// Below this a resync is a busy loop over /proc.
pub const MIN_RESYNC: Duration = Duration::from_millis(100);

impl TryFrom<Args> for Settings {
    type Error = Error;

    fn try_from(args: Args) -> Result<Self> {
        if args.node_name.trim().is_empty() {
            return Err(Error::Config(
                "PHANTOM_NODE_NAME (--node-name) is empty; set it from the downward API (spec.nodeName)".into(),
            ));
        }
        let resync = Duration::from_millis(args.resync_milliseconds);
        if resync < MIN_RESYNC {
            return Err(Error::Config(format!(
                "PHANTOM_RESYNC_MILLISECONDS (--resync-milliseconds) is {} ms; the minimum is {} ms",
                args.resync_milliseconds,
                MIN_RESYNC.as_millis()
            )));
        }
        if args.repeat_window_seconds == 0 {
            return Err(Error::Config(
                "PHANTOM_REPEAT_WINDOW_SECONDS (--repeat-window-seconds) is 0; every repeat would be an Event: use at least 1".into(),
            ));
        }
        Ok(Self {
            node_name: args.node_name,
            namespace: args.namespace,
            may_stop: args.max_action == MaxAction::Block,
            try_lsm: args.lsm == Lsm::Auto,
            status_listen: args.status_listen,
            resync,
            repeat_window: Duration::from_secs(args.repeat_window_seconds),
            proc_root: args.proc_root,
            cgroup_root: args.cgroup_root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flags: &[(&str, &str)]) -> Result<Settings> {
        let fixed: &[&str] = if flags.iter().any(|(f, _)| *f == "node-name") {
            &[]
        } else {
            &["--node-name=node-1"]
        };
        let args = Args::try_parse_from(phantom_testkit::argv("phantom-guard", fixed, flags))
            .expect("flags parse");
        Settings::try_from(args)
    }

    #[test]
    fn defaults_block_try_lsm_and_resync_every_second() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.node_name, "node-1");
        assert!(s.may_stop && s.try_lsm);
        assert_eq!(s.resync, Duration::from_secs(1));
        assert_eq!(s.repeat_window, Duration::from_secs(10));
        assert_eq!(s.status_listen, "0.0.0.0:9468".parse().unwrap());
    }

    #[test]
    fn max_action_alert_and_lsm_off_are_honoured() {
        let s = settings(&[("max-action", "alert"), ("lsm", "off")]).unwrap();
        assert!(!s.may_stop && !s.try_lsm);
    }

    #[test]
    fn bad_values_are_refused_by_name_not_clamped() {
        for (flags, says) in [
            (
                vec![("resync-milliseconds", "10")],
                "PHANTOM_RESYNC_MILLISECONDS",
            ),
            (
                vec![("repeat-window-seconds", "0")],
                "PHANTOM_REPEAT_WINDOW_SECONDS",
            ),
            (vec![("node-name", " ")], "PHANTOM_NODE_NAME"),
        ] {
            let error = settings(&flags).unwrap_err().to_string();
            assert!(error.contains(says), "{says}: {error}");
        }
    }
}
