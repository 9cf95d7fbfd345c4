//! The process at the other end of a Unix socket connection.
//!
//! `SO_PEERCRED` gives the peer's PID as it was when it connected; by the time `/proc/<pid>` is
//! read the process may have exited and the PID been given to another. Where the kernel offers it
//! (`SO_PEERPIDFD`, Linux ≥ 6.5) the peer is pinned by a pidfd instead: a pidfd always refers to
//! the process it was made for, and `/proc/self/fdinfo/<pidfd>` names that process's PID while it
//! lives (`-1` once it has exited). A read of `/proc/<pid>/…` followed by a check that the pidfd
//! still names `<pid>` is therefore about the peer itself: had the peer exited in between, the
//! check fails.
//!
//! Older kernels fall back to the start time in `/proc/<pid>/stat`, compared before and after the
//! read: that closes the window during the read, not the one between the connection and the first
//! read (a peer that exits at once and whose PID is reused at once). Callers that must not accept
//! that window also check a second proof naming the same pod (the node agent: the pod's token).

use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt};

use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// The peer of a connection, pinned.
#[derive(Debug)]
pub struct Peer {
    /// Its PID in this process's PID namespace (0 when it is not visible here).
    pub pid: i32,
    pub uid: u32,
    pin: Pin,
}

#[derive(Debug)]
enum Pin {
    Pidfd(OwnedFd),
    StartTime(u64),
}

/// How a peer is pinned (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    Pidfd,
    StartTime,
}

impl Peer {
    /// The peer of `socket`, pinned by pidfd where the kernel offers one, else by start time.
    pub fn of(socket: &impl AsFd, proc_root: &Path) -> Result<Self> {
        let credentials =
            getsockopt(socket, sockopt::PeerCredentials).map_err(|source| Error::Peer {
                what: "SO_PEERCRED",
                source,
            })?;
        let pid = credentials.pid();
        if pid <= 0 {
            return Err(Error::PeerGone {
                pid,
                why: "is not visible in this PID namespace (run with hostPID)".into(),
            });
        }
        match getsockopt(socket, sockopt::PeerPidfd) {
            Ok(pidfd) => {
                let peer = Self {
                    pid,
                    uid: credentials.uid(),
                    pin: Pin::Pidfd(pidfd),
                };
                peer.check(proc_root)?;
                Ok(peer)
            }
            Err(nix::Error::ENOPROTOOPT | nix::Error::EINVAL) => {
                Self::pinned_by_start_time(pid, credentials.uid(), proc_root)
            }
            Err(source) => Err(Error::Peer {
                what: "SO_PEERPIDFD",
                source,
            }),
        }
    }

    /// A peer known by PID only, pinned by its start time (kernels without `SO_PEERPIDFD`).
    pub fn pinned_by_start_time(pid: i32, uid: u32, proc_root: &Path) -> Result<Self> {
        let ticks = start_time(proc_root, pid)?;
        Ok(Self {
            pid,
            uid,
            pin: Pin::StartTime(ticks),
        })
    }

    /// How this peer is pinned.
    pub fn pinning(&self) -> Pinning {
        match self.pin {
            Pin::Pidfd(_) => Pinning::Pidfd,
            Pin::StartTime(_) => Pinning::StartTime,
        }
    }

    /// `<proc_root>/<pid>/<file>`, read and then confirmed to be the peer's.
    pub fn read_proc(&self, proc_root: &Path, file: &str) -> Result<String> {
        let path = proc_root.join(self.pid.to_string()).join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Procfs {
            path: path.display().to_string(),
            source,
        })?;
        self.check(proc_root)?;
        Ok(text)
    }

    /// Whether the PID still names the peer.
    fn check(&self, proc_root: &Path) -> Result<()> {
        match &self.pin {
            Pin::Pidfd(pidfd) => {
                let path = proc_root
                    .join("self/fdinfo")
                    .join(pidfd.as_raw_fd().to_string());
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Procfs {
                    path: path.display().to_string(),
                    source,
                })?;
                match parse_fdinfo_pid(&text) {
                    Some(pid) if pid == self.pid => Ok(()),
                    Some(-1) => Err(self.gone("has exited")),
                    Some(other) => Err(self.gone(&format!("is pid {other} by its pidfd"))),
                    None => Err(self.gone("has a pidfd without a Pid: line")),
                }
            }
            Pin::StartTime(ticks) => match start_time(proc_root, self.pid) {
                Ok(now) if now == *ticks => Ok(()),
                Ok(_) => Err(self.gone("was replaced by another process with its PID")),
                Err(_) => Err(self.gone("has exited")),
            },
        }
    }

    fn gone(&self, why: &str) -> Error {
        Error::PeerGone {
            pid: self.pid,
            why: why.to_owned(),
        }
    }
}

/// The `Pid:` of a pidfd's `fdinfo`.
pub fn parse_fdinfo_pid(fdinfo: &str) -> Option<i32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The start time (clock ticks since boot, field 22) of a `/proc/<pid>/stat` line.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces and ')': fields count from the last
    // ')', which ends it; field 3 (the state) is the first after it.
    let after = stat.rsplit_once(')')?.1;
    after
        .split_whitespace()
        .nth(22 - 3)
        .and_then(|v| v.parse().ok())
}

fn start_time(proc_root: &Path, pid: i32) -> Result<u64> {
    let path = proc_root.join(pid.to_string()).join("stat");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Procfs {
        path: path.display().to_string(),
        source,
    })?;
    parse_start_time(&text).ok_or_else(|| Error::PeerGone {
        pid,
        why: format!("has a stat line without a start time ({})", path.display()),
    })
}
