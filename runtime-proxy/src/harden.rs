//! Process hardening of the sidecar, and the check that secret files land on memory.
//!
//! * `PR_SET_DUMPABLE=0`: no core dumps of the process, and `/proc/<pid>/mem` and ptrace are
//!   closed to other processes of the same uid (the application included).
//! * `RLIMIT_CORE` 0 (soft and hard): no core file even on nodes with `suid_dumpable=2`, and —
//!   set by `phantom-exec` before it `exec`s — none of the application either, whose environment
//!   holds its env-delivered secrets (`PR_SET_DUMPABLE` does not survive `exec`; the limit does,
//!   and an unprivileged application cannot raise the hard limit again).
//! * `mlockall`: best effort — without `CAP_IPC_LOCK` only `RLIMIT_MEMLOCK` bytes can be locked,
//!   so the outcome is reported, not required.
//! * Secret files are written only when their directory is on a `tmpfs` (the memory-backed
//!   emptyDir), read from `/proc/self/mountinfo`: a misconfigured disk volume is refused.

use std::path::Path;

use crate::{Error, Result};

/// What hardening achieved, for the log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    pub dumpable_off: bool,
    /// `RLIMIT_CORE` is 0, soft and hard.
    pub core_dumps_off: bool,
    /// `Ok` when all memory is locked, otherwise why not.
    pub memory_locked: std::result::Result<(), String>,
}

/// Sets `RLIMIT_CORE` to 0, soft and hard; whether it is 0 afterwards.
pub fn disable_core_dumps() -> bool {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    getrlimit(Resource::RLIMIT_CORE) == Ok((0, 0))
}

/// `MCL_ONFAULT` (Linux 4.4+), which nix does not name: lock pages as they are touched.
const MCL_ONFAULT: std::ffi::c_int = 4;

/// Applies `PR_SET_DUMPABLE=0` and tries `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`.
///
/// `MCL_ONFAULT` locks every page the process touches — the heap holding secrets included — the
/// moment it is touched, instead of faulting in the whole binary and every reserved stack up
/// front: the plain flags would double the sidecar's resident memory for pages it never uses.
/// Kernels without it get the plain flags.
pub fn harden_process() -> Hardening {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    let dumpable_off = nix::sys::prctl::set_dumpable(false).is_ok()
        && nix::sys::prctl::get_dumpable().is_ok_and(|d| !d);
    let core_dumps_off = disable_core_dumps();
    let plain = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
    let memory_locked = match mlockall(plain | MlockAllFlags::from_bits_retain(MCL_ONFAULT)) {
        Err(nix::errno::Errno::EINVAL) => mlockall(plain),
        other => other,
    }
    .map_err(|e| {
        format!("{e} (grant CAP_IPC_LOCK or raise RLIMIT_MEMLOCK to lock secrets in RAM)")
    });
    Hardening {
        dumpable_off,
        core_dumps_off,
        memory_locked,
    }
}

/// The filesystem type of the mount holding `path`, from a `/proc/self/mountinfo` text.
pub fn filesystem_of(mountinfo: &str, path: &Path) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?.replace("\\040", " ");
            let fstype = right.split_whitespace().next()?;
            path.starts_with(&mount_point)
                .then(|| (mount_point.len(), fstype.to_owned()))
        })
        // The longest (innermost) mount point wins; later lines win ties (mounted on top).
        .fold(
            None,
            |best: Option<(usize, String)>, (len, fs)| match best {
                Some((l, _)) if l > len => best,
                _ => Some((len, fs)),
            },
        )
        .map(|(_, fs)| fs)
}

/// Refuses to write secrets into `dir` unless it is on a tmpfs.
pub fn require_memory_backed(dir: &Path) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::Delivery(format!("reading /proc/self/mountinfo: {e}")))?;
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    match filesystem_of(&mountinfo, &canonical).as_deref() {
        Some("tmpfs") | Some("ramfs") => Ok(()),
        other => Err(Error::Delivery(format!(
            "{} is on {} and not in memory; secret files are only written to a memory-backed volume (emptyDir medium: Memory)",
            dir.display(),
            other.unwrap_or("an unknown filesystem")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 22 0:25 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw,size=65536k
41 22 0:40 / /phantom/secrets rw,relatime - tmpfs tmpfs rw,size=1024k
42 22 8:1 /var/lib/kubelet/pods/x/volumes/disk /phantom/secrets/disk rw - ext4 /dev/sda1 rw
";

    #[test]
    fn the_innermost_mount_decides() {
        let fs = |p: &str| filesystem_of(MOUNTINFO, Path::new(p));
        assert_eq!(fs("/phantom/secrets/db/password").as_deref(), Some("tmpfs"));
        assert_eq!(fs("/phantom/secrets/disk/x").as_deref(), Some("ext4"));
        assert_eq!(fs("/etc/passwd").as_deref(), Some("ext4"));
        assert_eq!(fs("/dev/shm").as_deref(), Some("tmpfs"));
    }

    #[test]
    fn this_machines_memory_and_disk_are_told_apart() {
        if Path::new("/dev/shm").is_dir() {
            assert!(require_memory_backed(Path::new("/dev/shm")).is_ok());
        }
        let err = require_memory_backed(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect_err("the source tree is on disk");
        assert!(err.to_string().contains("emptyDir medium: Memory"), "{err}");
    }

    #[test]
    fn the_process_is_not_dumpable_after_hardening() {
        // Runs in its own process state: the test binary becomes non-dumpable, which is harmless.
        let outcome = harden_process();
        assert!(outcome.dumpable_off);
        assert!(outcome.core_dumps_off);
        assert_eq!(
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE),
            Ok((0, 0))
        );
        if let Err(why) = &outcome.memory_locked {
            assert!(why.contains("CAP_IPC_LOCK"), "{why}");
        }
        let _ = nix::sys::mman::munlockall();
    }
}
