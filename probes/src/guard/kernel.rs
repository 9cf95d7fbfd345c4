//! The loaded kernel side: the programs of `probes/bpf/guard.bpf.c` attached on the strongest
//! path the kernel accepts, and the maps userspace keeps current.

use std::path::Path;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{Lsm, TracePoint};
use aya::{Btf, Ebpf};

use super::abi::{
    CgroupMode, Event, NsId, Protection, ThreadEntry, encode_cgroup_protection, encode_config,
};
use super::procfs::{self, ThreadIds};
use crate::{Error, Result};

/// The compiled programs (`build.rs`: clang `-target bpf`, CO-RE against the build host's BTF).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard.bpf.o"));

/// The tracepoint programs and where they attach.
const TRACEPOINTS: [(&str, &str, &str); 9] = [
    ("guard_ptrace", "syscalls", "sys_enter_ptrace"),
    (
        "guard_process_vm_readv",
        "syscalls",
        "sys_enter_process_vm_readv",
    ),
    (
        "guard_process_vm_writev",
        "syscalls",
        "sys_enter_process_vm_writev",
    ),
    ("guard_openat", "syscalls", "sys_enter_openat"),
    ("guard_openat2", "syscalls", "sys_enter_openat2"),
    ("guard_open", "syscalls", "sys_enter_open"),
    ("guard_exec", "sched", "sched_process_exec"),
    ("guard_fork", "sched", "sched_process_fork"),
    ("guard_exit", "sched", "sched_process_exit"),
];
/// The programs that keep the protected set current; the LSM path needs them too.
const BOOKKEEPING: [&str; 3] = ["guard_exec", "guard_fork", "guard_exit"];
const LSM_PROGRAM: &str = "guard_ptrace_access";
const LSM_HOOK: &str = "ptrace_access_check";

/// Which kernel path checks accesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckPath {
    /// `lsm/ptrace_access_check`: sees every route, refuses before the access.
    Lsm,
    /// Syscall tracepoints: see the named routes; stopping means killing the accessor.
    Tracepoint,
}

/// The guard's mode: the path, and whether protections that ask to stop an access may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub path: CheckPath,
    pub may_stop: bool,
}

impl Mode {
    /// `lsm-block`, `lsm-alert`, `tracepoint-kill` or `tracepoint-alert`.
    pub fn as_str(self) -> &'static str {
        match (self.path, self.may_stop) {
            (CheckPath::Lsm, true) => "lsm-block",
            (CheckPath::Lsm, false) => "lsm-alert",
            (CheckPath::Tracepoint, true) => "tracepoint-kill",
            (CheckPath::Tracepoint, false) => "tracepoint-alert",
        }
    }

    /// The protection the kernel side is given: a stop becomes an alert where the guard may
    /// not stop.
    pub fn effective(self, protection: Protection) -> Protection {
        use super::abi::Action;
        Protection {
            action: if self.may_stop {
                protection.action
            } else {
                Action::Alert
            },
            ..protection
        }
    }
}

/// What the guard was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Whether stopping accesses is allowed at all (`--max-action alert` says no).
    pub may_stop: bool,
    /// Try the LSM path (off: tracepoints only, e.g. to measure them).
    pub try_lsm: bool,
    pub cgroup_mode: CgroupMode,
    /// `/proc` (a parameter so tests can use another mount).
    pub proc_root: std::path::PathBuf,
}

/// The loaded guard. Dropping it detaches every program.
pub struct Guard {
    // Holds the programs (and with them their links).
    _ebpf: Ebpf,
    mode: Mode,
    lsm_refusal: Option<String>,
    host_pidns_inum: u32,
    protected: HashMap<MapData, [u8; 8], [u8; ThreadEntry::LEN]>,
    cgroups: HashMap<MapData, u64, [u8; 16]>,
    dropped: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("mode", &self.mode.as_str())
            .field("lsm_refusal", &self.lsm_refusal)
            .field("host_pidns_inum", &self.host_pidns_inum)
            .finish_non_exhaustive()
    }
}

