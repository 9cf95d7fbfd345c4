//! Shutdown on SIGTERM (the kubelet stopping the pod) or SIGINT (Ctrl-C).
//!
//! The handlers are installed by [`shutdown_signal`], before the binary starts its work, so a
//! handler that cannot be installed is an error at start instead of a process that later ignores
//! every request to stop.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{Error, Result};

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownSignal {
    Terminate,
    Interrupt,
}

impl ShutdownSignal {
    /// The signal's name, as logs print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        }
    }
}

/// Installed handlers for both shutdown signals.
#[derive(Debug)]
pub struct Shutdown {
    terminate: Signal,
    interrupt: Signal,
}

/// Installs the SIGTERM and SIGINT handlers (inside a tokio runtime).
pub fn shutdown_signal() -> Result<Shutdown> {
    let install = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| Error::Signal {
            signal: name,
            source,
        })
    };
    Ok(Shutdown {
        terminate: install(SignalKind::terminate(), "SIGTERM")?,
        interrupt: install(SignalKind::interrupt(), "SIGINT")?,
    })
}

impl Shutdown {
    /// Resolves with the first shutdown signal that arrives, after logging it.
    pub async fn recv(mut self) -> ShutdownSignal {
        let arrived = tokio::select! {
            _ = self.terminate.recv() => ShutdownSignal::Terminate,
            _ = self.interrupt.recv() => ShutdownSignal::Interrupt,
        };
        tracing::info!(
            signal = arrived.name(),
            "shutdown signal received: stopping"
        );
        arrived
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_sent_to_the_process_is_reported_by_name() {
        let shutdown = shutdown_signal().expect("handlers install");
        let waiter = tokio::spawn(shutdown.recv());
        // The handler is installed, so the signal reaches the waiter instead of ending the test.
        tokio::task::yield_now().await;
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let arrived = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the signal arrives within 10 s")
            .expect("waiter");
        assert_eq!(arrived, ShutdownSignal::Interrupt);
        assert_eq!(arrived.name(), "SIGINT");
    }
}
