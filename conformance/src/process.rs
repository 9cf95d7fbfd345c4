//! Child processes of the environment: started with their output in a log file and their working
//! directory inside the environment's directory, killed on drop.
//!
//! A test binary killed with SIGKILL cannot run destructors, so every environment directory also
//! records its owner's pid; the next environment started on the machine reaps the processes of
//! environments whose owner is gone (recognised by their working directory, so a recycled pid of
//! an unrelated process is never touched).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Error, Result};

/// Prefix of environment directories under the system temp dir.
pub(crate) const ENV_DIR_PREFIX: &str = "phantom-env-";

/// A running child process owned by the environment.
#[derive(Debug)]
pub(crate) struct ManagedProcess {
    pub(crate) what: &'static str,
    child: Child,
    pub(crate) log: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` with stdout/stderr appended to `<dir>/<what>.log` and `dir` as its cwd.
    pub(crate) fn spawn(what: &'static str, mut command: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{what}.log"));
        let out = File::create(&log).map_err(Error::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(Error::io("cloning a log file handle"))?;
        let program = PathBuf::from(command.get_program());
        let child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                what,
                program,
                source,
            })?;
        let mut pids = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("pids"))
            .map_err(Error::io("recording a child pid"))?;
        writeln!(pids, "{}", child.id()).map_err(Error::io("recording a child pid"))?;
        Ok(Self { what, child, log })
    }

    /// Fails with the log's tail when the process has exited.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::Exited {
                what: self.what,
                status,
                log: self.log.clone(),
                tail: log_tail(&self.log, 30),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether this process runs with effective uid 0 (from `/proc/self/status`).
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Writes a file of the environment, naming it in the error.
pub(crate) fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io(format!("writing {}", path.display())))
}

/// Runs `cmd` to completion; a non-zero exit becomes [`Error::Command`] with its stderr.
pub(crate) fn run_checked(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    let out = cmd.output().map_err(Error::io(format!("running {what}")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            command: what.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// The last `lines` lines of a log file.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<_> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Kills the processes of environments whose owning process no longer exists and removes their
/// directories.
pub(crate) fn reap_stale_environments() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_env = entry
            .file_name()
            .to_string_lossy()
            .starts_with(ENV_DIR_PREFIX);
        let Ok(owner) = std::fs::read_to_string(dir.join("owner")) else {
            continue;
        };
        if !is_env || Path::new("/proc").join(owner.trim()).exists() {
            continue;
        }
        for pid in std::fs::read_to_string(dir.join("pids"))
            .unwrap_or_default()
            .lines()
        {
            let cwd = std::fs::read_link(Path::new("/proc").join(pid).join("cwd"));
            if cwd.is_ok_and(|cwd| cwd == dir) {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        tracing::warn!(dir = %dir.display(), "removed a stale test environment left by a killed process");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaps_processes_of_a_dead_owner_and_removes_the_directory() {
        let dir = tempfile::Builder::new()
            .prefix(ENV_DIR_PREFIX)
            .tempdir()
            .expect("temp dir")
            .keep();
        // A pid that existed and is gone: a finished child of ours.
        let mut gone = Command::new("true").spawn().expect("spawn true");
        let dead_owner = gone.id();
        gone.wait().expect("wait true");
        std::fs::write(dir.join("owner"), dead_owner.to_string()).expect("write owner");
        let mut orphan = ManagedProcess::spawn(
            "orphan",
            {
                let mut c = Command::new("sleep");
                c.arg("600");
                c
            },
            &dir,
        )
        .expect("spawn sleep");

        reap_stale_environments();

        let status = orphan.child.wait().expect("wait for the orphan");
        assert!(!status.success(), "the orphan was not killed");
        assert!(
            !dir.exists(),
            "the stale directory {} was not removed",
            dir.display()
        );
    }

    #[test]
    fn leaves_environments_of_live_owners_alone() {
        let dir = tempfile::Builder::new()
            .prefix(ENV_DIR_PREFIX)
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("owner"), std::process::id().to_string())
            .expect("write owner");
        let mut child = ManagedProcess::spawn(
            "live",
            {
                let mut c = Command::new("sleep");
                c.arg("600");
                c
            },
            dir.path(),
        )
        .expect("spawn sleep");
        reap_stale_environments();
        assert!(
            child.check_alive().is_ok(),
            "a live environment's process was killed"
        );
        assert!(dir.path().exists());
    }

    #[test]
    fn an_exited_process_reports_its_log_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "echo first; echo 'listen tcp: address already in use' >&2; exit 3",
        ]);
        let mut p = ManagedProcess::spawn("failing", c, dir.path()).expect("spawn sh");
        let err = loop {
            if let Err(e) = p.check_alive() {
                break e;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let text = err.to_string();
        assert!(
            text.contains("failing exited early") && text.contains("address already in use"),
            "{text}"
        );
    }
}