fn program_error(program: &str, source: aya::programs::ProgramError) -> Error {
    Error::BpfProgram {
        program: program.to_owned(),
        source,
    }
}

fn map_error(map: &str, source: aya::maps::MapError) -> Error {
    Error::BpfMap {
        map: map.to_owned(),
        source,
    }
}

impl Guard {
    /// Loads the programs and attaches them on the strongest path the kernel accepts.
    pub fn load(options: &Options) -> Result<Self> {
        let host_pidns_inum = procfs::own_pidns_inum(&options.proc_root)?;
        ensure_tracefs()?;
        let mut ebpf = Ebpf::load(OBJECT).map_err(|source| Error::BpfLoad { source })?;
        let mut config: Array<MapData, [u8; 8]> = take(&mut ebpf, "guard_config")?;
        config
            .set(0, encode_config(options.cgroup_mode, host_pidns_inum), 0)
            .map_err(|e| map_error("guard_config", e))?;

        let lsm_refusal = if options.try_lsm {
            attach_lsm(&mut ebpf).err()
        } else {
            Some("not tried (--lsm=off)".to_owned())
        };
        let path = if lsm_refusal.is_none() {
            CheckPath::Lsm
        } else {
            CheckPath::Tracepoint
        };
        for (program, category, name) in TRACEPOINTS {
            if path == CheckPath::Lsm && !BOOKKEEPING.contains(&program) {
                continue;
            }
            let tracepoint: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| Error::BpfMissing {
                    what: program.to_owned(),
                })?
                .try_into()
                .map_err(|e| program_error(program, e))?;
            tracepoint.load().map_err(|e| program_error(program, e))?;
            tracepoint
                .attach(category, name)
                .map_err(|e| program_error(program, e))?;
        }
        let protected = take(&mut ebpf, "guard_protected")?;
        let cgroups = take(&mut ebpf, "guard_cgroups")?;
        let events = Some(take(&mut ebpf, "guard_events")?);
        let dropped = take(&mut ebpf, "guard_dropped")?;
        Ok(Self {
            _ebpf: ebpf,
            mode: Mode {
                path,
                may_stop: options.may_stop,
            },
            lsm_refusal,
            host_pidns_inum,
            protected,
            cgroups,
            dropped,
            events,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Why the LSM path is not in use (the kernel's answer), if it is not.
    pub fn lsm_refusal(&self) -> Option<&str> {
        self.lsm_refusal.as_deref()
    }

    pub fn host_pidns_inum(&self) -> u32 {
        self.host_pidns_inum
    }

    /// Protects one thread (both its keys).
    pub fn protect_thread(&mut self, ids: ThreadIds, protection: Protection) -> Result<()> {
        let entry = ThreadEntry {
            protection: self.mode.effective(protection),
            host_tid: ids.host.id,
            host_tgid: ids.host_tgid,
            own: ids.own,
        };
        let value = entry.encode();
        for key in std::iter::once(ids.host).chain(ids.own) {
            self.protected
                .insert(key.encode(), value, 0)
                .map_err(|e| map_error("guard_protected", e))?;
        }
        Ok(())
    }

    /// Protects every thread of process `pid` (host id) as it is now; returns how many.
    pub fn protect_process(
        &mut self,
        proc_root: &Path,
        pid: u32,
        protection: Protection,
    ) -> Result<usize> {
        let threads = procfs::threads(proc_root, self.host_pidns_inum, pid)?;
        for ids in &threads {
            self.protect_thread(*ids, protection)?;
        }
        Ok(threads.len())
    }

    /// Removes a thread's keys.
    pub fn unprotect(&mut self, key: NsId) -> Result<()> {
        let Ok(value) = self.protected.get(&key.encode(), 0) else {
            return Ok(());
        };
        let entry = ThreadEntry::decode(&value)?;
        for key in std::iter::once(key).chain(entry.own) {
            match self.protected.remove(&key.encode()) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error("guard_protected", e)),
            }
        }
        Ok(())
    }

    /// Every exec inside cgroup `id` (or a cgroup below it, two levels deep) is protected.
    pub fn protect_cgroup(&mut self, id: u64, protection: Protection) -> Result<()> {
        self.cgroups
            .insert(
                id,
                encode_cgroup_protection(&self.mode.effective(protection)),
                0,
            )
            .map_err(|e| map_error("guard_cgroups", e))
    }

    pub fn unprotect_cgroup(&mut self, id: u64) -> Result<()> {
        match self.cgroups.remove(&id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_error("guard_cgroups", e)),
        }
    }

