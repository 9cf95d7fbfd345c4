//! The byte layout shared with `probes/bpf/guard.bpf.c`: map keys and values, and the events
//! its programs write to the ring buffer. Encoded by hand into byte arrays (native endianness, C
//! layout), so no `unsafe` impl of aya's `Pod` is needed and every field is tested here.

use crate::{Error, Result};

/// A detection (bit values as in the C program).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detection {
    /// `ptrace(PTRACE_ATTACH | PTRACE_SEIZE)`.
    Ptrace,
    /// Opening `/proc/<pid>/mem`.
    ProcMem,
    /// Opening `/proc/<pid>/environ` (where environment-variable secrets are).
    ProcEnviron,
    /// Opening `/proc/<pid>/maps` (the layout a memory read needs).
    ProcMaps,
    /// `process_vm_readv` / `process_vm_writev`.
    ProcessVm,
}

impl Detection {
    pub const ALL: [Detection; 5] = [
        Detection::Ptrace,
        Detection::ProcMem,
        Detection::ProcEnviron,
        Detection::ProcMaps,
        Detection::ProcessVm,
    ];

    pub const fn bit(self) -> u32 {
        match self {
            Detection::Ptrace => 1,
            Detection::ProcMem => 2,
            Detection::ProcEnviron => 4,
            Detection::ProcMaps => 8,
            Detection::ProcessVm => 16,
        }
    }

    /// The name in events, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Detection::Ptrace => "ptrace",
            Detection::ProcMem => "proc-mem",
            Detection::ProcEnviron => "proc-environ",
            Detection::ProcMaps => "proc-maps",
            Detection::ProcessVm => "process-vm",
        }
    }
}

/// A set of detections (the bitmask the kernel side tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Detections(u32);

impl Detections {
    pub fn all() -> Self {
        Detection::ALL.into_iter().collect()
    }

    pub fn contains(self, detection: Detection) -> bool {
        self.0 & detection.bit() != 0
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    /// The detections in `bits`, refusing unknown bits.
    pub fn from_bits(bits: u32) -> Option<Self> {
        let known = Self::all().0;
        (bits & !known == 0).then_some(Self(bits))
    }

    pub fn iter(self) -> impl Iterator<Item = Detection> {
        Detection::ALL
            .into_iter()
            .filter(move |d| self.contains(*d))
    }
}

impl FromIterator<Detection> for Detections {
    fn from_iter<I: IntoIterator<Item = Detection>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |acc, d| acc | d.bit()))
    }
}

/// The kernel-side detections a policy's `spec.monitoring.detections` ask for (`proc-mem` covers
/// `maps` too: the layout a memory read needs).
pub fn detections_for(policy: impl IntoIterator<Item = phantom_crds::Detection>) -> Detections {
    use phantom_crds::Detection as D;
    policy
        .into_iter()
        .flat_map(|detection| match detection {
            D::Ptrace => &[Detection::Ptrace][..],
            D::ProcMem => &[Detection::ProcMem, Detection::ProcMaps][..],
            D::ProcEnviron => &[Detection::ProcEnviron][..],
            D::ProcessVmReadv => &[Detection::ProcessVm][..],
        })
        .copied()
        .collect()
}

/// The kernel-side action for a policy's `spec.monitoring.action`.
pub fn action_for(policy: phantom_crds::MonitoringAction) -> Action {
    match policy {
        phantom_crds::MonitoringAction::Alert => Action::Alert,
        phantom_crds::MonitoringAction::Block => Action::Stop,
    }
}

/// What a detection does to the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Allow it and report.
    Alert,
    /// Refuse it where the kernel allows (BPF LSM), else kill the accessor; and report.
    Stop,
}

impl Action {
    const fn code(self) -> u32 {
        match self {
            Action::Alert => 0,
            Action::Stop => 1,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Action::Alert),
            1 => Some(Action::Stop),
            _ => None,
        }
    }
}

/// How a protected process is protected: which detections, the action, and the guard's name
/// for its pod (echoed in every event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    pub detections: Detections,
    pub action: Action,
    pub cookie: u64,
}

/// A thread id in one pid namespace (the map key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsId {
    pub ns_inum: u32,
    pub id: u32,
}

impl NsId {
    pub fn encode(self) -> [u8; 8] {
        let mut out = [0; 8];
        out[..4].copy_from_slice(&self.ns_inum.to_ne_bytes());
        out[4..].copy_from_slice(&self.id.to_ne_bytes());
        out
    }

    pub fn decode(bytes: [u8; 8]) -> Self {
        Self {
            ns_inum: u32_at(&bytes, 0),
            id: u32_at(&bytes, 4),
        }
    }
}

/// One protected thread (the map value): its protection, its ids in the host namespace and its
/// own-namespace key (`None` until known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadEntry {
    pub protection: Protection,
    pub host_tid: u32,
    pub host_tgid: u32,
    pub own: Option<NsId>,
}

