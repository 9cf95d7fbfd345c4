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

    /// Waits until `url` (its `/readyz`) answers 2xx while the process lives; a timeout or an
    /// early exit is an error that carries the process's log.
    pub async fn wait_ready(&mut self, what: &str, url: &str) -> Result<()> {
        let http = reqwest::Client::new();
        let log = self.log().to_owned();
        let alive = std::sync::Mutex::new(&mut *self);
        let ready = crate::wait::until_guarded(
            format!("{what} {url}"),
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(200),
            || alive.lock().expect("process lock").check_alive(),
            || async {
                let answer = http.get(url).send().await?;
                Ok::<_, reqwest::Error>(answer.status().is_success().then_some(()))
            },
        )
        .await;
        ready.map_err(|e| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            crate::Error::Setup(format!("{e}\n--- {what} log ---\n{text}"))
        })
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
        self.spawn_phantom_at(what, &crate::bins::built(binary)?, args)
    }

    /// [`Env::spawn_phantom`] of the binary at `path` (a bench's measured copy).
    pub fn spawn_phantom_at(
        &self,
        what: &'static str,
        path: &std::path::Path,
        args: &[String],
    ) -> Result<LocalProcess> {
        let mut command = Command::new(path);
        command
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("PHANTOM_LOG", "info,kube_client=warn,kube_runtime=warn");
        Ok(LocalProcess {
            process: ManagedProcess::spawn(what, command, self.dir())?,
        })
    }
}