    /// The entry for a host thread id, if protected.
    pub fn entry(&self, host_tid: u32) -> Result<Option<ThreadEntry>> {
        let key = NsId {
            ns_inum: self.host_pidns_inum,
            id: host_tid,
        };
        match self.protected.get(&key.encode(), 0) {
            Ok(value) => ThreadEntry::decode(&value).map(Some),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error("guard_protected", e)),
        }
    }

    /// Removes every thread entry of `cookie` (a pod no longer protected), whoever inserted it:
    /// userspace or the kernel side's exec and fork programs. Returns how many keys went.
    pub fn remove_cookie(&mut self, cookie: u64) -> Result<usize> {
        let keys: Vec<[u8; 8]> = self
            .protected
            .iter()
            .filter_map(|entry| entry.ok())
            .filter(|(_, value)| {
                ThreadEntry::decode(value).is_ok_and(|e| e.protection.cookie == cookie)
            })
            .map(|(key, _)| key)
            .collect();
        for key in &keys {
            match self.protected.remove(key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error("guard_protected", e)),
            }
        }
        Ok(keys.len())
    }

    /// How many threads are protected (host-namespace keys).
    pub fn protected_threads(&self) -> usize {
        self.protected
            .keys()
            .filter_map(|key| key.ok())
            .filter(|key| NsId::decode(*key).ns_inum == self.host_pidns_inum)
            .count()
    }

    /// Events the ring buffer had no room for, since load.
    pub fn dropped_events(&self) -> u64 {
        self.dropped
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    /// The ring buffer of events (taken once, by the reader).
    pub fn take_events(&mut self) -> Option<Events> {
        self.events.take().map(|ring| Events { ring })
    }
}

/// Where tracepoints are attached from; the guard mounts it where the host has not.
const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at [`TRACEFS`] unless it (or debugfs's copy) is already there: attaching a
/// tracepoint reads its id from `events/<category>/<name>/id`.
fn ensure_tracefs() -> Result<()> {
    let tracefs = Path::new(TRACEFS);
    if tracefs.join("events").is_dir() || Path::new("/sys/kernel/debug/tracing/events").is_dir() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        tracefs,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| Error::Procfs {
        path: TRACEFS.into(),
        source: std::io::Error::other(format!(
            "tracefs is not mounted and mounting it failed ({e}); mount it on the host or run the guard with CAP_SYS_ADMIN"
        )),
    })
}

fn take<M>(ebpf: &mut Ebpf, name: &str) -> Result<M>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| Error::BpfMissing {
        what: name.to_owned(),
    })?;
    M::try_from(map).map_err(|e| map_error(name, e))
}

/// Loads and attaches the LSM program, or says why the kernel would not.
fn attach_lsm(ebpf: &mut Ebpf) -> std::result::Result<(), String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    let lsm: &mut Lsm = ebpf
        .program_mut(LSM_PROGRAM)
        .ok_or("the LSM program is missing from the object")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    lsm.load(LSM_HOOK, &btf).map_err(|e| describe(&e))?;
    lsm.attach().map_err(|e| describe(&e))?;
    Ok(())
}

/// The error with its causes (aya puts the kernel's errno in the source).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The events the kernel side reports.
pub struct Events {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// The next event already in the buffer, if any (a record that does not decode is an
    /// error, and consumed).
    pub fn pop(&mut self) -> Option<Result<Event>> {
        self.ring.next().map(|item| Event::decode(&item))
    }

    /// The ring buffer's descriptor, to wait for readability (epoll / tokio's `AsyncFd`).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.ring.as_fd()
    }
}