impl ThreadEntry {
    pub const LEN: usize = 32;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[0..4].copy_from_slice(&self.protection.detections.bits().to_ne_bytes());
        out[4..8].copy_from_slice(&self.protection.action.code().to_ne_bytes());
        out[8..16].copy_from_slice(&self.protection.cookie.to_ne_bytes());
        out[16..20].copy_from_slice(&self.host_tid.to_ne_bytes());
        out[20..24].copy_from_slice(&self.host_tgid.to_ne_bytes());
        let own = self.own.unwrap_or(NsId { ns_inum: 0, id: 0 });
        out[24..32].copy_from_slice(&own.encode());
        out
    }

    pub fn decode(bytes: &[u8; Self::LEN]) -> Result<Self> {
        let own = NsId {
            ns_inum: u32_at(bytes, 24),
            id: u32_at(bytes, 28),
        };
        Ok(Self {
            protection: protection(bytes)?,
            host_tid: u32_at(bytes, 16),
            host_tgid: u32_at(bytes, 20),
            own: (own.ns_inum != 0).then_some(own),
        })
    }
}

/// A protected cgroup's value: what an exec inside it is protected with.
pub fn encode_cgroup_protection(protection: &Protection) -> [u8; 16] {
    let mut out = [0; 16];
    out[0..4].copy_from_slice(&protection.detections.bits().to_ne_bytes());
    out[4..8].copy_from_slice(&protection.action.code().to_ne_bytes());
    out[8..16].copy_from_slice(&protection.cookie.to_ne_bytes());
    out
}

/// How the kernel side finds a task's cgroup.
pub use phantom_identity::cgroup::CgroupMode;

/// The guard's configuration map.
pub fn encode_config(mode: CgroupMode, host_pidns_inum: u32) -> [u8; 8] {
    let code: u32 = match mode {
        CgroupMode::None => 0,
        CgroupMode::V1Memory => 1,
        CgroupMode::V2 => 2,
    };
    let mut out = [0; 8];
    out[..4].copy_from_slice(&code.to_ne_bytes());
    out[4..].copy_from_slice(&host_pidns_inum.to_ne_bytes());
    out
}

/// One access the kernel side saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub cookie: u64,
    /// What was attempted (the LSM path may name several: it sees the access mode, not the
    /// route).
    pub detections: Detections,
    pub action: Action,
    pub actor_tgid: u32,
    pub actor_tid: u32,
    pub actor_uid: u32,
    pub actor_pidns_inum: u32,
    pub target_host_tgid: u32,
    /// The id the accessor named (in its own pid namespace).
    pub target_arg: u32,
    /// The ptrace request (tracepoint path) or the access mode (LSM path).
    pub request: u32,
    /// The accessor's command name.
    pub comm: String,
    /// The accessor's cgroup (kernfs id in the guard's hierarchy; 0 without one).
    pub actor_cgroup: u64,
}

impl Event {
    pub const LEN: usize = 72;

    /// Decodes a ring-buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().map_err(|_| Error::GuardEvent {
            reason: format!("{} bytes, not the {} of an event", bytes.len(), Self::LEN),
        })?;
        let detections = Detections::from_bits(u32_at(bytes, 8))
            .filter(|d| d.bits() != 0)
            .ok_or_else(|| Error::GuardEvent {
                reason: format!("unknown detection bits {:#x}", u32_at(bytes, 8)),
            })?;
        let action = Action::from_code(u32_at(bytes, 12)).ok_or_else(|| Error::GuardEvent {
            reason: format!("unknown action {}", u32_at(bytes, 12)),
        })?;
        let comm = &bytes[48..64];
        let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
        Ok(Self {
            cookie: u64::from_ne_bytes(bytes[0..8].try_into().expect("8 bytes")),
            detections,
            action,
            actor_tgid: u32_at(bytes, 16),
            actor_tid: u32_at(bytes, 20),
            actor_uid: u32_at(bytes, 24),
            actor_pidns_inum: u32_at(bytes, 28),
            target_host_tgid: u32_at(bytes, 32),
            target_arg: u32_at(bytes, 36),
            request: u32_at(bytes, 40),
            comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
            actor_cgroup: u64::from_ne_bytes(bytes[64..72].try_into().expect("8 bytes")),
        })
    }
}

fn protection(bytes: &[u8]) -> Result<Protection> {
    let detections = Detections::from_bits(u32_at(bytes, 0)).ok_or_else(|| Error::GuardEvent {
        reason: format!("unknown detection bits {:#x}", u32_at(bytes, 0)),
    })?;
    let action = Action::from_code(u32_at(bytes, 4)).ok_or_else(|| Error::GuardEvent {
        reason: format!("unknown action {}", u32_at(bytes, 4)),
    })?;
    Ok(Protection {
        detections,
        action,
        cookie: u64::from_ne_bytes(bytes[8..16].try_into().expect("8 bytes")),
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests;
