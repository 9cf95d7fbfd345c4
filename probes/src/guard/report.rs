//! What a detection becomes for people: the Kubernetes Event's reason and message, and the rate
//! limit that folds identical repeats into one report with their count (pure).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::abi::{Action, Detection, Event};
use super::kernel::{CheckPath, Mode};

/// What the guard did about the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Taken {
    Alerted,
    /// Killed before the syscall returned (tracepoint path).
    Killed,
    /// Refused by the kernel (LSM path).
    Refused,
}

impl Taken {
    pub fn of(event: &Event, mode: Mode) -> Self {
        match (event.action, mode.path) {
            (Action::Alert, _) => Taken::Alerted,
            (Action::Stop, CheckPath::Tracepoint) => Taken::Killed,
            (Action::Stop, CheckPath::Lsm) => Taken::Refused,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Taken::Alerted => "alerted",
            Taken::Killed => "killed",
            Taken::Refused => "refused",
        }
    }
}

/// The first detection an event names (the LSM path may name several for one access).
pub fn primary(event: &Event) -> Detection {
    event.detections.iter().next().unwrap_or(Detection::ProcMem)
}

/// The Event reason for a detection.
pub const fn reason(detection: Detection) -> &'static str {
    match detection {
        Detection::Ptrace => "MemoryAccessPtrace",
        Detection::ProcMem => "MemoryAccessProcMem",
        Detection::ProcEnviron => "MemoryAccessProcEnviron",
        Detection::ProcMaps => "MemoryAccessProcMaps",
        Detection::ProcessVm => "MemoryAccessProcessVm",
    }
}

/// Who accessed, as far as the node knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    /// `namespace/pod` and container, when the accessor runs in a pod on this node.
    pub pod: Option<(String, String)>,
}

/// The Event message: accessor pid, comm, uid, its pod and container when it has one, the
/// action taken, and how many identical accesses were folded into this report.
pub fn message(event: &Event, actor: &Actor, taken: Taken, folded: u64) -> String {
    let what = event
        .detections
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join("/");
    let whom = match &actor.pod {
        Some((pod, container)) => format!("pod {pod}, container {container}"),
        None => "not in a pod on this node (node root or a host process)".into(),
    };
    let action = match taken {
        Taken::Alerted => "allowed (action alert)",
        Taken::Killed => "the accessor was killed before the call returned (action block)",
        Taken::Refused => "refused by the kernel (action block)",
    };
    let mut text = format!(
        "{what} access to process {} by pid {} ({:?}, uid {}), {whom}: {action}",
        event.target_host_tgid, event.actor_tgid, event.comm, event.actor_uid
    );
    if folded > 0 {
        text.push_str(&format!(
            "; {folded} identical access{} since the last report",
            if folded == 1 { "" } else { "es" }
        ));
    }
    text
}

/// What makes two detections identical for the rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepeatKey {
    pub victim_pod: String,
    pub detection: Detection,
    pub actor_comm: String,
    pub actor_uid: u32,
    pub taken: Taken,
}

/// Reports the first of identical detections at once and at most one per window after that,
/// carrying the count of those it folded.
#[derive(Debug)]
pub struct RateLimiter {
    window: Duration,
    seen: HashMap<RepeatKey, (Instant, u64)>,
}

/// The limiter's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Report now, with this many folded repeats.
    Report { folded: u64 },
    /// Counted; reported with the next report of the key.
    Fold,
}

impl RateLimiter {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
        }
    }

    pub fn admit(&mut self, key: RepeatKey, now: Instant) -> Admit {
        // Forget keys quiet for a window, so the map follows the live set.
        let window = self.window;
        self.seen
            .retain(|_, (last, folded)| *folded > 0 || now.duration_since(*last) < window);
        match self.seen.get_mut(&key) {
            Some((last, folded)) if now.duration_since(*last) < window => {
                *folded += 1;
                Admit::Fold
            }
            Some((last, folded)) => {
                let report = Admit::Report { folded: *folded };
                *last = now;
                *folded = 0;
                report
            }
            None => {
                self.seen.insert(key, (now, 0));
                Admit::Report { folded: 0 }
            }
        }
    }

    /// Keys with folded repeats whose window has passed: report them (with their count) even if
    /// no new access comes.
    pub fn due(&mut self, now: Instant) -> Vec<(RepeatKey, u64)> {
        let mut out = Vec::new();
        for (key, (last, folded)) in &mut self.seen {
            if *folded > 0 && now.duration_since(*last) >= self.window {
                out.push((key.clone(), *folded));
                *last = now;
                *folded = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
