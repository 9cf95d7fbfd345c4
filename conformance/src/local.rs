//! Phantom's own binaries (`phantom-controller`, `phantom-admission`) run as local processes
//! against an [`Env`], the way `make demo` shows them: real flags, real logs, killed on drop.

use std::path::Path;
use std::process::Command;

use crate::process::ManagedProcess;
use crate::{Env, Result};

/// A Phantom binary running against the environment.
#[derive(Debug)]
pub struct LocalProcess {
    process: ManagedProcess,
}

impl LocalProcess {
    /// Fails with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive()
    }

    /// Its process ID.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// Its log file (stdout and stderr).
    pub fn log(&self) -> &Path {
        &self.process.log
    }

    /// Kills it (SIGKILL: what a crash looks like).
    pub fn kill(&mut self) {
        self.process.stop();
    }
}

impl Env {
    /// Starts the workspace binary `binary` with `args`, `KUBECONFIG` pointing at this
    /// environment and its log in `<env dir>/<what>.log`.
    pub fn spawn_phantom(
        &self,
        what: &'static str,
        binary: &str,
        args: &[String],
    ) -> Result<LocalProcess> {
        let mut command = Command::new(crate::bins::built(binary)?);
        command
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("PHANTOM_LOG", "info,kube_client=warn,kube_runtime=warn");
        Ok(LocalProcess {
            process: ManagedProcess::spawn(what, command, self.dir())?,
        })
    }
}
