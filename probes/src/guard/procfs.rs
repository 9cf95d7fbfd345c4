//! What the guard reads from `/proc` and the cgroup filesystems to find a protected pod's
//! threads: parsers (pure, tested) and the reads around them.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::abi::NsId;
use crate::{Error, Result};
pub use phantom_identity::cgroup::{cgroup_path, detect_cgroup_mode, parse_cgroup};

/// `NSpid:` of a `status` file: the thread's id in each pid namespace, host first.
pub fn parse_nspid(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let ids: Option<Vec<u32>> = line.split_whitespace().map(|n| n.parse().ok()).collect();
    ids.filter(|ids| !ids.is_empty())
}

/// `Tgid:` of a `status` file.
pub fn parse_tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The inode in a namespace link's target (`pid:[4026531836]`).
pub fn parse_ns_link(target: &str) -> Option<u32> {
    let inode: u64 = target
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    // Namespace inodes are proc inodes (32 bits); the kernel side compares `ns.inum`, a u32.
    u32::try_from(inode).ok()
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Procfs {
        path: path.display().to_string(),
        source,
    })
}

/// The inode of this process's pid namespace (the guard runs in the host's: hostPID).
pub fn own_pidns_inum(proc_root: &Path) -> Result<u32> {
    pidns_inum(&proc_root.join("self"))
}

fn pidns_inum(task_dir: &Path) -> Result<u32> {
    let link = task_dir.join("ns/pid");
    let target = std::fs::read_link(&link).map_err(|source| Error::Procfs {
        path: link.display().to_string(),
        source,
    })?;
    parse_ns_link(&target.to_string_lossy()).ok_or_else(|| Error::Procfs {
        path: link.display().to_string(),
        source: std::io::Error::other(format!("unexpected link target {}", target.display())),
    })
}

/// One thread as the kernel side keys it: its host id, its process's host id, and its id in its
/// own pid namespace when that is not the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadIds {
    pub host: NsId,
    pub host_tgid: u32,
    pub own: Option<NsId>,
}

/// The threads of process `pid` (host id), read from `<proc_root>/<pid>/task`. A thread that
/// exits while it is read is skipped.
pub fn threads(proc_root: &Path, host_pidns_inum: u32, pid: u32) -> Result<Vec<ThreadIds>> {
    let task_dir = proc_root.join(pid.to_string()).join("task");
    let entries = std::fs::read_dir(&task_dir).map_err(|source| Error::Procfs {
        path: task_dir.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let (Some(ids), Some(tgid)) = (parse_nspid(&status), parse_tgid(&status)) else {
            continue;
        };
        let host = NsId {
            ns_inum: host_pidns_inum,
            id: ids[0],
        };
        let own = match ids.len() {
            1 => None,
            _ => match pidns_inum(&dir) {
                Ok(ns_inum) => Some(NsId {
                    ns_inum,
                    id: *ids.last().expect("non-empty"),
                }),
                Err(_) => continue,
            },
        };
        out.push(ThreadIds {
            host,
            host_tgid: tgid,
            own,
        });
    }
    Ok(out)
}

/// The processes (host ids) in the cgroup directory `dir` and every cgroup below it.
pub fn cgroup_processes(dir: &Path) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let procs = dir.join("cgroup.procs");
        let text = match std::fs::read_to_string(&procs) {
            Ok(text) => text,
            // Removed while walking: its processes are gone too.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Procfs {
                    path: procs.display().to_string(),
                    source,
                });
            }
        };
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        if let Ok(children) = std::fs::read_dir(&dir) {
            pending.extend(
                children
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The id the kernel side compares for a cgroup directory: its kernfs node id, which cgroupfs
/// and cgroup2 report as the directory's inode number.
pub fn cgroup_id(dir: &Path) -> Result<u64> {
    std::fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| Error::Procfs {
            path: dir.display().to_string(),
            source,
        })
}

/// Reads a process's `cgroup` file.
pub fn process_cgroups(proc_root: &Path, pid: u32) -> Result<String> {
    read(&proc_root.join(pid.to_string()).join("cgroup"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_lists_host_first_and_tgid_is_read() {
        let status = "Name:\tsleep\nTgid:\t4240\nPid:\t4242\nNSpid:\t4242\t7\n";
        assert_eq!(parse_nspid(status), Some(vec![4242, 7]));
        assert_eq!(parse_tgid(status), Some(4240));
        assert_eq!(parse_nspid("NSpid:\t12\n"), Some(vec![12]));
        assert_eq!(parse_nspid("Name:\tx\n"), None);
        assert_eq!(parse_nspid("NSpid:\tx\n"), None);
    }

    #[test]
    fn namespace_links_give_their_inode() {
        assert_eq!(parse_ns_link("pid:[4026531836]"), Some(4026531836));
        assert_eq!(parse_ns_link("net:[4026531836]"), None);
        assert_eq!(
            parse_ns_link("pid:[99999999999]"),
            None,
            "wider than 32 bits"
        );
    }

    #[test]
    fn this_process_is_found_with_its_threads() {
        let proc_root = Path::new("/proc");
        let host = own_pidns_inum(proc_root).unwrap();
        let pid = std::process::id();
        let waiter =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(300)));
        let threads = threads(proc_root, host, pid).unwrap();
        waiter.join().unwrap();
        assert!(threads.len() >= 2, "{threads:?}");
        assert!(
            threads
                .iter()
                .all(|t| t.host_tgid == pid && t.host.ns_inum == host)
        );
        assert!(threads.iter().any(|t| t.host.id == pid));
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T` stopped, `t` traced, …).
pub fn parse_state(stat: &str) -> Option<char> {
    // The command name is in parentheses and may contain anything, so split after the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether process `pid` is stopped (by a signal or a tracer).
pub fn is_stopped(proc_root: &Path, pid: u32) -> bool {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
        .ok()
        .and_then(|stat| parse_state(&stat))
        .is_some_and(|state| state == 'T' || state == 't')
}

#[cfg(test)]
mod state_tests {
    use super::*;

    #[test]
    fn the_state_follows_the_last_parenthesis() {
        assert_eq!(parse_state("42 (sleep) S 1 42"), Some('S'));
        assert_eq!(parse_state("42 (a) b) T 1 42"), Some('T'));
        assert_eq!(parse_state("garbage"), None);
    }
}
