//! `phantom_guard_*` metrics. Labels are the victim's namespace, the detection and the action
//! taken: never a pid, a command line or memory contents.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::guard::abi::Detection;
use crate::guard::report::Taken;

phantom_process::label_enum! {
    /// A detection.
    pub enum DetectionLabel {
        Ptrace => "ptrace",
        ProcMem => "proc-mem",
        ProcEnviron => "proc-environ",
        ProcMaps => "proc-maps",
        ProcessVm => "process-vm",
    }
}

impl From<Detection> for DetectionLabel {
    fn from(detection: Detection) -> Self {
        match detection {
            Detection::Ptrace => DetectionLabel::Ptrace,
            Detection::ProcMem => DetectionLabel::ProcMem,
            Detection::ProcEnviron => DetectionLabel::ProcEnviron,
            Detection::ProcMaps => DetectionLabel::ProcMaps,
            Detection::ProcessVm => DetectionLabel::ProcessVm,
        }
    }
}

phantom_process::label_enum! {
    /// What the guard did.
    pub enum ActionLabel {
        Alerted => "alerted",
        Killed => "killed",
        Refused => "refused",
    }
}

impl From<Taken> for ActionLabel {
    fn from(taken: Taken) -> Self {
        match taken {
            Taken::Alerted => ActionLabel::Alerted,
            Taken::Killed => ActionLabel::Killed,
            Taken::Refused => ActionLabel::Refused,
        }
    }
}

phantom_process::label_enum! {
    /// The path the guard runs.
    pub enum ModeLabel {
        LsmBlock => "lsm-block",
        LsmAlert => "lsm-alert",
        TracepointKill => "tracepoint-kill",
        TracepointAlert => "tracepoint-alert",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectionLabels {
    pub namespace: String,
    pub detection: DetectionLabel,
    pub action: ActionLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: ModeLabel,
}

/// The guard's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub detections: Family<DetectionLabels, Counter>,
    pub folded: Counter,
    pub protected_pods: Gauge,
    pub protected_threads: Gauge,
    pub dropped_events: Gauge,
    pub mode: Family<ModeLabels, Gauge>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("phantom_guard");
        registry.register(
            "detections",
            "Accesses to protected processes' memory, by victim namespace, detection and action taken",
            self.detections.clone(),
        );
        registry.register(
            "folded_reports",
            "Identical detections folded into a later report by the rate limit (counted there)",
            self.folded.clone(),
        );
        registry.register(
            "protected_pods",
            "Pods on this node the guard protects",
            self.protected_pods.clone(),
        );
        registry.register(
            "protected_threads",
            "Threads in the kernel side's protected set",
            self.protected_threads.clone(),
        );
        registry.register(
            "dropped_events",
            "Detections the ring buffer had no room for (reported as lost, never silently)",
            self.dropped_events.clone(),
        );
        registry.register("mode", "1 for the path the guard runs", self.mode.clone());
    }
}
