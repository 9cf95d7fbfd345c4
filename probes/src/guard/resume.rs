//! A ptrace attach stopped by killing the tracer (the tracepoint path cannot refuse the syscall)
//! leaves the victim with the SIGSTOP the attach queued: the guard continues it. A SIGCONT sent
//! before the attach queued its SIGSTOP would be too early, so the caller repeats this until the
//! victim stays running.

use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::procfs::is_stopped;

/// Continues process `pid` if it is stopped; whether it was.
pub fn continue_if_stopped(proc_root: &Path, pid: u32) -> bool {
    if !is_stopped(proc_root, pid) {
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    kill(Pid::from_raw(raw), Signal::SIGCONT).is_ok()
}
